//! One error type for the crate: every variant names the file or setting at fault.

use std::path::PathBuf;

/// Result with [`DataError`].
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Why an image file could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeProblem {
    /// The file has no bytes, or the image has no pixels.
    Empty,
    /// The file ends before the image does.
    Truncated,
    /// The bytes are not a valid image of their format.
    Corrupt,
    /// Not PNG, JPEG or TIFF, or a variant of them the decoder does not support.
    Unsupported,
}

impl std::fmt::Display for DecodeProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecodeProblem::Empty => "empty",
            DecodeProblem::Truncated => "truncated",
            DecodeProblem::Corrupt => "corrupt",
            DecodeProblem::Unsupported => "unsupported format",
        })
    }
}

/// Everything that can go wrong between files on disk and a batch.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An image file could not be decoded.
    #[error("{}: {problem} image: {detail}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: DecodeProblem,
        /// The decoder's message.
        detail: String,
    },
    /// A manifest or split file is malformed.
    #[error("{}{}: {reason}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Table {
        /// The file.
        path: PathBuf,
        /// 1-based line, where one line is at fault.
        line: Option<u64>,
        /// What is wrong.
        reason: String,
    },
    /// The dataset cannot be used as asked (no classes, no images, a split that groups forbid).
    #[error("dataset {}: {reason}", root.display())]
    Dataset {
        /// The dataset's root folder or manifest.
        root: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A stain estimate failed and the policy asks for an error rather than a fallback.
    #[error("stain estimate of group `{group}`: {source}")]
    Stain {
        /// The group (slide, case or patient).
        group: String,
        /// The estimator's error.
        source: classm_stain::StainError,
    },
    /// An invalid setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A batch producer stopped (its thread panicked or was dropped).
    #[error("the loader's worker stopped unexpectedly")]
    LoaderStopped,
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn table(
        path: impl Into<PathBuf>,
        line: Option<u64>,
        reason: impl Into<String>,
    ) -> Self {
        DataError::Table {
            path: path.into(),
            line,
            reason: reason.into(),
        }
    }

    pub(crate) fn dataset(root: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::Dataset {
            root: root.into(),
            reason: reason.into(),
        }
    }

    /// The file this error is about, where there is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            DataError::Io { path, .. }
            | DataError::Decode { path, .. }
            | DataError::Table { path, .. } => Some(path),
            DataError::Dataset { root, .. } => Some(root),
            _ => None,
        }
    }
}
