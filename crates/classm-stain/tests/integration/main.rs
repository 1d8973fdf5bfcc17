//! The integration tests of classm-stain (one binary, ripgrep style). Tests that read
//! `../shared` skip with a message when it is absent; the fixture tests always run.

mod support;

mod edge;
mod props;
mod reference;
mod separate;
mod slide;
mod synthetic;
