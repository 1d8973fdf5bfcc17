//! The CLASS-M network in candle: trainable ResNet encoders for the H and E maps (BatchNorm in
//! training mode, torchvision parameter names), the classifier on their mean feature and the
//! contrastive BatchNorm heads. CPU by default; `cuda` and `metal` features build the same code
//! for GPUs.
#![deny(missing_docs)]

mod alloc;
mod classm;
mod cpu;
mod error;
#[cfg(feature = "hub")]
mod hub;
mod init;
mod layers;
mod model_dir;
mod pool;
mod pretrained;
mod resnet;

pub use alloc::{keep_freed_memory, keep_freed_tunables};
pub use classm::{ClassmConfig, ClassmNet, ClassmOutput, TrainForward};
pub use error::{HubProblem, ModelError, Result};
#[cfg(feature = "hub")]
pub use hub::HubWeights;
pub use init::init_seeded;
pub use layers::Kernels;
pub use model_dir::{
    CONFIG_FILE, MODEL_FORMAT, ModelConfig, WEIGHTS_FILE, load_model_dir, save_model_dir,
};
pub use pool::{global_avg_pool, max_pool_3x3_s2};
pub use pretrained::{LoadReport, load_resnet, read_safetensors};
pub use resnet::{ResNet, ResNetConfig};
