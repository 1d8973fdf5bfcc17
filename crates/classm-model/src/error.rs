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
    /// Weights could not be fetched from the Hugging Face Hub.
    #[error("Hugging Face Hub, {repo}/{file}: {problem}: {detail}")]
    Hub {
        /// Repository id.
        repo: String,
        /// File in the repository.
        file: String,
        /// What went wrong.
        problem: HubProblem,
        /// The details.
        detail: String,
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

/// Why a Hub download failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubProblem {
    /// No such repository (or a private one without access).
    RepoNotFound,
    /// The repository has no such file (at that revision).
    FileNotFound,
    /// A gated repository: accept its terms on the Hub and pass a token (HF_TOKEN).
    Gated,
    /// Offline mode (HF_HUB_OFFLINE) and the file is not in the cache.
    NotCached,
    /// The Hub could not be reached, or answered something unexpected.
    Network,
}

impl std::fmt::Display for HubProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HubProblem::RepoNotFound => "repository not found",
            HubProblem::FileNotFound => "file not found",
            HubProblem::Gated => "gated repository (access not granted to this token)",
            HubProblem::NotCached => "offline and not in the cache",
            HubProblem::Network => "download failed",
        })
    }
}
