//! Lookup-table optical density: 256 entries per channel replace a `log` per pixel.

use crate::convention::Convention;

/// Scale of the fixed-point OD used for the moments: integer sums are associative, so the
/// plane does not depend on how pixels are split across tiles or threads.
pub(crate) const FIXED_SCALE: f64 = (1u64 << 16) as f64;

/// Per-channel optical-density tables for one convention and one resolved I0.
#[derive(Debug, Clone)]
pub(crate) struct OdLut {
    /// `od[c][v]` in the convention's log base.
    pub od: [[f64; 256]; 3],
    /// `od` in fixed point, `round(od * FIXED_SCALE)`, stored as an integer-valued `f64` so the
    /// moment sums run in floating-point registers and stay exact (see `fit::FLUSH`).
    pub fixed: [[f64; 256]; 3],
    /// `od²`, for the norm rule.
    pub sq: [[f64; 256]; 3],
}

impl OdLut {
    pub fn new(conv: &Convention, i0: [f64; 3]) -> Self {
        let od = conv.od_table(i0);
        let mut fixed = [[0f64; 256]; 3];
        let mut sq = [[0.0; 256]; 3];
        for c in 0..3 {
            for (v, &d) in od[c].iter().enumerate() {
                // |OD| ≤ log(65535) < 16 keeps every partial sum an exact f64 integer.
                fixed[c][v] = (d.clamp(-15.9, 15.9) * FIXED_SCALE).round();
                sq[c][v] = d * d;
            }
        }
        OdLut { od, fixed, sq }
    }

    #[inline(always)]
    pub fn norm_sq(&self, r: u8, g: u8, b: u8) -> f64 {
        self.sq[0][r as usize] + self.sq[1][g as usize] + self.sq[2][b as usize]
    }

    #[inline(always)]
    pub fn min_channel(&self, r: u8, g: u8, b: u8) -> f64 {
        self.od[0][r as usize]
            .min(self.od[1][g as usize])
            .min(self.od[2][b as usize])
    }

    /// A table `t[c][v] = w[c] * od[c][v]`, so that `w · OD` is three lookups and two adds.
    pub fn weighted(&self, w: [f64; 3]) -> [[f32; 256]; 3] {
        let mut t = [[0f32; 256]; 3];
        for ((tc, oc), wc) in t.iter_mut().zip(&self.od).zip(w) {
            for (tv, ov) in tc.iter_mut().zip(oc) {
                *tv = (wc * ov) as f32;
            }
        }
        t
    }
}

/// Two weighted tables side by side, `t[c][v] = [a·od, b·od]`: a pixel's two dot products
/// from three loads instead of six.
pub(crate) type PairTable = [[[f32; 2]; 256]; 3];

impl OdLut {
    /// [`weighted`](Self::weighted) for `a` and `b`, interleaved (the same values).
    pub fn weighted_pair(&self, a: [f64; 3], b: [f64; 3]) -> PairTable {
        let (ta, tb) = (self.weighted(a), self.weighted(b));
        std::array::from_fn(|c| std::array::from_fn(|v| [ta[c][v], tb[c][v]]))
    }
}

/// Both dot products of a [`PairTable`], each summed in [`dot3`]'s order (the same bits).
#[inline(always)]
pub(crate) fn dot3_pair(t: &PairTable, r: u8, g: u8, b: u8) -> (f32, f32) {
    let [ar, br] = t[0][r as usize];
    let [ag, bg] = t[1][g as usize];
    let [ab, bb] = t[2][b as usize];
    (ar + ag + ab, br + bg + bb)
}

/// `t[0][r] + t[1][g] + t[2][b]`.
#[inline(always)]
pub(crate) fn dot3<T: Copy + std::ops::Add<Output = T>>(
    t: &[[T; 256]; 3],
    r: u8,
    g: u8,
    b: u8,
) -> T {
    t[0][r as usize] + t[1][g as usize] + t[2][b as usize]
}
