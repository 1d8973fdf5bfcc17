//! Conventions: every choice that changes the numbers, as explicit values recorded in results.

use serde::{Deserialize, Serialize};

use crate::error::{Result, StainError};

/// Logarithm used for optical density.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogBase {
    /// `log10` (CLASS-M, HistomicsTK after conversion, the reference fixtures).
    Ten,
    /// Natural log (Macenko's MATLAB code, torchstain, StainTools).
    E,
}

impl LogBase {
    /// The base as a number.
    pub fn value(self) -> f64 {
        match self {
            LogBase::Ten => 10.0,
            LogBase::E => std::f64::consts::E,
        }
    }

    /// Multiply an OD in this base by this factor to get log10 units.
    pub fn to_log10_factor(self) -> f64 {
        match self {
            LogBase::Ten => 1.0,
            LogBase::E => std::f64::consts::LOG10_E,
        }
    }
}

/// How a zero intensity is kept away from `log(0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OffsetRule {
    /// `OD = log(I0 / max(I, 1))` (CLASS-M, StainTools).
    #[serde(rename = "max(I,1)")]
    MaxOne,
    /// `OD = log(I0 / (I + 1))` (Macenko 2009, torchstain, HistomicsTK).
    #[serde(rename = "I+1")]
    PlusOne,
}

/// Background intensity (the brightness of empty glass) per channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum I0Spec {
    /// A fixed value per channel, R G B.
    Fixed([f64; 3]),
    /// Estimated from the image (or slide): the mode of bright, near-neutral pixels per
    /// channel; falls back to the given value, reported, when too little glass is visible.
    Estimate {
        /// Used when no background can be found.
        fallback: [f64; 3],
    },
}

/// Which pixels are tissue: the background rule with threshold `beta` in OD units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TissueRule {
    /// CLASS-M: the length of the projection onto the fitted stain plane is at least β.
    /// The PCA itself uses the pixels with `‖OD‖₂ ≥ β` (or all, see [`PcaPixels`]).
    ProjectedNorm,
    /// `‖OD‖₂ ≥ β` (the rule recommended by the reference study).
    OdNorm,
    /// Every channel `OD_c ≥ β` (Macenko 2009 / torchstain). Drops pale eosin.
    AllChannels,
}

/// Which pixels enter the principal component analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PcaPixels {
    /// Tissue pixels only (`‖OD‖₂ ≥ β`, or the all-channel rule for
    /// [`TissueRule::AllChannels`]). Glass cannot tilt the plane, so a tile that is 90 % glass
    /// gives the same answer as its tissue alone.
    Tissue,
    /// Every sampled pixel except blank ones, whose OD is exactly zero in every channel
    /// (glass saturated at I0). Blank pixels carry no stain and would only drag the centre of
    /// the PCA towards the origin; on tissue tiles this is the CLASS-M authors' computation.
    NonBlank,
    /// Every sampled pixel, glass included (the CLASS-M authors' code, which only ever sees
    /// tissue tiles).
    All,
}

/// Pixels over which the maximum concentrations (a high percentile) are taken.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxConcPixels {
    /// Tissue pixels, `‖OD‖₂ ≥ β`.
    Tissue,
    /// Per stain, the pixels whose concentration of that stain is at least the value
    /// (CLASS-M: 0.15).
    ConcAtLeast(f64),
    /// Every sampled pixel (torchstain).
    All,
}

/// The complete set of algorithm parameters. Two presets: [`Convention::classm`] (default) and
/// [`Convention::macenko2009`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Convention {
    /// Preset name, or `custom` once a field has been changed by hand.
    pub name: String,
    /// Logarithm of the optical density.
    pub log_base: LogBase,
    /// Background intensity.
    pub i0: I0Spec,
    /// Offset rule that keeps `I = 0` finite.
    pub offset: OffsetRule,
    /// Background rule.
    pub tissue_rule: TissueRule,
    /// Background threshold β, in OD units of `log_base`.
    pub beta: f64,
    /// Pixels of the PCA.
    pub pca_pixels: PcaPixels,
    /// Angle percentile α in percent: H and E are at the α and 100 − α percentiles.
    pub alpha_percent: f64,
    /// Percentile of the maximum concentrations, in percent.
    pub max_conc_percentile: f64,
    /// Pixels of the maximum concentrations.
    pub max_conc_pixels: MaxConcPixels,
}

impl Default for Convention {
    fn default() -> Self {
        Convention::classm()
    }
}

impl Convention {
    /// The CLASS-M convention: `OD = log10(255 / max(I, 1))`, PCA over every non-blank pixel,
    /// tissue where the projection onto the stain plane has length ≥ 0.15, α = 1 %, maximum
    /// concentrations at the 99th percentile of the values ≥ 0.15.
    pub fn classm() -> Self {
        Convention {
            name: "classm".into(),
            log_base: LogBase::Ten,
            i0: I0Spec::Fixed([255.0; 3]),
            offset: OffsetRule::MaxOne,
            tissue_rule: TissueRule::ProjectedNorm,
            beta: 0.15,
            pca_pixels: PcaPixels::NonBlank,
            alpha_percent: 1.0,
            max_conc_percentile: 99.0,
            max_conc_pixels: MaxConcPixels::ConcAtLeast(0.15),
        }
    }

    /// Macenko et al. 2009 as its MATLAB code and torchstain run it: natural log, `Io = 240`,
    /// `I + 1`, a pixel is tissue when every channel has `OD ≥ 0.15`, α = 1 %, maximum
    /// concentrations at the 99th percentile over all pixels.
    pub fn macenko2009() -> Self {
        Convention {
            name: "macenko2009".into(),
            log_base: LogBase::E,
            i0: I0Spec::Fixed([240.0; 3]),
            offset: OffsetRule::PlusOne,
            tissue_rule: TissueRule::AllChannels,
            beta: 0.15,
            pca_pixels: PcaPixels::Tissue,
            alpha_percent: 1.0,
            max_conc_percentile: 99.0,
            max_conc_pixels: MaxConcPixels::All,
        }
    }

    /// A preset by name (`classm` or `macenko2009`).
    pub fn by_name(name: &str) -> Result<Self> {
        match name {
            "classm" => Ok(Convention::classm()),
            "macenko2009" => Ok(Convention::macenko2009()),
            other => Err(StainError::config(format!(
                "unknown convention `{other}` (expected classm or macenko2009)"
            ))),
        }
    }

    /// Same convention with the background intensity set by hand (renamed `custom` unless it
    /// equals the preset's).
    pub fn with_i0(mut self, i0: I0Spec) -> Self {
        if self.i0 != i0 {
            self.i0 = i0;
            self.mark_custom();
        }
        self
    }

    /// Same convention with I0 estimated from the image, falling back to the preset's value.
    pub fn with_estimated_i0(self) -> Self {
        let fallback = match self.i0 {
            I0Spec::Fixed(v) => v,
            I0Spec::Estimate { fallback } => fallback,
        };
        self.with_i0(I0Spec::Estimate { fallback })
    }

    /// Same convention with another PCA pixel set.
    pub fn with_pca_pixels(mut self, pca: PcaPixels) -> Self {
        if self.pca_pixels != pca {
            self.pca_pixels = pca;
            self.mark_custom();
        }
        self
    }

    /// Optical density per channel and intensity, `od[c][v] = log(i0[c] / denom(v))` in this
    /// convention's base and offset rule: the table every separation reads. Exposed so that
    /// callers with their own unmixing rows (a fixed matrix, say) use the same numbers.
    pub fn od_table(&self, i0: [f64; 3]) -> [[f64; 256]; 3] {
        let ln_base = self.log_base.value().ln();
        let mut od = [[0.0; 256]; 3];
        for (c, row) in od.iter_mut().enumerate() {
            for (v, d) in row.iter_mut().enumerate() {
                let denom = match self.offset {
                    OffsetRule::MaxOne => (v as f64).max(1.0),
                    OffsetRule::PlusOne => v as f64 + 1.0,
                };
                *d = (i0[c] / denom).ln() / ln_base;
            }
        }
        od
    }

    fn mark_custom(&mut self) {
        if !self.name.ends_with("+custom") {
            self.name = format!("{}+custom", self.name);
        }
    }

    /// Checks every value for range and consistency.
    pub fn validate(&self) -> Result<()> {
        let i0 = match self.i0 {
            I0Spec::Fixed(v) => v,
            I0Spec::Estimate { fallback } => fallback,
        };
        if i0
            .iter()
            .any(|&v| !v.is_finite() || !(1.0..=65535.0).contains(&v))
        {
            return Err(StainError::config(format!(
                "I0 {i0:?} must be finite and in [1, 65535]"
            )));
        }
        if !self.beta.is_finite() || self.beta < 0.0 {
            return Err(StainError::config(format!(
                "beta {} must be finite and ≥ 0",
                self.beta
            )));
        }
        if !self.alpha_percent.is_finite() || !(0.0..50.0).contains(&self.alpha_percent) {
            return Err(StainError::config(format!(
                "alpha {} % must be in [0, 50)",
                self.alpha_percent
            )));
        }
        if !self.max_conc_percentile.is_finite()
            || !(0.0..=100.0).contains(&self.max_conc_percentile)
        {
            return Err(StainError::config(format!(
                "max_conc_percentile {} must be in [0, 100]",
                self.max_conc_percentile
            )));
        }
        if let MaxConcPixels::ConcAtLeast(v) = self.max_conc_pixels {
            if !v.is_finite() {
                return Err(StainError::config(
                    "max_conc_pixels threshold must be finite",
                ));
            }
        }
        Ok(())
    }

    /// Whether two conventions produce concentrations on the same scale (everything but the
    /// resolved background intensity must agree).
    pub fn compatible_with(&self, other: &Convention) -> bool {
        let strip = |c: &Convention| {
            let mut c = c.clone();
            c.name = String::new();
            c
        };
        strip(self) == strip(other)
    }
}
