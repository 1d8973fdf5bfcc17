//! Samplers as pure functions of (seed, position): any batch can be recomputed, so a resumed
//! run draws exactly what an uninterrupted one would.

use crate::error::{DataError, Result};
use crate::rng::{Stream, derive, permutation};

/// Class-balanced labelled batches (classm-method.md §1.4): exactly `per_class` samples of each
/// class per batch, each class cycling through its own list, reshuffled at every cycle.
#[derive(Debug, Clone)]
pub struct BalancedSampler {
    seed: u64,
    per_class: usize,
    classes: Vec<Vec<usize>>,
}

impl BalancedSampler {
    /// `by_class[c]` holds the dataset indices of class `c`; every class needs at least one.
    pub fn new(seed: u64, by_class: Vec<Vec<usize>>, per_class: usize) -> Result<Self> {
        if per_class == 0 {
            return Err(DataError::Config("per-class batch size must be ≥ 1".into()));
        }
        if let Some(c) = by_class.iter().position(Vec::is_empty) {
            return Err(DataError::Config(format!(
                "class {c} has no labelled samples: a balanced batch needs every class"
            )));
        }
        Ok(BalancedSampler {
            seed,
            per_class,
            classes: by_class,
        })
    }

    /// Samples per batch.
    pub fn batch_size(&self) -> usize {
        self.per_class * self.classes.len()
    }

    /// Dataset indices of batch `b` (counted from the start of training), class by class.
    pub fn batch(&self, b: u64) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.batch_size());
        for (c, list) in self.classes.iter().enumerate() {
            let key = [0, c as u64];
            out.extend(cycled_draws(
                self.seed,
                &key,
                list,
                b * self.per_class as u64,
                self.per_class,
            ));
        }
        out
    }
}

/// Unlabelled batches: a fresh permutation of the pool for every pass (§1.5).
#[derive(Debug, Clone)]
pub struct UniformSampler {
    seed: u64,
    batch: usize,
    pool: Vec<usize>,
}

impl UniformSampler {
    /// Batches of `batch` indices drawn from `pool`.
    pub fn new(seed: u64, pool: Vec<usize>, batch: usize) -> Result<Self> {
        if batch == 0 || pool.is_empty() {
            return Err(DataError::Config(
                "the unlabelled pool and batch must not be empty".into(),
            ));
        }
        Ok(UniformSampler { seed, batch, pool })
    }

    /// Samples per batch.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Dataset indices of batch `b`.
    pub fn batch(&self, b: u64) -> Vec<usize> {
        cycled_draws(
            self.seed,
            &[1],
            &self.pool,
            b * self.batch as u64,
            self.batch,
        )
    }
}

/// Draws `first .. first + count` of an endless sequence that walks `list` in a fresh seeded
/// permutation per cycle (`key` and the cycle number pick the permutation): the shared
/// mechanism of both samplers, random-access so that any batch can be recomputed.
fn cycled_draws(seed: u64, key: &[u64], list: &[usize], first: u64, count: usize) -> Vec<usize> {
    let n = list.len() as u64;
    let mut out = Vec::with_capacity(count);
    let mut cycle = u64::MAX;
    let mut perm = Vec::new();
    for draw in first..first + count as u64 {
        if draw / n != cycle {
            cycle = draw / n;
            let mut coords = key.to_vec();
            coords.push(cycle);
            perm = permutation(list.len(), &mut derive(seed, Stream::Sampler, &coords));
        }
        out.push(list[perm[(draw % n) as usize]]);
    }
    out
}

/// Group dataset indices by label: `out[c]` lists the samples of class `c` among `indices`.
pub fn by_class(
    labels: impl Fn(usize) -> Option<usize>,
    indices: &[usize],
    classes: usize,
) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); classes];
    for &i in indices {
        if let Some(c) = labels(i) {
            out[c].push(i);
        }
    }
    out
}
