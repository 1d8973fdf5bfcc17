//! `classm stain separate`: H and E maps per image.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use classm_stain::{Output, RgbView, Sampling, Separator, Stain};

use super::options::{EstimationArgs, InputArgs};
use super::{StainFile, UsedEstimate, batch_inputs, load_input, run_batch};
use crate::io;
use crate::report::{Done, Report, Summary, path_text};
use crate::{Ctx, Status};

/// What `separate` writes per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputKind {
    /// CLASS-M model inputs clip(c / (2·max_conc), 0, 1): `<stem>.H.npy`, `<stem>.E.npy`.
    ModelInput,
    /// Least-squares concentrations in the convention's OD units (may be negative):
    /// `<stem>.H.npy`, `<stem>.E.npy`.
    Concentrations,
    /// Each stain alone rendered on white: `<stem>.H.png`, `<stem>.E.png`.
    Rgb,
}

/// Arguments of `classm stain separate`.
#[derive(Debug, Args)]
#[command(
    after_long_help = "Per image, in --out-dir: the two maps and `<stem>.stain.json` \
(the estimate used, with its diagnostics, plus \"image\", \"source\": estimated | fallback | \
stain_file, and \"stain_file\"). The .npy files are NumPy format 1.0, little-endian float32 \
('<f4'), C order, shape (height, width). Every file is written to a temporary file and renamed.\n\n\
--stain-json accepts the output of `fit --slide`, a `<stem>.stain.json`, a per-image fit report \
with exactly one successful result, or a normalisation target (`fit --target-out`; its \
diagnostics are unknown and written as zeros)."
)]
pub struct SeparateArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Output directory (created when missing).
    #[arg(short = 'o', long, value_name = "DIR")]
    out_dir: PathBuf,

    /// What to write per image.
    #[arg(long, value_enum, default_value_t = OutputKind::ModelInput)]
    output: OutputKind,

    /// Use these stains for every image instead of estimating per image (estimation options
    /// are then refused).
    #[arg(long, value_name = "FILE", conflicts_with = "estimation")]
    stain_json: Option<PathBuf>,

    /// Also write the JSON report (same layout as `fit`'s, with each file's outputs).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    #[command(flatten)]
    est: EstimationArgs,
}

/// Runs `classm stain separate`.
pub fn run(args: SeparateArgs, ctx: &Ctx) -> Result<Status> {
    let est = args.est.resolve(None, Sampling::All)?;
    let given = match &args.stain_json {
        Some(p) => Some(StainFile::load(p)?.estimate()),
        None => None,
    };
    // Fail early on unusable given stains rather than once per file.
    if let Some(g) = &given {
        Separator::new(g)?;
    }
    let inputs = batch_inputs(&args.input, &args.out_dir)?;

    let entries = run_batch(&inputs, ctx, "separate", |input, conversion| {
        let mask_dir = if given.is_some() {
            None
        } else {
            est.mask_dir.as_deref()
        };
        let (loaded, mask) = load_input(input, mask_dir, conversion)?;
        let view = RgbView::try_from(&loaded.image)?;
        let estimate = match &given {
            Some(g) => g.clone(),
            None => est.estimate(&loaded.image, mask.as_ref())?,
        };
        let separator = Separator::new(&estimate)?;
        io::create_dir(&args.out_dir.join(&input.rel_dir))?;
        let mut outputs = Vec::with_capacity(3);
        match args.output {
            OutputKind::ModelInput | OutputKind::Concentrations => {
                let kind = match args.output {
                    OutputKind::Concentrations => Output::Concentrations,
                    _ => Output::ModelInput,
                };
                let maps = separator.separate(view, kind)?;
                for (suffix, data) in [(".H.npy", &maps.h), (".E.npy", &maps.e)] {
                    let path = input.output(&args.out_dir, suffix);
                    io::refuse_overwriting_input(&input.path, &path)?;
                    io::write_npy(&path, maps.width, maps.height, data)?;
                    outputs.push(path);
                }
            }
            OutputKind::Rgb => {
                for (suffix, stain) in [(".H.png", Stain::H), (".E.png", Stain::E)] {
                    let path = input.output(&args.out_dir, suffix);
                    io::refuse_overwriting_input(&input.path, &path)?;
                    let rgb = separator.render(view, stain)?;
                    io::write_png(&path, loaded.image.width(), loaded.image.height(), &rgb)?;
                    outputs.push(path);
                }
            }
        }
        let path = input.output(&args.out_dir, ".stain.json");
        let used = UsedEstimate::new(input, &estimate, args.stain_json.as_deref());
        io::write_text(&path, &used.to_json()?)?;
        outputs.push(path);
        Ok(Done {
            estimate,
            outputs,
            given: given.is_some(),
        })
    });
    let summary = Summary::of(&entries);
    let report = Report {
        classm_version: env!("CARGO_PKG_VERSION"),
        command: "stain separate",
        options: given.is_none().then_some(&est.options),
        stain_source: args.stain_json.as_deref().map(path_text),
        results: &entries,
        summary: summary.clone(),
    };
    super::write_report(args.report.as_deref(), &report)?;
    crate::report::print_summary(&entries, &summary, "separate");
    Ok(summary.status())
}
