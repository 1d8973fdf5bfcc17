//! The CLASS-M network in candle: trainable ResNet encoders for the H and E maps (BatchNorm in
//! training mode, torchvision parameter names), the classifier on their mean feature and the
//! contrastive BatchNorm heads. CPU by default; `cuda` and `metal` features build the same code
//! for GPUs.
#![deny(missing_docs)]

mod classm;
mod error;
mod pool;
mod resnet;

pub use classm::{ClassmConfig, ClassmNet, ClassmOutput};
pub use error::{ModelError, Result};
pub use pool::{global_avg_pool, max_pool_3x3_s2};
pub use resnet::{ResNet, ResNetConfig};
