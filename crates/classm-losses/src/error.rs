//! The crate's error type.

/// Result with [`LossError`].
pub type Result<T, E = LossError> = std::result::Result<T, E>;

/// What can go wrong in a loss or an optimiser step.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// A tensor operation failed (shape, dtype or device mismatch).
    #[error("tensor operation: {0}")]
    Tensor(#[from] candle_core::Error),
    /// Inputs that do not fit together, or an invalid setting.
    #[error("{0}")]
    Invalid(String),
}

impl LossError {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        LossError::Invalid(msg.into())
    }
}
