//! The EMA model of MixMatch / CLASS-M (classm-method.md §6.3), and the plateau schedule.

use candle_core::{Tensor, Var};

use crate::error::{LossError, Result};

/// An exponential moving average of every float tensor of a model (weights and BatchNorm
/// buffers), with the decoupled decay of the live weights that MixMatch's `WeightEMA` applies
/// after each step: `ema = d·ema + (1 − d)·live`, then `live *= 1 − weight_decay`.
#[derive(Debug)]
pub struct Ema {
    decay: f64,
    weight_decay: f64,
    shadow: Vec<Tensor>,
}

impl Ema {
    /// A shadow copy of `live`. CLASS-M: decay 0.999, weight decay 0.02 × lr = 2e-6.
    pub fn new(live: &[Var], decay: f64, weight_decay: f64) -> Result<Self> {
        if !((0.0..=1.0).contains(&decay) && (0.0..1.0).contains(&weight_decay)) {
            return Err(LossError::invalid(format!(
                "EMA decay {decay} and weight decay {weight_decay} must be in [0, 1]"
            )));
        }
        Ok(Ema {
            decay,
            weight_decay,
            shadow: live
                .iter()
                .map(|v| v.as_tensor().detach().copy())
                .collect::<candle_core::Result<_>>()?,
        })
    }

    /// A shadow starting from given values (for example a checkpoint's EMA weights).
    pub fn from_shadow(shadow: Vec<Tensor>, decay: f64, weight_decay: f64) -> Self {
        Ema {
            decay,
            weight_decay,
            shadow,
        }
    }

    /// One step after an optimiser step; decays the live weights too.
    pub fn step(&mut self, live: &[Var]) -> Result<()> {
        self.check(live)?;
        for (s, v) in self.shadow.iter_mut().zip(live) {
            let l = v.as_tensor().detach();
            *s = ((&*s * self.decay)? + (&l * (1.0 - self.decay))?)?;
            if self.weight_decay != 0.0 {
                v.set(&(l * (1.0 - self.weight_decay))?)?;
            }
        }
        Ok(())
    }

    /// Copies the live values into the shadow (CLASS-M does this after the first epoch).
    pub fn reset(&mut self, live: &[Var]) -> Result<()> {
        self.check(live)?;
        for (s, v) in self.shadow.iter_mut().zip(live) {
            *s = v.as_tensor().detach().copy()?;
        }
        Ok(())
    }

    /// The averaged values, in the order of the live list.
    pub fn shadow(&self) -> &[Tensor] {
        &self.shadow
    }

    fn check(&self, live: &[Var]) -> Result<()> {
        if live.len() != self.shadow.len() {
            return Err(LossError::invalid(format!(
                "EMA of {} tensors given {}",
                self.shadow.len(),
                live.len()
            )));
        }
        Ok(())
    }
}

/// torch's `ReduceLROnPlateau` in mode `min` with a relative threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct ReduceLrOnPlateau {
    /// Multiplier of the learning rate (CLASS-M: 0.9).
    pub factor: f64,
    /// Epochs without improvement tolerated (CLASS-M: 15).
    pub patience: usize,
    /// Relative improvement that counts (torch: 1e-4).
    pub threshold: f64,
    /// Lower bound of the learning rate.
    pub min_lr: f64,
    best: f64,
    bad_epochs: usize,
}

impl ReduceLrOnPlateau {
    /// A schedule with torch's threshold (1e-4, relative) and no lower bound.
    pub fn new(factor: f64, patience: usize) -> Self {
        ReduceLrOnPlateau {
            factor,
            patience,
            threshold: 1e-4,
            min_lr: 0.0,
            best: f64::INFINITY,
            bad_epochs: 0,
        }
    }

    /// Records one epoch's metric (lower is better) and returns the learning rate to use.
    pub fn step(&mut self, metric: f64, lr: f64) -> f64 {
        if metric < self.best * (1.0 - self.threshold) {
            self.best = metric;
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        if self.bad_epochs > self.patience {
            self.bad_epochs = 0;
            let new = (lr * self.factor).max(self.min_lr);
            if lr - new > 1e-8 {
                return new;
            }
        }
        lr
    }

    /// The best metric so far.
    pub fn best(&self) -> f64 {
        self.best
    }
}
