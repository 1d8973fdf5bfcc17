//! The stem's 3×3, stride-2, padding-1 max-pool as a composite of differentiable ops:
//! candle's `max_pool2d` has no backward unless kernel == stride.

use candle_core::{D, Tensor};

use crate::error::Result;
use crate::layers::Kernels;

/// Max over windows of 3 at stride 2 with one element of padding, along dimension `dim`.
/// Padding replicates the edge, which equals −∞ padding for a max: every window holds the
/// element it replicates.
fn max3_s2(x: &Tensor, dim: usize) -> Result<Tensor> {
    let n = x.dim(dim)?;
    let out = (n - 1) / 2 + 1;
    // Padded length 2·out + 2: one in front, the rest behind.
    let behind = 2 * out + 2 - (n + 1);
    let p = x.pad_with_same(dim, 1, behind)?;
    // Elements 2i and 2i+1 as pairs, and element 2i+2 as the first of the next pair.
    let mut split = p.dims().to_vec();
    split[dim] = out;
    split.insert(dim + 1, 2);
    let pairs = |start: usize| -> Result<Tensor> {
        Ok(p.narrow(dim, start, 2 * out)?.reshape(split.clone())?)
    };
    // Elementwise maxima only: their backward splits a tie, so an edge element and its
    // replicated copy share one gradient; a `max` reduction would give each the whole of it.
    let first = pairs(0)?;
    let pick =
        |t: &Tensor, k: usize| -> Result<Tensor> { Ok(t.narrow(dim + 1, k, 1)?.squeeze(dim + 1)?) };
    let a = pick(&first, 0)?.maximum(&pick(&first, 1)?)?;
    let b = pick(&pairs(2)?, 0)?;
    Ok(a.maximum(&b)?)
}

/// `MaxPool2d(3, stride 2, padding 1)` on `[N, C, H, W]`: classm's CPU kernel for CPU f32
/// tensors under [`Kernels::Auto`], else the composite.
pub fn max_pool_3x3_s2(x: &Tensor, k: Kernels) -> Result<Tensor> {
    if k == Kernels::Auto && crate::cpu::applies(x) {
        return Ok(crate::cpu::pool::max_pool_3x3_s2(x)?);
    }
    let rank = x.rank();
    let h = max3_s2(x, rank - 2)?;
    max3_s2(&h, rank - 1)
}

/// Global average pooling `[N, C, H, W]` → `[N, C]`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean(D::Minus1)?.mean(D::Minus1)?)
}
