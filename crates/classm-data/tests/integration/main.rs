//! classm-data integration tests. Tests on `../shared` skip with a message when it is absent;
//! the ones that matter also run on `fixtures/ebhi-mini`.
#![allow(clippy::unwrap_used)] // a failing unwrap in a helper is a failing test

mod support;

mod augment;
mod loader;
mod sources;
mod splits;
mod stains;
