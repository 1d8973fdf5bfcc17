//! What the benchmark ran on.

use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::paths;

/// Machine and build facts printed with every report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available to this process (`nproc`).
    pub nproc: usize,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Widest vector instructions the CPU offers, as the `gemm` kernels (candle's and
    /// classm-model's) pick them at run time: ratios against PyTorch differ between an AVX2
    /// and an AVX-512 machine.
    #[serde(default)]
    pub simd: String,
    /// `MemTotal` of `/proc/meminfo`, bytes.
    pub mem_total_bytes: Option<u64>,
    /// Kernel release.
    pub kernel: String,
    /// `rustc -V`.
    pub rustc: String,
    /// `git describe`-like commit, with `-dirty` when the tree has changes.
    pub commit: String,
    /// UTC date (`date -u`), or empty.
    pub date_utc: String,
}

fn cmd_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(paths::repo_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Collects the machine facts (missing ones become "unknown").
pub fn probe() -> Machine {
    let nproc = super::nproc();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let mem_total_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                let kb = l.strip_prefix("MemTotal:")?.trim().trim_end_matches("kB");
                kb.trim().parse::<u64>().ok()
            })
        })
        .map(|kb| kb * 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let rustc = cmd_line(&rustc, &["-V"]).unwrap_or_else(|| "unknown".to_owned());
    let simd = simd();
    let commit = commit();
    let date_utc = cmd_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    Machine {
        nproc,
        cpu_model,
        simd,
        mem_total_bytes,
        kernel,
        rustc,
        commit,
        date_utc,
    }
}

fn simd() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512".to_owned();
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "AVX2+FMA".to_owned();
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        return "NEON".to_owned();
    }
    #[allow(unreachable_code)]
    "baseline".to_owned()
}

/// The checkout's commit (10 hex digits), with `-dirty` when tracked files have changes.
pub fn commit() -> String {
    match cmd_line("git", &["rev-parse", "--short=10", "HEAD"]) {
        Some(c) => {
            let dirty = cmd_line("git", &["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{c}-dirty") } else { c }
        }
        None => "unknown".to_owned(),
    }
}
