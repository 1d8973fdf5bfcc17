//! The integration tests of classm-stain (one binary, ripgrep style).

mod support;

mod reference;
