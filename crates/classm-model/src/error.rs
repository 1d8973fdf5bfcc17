//! The crate's error type.

/// Result with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// What can go wrong building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed (shape, dtype or device mismatch, missing variable).
    #[error("tensor operation: {0}")]
    Tensor(#[from] candle_core::Error),
    /// An invalid configuration.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A weights or config file is not what it should be.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint lacks a tensor the model needs.
    #[error("checkpoint has no tensor `{name}`")]
    MissingTensor {
        /// The model's name for it.
        name: String,
    },
    /// A checkpoint tensor has another shape than the model's.
    #[error("tensor `{name}`: checkpoint shape {found:?}, model shape {expected:?}")]
    ShapeMismatch {
        /// The tensor.
        name: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The checkpoint's shape.
        found: Vec<usize>,
    },
}
