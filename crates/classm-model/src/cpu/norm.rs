//! BatchNorm over `[N, C, ...]` with an optional fused ReLU, in two passes: per-channel
//! statistics (f64, parallel over channels), then one normalising pass over rows. The backward
//! recomputes the ReLU mask from the input with the forward's own arithmetic, so it needs
//! neither the output nor a stored mask.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{sum_f64, values};

/// Rows shorter than this are grouped so a rayon task does some work.
const MIN_TASK: usize = 4096;

/// Per-channel values a forward pass fixes and its backward reuses.
#[derive(Debug, Clone, Default)]
pub(crate) struct Saved {
    /// Batch mean (train) or running mean (eval).
    pub mean: Vec<f32>,
    /// Biased batch variance (train) or running variance (eval).
    pub var: Vec<f32>,
    invstd: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

/// The op on (x, gamma, beta).
#[derive(Debug)]
pub(crate) struct BatchNorm {
    pub eps: f64,
    pub relu: bool,
    /// `None`: batch statistics (training); else the running (mean, variance).
    pub running: Option<(Vec<f32>, Vec<f32>)>,
    pub saved: Arc<Mutex<Option<Saved>>>,
}

struct Dims {
    n: usize,
    c: usize,
    s: usize,
}

fn dims(l: &Layout) -> Result<Dims> {
    let d = l.dims();
    if d.len() < 2 {
        bail!("batch-norm: input {d:?} needs at least [N, C]")
    }
    Ok(Dims {
        n: d[0],
        c: d[1],
        s: d[2..].iter().product(),
    })
}

/// `f(channel, row)` over every row `[n][c]` of length `s`, summed per channel in f64.
fn per_channel(x: &[f32], d: &Dims, f: impl Fn(usize, &[f32], usize) -> f64 + Sync) -> Vec<f64> {
    (0..d.c)
        .into_par_iter()
        .map(|c| {
            (0..d.n)
                .map(|n| {
                    let off = (n * d.c + c) * d.s;
                    f(c, &x[off..off + d.s], off)
                })
                .sum()
        })
        .collect()
}

fn rows_min_len(s: usize) -> usize {
    (MIN_TASK / s.max(1)).max(1)
}

impl BatchNorm {
    fn stats(&self, x: &[f32], d: &Dims) -> Result<(Vec<f32>, Vec<f32>)> {
        if let Some((m, v)) = &self.running {
            if m.len() != d.c || v.len() != d.c {
                bail!(
                    "batch-norm: {} running statistics for {} channels",
                    m.len(),
                    d.c
                )
            }
            return Ok((m.clone(), v.clone()));
        }
        let count = (d.n * d.s) as f64;
        if d.n * d.s < 2 {
            bail!("batch-norm in training mode needs more than one value per channel")
        }
        let mean = per_channel(x, d, |_, r, _| sum_f64(r));
        let mean: Vec<f64> = mean.into_iter().map(|s| s / count).collect();
        let var = per_channel(x, d, |c, r, _| {
            let m = mean[c];
            let mut acc = [0f64; 8];
            let chunks = r.chunks_exact(8);
            let tail: f64 = chunks
                .remainder()
                .iter()
                .map(|&v| (v as f64 - m).powi(2))
                .sum();
            for ch in chunks {
                for (a, &v) in acc.iter_mut().zip(ch) {
                    let z = v as f64 - m;
                    *a += z * z;
                }
            }
            acc.iter().sum::<f64>() + tail
        });
        Ok((
            mean.iter().map(|&m| m as f32).collect(),
            var.iter().map(|&v| (v / count) as f32).collect(),
        ))
    }
}

impl CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        "classm-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = dims(l1)?;
        let x = values(s1, l1, "batch-norm")?;
        let (gamma, beta) = (values(s2, l2, "batch-norm")?, values(s3, l3, "batch-norm")?);
        if gamma.len() != d.c || beta.len() != d.c {
            bail!("batch-norm: {} weights for {} channels", gamma.len(), d.c)
        }
        let (mean, var) = self.stats(x, &d)?;
        let invstd: Vec<f32> = var
            .iter()
            .map(|&v| (1.0 / (v as f64 + self.eps).sqrt()) as f32)
            .collect();
        let scale: Vec<f32> = (0..d.c).map(|c| gamma[c] * invstd[c]).collect();
        let shift: Vec<f32> = (0..d.c).map(|c| beta[c] - mean[c] * scale[c]).collect();
        let mut y = vec![0f32; x.len()];
        let relu = self.relu;
        y.par_chunks_mut(d.s.max(1))
            .with_min_len(rows_min_len(d.s))
            .enumerate()
            .for_each(|(row, out)| {
                let c = row % d.c;
                let (a, b) = (scale[c], shift[c]);
                let src = &x[row * d.s..(row + 1) * d.s];
                for (o, &v) in out.iter_mut().zip(src) {
                    let z = v * a + b;
                    *o = if relu { z.max(0.0) } else { z };
                }
            });
        let saved = Saved {
            mean,
            var,
            invstd,
            scale,
            shift,
        };
        *self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("batch-norm state poisoned".into()))? =
            Some(saved);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("batch-norm state poisoned".into()))?
            .clone();
        let Some(saved) = saved else {
            bail!("batch-norm backward before its forward")
        };
        let packed = x.apply_op2_no_bwd(
            &grad.contiguous()?,
            &BatchNormBackward {
                relu: self.relu,
                train: self.running.is_none(),
                saved,
            },
        )?;
        let (nx, c) = (x.elem_count(), x.dim(1)?);
        Ok((
            Some(packed.narrow(0, 0, nx)?.reshape(x.shape())?),
            Some(packed.narrow(0, nx, c)?),
            Some(packed.narrow(0, nx + c, c)?),
        ))
    }
}

/// (x, dy) → flat `[dx | dgamma | dbeta]`.
#[derive(Debug)]
struct BatchNormBackward {
    relu: bool,
    train: bool,
    saved: Saved,
}

impl CustomOp2 for BatchNormBackward {
    fn name(&self) -> &'static str {
        "classm-batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = dims(l1)?;
        let (x, dy) = (values(s1, l1, "batch-norm")?, values(s2, l2, "batch-norm")?);
        if dy.len() != x.len() || self.saved.mean.len() != d.c {
            bail!(
                "batch-norm backward: gradient {:?} for input {:?}",
                l2.dims(),
                l1.dims()
            )
        }
        let Saved {
            mean,
            invstd,
            scale,
            shift,
            ..
        } = &self.saved;
        let relu = self.relu;
        // The gradient that reaches the normalisation: dy where the fused ReLU passed.
        let live = |c: usize, v: f32, g: f32| -> f32 {
            if relu && v * scale[c] + shift[c] <= 0.0 {
                0.0
            } else {
                g
            }
        };
        let sums = |c: usize, r: &[f32], off: usize, with_xhat: bool| -> f64 {
            let g = &dy[off..off + r.len()];
            let (m, is) = (mean[c], invstd[c]);
            let mut acc = [0f64; 8];
            for (k, (&v, &gv)) in r.iter().zip(g).enumerate() {
                let t = live(c, v, gv) as f64;
                acc[k % 8] += if with_xhat {
                    t * ((v - m) * is) as f64
                } else {
                    t
                };
            }
            acc.iter().sum()
        };
        let dbeta = per_channel(x, &d, |c, r, off| sums(c, r, off, false));
        let dgamma = per_channel(x, &d, |c, r, off| sums(c, r, off, true));
        let count = (d.n * d.s) as f64;
        let mut out = vec![0f32; x.len() + 2 * d.c];
        let (dx, rest) = out.split_at_mut(x.len());
        let train = self.train;
        dx.par_chunks_mut(d.s.max(1))
            .with_min_len(rows_min_len(d.s))
            .enumerate()
            .for_each(|(row, o)| {
                let c = row % d.c;
                let off = row * d.s;
                let (r, g) = (&x[off..off + d.s], &dy[off..off + d.s]);
                let (m, is, a) = (mean[c], invstd[c], scale[c]);
                let (mb, mg) = ((dbeta[c] / count) as f32, (dgamma[c] / count) as f32);
                for ((o, &v), &gv) in o.iter_mut().zip(r).zip(g) {
                    let t = live(c, v, gv);
                    *o = if train {
                        a * (t - mb - (v - m) * is * mg)
                    } else {
                        a * t
                    };
                }
            });
        for c in 0..d.c {
            rest[c] = dgamma[c] as f32;
            rest[d.c + c] = dbeta[c] as f32;
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
