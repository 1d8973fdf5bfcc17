//! `cargo xtask bench model`: forward and training-step throughput of the CLASS-M dual ResNet
//! in candle against the same network in PyTorch (`xtask/python/bench_model.py`), same batch,
//! same thread count, one run.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::Args;
use classm_losses::{
    Optimizer, Reduction, RmsProp, RmsPropParams, soft_cross_entropy, triplet_roll,
};
use classm_model::{ClassmConfig, ClassmNet, ResNetConfig};
use serde::Serialize;

use super::machine;
use crate::paths;

/// Options of `bench model`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Also the paper's size (256 px, width 64): minutes per configuration on a small CPU.
    #[arg(long)]
    pub paper: bool,
    /// Only these configurations, as SIZExWIDTH (e.g. `--only 256x64`); repeatable.
    #[arg(long, value_name = "SIZExWIDTH")]
    pub only: Vec<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Timed repetitions per measurement (best is reported).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Skip PyTorch.
    #[arg(long)]
    pub no_python: bool,
    /// Rounds of (candle, PyTorch) per configuration; each side reports its best round, so a
    /// slow spell on a shared machine does not land on one side only.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Run candle with glibc's default `malloc` settings instead of
    /// `classm_model::keep_freed_memory` (which classm's training processes apply): to
    /// measure what that setting is worth.
    #[arg(long)]
    pub default_malloc: bool,
    /// Internal: time candle alone for SIZE,WIDTH,THREADS in this process and print JSON.
    #[arg(long, hide = true, value_name = "SIZE,WIDTH,THREADS")]
    pub one: Option<String>,
}

/// Environment of a candle measurement with `threads` threads: rayon (classm's kernels and
/// gemm) and candle's own elementwise pool get the same count, and candle's pool threads
/// park at once instead of spinning 25,000 rounds after every op, which on a small machine
/// takes a core from the rayon workers.
fn candle_env(threads: usize) -> [(&'static str, String); 3] {
    [
        ("RAYON_NUM_THREADS", threads.to_string()),
        ("CANDLE_NUM_THREADS", threads.to_string()),
        ("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1".to_string()),
    ]
}

/// Times candle for one configuration in a child process, so that the thread counts (read
/// once per process by candle) are the configuration's.
fn time_candle_child(c: Config, a: &ModelArgs) -> Result<(f64, f64)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["bench", "model", "--batch", &a.batch.to_string()])
        .args(["--steps", &a.steps.to_string()])
        .args(["--one", &format!("{},{},{}", c.size, c.width, c.threads)])
        .envs(candle_env(c.threads));
    if a.default_malloc {
        cmd.arg("--default-malloc");
    }
    throughput(cmd, "the candle measurement")
}

/// Runs a measurement that prints `{"forward_img_s": …, "train_img_s": …}`.
fn throughput(mut cmd: Command, what: &str) -> Result<(f64, f64)> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let v: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())?;
    let get = |k: &str| v[k].as_f64().with_context(|| format!("{what}: no {k}"));
    Ok((get("forward_img_s")?, get("train_img_s")?))
}

fn run_one(spec: &str, a: &ModelArgs) -> Result<()> {
    let n: Vec<usize> = spec
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("--one {spec}: SIZE,WIDTH,THREADS"))?;
    let &[size, width, threads] = n.as_slice() else {
        bail!("--one {spec}: SIZE,WIDTH,THREADS")
    };
    let c = Config {
        size,
        width,
        threads,
    };
    // Before the pool's threads start, as a training binary does.
    if !a.default_malloc && !classm_model::keep_freed_memory() {
        eprintln!("note: no glibc here; keep_freed_memory does nothing");
    }
    // Inside the pool, as a training loop runs: the kernels' parallel sections start on a
    // worker instead of waking one from outside for every layer.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let (f, t) = pool.install(|| time_candle(c, a.batch, a.steps))?;
    println!(
        "{}",
        serde_json::json!({ "forward_img_s": f, "train_img_s": t })
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Config {
    size: usize,
    width: usize,
    threads: usize,
}

#[derive(Debug, Serialize)]
struct Row {
    config: Config,
    candle_forward_img_s: f64,
    candle_train_img_s: f64,
    torch_forward_img_s: Option<f64>,
    torch_train_img_s: Option<f64>,
    /// PyTorch with the `malloc` settings of `keep_freed_memory`, through `GLIBC_TUNABLES`.
    torch_kept_forward_img_s: Option<f64>,
    torch_kept_train_img_s: Option<f64>,
}

fn best(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn time_candle(c: Config, batch: usize, steps: usize) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let map = VarMap::new();
    let cfg = ClassmConfig {
        encoder: ResNetConfig {
            depth: 18,
            width: c.width,
            in_channels: 1,
        },
        classes: 3,
    };
    let net = ClassmNet::new(cfg, VarBuilder::from_varmap(&map, DType::F32, &dev))?;
    classm_model::init_seeded(&map, 0)?;
    let params: Vec<_> = {
        let data = map.data().lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        data.iter()
            .filter(|(k, _)| !k.contains("running_"))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mut opt = RmsProp::new(params, RmsPropParams::classm())?;
    let xh = Tensor::rand(0f32, 1f32, (batch, 1, c.size, c.size), &dev)?;
    let xe = Tensor::rand(0f32, 1f32, (batch, 1, c.size, c.size), &dev)?;
    let t = candle_nn::ops::softmax(&Tensor::randn(0f32, 1f32, (batch, 3), &dev)?, D::Minus1)?;
    let fwd = best(steps, || {
        let out = net.forward_t(&xh.detach(), &xe.detach(), false)?;
        out.logits.detach().sum_all()?.to_scalar::<f32>()?;
        Ok(())
    })?;
    let step = best(steps, || {
        let pass = net.forward_train(&xh, &xe)?;
        let out = &pass.out;
        let loss = (soft_cross_entropy(&out.logits, &t)?
            + (triplet_roll(&out.z_h, &out.z_e, 37.0, Reduction::Sum)? * 1e-3)?)?;
        opt.step(&pass.backward(&loss)?)?;
        Ok(())
    })?;
    Ok((batch as f64 / fwd, batch as f64 / step))
}

fn time_torch(c: Config, batch: usize, steps: usize, keep_freed: bool) -> Result<(f64, f64)> {
    let py = std::env::var_os(super::data::PYTHON_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| paths::repo_root().join("target/torch-venv/bin/python"));
    let mut cmd = Command::new(&py);
    cmd.arg(paths::repo_root().join("xtask/python/bench_model.py"))
        .args([
            "--size",
            &c.size.to_string(),
            "--width",
            &c.width.to_string(),
        ])
        .args([
            "--batch",
            &batch.to_string(),
            "--threads",
            &c.threads.to_string(),
        ])
        .args(["--steps", &steps.to_string()]);
    if keep_freed {
        cmd.env("GLIBC_TUNABLES", classm_model::keep_freed_tunables());
    }
    throughput(cmd, &format!("bench_model.py ({})", py.display()))
}

/// `bench model`.
pub fn run(a: &ModelArgs) -> Result<()> {
    if let Some(spec) = &a.one {
        return run_one(spec, a);
    }
    let mut configs = Vec::new();
    for threads in [1usize, 2] {
        for (size, width) in [(64, 32), (64, 64), (96, 64)] {
            configs.push(Config {
                size,
                width,
                threads,
            });
        }
        if a.paper {
            configs.push(Config {
                size: 256,
                width: 64,
                threads,
            });
        }
    }
    if !a.only.is_empty() {
        configs.retain(|c| a.only.contains(&format!("{}x{}", c.size, c.width)));
        if configs.is_empty() {
            bail!(
                "--only {:?} matches no configuration (add --paper for 256x64)",
                a.only
            );
        }
    }
    let mut rows = Vec::new();
    for c in configs {
        let (mut f, mut t) = (0f64, 0f64);
        let mut torch: [Option<(f64, f64)>; 2] = [None, None];
        for _ in 0..a.rounds.max(1) {
            let (cf, ct) = time_candle_child(c, a)?;
            (f, t) = (f.max(cf), t.max(ct));
            if a.no_python {
                continue;
            }
            for (keep_freed, best) in [false, true].into_iter().zip(&mut torch) {
                if let Ok((pf, pt)) = time_torch(c, a.batch, a.steps, keep_freed) {
                    *best = Some(best.map_or((pf, pt), |(x, y)| (x.max(pf), y.max(pt))));
                }
            }
        }
        let show =
            |x: Option<(f64, f64)>| x.map_or("—".into(), |(f, t)| format!("{f:.1} / {t:.2}"));
        eprintln!(
            "{} px, width {}, {} thread(s): candle {f:.1} / {t:.2} img/s, torch {} (same malloc: {})",
            c.size,
            c.width,
            c.threads,
            show(torch[0]),
            show(torch[1]),
        );
        rows.push(Row {
            config: c,
            candle_forward_img_s: f,
            candle_train_img_s: t,
            torch_forward_img_s: torch[0].map(|x| x.0),
            torch_train_img_s: torch[0].map(|x| x.1),
            torch_kept_forward_img_s: torch[1].map(|x| x.0),
            torch_kept_train_img_s: torch[1].map(|x| x.1),
        });
    }
    let m = machine::probe();
    let mut md = format!(
        "### CLASS-M dual ResNet18: candle vs PyTorch\n\n{} ({}), {} CPUs, {}, commit {}, {}; batch {}, best of {} after a warm-up, best of {} alternating rounds.\n\
         Forward: eval mode. Train step: train-mode forward, soft CE + triplet, backward, RMSprop. One image = one H+E pair.\n\
         candle runs with {}; PyTorch as installed (glibc's defaults) and, in the \"same malloc\" columns, with those settings as `GLIBC_TUNABLES`.\n\n\
         | input | width | threads | candle fwd img/s | PyTorch fwd | ratio | same malloc | ratio | candle train img/s | PyTorch train | ratio | same malloc | ratio |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        m.cpu_model,
        m.simd,
        m.nproc,
        m.rustc,
        m.commit,
        m.date_utc,
        a.batch,
        a.steps,
        a.rounds,
        if a.default_malloc {
            "glibc's default malloc settings (`--default-malloc`)"
        } else {
            "`keep_freed_memory` (no mmap, no heap trimming, one arena)"
        }
    );
    for r in &rows {
        let ratio = |x: f64, y: Option<f64>| y.map_or("—".into(), |y| format!("{:.2}×", x / y));
        let opt = |y: Option<f64>| y.map_or("—".into(), |y| format!("{y:.2}"));
        md.push_str(&format!(
            "| {0}×{0} | {1} | {2} | {3:.2} | {4} | {5} | {6} | {7} | {8:.2} | {9} | {10} | {11} | {12} |\n",
            r.config.size,
            r.config.width,
            r.config.threads,
            r.candle_forward_img_s,
            opt(r.torch_forward_img_s),
            ratio(r.candle_forward_img_s, r.torch_forward_img_s),
            opt(r.torch_kept_forward_img_s),
            ratio(r.candle_forward_img_s, r.torch_kept_forward_img_s),
            r.candle_train_img_s,
            opt(r.torch_train_img_s),
            ratio(r.candle_train_img_s, r.torch_train_img_s),
            opt(r.torch_kept_train_img_s),
            ratio(r.candle_train_img_s, r.torch_kept_train_img_s),
        ));
    }
    let out = paths::repo_root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("model.md"), &md)?;
    std::fs::write(out.join("model.json"), serde_json::to_string_pretty(&rows)?)?;
    println!("{md}");
    Ok(())
}
