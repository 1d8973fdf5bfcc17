//! `cargo xtask check-cuda`: compiles the `cuda` feature (kernels included) on a machine with
//! no GPU and no CUDA toolkit, so that GPU-only code cannot rot between GPU sessions.
//!
//! candle-kernels' build script needs `nvcc`; NVIDIA publishes the CUDA 13 compiler, headers
//! and NVVM as PyPI wheels, which a virtual environment holds without root or apt. Linking
//! needs the driver library and running needs a GPU, so this checks (clippy, all targets);
//! with `--bundle` it also links the test binaries against stand-ins for the driver's
//! libraries, for a GPU machine to run ([`cuda_bundle`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;

use crate::process::{new_venv, run_checked};
use crate::{cuda_bundle, paths};

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
    /// Also link the CUDA test binaries and the `step` example (against generated stand-ins
    /// for the driver's libraries) into target/cuda-bundle.tar.gz, with a script that runs
    /// them on a GPU machine that has no Rust toolchain.
    #[arg(long)]
    pub bundle: bool,
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
    let toolkit = Toolkit {
        root: cuda,
        compute_cap: a.compute_cap.clone(),
    };
    // Its own target directory: the feature changes candle's build, which would otherwise
    // invalidate the CPU build's artefacts. One per release, since neither candle-kernels'
    // nor cudarc's build script reruns when the toolkit changes.
    run_checked(
        toolkit
            .cargo(&root.join(format!("target/cuda-{RELEASE}-check")))?
            .args(["clippy", "-p", "classm-model", "-p", "classm-losses"])
            .args([
                "--features",
                FEATURES,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        "cargo clippy with the cuda feature",
    )?;
    eprintln!(
        "the cuda feature builds (CUDA {RELEASE}, sm_{})",
        a.compute_cap
    );
    if a.bundle {
        let out = cuda_bundle::build(&toolkit, &root, RELEASE)?;
        eprintln!(
            "GPU bundle: {} (carry it to a GPU machine and run: tar xzf {} -C /tmp && /tmp/cuda-bundle/run.sh)",
            out.display(),
            out.strip_prefix(&root).unwrap_or(&out).display()
        );
    } else {
        eprintln!(
            "its tests need a GPU: there, `cargo test --release -p classm-model -p classm-losses --features {FEATURES}`, or without a Rust toolchain `check-cuda --bundle` here"
        );
    }
    Ok(())
}

/// The crates' features that select CUDA.
pub const FEATURES: &str = "classm-model/cuda,classm-losses/cuda";

/// A CUDA toolkit for candle's build scripts.
#[derive(Debug)]
pub struct Toolkit {
    /// The folder with `bin/nvcc`, `include` and `lib`.
    pub root: PathBuf,
    /// GPU architecture of the kernels.
    pub compute_cap: String,
}

impl Toolkit {
    /// `cargo` in the repository, building into `target_dir` with this toolkit.
    pub fn cargo(&self, target_dir: &Path) -> Result<Command> {
        let path = std::env::join_paths(
            std::iter::once(self.root.join("bin")).chain(
                std::env::var_os("PATH")
                    .iter()
                    .flat_map(std::env::split_paths),
            ),
        )?;
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.current_dir(paths::repo_root())
            .env("PATH", path)
            .env("CUDA_HOME", &self.root)
            .env("NVCC", self.root.join("bin/nvcc"))
            .env("CUDA_COMPUTE_CAP", &self.compute_cap)
            .env("CARGO_TARGET_DIR", target_dir);
        Ok(cmd)
    }
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
    run_checked(
        Command::new(new_venv(python, venv)?)
            .args(["install", "--progress-bar", "off"])
            .args(WHEELS),
        "pip install",
    )
}
