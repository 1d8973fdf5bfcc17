//! The crate's one error type.

use serde::Serialize;

/// Result alias used throughout `classm-stain`.
pub type Result<T, E = StainError> = std::result::Result<T, E>;

/// Everything that can go wrong when estimating, separating or normalising stains.
///
/// Estimation checks run in a fixed order, so every input gets exactly one outcome:
/// [`InvalidInput`](StainError::InvalidInput) → artefact exclusion and background rule →
/// [`EmptyTissue`](StainError::EmptyTissue) / [`TooFewPixels`](StainError::TooFewPixels) →
/// [`RankDeficient`](StainError::RankDeficient) →
/// [`SingleStainSuspected`](StainError::SingleStainSuspected) →
/// [`ImplausibleStain`](StainError::ImplausibleStain) → [`AmbiguousOrder`](StainError::AmbiguousOrder) → `Ok`.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StainError {
    /// The input is not a usable 8-bit RGB buffer (wrong length, zero size, four channels, ...).
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong with the input.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// Which value and why.
        reason: String,
    },
    /// No pixel passes the background rule (after artefact exclusion).
    #[error("no tissue: none of the {total} sampled pixels passes the background rule")]
    EmptyTissue {
        /// Pixels that passed (always 0).
        kept: u64,
        /// Pixels examined.
        total: u64,
    },
    /// Some pixels pass the background rule, but fewer than the configured minimum.
    #[error("too few tissue pixels: {kept} kept, at least {min} needed")]
    TooFewPixels {
        /// Pixels that passed.
        kept: u64,
        /// The configured minimum.
        min: u64,
    },
    /// The optical densities span less than a plane (flat colour, black, a single hue).
    #[error(
        "rank-deficient optical density: eigenvalues {eigenvalues:?} do not span a stain plane"
    )]
    RankDeficient {
        /// Eigenvalues of the OD covariance, largest first (log-OD² units of the convention).
        eigenvalues: [f64; 3],
    },
    /// The two stain vectors are too close to be two different stains.
    #[error(
        "single stain suspected: H and E are only {separation_deg:.2}° apart (minimum {min_deg}°)"
    )]
    SingleStainSuspected {
        /// Angle between the two fitted vectors, degrees.
        separation_deg: f64,
        /// The configured minimum, degrees.
        min_deg: f64,
    },
    /// A fitted vector absorbs negatively in some channel, which no stain does: the data is
    /// dominated by something else (pen ink, black borders, non-H&E staining).
    #[error(
        "implausible stain vector: {stain} has OD component {component:.4} (allowed down to {min})"
    )]
    ImplausibleStain {
        /// `H` or `E`.
        stain: String,
        /// The most negative component.
        component: f64,
        /// The configured floor.
        min: f64,
    },
    /// The red-OD ordering rule and the Ruifrok cross-check disagree, or the margin is tiny.
    #[error(
        "ambiguous H/E order: red-OD margin {red_margin:.4}, Ruifrok margin {ruifrok_margin:.4}"
    )]
    AmbiguousOrder {
        /// Red component of H minus red component of E (unit vectors).
        red_margin: f64,
        /// (cos(H,rH) + cos(E,rE)) − (cos(H,rE) + cos(E,rH)) against the Ruifrok references.
        ruifrok_margin: f64,
    },
    /// Source and target of a normalisation were fitted with different conventions.
    #[error("convention mismatch: fitted with {fitted}, target uses {target}")]
    ConventionMismatch {
        /// Convention of the image being normalised.
        fitted: String,
        /// Convention of the target.
        target: String,
    },
    /// An output buffer has the wrong length.
    #[error("output buffer has {actual} elements, {expected} needed")]
    OutputSize {
        /// Required length.
        expected: usize,
        /// Given length.
        actual: usize,
    },
    /// The streaming estimator was driven out of order.
    #[error("slide estimator misuse: {reason}")]
    Protocol {
        /// What was expected.
        reason: String,
    },
    /// A serialised value could not be read.
    #[error("cannot parse {what}: {reason}")]
    Parse {
        /// What was being parsed.
        what: String,
        /// The parser's message.
        reason: String,
    },
}

/// The variant of a [`StainError`] without its data, for matching and reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ErrorKind {
    InvalidInput,
    InvalidConfig,
    EmptyTissue,
    TooFewPixels,
    RankDeficient,
    SingleStainSuspected,
    ImplausibleStain,
    AmbiguousOrder,
    ConventionMismatch,
    OutputSize,
    Protocol,
    Parse,
}

impl StainError {
    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StainError::InvalidInput { .. } => ErrorKind::InvalidInput,
            StainError::InvalidConfig { .. } => ErrorKind::InvalidConfig,
            StainError::EmptyTissue { .. } => ErrorKind::EmptyTissue,
            StainError::TooFewPixels { .. } => ErrorKind::TooFewPixels,
            StainError::RankDeficient { .. } => ErrorKind::RankDeficient,
            StainError::SingleStainSuspected { .. } => ErrorKind::SingleStainSuspected,
            StainError::ImplausibleStain { .. } => ErrorKind::ImplausibleStain,
            StainError::AmbiguousOrder { .. } => ErrorKind::AmbiguousOrder,
            StainError::ConventionMismatch { .. } => ErrorKind::ConventionMismatch,
            StainError::OutputSize { .. } => ErrorKind::OutputSize,
            StainError::Protocol { .. } => ErrorKind::Protocol,
            StainError::Parse { .. } => ErrorKind::Parse,
        }
    }

    /// True for the outcomes that describe the image content (no usable H&E signal), as
    /// opposed to misuse of the API. Callers typically fall back to a reference matrix on these.
    pub fn is_degenerate_content(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::EmptyTissue
                | ErrorKind::TooFewPixels
                | ErrorKind::RankDeficient
                | ErrorKind::SingleStainSuspected
                | ErrorKind::ImplausibleStain
                | ErrorKind::AmbiguousOrder
        )
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        StainError::InvalidInput {
            reason: reason.into(),
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        StainError::InvalidConfig {
            reason: reason.into(),
        }
    }
}
