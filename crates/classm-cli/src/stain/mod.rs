//! `classm stain ...`: estimation, separation and normalisation.

use std::cell::Cell;
use std::path::Path;

use anyhow::{Context, Result};
use clap::Subcommand;
use classm_stain::{Converted, NormalizationTarget, StainEstimate, StainMatrix};
use image::GrayImage;
use rayon::prelude::*;
use serde::Serialize;

use crate::io::{self, Input, Loaded};
use crate::progress::Progress;
use crate::report::{Done, Entry, path_text};
use crate::{Ctx, Status};

mod fit;
mod normalize;
mod options;
mod separate;

/// Stain commands.
#[derive(Debug, Subcommand)]
pub enum StainCommand {
    /// Fit H&E stain vectors per image (a JSON report) or, with --slide, one pooled estimate.
    Fit(fit::FitArgs),
    /// Write H and E maps of each image (.npy float32 maps or single-stain PNG renderings).
    Separate(separate::SeparateArgs),
    /// Map each image's stains onto a target's and write the normalised PNG.
    Normalize(normalize::NormalizeArgs),
}

/// Runs a stain command.
pub fn run(cmd: StainCommand, ctx: &Ctx) -> Result<Status> {
    match cmd {
        StainCommand::Fit(a) => fit::run(a, ctx),
        StainCommand::Separate(a) => separate::run(a, ctx),
        StainCommand::Normalize(a) => normalize::run(a, ctx),
    }
}

/// Runs `work` on every input in parallel, with progress, and returns the entries in input
/// order. A failing file never stops the others.
///
/// `work` records the image's conversion to RGB8 in its second argument (see [`load_input`]),
/// so that it is reported even when a later step fails.
fn run_batch<F>(inputs: &[Input], ctx: &Ctx, label: &str, work: F) -> Vec<Entry>
where
    F: Fn(&Input, &Cell<Option<Converted>>) -> Result<Done> + Sync,
{
    let progress = Progress::new(inputs.len(), ctx.progress_bar, label);
    let entries = inputs
        .par_iter()
        .map(|input| {
            let conversion = Cell::new(None);
            let result = work(input, &conversion);
            let entry = Entry::new(&input.path, conversion.get(), result);
            progress.file_done(&entry);
            entry
        })
        .collect();
    progress.finish();
    entries
}

/// Loads an input and, with a mask directory, its mask; records the conversion to RGB8.
fn load_input(
    input: &Input,
    mask_dir: Option<&Path>,
    conversion: &Cell<Option<Converted>>,
) -> Result<(Loaded, Option<GrayImage>)> {
    let loaded = io::load_rgb(&input.path)?;
    conversion.set(Some(loaded.conversion));
    let mask = match mask_dir {
        Some(dir) => Some(io::load_mask(
            dir,
            input,
            loaded.image.width(),
            loaded.image.height(),
        )?),
        None => None,
    };
    Ok((loaded, mask))
}

/// A stain file given on the command line.
// One value per run: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum StainFile {
    /// A stain estimate: `fit --slide` output, a `<stem>.stain.json`, or a per-image fit report
    /// with exactly one successful result.
    Estimate(StainEstimate),
    /// A normalisation target (`fit --target-out`).
    Target(NormalizationTarget),
}

impl StainFile {
    /// Reads and checks a stain file.
    fn load(path: &Path) -> Result<StainFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid stain file {}", path.display()))
    }

    fn parse(text: &str) -> Result<StainFile> {
        let value: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
        if value.get("format").is_some() {
            return Ok(StainFile::Target(NormalizationTarget::from_json(text)?));
        }
        let est_value = match value.get("results").and_then(|r| r.as_array()) {
            Some(results) => {
                let ok: Vec<&serde_json::Value> =
                    results.iter().filter_map(|r| r.get("ok")).collect();
                match ok[..] {
                    [one] => one.clone(),
                    _ => anyhow::bail!(
                        "this per-image fit report holds {} successful estimates, not one; \
                         fit with --slide or --target-out to get a single estimate",
                        ok.len()
                    ),
                }
            }
            None => value,
        };
        let mut est: StainEstimate =
            serde_json::from_value(est_value).map_err(|e| classm_stain::StainError::Parse {
                what: "stain estimate".into(),
                reason: e.to_string(),
            })?;
        // Unit vectors, finite, not parallel (the file may have been edited by hand).
        est.matrix = StainMatrix::new(est.matrix.h, est.matrix.e)?;
        Ok(StainFile::Estimate(est))
    }

    /// The normalisation target it describes (checked).
    fn target(&self) -> Result<NormalizationTarget> {
        match self {
            StainFile::Target(t) => Ok(t.clone()),
            StainFile::Estimate(e) => Ok(NormalizationTarget::from_json(
                &NormalizationTarget::from_estimate(e).to_json(),
            )?),
        }
    }

    /// The stain estimate it describes. A target carries no diagnostics: they are zero.
    fn estimate(&self) -> StainEstimate {
        match self {
            StainFile::Estimate(e) => e.clone(),
            StainFile::Target(t) => StainEstimate::from_target(t),
        }
    }
}

/// `<stem>.stain.json`: the estimate used for one image and where it came from.
#[derive(Debug, Serialize)]
struct UsedEstimate<'a> {
    image: String,
    /// `estimated`, `fallback` or `stain_file`.
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stain_file: Option<String>,
    #[serde(flatten)]
    estimate: &'a StainEstimate,
}

impl<'a> UsedEstimate<'a> {
    fn new(input: &Input, estimate: &'a StainEstimate, stain_file: Option<&Path>) -> Self {
        let source = match (stain_file, &estimate.fallback) {
            (Some(_), _) => "stain_file",
            (None, Some(_)) => "fallback",
            (None, None) => "estimated",
        };
        UsedEstimate {
            image: path_text(&input.path),
            source,
            stain_file: stain_file.map(path_text),
            estimate,
        }
    }

    fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)? + "\n")
    }
}

/// Creates the output directory (usage error when it exists as a file).
/// The inputs of a command that writes one set of files per image into `out_dir`: found,
/// non-empty, without colliding outputs, and the output folder ready.
fn batch_inputs(args: &options::InputArgs, out_dir: &Path) -> Result<Vec<Input>> {
    let inputs = io::collect_inputs(&args.inputs, args.recursive, Some(out_dir))?;
    require_inputs(&inputs)?;
    io::check_unique_outputs(&inputs)?;
    prepare_out_dir(out_dir)?;
    Ok(inputs)
}

fn prepare_out_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        crate::usage!("--out-dir {} exists and is not a directory", dir.display());
    }
    io::create_dir(dir)
}

/// Fails when no input image was found.
fn require_inputs(inputs: &[Input]) -> Result<()> {
    if inputs.is_empty() {
        crate::usage!("no input images found");
    }
    Ok(())
}

/// Writes the JSON report when asked for.
fn write_report(path: Option<&Path>, report: &crate::report::Report<'_>) -> Result<()> {
    if let Some(p) = path {
        io::write_text(p, &report.to_json()?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stain_file_rejects_garbage_and_multi_reports() {
        assert!(StainFile::parse("nope").is_err());
        assert!(StainFile::parse(r#"{"results": []}"#).is_err());
        assert!(StainFile::parse(r#"{"format": "other/1"}"#).is_err());
    }
}
