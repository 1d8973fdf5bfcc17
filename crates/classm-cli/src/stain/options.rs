//! Estimation options shared by every `stain` command, and the per-image estimate with its
//! optional fallback.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use classm_stain::{
    Artefacts, Convention, EstimateOptions, I0Spec, MaskView, OrderPolicy, RgbView, Sampling,
    StainEstimate, StainMatrix, estimate, estimate_masked,
};
use image::{GrayImage, RgbImage};

use crate::report::stain_kind;

/// Input selection.
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Image files or directories. Files are read whatever their extension; a directory
    /// contributes its .png, .jpg, .jpeg, .tif and .tiff files (any case), sorted by path.
    #[arg(required = true, value_name = "INPUTS")]
    pub inputs: Vec<PathBuf>,

    /// Also read images in sub-directories of directory inputs (outputs mirror the
    /// sub-directories; the output directory itself is skipped).
    #[arg(short = 'r', long)]
    pub recursive: bool,
}

/// A named convention preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConventionArg {
    /// CLASS-M: OD = log10(255 / max(I, 1)), PCA over non-blank pixels, tissue where the
    /// projection onto the stain plane is ≥ 0.15, α = 1 %, max concentrations at the 99th
    /// percentile of values ≥ 0.15.
    Classm,
    /// Macenko et al. 2009 as MATLAB/torchstain: natural log, I0 = 240, I + 1, tissue where
    /// every channel OD ≥ 0.15, α = 1 %, max concentrations at the 99th percentile of all pixels.
    #[value(name = "macenko2009")]
    Macenko2009,
}

impl ConventionArg {
    fn preset(self) -> Convention {
        match self {
            ConventionArg::Classm => Convention::classm(),
            ConventionArg::Macenko2009 => Convention::macenko2009(),
        }
    }
}

/// What an ambiguous H/E order does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderArg {
    /// Keep the red-OD order and add a warning to the diagnostics.
    Flag,
    /// Fail with ambiguous_order.
    Error,
}

/// Fallback stain matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FallbackArg {
    /// Ruifrok & Johnston's H and E vectors.
    Ruifrok,
}

/// Options of the stain estimate.
#[derive(Debug, Clone, Args)]
#[group(id = "estimation", multiple = true)]
#[command(next_help_heading = "Estimation")]
pub struct EstimationArgs {
    /// Algorithm convention [default: classm, or the target's for `normalize` with a JSON target].
    #[arg(long, value_enum, value_name = "NAME")]
    pub convention: Option<ConventionArg>,

    /// Estimate the background intensity I0 from bright neutral pixels (falls back to the
    /// convention's or --i0's value, reported as a warning, when too little glass is visible).
    #[arg(long)]
    pub estimate_i0: bool,

    /// Background intensity I0: one value for all channels or R,G,B [default: the
    /// convention's, 255 for classm and 240 for macenko2009].
    #[arg(long, value_name = "R,G,B|V", value_parser = parse_i0)]
    pub i0: Option<[f64; 3]>,

    /// Pixel sampling: `all`, `grid:N` (every N-th row and column) or `random:RATE:SEED`
    /// (each pixel with probability RATE, reproducibly) [default: all; grid:10 with --slide].
    #[arg(long, value_name = "SPEC", value_parser = parse_sampling)]
    pub sampling: Option<Sampling>,

    /// Fewer tissue pixels than this fails with too_few_pixels.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub min_pixels: u64,

    /// What an ambiguous H/E order does: `flag` returns the red-OD order with a warning in the
    /// diagnostics, `error` fails with ambiguous_order [default: flag].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub ambiguous_order: Option<OrderArg>,

    /// Keep near-black pixels (every channel ≤ 10: pen, folds, dirt) instead of excluding them.
    #[arg(long)]
    pub no_artefact_exclusion: bool,

    /// Directory of masks: `<DIR>/<stem>.png` (or .tif/.tiff; sub-directories mirror
    /// --recursive inputs), the image's size, non-zero = usable pixel. A missing mask fails
    /// that image.
    #[arg(long, value_name = "DIR")]
    pub mask_dir: Option<PathBuf>,

    /// When an image has no usable H&E signal (a degenerate-content error: empty_tissue,
    /// too_few_pixels, rank_deficient, single_stain_suspected, implausible_stain,
    /// ambiguous_order), use this stain matrix instead of failing; the fallback and its reason
    /// are recorded in the estimate and the summary.
    #[arg(long, value_enum, value_name = "MATRIX")]
    pub fallback: Option<FallbackArg>,

    /// Maximum concentrations H,E of a fallback estimate, in the convention's OD units
    /// (they scale model-input maps and normalisation).
    #[arg(long, value_name = "H,E", value_parser = parse_pair, default_value = "1,1")]
    pub fallback_max_conc: [f64; 2],
}

fn parse_numbers(s: &str) -> Result<Vec<f64>, String> {
    s.split(',')
        .map(|v| {
            let v = v.trim();
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("`{v}` is not a finite number"))
        })
        .collect()
}

fn parse_i0(s: &str) -> Result<[f64; 3], String> {
    let v = parse_numbers(s)?;
    let i0 = match v[..] {
        [a] => [a; 3],
        [r, g, b] => [r, g, b],
        _ => return Err("expected one value or three (R,G,B)".into()),
    };
    if i0.iter().any(|&x| !(1.0..=65535.0).contains(&x)) {
        return Err("I0 values must be in [1, 65535]".into());
    }
    Ok(i0)
}

fn parse_pair(s: &str) -> Result<[f64; 2], String> {
    match parse_numbers(s)?[..] {
        [h, e] if h > 0.0 && e > 0.0 => Ok([h, e]),
        [_, _] => Err("both values must be > 0".into()),
        _ => Err("expected two values H,E".into()),
    }
}

fn parse_sampling(s: &str) -> Result<Sampling, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let sampling = match parts[..] {
        ["all"] => Sampling::All,
        ["grid", n] => Sampling::Grid {
            step: n
                .parse()
                .ok()
                .filter(|&n: &u32| n >= 1)
                .ok_or_else(|| format!("grid step `{n}` must be an integer ≥ 1"))?,
        },
        ["random", rate, seed] => Sampling::Random {
            rate: rate
                .parse()
                .ok()
                .filter(|r: &f64| r.is_finite() && *r > 0.0 && *r <= 1.0)
                .ok_or_else(|| format!("random rate `{rate}` must be in (0, 1]"))?,
            seed: seed
                .parse()
                .map_err(|_| format!("random seed `{seed}` must be an unsigned integer"))?,
        },
        _ => return Err("expected all, grid:N or random:RATE:SEED".into()),
    };
    Ok(sampling)
}

/// Resolved estimation settings.
#[derive(Debug, Clone)]
pub struct Estimation {
    /// Options handed to the library.
    pub options: EstimateOptions,
    /// Mask directory.
    pub mask_dir: Option<PathBuf>,
    /// Maximum concentrations of the Ruifrok fallback, when enabled.
    pub fallback: Option<[f64; 2]>,
}

impl EstimationArgs {
    /// The settings: convention from `--convention` or else `base` (or classm), I0 overrides,
    /// and the default sampling when `--sampling` is absent.
    pub fn resolve(
        &self,
        base: Option<&Convention>,
        default_sampling: Sampling,
    ) -> Result<Estimation> {
        let mut convention = match (self.convention, base) {
            (Some(c), _) => c.preset(),
            (None, Some(b)) => b.clone(),
            (None, None) => Convention::classm(),
        };
        if let Some(i0) = self.i0 {
            convention = convention.with_i0(I0Spec::Fixed(i0));
        }
        if self.estimate_i0 {
            convention = convention.with_estimated_i0();
        }
        let artefacts = if self.no_artefact_exclusion {
            Artefacts::none()
        } else {
            Artefacts::default()
        };
        let mut options = EstimateOptions::new(convention)
            .with_sampling(self.sampling.unwrap_or(default_sampling))
            .with_artefacts(artefacts)
            .with_min_pixels(self.min_pixels);
        if let Some(policy) = self.ambiguous_order {
            options.on_ambiguous_order = match policy {
                OrderArg::Flag => OrderPolicy::Flag,
                OrderArg::Error => OrderPolicy::Error,
            };
        }
        if let Err(e) = options.validate() {
            crate::usage!("{e}");
        }
        Ok(Estimation {
            options,
            mask_dir: self.mask_dir.clone(),
            fallback: self.fallback.map(|_| self.fallback_max_conc),
        })
    }
}

impl Estimation {
    /// The fitted estimate of one image, or the fallback when the fit fails on degenerate
    /// content and a fallback is enabled.
    pub fn estimate(&self, image: &RgbImage, mask: Option<&GrayImage>) -> Result<StainEstimate> {
        let view = RgbView::try_from(image)?;
        let result = match mask {
            Some(m) => estimate_masked(
                view,
                MaskView::new(m.width() as usize, m.height() as usize, m.as_raw())?,
                &self.options,
            ),
            None => estimate(view, &self.options),
        };
        self.or_fallback(result)
    }

    /// Applies the fallback policy to an estimation result.
    pub fn or_fallback(
        &self,
        result: classm_stain::Result<StainEstimate>,
    ) -> Result<StainEstimate> {
        match (result, self.fallback) {
            (Ok(est), _) => Ok(est),
            (Err(e), Some(max_conc)) if e.is_degenerate_content() => {
                let convention = self.options.convention.clone();
                let i0 = match convention.i0 {
                    I0Spec::Fixed(v) | I0Spec::Estimate { fallback: v } => v,
                };
                Ok(StainEstimate::fallback(
                    StainMatrix::ruifrok(),
                    max_conc,
                    convention,
                    i0,
                    format!("{}: {e}", stain_kind(&e)),
                ))
            }
            (Err(e), _) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sampling() {
        assert_eq!(parse_sampling("all"), Ok(Sampling::All));
        assert_eq!(parse_sampling("grid:10"), Ok(Sampling::Grid { step: 10 }));
        assert_eq!(
            parse_sampling("random:0.25:7"),
            Ok(Sampling::Random {
                rate: 0.25,
                seed: 7
            })
        );
        for bad in [
            "",
            "grid",
            "grid:0",
            "grid:x",
            "random:0:1",
            "random:1.5:1",
            "random:0.5",
        ] {
            assert!(parse_sampling(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_i0_and_pairs() {
        assert_eq!(parse_i0("240"), Ok([240.0; 3]));
        assert_eq!(parse_i0("250, 245,240"), Ok([250.0, 245.0, 240.0]));
        assert!(parse_i0("1,2").is_err());
        assert!(parse_i0("0").is_err());
        assert!(parse_i0("nan").is_err());
        assert_eq!(parse_pair("1.9,1.0"), Ok([1.9, 1.0]));
        assert!(parse_pair("1,0").is_err());
        assert!(parse_pair("1").is_err());
    }
}
