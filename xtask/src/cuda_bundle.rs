//! `check-cuda --bundle`: the CUDA test binaries and the `step` example, linked here, packed
//! with a script that runs them on a lent GPU machine (which has the driver and PyTorch's CUDA
//! libraries but no Rust toolchain).
//!
//! cudarc links the driver, cuBLAS, cuBLASLt, cuRAND and NVRTC dynamically; their wheels are
//! about a gigabyte and the driver is not on PyPI at all. The linker only needs their names
//! and symbols, so each gets a stand-in: a shared library with the real one's soname and every
//! symbol cudarc refers to, each returning 100 (`CUDA_ERROR_NO_DEVICE`). The binaries record
//! the sonames; on the GPU machine the loader finds the real libraries instead. Here, with
//! the stand-ins on the library path, a binary reaches its GPU part and fails with
//! "CUDA_ERROR_NO_DEVICE".

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::bench::machine;
use crate::cuda::{FEATURES, Toolkit};
use crate::process::{output_checked, run_checked};

/// The stand-ins: file stem, soname, and which of cudarc's undefined symbols each defines
/// (the longest matching prefix wins).
const LIBS: [(&str, &str, &str); 5] = [
    ("cuda", "libcuda.so.1", "cu"),
    ("cublas", "libcublas.so.13", "cublas"),
    ("cublasLt", "libcublasLt.so.13", "cublasLt"),
    ("curand", "libcurand.so.10", "curand"),
    ("nvrtc", "libnvrtc.so.13", "nvrtc"),
];

/// Builds `target/cuda-bundle.tar.gz`; returns its path.
pub fn build(toolkit: &Toolkit, root: &Path, release: &str) -> Result<PathBuf> {
    let target = root.join(format!("target/cuda-{release}-bundle"));
    let stubs = target.join("stubs");
    std::fs::create_dir_all(&stubs)?;
    // candle-kernels links the CUDA runtime, which the toolkit's wheels do hold.
    let cudart = stubs.join("libcudart.so");
    if !cudart.exists() {
        std::os::unix::fs::symlink(toolkit.root.join("lib/libcudart.so.13"), &cudart)?;
    }
    // The same flags for every step: a change would rebuild candle.
    let rustflags = format!("-L native={}", stubs.display());
    let cargo = |args: &[&str]| -> Result<Command> {
        let mut c = toolkit.cargo(&target)?;
        c.args(args)
            .args(["--release", "-p", "classm-model", "-p", "classm-losses"])
            .args(["--features", FEATURES])
            .env("RUSTFLAGS", &rustflags);
        Ok(c)
    };
    // Libraries only (no linking), to get cudarc's undefined symbols.
    run_checked(&mut cargo(&["build", "--lib"])?, "cargo build --lib")?;
    let rlib = newest(&target.join("release/deps"), "libcudarc-", ".rlib")?;
    write_stubs(&rlib, &stubs)?;

    // Builds the examples too, `step` among them.
    let out = output_checked(
        // Its progress and diagnostics on the terminal, the artefacts' JSON captured.
        cargo(&[
            "test",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])?
        .stderr(std::process::Stdio::inherit()),
        "cargo test --no-run",
    )?;

    let bundle = root.join("target/cuda-bundle");
    if bundle.exists() {
        std::fs::remove_dir_all(&bundle)?;
    }
    std::fs::create_dir_all(bundle.join("bin"))?;
    let mut tests = Vec::new();
    for (name, exe, is_test) in executables(&out.stdout)? {
        // Debug information would triple the size past what a device run can carry.
        run_checked(
            Command::new("strip")
                .arg("-o")
                .arg(bundle.join("bin").join(&name))
                .arg(&exe),
            "strip",
        )?;
        if is_test {
            tests.push(name);
        }
    }
    if tests.is_empty() || !bundle.join("bin/step").exists() {
        bail!("cargo reported no test executables or no step example");
    }
    let script = bundle.join("run.sh");
    std::fs::write(&script, run_script(root, &tests))?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let tarball = root.join("target/cuda-bundle.tar.gz");
    run_checked(
        Command::new("tar")
            .arg("czf")
            .arg(&tarball)
            .arg("-C")
            .arg(root.join("target"))
            .arg("cuda-bundle"),
        "tar",
    )?;
    let mib = std::fs::metadata(&tarball)?.len() as f64 / (1024.0 * 1024.0);
    eprintln!("{} ({mib:.1} MiB): {}", tarball.display(), tests.join(", "));
    Ok(tarball)
}

/// The most recently written file in `dir` named `prefix*suffix`.
fn newest(dir: &Path, prefix: &str, suffix: &str) -> Result<PathBuf> {
    std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(prefix) && n.ends_with(suffix)
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .with_context(|| format!("no {prefix}*{suffix} in {}", dir.display()))
}

/// One C file and one shared library per stand-in, from the symbols `nm` lists as undefined
/// in cudarc's rlib.
fn write_stubs(rlib: &Path, stubs: &Path) -> Result<()> {
    let nm = output_checked(
        Command::new("nm")
            .args(["-u", "--format=just-symbols"])
            .arg(rlib),
        "nm",
    )?;
    let text = String::from_utf8_lossy(&nm.stdout);
    let mut symbols: Vec<&str> = text.lines().map(str::trim).collect();
    symbols.sort_unstable();
    symbols.dedup();
    for (stem, soname, prefix) in LIBS {
        let mut c = String::new();
        for sym in &symbols {
            let owner = LIBS
                .iter()
                .filter(|l| sym.starts_with(l.2))
                .max_by_key(|l| l.2.len());
            if owner.is_some_and(|l| l.2 == prefix) {
                writeln!(c, "int {sym}(void) {{ return 100; }}")?;
            }
        }
        if c.is_empty() {
            bail!("no {prefix}* symbols in {}", rlib.display());
        }
        let src = stubs.join(format!("{stem}.c"));
        std::fs::write(&src, c)?;
        run_checked(
            Command::new("cc")
                .args(["-shared", "-fPIC"])
                .arg(format!("-Wl,-soname,{soname}"))
                .arg("-o")
                .arg(stubs.join(format!("lib{stem}.so")))
                .arg(&src),
            "cc",
        )?;
    }
    Ok(())
}

/// (bundle name, path, is a test) of each executable in cargo's JSON messages.
fn executables(json: &[u8]) -> Result<Vec<(String, PathBuf, bool)>> {
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(json).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let package = v["package_id"].as_str().unwrap_or_default();
        let Some(krate) = ["classm-model", "classm-losses"]
            .into_iter()
            .find(|c| package.contains(c))
        else {
            continue;
        };
        let target = v["target"]["name"].as_str().unwrap_or_default();
        let is_test = v["profile"]["test"].as_bool().unwrap_or(false);
        let name = if is_test {
            let kind = if target == krate.replace('-', "_") {
                "unit"
            } else {
                target
            };
            format!("{krate}-{kind}-test")
        } else {
            target.to_owned()
        };
        out.push((name, PathBuf::from(exe), is_test));
    }
    Ok(out)
}

/// The script that runs the bundle from the repository's root on the GPU machine.
fn run_script(root: &Path, tests: &[String]) -> String {
    let commit = machine::commit();
    format!(
        r#"#!/bin/bash
# classm's CUDA tests and train-step timings, built by `cargo xtask check-cuda --bundle` at
# commit {commit}. Run from the root of a checkout of that commit on a machine with an NVIDIA
# driver and PyTorch's CUDA 13 wheels (their libraries stand in for a toolkit).
set -u
here=$(cd "$(dirname "$0")" && pwd)
# The tests read their fixtures under the path the build had.
build_root={root}
if [ ! -e "$build_root" ]; then
    mkdir -p "$(dirname "$build_root")" && ln -s "$(pwd -P)" "$build_root"
fi
site=$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)
libs=$(find "$site/nvidia" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd: -)
export LD_LIBRARY_PATH="$libs:/usr/local/nvidia/lib64:/usr/local/nvidia/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
status=0
for t in {tests}; do
    echo "== $t"
    "$here/bin/$t" || status=1
done
echo "== train step (dual ResNet18, random input): classm forward + backward, then PyTorch"
echo "   (PyTorch's step also takes the losses and an RMSprop update: a slightly longer step)"
for args in "256 64 95 10" "256 64 32 10" "96 64 95 10" "64 32 95 10"; do
    set -- $args
    CLASSM_DEVICE=cuda "$here/bin/step" $args || status=1
    python3 xtask/python/bench_model.py --size $1 --width $2 --batch $3 --steps $4 --device cuda || status=1
done
exit $status
"#,
        root = root.display(),
        tests = tests.join(" ")
    )
}
