//! `relu(a + b)`, the residual join, in one pass; its backward is one masking pass whose
//! result is the gradient of both summands.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{values, wide};

const CHUNK: usize = 1 << 14;

#[derive(Debug, Clone, Copy)]
struct AddRelu;

fn pair<'a>(
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
    op: &str,
) -> Result<(&'a [f32], &'a [f32])> {
    if l1.dims() != l2.dims() {
        bail!("{op}: shapes {:?} and {:?} differ", l1.dims(), l2.dims())
    }
    Ok((values(s1, l1, op)?, values(s2, l2, op)?))
}

/// `f` over two slices of one length, in parallel chunks.
fn map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            wide(
                #[inline(always)]
                || {
                    for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                        *o = f(x, y);
                    }
                },
            )
        });
    out
}

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "classm-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = pair(s1, l1, s2, l2, "add-relu")?;
        let out = map2(
            a,
            b,
            #[inline(always)]
            |x, y| (x + y).max(0.0),
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = relu_mask(res, grad)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// (relu output, dy) → dy where the output is positive.
#[derive(Debug, Clone, Copy)]
struct ReluMask;

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "classm-relu-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, g) = pair(s1, l1, s2, l2, "relu backward")?;
        let out = map2(
            y,
            g,
            #[inline(always)]
            |y, g| if y > 0.0 { g } else { 0.0 },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `relu(a + b)` for contiguous CPU f32 tensors of one shape.
pub(crate) fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}

/// `relu(a + b)` recorded in no graph.
pub(crate) fn add_relu_untracked(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &AddRelu)
}

/// The gradient of both summands of `relu(a + b)`: `grad` where the output `res` is positive.
pub(crate) fn relu_mask(res: &Tensor, grad: &Tensor) -> Result<Tensor> {
    res.apply_op2_no_bwd(&grad.contiguous()?, &ReluMask)
}
