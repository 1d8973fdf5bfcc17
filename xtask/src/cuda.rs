//! `cargo xtask check-cuda`: compiles the `cuda` feature (kernels included) on a machine with
//! no GPU and no CUDA toolkit, so that GPU-only code cannot rot between GPU sessions.
//!
//! candle-kernels' build script needs `nvcc`; NVIDIA publishes the CUDA 13 compiler, headers
//! and NVVM as PyPI wheels, which a virtual environment holds without root or apt. Linking
//! needs the driver library and running needs a GPU, so this checks (clippy, all targets),
//! it does not run the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::paths;

/// The toolkit release: that of the lent GPU machines' driver (580, CUDA 13.0), since candle
/// embeds PTX that the driver compiles at start and a driver refuses a newer PTX version.
const RELEASE: &str = "13.0";

/// The toolkit wheels, pinned together: an unpinned `nvidia-nvvm` resolves to a newer release
/// whose PTX the pinned `ptxas` refuses ("Unsupported .version").
const WHEELS: [&str; 5] = [
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-cuda-runtime==13.0.88",
    "nvidia-cuda-cccl==13.0.85",
];

/// Options of `check-cuda`.
#[derive(Debug, Args)]
pub struct CudaArgs {
    /// Python interpreter that creates the toolkit's environment.
    #[arg(long, default_value = "python3.11")]
    pub python: String,
    /// Where the toolkit's environment lives (created when it has no nvcc).
    #[arg(long)]
    pub venv: Option<PathBuf>,
    /// GPU architecture the kernels are compiled for (90: H100 and H200).
    #[arg(long, default_value = "90")]
    pub compute_cap: String,
}

/// `check-cuda`.
pub fn run(a: &CudaArgs) -> Result<()> {
    let root = paths::repo_root();
    let venv = a
        .venv
        .clone()
        .unwrap_or_else(|| root.join(format!("target/cuda-{RELEASE}-venv")));
    let cuda = match toolkit(&venv) {
        Some(c) => c,
        None => {
            install(&a.python, &venv)?;
            toolkit(&venv).with_context(|| {
                format!(
                    "no nvidia/cu13/bin/nvcc under {} after pip install",
                    venv.display()
                )
            })?
        }
    };
    eprintln!("CUDA {RELEASE} toolkit: {}", cuda.display());
    let path = std::env::join_paths(
        std::iter::once(cuda.join("bin")).chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths),
        ),
    )?;
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&root)
        .args(["clippy", "-p", "classm-model", "-p", "classm-losses"])
        .args(["--features", "classm-model/cuda,classm-losses/cuda"])
        .args(["--all-targets", "--", "-D", "warnings"])
        .env("PATH", path)
        .env("CUDA_HOME", &cuda)
        .env("NVCC", cuda.join("bin/nvcc"))
        .env("CUDA_COMPUTE_CAP", &a.compute_cap)
        // Its own target directory: the feature changes candle's build, which would otherwise
        // invalidate the CPU build's artefacts. One per release, since neither candle-kernels'
        // nor cudarc's build script reruns when the toolkit changes.
        .env(
            "CARGO_TARGET_DIR",
            root.join(format!("target/cuda-{RELEASE}-check")),
        )
        .status()
        .context("starting cargo clippy")?;
    if !status.success() {
        bail!("the cuda feature does not build ({status})");
    }
    eprintln!(
        "the cuda feature builds (CUDA {RELEASE}, sm_{}); its tests need a GPU: `cargo test --release -p classm-model -p classm-losses --features classm-model/cuda,classm-losses/cuda` there",
        a.compute_cap
    );
    Ok(())
}

/// `<venv>/lib/python3.*/site-packages/nvidia/cu13` when it holds nvcc.
fn toolkit(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/nvidia/cu13"))
        .find(|c| c.join("bin/nvcc").is_file())
}

fn install(python: &str, venv: &Path) -> Result<()> {
    eprintln!(
        "installing the CUDA compiler from PyPI into {}",
        venv.display()
    );
    let ok = Command::new(python)
        .args(["-m", "venv"])
        .arg(venv)
        .status()
        .with_context(|| format!("starting {python}"))?
        .success()
        && Command::new(venv.join("bin/pip"))
            .args(["install", "--progress-bar", "off"])
            .args(WHEELS)
            .status()
            .context("starting pip")?
            .success();
    if !ok {
        bail!(
            "could not create the CUDA toolkit environment in {}",
            venv.display()
        );
    }
    Ok(())
}
