//! The Python reference libraries (torchstain numpy Macenko, HistomicsTK) timed by
//! `xtask/python/bench_stain.py`, and `bench-setup-python`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::input::ImageSpec;
use super::stain::busy_note;
use super::{cpu, mem};
use crate::paths;
use crate::process::{new_venv, run_checked};

/// Environment variable naming a Python executable with the reference libraries.
pub const PYTHON_ENV: &str = "CLASSM_STAIN_REF_PYTHON";
/// The implementations timed, in table order.
pub const IMPLS: [&str; 2] = ["torchstain", "histomicstk"];
/// Thread-count variables of the numeric libraries, all set to the thread count.
const THREAD_VARS: [&str; 5] = [
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
];

fn requirements() -> PathBuf {
    paths::shared_dir()
        .0
        .join("tools/stain-ref/requirements-fixtures.txt")
}

fn script() -> PathBuf {
    paths::repo_root().join("xtask/python/bench_stain.py")
}

/// How to create the environment, for messages.
pub fn setup_hint() -> String {
    "python3.11 -m venv target/stain-ref-venv && target/stain-ref-venv/bin/pip install \
     --no-deps -r ../shared/tools/stain-ref/requirements-fixtures.txt   (or: cargo xtask \
     bench-setup-python)"
        .to_owned()
}

/// Options of `bench-setup-python`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Python interpreter that creates the environment.
    #[arg(long, default_value = "python3.11")]
    pub python: String,
    /// Requirements file (default: ../shared/tools/stain-ref/requirements-fixtures.txt).
    #[arg(long)]
    pub requirements: Option<PathBuf>,
    /// Where to create it (default target/stain-ref-venv, where `bench stain` looks; elsewhere,
    /// point $CLASSM_STAIN_REF_PYTHON at its bin/python).
    #[arg(long)]
    pub venv: Option<PathBuf>,
}

/// `bench-setup-python`: creates target/stain-ref-venv and installs the pinned requirements.
pub fn setup(a: &SetupArgs) -> Result<()> {
    let req = a.requirements.clone().unwrap_or_else(requirements);
    if !req.is_file() {
        bail!(
            "{} is absent: set CLASSM_SHARED to the shared data folder or pass --requirements",
            req.display()
        );
    }
    let venv = a.venv.clone().unwrap_or_else(paths::venv_dir);
    run_checked(
        Command::new(new_venv(&a.python, &venv)?)
            .args(["install", "--no-deps", "-r"])
            .arg(&req),
        "pip install",
    )?;
    let python = venv.join("bin/python");
    let v = probe(&python)?;
    println!(
        "ready: {} ({})",
        python.display(),
        serde_json::to_string(&v)?
    );
    if a.venv.is_some() {
        println!(
            "use it with: {PYTHON_ENV}={} cargo xtask bench stain",
            python.display()
        );
    }
    Ok(())
}

/// The Python executable to use and where it came from, or why there is none.
fn find() -> std::result::Result<(PathBuf, String), String> {
    if let Some(p) = std::env::var_os(PYTHON_ENV).filter(|p| !p.is_empty()) {
        return Ok((PathBuf::from(p), format!("${PYTHON_ENV}")));
    }
    let p = paths::venv_dir().join("bin/python");
    if p.exists() {
        Ok((p, "target/stain-ref-venv".to_owned()))
    } else {
        Err(format!(
            "no Python reference environment ({} absent, ${PYTHON_ENV} unset)",
            p.display()
        ))
    }
}

/// `bench_stain.py --check`: library versions, or an error naming what is missing.
fn probe(python: &Path) -> Result<serde_json::Value> {
    let out = Command::new(python)
        .arg(script())
        .arg("--check")
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} cannot import the reference libraries: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Options of `bench-setup-torch`.
#[derive(Debug, Args)]
pub struct TorchSetupArgs {
    /// Python interpreter that creates the environment.
    #[arg(long, default_value = "python3.11")]
    pub python: String,
    /// Where to create it (default target/torch-venv, where `bench data` looks; elsewhere,
    /// point $CLASSM_TORCH_PYTHON at its bin/python).
    #[arg(long)]
    pub venv: Option<PathBuf>,
}

/// The versions `bench data` was measured with (a CPU run needs no CUDA, but PyPI's torch
/// wheel brings it; any recent torch/torchvision pair works).
const TORCH_PACKAGES: [&str; 4] = [
    "torch==2.15.0",
    "torchvision==0.29.2",
    "pillow==13.0.0",
    "numpy==2.4.6",
];

/// `bench-setup-torch`: creates target/torch-venv with torch, torchvision, Pillow and numpy.
pub fn setup_torch(a: &TorchSetupArgs) -> Result<()> {
    let venv = a
        .venv
        .clone()
        .unwrap_or_else(|| paths::repo_root().join("target/torch-venv"));
    run_checked(
        Command::new(new_venv(&a.python, &venv)?)
            .args(["install", "--progress-bar", "off"])
            .args(TORCH_PACKAGES),
        "pip install",
    )?;
    eprintln!("ready: {}", venv.join("bin/python").display());
    Ok(())
}

/// One Python measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PyRun {
    /// `torchstain` or `histomicstk`.
    #[serde(rename = "impl")]
    pub impl_name: String,
    /// What exactly is timed.
    pub timed: String,
    /// The image.
    #[serde(default)]
    pub spec: Option<ImageSpec>,
    /// Thread count given through the environment.
    #[serde(default)]
    pub threads: usize,
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Megapixels.
    pub megapixels: f64,
    /// Seconds to load (and tile) the image.
    pub load_s: f64,
    /// Seconds per repeat.
    pub times_s: Vec<f64>,
    /// Median seconds.
    pub median_s: f64,
    /// Megapixels per second.
    #[serde(default)]
    pub mp_per_s: f64,
    /// Whole-process `VmHWM`.
    pub peak_rss_bytes: Option<u64>,
    /// `VmHWM` of the timed runs alone (when `peak_reset`).
    pub run_peak_bytes: Option<u64>,
    /// Whether `VmHWM` was reset after loading.
    pub peak_reset: bool,
    /// Bytes of the image array.
    pub image_bytes: u64,
    /// `run_peak_bytes − image_bytes`.
    #[serde(default)]
    pub working_bytes: Option<u64>,
    /// Image checksum (must equal the Rust one).
    pub checksum: [u64; 2],
    /// Cores used by other processes meanwhile, on average.
    #[serde(default)]
    pub others_cores: Option<f64>,
}

/// The Python part of the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Section {
    /// Why nothing ran, if nothing did.
    pub skipped: Option<String>,
    /// How to create the environment, when it is missing.
    pub hint: Option<String>,
    /// The interpreter used and where it came from.
    pub python: Option<String>,
    /// Library versions and environment (`bench_stain.py --check`).
    pub versions: Option<serde_json::Value>,
    /// Measurements.
    pub runs: Vec<PyRun>,
    /// Runs that failed.
    pub failures: Vec<String>,
}

impl Section {
    /// Nothing ran, for `reason`.
    pub fn skipped(reason: &str) -> Self {
        Section {
            skipped: Some(reason.to_owned()),
            ..Section::default()
        }
    }
}

fn run_one(
    python: &Path,
    impl_name: &str,
    spec: &ImageSpec,
    threads: usize,
    repeats: usize,
) -> Result<PyRun> {
    let mut cmd = Command::new(python);
    cmd.arg(script())
        .args(["--impl", impl_name])
        .arg("--image")
        .arg(&spec.path)
        .args(["--repeats", &repeats.to_string()]);
    if let Some(m) = spec.mirror {
        cmd.args(["--mirror", &m.to_string()]);
    }
    let stain_ref = paths::shared_dir().0.join("tools/stain-ref");
    if stain_ref.join("impls.py").is_file() {
        cmd.arg("--stain-ref").arg(stain_ref);
    }
    for v in THREAD_VARS {
        cmd.env(v, threads.to_string());
    }
    let before = cpu::snapshot();
    let out = cmd.output().context("cannot start bench_stain.py")?;
    let after = cpu::snapshot();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.trim().lines().rev().take(3).collect();
        bail!(
            "bench_stain.py failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let mut r: PyRun = serde_json::from_str(line)
        .with_context(|| format!("unreadable bench_stain.py output: {line}"))?;
    r.spec = Some(spec.clone());
    r.threads = threads;
    r.mp_per_s = r.megapixels / r.median_s;
    r.working_bytes = r.run_peak_bytes.map(|p| p.saturating_sub(r.image_bytes));
    r.others_cores = cpu::others_cores(before, after, super::nproc());
    Ok(r)
}

/// Times every implementation on every image and thread count, each in its own process.
/// Never fails: problems are recorded in the section.
pub fn run_all(images: &[ImageSpec], threads: &[usize], repeats: usize, wait_idle: f64) -> Section {
    let (python, origin) = match find() {
        Ok(p) => p,
        Err(why) => {
            eprintln!(
                "Python references skipped: {why}.\n  To create it: {}",
                setup_hint()
            );
            return Section {
                hint: Some(setup_hint()),
                ..Section::skipped(&why)
            };
        }
    };
    let versions = match probe(&python) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "Python references skipped: {e:#}\n  To create it: {}",
                setup_hint()
            );
            return Section {
                hint: Some(setup_hint()),
                python: Some(python.display().to_string()),
                ..Section::skipped(&format!("{e:#}"))
            };
        }
    };
    let mut s = Section {
        python: Some(format!("{} ({origin})", python.display())),
        versions: Some(versions),
        ..Section::default()
    };
    let total = images.len() * threads.len() * IMPLS.len();
    let mut i = 0;
    for spec in images {
        for &t in threads {
            for imp in IMPLS {
                i += 1;
                eprint!(
                    "[py {i}/{total}] {} | {t} thread(s) | {imp} ... ",
                    spec.name()
                );
                if wait_idle > 0.0 {
                    cpu::wait_idle(wait_idle, super::stain::BUSY_CORES, super::nproc());
                }
                match run_one(&python, imp, spec, t, repeats) {
                    Ok(r) => {
                        eprintln!(
                            "{:.2} s, {:.2} MP/s, peak {:.0} MiB{}",
                            r.median_s,
                            r.mp_per_s,
                            r.peak_rss_bytes.map_or(f64::NAN, mem::mib),
                            busy_note(r.others_cores)
                        );
                        s.runs.push(r);
                    }
                    Err(e) => {
                        eprintln!("FAILED: {e:#}");
                        s.failures
                            .push(format!("{} | {t} threads | {imp}: {e:#}", spec.name()));
                    }
                }
            }
        }
    }
    s
}
