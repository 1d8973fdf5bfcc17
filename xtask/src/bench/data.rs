//! `cargo xtask bench data`: patches/s of classm-data's training pipeline (decode + jitter +
//! separation + H/E augmentation + batching) against PIL + torchvision doing the same steps
//! (`xtask/python/bench_data.py`), in one run, at the paper's and the CPU presets' sizes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use classm_data::{
    AugmentConfig, Dataset, Mode, Normalization, Pipeline, Request, Source, SourceOptions,
    StainLookup, StainOptions, group_stains, read_rgb8,
};
use serde::Serialize;

use super::{machine, mem};
use crate::paths;

/// Environment variable naming a Python executable with torch, torchvision and Pillow.
pub const PYTHON_ENV: &str = "CLASSM_TORCH_PYTHON";
/// Patches per batch, both sides.
const BATCH: usize = 32;

/// Options of `bench data`.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Dataset (folder or manifest); default ../shared/data/ebhi-seg/MANIFEST.tsv, else the
    /// bundled fixtures/ebhi-mini.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Time at least this long per configuration (whole epochs).
    #[arg(long, default_value_t = 3.0)]
    pub min_seconds: f64,
    /// Only the 224 px configuration, and the first 256 patches.
    #[arg(long)]
    pub quick: bool,
    /// Skip the Python side.
    #[arg(long)]
    pub no_python: bool,
}

#[derive(Debug, Clone, Serialize)]
struct Config {
    name: &'static str,
    resize: u32,
    center: u32,
    crop: u32,
}

impl Config {
    fn augment(&self) -> AugmentConfig {
        AugmentConfig {
            resize: (self.resize > 0).then_some(self.resize),
            center_crop: Some(self.center),
            crop: self.crop,
            ..AugmentConfig::paper()
        }
    }
}

fn configs(quick: bool) -> Vec<Config> {
    let mut c = vec![Config {
        name: "224 px (EBHI native, centre 158, crop 136)",
        resize: 0,
        center: 158,
        crop: 136,
    }];
    if !quick {
        let small = AugmentConfig::scaled(96, true);
        c.push(Config {
            name: "paper (resized to 400, centre 282, crop 256)",
            resize: 400,
            center: 282,
            crop: 256,
        });
        c.push(Config {
            name: "CPU preset (resized to 96, centre 67, crop 56)",
            resize: 96,
            center: small.center_crop.unwrap_or(67),
            crop: small.crop,
        });
    }
    c
}

#[derive(Debug, Serialize)]
struct Row {
    config: Config,
    threads: usize,
    rust_patches_per_s: f64,
    rust_patches: usize,
    /// With every patch's decoded pixels kept from the first epoch on.
    rust_cached_patches_per_s: f64,
    python_patches_per_s: Option<f64>,
    python_note: Option<String>,
}

/// `bench data`.
pub fn run(a: &DataArgs) -> Result<()> {
    let (shared, _) = paths::shared_dir();
    let path = a.dataset.clone().unwrap_or_else(|| {
        let ebhi = shared.join("data/ebhi-seg/MANIFEST.tsv");
        if ebhi.is_file() {
            ebhi
        } else {
            paths::repo_root().join("fixtures/ebhi-mini/MANIFEST.tsv")
        }
    });
    let mut dataset = Dataset::open(&path, &SourceOptions::default())
        .with_context(|| format!("reading {}", path.display()))?;
    if a.quick {
        dataset.samples.truncate(256);
    }
    let n = dataset.samples.len();
    eprintln!(
        "dataset {} ({n} patches, {} groups)",
        path.display(),
        dataset.group_count()
    );

    let t = Instant::now();
    let stains = group_stains(&dataset, &StainOptions::default(), None, &|| {})?;
    let stain_s = t.elapsed().as_secs_f64();
    eprintln!(
        "per-group stain matrices: {} groups in {stain_s:.2} s ({} fallbacks; not in the timings below)",
        stains.groups.len(),
        stains.fallbacks().len()
    );
    let t = Instant::now();
    for s in &dataset.samples {
        read_rgb8(&s.path)?;
    }
    let decode_per_s = n as f64 / t.elapsed().as_secs_f64();
    eprintln!("decode only, 1 thread: {decode_per_s:.0} patches/s");

    let dataset = Arc::new(dataset);
    let lookup = Arc::new(StainLookup::per_group(&stains));
    let list = write_list(&dataset)?;
    let python = if a.no_python { None } else { find_python() };
    let mut rows = Vec::new();
    for cfg in configs(a.quick) {
        for threads in [1usize, 2] {
            let pipeline = Arc::new(Pipeline::new(cfg.augment(), Normalization::paper())?);
            let source = Source::new(dataset.clone(), lookup.clone(), pipeline.clone(), 0)?;
            let (rate, patches) = time_rust(&source, threads, a.min_seconds)?;
            let cached = Source::new(dataset.clone(), lookup.clone(), pipeline, 0)?
                .with_decoded_cache(usize::MAX);
            let (cached_rate, _) = time_rust(&cached, threads, a.min_seconds)?;
            drop(cached);
            let (py, note) = match &python {
                Some(py) => match time_python(py, &list, &cfg, threads, a.min_seconds) {
                    Ok(r) => (Some(r), None),
                    Err(e) => (None, Some(format!("{e:#}"))),
                },
                None => (None, Some(python_hint(a.no_python))),
            };
            eprintln!(
                "{} · {threads} thread(s): classm {rate:.0} patches/s ({cached_rate:.0} cached), python {}",
                cfg.name,
                py.map_or("—".into(), |p| format!("{p:.1} patches/s"))
            );
            rows.push(Row {
                config: cfg.clone(),
                threads,
                rust_patches_per_s: rate,
                rust_patches: patches,
                rust_cached_patches_per_s: cached_rate,
                python_patches_per_s: py,
                python_note: note,
            });
        }
    }
    let md = markdown(&rows, &path, n, stain_s, decode_per_s);
    let out = paths::repo_root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("data.md"), &md)?;
    std::fs::write(out.join("data.json"), serde_json::to_string_pretty(&rows)?)?;
    println!("{md}");
    eprintln!("written: target/bench/data.md, target/bench/data.json");
    Ok(())
}

/// Whole epochs of training batches (one view) until `min_s` has passed (at least three), on
/// `threads` rayon threads, after one untimed epoch (which fills a decoded-patch cache);
/// returns the median epoch's patches/s (this VM's neighbours make single timings jump by a
/// third) and the patch count.
fn time_rust(source: &Source, threads: usize, min_s: f64) -> Result<(f64, usize)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let n = source.dataset().samples.len();
    let order: Vec<usize> = (0..n).collect();
    let batches: Vec<&[usize]> = order.chunks(BATCH).collect();
    let load = |epoch: u64, b: usize| {
        source.load(&Request {
            indices: batches[b].to_vec(),
            mode: Mode::Train,
            views: 1,
            epoch,
            first_draw: (b * BATCH) as u64,
        })
    };
    for b in 0..batches.len() {
        source.recycle(pool.install(|| load(0, b))?);
    }
    let t = Instant::now();
    let mut patches = 0;
    let mut rates = Vec::new();
    let mut epoch = 1;
    while rates.len() < 3 || t.elapsed().as_secs_f64() < min_s {
        let e = Instant::now();
        for b in 0..batches.len() {
            let batch = pool.install(|| load(epoch, b))?;
            patches += batch.indices.len();
            source.recycle(batch);
        }
        rates.push(n as f64 / e.elapsed().as_secs_f64());
        epoch += 1;
    }
    Ok((super::median(&rates), patches))
}

fn write_list(d: &Dataset) -> Result<PathBuf> {
    let out = paths::repo_root().join("target/bench/data-files.txt");
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
    let text: String = d
        .samples
        .iter()
        .map(|s| {
            format!(
                "{}\n",
                std::fs::canonicalize(&s.path)
                    .unwrap_or(s.path.clone())
                    .display()
            )
        })
        .collect();
    std::fs::write(&out, text)?;
    Ok(out)
}

fn find_python() -> Option<PathBuf> {
    let candidate = std::env::var_os(PYTHON_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| paths::repo_root().join("target/torch-venv/bin/python"));
    let ok = Command::new(&candidate)
        .arg(script())
        .arg("--check")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(candidate)
}

fn python_hint(disabled: bool) -> String {
    if disabled {
        "--no-python".into()
    } else {
        format!(
            "no torch environment: `cargo xtask bench-setup-torch` (or set {PYTHON_ENV} to a python with torch, torchvision, pillow)"
        )
    }
}

fn script() -> PathBuf {
    paths::repo_root().join("xtask/python/bench_data.py")
}

fn time_python(py: &Path, list: &Path, cfg: &Config, workers: usize, min_s: f64) -> Result<f64> {
    let out = Command::new(py)
        .arg(script())
        .args(["--files", &list.to_string_lossy()])
        .args(["--resize", &cfg.resize.to_string()])
        .args(["--center", &cfg.center.to_string()])
        .args(["--crop", &cfg.crop.to_string()])
        .args(["--workers", &workers.to_string()])
        .args(["--batch", &BATCH.to_string()])
        .args(["--min-seconds", &min_s.to_string()])
        .output()
        .context("starting bench_data.py")?;
    if !out.status.success() {
        bail!(
            "bench_data.py failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).context("bench_data.py output")?;
    v["patches_per_s"]
        .as_f64()
        .context("no patches_per_s in bench_data.py output")
}

fn markdown(rows: &[Row], path: &Path, n: usize, stain_s: f64, decode: f64) -> String {
    let m = machine::probe();
    let mut s = format!(
        "### classm-data training pipeline vs PIL + torchvision\n\n\
         {n} patches from `{}`; {}; batches of {BATCH}, one augmented view per patch.\n\
         Both sides: decode, colour jitter, H&E separation, independent H and E brightness,\n\
         rotation, centre crop, random crop, flips, normalisation, batching. Python: a torch\n\
         DataLoader with 0 workers (1 thread) or 2 worker processes. \"Cached\": classm with\n\
         `Source::with_decoded_cache`, every patch decoded once (the untimed first epoch) and\n\
         kept; not compared with Python, which decodes every epoch.\n\n\
         | configuration | threads | classm patches/s | classm per core | Python patches/s | ratio (same cores) | classm cached | cache gain |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
        path.display(),
        format_args!(
            "{} ({}), {} CPUs, {}, commit {}, {}",
            m.cpu_model, m.simd, m.nproc, m.rustc, m.commit, m.date_utc
        )
    );
    for r in rows {
        let (py, ratio) = match r.python_patches_per_s {
            Some(p) => (
                format!("{p:.1}"),
                format!("{:.1}×", r.rust_patches_per_s / p),
            ),
            None => ("—".into(), "—".into()),
        };
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {py} | {ratio} | {:.0} | {:.2}× |\n",
            r.config.name,
            r.threads,
            r.rust_patches_per_s,
            r.rust_patches_per_s / r.threads as f64,
            r.rust_cached_patches_per_s,
            r.rust_cached_patches_per_s / r.rust_patches_per_s
        ));
    }
    s.push_str(&format!(
        "\nPer-group stain matrices (computed once, cached in real runs): {stain_s:.2} s. \
         PNG decode alone, 1 thread: {decode:.0} patches/s.\n"
    ));
    if let Some(note) = rows.iter().find_map(|r| r.python_note.as_ref()) {
        s.push_str(&format!("\nPython side: {note}\n"));
    }
    if let Some(p) = mem::peak_rss() {
        s.push_str(&format!(
            "\nPeak memory of the classm process: {:.0} MiB (one decoded-patch cache at a time \
             included: the whole dataset's pixels at the largest configured size).\n",
            mem::mib(p)
        ));
    }
    s
}
