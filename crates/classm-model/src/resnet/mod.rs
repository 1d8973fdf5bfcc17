//! A trainable ResNet (basic blocks: depth 18 or 34) with torchvision's parameter names, a
//! configurable width and input-channel count, and BatchNorm that updates its running
//! statistics in training mode.

use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::layers::{Conv, Kernels, Norm, add_relu};
use crate::pool::{global_avg_pool, max_pool_3x3_s2};

mod tape;

pub(crate) use tape::EncoderTape;

/// Shape of a ResNet encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// 18 or 34 (basic blocks).
    pub depth: usize,
    /// Channels of the stem and first stage (64 = torchvision; narrower for CPU presets).
    pub width: usize,
    /// Input channels (1 for an H or E map).
    pub in_channels: usize,
}

impl ResNetConfig {
    /// ResNet18 with one input channel (CLASS-M's encoders).
    pub fn resnet18() -> Self {
        ResNetConfig {
            depth: 18,
            width: 64,
            in_channels: 1,
        }
    }

    /// Blocks per stage.
    pub fn blocks(&self) -> Result<[usize; 4]> {
        match self.depth {
            18 => Ok([2, 2, 2, 2]),
            34 => Ok([3, 4, 6, 3]),
            d => Err(ModelError::Config(format!("ResNet depth {d}: 18 or 34"))),
        }
    }

    /// Length of the feature vector: 8 × width.
    pub fn features(&self) -> usize {
        8 * self.width
    }
}

#[derive(Debug, Clone)]
struct BasicBlock {
    conv1: Conv,
    bn1: Norm,
    conv2: Conv,
    bn2: Norm,
    downsample: Option<(Conv, Norm)>,
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let downsample = if stride != 1 || cin != cout {
            Some((
                Conv::new(cin, cout, 1, stride, 0, vb.pp("downsample.0"))?,
                Norm::new(cout, true, vb.pp("downsample.1"))?,
            ))
        } else {
            None
        };
        Ok(BasicBlock {
            conv1: Conv::new(cin, cout, 3, stride, 1, vb.pp("conv1"))?,
            bn1: Norm::new(cout, true, vb.pp("bn1"))?,
            conv2: Conv::new(cout, cout, 3, 1, 1, vb.pp("conv2"))?,
            bn2: Norm::new(cout, true, vb.pp("bn2"))?,
            downsample,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool, k: Kernels) -> Result<Tensor> {
        let identity = match &self.downsample {
            Some((c, b)) => b.forward_t(&c.forward(x, k)?, train, false, k)?,
            None => x.clone(),
        };
        let y = self.conv1.forward(x, k)?;
        let y = self.bn1.forward_t(&y, train, true, k)?;
        let y = self
            .bn2
            .forward_t(&self.conv2.forward(&y, k)?, train, false, k)?;
        add_relu(&y, &identity, k)
    }
}

/// A ResNet trunk: stem, four stages, global average pooling; no classification layer.
#[derive(Debug, Clone)]
pub struct ResNet {
    config: ResNetConfig,
    conv1: Conv,
    bn1: Norm,
    stages: Vec<Vec<BasicBlock>>,
    kernels: Kernels,
}

impl ResNet {
    /// Builds the trunk under `vb` with torchvision's names (`conv1`, `bn1`,
    /// `layer1.0.conv1`, `layer2.0.downsample.0`, ...).
    pub fn new(config: ResNetConfig, vb: VarBuilder) -> Result<Self> {
        if config.width == 0 || config.in_channels == 0 {
            return Err(ModelError::Config(format!(
                "{config:?}: width and channels must be ≥ 1"
            )));
        }
        let blocks = config.blocks()?;
        let w = config.width;
        let mut cin = w;
        let mut stages = Vec::with_capacity(4);
        for (i, &n) in blocks.iter().enumerate() {
            let cout = w << i;
            let vs = vb.pp(format!("layer{}", i + 1));
            let mut stage = Vec::with_capacity(n);
            for b in 0..n {
                let stride = if i > 0 && b == 0 { 2 } else { 1 };
                stage.push(BasicBlock::new(
                    if b == 0 { cin } else { cout },
                    cout,
                    stride,
                    vs.pp(b.to_string()),
                )?);
            }
            stages.push(stage);
            cin = cout;
        }
        Ok(ResNet {
            config,
            conv1: Conv::new(config.in_channels, w, 7, 2, 3, vb.pp("conv1"))?,
            bn1: Norm::new(w, true, vb.pp("bn1"))?,
            stages,
            kernels: Kernels::Auto,
        })
    }

    /// The configuration.
    pub fn config(&self) -> ResNetConfig {
        self.config
    }

    /// Chooses the layer implementations (default [`Kernels::Auto`]).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }
}

impl ModuleT for ResNet {
    /// `[N, in_channels, H, W]` → features `[N, 8·width]`. In training mode BatchNorm uses and
    /// updates batch statistics.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let run = || -> Result<Tensor> {
            let k = self.kernels;
            let y = self
                .bn1
                .forward_t(&self.conv1.forward(x, k)?, train, true, k)?;
            let mut y = max_pool_3x3_s2(&y, k)?;
            for stage in &self.stages {
                for block in stage {
                    y = block.forward_t(&y, train, k)?;
                }
            }
            global_avg_pool(&y)
        };
        run().map_err(|e| match e {
            ModelError::Tensor(t) => t,
            other => candle_core::Error::Msg(other.to_string()),
        })
    }
}
