//! `MaxPool2d(3, stride 2, padding 1)`, per plane; the backward routes each output's gradient
//! to the first maximum of its window in row-major order, as PyTorch does.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::values;

struct Plane {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
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

/// Flat index within the plane of the first maximum of output (oy, ox)'s window.
fn argmax(src: &[f32], p: &Plane, oy: usize, ox: usize) -> usize {
    let (y0, x0) = ((2 * oy).saturating_sub(1), (2 * ox).saturating_sub(1));
    let (y1, x1) = ((2 * oy + 2).min(p.h), (2 * ox + 2).min(p.w));
    let mut best = y0 * p.w + x0;
    for y in y0..y1 {
        for x in x0..x1 {
            let v = src[y * p.w + x];
            if v > src[best] || v.is_nan() {
                best = y * p.w + x;
                if v.is_nan() {
                    return best;
                }
            }
        }
    }
    best
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
        out.par_chunks_mut(p.ho * p.wo)
            .enumerate()
            .for_each(|(i, o)| {
                let src = &x[i * p.h * p.w..(i + 1) * p.h * p.w];
                for oy in 0..p.ho {
                    for ox in 0..p.wo {
                        o[oy * p.wo + ox] = src[argmax(src, &p, oy, ox)];
                    }
                }
            });
        let d = l.dims();
        Ok((CpuStorage::F32(out), Shape::from((d[0], d[1], p.ho, p.wo))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&grad.contiguous()?, &MaxPoolBackward)?,
        ))
    }
}

#[derive(Debug, Clone, Copy)]
struct MaxPoolBackward;

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "classm-max-pool-3x3-s2-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (planes, p) = plane(l1)?;
        let (x, dy) = (values(s1, l1, "max-pool")?, values(s2, l2, "max-pool")?);
        if dy.len() != planes * p.ho * p.wo {
            bail!(
                "max-pool backward: gradient {:?} for input {:?}",
                l2.dims(),
                l1.dims()
            )
        }
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(p.h * p.w).enumerate().for_each(|(i, d)| {
            let src = &x[i * p.h * p.w..(i + 1) * p.h * p.w];
            let g = &dy[i * p.ho * p.wo..(i + 1) * p.ho * p.wo];
            for oy in 0..p.ho {
                for ox in 0..p.wo {
                    d[argmax(src, &p, oy, ox)] += g[oy * p.wo + ox];
                }
            }
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// The pool on a contiguous CPU f32 tensor.
pub(crate) fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool)
}
