//! The supervised and consistency losses of MixMatch / CLASS-M (classm-method.md §5.4).

use candle_core::{D, Tensor};
use candle_nn::ops::{log_softmax, softmax};

use crate::error::{LossError, Result};

fn same_shape(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    if a.dims() != b.dims() || a.dims().len() != 2 {
        return Err(LossError::invalid(format!(
            "{what}: logits {:?} and targets {:?} must both be [batch, classes]",
            a.dims(),
            b.dims()
        )));
    }
    Ok(())
}

/// Soft-target cross-entropy, `−mean_i Σ_c t_ic · log_softmax(z_i)_c` (Lx). Targets are not
/// differentiated.
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    same_shape(logits, targets, "soft cross-entropy")?;
    let lp = log_softmax(logits, D::Minus1)?;
    Ok(lp
        .mul(&targets.detach())?
        .sum(D::Minus1)?
        .mean_all()?
        .neg()?)
}

/// Mean squared error between `softmax(z)` and the targets over every element (Lu).
pub fn mse_probabilities(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    same_shape(logits, targets, "probability MSE")?;
    let p = softmax(logits, D::Minus1)?;
    Ok(p.sub(&targets.detach())?.sqr()?.mean_all()?)
}

/// Sharpening `q ∝ p^(1/T)` row by row (pseudo-labels, T = 0.5 in the paper).
pub fn sharpen(p: &Tensor, temperature: f64) -> Result<Tensor> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(LossError::invalid(format!(
            "temperature {temperature} must be > 0"
        )));
    }
    let pt = p.powf(1.0 / temperature)?;
    Ok(pt.broadcast_div(&pt.sum_keepdim(D::Minus1)?)?)
}

/// The MixMatch ramp-up `clip(t / length, 0, 1)` (the unlabelled weight is `λ_u` times it).
pub fn linear_rampup(t: f64, length: f64) -> f64 {
    if length <= 0.0 {
        1.0
    } else {
        (t / length).clamp(0.0, 1.0)
    }
}
