//! The encoder's training forward on classm's CPU kernels, recorded on a tape of its own, and
//! a backward that walks the tape calling the kernels' backward functions directly.
//!
//! Candle's generic backward gives every intermediate tensor a gradient of zeros and then adds
//! each contribution to it: a memset and an add over every activation of the network, 5–8 %
//! of a CPU training step. Here each gradient is written once by the kernel that computes it,
//! and only a residual join adds two. The values are those of candle's backward bit for bit
//! (adding to zeros changes nothing, and a sum of two does not depend on their order).

use candle_core::{Tensor, Var};

use super::{BasicBlock, ResNet};
use crate::cpu;
use crate::error::Result;
use crate::layers::{ConvTape, NormTape};
use crate::pool::global_avg_pool;

/// Gradients of variables, as the tape's backward finds them.
pub(crate) type Grads = Vec<(Tensor, Tensor)>;

/// One training forward of an encoder, awaiting the gradient of its features.
#[derive(Debug)]
pub(crate) struct EncoderTape {
    /// The input, when it is a variable whose gradient is wanted.
    input: Option<Tensor>,
    conv1: ConvTape,
    bn1: NormTape,
    pool: (Tensor, Tensor),
    blocks: Vec<BlockTape>,
    /// The last block's output as a leaf, and the features pooled from it in candle's graph.
    last: Var,
    features: Tensor,
}

#[derive(Debug)]
struct BlockTape {
    conv1: ConvTape,
    bn1: NormTape,
    conv2: ConvTape,
    bn2: NormTape,
    downsample: Option<(ConvTape, NormTape)>,
    out: Tensor,
}

impl ResNet {
    /// Whether [`ResNet::forward_taped`] can stand in for a tracked training forward on `x`:
    /// classm's CPU kernels apply, and `x` is either a variable or outside any graph (the
    /// tape's backward cannot hand a gradient on to the ops that made `x`).
    pub(crate) fn tape_applies(&self, x: &Tensor) -> bool {
        self.kernels.fast(x) && (x.is_variable() || !x.track_op())
    }

    /// The training-mode forward of [`ModuleT::forward_t`](candle_core::ModuleT), updating
    /// the running statistics alike, with its tape. The features are `tape.features()`.
    pub(crate) fn forward_taped(&self, x: &Tensor) -> Result<EncoderTape> {
        let (y, conv1) = self.conv1.forward_taped(x)?;
        let (y, bn1) = self.bn1.forward_taped(&y, true)?;
        let pooled = cpu::pool::max_pool_3x3_s2_untracked(&y)?;
        let mut cur = pooled.clone();
        let mut blocks = Vec::with_capacity(self.stages.iter().map(Vec::len).sum());
        for block in self.stages.iter().flatten() {
            let tape = block.forward_taped(&cur)?;
            cur = tape.out.clone();
            blocks.push(tape);
        }
        let last = Var::from_tensor(&cur)?;
        let features = global_avg_pool(last.as_tensor())?;
        Ok(EncoderTape {
            input: x.is_variable().then(|| x.clone()),
            conv1,
            bn1,
            pool: (y, pooled),
            blocks,
            last,
            features,
        })
    }
}

impl BasicBlock {
    fn forward_taped(&self, x: &Tensor) -> Result<BlockTape> {
        let downsample = match &self.downsample {
            Some((c, b)) => {
                let (y, ct) = c.forward_taped(x)?;
                let (y, bt) = b.forward_taped(&y, false)?;
                Some((y, ct, bt))
            }
            None => None,
        };
        let (y, conv1) = self.conv1.forward_taped(x)?;
        let (y, bn1) = self.bn1.forward_taped(&y, true)?;
        let (y, conv2) = self.conv2.forward_taped(&y)?;
        let (y, bn2) = self.bn2.forward_taped(&y, false)?;
        let (identity, downsample) = match downsample {
            Some((y, ct, bt)) => (y, Some((ct, bt))),
            None => (x.clone(), None),
        };
        let out = cpu::pointwise::add_relu_untracked(&y, &identity)?;
        Ok(BlockTape {
            conv1,
            bn1,
            conv2,
            bn2,
            downsample,
            out,
        })
    }
}

impl BlockTape {
    /// The block input's gradient for output gradient `grad`.
    fn backward(&self, grad: &Tensor, out: &mut Grads) -> Result<Tensor> {
        // relu(bn2 + identity): one masked gradient for both summands.
        let g = cpu::pointwise::relu_mask(&self.out, grad)?;
        let d = self.bn2.backward(&g, out)?;
        let d = input_grad(self.conv2.backward(&d, true, out)?)?;
        let d = self.bn1.backward(&d, out)?;
        let dx = input_grad(self.conv1.backward(&d, true, out)?)?;
        let di = match &self.downsample {
            Some((c, b)) => {
                let d = b.backward(&g, out)?;
                input_grad(c.backward(&d, true, out)?)?
            }
            None => g,
        };
        Ok((dx + di)?)
    }
}

fn input_grad(dx: Option<Tensor>) -> Result<Tensor> {
    dx.ok_or_else(|| candle_core::Error::Msg("conv backward: no input gradient".into()).into())
}

impl EncoderTape {
    /// The pooled features `[N, C]`.
    pub fn features(&self) -> &Tensor {
        &self.features
    }

    /// The gradients of every parameter (and of the input, when it is a variable) for the
    /// features' gradient `grad`.
    pub fn backward(&self, grad: &Tensor) -> Result<Grads> {
        let mut out = Grads::new();
        // The pooling's backward in candle's graph, from the leaf, as a single backward
        // would run it.
        let pooled = (&self.features * grad)?.sum_all()?.backward()?;
        let Some(mut g) = pooled.get(self.last.as_tensor()).cloned() else {
            return Ok(out);
        };
        for block in self.blocks.iter().rev() {
            g = block.backward(&g, &mut out)?;
        }
        let g = cpu::pool::max_pool_backward(&self.pool.0, &self.pool.1, &g)?;
        let g = self.bn1.backward(&g, &mut out)?;
        let dx = self.conv1.backward(&g, self.input.is_some(), &mut out)?;
        if let (Some(x), Some(dx)) = (&self.input, dx) {
            out.push((x.clone(), dx));
        }
        Ok(out)
    }
}
