//! The layers a ResNet is built from, each running classm's CPU kernels on CPU f32 tensors
//! (see [`crate::cpu`]) and candle's own ops elsewhere or when asked to.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor, Var};
use candle_nn::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, Module, ModuleT, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::cpu;
use crate::error::Result;

/// Which implementation the convolution, BatchNorm, pooling and residual layers use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kernels {
    /// classm's CPU kernels for CPU f32 tensors, candle's ops on other devices.
    #[default]
    Auto,
    /// candle's ops everywhere (slower on the CPU; the reference the kernels are tested against).
    Candle,
}

impl Kernels {
    /// Whether classm's CPU kernels run on `x`.
    pub(crate) fn fast(self, x: &Tensor) -> bool {
        self == Kernels::Auto && cpu::applies(x)
    }
}

/// A bias-free convolution (every convolution of a ResNet).
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    inner: Conv2d,
}

impl Conv {
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding,
            stride,
            ..Default::default()
        };
        Ok(Conv {
            inner: candle_nn::conv2d_no_bias(cin, cout, k, cfg, vb)?,
        })
    }

    pub fn forward(&self, x: &Tensor, k: Kernels) -> Result<Tensor> {
        if k.fast(x) {
            let c = self.inner.config();
            Ok(cpu::conv::conv2d(
                x,
                self.inner.weight(),
                c.stride,
                c.padding,
            )?)
        } else {
            Ok(self.inner.forward(x)?)
        }
    }

    /// The forward on a CPU f32 tensor recorded in no graph, and what its backward needs.
    pub fn forward_taped(&self, x: &Tensor) -> Result<(Tensor, ConvTape)> {
        let c = self.inner.config();
        let w = self.inner.weight().clone();
        let x = x.contiguous()?;
        let y = cpu::conv::conv2d_untracked(&x, &w, c.stride, c.padding)?;
        Ok((
            y,
            ConvTape {
                x,
                w,
                stride: c.stride,
                pad: c.padding,
            },
        ))
    }
}

/// What the backward of an untracked convolution needs.
#[derive(Debug)]
pub(crate) struct ConvTape {
    x: Tensor,
    w: Tensor,
    stride: usize,
    pad: usize,
}

impl ConvTape {
    /// The input gradient (when `need_dx`) for output gradient `grad`; the weight's goes to
    /// `out`.
    pub fn backward(
        &self,
        grad: &Tensor,
        need_dx: bool,
        out: &mut Vec<(Tensor, Tensor)>,
    ) -> Result<Option<Tensor>> {
        let (dx, dw) =
            cpu::conv::conv2d_backward(&self.x, &self.w, grad, self.stride, self.pad, need_dx)?;
        out.push((self.w.clone(), dw));
        Ok(dx)
    }
}

/// BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1), affine or not, optionally
/// followed by a ReLU.
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    inner: BatchNorm,
}

impl Norm {
    pub fn new(c: usize, affine: bool, vb: VarBuilder) -> Result<Self> {
        let cfg = BatchNormConfig {
            eps: 1e-5,
            remove_mean: true,
            affine,
            momentum: 0.1,
        };
        Ok(Norm {
            inner: candle_nn::batch_norm(c, cfg, vb)?,
        })
    }

    /// In training mode normalises with the batch statistics and updates the running ones.
    pub fn forward_t(&self, x: &Tensor, train: bool, relu: bool, k: Kernels) -> Result<Tensor> {
        if !k.fast(x) {
            let y = self.inner.forward_t(x, train)?;
            return Ok(if relu { y.relu()? } else { y });
        }
        let x = x.contiguous()?;
        let (gamma, beta, op) = self.op(&x, train, relu)?;
        let saved = op.saved.clone();
        let y = x.apply_op3(&gamma, &beta, op)?;
        if train {
            self.record(&saved, &x)?;
        }
        Ok(y)
    }

    /// The training-mode forward on a CPU f32 tensor recorded in no graph, and what its
    /// backward needs.
    pub fn forward_taped(&self, x: &Tensor, relu: bool) -> Result<(Tensor, NormTape)> {
        let x = x.contiguous()?;
        let (gamma, beta, op) = self.op(&x, true, relu)?;
        let y = x.apply_op3_no_bwd(&gamma, &beta, &op)?;
        self.record(&op.saved, &x)?;
        let params = self
            .inner
            .weight_and_bias()
            .map(|(w, b)| (w.clone(), b.clone()));
        Ok((y, NormTape { op, x, params }))
    }

    /// Gamma and beta (ones and zeros when not affine) and the kernel op for `x`: batch
    /// statistics when `train`, else the running ones.
    fn op(
        &self,
        x: &Tensor,
        train: bool,
        relu: bool,
    ) -> Result<(Tensor, Tensor, cpu::norm::BatchNorm)> {
        let c = x.dim(1)?;
        let (gamma, beta) = match self.inner.weight_and_bias() {
            Some((w, b)) => (w.clone(), b.clone()),
            None => (
                Tensor::ones(c, DType::F32, x.device())?,
                Tensor::zeros(c, DType::F32, x.device())?,
            ),
        };
        let running = if train {
            None
        } else {
            Some((
                self.inner.running_mean().to_vec1::<f32>()?,
                self.inner.running_var().to_vec1::<f32>()?,
            ))
        };
        let op = cpu::norm::BatchNorm {
            eps: self.inner.eps(),
            relu,
            running,
            saved: Arc::new(Mutex::new(None)),
        };
        Ok((gamma, beta, op))
    }

    /// Updates the running statistics from the batch statistics a training forward on `x`
    /// saved.
    fn record(&self, saved: &Mutex<Option<cpu::norm::Saved>>, x: &Tensor) -> Result<()> {
        let stats = saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("batch-norm state poisoned".into()))?
            .clone();
        if let Some(s) = stats {
            self.update_running(&s.mean, &s.var, x.elem_count() / x.dim(1)?)?;
        }
        Ok(())
    }

    /// PyTorch's update: momentum-weighted, with the unbiased batch variance.
    fn update_running(&self, mean: &[f32], var: &[f32], count: usize) -> Result<()> {
        let m = self.inner.momentum();
        let unbias = count as f64 / (count as f64 - 1.0);
        let blend = |running: &Tensor, batch: &[f32], scale: f64| -> Result<()> {
            let old = running.to_vec1::<f32>()?;
            let new: Vec<f32> = old
                .iter()
                .zip(batch)
                .map(|(&r, &b)| ((1.0 - m) * r as f64 + m * scale * b as f64) as f32)
                .collect();
            Var::from_tensor(running)?.set(&Tensor::from_vec(new, old.len(), running.device())?)?;
            Ok(())
        };
        blend(self.inner.running_mean(), mean, 1.0)?;
        blend(self.inner.running_var(), var, unbias)
    }
}

/// What the backward of an untracked BatchNorm forward needs.
#[derive(Debug)]
pub(crate) struct NormTape {
    op: cpu::norm::BatchNorm,
    x: Tensor,
    /// Gamma and beta, when affine.
    params: Option<(Tensor, Tensor)>,
}

impl NormTape {
    /// The input gradient for output gradient `grad`; gamma's and beta's go to `out`.
    pub fn backward(&self, grad: &Tensor, out: &mut Vec<(Tensor, Tensor)>) -> Result<Tensor> {
        let (dx, dgamma, dbeta) = self.op.backward(&self.x, grad)?;
        if let Some((gamma, beta)) = &self.params {
            out.push((gamma.clone(), dgamma));
            out.push((beta.clone(), dbeta));
        }
        Ok(dx)
    }
}

/// `relu(a + b)`.
pub(crate) fn add_relu(a: &Tensor, b: &Tensor, k: Kernels) -> Result<Tensor> {
    if k.fast(a) {
        Ok(cpu::pointwise::add_relu(a, b)?)
    } else {
        Ok((a + b)?.relu()?)
    }
}
