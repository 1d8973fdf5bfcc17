//! The CLASS-M network (classm-method.md §4): two encoders, a linear classifier on the mean of
//! their features, and an affine-free BatchNorm1d per encoder for the contrastive features.

use candle_core::backprop::GradStore;
use candle_core::{Device, ModuleT, Tensor, Var};
use candle_nn::{Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::layers::{Kernels, Norm};
use crate::resnet::{EncoderTape, ResNet, ResNetConfig};

/// Shape of the CLASS-M network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassmConfig {
    /// Each encoder (both alike).
    pub encoder: ResNetConfig,
    /// Classes.
    pub classes: usize,
}

/// What one forward pass returns.
#[derive(Debug, Clone)]
pub struct ClassmOutput {
    /// `[N, classes]`.
    pub logits: Tensor,
    /// Contrastive features of the H encoder, `[N, 8·width]`, after its BatchNorm1d.
    pub z_h: Tensor,
    /// Contrastive features of the E encoder.
    pub z_e: Tensor,
}

/// H and E encoders (`h.*`, `e.*`), classifier `fc`, contrastive BatchNorms `bn_h`, `bn_e`.
/// The RGB-views ablation is the same network fed two RGB channels.
#[derive(Debug, Clone)]
pub struct ClassmNet {
    config: ClassmConfig,
    h: ResNet,
    e: ResNet,
    fc: Linear,
    bn_h: Norm,
    bn_e: Norm,
    kernels: Kernels,
}

impl ClassmNet {
    /// Builds the network under `vb`.
    pub fn new(config: ClassmConfig, vb: VarBuilder) -> Result<Self> {
        let f = config.encoder.features();
        let bn = |vb: VarBuilder| Norm::new(f, false, vb);
        Ok(ClassmNet {
            config,
            h: ResNet::new(config.encoder, vb.pp("h"))?,
            e: ResNet::new(config.encoder, vb.pp("e"))?,
            fc: candle_nn::linear(f, config.classes, vb.pp("fc"))?,
            bn_h: bn(vb.pp("bn_h"))?,
            bn_e: bn(vb.pp("bn_e"))?,
            kernels: Kernels::Auto,
        })
    }

    /// The configuration.
    pub fn config(&self) -> ClassmConfig {
        self.config
    }

    /// Chooses the layer implementations of both encoders and heads (default
    /// [`Kernels::Auto`]).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.h = self.h.with_kernels(kernels);
        self.e = self.e.with_kernels(kernels);
        self.kernels = kernels;
        self
    }

    /// Logits and contrastive features of a batch of H and E maps `[N, 1, S, S]` each.
    pub fn forward_t(&self, h: &Tensor, e: &Tensor, train: bool) -> Result<ClassmOutput> {
        let (fh, fe) = self.encode(h, e, train)?;
        self.heads(&fh, &fe, train)
    }

    /// A train-mode forward whose [`TrainForward::backward`] runs the two encoders' backward
    /// passes concurrently on the CPU. The gradients are the same, bit for bit, as those of
    /// `forward_t(h, e, true)` and one `loss.backward()`.
    pub fn forward_train(&self, h: &Tensor, e: &Tensor) -> Result<TrainForward> {
        let (ph, pe) = if self.h.tape_applies(h) && self.e.tape_applies(e) {
            let (th, te) = both(h, || self.h.forward_taped(h), || self.e.forward_taped(e));
            (EncoderPass::Tape(th?), EncoderPass::Tape(te?))
        } else {
            let (fh, fe) = self.encode(h, e, true)?;
            (EncoderPass::Graph(fh), EncoderPass::Graph(fe))
        };
        // The heads start from copies of the features that are leaves of their own graph, so
        // that one backward reaches the features and stops, and each encoder's own backward
        // can then run on its own thread.
        let (vh, ve) = (
            Var::from_tensor(&ph.features().detach())?,
            Var::from_tensor(&pe.features().detach())?,
        );
        let out = self.heads(vh.as_tensor(), ve.as_tensor(), true)?;
        Ok(TrainForward {
            out,
            encoders: [(ph, vh), (pe, ve)],
        })
    }

    /// Both encoders' pooled features; on the CPU the two run concurrently, so that one
    /// encoder's serial stretches (candle's own ops, allocation) overlap the other's work.
    fn encode(&self, h: &Tensor, e: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let (fh, fe) = both(
            h,
            || self.h.forward_t(h, train),
            || self.e.forward_t(e, train),
        );
        Ok((fh?, fe?))
    }

    fn heads(&self, fh: &Tensor, fe: &Tensor, train: bool) -> Result<ClassmOutput> {
        let logits = self.fc.forward(&((fh + fe)? * 0.5)?)?;
        Ok(ClassmOutput {
            logits,
            z_h: self.bn_h.forward_t(fh, train, false, self.kernels)?,
            z_e: self.bn_e.forward_t(fe, train, false, self.kernels)?,
        })
    }
}

/// `(a(), b())`, the two at once when `on` lives on the CPU and rayon has more than one
/// thread: a GPU queues the kernels of both on one stream anyway.
fn both<A: Send, B: Send>(
    on: &Tensor,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if matches!(on.device(), Device::Cpu) && rayon::current_num_threads() > 1 {
        rayon::join(a, b)
    } else {
        (a(), b())
    }
}

/// One encoder's training forward: in candle's graph, or on classm's own tape (CPU kernels).
#[derive(Debug)]
enum EncoderPass {
    Graph(Tensor),
    Tape(EncoderTape),
}

/// An encoder's gradients, from either kind of pass.
enum EncoderGrads {
    Graph(GradStore),
    Tape(Vec<(Tensor, Tensor)>),
}

impl EncoderPass {
    fn features(&self) -> &Tensor {
        match self {
            EncoderPass::Graph(f) => f,
            EncoderPass::Tape(t) => t.features(),
        }
    }

    fn backward(&self, grad: &Tensor) -> Result<EncoderGrads> {
        Ok(match self {
            // Σ f·g has gradient g with respect to f exactly (1·g), so the encoder receives
            // the very values a single backward would have passed it.
            EncoderPass::Graph(f) => EncoderGrads::Graph((f * grad)?.sum_all()?.backward()?),
            EncoderPass::Tape(t) => EncoderGrads::Tape(t.backward(grad)?),
        })
    }
}

/// A train-mode forward pass ([`ClassmNet::forward_train`]) awaiting its loss.
#[derive(Debug)]
pub struct TrainForward {
    /// Logits and contrastive features, as [`ClassmNet::forward_t`] returns them.
    pub out: ClassmOutput,
    /// Each encoder's pass and the leaf the heads were built on.
    encoders: [(EncoderPass, Var); 2],
}

impl TrainForward {
    /// The gradients of `loss`, a scalar computed from [`TrainForward::out`], with respect to
    /// every variable of the network: the heads' first, then both encoders', each encoder's
    /// backward started from its features' gradient.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        let mut grads = loss.backward()?;
        let seeds = self
            .encoders
            .each_ref()
            .map(|(pass, leaf)| grads.remove(leaf.as_tensor()).map(|g| (pass, g)));
        let encoder = |seed: &Option<(&EncoderPass, Tensor)>| -> Result<Option<EncoderGrads>> {
            seed.as_ref().map(|(pass, g)| pass.backward(g)).transpose()
        };
        let (a, b) = both(loss, || encoder(&seeds[0]), || encoder(&seeds[1]));
        for part in [a?, b?].into_iter().flatten() {
            match part {
                EncoderGrads::Graph(store) => grads.extend(store)?,
                EncoderGrads::Tape(list) => {
                    for (var, g) in list {
                        grads.insert(&var, g);
                    }
                }
            }
        }
        Ok(grads)
    }
}
