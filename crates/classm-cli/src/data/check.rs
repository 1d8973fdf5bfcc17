//! `classm data check`: what a dataset holds and what will go wrong with it, before training.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use classm_data::{
    Assignment, Dataset, Fallback, GroupStain, GroupStains, OnError, ScanReport, StainOptions,
    group_stains, scan,
};
use serde::Serialize;
use tracing::{info, warn};

use super::options::DatasetArgs;
use crate::progress::Progress;
use crate::{Ctx, Status};

/// What a group whose stain estimate fails gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FallbackArg {
    /// The paper's fixed matrix, reported.
    PaperFixed,
    /// Stop the check at the first group whose estimate fails (exit status 1).
    Error,
}

/// Options of `classm data check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// A split file (from `classm data split`) whose table to print; by default the
    /// manifest's split column, if any.
    #[arg(long, value_name = "FILE")]
    pub split_file: Option<PathBuf>,
    /// Skip the per-group stain estimates.
    #[arg(long)]
    pub no_stains: bool,
    /// Stain cache file (default: `.classm-cache/stains-DATASET-HASH.json` in the current
    /// folder).
    #[arg(long, value_name = "FILE", conflicts_with = "no_cache")]
    pub stain_cache: Option<PathBuf>,
    /// Neither read nor write a stain cache.
    #[arg(long)]
    pub no_cache: bool,
    /// What a group whose estimate fails gets.
    #[arg(long, value_enum, default_value = "paper-fixed")]
    pub fallback: FallbackArg,
    /// Also write the report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Unreadable {
    path: String,
    error: String,
}

#[derive(Debug, Serialize)]
struct GroupRow {
    group: String,
    files: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    estimate: Option<classm_stain::StainEstimate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    dataset: String,
    origin: classm_data::Origin,
    classes: Vec<String>,
    samples: usize,
    unlabelled: usize,
    groups: usize,
    unreadable: Vec<Unreadable>,
    conversions: BTreeMap<&'static str, usize>,
    sizes: BTreeMap<String, usize>,
    splits_from: String,
    splits: classm_data::CountTable,
    stain_cache: Option<String>,
    stains: Vec<GroupRow>,
}

/// Scans, tabulates and estimates; exit status 1 when any file is unreadable.
pub fn run(a: CheckArgs, ctx: &Ctx) -> Result<Status> {
    let dataset = a.dataset.open()?;
    let n = dataset.samples.len();
    info!(
        "{}: {n} samples, {} classes, {} groups",
        a.dataset.dataset.display(),
        dataset.classes.len(),
        dataset.group_count()
    );

    let progress = Progress::new(n, ctx.progress_bar, "scan");
    let report = scan(&dataset, OnError::SkipAndReport, &|| {
        progress.step("decoded", false)
    })?;
    progress.finish();
    let readable = report.readable(&dataset);

    let (splits_from, assignment) = splits(&a, &dataset)?;
    let table = assignment.counts(&dataset);

    let (cache, stains) = if a.no_stains || readable.samples.is_empty() {
        (None, None)
    } else {
        let cache = (!a.no_cache).then(|| {
            a.stain_cache
                .clone()
                .unwrap_or_else(|| default_cache(&a.dataset.dataset))
        });
        let opts = StainOptions {
            fallback: match a.fallback {
                FallbackArg::PaperFixed => Fallback::PaperFixed,
                FallbackArg::Error => Fallback::Error,
            },
            ..StainOptions::default()
        };
        let groups = readable.group_count();
        let progress = Progress::new(groups, ctx.progress_bar, "stains");
        let s = group_stains(&readable, &opts, cache.as_deref(), &|| {
            progress.step("group estimated", false)
        })
        .context("per-group stain matrices")?;
        progress.finish();
        info!(
            "stain matrices: {} computed, {} from the cache",
            s.computed, s.cached
        );
        (cache, Some(s))
    };

    let out = Report {
        dataset: a.dataset.dataset.display().to_string(),
        origin: dataset.origin,
        classes: dataset.classes.clone(),
        samples: n,
        unlabelled: dataset.samples.iter().filter(|s| s.label.is_none()).count(),
        groups: dataset.group_count(),
        unreadable: unreadable(&dataset, &report),
        conversions: report.conversions(),
        sizes: report
            .sizes()
            .into_iter()
            .map(|((w, h), c)| (format!("{w}x{h}"), c))
            .collect(),
        splits_from,
        splits: table,
        stain_cache: cache.map(|p| p.display().to_string()),
        stains: stains.as_ref().map(rows).unwrap_or_default(),
    };
    print!("{}", render(&out, stains.is_some()));
    if let Some(path) = &a.json {
        let json = serde_json::to_string_pretty(&out)?;
        classm_data::write_atomic(path, json.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if out.unreadable.is_empty() {
        Ok(Status::Success)
    } else {
        warn!("{} of {n} files are unreadable", out.unreadable.len());
        Ok(Status::SomeFailed)
    }
}

fn splits(a: &CheckArgs, dataset: &Dataset) -> Result<(String, Assignment)> {
    if let Some(f) = &a.split_file {
        let asg = Assignment::read(f, dataset)
            .with_context(|| format!("reading split file {}", f.display()))?;
        return Ok((format!("split file {}", f.display()), asg));
    }
    // Any split in the manifest means the manifest defines them: a row without one is an
    // error there, not a reason to ignore the column.
    if dataset.samples.iter().any(|s| s.split.is_some()) {
        return Ok((
            "the manifest's split column".into(),
            Assignment::from_manifest(dataset)?,
        ));
    }
    Ok((
        "none (whole dataset; make one with `classm data split`)".into(),
        Assignment {
            names: vec!["all".into()],
            of_sample: vec![0; dataset.samples.len()],
        },
    ))
}

fn unreadable(dataset: &Dataset, report: &ScanReport) -> Vec<Unreadable> {
    report
        .failures
        .iter()
        .map(|f| Unreadable {
            path: dataset.samples[f.index].path.display().to_string(),
            error: f.error.to_string(),
        })
        .collect()
}

fn rows(s: &GroupStains) -> Vec<GroupRow> {
    s.groups
        .iter()
        .map(|(g, (stain, files))| match stain {
            GroupStain::Estimated(est) => GroupRow {
                group: g.clone(),
                files: *files,
                estimate: Some((**est).clone()),
                fallback: None,
            },
            GroupStain::Fallback { reason } => GroupRow {
                group: g.clone(),
                files: *files,
                estimate: None,
                fallback: Some(reason.clone()),
            },
        })
        .collect()
}

/// `.classm-cache/stains-<name>-<hash of the canonical path>.json`.
fn default_cache(dataset: &Path) -> PathBuf {
    let canonical = std::fs::canonicalize(dataset).unwrap_or_else(|_| dataset.to_path_buf());
    // FNV-1a: stable across Rust versions, unlike the standard hasher.
    let hash = canonical
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let name: String = canonical
        .file_stem()
        .map(|s| {
            s.to_string_lossy()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect()
        })
        .unwrap_or_default();
    PathBuf::from(".classm-cache").join(format!("stains-{name}-{:08x}.json", hash as u32))
}

fn render(r: &Report, with_stains: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "dataset   {} ({:?})", r.dataset, r.origin);
    let _ = writeln!(s, "classes   {}: {}", r.classes.len(), r.classes.join(", "));
    let _ = writeln!(
        s,
        "samples   {} ({} unlabelled) in {} groups",
        r.samples, r.unlabelled, r.groups
    );
    let sizes: Vec<String> = r.sizes.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(
        s,
        "sizes     {}",
        if sizes.is_empty() {
            "—".into()
        } else {
            sizes.join(", ")
        }
    );
    let conv: Vec<String> = r
        .conversions
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let _ = writeln!(
        s,
        "converted {}",
        if conv.is_empty() {
            "none (all RGB8)".into()
        } else {
            conv.join(", ")
        }
    );
    if r.unreadable.is_empty() {
        let _ = writeln!(s, "unreadable none");
    } else {
        let _ = writeln!(s, "unreadable {}:", r.unreadable.len());
        for u in &r.unreadable {
            let _ = writeln!(s, "  {}", u.error);
        }
    }
    let _ = writeln!(
        s,
        "\nsamples per class and split (splits: {}):",
        r.splits_from
    );
    let _ = write!(s, "{}", r.splits);
    if !with_stains {
        return s;
    }
    let _ = writeln!(
        s,
        "\nstain matrix per group (CLASS-M convention; H and E as unit OD vectors R G B; cache: {}):",
        r.stain_cache.as_deref().unwrap_or("none")
    );
    // Groups named after files (one group per image) can be long paths.
    let gw = r
        .stains
        .iter()
        .map(|g| g.group.chars().count())
        .max()
        .unwrap_or(0)
        .max(16);
    let _ = writeln!(
        s,
        "{:<gw$} {:>5}  {:<20} {:<20} {:>6} {:>6} {:>6} {:>9}  note",
        "group", "files", "H", "E", "sep°", "maxH", "maxE", "kept px"
    );
    let mut seps = Vec::new();
    for g in &r.stains {
        match (&g.estimate, &g.fallback) {
            (Some(e), _) => {
                let v = |x: [f64; 3]| format!("{:.3} {:.3} {:.3}", x[0], x[1], x[2]);
                let d = &e.diagnostics;
                seps.push(d.separation_deg);
                let note = match e.sampling {
                    classm_stain::Sampling::Grid { step } if step > 1 => {
                        format!("grid step {step}")
                    }
                    _ => String::new(),
                };
                let warn: Vec<String> = d.warnings.iter().map(|w| format!("{w:?}")).collect();
                let _ = writeln!(
                    s,
                    "{:<gw$} {:>5}  {:<20} {:<20} {:>6.1} {:>6.3} {:>6.3} {:>9}  {note}{}",
                    g.group,
                    g.files,
                    v(e.matrix.h),
                    v(e.matrix.e),
                    d.separation_deg,
                    e.max_conc[0],
                    e.max_conc[1],
                    d.kept_pixels,
                    if warn.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", warn.join(", "))
                    }
                );
            }
            (None, reason) => {
                let _ = writeln!(
                    s,
                    "{:<gw$} {:>5}  FALLBACK: the paper's fixed matrix ({})",
                    g.group,
                    g.files,
                    reason.as_deref().unwrap_or("")
                );
            }
        }
    }
    seps.sort_by(f64::total_cmp);
    let fallbacks = r.stains.len() - seps.len();
    let _ = write!(
        s,
        "\n{} groups estimated, {fallbacks} fell back",
        seps.len()
    );
    if let (Some(lo), Some(hi)) = (seps.first(), seps.last()) {
        let _ = write!(
            s,
            "; H–E separation {lo:.1}° to {hi:.1}° (median {:.1}°)",
            seps[seps.len() / 2]
        );
    }
    let _ = writeln!(s);
    s
}
