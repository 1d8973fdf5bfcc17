//! `cargo xtask bench stain`: classm-stain throughput and peak memory, one fresh process per
//! configuration, with the Python reference libraries side by side.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use classm_stain::{
    EstimateOptions, Output, RgbView, Sampling, Separator, SlideEstimator, StainError,
    StainEstimate, Tile, estimate,
};
use serde::{Deserialize, Serialize};

use super::input::{self, ImageSpec};
use super::{cpu, machine, median, mem, nproc, python, report};
use crate::paths;

/// The large region shipped in the shared data folder.
const LARGE: &str = "data/stain/large/openslide__CMU-1-Small-Region.png";
/// Repository fixture used when the shared folder is absent.
const FIXTURE: &str = "fixtures/stain/torchstain__source.png";

/// Options of `bench stain`.
#[derive(Debug, Args)]
pub struct StainArgs {
    /// Fewer repeats (2), Python once on the 6.6 MP image only.
    #[arg(long)]
    pub quick: bool,
    /// Skip the Python reference libraries.
    #[arg(long)]
    pub no_python: bool,
    /// Repeats per configuration (median reported). Default 5, --quick 2.
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Repeats per Python configuration. Default 3, --quick 1.
    #[arg(long)]
    pub py_repeats: Option<usize>,
    /// Thread counts, comma-separated. Default: 1 and the machine's cores.
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Source image (default: the 6.6 MP CMU-1 region in the shared folder).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Side of the square mirror tiling built from the source (≥ 16 MP by default).
    #[arg(long, default_value_t = 4096)]
    pub mirror_size: usize,
    /// Tile side of the streaming paths.
    #[arg(long, default_value_t = 1024)]
    pub tile: usize,
    /// Output folder of stain.md and stain.json (default target/bench).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Before each configuration, wait up to this many seconds for other processes to leave
    /// the cores idle (shared machines). Busy measurements are flagged either way.
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub wait_idle: f64,
}

/// How one configuration estimates and separates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `estimate` (all pixels) + `separate_into` on the whole image.
    Whole,
    /// `SlideEstimator` over tiles for every pass, then separation tile by tile into one
    /// reusable tile-sized buffer.
    Tiled,
    /// As `Tiled`, with CLASS-M's grid:10 sampling for the estimate.
    TiledGrid10,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Whole, Mode::Tiled, Mode::TiledGrid10];

    /// Table label.
    pub fn label(self, tile: usize) -> String {
        match self {
            Mode::Whole => "whole image, all pixels".to_owned(),
            Mode::Tiled => format!("tiled {tile}², all pixels"),
            Mode::TiledGrid10 => format!("tiled {tile}², grid:10 estimate"),
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Mode::Whole => "whole",
            Mode::Tiled => "tiled",
            Mode::TiledGrid10 => "tiled-grid10",
        }
    }
}

/// Arguments of the hidden `bench-worker` subcommand: one configuration, JSON on stdout.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Image file.
    #[arg(long)]
    pub image: PathBuf,
    /// Mirror tiling side (omit for the file as it is).
    #[arg(long)]
    pub mirror: Option<usize>,
    /// What to run.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// rayon threads.
    #[arg(long)]
    pub threads: usize,
    /// Repeats.
    #[arg(long)]
    pub repeats: usize,
    /// Tile side.
    #[arg(long, default_value_t = 1024)]
    pub tile: usize,
}

/// The fitted estimate, to compare paths and thread counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimateSummary {
    /// Hematoxylin unit vector.
    pub h: [f64; 3],
    /// Eosin unit vector.
    pub e: [f64; 3],
    /// Maximum concentrations.
    pub max_conc: [f64; 2],
    /// Background intensity.
    pub i0: [f64; 3],
    /// Pixels sampled.
    pub sampled_pixels: u64,
    /// Pixels in the angle percentiles.
    pub kept_pixels: u64,
}

impl From<&StainEstimate> for EstimateSummary {
    fn from(e: &StainEstimate) -> Self {
        EstimateSummary {
            h: e.matrix.h,
            e: e.matrix.e,
            max_conc: e.max_conc,
            i0: e.i0,
            sampled_pixels: e.diagnostics.sampled_pixels,
            kept_pixels: e.diagnostics.kept_pixels,
        }
    }
}

/// What one worker measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RustRun {
    /// The image.
    pub spec: ImageSpec,
    /// Path.
    pub mode: Mode,
    /// rayon threads.
    pub threads: usize,
    /// Tile side (streaming paths).
    pub tile: usize,
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Megapixels.
    pub megapixels: f64,
    /// Seconds to decode the file (excluded from throughput).
    pub decode_s: f64,
    /// Seconds to build the mirror tiling (excluded from throughput).
    pub mirror_s: f64,
    /// Estimate seconds per repeat.
    pub estimate_s: Vec<f64>,
    /// Separation seconds per repeat.
    pub separate_s: Vec<f64>,
    /// End-to-end seconds per repeat.
    pub total_s: Vec<f64>,
    /// Median of `total_s`.
    pub median_s: f64,
    /// Megapixels per second (median).
    pub mp_per_s: f64,
    /// `mp_per_s / threads`.
    pub mp_per_s_per_core: f64,
    /// Bytes of the decoded image.
    pub image_bytes: u64,
    /// `VmHWM` after decoding and tiling, before the timed runs.
    pub load_peak_bytes: Option<u64>,
    /// `VmRSS` when the timed runs started.
    pub baseline_rss_bytes: Option<u64>,
    /// `VmHWM` of the timed runs alone (when `peak_reset`), else of the whole process.
    pub run_peak_bytes: Option<u64>,
    /// Whether `VmHWM` could be reset before the timed runs.
    pub peak_reset: bool,
    /// Peak of the whole process.
    pub peak_rss_bytes: Option<u64>,
    /// `run_peak_bytes − image_bytes`: what estimation and separation needed beyond the pixels
    /// (includes the process's own few MiB).
    pub working_bytes: Option<u64>,
    /// Image checksum (see `input::checksum`).
    pub checksum: [u64; 2],
    /// Tiles per pass (1 for the whole image).
    pub tiles: usize,
    /// The fitted estimate.
    pub estimate: EstimateSummary,
    /// Median seconds of each estimator pass (streaming paths; empty for the whole image).
    pub pass_s: Vec<(String, f64)>,
    /// Cores used by other processes meanwhile, on average (set by the parent).
    #[serde(default)]
    pub others_cores: Option<f64>,
}

struct Timed {
    estimate: StainEstimate,
    estimate_s: f64,
    separate_s: f64,
    /// Seconds per estimator pass (streaming paths only).
    passes: Vec<(String, f64)>,
}

fn run_whole(view: RgbView<'_>) -> Result<Timed> {
    let t0 = Instant::now();
    let est = estimate(view, &EstimateOptions::default())?;
    let t1 = Instant::now();
    let sep = Separator::new(&est)?;
    let mut h = vec![0f32; view.pixels()];
    let mut e = vec![0f32; view.pixels()];
    sep.separate_into(view, Output::ModelInput, &mut h, &mut e)?;
    std::hint::black_box((&mut h, &mut e));
    let t2 = Instant::now();
    drop((h, e));
    Ok(Timed {
        estimate: est,
        estimate_s: (t1 - t0).as_secs_f64(),
        separate_s: (t2 - t1).as_secs_f64(),
        passes: Vec::new(),
    })
}

/// `(x, y, w, h)` of every tile, row-major.
fn tile_grid(width: usize, height: usize, tile: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut v = Vec::new();
    for y in (0..height).step_by(tile) {
        for x in (0..width).step_by(tile) {
            v.push((x, y, tile.min(width - x), tile.min(height - y)));
        }
    }
    v
}

fn run_tiled(view: RgbView<'_>, opts: EstimateOptions, tile: usize) -> Result<Timed> {
    let grid = tile_grid(view.width(), view.height(), tile);
    let t0 = Instant::now();
    let mut est = SlideEstimator::new(opts)?;
    let mut passes = Vec::new();
    while let Some(pass) = est.next_pass() {
        let tp = Instant::now();
        let empty = est.begin()?;
        // One state per worker thread, merged: what a multi-core slide reader does.
        let tiles = grid
            .iter()
            .map(|&(x, y, w, h)| Ok(Tile::new(view.crop(x, y, w, h)?).at(x as u64, y as u64)))
            .collect::<Result<Vec<_>, StainError>>()?;
        let state = empty.add_all_parallel(&tiles)?;
        est.finish_pass(state)?;
        passes.push((format!("{pass:?}"), tp.elapsed().as_secs_f64()));
    }
    let est = est.estimate()?;
    let t1 = Instant::now();
    let sep = Separator::new(&est)?;
    let mut h = vec![0f32; tile * tile];
    let mut e = vec![0f32; tile * tile];
    for &(x, y, w, th) in &grid {
        let n = w * th;
        sep.separate_into(
            view.crop(x, y, w, th)?,
            Output::ModelInput,
            &mut h[..n],
            &mut e[..n],
        )?;
        std::hint::black_box((&mut h, &mut e));
    }
    let t2 = Instant::now();
    Ok(Timed {
        estimate: est,
        estimate_s: (t1 - t0).as_secs_f64(),
        separate_s: (t2 - t1).as_secs_f64(),
        passes,
    })
}

/// The hidden `bench-worker` subcommand: decode, reset the memory peak, run the repeats inside
/// a pool of `threads` threads, print one JSON line.
pub fn worker(a: &WorkerArgs) -> Result<()> {
    if a.threads == 0 || a.repeats == 0 || a.tile == 0 {
        bail!("threads, repeats and tile must be ≥ 1");
    }
    let spec = ImageSpec {
        path: a.image.clone(),
        mirror: a.mirror,
    };
    let img = input::load(&spec)?;
    let view = RgbView::new(img.width, img.height, &img.data)?;
    let checksum = input::checksum(&img.data, img.width, img.height);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build()
        .context("cannot build the rayon pool")?;
    let load_peak = mem::peak_rss();
    let peak_reset = mem::reset_peak();
    let baseline = mem::rss();
    let mut runs = Vec::with_capacity(a.repeats);
    for _ in 0..a.repeats {
        let t0 = Instant::now();
        let r = pool.install(|| match a.mode {
            Mode::Whole => run_whole(view),
            Mode::Tiled => run_tiled(view, EstimateOptions::default(), a.tile),
            Mode::TiledGrid10 => run_tiled(
                view,
                EstimateOptions::default().with_sampling(Sampling::Grid { step: 10 }),
                a.tile,
            ),
        })?;
        runs.push((t0.elapsed().as_secs_f64(), r));
    }
    let run_peak = mem::peak_rss();
    let image_bytes = img.data.len() as u64;
    let total_s: Vec<f64> = runs.iter().map(|r| r.0).collect();
    let median_s = median(&total_s);
    let megapixels = view.pixels() as f64 / 1e6;
    let mp_per_s = megapixels / median_s;
    let first = &runs[0].1.estimate;
    if runs.iter().any(|r| r.1.estimate != *first) {
        bail!("the estimate changed between repeats: not deterministic");
    }
    let out = RustRun {
        spec,
        mode: a.mode,
        threads: a.threads,
        tile: a.tile,
        width: img.width,
        height: img.height,
        megapixels,
        decode_s: img.decode_s,
        mirror_s: img.mirror_s,
        estimate_s: runs.iter().map(|r| r.1.estimate_s).collect(),
        separate_s: runs.iter().map(|r| r.1.separate_s).collect(),
        median_s,
        total_s,
        mp_per_s,
        mp_per_s_per_core: mp_per_s / a.threads as f64,
        image_bytes,
        load_peak_bytes: load_peak,
        baseline_rss_bytes: baseline,
        run_peak_bytes: run_peak,
        peak_reset,
        peak_rss_bytes: match (load_peak, run_peak) {
            (Some(l), Some(r)) => Some(l.max(r)),
            (l, r) => l.or(r),
        },
        working_bytes: run_peak.map(|p| p.saturating_sub(image_bytes)),
        checksum,
        tiles: match a.mode {
            Mode::Whole => 1,
            _ => tile_grid(img.width, img.height, a.tile).len(),
        },
        estimate: first.into(),
        pass_s: pass_medians(&runs),
        others_cores: None,
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

fn pass_medians(runs: &[(f64, Timed)]) -> Vec<(String, f64)> {
    let names: Vec<String> = runs[0].1.passes.iter().map(|p| p.0.clone()).collect();
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let t: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.1.passes.get(i).map(|p| p.1))
                .collect();
            (name, median(&t))
        })
        .collect()
}

/// Runs one configuration in a fresh `xtask bench-worker` process.
fn spawn_worker(
    spec: &ImageSpec,
    mode: Mode,
    threads: usize,
    repeats: usize,
    tile: usize,
) -> Result<RustRun> {
    let exe = std::env::current_exe().context("cannot locate the xtask executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench-worker")
        .arg("--image")
        .arg(&spec.path)
        .args(["--mode", mode.arg()])
        .args(["--threads", &threads.to_string()])
        .args(["--repeats", &repeats.to_string()])
        .args(["--tile", &tile.to_string()]);
    if let Some(m) = spec.mirror {
        cmd.args(["--mirror", &m.to_string()]);
    }
    let before = cpu::snapshot();
    let out = cmd.output().context("cannot start the benchmark worker")?;
    let after = cpu::snapshot();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("worker failed ({}): {}", out.status, err.trim());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let mut r: RustRun =
        serde_json::from_str(line).with_context(|| format!("unreadable worker output: {line}"))?;
    r.others_cores = cpu::others_cores(before, after, nproc());
    Ok(r)
}

/// Above this many cores used by other processes, a measurement is flagged.
pub const BUSY_CORES: f64 = 0.25;

/// ", machine busy" when other processes used more than [`BUSY_CORES`].
pub fn busy_note(others: Option<f64>) -> String {
    match others {
        Some(c) if c > BUSY_CORES => format!(" (BUSY: other processes used {c:.1} cores)"),
        _ => String::new(),
    }
}

/// Benchmark settings, recorded in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// `--quick`.
    pub quick: bool,
    /// Rust repeats per configuration.
    pub repeats: usize,
    /// Python repeats per configuration.
    pub py_repeats: usize,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Tile side.
    pub tile: usize,
    /// Images.
    pub images: Vec<ImageSpec>,
    /// Notes about inputs (fallbacks).
    pub notes: Vec<String>,
}

/// Everything `bench stain` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Machine facts.
    pub machine: machine::Machine,
    /// Settings.
    pub config: Config,
    /// Rust runs that completed.
    pub rust: Vec<RustRun>,
    /// Python runs (and why they were skipped, if they were).
    pub python: python::Section,
    /// Configurations that failed.
    pub failures: Vec<String>,
}

fn source_image(a: &StainArgs, notes: &mut Vec<String>) -> Result<PathBuf> {
    if let Some(p) = &a.image {
        if !p.is_file() {
            bail!("--image {} does not exist", p.display());
        }
        return Ok(p.clone());
    }
    let (shared, from_env) = paths::shared_dir();
    let large = shared.join(LARGE);
    if large.is_file() {
        return Ok(large);
    }
    let fixture = paths::repo_root().join(FIXTURE);
    let why = if from_env {
        format!("{} (from CLASSM_SHARED) is absent", large.display())
    } else {
        format!(
            "{} is absent (set CLASSM_SHARED to the shared data folder)",
            large.display()
        )
    };
    let note = format!(
        "{why}: falling back to the repository fixture {FIXTURE} (584x438); numbers are NOT \
         comparable with the 6.6 MP region"
    );
    eprintln!("warning: {note}");
    notes.push(note);
    if !fixture.is_file() {
        bail!("neither the shared image nor {} exists", fixture.display());
    }
    Ok(fixture)
}

/// `bench stain`.
pub fn run(a: &StainArgs) -> Result<()> {
    let machine = machine::probe();
    let repeats = a.repeats.unwrap_or(if a.quick { 2 } else { 5 }).max(1);
    let py_repeats = a.py_repeats.unwrap_or(if a.quick { 1 } else { 3 }).max(1);
    let mut threads = if a.threads.is_empty() {
        vec![1, machine.nproc]
    } else {
        a.threads.clone()
    };
    threads.retain(|&t| t > 0);
    threads.dedup();
    if threads.is_empty() {
        bail!("--threads needs at least one count ≥ 1");
    }
    let mut notes = Vec::new();
    let src = source_image(a, &mut notes)?;
    let images = vec![
        ImageSpec {
            path: src.clone(),
            mirror: None,
        },
        ImageSpec {
            path: src,
            mirror: Some(a.mirror_size),
        },
    ];
    let config = Config {
        quick: a.quick,
        repeats,
        py_repeats,
        threads: threads.clone(),
        tile: a.tile,
        images: images.clone(),
        notes,
    };
    eprintln!(
        "bench stain: {} cores ({}), {repeats} repeats, threads {threads:?}",
        machine.nproc, machine.cpu_model
    );

    let mut rust = Vec::new();
    let mut failures = Vec::new();
    let total = images.len() * threads.len() * Mode::ALL.len();
    let mut i = 0;
    for spec in &images {
        for &t in &threads {
            for mode in Mode::ALL {
                i += 1;
                eprint!(
                    "[{i}/{total}] {} | {t} thread(s) | {} ... ",
                    spec.name(),
                    mode.label(a.tile)
                );
                if a.wait_idle > 0.0 {
                    cpu::wait_idle(a.wait_idle, BUSY_CORES, nproc());
                }
                match spawn_worker(spec, mode, t, repeats, a.tile) {
                    Ok(r) => {
                        eprintln!(
                            "{:.1} ms, {:.1} MP/s, working {:.0} MiB{}",
                            1e3 * r.median_s,
                            r.mp_per_s,
                            r.working_bytes.map_or(f64::NAN, mem::mib),
                            busy_note(r.others_cores)
                        );
                        rust.push(r);
                    }
                    Err(e) => {
                        eprintln!("FAILED");
                        let msg = format!("{} | {t} threads | {}: {e:#}", spec.name(), mode.arg());
                        eprintln!("  {msg}");
                        failures.push(msg);
                    }
                }
            }
        }
    }

    let py = if a.no_python {
        python::Section::skipped("--no-python")
    } else {
        // --quick: the source image only, once, at the machine's core count.
        let (py_images, py_threads): (Vec<ImageSpec>, Vec<usize>) = if a.quick {
            (
                images[..1].to_vec(),
                vec![*threads.iter().max().unwrap_or(&1)],
            )
        } else {
            (images.clone(), threads.clone())
        };
        python::run_all(&py_images, &py_threads, py_repeats, a.wait_idle)
    };

    let report = Report {
        machine,
        config,
        rust,
        python: py,
        failures,
    };
    let md = report::markdown(&report);
    println!("{md}");
    let out_dir = a
        .out
        .clone()
        .unwrap_or_else(|| paths::repo_root().join("target/bench"));
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    std::fs::write(out_dir.join("stain.md"), &md)?;
    std::fs::write(
        out_dir.join("stain.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    eprintln!(
        "wrote {} and {}",
        out_dir.join("stain.md").display(),
        out_dir.join("stain.json").display()
    );
    if !report.failures.is_empty() {
        bail!(
            "{} configuration(s) failed (see above)",
            report.failures.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::tile_grid;

    #[test]
    fn grid_covers_image_once() {
        let g = tile_grid(2220, 2967, 1024);
        assert_eq!(g.len(), 9);
        let area: usize = g.iter().map(|t| t.2 * t.3).sum();
        assert_eq!(area, 2220 * 2967);
        assert_eq!(g[8], (2048, 2048, 172, 919));
    }
}
