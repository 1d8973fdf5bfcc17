//! Estimation options and results, and the per-image entry points.

use serde::{Deserialize, Serialize};

use crate::convention::Convention;
use crate::error::{Result, StainError};
use crate::sampling::{Artefacts, Sampling, Tile};
use crate::separate::{Maps, Output, Separator};
use crate::slide::SlideEstimator;
use crate::view::{MaskView, RgbView};

/// Everything that controls an estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimateOptions {
    /// Algorithm conventions (recorded in the result).
    pub convention: Convention,
    /// Pixel sampling.
    pub sampling: Sampling,
    /// Artefact exclusion before the background rule.
    pub artefacts: Artefacts,
    /// Fewer tissue pixels than this is [`StainError::TooFewPixels`]. Default 500.
    pub min_pixels: u64,
    /// λ2 ≤ `rank_epsilon`·λ1 is [`StainError::RankDeficient`]. Default 1e-5 (real H&E ≥ 6.7e-3,
    /// single-stain images ≈ 2e-3).
    pub rank_epsilon: f64,
    /// H–E separation below this (degrees) is [`StainError::SingleStainSuspected`]. Default 8°
    /// (single-stain images measure 4–5°, real H&E tiles ≥ 13°).
    pub min_separation_deg: f64,
    /// A stain-vector component below this is [`StainError::ImplausibleStain`]. Default −0.05
    /// (real H&E tiles: ≥ −0.002).
    pub min_component: f64,
    /// A red-OD margin (H red − E red, unit vectors) below this makes the order ambiguous.
    /// Default 0.01.
    pub min_red_margin: f64,
    /// Whether the red-OD order must agree with the Ruifrok references (margin > 0). Default true.
    pub ruifrok_check: bool,
    /// What an ambiguous H/E order does: a flagged result (default, the warning is in the
    /// diagnostics) or an error.
    pub on_ambiguous_order: OrderPolicy,
}

/// What happens when the H/E order is ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderPolicy {
    /// Fail with [`StainError::AmbiguousOrder`].
    Error,
    /// Return the red-OD order with [`Warning::AmbiguousOrder`] in the diagnostics.
    Flag,
}

/// A condition worth a user's attention that did not stop the estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Warning {
    /// The red-OD order disagrees with the Ruifrok cross-check or its margin is tiny.
    AmbiguousOrder {
        /// H red − E red.
        red_margin: f64,
        /// Ruifrok keep − swap margin.
        ruifrok_margin: f64,
    },
    /// I0 estimation found too little background; the fallback value was used.
    I0Fallback,
}

impl Default for EstimateOptions {
    fn default() -> Self {
        EstimateOptions::new(Convention::classm())
    }
}

impl EstimateOptions {
    /// Defaults for a convention: every pixel, default artefact exclusion and checks.
    pub fn new(convention: Convention) -> Self {
        EstimateOptions {
            convention,
            sampling: Sampling::All,
            artefacts: Artefacts::default(),
            min_pixels: 500,
            rank_epsilon: 1e-5,
            min_separation_deg: 8.0,
            min_red_margin: 0.01,
            min_component: -0.05,
            ruifrok_check: true,
            on_ambiguous_order: OrderPolicy::Flag,
        }
    }

    /// Same options with another sampling.
    pub fn with_sampling(mut self, sampling: Sampling) -> Self {
        self.sampling = sampling;
        self
    }

    /// Same options with another artefact rule.
    pub fn with_artefacts(mut self, artefacts: Artefacts) -> Self {
        self.artefacts = artefacts;
        self
    }

    /// Same options with another minimum pixel count.
    pub fn with_min_pixels(mut self, min: u64) -> Self {
        self.min_pixels = min;
        self
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        self.convention.validate()?;
        self.sampling.validate()?;
        if !self.rank_epsilon.is_finite() || self.rank_epsilon < 0.0 {
            return Err(StainError::config("rank_epsilon must be finite and ≥ 0"));
        }
        if !self.min_separation_deg.is_finite()
            || !self.min_red_margin.is_finite()
            || !self.min_component.is_finite()
        {
            return Err(StainError::config("thresholds must be finite"));
        }
        Ok(())
    }
}

/// Two unit stain vectors in OD space (R, G, B), hematoxylin first.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StainMatrix {
    /// Hematoxylin.
    pub h: [f64; 3],
    /// Eosin.
    pub e: [f64; 3],
}

impl StainMatrix {
    /// Builds a matrix from two directions, normalising them to unit length.
    pub fn new(h: [f64; 3], e: [f64; 3]) -> Result<Self> {
        let ok = |v: [f64; 3]| v.iter().all(|x| x.is_finite()) && crate::fit::dot(v, v) > 0.0;
        if !ok(h) || !ok(e) {
            return Err(StainError::config(
                "stain vectors must be finite and non-zero",
            ));
        }
        let m = StainMatrix {
            h: crate::fit::normalize(h),
            e: crate::fit::normalize(e),
        };
        if m.separation_deg() < 1e-3 {
            return Err(StainError::config("stain vectors are parallel"));
        }
        Ok(m)
    }

    /// Ruifrok & Johnston's H and E (normalised): the usual fallback when a tile has no usable
    /// stain signal.
    pub fn ruifrok() -> Self {
        StainMatrix {
            h: crate::fit::normalize(crate::fit::RUIFROK_H),
            e: crate::fit::normalize(crate::fit::RUIFROK_E),
        }
    }

    /// The matrix as 3 rows × 2 columns `[[H_r, E_r], [H_g, E_g], [H_b, E_b]]`.
    pub fn as_3x2(&self) -> [[f64; 2]; 3] {
        [
            [self.h[0], self.e[0]],
            [self.h[1], self.e[1]],
            [self.h[2], self.e[2]],
        ]
    }

    /// Angle between H and E in degrees.
    pub fn separation_deg(&self) -> f64 {
        crate::fit::angle_deg(self.h, self.e)
    }

    /// Angles in degrees between this matrix's H and E vectors and `other`'s: how far apart
    /// two estimates of the same stains are.
    ///
    /// ```
    /// use classm_stain::StainMatrix;
    /// let m = StainMatrix::ruifrok();
    /// let swapped = StainMatrix::new(m.e, m.h)?;
    /// let [dh, de] = m.angles_to(&swapped);
    /// assert!((dh - m.separation_deg()).abs() < 1e-9 && (de - dh).abs() < 1e-9);
    /// assert!(m.angles_to(&m).iter().all(|&a| a < 1e-6));
    /// # Ok::<(), classm_stain::StainError>(())
    /// ```
    pub fn angles_to(&self, other: &StainMatrix) -> [f64; 2] {
        [
            crate::fit::angle_deg(self.h, other.h),
            crate::fit::angle_deg(self.e, other.e),
        ]
    }

    /// The 2×3 Moore–Penrose pseudo-inverse: row 0 gives H, row 1 gives E from an OD vector.
    /// It equals least squares, HistomicsTK's complemented inverse and CLASS-M's 3×3 inverse.
    pub fn pseudo_inverse(&self) -> [[f64; 3]; 2] {
        let c = crate::fit::dot(self.h, self.e);
        let d = 1.0 - c * c;
        let row = |a: [f64; 3], b: [f64; 3]| {
            [
                (a[0] - c * b[0]) / d,
                (a[1] - c * b[1]) / d,
                (a[2] - c * b[2]) / d,
            ]
        };
        [row(self.h, self.e), row(self.e, self.h)]
    }
}

/// Where the background intensity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum I0Source {
    /// Set by the convention or the caller.
    Fixed,
    /// Estimated from bright, near-neutral pixels.
    Estimated,
    /// Estimation was asked for but too little background was visible: the fallback was used.
    Fallback,
}

/// Diagnostics reported with every estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// Pixels of the input (all tiles).
    pub total_pixels: u64,
    /// Pixels sampled.
    pub sampled_pixels: u64,
    /// `sampled_pixels / total_pixels`.
    pub sampling_rate: f64,
    /// Sampled pixels excluded by the caller's mask.
    pub excluded_masked: u64,
    /// Sampled pixels excluded as near-black.
    pub excluded_dark: u64,
    /// Sampled pixels excluded as saturated.
    pub excluded_saturated: u64,
    /// Fraction of sampled pixels excluded as artefacts or by the mask.
    pub excluded_fraction: f64,
    /// Sampled pixels passing the pre-PCA tissue rule (`‖OD‖ ≥ β`, or all channels ≥ β).
    pub tissue_pixels: u64,
    /// Pixels that entered the PCA.
    pub pca_pixels: u64,
    /// Pixels that entered the angle percentiles.
    pub kept_pixels: u64,
    /// `kept_pixels / sampled_pixels`.
    pub kept_fraction: f64,
    /// Eigenvalues of the OD covariance (÷N), largest first, in OD² of the convention.
    pub eigenvalues: [f64; 3],
    /// λ2 / λ1: how planar the data is (real H&E 0.007–0.14; single stain ≈ 0.002).
    pub eigenvalue_ratio: f64,
    /// Angle between H and E, degrees.
    pub separation_deg: f64,
    /// H and E angles in the oriented (v1, v2) plane, degrees (CLASS-M reports these).
    pub plane_angles_deg: [f64; 2],
    /// H red component minus E red component (unit vectors): the ordering margin.
    pub red_margin: f64,
    /// Ruifrok cross-check margin (keep − swap of the summed cosines); > 0 agrees.
    pub ruifrok_margin: f64,
    /// Fraction of tissue pixels (`‖OD‖ ≥ β`) with negative H and negative E concentration.
    pub negative_fraction: [f64; 2],
    /// Pixels that entered the maximum concentrations (H, E).
    pub max_conc_pixels: [u64; 2],
    /// Conditions that did not stop the estimate.
    #[serde(default)]
    pub warnings: Vec<Warning>,
}

/// A fitted stain estimate: everything needed to separate, normalise or report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StainEstimate {
    /// Stain vectors, unit length, H first.
    pub matrix: StainMatrix,
    /// Maximum concentrations (H, E): the configured percentile, in the convention's OD units.
    pub max_conc: [f64; 2],
    /// Background intensity used, per channel.
    pub i0: [f64; 3],
    /// Where `i0` came from.
    pub i0_source: I0Source,
    /// The conventions used.
    pub convention: Convention,
    /// Sampling used.
    pub sampling: Sampling,
    /// Diagnostics.
    pub diagnostics: Diagnostics,
    /// Set when this is not an estimate from the pixels but a fallback, with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

impl StainEstimate {
    /// A fallback estimate (for example [`StainMatrix::ruifrok`] or a slide's matrix) used in
    /// place of a failed per-image estimate; `reason` is recorded and reported.
    pub fn fallback(
        matrix: StainMatrix,
        max_conc: [f64; 2],
        convention: Convention,
        i0: [f64; 3],
        reason: impl Into<String>,
    ) -> Self {
        Self::given(matrix, max_conc, convention, i0, Some(reason.into()))
    }

    /// The estimate a [`NormalizationTarget`](crate::NormalizationTarget) describes: its
    /// matrix, maxima, I0 and convention, with no pixel diagnostics (none were measured here).
    pub fn from_target(target: &crate::NormalizationTarget) -> Self {
        Self::given(
            target.matrix,
            target.max_conc,
            target.convention.clone(),
            target.i0,
            None,
        )
    }

    /// An estimate given rather than measured: diagnostics describe the matrix only.
    fn given(
        matrix: StainMatrix,
        max_conc: [f64; 2],
        convention: Convention,
        i0: [f64; 3],
        fallback: Option<String>,
    ) -> Self {
        StainEstimate {
            matrix,
            max_conc,
            i0,
            i0_source: I0Source::Fixed,
            sampling: Sampling::All,
            diagnostics: Diagnostics {
                total_pixels: 0,
                sampled_pixels: 0,
                sampling_rate: 0.0,
                excluded_masked: 0,
                excluded_dark: 0,
                excluded_saturated: 0,
                excluded_fraction: 0.0,
                tissue_pixels: 0,
                pca_pixels: 0,
                kept_pixels: 0,
                kept_fraction: 0.0,
                eigenvalues: [0.0; 3],
                eigenvalue_ratio: 0.0,
                separation_deg: matrix.separation_deg(),
                plane_angles_deg: [0.0; 2],
                red_margin: matrix.h[0] - matrix.e[0],
                ruifrok_margin: 0.0,
                negative_fraction: [0.0; 2],
                max_conc_pixels: [0; 2],
                warnings: Vec::new(),
            },
            convention,
            fallback,
        }
    }

    /// The estimate as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Reads an estimate written by [`to_json`](Self::to_json).
    pub fn from_json(s: &str) -> Result<Self> {
        serde_json::from_str(s).map_err(|e| StainError::Parse {
            what: "stain estimate".into(),
            reason: e.to_string(),
        })
    }
}

/// Estimates the stain matrix of one image (all its pixels by default), using all rayon threads.
/// The result is bit-identical whatever the thread count.
///
/// ```
/// use classm_stain::{estimate, EstimateOptions, RgbView, ErrorKind};
/// let white = vec![255u8; 64 * 64 * 3];
/// let err = estimate(RgbView::new(64, 64, &white)?, &EstimateOptions::default()).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::EmptyTissue);
/// # Ok::<(), classm_stain::StainError>(())
/// ```
pub fn estimate(image: RgbView<'_>, options: &EstimateOptions) -> Result<StainEstimate> {
    estimate_tile(Tile::new(image), options)
}

/// As [`estimate`], with a caller mask (non-zero = usable pixel).
pub fn estimate_masked(
    image: RgbView<'_>,
    mask: MaskView<'_>,
    options: &EstimateOptions,
) -> Result<StainEstimate> {
    estimate_tile(Tile::new(image).with_mask(mask)?, options)
}

/// Estimates the stains of one image and separates it: [`estimate`] followed by
/// [`Separator::separate`](crate::Separator::separate), in one call.
pub fn estimate_and_separate(
    image: RgbView<'_>,
    options: &EstimateOptions,
    output: Output,
) -> Result<(StainEstimate, Maps)> {
    let n = image.pixels();
    let mut h = vec![0f32; n];
    let mut e = vec![0f32; n];
    let est = estimate_and_separate_into(image, options, output, &mut h, &mut e)?;
    Ok((
        est,
        Maps {
            width: image.width(),
            height: image.height(),
            h,
            e,
        },
    ))
}

/// [`estimate_and_separate`] into caller buffers of `width * height` values each.
pub fn estimate_and_separate_into(
    image: RgbView<'_>,
    options: &EstimateOptions,
    output: Output,
    h: &mut [f32],
    e: &mut [f32],
) -> Result<StainEstimate> {
    let n = image.pixels();
    for len in [h.len(), e.len()] {
        if len != n {
            return Err(StainError::OutputSize {
                expected: n,
                actual: len,
            });
        }
    }
    let result = estimate(image, options)?;
    Separator::new(&result)?.separate_into(image, output, h, e)?;
    Ok(result)
}

/// As [`estimate`], for a [`Tile`] (mask and origin included).
pub fn estimate_tile(tile: Tile<'_>, options: &EstimateOptions) -> Result<StainEstimate> {
    if tile.image.is_empty() {
        return Err(StainError::invalid(format!(
            "image has zero size ({}x{})",
            tile.image.width(),
            tile.image.height()
        )));
    }
    // `run_parallel` spreads the tile over the threads in bands.
    SlideEstimator::run_parallel(options.clone(), std::slice::from_ref(&tile))
}
