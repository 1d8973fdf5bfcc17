//! Seeded initialisation with torchvision's scheme. candle's initialisers draw from a generator
//! that cannot be seeded, so a network built by `ClassmNet::new` differs from run to run until
//! [`init_seeded`] (or pretrained weights) overwrite it.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng as _, SeedableRng};
use rand_distr::StandardNormal;
use rand_pcg::Pcg64Mcg;

use crate::error::{ModelError, Result};

/// How one variable is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    Constant(f32),
    /// Normal(0, std²): torchvision's `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.
    Normal(f32),
    /// Uniform(−b, b): PyTorch's default `Linear` weight and bias.
    Uniform(f32),
}

/// Re-initialises every variable of `map` as torchvision's ResNet does, from `seed` alone:
/// convolutions Kaiming-normal with fan-out (std √(2 / (out·k·k))), BatchNorm scale 1 and
/// shift 0, running mean 0 and variance 1, linear weight and bias uniform in ±1/√fan_in.
///
/// Each variable draws from its own generator, derived from the seed and its name, so the
/// values do not depend on the map's order or on which other variables exist. A variable no
/// rule covers is an error rather than a silent default.
pub fn init_seeded(map: &VarMap, seed: u64) -> Result<()> {
    let data = map
        .data()
        .lock()
        .map_err(|_| ModelError::Config("the variable map's lock is poisoned".into()))?;
    let vars: BTreeMap<&str, &Var> = data.iter().map(|(k, v)| (k.as_str(), v)).collect();
    for (&name, &var) in &vars {
        let rule = rule_for(name, var.dims(), &vars)?;
        let n = var.elem_count();
        let mut rng = Pcg64Mcg::seed_from_u64(seed ^ name_hash(name));
        let values: Vec<f32> = match rule {
            Rule::Constant(c) => vec![c; n],
            Rule::Normal(std) => (0..n)
                .map(|_| rng.sample::<f32, _>(StandardNormal) * std)
                .collect(),
            Rule::Uniform(b) => (0..n).map(|_| rng.random_range(-b..=b)).collect(),
        };
        let t = Tensor::from_vec(values, var.dims(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

fn rule_for(name: &str, dims: &[usize], vars: &BTreeMap<&str, &Var>) -> Result<Rule> {
    let (prefix, leaf) = name.rsplit_once('.').unwrap_or(("", name));
    let fan_in_bound = |fan_in: usize| Rule::Uniform(1.0 / (fan_in.max(1) as f32).sqrt());
    Ok(match (leaf, dims.len()) {
        ("running_mean" | "num_batches_tracked", _) => Rule::Constant(0.0),
        ("running_var", _) => Rule::Constant(1.0),
        ("weight", 4) => {
            let fan_out = dims[0] * dims[2] * dims[3];
            Rule::Normal((2.0 / fan_out.max(1) as f32).sqrt())
        }
        ("weight", 2) => fan_in_bound(dims[1]),
        ("weight", 1) => Rule::Constant(1.0),
        ("bias", 1) => match vars.get(format!("{prefix}.weight").as_str()) {
            Some(w) if w.dims().len() == 2 => fan_in_bound(w.dims()[1]),
            _ => Rule::Constant(0.0),
        },
        _ => {
            return Err(ModelError::Config(format!(
                "no initialisation rule for variable `{name}` of shape {dims:?}"
            )));
        }
    })
}

/// FNV-1a: a hash that, unlike std's, is the same in every process and release.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
