//! The mathematics of CLASS-M on candle tensors, numerically equivalent to the authors'
//! PyTorch (MixMatch-style) code: losses, pseudo-label sharpening, MixUp and interleave, the
//! contrastive triplet term, schedules, RMSprop and AdamW, and the EMA model.
//!
//! Pure functions and explicit state: no IO, and no randomness except from a generator the
//! caller passes in ([`MixUp::draw`]).
#![deny(missing_docs)]

mod ema;
mod error;
mod fused;
mod loss;
mod mixup;
mod optim;
mod triplet;

pub use ema::{Ema, ReduceLrOnPlateau};
pub use error::{LossError, Result};
pub use loss::{linear_rampup, mse_probabilities, sharpen, soft_cross_entropy};
pub use mixup::{MixUp, interleave};
pub use optim::{AdamW, AdamWParams, Optimizer, RmsProp, RmsPropParams};
pub use triplet::{Reduction, triplet_roll};
