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
}
