//! Project automation: `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! - `ci`: the full check CI runs (format, clippy, tests with doctests, docs), stopping at the
//!   first failure.
//! - `bench stain`: speed and memory benchmark of `classm-stain`, with the Python reference
//!   libraries side by side when their virtual environment exists.
//! - `bench data`: classm-data's training pipeline against PIL + torchvision.
//! - `bench model`: the dual ResNet's forward and train step against PyTorch.
//! - `bench-setup-python`, `bench-setup-torch`: create the Python environments.
//! - `check-cuda`: clippy on the `cuda` feature with the CUDA compiler from PyPI (no GPU).

mod bench;
mod ci;
mod cuda;
mod cuda_bundle;
mod paths;
mod process;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "classm project automation", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Format check, clippy (-D warnings), tests (with doctests) and docs (-D warnings), in
    /// release, stopping at the first failure.
    Ci,
    /// Benchmarks (speed and peak memory; not tests).
    Bench {
        #[command(subcommand)]
        which: BenchCmd,
    },
    /// Creates the Python reference environment used by `bench stain` (target/stain-ref-venv).
    BenchSetupPython(bench::python::SetupArgs),
    /// Creates the torch environment used by `bench data` (target/torch-venv).
    BenchSetupTorch(bench::python::TorchSetupArgs),
    /// Clippy (-D warnings, all targets) on classm-model and classm-losses with the `cuda`
    /// feature, CUDA kernels compiled by nvcc from PyPI wheels (target/cuda-13.0-venv): no GPU
    /// needed.
    CheckCuda(cuda::CudaArgs),
    /// One benchmark configuration in a fresh process (used by `bench stain`).
    #[command(hide = true)]
    BenchWorker(bench::stain::WorkerArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// classm-stain estimate + separate on a 6.6 MP slide region and a 16.8 MP mirror tiling.
    Stain(bench::stain::StainArgs),
    /// classm-data training pipeline (patches/s) against PIL + torchvision.
    Data(bench::data::DataArgs),
    /// classm-model dual ResNet forward and train step (img/s) against PyTorch.
    Model(bench::model::ModelArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Ci => ci::run(),
        Cmd::Bench {
            which: BenchCmd::Stain(args),
        } => bench::stain::run(&args),
        Cmd::Bench {
            which: BenchCmd::Data(args),
        } => bench::data::run(&args),
        Cmd::Bench {
            which: BenchCmd::Model(args),
        } => bench::model::run(&args),
        Cmd::BenchSetupPython(args) => bench::python::setup(&args),
        Cmd::BenchSetupTorch(args) => bench::python::setup_torch(&args),
        Cmd::BenchWorker(args) => bench::stain::worker(&args),
        Cmd::CheckCuda(args) => cuda::run(&args),
    };
    // A plain message: anyhow's Debug form would add a backtrace under RUST_BACKTRACE=1.
    report(result)
}

fn report(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
