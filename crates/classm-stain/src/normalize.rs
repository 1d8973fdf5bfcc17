//! Normalisation of an image's stains to a target's.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::convention::Convention;
use crate::error::{Result, StainError};
use crate::estimate::{StainEstimate, StainMatrix};
use crate::od::OdLut;
use crate::view::RgbView;

/// Format tag written into every serialised target.
pub const TARGET_FORMAT: &str = "classm-stain-target/1";

/// A fitted normalisation target: one serialisable value (JSON) holding the stain matrix,
/// maximum concentrations, background intensity and conventions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalizationTarget {
    /// Always [`TARGET_FORMAT`].
    pub format: String,
    /// Target stain vectors.
    pub matrix: StainMatrix,
    /// Target maximum concentrations (H, E).
    pub max_conc: [f64; 2],
    /// Target background intensity, per channel.
    pub i0: [f64; 3],
    /// Conventions the target was fitted with; sources must use the same.
    pub convention: Convention,
}

impl NormalizationTarget {
    /// The target described by an estimate of the target image.
    pub fn from_estimate(est: &StainEstimate) -> Self {
        NormalizationTarget {
            format: TARGET_FORMAT.into(),
            matrix: est.matrix,
            max_conc: est.max_conc,
            i0: est.i0,
            convention: est.convention.clone(),
        }
    }

    /// JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Reads a target from JSON, checking the format tag and the values.
    pub fn from_json(s: &str) -> Result<Self> {
        let t: NormalizationTarget = serde_json::from_str(s).map_err(|e| StainError::Parse {
            what: "normalisation target".into(),
            reason: e.to_string(),
        })?;
        if t.format != TARGET_FORMAT {
            return Err(StainError::Parse {
                what: "normalisation target".into(),
                reason: format!("format `{}`, expected `{TARGET_FORMAT}`", t.format),
            });
        }
        t.convention.validate()?;
        StainMatrix::new(t.matrix.h, t.matrix.e)?;
        if t.max_conc.iter().any(|&m| !m.is_finite() || m <= 0.0) {
            return Err(StainError::config(
                "target maximum concentrations must be > 0",
            ));
        }
        Ok(t)
    }
}

/// Maps the stains of images fitted by one estimate onto a target. Per pixel it is nine table
/// lookups and six multiplications: `I0ₜ·base^(−Mₜ·(c·maxₜ/maxₛ))` factorises over the input
/// channels because the OD of each channel comes from its own table.
#[derive(Debug, Clone)]
pub struct Normalizer {
    /// `p[out][in][v]`
    p: Box<[[[f32; 256]; 3]; 3]>,
    i0: [f32; 3],
}

impl Normalizer {
    /// A normaliser from the source image's estimate to `target`. Fails with
    /// [`StainError::ConventionMismatch`] unless both use the same conventions.
    pub fn new(source: &StainEstimate, target: &NormalizationTarget) -> Result<Self> {
        if !source.convention.compatible_with(&target.convention) {
            return Err(StainError::ConventionMismatch {
                fitted: source.convention.name.clone(),
                target: target.convention.name.clone(),
            });
        }
        if source.max_conc.iter().any(|&m| !m.is_finite() || m <= 0.0) {
            return Err(StainError::config(
                "source maximum concentrations must be > 0",
            ));
        }
        let lut = OdLut::new(&source.convention, source.i0);
        let pinv = source.matrix.pseudo_inverse();
        let ratio = [
            target.max_conc[0] / source.max_conc[0],
            target.max_conc[1] / source.max_conc[1],
        ];
        let tm = [target.matrix.h, target.matrix.e];
        let ln_base = source.convention.log_base.value().ln();
        let mut p = Box::new([[[0f32; 256]; 3]; 3]);
        for out in 0..3 {
            for k in 0..3 {
                // OD_out = Σ_s tm[s][out]·ratio[s]·Σ_k pinv[s][k]·od_k
                let coef: f64 = (0..2).map(|s| tm[s][out] * ratio[s] * pinv[s][k]).sum();
                for v in 0..256 {
                    p[out][k][v] = (-(coef * lut.od[k][v]) * ln_base).exp() as f32;
                }
            }
        }
        Ok(Normalizer {
            p,
            i0: target.i0.map(|v| v as f32),
        })
    }

    /// Writes the normalised RGB8 image into `out` (`3 * width * height` bytes), rounding to
    /// nearest and clamping to [0, 255].
    pub fn normalize_into(&self, image: RgbView<'_>, out: &mut [u8]) -> Result<()> {
        let n = image.pixels();
        if out.len() != 3 * n {
            return Err(StainError::OutputSize {
                expected: 3 * n,
                actual: out.len(),
            });
        }
        if n == 0 {
            return Ok(());
        }
        let w = image.width();
        let p = &self.p;
        out.par_chunks_mut(3 * w).enumerate().for_each(|(y, orow)| {
            let row = image.row(y);
            for (px, o) in row.chunks_exact(3).zip(orow.chunks_exact_mut(3)) {
                let (r, g, b) = (px[0] as usize, px[1] as usize, px[2] as usize);
                for ch in 0..3 {
                    let v = self.i0[ch] * p[ch][0][r] * p[ch][1][g] * p[ch][2][b];
                    o[ch] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        });
        Ok(())
    }

    /// [`normalize_into`](Self::normalize_into) into a new buffer.
    pub fn normalize(&self, image: RgbView<'_>) -> Result<Vec<u8>> {
        let mut out = vec![0u8; image.pixels() * 3];
        self.normalize_into(image, &mut out)?;
        Ok(out)
    }
}
