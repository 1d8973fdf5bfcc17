//! classm-losses against PyTorch: `tests/fixtures/golden.safetensors` was written by
//! `tests/fixtures/make_golden.py` (torch 2.15). Every check is within 1e-4 relative.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is a failing test

mod support;

mod golden;
mod props;
