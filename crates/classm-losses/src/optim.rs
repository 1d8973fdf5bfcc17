//! RMSprop and AdamW with PyTorch's update order and constants, on candle `Var`s.
//!
//! Updates run outside the autograd graph: in place on CPU parameters, with the state as plain
//! values (see `fused`), and through `Var::set` with state tensors elsewhere. Parameters
//! without a gradient (BatchNorm running statistics) are skipped, as in torch.

use crate::error::{LossError, Result};
use crate::fused;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

/// Settings of [`RmsProp`] (torch defaults except where CLASS-M sets them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsPropParams {
    /// Learning rate (CLASS-M: 1e-4).
    pub lr: f64,
    /// Smoothing of the squared-gradient average (0.99).
    pub alpha: f64,
    /// Added to the root mean square (1e-8).
    pub eps: f64,
    /// Coupled L2 weight decay added to the gradient (CLASS-M: 1e-8).
    pub weight_decay: f64,
    /// Momentum (CLASS-M: 0.9).
    pub momentum: f64,
}

impl RmsPropParams {
    /// CLASS-M's settings (classm-method.md §6.1).
    pub fn classm() -> Self {
        RmsPropParams {
            lr: 1e-4,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 1e-8,
            momentum: 0.9,
        }
    }
}

/// Settings of [`AdamW`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay (torch's default 0.01; 0 gives Adam).
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// An optimiser over a fixed list of parameters.
pub trait Optimizer {
    /// One update from explicit gradients, one per parameter (`None`: no gradient, skipped).
    fn step_with(&mut self, grads: &[Option<Tensor>]) -> Result<()>;
    /// The parameters, in order.
    fn vars(&self) -> &[Var];
    /// The learning rate.
    fn learning_rate(&self) -> f64;
    /// Sets the learning rate (schedules).
    fn set_learning_rate(&mut self, lr: f64);
    /// The optimiser's state as named tensors (`<kind>.<index>` per parameter, in order), for
    /// checkpoints: a resumed run continues exactly where the interrupted one stopped.
    fn state(&self) -> Result<Vec<(String, Tensor)>>;
    /// Restores [`Optimizer::state`] (same parameters, same order, same shapes).
    fn load_state(&mut self, state: &std::collections::HashMap<String, Tensor>) -> Result<()>;

    /// One update from a backward pass.
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let g: Vec<Option<Tensor>> = self.vars().iter().map(|v| grads.get(v).cloned()).collect();
        self.step_with(&g)
    }

    /// `loss.backward()` then [`Optimizer::step`].
    fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }
}

/// `state[name]` with the shape of `like`.
fn restore(
    state: &std::collections::HashMap<String, Tensor>,
    name: &str,
    like: &Tensor,
) -> Result<Tensor> {
    let t = state
        .get(name)
        .ok_or_else(|| LossError::invalid(format!("optimiser state has no `{name}`")))?;
    if t.dims() != like.dims() {
        return Err(LossError::invalid(format!(
            "optimiser state `{name}` has shape {:?}, the parameter {:?}",
            t.dims(),
            like.dims()
        )));
    }
    Ok(t.to_dtype(like.dtype())?.to_device(like.device())?)
}

fn check_len(vars: &[Var], grads: &[Option<Tensor>]) -> Result<()> {
    if vars.len() != grads.len() {
        return Err(LossError::invalid(format!(
            "{} gradients for {} parameters",
            grads.len(),
            vars.len()
        )));
    }
    Ok(())
}

fn zeros_like_all(vars: &[Var]) -> Result<Vec<Tensor>> {
    Ok(vars
        .iter()
        .map(|v| v.as_tensor().zeros_like())
        .collect::<candle_core::Result<_>>()?)
}

/// torch's `RMSprop` (not centred).
///
/// On the CPU the update runs as one fused loop per parameter, in place on the parameter's
/// storage (in parallel over chunks; elementwise, so the thread count does not change the
/// result), instead of a dozen allocating tensor ops: on the CPU presets the op-by-op update
/// was a third of a training step. Elsewhere it runs as tensor ops.
#[derive(Debug)]
pub struct RmsProp {
    vars: Vec<Var>,
    p: RmsPropParams,
    square_avg: Vec<Tensor>,
    momentum_buf: Vec<Tensor>,
    /// The CPU state: squared-gradient averages and momentum buffers as plain values.
    flat: Option<(FlatState, FlatState)>,
}

/// One buffer of values per parameter.
type FlatState = Vec<Vec<f32>>;

impl RmsProp {
    /// An optimiser over `vars` (leave BatchNorm running statistics out).
    pub fn new(vars: Vec<Var>, p: RmsPropParams) -> Result<Self> {
        if !fused::applies(&vars) {
            return Self::with_tensor_ops(vars, p);
        }
        check_rmsprop(&p)?;
        let flat = Some((fused::zeros(&vars), fused::zeros(&vars)));
        Ok(RmsProp {
            vars,
            p,
            square_avg: Vec::new(),
            momentum_buf: Vec::new(),
            flat,
        })
    }

    /// The update as candle tensor ops on any device (what [`RmsProp::new`] picks off the CPU).
    pub fn with_tensor_ops(vars: Vec<Var>, p: RmsPropParams) -> Result<Self> {
        check_rmsprop(&p)?;
        let square_avg = zeros_like_all(&vars)?;
        let momentum_buf = zeros_like_all(&vars)?;
        Ok(RmsProp {
            vars,
            p,
            square_avg,
            momentum_buf,
            flat: None,
        })
    }

    fn step_cpu(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        let p = self.p;
        let Some((sq_all, buf_all)) = self.flat.as_mut() else {
            return Ok(());
        };
        let (alpha, lr, wd, eps, mom) = (
            p.alpha as f32,
            p.lr as f32,
            p.weight_decay as f32,
            p.eps as f32,
            p.momentum as f32,
        );
        for (i, (var, g)) in self.vars.iter().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            fused::update(var, g, &mut sq_all[i], &mut buf_all[i], |w, g, sq, buf| {
                // torch: grad += wd·p; sq = α·sq + (1 − α)·grad²; avg = √sq + ε;
                // buf = μ·buf + grad / avg; p −= lr·buf.
                let g = if wd != 0.0 { g + wd * *w } else { g };
                *sq = *sq * alpha + (1.0 - alpha) * g * g;
                let avg = sq.sqrt() + eps;
                if mom > 0.0 {
                    *buf = *buf * mom + g / avg;
                    *w -= lr * *buf;
                } else {
                    *w -= lr * g / avg;
                }
            })?;
        }
        Ok(())
    }
}

fn check_rmsprop(p: &RmsPropParams) -> Result<()> {
    if p.lr >= 0.0 && p.eps > 0.0 && (0.0..=1.0).contains(&p.alpha) && p.momentum >= 0.0 {
        Ok(())
    } else {
        Err(LossError::invalid(format!(
            "invalid RMSprop settings {p:?}"
        )))
    }
}

impl Optimizer for RmsProp {
    fn step_with(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        check_len(&self.vars, grads)?;
        if self.flat.is_some() {
            return self.step_cpu(grads);
        }
        let p = self.p;
        for (i, (var, g)) in self.vars.iter().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            let w = var.as_tensor().detach();
            let g = if p.weight_decay != 0.0 {
                (g + (&w * p.weight_decay)?)?
            } else {
                g.clone()
            };
            let sq = ((&self.square_avg[i] * p.alpha)? + (g.sqr()? * (1.0 - p.alpha))?)?;
            let avg = (sq.sqrt()? + p.eps)?;
            let next = if p.momentum > 0.0 {
                let buf = ((&self.momentum_buf[i] * p.momentum)? + g.div(&avg)?)?;
                let next = (&w - (&buf * p.lr)?)?;
                self.momentum_buf[i] = buf;
                next
            } else {
                (&w - (g.div(&avg)? * p.lr)?)?
            };
            self.square_avg[i] = sq;
            var.set(&next)?;
        }
        Ok(())
    }

    fn vars(&self) -> &[Var] {
        &self.vars
    }

    fn learning_rate(&self) -> f64 {
        self.p.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.p.lr = lr;
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.vars.len());
        for (i, v) in self.vars.iter().enumerate() {
            let (sq, buf) = state_pair(&self.flat, &self.square_avg, &self.momentum_buf, i, v)?;
            out.push((format!("square_avg.{i}"), sq));
            out.push((format!("momentum_buffer.{i}"), buf));
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        for (i, v) in self.vars.iter().enumerate() {
            let t = v.as_tensor();
            let sq = restore(state, &format!("square_avg.{i}"), t)?;
            let buf = restore(state, &format!("momentum_buffer.{i}"), t)?;
            let (a, b) = (&mut self.square_avg, &mut self.momentum_buf);
            set_state_pair(&mut self.flat, a, b, i, sq, buf)?;
        }
        Ok(())
    }
}

/// torch's `AdamW`.
///
/// Like [`RmsProp`], one fused in-place pass per parameter on the CPU, tensor ops elsewhere.
#[derive(Debug)]
pub struct AdamW {
    vars: Vec<Var>,
    p: AdamWParams,
    step: u64,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// The CPU state: first and second moments as plain values.
    flat: Option<(FlatState, FlatState)>,
}

impl AdamW {
    /// An optimiser over `vars` (leave BatchNorm running statistics out).
    pub fn new(vars: Vec<Var>, p: AdamWParams) -> Result<Self> {
        if !fused::applies(&vars) {
            return Self::with_tensor_ops(vars, p);
        }
        check_adamw(&p)?;
        let flat = Some((fused::zeros(&vars), fused::zeros(&vars)));
        Ok(AdamW {
            vars,
            p,
            step: 0,
            exp_avg: Vec::new(),
            exp_avg_sq: Vec::new(),
            flat,
        })
    }

    /// The update as candle tensor ops on any device (what [`AdamW::new`] picks off the CPU).
    pub fn with_tensor_ops(vars: Vec<Var>, p: AdamWParams) -> Result<Self> {
        check_adamw(&p)?;
        let exp_avg = zeros_like_all(&vars)?;
        let exp_avg_sq = zeros_like_all(&vars)?;
        Ok(AdamW {
            vars,
            p,
            step: 0,
            exp_avg,
            exp_avg_sq,
            flat: None,
        })
    }
}

fn check_adamw(p: &AdamWParams) -> Result<()> {
    if p.lr >= 0.0 && p.eps > 0.0 && (0.0..1.0).contains(&p.beta1) && (0.0..1.0).contains(&p.beta2)
    {
        Ok(())
    } else {
        Err(LossError::invalid(format!("invalid AdamW settings {p:?}")))
    }
}

impl Optimizer for AdamW {
    fn step_with(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        check_len(&self.vars, grads)?;
        let p = self.p;
        self.step += 1;
        let bc1 = 1.0 - p.beta1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - p.beta2.powi(self.step as i32)).sqrt();
        let step_size = p.lr / bc1;
        if let Some((m_all, v_all)) = self.flat.as_mut() {
            let (decay, c1, b2, c2) = (
                (1.0 - p.lr * p.weight_decay) as f32,
                (1.0 - p.beta1) as f32,
                p.beta2 as f32,
                (1.0 - p.beta2) as f32,
            );
            let (bc2_sqrt, eps, step_size) = (bc2_sqrt as f32, p.eps as f32, step_size as f32);
            for (i, (var, g)) in self.vars.iter().zip(grads).enumerate() {
                let Some(g) = g else { continue };
                fused::update(var, g, &mut m_all[i], &mut v_all[i], |w, g, m, v| {
                    // torch: p *= 1 − lr·wd; m.lerp_(g, 1 − β1); v = β2·v + (1 − β2)·g²;
                    // p −= lr / bc1 · m / (√v / √bc2 + ε).
                    *w *= decay;
                    *m += (g - *m) * c1;
                    *v = *v * b2 + g * g * c2;
                    *w -= step_size * (*m / (v.sqrt() / bc2_sqrt + eps));
                })?;
            }
            return Ok(());
        }
        for (i, (var, g)) in self.vars.iter().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            let w = (var.as_tensor().detach() * (1.0 - p.lr * p.weight_decay))?;
            // torch: exp_avg.lerp_(grad, 1 − β1)
            let m = (&self.exp_avg[i] + ((g - &self.exp_avg[i])? * (1.0 - p.beta1))?)?;
            let v = ((&self.exp_avg_sq[i] * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let denom = ((v.sqrt()? / bc2_sqrt)? + p.eps)?;
            let next = (&w - (m.div(&denom)? * step_size)?)?;
            self.exp_avg[i] = m;
            self.exp_avg_sq[i] = v;
            var.set(&next)?;
        }
        Ok(())
    }

    fn vars(&self) -> &[Var] {
        &self.vars
    }

    fn learning_rate(&self) -> f64 {
        self.p.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.p.lr = lr;
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let dev = self.vars.first().map(|v| v.as_tensor().device().clone());
        let mut out = Vec::with_capacity(2 * self.vars.len() + 1);
        if let Some(dev) = dev {
            out.push(("step".to_string(), Tensor::new(&[self.step as f64], &dev)?));
        }
        for (i, v) in self.vars.iter().enumerate() {
            let (m, s) = state_pair(&self.flat, &self.exp_avg, &self.exp_avg_sq, i, v)?;
            out.push((format!("exp_avg.{i}"), m));
            out.push((format!("exp_avg_sq.{i}"), s));
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        if self.vars.is_empty() {
            return Ok(());
        }
        let step = state
            .get("step")
            .ok_or_else(|| LossError::invalid("optimiser state has no `step`"))?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        self.step = step.first().copied().unwrap_or(0.0) as u64;
        for (i, v) in self.vars.iter().enumerate() {
            let m = restore(state, &format!("exp_avg.{i}"), v.as_tensor())?;
            let s = restore(state, &format!("exp_avg_sq.{i}"), v.as_tensor())?;
            set_state_pair(
                &mut self.flat,
                &mut self.exp_avg,
                &mut self.exp_avg_sq,
                i,
                m,
                s,
            )?;
        }
        Ok(())
    }
}

/// Parameter `i`'s two state tensors, from the flat CPU state or the tensors.
fn state_pair(
    flat: &Option<(FlatState, FlatState)>,
    a: &[Tensor],
    b: &[Tensor],
    i: usize,
    var: &Var,
) -> Result<(Tensor, Tensor)> {
    let t = var.as_tensor();
    Ok(match flat {
        Some((fa, fb)) => (
            Tensor::from_slice(&fa[i], t.shape(), t.device())?,
            Tensor::from_slice(&fb[i], t.shape(), t.device())?,
        ),
        None => (a[i].clone(), b[i].clone()),
    })
}

/// Sets parameter `i`'s two state tensors (already checked against its shape).
fn set_state_pair(
    flat: &mut Option<(FlatState, FlatState)>,
    a: &mut [Tensor],
    b: &mut [Tensor],
    i: usize,
    ta: Tensor,
    tb: Tensor,
) -> Result<()> {
    match flat {
        Some((fa, fb)) => {
            fa[i] = ta.flatten_all()?.to_vec1::<f32>()?;
            fb[i] = tb.flatten_all()?.to_vec1::<f32>()?;
        }
        None => {
            a[i] = ta;
            b[i] = tb;
        }
    }
    Ok(())
}
