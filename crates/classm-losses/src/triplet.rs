//! The contrastive term of CLASS-M (classm-method.md §5.5): H features as anchors, the same
//! samples' E features as positives, the previous sample's E features as negatives.

use candle_core::{D, Tensor};

use crate::error::{LossError, Result};

/// How per-sample terms are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// Sum over the batch (the authors').
    Sum,
    /// Mean over the batch.
    Mean,
}

/// `‖x − y + ε‖₂` per row, ε = 1e-6, as torch's `pairwise_distance`.
fn distance(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(((x - y)? + 1e-6)?.sqr()?.sum(D::Minus1)?.sqrt()?)
}

/// `Σ_i max(‖h_i − e_i‖ − ‖h_i − e_{i−1}‖ + margin, 0)` (or the mean), with the negatives
/// `e` rolled by one (wrapping), as torch's `triplet_margin_loss(h, e, roll(e, 1))`.
pub fn triplet_roll(h: &Tensor, e: &Tensor, margin: f64, reduction: Reduction) -> Result<Tensor> {
    if h.dims() != e.dims() || h.dims().len() != 2 || h.dim(0)? < 2 {
        return Err(LossError::invalid(format!(
            "triplet loss: features {:?} and {:?} must be equal [batch ≥ 2, dim]",
            h.dims(),
            e.dims()
        )));
    }
    let n = e.dim(0)?;
    // roll(e, 1)[i] = e[i − 1]
    let neg = Tensor::cat(&[e.narrow(0, n - 1, 1)?, e.narrow(0, 0, n - 1)?], 0)?;
    let per = ((distance(h, e)? - distance(h, &neg)?)? + margin)?.relu()?;
    Ok(match reduction {
        Reduction::Sum => per.sum_all()?,
        Reduction::Mean => per.mean_all()?,
    })
}
