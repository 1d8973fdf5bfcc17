//! CPU kernels for the layers that dominate a ResNet training step, as candle custom ops with
//! their own backward: convolution (im2col + gemm over chunks of images), BatchNorm fused with
//! ReLU, the stem's max-pool and the residual add + ReLU. Candle's generic CPU path spends most
//! of a step in `conv_transpose2d`, single-threaded elementwise ops and fresh allocations;
//! these do each layer in one or two passes. Other devices keep candle's own ops.
//!
//! Every reduction runs in a fixed order (per channel or per plane, chunks of images in
//! sequence, gemm never splitting its inner dimension), so results do not depend on the
//! number of threads.

pub(crate) mod conv;
mod gemm;
pub(crate) mod norm;
pub(crate) mod pointwise;
pub(crate) mod pool;
mod scratch;
#[cfg(test)]
mod tests;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Tensor, bail};

/// The f32 values a contiguous layout covers.
fn values<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{op}: f32 only, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// Runs `f` compiled for the widest vector extension of this CPU (AVX-512, AVX2 + FMA, ...),
/// chosen at run time. The build targets baseline x86-64, whose SSE2 holds 4 f32 or 2 f64 per
/// register; the elementwise kernels' loops (BatchNorm's f64 sums above all) vectorise 4× wider
/// on AVX-512. `f` and what it calls must be inlined into it (`#[inline(always)]`) to be
/// compiled that way.
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    // Detected once: `Arch::new` tests a dozen CPU features, as much as some calls' work.
    static ARCH: std::sync::LazyLock<pulp::Arch> = std::sync::LazyLock::new(pulp::Arch::new);
    ARCH.dispatch(f)
}

/// Whether the fast kernels apply: a CPU f32 tensor.
pub(crate) fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}
