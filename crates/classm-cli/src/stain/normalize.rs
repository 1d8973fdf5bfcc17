//! `classm stain normalize`: map each image's stains onto a target's.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use classm_stain::{NormalizationTarget, Normalizer, RgbView, Sampling};

use super::options::{EstimationArgs, InputArgs};
use super::{StainFile, batch_inputs, load_input, run_batch};
use crate::io;
use crate::report::{Done, Report, Summary, path_text};
use crate::{Ctx, Status};

/// Arguments of `classm stain normalize`.
#[derive(Debug, Args)]
#[command(
    after_long_help = "The target is a JSON file (a normalisation target from `fit \
--target-out`, the output of `fit --slide`, a `<stem>.stain.json`, or a per-image fit report \
with one successful result) or an image, fitted with the estimation options (without a mask). \
Each input is fitted with the target's convention unless --convention/--i0/--estimate-i0 say \
otherwise; source and target conventions must agree. Writes `<stem>.png` (RGB8) per input in \
--out-dir, atomically."
)]
pub struct NormalizeArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Normalisation target: a JSON file or an image.
    #[arg(short, long, value_name = "FILE")]
    target: PathBuf,

    /// Output directory (created when missing).
    #[arg(short = 'o', long, value_name = "DIR")]
    out_dir: PathBuf,

    /// Also write the JSON report (same layout as `fit`'s, with each file's outputs).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    #[command(flatten)]
    est: EstimationArgs,
}

fn is_json(path: &Path) -> Result<bool> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        return Ok(true);
    }
    use std::io::Read;
    let mut head = Vec::with_capacity(64);
    std::fs::File::open(path)
        .and_then(|f| f.take(64).read_to_end(&mut head))
        .with_context(|| format!("cannot read target {}", path.display()))?;
    Ok(head
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{'))
}

/// Reads or fits the target.
fn load_target(args: &NormalizeArgs) -> Result<NormalizationTarget> {
    if is_json(&args.target)? {
        return StainFile::load(&args.target)?.target();
    }
    let est = args.est.resolve(None, Sampling::All)?;
    let loaded = io::load_rgb(&args.target).context("cannot read the target image")?;
    let estimate = est
        .estimate(&loaded.image, None)
        .with_context(|| format!("cannot fit the target image {}", args.target.display()))?;
    if let Some(reason) = &estimate.fallback {
        tracing::warn!(
            "target {}: fell back to ruifrok: {reason}",
            args.target.display()
        );
    }
    Ok(NormalizationTarget::from_estimate(&estimate))
}

/// Runs `classm stain normalize`.
pub fn run(args: NormalizeArgs, ctx: &Ctx) -> Result<Status> {
    let target = load_target(&args)?;
    let est = args.est.resolve(Some(&target.convention), Sampling::All)?;
    if !est.options.convention.compatible_with(&target.convention) {
        crate::usage!(
            "the sources would be fitted with convention {} but the target uses {}; \
             drop --convention/--i0/--estimate-i0 to use the target's",
            est.options.convention.name,
            target.convention.name
        );
    }
    let inputs = batch_inputs(&args.input, &args.out_dir)?;

    let entries = run_batch(&inputs, ctx, "normalize", |input, conversion| {
        let (loaded, mask) = load_input(input, est.mask_dir.as_deref(), conversion)?;
        let estimate = est.estimate(&loaded.image, mask.as_ref())?;
        let normalizer = Normalizer::new(&estimate, &target)?;
        let out = normalizer.normalize(RgbView::try_from(&loaded.image)?)?;
        io::create_dir(&args.out_dir.join(&input.rel_dir))?;
        let path = input.output(&args.out_dir, ".png");
        io::refuse_overwriting_input(&input.path, &path)?;
        io::write_png(&path, loaded.image.width(), loaded.image.height(), &out)?;
        Ok(Done {
            estimate,
            outputs: vec![path],
            given: false,
        })
    });
    let summary = Summary::of(&entries);
    let report = Report {
        classm_version: env!("CARGO_PKG_VERSION"),
        command: "stain normalize",
        options: Some(&est.options),
        stain_source: Some(path_text(&args.target)),
        results: &entries,
        summary: summary.clone(),
    };
    super::write_report(args.report.as_deref(), &report)?;
    crate::report::print_summary(&entries, &summary, "normalize");
    Ok(summary.status())
}
