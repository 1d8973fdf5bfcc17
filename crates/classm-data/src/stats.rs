//! Normalisation constants computed on the training split (the authors hard-coded theirs).

use rayon::prelude::*;

use crate::augment::Normalization;
use crate::error::{DataError, Result};
use crate::loader::{Mode, Request, Source};

/// Mean and standard deviation of each channel over the evaluation transform (centre crop,
/// no augmentation) of `indices`, before normalisation: `source`'s pipeline must use
/// [`Normalization::identity`]. Sums are per sample in f64 and added in index order, so the
/// result does not depend on the thread count.
pub fn channel_stats(source: &Source, indices: &[usize]) -> Result<Normalization> {
    if source.pipeline().normalization() != Normalization::identity() {
        return Err(DataError::Config(
            "channel statistics need a pipeline without normalisation".into(),
        ));
    }
    if indices.is_empty() {
        return Err(DataError::Config(
            "no samples to compute statistics on".into(),
        ));
    }
    let per: Vec<Result<[f64; 4]>> = indices
        .par_chunks(16)
        .map(|chunk| {
            let b = source.load(&Request {
                indices: chunk.to_vec(),
                mode: Mode::Eval,
                views: 1,
                epoch: 0,
                first_draw: 0,
            })?;
            let mut acc = [0f64; 4];
            let s2 = b.size * b.size;
            for i in 0..chunk.len() {
                let mut one = [0f64; 4];
                for (k, m) in [&b.h, &b.e].into_iter().enumerate() {
                    for &v in &m[i * s2..(i + 1) * s2] {
                        one[2 * k] += f64::from(v);
                        one[2 * k + 1] += f64::from(v) * f64::from(v);
                    }
                }
                for (a, o) in acc.iter_mut().zip(one) {
                    *a += o;
                }
            }
            Ok(acc)
        })
        .collect();
    let mut total = [0f64; 4];
    for r in per {
        for (t, v) in total.iter_mut().zip(r?) {
            *t += v;
        }
    }
    let n = (indices.len() * (source.pipeline().config().crop as usize).pow(2)) as f64;
    let stat = |k: usize| {
        let mean = total[2 * k] / n;
        let var = (total[2 * k + 1] / n - mean * mean).max(0.0);
        (mean as f32, var.sqrt().max(1e-6) as f32)
    };
    let (mh, sh) = stat(0);
    let (me, se) = stat(1);
    Ok(Normalization {
        mean: [mh, me],
        std: [sh, se],
    })
}
