//! ImageNet ResNet checkpoints (torchvision or timm names, safetensors) into the encoders.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::error::{ModelError, Result};

/// What a checkpoint load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Model variables set from the checkpoint.
    pub loaded: usize,
    /// Checkpoint tensors the model does not use (the ImageNet `fc`, `num_batches_tracked`).
    pub ignored: Vec<String>,
    /// Whether a 3-channel stem was reduced to the model's one channel by summing over RGB.
    pub stem_summed: bool,
}

/// Reads every tensor of a safetensors file (on the CPU).
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| ModelError::File {
        path: path.to_path_buf(),
        reason: format!("not a readable safetensors file: {e}"),
    })
}

/// Sets every variable of `map` under `prefix` (for example `h.`) from the checkpoint tensor of
/// the same name without the prefix. A 3-channel `conv1.weight` feeding a 1-channel model is
/// summed over its input channels (as timm's `adapt_input_conv`). Missing tensors and other
/// shape differences are errors naming the tensor; unused checkpoint tensors are reported.
pub fn load_resnet(
    map: &VarMap,
    prefix: &str,
    checkpoint: &HashMap<String, Tensor>,
) -> Result<LoadReport> {
    let vars = map
        .data()
        .lock()
        .map_err(|_| ModelError::Config("the variable map's lock is poisoned".into()))?;
    let mut report = LoadReport::default();
    let mut used = std::collections::BTreeSet::new();
    let mut names: Vec<&String> = vars.keys().filter(|k| k.starts_with(prefix)).collect();
    names.sort();
    if names.is_empty() {
        return Err(ModelError::Config(format!(
            "the model has no variables under `{prefix}`"
        )));
    }
    for name in names {
        let key = &name[prefix.len()..];
        let var = &vars[name];
        let t = checkpoint
            .get(key)
            .ok_or_else(|| ModelError::MissingTensor {
                name: key.to_string(),
            })?;
        let want = var.as_tensor().dims().to_vec();
        let mut t = t
            .to_dtype(DType::F32)?
            .to_device(var.as_tensor().device())?;
        if key == "conv1.weight"
            && t.rank() == 4
            && want.len() == 4
            && t.dim(1)? == 3
            && want[1] == 1
        {
            t = t.sum_keepdim(1)?;
            report.stem_summed = true;
        }
        if t.dims() != want.as_slice() {
            return Err(ModelError::ShapeMismatch {
                name: key.to_string(),
                expected: want,
                found: t.dims().to_vec(),
            });
        }
        var.set(&t)?;
        used.insert(key.to_string());
        report.loaded += 1;
    }
    report.ignored = checkpoint
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    report.ignored.sort();
    Ok(report)
}
