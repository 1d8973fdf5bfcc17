//! A model directory that stands alone: `model.safetensors` + `config.json`.

use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::classm::{ClassmConfig, ClassmNet};
use crate::error::{ModelError, Result};

/// Format tag of `config.json`.
pub const MODEL_FORMAT: &str = "classm-model/1";
/// Weights file name.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Config file name.
pub const CONFIG_FILE: &str = "config.json";

/// Everything inference needs besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// [`MODEL_FORMAT`].
    pub format: String,
    /// Network shape.
    pub network: ClassmConfig,
    /// Class names, in logit order.
    pub class_names: Vec<String>,
    /// Side of the square H and E inputs.
    pub input_size: u32,
    /// Per-channel normalisation `(x − mean) / std` of the two inputs.
    pub mean: [f32; 2],
    /// See `mean`.
    pub std: [f32; 2],
    /// What the two channels are (`stains`, `red-green`, `red-blue`).
    pub views: String,
    /// Stain conventions and reference (classm-stain's JSON), as recorded by training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stain: Option<serde_json::Value>,
}

impl ModelConfig {
    /// Checks consistency.
    pub fn validate(&self) -> Result<()> {
        if self.format != MODEL_FORMAT {
            return Err(ModelError::Config(format!(
                "format `{}`, expected `{MODEL_FORMAT}`",
                self.format
            )));
        }
        if self.class_names.len() != self.network.classes {
            return Err(ModelError::Config(format!(
                "{} class names for {} classes",
                self.class_names.len(),
                self.network.classes
            )));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || self.input_size == 0 {
            return Err(ModelError::Config(
                "normalisation std must be > 0 and the input size ≥ 1".into(),
            ));
        }
        Ok(())
    }
}

fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = write(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| ModelError::Io {
                path: tmp.clone(),
                source: e,
            })?;
        std::fs::rename(&tmp, path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes the weights of `map` and `config` into `dir` (created if needed), each file
/// atomically; the config last, so a directory with a config always has its weights.
pub fn save_model_dir(dir: &Path, map: &VarMap, config: &ModelConfig) -> Result<()> {
    config.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| ModelError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    write_atomic(&dir.join(WEIGHTS_FILE), |tmp| Ok(map.save(tmp)?))?;
    let json =
        serde_json::to_string_pretty(config).map_err(|e| ModelError::Config(e.to_string()))?;
    write_atomic(&dir.join(CONFIG_FILE), |tmp| {
        let mut f = std::fs::File::create(tmp).map_err(|e| ModelError::Io {
            path: tmp.to_path_buf(),
            source: e,
        })?;
        f.write_all(json.as_bytes()).map_err(|e| ModelError::Io {
            path: tmp.to_path_buf(),
            source: e,
        })
    })
}

/// Loads a model directory for inference: the config and a network over the weights (plain
/// tensors, no autograd graph).
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<(ClassmNet, ModelConfig)> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::Io {
        path: cfg_path.clone(),
        source: e,
    })?;
    let config: ModelConfig = serde_json::from_str(&text).map_err(|e| ModelError::File {
        path: cfg_path.clone(),
        reason: e.to_string(),
    })?;
    config.validate().map_err(|e| ModelError::File {
        path: cfg_path,
        reason: e.to_string(),
    })?;
    let weights = dir.join(WEIGHTS_FILE);
    let tensors = crate::pretrained::read_safetensors(&weights)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    let net = ClassmNet::new(config.network, vb).map_err(|e| ModelError::File {
        path: weights,
        reason: format!("weights do not fit the config: {e}"),
    })?;
    Ok((net, config))
}
