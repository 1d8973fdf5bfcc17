//! MixUp with one λ and one permutation shared by every input, and MixMatch's interleave.

use candle_core::Tensor;
use rand::Rng;
use rand_distr::{Beta, Distribution};

use crate::error::{LossError, Result};

/// One MixUp draw: `x' = λ·x + (1 − λ)·x[perm]`, applied alike to H, E and the targets.
#[derive(Debug, Clone, PartialEq)]
pub struct MixUp {
    /// The mixing weight, ≥ 0.5 after `max(λ, 1 − λ)`.
    pub lambda: f64,
    /// The permutation of the batch.
    pub perm: Vec<u32>,
}

impl MixUp {
    /// λ ~ Beta(α, α), λ = max(λ, 1 − λ), and a uniform permutation of `n`, from `rng` (the
    /// caller's seeded generator: candle's own RNG cannot be seeded on the CPU).
    pub fn draw<R: Rng + ?Sized>(alpha: f64, n: usize, rng: &mut R) -> Result<Self> {
        let beta = Beta::new(alpha, alpha)
            .map_err(|e| LossError::invalid(format!("MixUp alpha {alpha}: {e}")))?;
        let l: f64 = beta.sample(rng);
        let mut perm: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let j = rng.random_range(0..=i);
            perm.swap(i, j);
        }
        Ok(MixUp {
            lambda: l.max(1.0 - l),
            perm,
        })
    }

    /// Mixes `x` along its first dimension.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        if n != self.perm.len() {
            return Err(LossError::invalid(format!(
                "MixUp drawn for {} samples applied to {n}",
                self.perm.len()
            )));
        }
        let idx = Tensor::new(self.perm.as_slice(), x.device())?;
        let other = x.index_select(&idx, 0)?;
        Ok(((x * self.lambda)? + (other * (1.0 - self.lambda))?)?)
    }
}

/// MixMatch's chunk boundaries: `nu + 1` pieces of `batch`, the remainder going to the last.
fn offsets(batch: usize, nu: usize) -> Vec<usize> {
    let mut groups = vec![batch / (nu + 1); nu + 1];
    let rem = batch - groups.iter().sum::<usize>();
    for x in 0..rem {
        groups[nu - x] += 1;
    }
    let mut out = vec![0];
    for g in groups {
        out.push(out.last().copied().unwrap_or(0) + g);
    }
    out
}

/// MixMatch's interleave: swaps piece `i` of chunk 0 with piece `i` of chunk `i`, so that
/// every BatchNorm batch mixes labelled and unlabelled positions. Chunks are `batch` long
/// except the last, which may be shorter only if its pieces exist; applying it twice restores
/// the input.
pub fn interleave(chunks: &[Tensor], batch: usize) -> Result<Vec<Tensor>> {
    let nu = chunks.len().saturating_sub(1);
    let off = offsets(batch, nu);
    let mut pieces: Vec<Vec<Tensor>> = chunks
        .iter()
        .map(|c| {
            (0..=nu)
                .map(|p| {
                    let len = c.dim(0)?;
                    let (a, b) = (off[p].min(len), off[p + 1].min(len));
                    Ok(c.narrow(0, a, b - a)?)
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    // Piece i of chunk 0 trades places with piece i of chunk i.
    let (first, rest) = pieces.split_at_mut(1);
    for (i, chunk) in rest.iter_mut().enumerate() {
        std::mem::swap(&mut first[0][i + 1], &mut chunk[i + 1]);
    }
    pieces
        .into_iter()
        .map(|p| Ok(Tensor::cat(&p, 0)?))
        .collect()
}
