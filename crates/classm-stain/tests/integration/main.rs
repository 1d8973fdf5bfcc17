//! The integration tests of classm-stain (one binary, ripgrep style). Tests that read
//! `../shared` skip with a message when it is absent; the fixture tests always run.

#![allow(clippy::needless_range_loop, clippy::field_reassign_with_default)]

mod support;

mod edge;
mod props;
mod reference;
mod separate;
mod slide;
mod synthetic;
