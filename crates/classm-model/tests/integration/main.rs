//! classm-model against PyTorch: `tests/fixtures/golden.safetensors` was written by
//! `tests/fixtures/make_golden.py` (torch 2.15).
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is a failing test

mod golden;
#[cfg(feature = "hub")]
mod hub;
mod init;
mod kernels;
mod pool;
mod weights;
