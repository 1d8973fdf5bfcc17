//! The mathematics between passes: PCA of the OD moments, angle quantiles, vector ordering.

use nalgebra::{Matrix3, SymmetricEigen};

use crate::od::FIXED_SCALE;

/// Bins of the angle histogram: 2^16 bins put the quantisation of the angle below 0.007° on
/// the full circle, far inside every tolerance.
pub(crate) const ANGLE_BINS: usize = 1 << 16;

/// Bins of each concentration histogram. Smaller, so that both stay in cache: with linear
/// interpolation inside a bin the 99th percentile is still within 1e-4 relative.
pub(crate) const CONC_BINS: usize = 1 << 14;

/// Ruifrok & Johnston hematoxylin direction (normalised at use).
pub const RUIFROK_H: [f64; 3] = [0.65, 0.70, 0.29];
/// Ruifrok & Johnston eosin direction (normalised at use).
pub const RUIFROK_E: [f64; 3] = [0.07, 0.99, 0.11];

/// Exact integer first and second moments of fixed-point OD vectors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Moments {
    pub n: u64,
    pub s: [i128; 3],
    /// rr, rg, rb, gg, gb, bb
    pub ss: [i128; 6],
}

/// Pixels whose partial sums are exact in an `f64`: with |OD| < 2^4 and 2^16 fixed-point steps
/// one product is below 2^40, and 2^12 of them below 2^52 < 2^53.
pub(crate) const FLUSH: u32 = 1 << 12;

impl Moments {
    /// Adds a block of partial sums (Σr, Σg, Σb, Σrr, Σrg, Σrb, Σgg, Σgb, Σbb) over `n` pixels.
    pub fn add_block(&mut self, n: u64, p: [f64; 9]) {
        self.n += n;
        for (s, v) in self.s.iter_mut().chain(self.ss.iter_mut()).zip(p) {
            // Integer-valued and below 2^53: the conversion is exact.
            *s += i128::from(v as i64);
        }
    }

    pub fn merge(&mut self, o: &Moments) {
        self.n += o.n;
        for i in 0..3 {
            self.s[i] += o.s[i];
        }
        for i in 0..6 {
            self.ss[i] += o.ss[i];
        }
    }

    /// Population covariance (÷N), computed from exact integer numerators `N·Σxy − Σx·Σy` so a
    /// constant colour gives exactly zero.
    pub fn covariance(&self) -> Matrix3<f64> {
        let n = self.n as i128;
        let idx = [[0, 1, 2], [1, 3, 4], [2, 4, 5]];
        let mut c = Matrix3::zeros();
        let scale = FIXED_SCALE * FIXED_SCALE * (self.n as f64) * (self.n as f64);
        for i in 0..3 {
            for j in 0..3 {
                // N·Σxy − Σx·Σy can exceed i128 only beyond ~10^14 pixels; saturate instead.
                let num = n
                    .checked_mul(self.ss[idx[i][j]])
                    .and_then(|a| {
                        self.s[i]
                            .checked_mul(self.s[j])
                            .and_then(|b| a.checked_sub(b))
                    })
                    .map(|v| v as f64)
                    .unwrap_or_else(|| {
                        let nf = self.n as f64;
                        nf * self.ss[idx[i][j]] as f64 - self.s[i] as f64 * self.s[j] as f64
                    });
                c[(i, j)] = num / scale;
            }
        }
        c
    }
}

/// The fitted stain plane: eigenvectors v1, v2, v3 (columns), eigenvalues descending.
#[derive(Debug, Clone)]
pub(crate) struct Plane {
    pub eigenvalues: [f64; 3],
    pub v: [[f64; 3]; 3],
}

pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(crate) fn normalize(a: [f64; 3]) -> [f64; 3] {
    let n = dot(a, a).sqrt();
    if n > 0.0 {
        [a[0] / n, a[1] / n, a[2] / n]
    } else {
        a
    }
}

pub(crate) fn angle_deg(a: [f64; 3], b: [f64; 3]) -> f64 {
    let c = dot(normalize(a), normalize(b)).clamp(-1.0, 1.0);
    c.acos().to_degrees()
}

impl Plane {
    /// PCA with the CLASS-M sign rules: v1[R] ≥ 0, v2[R] ≤ 0, (v1 × v2)·v3 ≥ 0.
    pub fn from_covariance(cov: Matrix3<f64>) -> Plane {
        let eig = SymmetricEigen::new(cov);
        let mut order = [0usize, 1, 2];
        order.sort_by(|&a, &b| {
            eig.eigenvalues[b]
                .partial_cmp(&eig.eigenvalues[a])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let col = |i: usize| {
            let c = eig.eigenvectors.column(order[i]);
            normalize([c[0], c[1], c[2]])
        };
        let mut v1 = col(0);
        let mut v2 = col(1);
        let mut v3 = col(2);
        if v1[0] < 0.0 {
            v1 = v1.map(|x| -x);
        }
        if v2[0] > 0.0 {
            v2 = v2.map(|x| -x);
        }
        if dot(cross(v1, v2), v3) < 0.0 {
            v3 = v3.map(|x| -x);
        }
        Plane {
            eigenvalues: [
                eig.eigenvalues[order[0]].max(0.0),
                eig.eigenvalues[order[1]].max(0.0),
                eig.eigenvalues[order[2]].max(0.0),
            ],
            v: [v1, v2, v3],
        }
    }

    /// Unit vector at angle θ (radians) in the oriented (v1, v2) plane.
    pub fn direction(&self, theta: f64) -> [f64; 3] {
        let (s, c) = theta.sin_cos();
        let [v1, v2, _] = self.v;
        normalize([
            c * v1[0] + s * v2[0],
            c * v1[1] + s * v2[1],
            c * v1[2] + s * v2[2],
        ])
    }
}

/// A monotone stand-in for `atan2(y, x)` on (−2, 2] that needs one division: sorting by it
/// sorts by angle, and [`pseudo_to_angle`] inverts it exactly.
#[inline(always)]
pub(crate) fn pseudo_angle(x: f32, y: f32) -> f32 {
    let s = x.abs() + y.abs();
    let d = if s > 0.0 { y / s } else { 0.0 };
    if x >= 0.0 {
        d
    } else if y >= 0.0 {
        2.0 - d
    } else {
        -2.0 - d
    }
}

pub(crate) fn pseudo_to_angle(p: f64) -> f64 {
    if (-1.0..=1.0).contains(&p) {
        p.atan2(1.0 - p.abs())
    } else if p > 1.0 {
        let d = 2.0 - p;
        d.atan2(-(1.0 - d.abs()))
    } else {
        let d = -2.0 - p;
        d.atan2(-(1.0 - d.abs()))
    }
}

/// Bin of a value in `[lo, hi)` with `bins` bins (clamped to the ends).
#[inline(always)]
pub(crate) fn bin_of(v: f32, lo: f32, inv_width: f32, bins: usize) -> usize {
    let b = ((v - lo) * inv_width) as i64;
    b.clamp(0, bins as i64 - 1) as usize
}

/// The `q` quantile (0..=1) of histogrammed values, `numpy`'s linear rule on the ranks, with
/// the members of a bin spread evenly across it.
pub(crate) fn hist_quantile(bins: &[u64], lo: f64, hi: f64, q: f64) -> Option<f64> {
    let n: u64 = bins.iter().sum();
    if n == 0 {
        return None;
    }
    let width = (hi - lo) / bins.len() as f64;
    let pos = |rank: u64| -> f64 {
        // value of the rank-th smallest (0-based) member
        let mut cum = 0u64;
        for (i, &c) in bins.iter().enumerate() {
            if c > 0 && rank < cum + c {
                let f = ((rank - cum) as f64 + 0.5) / c as f64;
                return lo + (i as f64 + f) * width;
            }
            cum += c;
        }
        hi
    };
    let h = (n - 1) as f64 * q;
    let k = h.floor() as u64;
    let frac = h - k as f64;
    let a = pos(k);
    if frac == 0.0 || k + 1 >= n {
        Some(a)
    } else {
        Some(a + frac * (pos(k + 1) - a))
    }
}
