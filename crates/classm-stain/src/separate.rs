//! Separation: concentration maps, CLASS-M model inputs and single-stain renderings.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::convention::Convention;
use crate::error::{Result, StainError};
use crate::estimate::{StainEstimate, StainMatrix};
use crate::od::{OdLut, PairTable, dot3, dot3_pair};
use crate::view::RgbView;

/// What [`Separator::separate`] produces per pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Output {
    /// Least-squares concentrations in the convention's OD units (may be negative).
    Concentrations,
    /// CLASS-M model inputs: `clip(c / (2·max), 0, 1)`.
    ModelInput,
}

/// One of the two stains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stain {
    /// Hematoxylin.
    H,
    /// Eosin.
    E,
}

/// Two single-channel float maps, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Maps {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Hematoxylin.
    pub h: Vec<f32>,
    /// Eosin.
    pub e: Vec<f32>,
}

/// Applies one fitted estimate to images. Building it costs a few microseconds (six 256-entry
/// tables); applying it is three lookups and two additions per stain and pixel.
#[derive(Debug, Clone)]
pub struct Separator {
    matrix: StainMatrix,
    max_conc: [f64; 2],
    ln_base: f32,
    /// (H, E) concentrations per channel value.
    conc: PairTable,
    /// (H, E) model inputs before the clip, per channel value.
    model: PairTable,
}

fn check_len(expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(StainError::OutputSize { expected, actual })
    }
}

impl Separator {
    /// A separator for a fitted (or fallback) estimate.
    pub fn new(est: &StainEstimate) -> Result<Self> {
        Self::from_parts(est.matrix, est.max_conc, &est.convention, est.i0)
    }

    /// A separator from its parts: stain matrix, maximum concentrations (both > 0),
    /// convention and resolved background intensity.
    pub fn from_parts(
        matrix: StainMatrix,
        max_conc: [f64; 2],
        convention: &Convention,
        i0: [f64; 3],
    ) -> Result<Self> {
        convention.validate()?;
        if max_conc.iter().any(|&m| !m.is_finite() || m <= 0.0) {
            return Err(StainError::config(format!(
                "maximum concentrations {max_conc:?} must be finite and > 0"
            )));
        }
        if i0.iter().any(|&v| !v.is_finite() || v < 1.0) {
            return Err(StainError::config(format!(
                "I0 {i0:?} must be finite and ≥ 1"
            )));
        }
        let lut = OdLut::new(convention, i0);
        let pinv = matrix.pseudo_inverse();
        let scaled =
            |row: [f64; 3], m: f64| [row[0] / (2.0 * m), row[1] / (2.0 * m), row[2] / (2.0 * m)];
        Ok(Separator {
            matrix,
            max_conc,
            ln_base: convention.log_base.value().ln() as f32,
            conc: lut.weighted_pair(pinv[0], pinv[1]),
            model: lut.weighted_pair(scaled(pinv[0], max_conc[0]), scaled(pinv[1], max_conc[1])),
        })
    }

    /// The stain matrix applied.
    pub fn matrix(&self) -> StainMatrix {
        self.matrix
    }

    /// The maximum concentrations used by [`Output::ModelInput`].
    pub fn max_conc(&self) -> [f64; 2] {
        self.max_conc
    }

    /// Writes H and E maps of `image` into `h` and `e` (`width * height` each), in parallel
    /// over rows.
    pub fn separate_into(
        &self,
        image: RgbView<'_>,
        output: Output,
        h: &mut [f32],
        e: &mut [f32],
    ) -> Result<()> {
        let n = image.pixels();
        check_len(n, h.len())?;
        check_len(n, e.len())?;
        if n == 0 {
            return Ok(());
        }
        let w = image.width();
        let t = match output {
            Output::Concentrations => &self.conc,
            Output::ModelInput => &self.model,
        };
        let clip = output == Output::ModelInput;
        h.par_chunks_mut(w)
            .zip(e.par_chunks_mut(w))
            .enumerate()
            .for_each(|(y, (hr, er))| {
                let row = image.row(y);
                for ((p, ho), eo) in row.chunks_exact(3).zip(hr.iter_mut()).zip(er.iter_mut()) {
                    let (r, g, b) = (p[0], p[1], p[2]);
                    let (vh, ve) = dot3_pair(t, r, g, b);
                    if clip {
                        *ho = vh.clamp(0.0, 1.0);
                        *eo = ve.clamp(0.0, 1.0);
                    } else {
                        *ho = vh;
                        *eo = ve;
                    }
                }
            });
        Ok(())
    }

    /// H and E maps of `image` as new buffers.
    pub fn separate(&self, image: RgbView<'_>, output: Output) -> Result<Maps> {
        let n = image.pixels();
        let mut h = vec![0f32; n];
        let mut e = vec![0f32; n];
        self.separate_into(image, output, &mut h, &mut e)?;
        Ok(Maps {
            width: image.width(),
            height: image.height(),
            h,
            e,
        })
    }

    /// Renders one stain alone as RGB8 on a white background: `255 · base^(−c·v)` per channel
    /// with `c` clamped at 0 (negative concentrations show as background), then rounded to
    /// nearest (halves away from zero) and clamped to [0, 255]. The background is 255 whatever
    /// the image's I0, so renderings of different scans compare.
    pub fn render_into(&self, image: RgbView<'_>, stain: Stain, out: &mut [u8]) -> Result<()> {
        let n = image.pixels();
        check_len(n * 3, out.len())?;
        if n == 0 {
            return Ok(());
        }
        let (k, v) = match stain {
            Stain::H => (0, self.matrix.h),
            Stain::E => (1, self.matrix.e),
        };
        let t: [[f32; 256]; 3] =
            std::array::from_fn(|c| std::array::from_fn(|i| self.conc[c][i][k]));
        let k = [
            v[0] as f32 * self.ln_base,
            v[1] as f32 * self.ln_base,
            v[2] as f32 * self.ln_base,
        ];
        let w = image.width();
        out.par_chunks_mut(3 * w).enumerate().for_each(|(y, orow)| {
            let row = image.row(y);
            for (p, o) in row.chunks_exact(3).zip(orow.chunks_exact_mut(3)) {
                let c = dot3(&t, p[0], p[1], p[2]).max(0.0);
                for ch in 0..3 {
                    o[ch] = (255.0 * (-c * k[ch]).exp()).round().clamp(0.0, 255.0) as u8;
                }
            }
        });
        Ok(())
    }

    /// [`render_into`](Self::render_into) into a new buffer.
    pub fn render(&self, image: RgbView<'_>, stain: Stain) -> Result<Vec<u8>> {
        let mut out = vec![0u8; image.pixels() * 3];
        self.render_into(image, stain, &mut out)?;
        Ok(out)
    }
}
