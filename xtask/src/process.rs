//! Child processes that xtask runs: started, waited for, and reported by name when they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// Runs `cmd` (echoed) with inherited output; fails when it cannot start or exits non-zero.
pub fn run_checked(cmd: &mut Command, what: &str) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

/// Runs `cmd` capturing its output (standard error too, unless `cmd` says otherwise); fails
/// as [`run_checked`] does, with the captured standard error.
pub fn output_checked(cmd: &mut Command, what: &str) -> Result<Output> {
    eprintln!("$ {cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Creates the virtual environment `venv` with `python`; returns its `pip`.
pub fn new_venv(python: &str, venv: &Path) -> Result<PathBuf> {
    run_checked(
        Command::new(python).args(["-m", "venv"]).arg(venv),
        "python -m venv",
    )?;
    Ok(venv.join("bin/pip"))
}
