//! BatchNorm over `[N, C, ...]` with an optional fused ReLU, in two passes: per-channel
//! statistics (f64, parallel over channels), then one normalising pass over rows. The backward
//! recomputes the ReLU mask from the input with the forward's own arithmetic, so it needs
//! neither the output nor a stored mask.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{values, wide};

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

/// `f(channel, row, offset)` over every row `[n][c]` of length `s`, two sums per channel,
/// rows added in order.
fn per_channel(
    x: &[f32],
    d: &Dims,
    f: impl Fn(usize, &[f32], usize) -> [f64; 2] + Sync,
) -> Vec<[f64; 2]> {
    (0..d.c)
        .into_par_iter()
        .map(|c| {
            wide(
                #[inline(always)]
                || {
                    // A plain loop: `Iterator::fold` may stay a call, compiled for baseline.
                    let mut acc = [0.0; 2];
                    for n in 0..d.n {
                        let off = (n * d.c + c) * d.s;
                        let [a, b] = f(c, &x[off..off + d.s], off);
                        acc = [acc[0] + a, acc[1] + b];
                    }
                    acc
                },
            )
        })
        .collect()
}

/// Σx and Σx² of a row, over eight f64 lanes: vectorisable, the same order on every run.
#[inline(always)]
fn moments(r: &[f32]) -> [f64; 2] {
    let chunks = r.chunks_exact(8);
    let tail = chunks.remainder();
    let (mut s, mut q) = ([0f64; 8], [0f64; 8]);
    for ch in chunks {
        for j in 0..8 {
            let v = ch[j] as f64;
            s[j] += v;
            q[j] += v * v;
        }
    }
    let (ts, tq) = tail.iter().fold((0f64, 0f64), |(a, b), &v| {
        (a + v as f64, b + v as f64 * v as f64)
    });
    [s.iter().sum::<f64>() + ts, q.iter().sum::<f64>() + tq]
}

/// Per-channel constants of one normalisation.
#[derive(Debug, Clone, Copy)]
struct Channel {
    mean: f32,
    invstd: f32,
    scale: f32,
    shift: f32,
}

impl Channel {
    /// The gradient reaching the normalisation: `g` where the fused ReLU let the value pass.
    #[inline(always)]
    fn live(&self, relu: bool, v: f32, g: f32) -> f32 {
        if !relu || v * self.scale + self.shift > 0.0 {
            g
        } else {
            0.0
        }
    }

    /// Σ dy' and Σ dy'·x̂ over a row, eight f64 lanes.
    #[inline(always)]
    fn grad_sums(&self, relu: bool, r: &[f32], g: &[f32]) -> [f64; 2] {
        let (rc, gc) = (r.chunks_exact(8), g.chunks_exact(8));
        let (rt, gt) = (rc.remainder(), gc.remainder());
        let (mut sb, mut sg) = ([0f64; 8], [0f64; 8]);
        for (xs, gs) in rc.zip(gc) {
            for j in 0..8 {
                let t = self.live(relu, xs[j], gs[j]);
                sb[j] += t as f64;
                sg[j] += (t * ((xs[j] - self.mean) * self.invstd)) as f64;
            }
        }
        let (mut tb, mut tg) = (0f64, 0f64);
        for (&v, &gv) in rt.iter().zip(gt) {
            let t = self.live(relu, v, gv);
            tb += t as f64;
            tg += (t * ((v - self.mean) * self.invstd)) as f64;
        }
        [sb.iter().sum::<f64>() + tb, sg.iter().sum::<f64>() + tg]
    }
}

/// `f(channel, offset, row)` over every output row `[n][c]` of length `s`, in parallel.
fn per_row(out: &mut [f32], d: &Dims, f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    out.par_chunks_mut(d.s.max(1))
        .with_min_len(rows_min_len(d.s))
        .enumerate()
        .for_each(|(row, o)| {
            wide(
                #[inline(always)]
                || f(row % d.c, row * d.s, o),
            )
        });
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
        // Σx and Σx² in f64: squares of f32 values are exact there, so E[x²] − mean² keeps
        // ample digits for activations far from zero mean.
        let sums = per_channel(
            x,
            d,
            #[inline(always)]
            |_, r, _| moments(r),
        );
        let (mut mean, mut var) = (Vec::with_capacity(d.c), Vec::with_capacity(d.c));
        for [sx, sxx] in sums {
            let m = sx / count;
            mean.push(m as f32);
            var.push((sxx / count - m * m).max(0.0) as f32);
        }
        Ok((mean, var))
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
        per_row(
            &mut y,
            &d,
            #[inline(always)]
            |c, off, out| {
                let (a, b) = (scale[c], shift[c]);
                for (o, &v) in out.iter_mut().zip(&x[off..off + d.s]) {
                    let z = v * a + b;
                    *o = if relu { z.max(0.0) } else { z };
                }
            },
        );
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
        let (dx, dgamma, dbeta) = self.backward(x, grad)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

impl BatchNorm {
    /// The gradients (input, gamma, beta) of the op's last forward on `x` for output
    /// gradient `grad`.
    pub(crate) fn backward(&self, x: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
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
            packed.narrow(0, 0, nx)?.reshape(x.shape())?,
            packed.narrow(0, nx, c)?,
            packed.narrow(0, nx + c, c)?,
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
        let ch = |c: usize| Channel {
            mean: mean[c],
            invstd: invstd[c],
            scale: scale[c],
            shift: shift[c],
        };
        let relu = self.relu;
        let sums = per_channel(
            x,
            &d,
            #[inline(always)]
            |c, r, off| ch(c).grad_sums(relu, r, &dy[off..off + r.len()]),
        );
        let (dbeta, dgamma): (Vec<f64>, Vec<f64>) = sums.into_iter().map(|[b, g]| (b, g)).unzip();
        let count = (d.n * d.s) as f64;
        let mut out = vec![0f32; x.len() + 2 * d.c];
        let (dx, rest) = out.split_at_mut(x.len());
        let train = self.train;
        per_row(
            dx,
            &d,
            #[inline(always)]
            |c, off, o| {
                let k = ch(c);
                let (r, g) = (&x[off..off + d.s], &dy[off..off + d.s]);
                // dx = scale·(dy' − mean(dy') − x̂·mean(dy'·x̂)) in training, scale·dy' in eval.
                let (mb, mg) = if train {
                    ((dbeta[c] / count) as f32, (dgamma[c] / count) as f32)
                } else {
                    (0.0, 0.0)
                };
                for ((o, &v), &gv) in o.iter_mut().zip(r).zip(g) {
                    let t = k.live(relu, v, gv);
                    *o = k.scale * (t - mb - (v - k.mean) * k.invstd * mg);
                }
            },
        );
        for c in 0..d.c {
            rest[c] = dgamma[c] as f32;
            rest[d.c + c] = dbeta[c] as f32;
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
