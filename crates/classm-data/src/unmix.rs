//! RGB8 to the two CLASS-M model input maps: `clip(OD · row / divisor, 0, 1)` per stain, as
//! three table lookups per pixel.

use classm_stain::{Convention, I0Spec, StainEstimate};
use serde::{Deserialize, Serialize};

/// The paper's fixed unmixing rows (classm-method.md §2.9): the "no adaptive separation"
/// ablation, with divisor 1.
pub const PAPER_FIXED_ROWS: [[f64; 3]; 2] = [[1.838, 0.0341, -0.76], [-1.373, 0.772, 1.215]];

/// `v` clipped to [0, 1]: two compare-selects (`maxss`, `minss`), where `f32::clamp` also
/// checks its bounds and keeps NaN (the tables hold no NaN).
#[inline(always)]
pub(crate) fn unit(v: f32) -> f32 {
    let v = if v > 0.0 { v } else { 0.0 };
    if v < 1.0 { v } else { 1.0 }
}

/// Per-stain lookup tables for the model inputs.
#[derive(Debug, Clone)]
pub struct Unmixer {
    tables: Box<[[[f32; 256]; 3]; 2]>,
}

/// Where a separation's numbers come from, for reports and model configs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnmixingRows {
    /// H and E rows applied to the OD vector.
    pub rows: [[f64; 3]; 2],
    /// Divisors of the H and E values (`2·max` for adaptive estimates).
    pub divisors: [f64; 2],
}

impl Unmixer {
    /// The tables for explicit rows and divisors under a convention's OD and a background.
    pub fn from_rows(
        rows: [[f64; 3]; 2],
        divisors: [f64; 2],
        convention: &Convention,
        i0: [f64; 3],
    ) -> Self {
        let od = convention.od_table(i0);
        let mut tables = Box::new([[[0f32; 256]; 3]; 2]);
        for (k, t) in tables.iter_mut().enumerate() {
            for (c, tc) in t.iter_mut().enumerate() {
                // The weight first, then the product: the same rounding as classm-stain's
                // Separator, so both give bit-identical model inputs.
                let w = rows[k][c] / divisors[k];
                for (v, tv) in tc.iter_mut().enumerate() {
                    *tv = (w * od[c][v]) as f32;
                }
            }
        }
        Unmixer { tables }
    }

    /// CLASS-M model inputs of an estimate: pseudo-inverse rows over `2·max`.
    pub fn from_estimate(est: &StainEstimate) -> Self {
        let r = Self::rows_of(est);
        Self::from_rows(r.rows, r.divisors, &est.convention, est.i0)
    }

    /// The rows and divisors [`Unmixer::from_estimate`] uses.
    pub fn rows_of(est: &StainEstimate) -> UnmixingRows {
        UnmixingRows {
            rows: est.matrix.pseudo_inverse(),
            divisors: [2.0 * est.max_conc[0], 2.0 * est.max_conc[1]],
        }
    }

    /// Bytes of the tables (they live on the heap, out of `size_of::<Unmixer>()`'s sight).
    pub(crate) fn table_bytes(&self) -> usize {
        size_of_val(&*self.tables)
    }

    /// The paper's fixed matrix under the CLASS-M convention (`log10(255 / max(I, 1))`).
    pub fn paper_fixed() -> Self {
        let conv = Convention::classm();
        let i0 = match conv.i0 {
            I0Spec::Fixed(v) | I0Spec::Estimate { fallback: v } => v,
        };
        Self::from_rows(PAPER_FIXED_ROWS, [1.0, 1.0], &conv, i0)
    }

    /// Writes the H and E maps of packed RGB8 `rgb` into `h` and `e` (one value per pixel).
    pub fn separate_into(&self, rgb: &[u8], h: &mut [f32], e: &mut [f32]) {
        let [th, te] = &*self.tables;
        for ((p, ho), eo) in rgb.chunks_exact(3).zip(h.iter_mut()).zip(e.iter_mut()) {
            let (r, g, b) = (p[0] as usize, p[1] as usize, p[2] as usize);
            *ho = unit(th[0][r] + th[1][g] + th[2][b]);
            *eo = unit(te[0][r] + te[1][g] + te[2][b]);
        }
    }
}

impl Unmixer {
    /// Two raw RGB channels as the "views", `v / 255` (the paper's RGB-pair comparison).
    pub fn channels(first: usize, second: usize) -> Self {
        let mut tables = Box::new([[[0f32; 256]; 3]; 2]);
        for (k, c) in [first, second].into_iter().enumerate() {
            for (v, t) in tables[k][c].iter_mut().enumerate() {
                *t = v as f32 / 255.0;
            }
        }
        Unmixer { tables }
    }

    /// These tables read through a per-byte table first: `t'[c][v] = t[c][lut[v]]`.
    pub fn after(&self, lut: &[u8; 256]) -> Unmixer {
        let mut tables = self.tables.clone();
        for (out, src) in tables.iter_mut().zip(self.tables.iter()) {
            for (oc, sc) in out.iter_mut().zip(src) {
                for (o, &l) in oc.iter_mut().zip(lut) {
                    *o = sc[l as usize];
                }
            }
        }
        Unmixer { tables }
    }

    /// The lookup tables of stain `k` (0 = H, 1 = E), one per RGB channel.
    pub fn table(&self, k: usize) -> &[[f32; 256]; 3] {
        &self.tables[k]
    }
}
