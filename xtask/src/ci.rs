//! `cargo xtask ci`: every check, in order, stopping at the first failure.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::paths;

struct Step {
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const STEPS: &[Step] = &[
    Step {
        args: &["fmt", "--all", "--", "--check"],
        env: &[],
    },
    Step {
        args: &[
            "clippy",
            "--release",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    // classm-stain must stand alone without its default `image` feature.
    Step {
        args: &[
            "check",
            "--release",
            "-p",
            "classm-stain",
            "--no-default-features",
        ],
        env: &[],
    },
    // Runs unit, integration and doc tests.
    Step {
        args: &["test", "--release", "--workspace"],
        env: &[],
    },
    Step {
        args: &["doc", "--release", "--workspace", "--no-deps"],
        env: &[("RUSTDOCFLAGS", "-D warnings")],
    },
];

fn describe(step: &Step) -> String {
    let env: String = step
        .env
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\" "))
        .collect();
    format!("{env}cargo {}", step.args.join(" "))
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Runs the steps; returns an error naming the first one that fails.
pub fn run() -> Result<()> {
    let root = paths::repo_root();
    let cargo = paths::cargo();
    let total = Instant::now();
    let mut done: Vec<(String, Duration)> = Vec::new();
    for (i, step) in STEPS.iter().enumerate() {
        let name = describe(step);
        println!("\n==> [{}/{}] {name}", i + 1, STEPS.len());
        let t0 = Instant::now();
        let status = Command::new(&cargo)
            .args(step.args)
            .envs(step.env.iter().copied())
            .current_dir(&root)
            .status()
            .with_context(|| format!("could not start `{name}`"))?;
        let took = t0.elapsed();
        if !status.success() {
            let code = status.code().map_or_else(
                || "killed by a signal".to_owned(),
                |c| format!("exit code {c}"),
            );
            println!(
                "\n==> FAILED [{}/{}] {name} ({code}) after {}",
                i + 1,
                STEPS.len(),
                secs(took)
            );
            bail!("ci step `{name}` failed ({code})");
        }
        println!(
            "==> ok [{}/{}] {name} in {}",
            i + 1,
            STEPS.len(),
            secs(took)
        );
        done.push((name, took));
    }
    println!("\n==> ci passed in {}", secs(total.elapsed()));
    for (name, took) in &done {
        println!("    {:>7}  {name}", secs(*took));
    }
    Ok(())
}
