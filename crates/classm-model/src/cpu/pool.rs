//! `MaxPool2d(3, stride 2, padding 1)`, per plane; the backward routes each output's gradient
//! to the first maximum of its window in row-major order, as PyTorch does.
//!
//! The forward is separable (a max over 3 columns, then over 3 rows) with a maximum that keeps
//! the earlier element on ties and the first NaN, which gives exactly the row-major scan's
//! value, bits of a signed zero included. The backward gets that output and finds the first
//! window element equal to it, checking the whole window with selects rather than branching
//! on the data.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{values, wide};

struct Plane {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

impl Plane {
    /// Output `o`'s window along an axis of length `n`: `[2o − 1, 2o + 2)` clipped.
    fn window(o: usize, n: usize) -> std::ops::Range<usize> {
        (2 * o).saturating_sub(1)..(2 * o + 2).min(n)
    }
}

fn plane(l: &Layout) -> Result<(usize, Plane)> {
    let &[n, c, h, w] = l.dims() else {
        bail!("max-pool: input {:?} must be [N, C, H, W]", l.dims())
    };
    if h == 0 || w == 0 {
        bail!("max-pool: empty plane {h}×{w}")
    }
    Ok((
        n * c,
        Plane {
            h,
            w,
            ho: (h - 1) / 2 + 1,
            wo: (w - 1) / 2 + 1,
        },
    ))
}

/// The larger of an earlier `a` and a later `b`: `a` on ties, and the first NaN.
#[inline(always)]
fn first_max(a: f32, b: f32) -> f32 {
    // Non-short-circuit operators: a select the compiler can vectorise, not a branch that
    // mispredicts on every other element of a ReLU map.
    if (b > a) | (b.is_nan() & !a.is_nan()) {
        b
    } else {
        a
    }
}

/// One row's maxima over windows of 3 at stride 2 with one element of padding.
#[inline(always)]
fn row_max(src: &[f32], dst: &mut [f32]) {
    let n = src.len();
    dst[0] = if n > 1 {
        first_max(src[0], src[1])
    } else {
        src[0]
    };
    // Outputs 1..=full have all three window elements 2o − 1, 2o, 2o + 1 inside the row; 2o ≤
    // n − 1 for every output, so only the last one's third element can fall outside.
    let full = n.saturating_sub(2) / 2;
    let s = &src[..(2 * full + 2).min(n)];
    for (k, d) in dst[1..=full].iter_mut().enumerate() {
        let i = 2 * k + 1;
        *d = first_max(first_max(s[i], s[i + 1]), s[i + 2]);
    }
    for (o, d) in dst.iter_mut().enumerate().skip(full + 1) {
        *d = first_max(src[2 * o - 1], src[2 * o]);
    }
}

/// One plane's pool: row maxima of every input row into `rows` (h × wo), then the maxima of
/// each output's 2 or 3 rows, earlier rows first.
#[inline(always)]
fn pool_plane(src: &[f32], p: &Plane, rows: &mut [f32], out: &mut [f32]) {
    for (s, r) in src.chunks_exact(p.w).zip(rows.chunks_exact_mut(p.wo)) {
        row_max(s, r);
    }
    for (oy, o) in out.chunks_exact_mut(p.wo).enumerate() {
        let ys = Plane::window(oy, p.h);
        o.copy_from_slice(&rows[ys.start * p.wo..(ys.start + 1) * p.wo]);
        for y in ys.start + 1..ys.end {
            for (d, &v) in o.iter_mut().zip(&rows[y * p.wo..(y + 1) * p.wo]) {
                *d = first_max(*d, v);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct MaxPool;

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "classm-max-pool-3x3-s2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (planes, p) = plane(l)?;
        let x = values(s, l, "max-pool")?;
        let mut out = vec![0f32; planes * p.ho * p.wo];
        out.par_chunks_mut(p.ho * p.wo).enumerate().for_each_init(
            || vec![0f32; p.h * p.wo],
            |rows, (i, o)| {
                wide(
                    #[inline(always)]
                    || pool_plane(&x[i * p.h * p.w..(i + 1) * p.h * p.w], &p, rows, o),
                )
            },
        );
        let d = l.dims();
        Ok((CpuStorage::F32(out), Shape::from((d[0], d[1], p.ho, p.wo))))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(max_pool_backward(x, res, grad)?))
    }
}

/// Flat index within the plane of the first element of output (oy, ox)'s window (rows `ys`)
/// that equals its maximum `m` (or is NaN: a window holding a NaN has the first NaN as its
/// maximum); `usize::MAX` when there is none.
#[inline(always)]
fn first_at_max(src: &[f32], p: &Plane, ys: std::ops::Range<usize>, ox: usize, m: f32) -> usize {
    // The whole window, last element first, with selects rather than an early exit: which
    // element holds the maximum is data, and a branch on it mispredicts.
    let xs = Plane::window(ox, p.w);
    let mut at = usize::MAX;
    for y in ys.rev() {
        let row = &src[y * p.w..(y + 1) * p.w];
        for x in xs.clone().rev() {
            let v = row[x];
            at = if (v == m) | v.is_nan() {
                y * p.w + x
            } else {
                at
            };
        }
    }
    at
}

/// [`first_at_max`] for a whole 3×3 window whose top-left element is (y0, x0): a fixed
/// shape the compiler unrolls (the backward of a 16×64×48×48 map: 11.3 ms with the general
/// scan alone, 9 ms with this for the interior windows).
#[inline(always)]
fn first_at_max3(src: &[f32], w: usize, y0: usize, x0: usize, m: f32) -> usize {
    let mut at = usize::MAX;
    for dy in (0..3).rev() {
        let base = (y0 + dy) * w + x0;
        let row = &src[base..base + 3];
        for dx in (0..3).rev() {
            let v = row[dx];
            at = if (v == m) | v.is_nan() { base + dx } else { at };
        }
    }
    at
}

#[derive(Debug, Clone, Copy)]
struct MaxPoolBackward;

impl CustomOp3 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "classm-max-pool-3x3-s2-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (planes, p) = plane(l1)?;
        let x = values(s1, l1, "max-pool")?;
        let (y, dy) = (values(s2, l2, "max-pool")?, values(s3, l3, "max-pool")?);
        let outputs = planes * p.ho * p.wo;
        if y.len() != outputs || dy.len() != outputs {
            bail!(
                "max-pool backward: output {:?} and gradient {:?} for input {:?}",
                l2.dims(),
                l3.dims(),
                l1.dims()
            )
        }
        let mut dx = vec![0f32; x.len()];
        let per = p.ho * p.wo;
        dx.par_chunks_mut(p.h * p.w)
            .enumerate()
            .try_for_each(|(i, d)| -> Result<()> {
                let src = &x[i * p.h * p.w..(i + 1) * p.h * p.w];
                let (m, g) = (&y[i * per..(i + 1) * per], &dy[i * per..(i + 1) * per]);
                for oy in 0..p.ho {
                    let ys = Plane::window(oy, p.h);
                    for ox in 0..p.wo {
                        let k = oy * p.wo + ox;
                        let xs = Plane::window(ox, p.w);
                        let at = if ys.len() == 3 && xs.len() == 3 {
                            first_at_max3(src, p.w, ys.start, xs.start, m[k])
                        } else {
                            first_at_max(src, &p, ys.clone(), ox, m[k])
                        };
                        let Some(d) = d.get_mut(at) else {
                            bail!("max-pool backward: output {k} of plane {i} is not its window's maximum")
                        };
                        *d += g[k];
                    }
                }
                Ok(())
            })?;
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// The pool on a contiguous CPU f32 tensor.
pub(crate) fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool)
}

/// The pool recorded in no graph.
pub(crate) fn max_pool_3x3_s2_untracked(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&MaxPool)
}

/// The input gradient of the pool of `x`, whose output was `res`.
pub(crate) fn max_pool_backward(x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Tensor> {
    x.apply_op3_no_bwd(res, &grad.contiguous()?, &MaxPoolBackward)
}
