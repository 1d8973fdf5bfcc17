//! `classm stain fit`: per-image estimates, or one pooled slide estimate.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use classm_stain::{
    EstimateOptions, MaskView, NormalizationTarget, PassState, RgbView, Sampling, SlideEstimator,
    StainEstimate, Tile,
};
use image::{GrayImage, RgbImage};
use rayon::prelude::*;
use serde::Serialize;

use super::options::{EstimationArgs, InputArgs};
use super::{load_input, require_inputs, run_batch};
use crate::io::{self, Input};
use crate::progress::Progress;
use crate::report::{Done, ErrorInfo, Report, Summary, classify, conversion_name, path_text};
use crate::{Ctx, Status};

/// Arguments of `classm stain fit`.
#[derive(Debug, Args)]
#[command(
    after_long_help = "Output without --slide: {\"classm_version\", \"command\", \
\"options\", \"results\": [{\"path\", \"conversion\", \"ok\": <estimate>} or {\"path\", \
\"error\": {\"kind\", \"message\"}}], \"summary\": {\"total\", \"succeeded\", \"failed\", \
\"fell_back\", \"conversions\"}}.\n\
With --slide: the estimate itself (matrix, max_conc, i0, i0_source, convention, sampling, \
diagnostics, fallback) plus \"inputs\": [{\"path\", \"width\", \"height\", \"origin\", \
\"conversion\"} or {\"path\", \"error\"}].\n\n\
With --slide every image is a tile of one slide, stacked vertically (tile origin = sum of the \
heights of the images before it) so that grid and random sampling never revisit a position. \
Images are decoded once and kept in memory when their pixels fit in --slide-cache-mib, \
otherwise decoded again in each of the 3 passes (4 with --estimate-i0), so memory stays that \
of the images being decoded. An image that cannot be read is skipped and reported (exit 1)."
)]
pub struct FitArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Write the JSON here (atomically) [default: standard output].
    #[arg(short, long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// Pool every input into one slide-level estimate (default sampling grid:10, as CLASS-M).
    #[arg(long)]
    slide: bool,

    /// Also write the normalisation target (for `classm stain normalize --target`) of the slide
    /// estimate, or of the single input image.
    #[arg(long, value_name = "FILE")]
    target_out: Option<PathBuf>,

    /// With --slide: keep the decoded images in memory when their pixels total at most this
    /// many MiB; otherwise decode them again in every pass. 0 always streams.
    #[arg(long, value_name = "MIB", default_value_t = 256, requires = "slide")]
    slide_cache_mib: u64,

    #[command(flatten)]
    est: EstimationArgs,
}

/// Runs `classm stain fit`.
pub fn run(args: FitArgs, ctx: &Ctx) -> Result<Status> {
    if args.slide {
        return run_slide(args, ctx);
    }
    let est = args.est.resolve(None, Sampling::All)?;
    let inputs = io::collect_inputs(&args.input.inputs, args.input.recursive, None)?;
    require_inputs(&inputs)?;
    if args.target_out.is_some() && inputs.len() != 1 {
        crate::usage!(
            "--target-out needs --slide or exactly one input image ({} given)",
            inputs.len()
        );
    }
    let entries = run_batch(&inputs, ctx, "fit", |input, conversion| {
        let (loaded, mask) = load_input(input, est.mask_dir.as_deref(), conversion)?;
        let estimate = est.estimate(&loaded.image, mask.as_ref())?;
        Ok(Done {
            estimate,
            outputs: Vec::new(),
            given: false,
        })
    });
    let summary = Summary::of(&entries);
    let report = Report {
        classm_version: env!("CARGO_PKG_VERSION"),
        command: "stain fit",
        options: Some(&est.options),
        stain_source: None,
        results: &entries,
        summary: summary.clone(),
    };
    write_json(args.out.as_deref(), &report.to_json()?)?;
    if let (Some(path), [entry]) = (&args.target_out, &entries[..]) {
        if let Some(e) = &entry.ok {
            io::write_text(
                path,
                &(NormalizationTarget::from_estimate(e).to_json() + "\n"),
            )?;
        }
    }
    crate::report::print_summary(&entries, &summary, "fit");
    Ok(summary.status())
}

fn write_json(out: Option<&Path>, json: &str) -> Result<()> {
    match out {
        Some(p) if p != Path::new("-") => io::write_text(p, json),
        _ => {
            print!("{json}");
            Ok(())
        }
    }
}

/// One image of a slide.
#[derive(Debug)]
struct SlideTile {
    input: Input,
    width: u32,
    height: u32,
    /// Row of the slide where this image starts.
    origin_y: u64,
}

/// An image decoded for the slide fit.
type Decoded = (RgbImage, Option<GrayImage>);

/// One entry of the slide output's `inputs` list.
#[derive(Debug, Serialize)]
struct SlideInput {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<[u64; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversion: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorInfo>,
}

impl SlideInput {
    fn failed(path: &Path, err: &anyhow::Error) -> SlideInput {
        SlideInput {
            path: path_text(path),
            width: None,
            height: None,
            origin: None,
            conversion: None,
            error: Some(classify(err)),
        }
    }
}

#[derive(Debug, Serialize)]
struct SlideOutput<'a> {
    #[serde(flatten)]
    estimate: &'a StainEstimate,
    inputs: &'a [SlideInput],
}

fn run_slide(args: FitArgs, ctx: &Ctx) -> Result<Status> {
    let est = args.est.resolve(None, Sampling::Grid { step: 10 })?;
    let inputs = io::collect_inputs(&args.input.inputs, args.input.recursive, None)?;
    require_inputs(&inputs)?;

    // Image sizes from the headers: tile origins, and whether the pixels fit the cache.
    let mut report: Vec<SlideInput> = Vec::with_capacity(inputs.len());
    let mut tiles: Vec<(usize, SlideTile)> = Vec::new();
    let mut y = 0u64;
    for input in inputs {
        match io::image_dimensions(&input.path) {
            Ok((width, height)) => {
                report.push(SlideInput {
                    path: path_text(&input.path),
                    width: Some(width),
                    height: Some(height),
                    origin: Some([0, y]),
                    conversion: None,
                    error: None,
                });
                tiles.push((
                    report.len() - 1,
                    SlideTile {
                        input,
                        width,
                        height,
                        origin_y: y,
                    },
                ));
                y += u64::from(height);
            }
            Err(e) => report.push(SlideInput::failed(&input.path, &e)),
        }
    }
    let bytes_per_pixel = if est.mask_dir.is_some() { 4 } else { 3 };
    let pixel_bytes: u64 = tiles
        .iter()
        .map(|(_, t)| u64::from(t.width) * u64::from(t.height) * bytes_per_pixel)
        .sum();
    let cache = pixel_bytes <= args.slide_cache_mib.saturating_mul(1 << 20);
    tracing::debug!(
        "slide of {} images, {pixel_bytes} bytes of pixels: {}",
        tiles.len(),
        if cache {
            "decoding once"
        } else {
            "decoding in every pass"
        }
    );

    let load = |t: &SlideTile| -> Result<(Decoded, &'static str)> {
        let (loaded, mask) = load_input(
            &t.input,
            est.mask_dir.as_deref(),
            &std::cell::Cell::new(None),
        )?;
        if (loaded.image.width(), loaded.image.height()) != (t.width, t.height) {
            anyhow::bail!(
                "{} decodes to {}x{}, its header says {}x{}",
                t.input.path.display(),
                loaded.image.width(),
                loaded.image.height(),
                t.width,
                t.height
            );
        }
        Ok(((loaded.image, mask), conversion_name(loaded.conversion)))
    };

    let result = if cache {
        fit_cached(&est.options, &tiles, &mut report, ctx, &load)
    } else {
        fit_streaming(&est.options, &tiles, &mut report, ctx, &load)
    }?;
    let failed = report.iter().filter(|r| r.error.is_some()).count();
    for r in &report {
        if let Some(e) = &r.error {
            eprintln!("failed: {}: [{}] {}", r.path, e.kind, e.message);
        }
    }
    let used = report.len() - failed;
    if used == 0 {
        anyhow::bail!("no input image could be read");
    }
    let estimate = match est.or_fallback(result) {
        Ok(e) => e,
        Err(e) => {
            eprintln!(
                "slide fit: {used} of {} images read, {failed} failed",
                report.len()
            );
            return Err(e.context(format!("slide estimate over {used} images failed")));
        }
    };
    let json = serde_json::to_string_pretty(&SlideOutput {
        estimate: &estimate,
        inputs: &report,
    })? + "\n";
    write_json(args.out.as_deref(), &json)?;
    if let Some(path) = &args.target_out {
        io::write_text(
            path,
            &(NormalizationTarget::from_estimate(&estimate).to_json() + "\n"),
        )?;
    }
    if let Some(reason) = &estimate.fallback {
        eprintln!("fell back to ruifrok: slide: {reason}");
    }
    eprintln!(
        "slide fit: {} images: {used} used, {failed} failed{}",
        report.len(),
        if estimate.fallback.is_some() {
            "; estimate fell back to ruifrok"
        } else {
            ""
        }
    );
    Ok(if failed == 0 {
        Status::Success
    } else {
        Status::SomeFailed
    })
}

/// Rows of about 256 Ki pixels: enough tiles for every thread even with few large images.
fn bands<'a>(
    img: &'a RgbImage,
    mask: Option<&'a GrayImage>,
    origin_y: u64,
) -> Result<Vec<Tile<'a>>> {
    let view = RgbView::try_from(img)?;
    let mut tile = Tile::new(view).at(0, origin_y);
    if let Some(m) = mask {
        tile = tile.with_mask(MaskView::new(view.width(), view.height(), m.as_raw())?)?;
    }
    Ok(tile.bands(1 << 18))
}

/// Decodes every image once, then runs all passes over the images in memory.
fn fit_cached<L>(
    options: &EstimateOptions,
    tiles: &[(usize, SlideTile)],
    report: &mut [SlideInput],
    ctx: &Ctx,
    load: &L,
) -> Result<classm_stain::Result<StainEstimate>>
where
    L: Fn(&SlideTile) -> Result<(Decoded, &'static str)> + Sync,
{
    let progress = Progress::new(tiles.len(), ctx.progress_bar, "decode");
    let decoded: Vec<Result<(Decoded, &'static str)>> = tiles
        .par_iter()
        .map(|(_, t)| {
            let r = load(t);
            let status = match &r {
                Ok(_) => "read",
                Err(_) => "unreadable",
            };
            progress.step(&format!("{}: {status}", t.input.path.display()), true);
            r
        })
        .collect();
    progress.finish();
    let mut images: Vec<(&Decoded, u64)> = Vec::new();
    for ((idx, t), r) in tiles.iter().zip(&decoded) {
        match r {
            Ok((d, conv)) => {
                report[*idx].conversion = Some(conv);
                images.push((d, t.origin_y));
            }
            Err(e) => report[*idx] = SlideInput::failed(&t.input.path, e),
        }
    }
    let mut all = Vec::new();
    for ((img, mask), origin_y) in images {
        all.extend(bands(img, mask.as_ref(), origin_y)?);
    }
    if all.is_empty() {
        return Ok(Err(classm_stain::StainError::InvalidInput {
            reason: "no readable image".into(),
        }));
    }
    Ok(SlideEstimator::run_parallel(options.clone(), &all))
}

/// Runs the passes, decoding every image again in each pass, in parallel. Images that fail in
/// the first pass are reported and left out; a failure in a later pass stops the fit.
fn fit_streaming<L>(
    options: &EstimateOptions,
    tiles: &[(usize, SlideTile)],
    report: &mut [SlideInput],
    ctx: &Ctx,
    load: &L,
) -> Result<classm_stain::Result<StainEstimate>>
where
    L: Fn(&SlideTile) -> Result<(Decoded, &'static str)> + Sync,
{
    let mut estimator = match SlideEstimator::new(options.clone()) {
        Ok(e) => e,
        Err(e) => return Ok(Err(e)),
    };
    let passes = if matches!(options.convention.i0, classm_stain::I0Spec::Estimate { .. }) {
        4
    } else {
        3
    };
    let progress = Progress::new(passes * tiles.len(), ctx.progress_bar, "slide");
    let mut live: Vec<usize> = (0..tiles.len()).collect();
    let mut pass_no = 0;
    while let Some(pass) = estimator.next_pass() {
        pass_no += 1;
        let empty = estimator.begin()?;
        type Part = (
            PassState,
            Vec<(usize, anyhow::Error)>,
            Vec<(usize, &'static str)>,
        );
        let parts: Vec<Part> = live
            .par_iter()
            .fold(
                || (empty.clone(), Vec::new(), Vec::new()),
                |(mut state, mut failed, mut convs), &i| {
                    let t = &tiles[i].1;
                    let added = load(t).and_then(|((img, mask), conv)| {
                        for tile in bands(&img, mask.as_ref(), t.origin_y)? {
                            state
                                .add(&tile)
                                .with_context(|| format!("{}", t.input.path.display()))?;
                        }
                        Ok(conv)
                    });
                    match added {
                        Ok(conv) => convs.push((i, conv)),
                        Err(e) => failed.push((i, e)),
                    }
                    progress.step(
                        &format!("pass {pass_no} ({pass:?}): {}", t.input.path.display()),
                        pass_no == 1,
                    );
                    (state, failed, convs)
                },
            )
            .collect();
        let mut state = empty;
        let mut failed_now = Vec::new();
        for (s, failed, convs) in parts {
            state.merge(s)?;
            failed_now.extend(failed);
            if pass_no == 1 {
                for (i, conv) in convs {
                    report[tiles[i].0].conversion = Some(conv);
                }
            }
        }
        if !failed_now.is_empty() {
            if pass_no > 1 {
                let (i, e) = failed_now.swap_remove(0);
                return Err(e.context(format!(
                    "{} was read in the first pass but not in pass {pass_no}",
                    tiles[i].1.input.path.display()
                )));
            }
            for (i, e) in &failed_now {
                report[tiles[*i].0] = SlideInput::failed(&tiles[*i].1.input.path, e);
            }
            live.retain(|i| !failed_now.iter().any(|(f, _)| f == i));
        }
        if live.is_empty() {
            progress.finish();
            return Ok(Err(classm_stain::StainError::InvalidInput {
                reason: "no readable image".into(),
            }));
        }
        if let Err(e) = estimator.finish_pass(state) {
            progress.finish();
            return Ok(Err(e));
        }
    }
    progress.finish();
    Ok(estimator.estimate())
}
