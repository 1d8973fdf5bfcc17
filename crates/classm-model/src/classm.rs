//! The CLASS-M network (classm-method.md §4): two encoders, a linear classifier on the mean of
//! their features, and an affine-free BatchNorm1d per encoder for the contrastive features.

use candle_core::{ModuleT, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::layers::{Kernels, Norm};
use crate::resnet::{ResNet, ResNetConfig};

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
        let fh = self.h.forward_t(h, train)?;
        let fe = self.e.forward_t(e, train)?;
        let logits = self.fc.forward(&((&fh + &fe)? * 0.5)?)?;
        Ok(ClassmOutput {
            logits,
            z_h: self.bn_h.forward_t(&fh, train, false, self.kernels)?,
            z_e: self.bn_e.forward_t(&fe, train, false, self.kernels)?,
        })
    }
}
