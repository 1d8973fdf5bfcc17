//! An optimiser's per-value update run in place on a CPU parameter's storage, with its two
//! state buffers as plain values: one pass that reads the gradient and the state and writes
//! the parameter and the state, where `to_vec1` + `Var::set` would copy the parameter out,
//! the gradient out, and the result back in.

use std::cell::RefCell;

use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Tensor, Var, bail};
use rayon::prelude::*;

use crate::error::{LossError, Result};

/// Values per parallel chunk; the update is elementwise, so the split does not change a bit.
const CHUNK: usize = 1 << 14;

/// Whether every parameter is an f32 tensor on the CPU (where the fused update applies).
pub(crate) fn applies(vars: &[Var]) -> bool {
    vars.iter()
        .all(|v| v.as_tensor().device().is_cpu() && v.as_tensor().dtype() == DType::F32)
}

/// Zeroed state buffers, one per parameter.
pub(crate) fn zeros(vars: &[Var]) -> Vec<Vec<f32>> {
    vars.iter()
        .map(|v| vec![0f32; v.as_tensor().elem_count()])
        .collect()
}

/// Applies `f(w, g, a, b)` to every value of `var`, its gradient `grad` and the state buffers
/// `a` and `b`, in place.
pub(crate) fn update<F>(var: &Var, grad: &Tensor, a: &mut [f32], b: &mut [f32], f: F) -> Result<()>
where
    F: Fn(&mut f32, f32, &mut f32, &mut f32) + Sync,
{
    let w = var.as_tensor();
    if grad.dims() != w.dims() {
        return Err(LossError::invalid(format!(
            "a gradient of shape {:?} for a parameter of shape {:?}",
            grad.dims(),
            w.dims()
        )));
    }
    let grad = grad.to_dtype(DType::F32)?.contiguous()?;
    let op = Update {
        state: RefCell::new((a, b)),
        f,
    };
    w.inplace_op2(&grad, &op)?;
    Ok(())
}

struct Update<'a, F> {
    state: RefCell<(&'a mut [f32], &'a mut [f32])>,
    f: F,
}

fn contiguous<'s>(v: &'s [f32], l: &Layout) -> candle_core::Result<&'s [f32]> {
    match l.contiguous_offsets() {
        Some((s, e)) => Ok(&v[s..e]),
        None => bail!("optimiser update: tensor is not contiguous"),
    }
}

impl<F> InplaceOp2 for Update<'_, F>
where
    F: Fn(&mut f32, f32, &mut f32, &mut f32) + Sync,
{
    fn name(&self) -> &'static str {
        "classm-optimiser-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(w), CpuStorage::F32(g)) = (s1, s2) else {
            bail!("optimiser update: f32 only")
        };
        let Some((ws, we)) = l1.contiguous_offsets() else {
            bail!("optimiser update: parameter is not contiguous")
        };
        let (w, g) = (&mut w[ws..we], contiguous(g, l2)?);
        let mut state = self.state.borrow_mut();
        let (a, b) = &mut *state;
        if g.len() != w.len() || a.len() != w.len() || b.len() != w.len() {
            bail!("optimiser update: state of the wrong size for the parameter")
        }
        let f = &self.f;
        w.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(a.par_chunks_mut(CHUNK))
            .zip(b.par_chunks_mut(CHUNK))
            .for_each(|(((w, g), a), b)| {
                for (((w, &g), a), b) in w.iter_mut().zip(g).zip(a.iter_mut()).zip(b.iter_mut()) {
                    f(w, g, a, b);
                }
            });
        Ok(())
    }
}
