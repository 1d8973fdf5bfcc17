//! Per-file results, error classification, the JSON report and the summary on standard error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use classm_stain::{Converted, EstimateOptions, StainError, StainEstimate};
use serde::Serialize;

/// An error with a machine-readable kind, for failures that are not a library error type
/// (missing mask, refused overwrite, ...).
#[derive(Debug)]
pub struct Tagged {
    /// Kind reported in the JSON `error.kind` field.
    pub kind: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl Tagged {
    /// A tagged error as an `anyhow::Error`.
    pub fn error(kind: &'static str, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Tagged {
            kind,
            message: message.into(),
        })
    }
}

impl std::fmt::Display for Tagged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Tagged {}

/// A failure as reported: `{ "kind": ..., "message": ... }`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorInfo {
    /// `empty_tissue`, `too_few_pixels`, ... (the library's error kinds), or `decode`,
    /// `unsupported`, `too_large`, `not_found`, `io`, `mask`, `refused`, `error`.
    pub kind: String,
    /// The whole error chain, outermost context first.
    pub message: String,
}

/// The snake_case name of a library error kind (as in its JSON serialisation).
pub fn stain_kind(e: &StainError) -> String {
    serde_json::to_value(e.kind())
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", e.kind()))
}

/// Classifies an error by the first recognised cause in its chain.
pub fn classify(err: &anyhow::Error) -> ErrorInfo {
    let mut kind = "error".to_owned();
    for cause in err.chain() {
        if let Some(t) = cause.downcast_ref::<Tagged>() {
            kind = t.kind.to_owned();
            break;
        }
        if let Some(s) = cause.downcast_ref::<StainError>() {
            kind = stain_kind(s);
            break;
        }
        if let Some(ie) = cause.downcast_ref::<image::ImageError>() {
            kind = match ie {
                image::ImageError::Unsupported(_) => "unsupported",
                image::ImageError::Limits(_) => "too_large",
                image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::NotFound => {
                    "not_found"
                }
                image::ImageError::IoError(_) => "io",
                _ => "decode",
            }
            .to_owned();
            break;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            kind = if io.kind() == std::io::ErrorKind::NotFound {
                "not_found"
            } else {
                "io"
            }
            .to_owned();
            break;
        }
    }
    ErrorInfo {
        kind,
        message: chain_message(err),
    }
}

/// The error chain joined by `: `, without causes that the previous message already ends
/// with (some error types print their source themselves).
pub fn chain_message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut prev = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let trimmed = text.trim_end_matches('.');
        if !prev.is_empty() && prev.trim_end_matches('.').ends_with(trimmed) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        prev = text;
    }
    out
}

/// The name of an input conversion, as reported.
pub fn conversion_name(c: Converted) -> &'static str {
    match c {
        Converted::None => "none",
        Converted::DroppedAlpha => "dropped_alpha",
        Converted::GreyToRgb => "grey_to_rgb",
        Converted::ReducedDepth => "reduced_depth",
    }
}

/// A path as text (lossy for names that are not UTF-8).
pub fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// What a successful file produced.
#[derive(Debug)]
pub struct Done {
    /// The estimate used (fitted, fallback or given).
    pub estimate: StainEstimate,
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// Whether the estimate was given (a stain file) rather than fitted to this image.
    pub given: bool,
}

/// One file's result: `{ "path", "ok": StainEstimate, ... }` or `{ "path", "error": {...} }`.
#[derive(Debug, Serialize)]
pub struct Entry {
    /// The input file.
    pub path: String,
    /// `none`, `dropped_alpha`, `grey_to_rgb` or `reduced_depth` (absent when not decoded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion: Option<&'static str>,
    /// Where the estimate came from: `estimated`, `fallback` or `stain_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
    /// The estimate used (its `fallback` field is set when it is a fallback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<StainEstimate>,
    /// Files written for this input.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// Why the file failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

impl Entry {
    /// The entry of a processed file; `conversion` is known once the image was decoded, even
    /// when a later step failed.
    pub fn new(path: &Path, conversion: Option<Converted>, result: anyhow::Result<Done>) -> Entry {
        let conversion = conversion.map(conversion_name);
        match result {
            Ok(done) => Entry {
                path: path_text(path),
                conversion,
                source: Some(if done.given {
                    "stain_file"
                } else if done.estimate.fallback.is_some() {
                    "fallback"
                } else {
                    "estimated"
                }),
                ok: Some(done.estimate),
                outputs: done.outputs.iter().map(|p| path_text(p)).collect(),
                error: None,
            },
            Err(e) => Entry {
                conversion,
                ..Entry::failed(path, &e)
            },
        }
    }

    /// The entry of a failed file.
    pub fn failed(path: &Path, err: &anyhow::Error) -> Entry {
        Entry {
            path: path_text(path),
            conversion: None,
            source: None,
            ok: None,
            outputs: Vec::new(),
            error: Some(classify(err)),
        }
    }

    /// The fallback reason, when the estimate used is a fallback fitted for this file.
    pub fn fallback(&self) -> Option<&str> {
        if self.source == Some("stain_file") {
            return None;
        }
        self.ok.as_ref().and_then(|e| e.fallback.as_deref())
    }
}

/// Counts over all files.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Files processed.
    pub total: usize,
    /// Files that succeeded (fallbacks included).
    pub succeeded: usize,
    /// Files that failed.
    pub failed: usize,
    /// Files that succeeded with the Ruifrok fallback.
    pub fell_back: usize,
    /// Files that needed an explicit conversion to RGB8, by conversion.
    pub conversions: BTreeMap<&'static str, usize>,
}

impl Summary {
    /// Counts the entries.
    pub fn of(entries: &[Entry]) -> Summary {
        let mut s = Summary {
            total: entries.len(),
            ..Summary::default()
        };
        for e in entries {
            if e.error.is_some() {
                s.failed += 1;
            } else {
                s.succeeded += 1;
            }
            if e.fallback().is_some() {
                s.fell_back += 1;
            }
            if let Some(c) = e.conversion.filter(|c| *c != "none") {
                *s.conversions.entry(c).or_default() += 1;
            }
        }
        s
    }

    /// Whether every file succeeded.
    pub fn status(&self) -> crate::Status {
        if self.failed == 0 {
            crate::Status::Success
        } else {
            crate::Status::SomeFailed
        }
    }

    /// The one-line summary.
    pub fn line(&self, what: &str) -> String {
        let mut s = format!(
            "{what}: {} file{}: {} succeeded",
            self.total,
            if self.total == 1 { "" } else { "s" },
            self.succeeded
        );
        if self.fell_back > 0 {
            s += &format!(" ({} fell back to ruifrok)", self.fell_back);
        }
        s += &format!(", {} failed", self.failed);
        if !self.conversions.is_empty() {
            let list: Vec<String> = self
                .conversions
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            s += &format!("; converted to RGB8: {}", list.join(", "));
        }
        s
    }
}

/// The JSON report of a per-file command.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// Version of the tool.
    pub classm_version: &'static str,
    /// `stain fit`, `stain separate` or `stain normalize`.
    pub command: &'static str,
    /// Estimation options (absent when the stains were given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<&'a EstimateOptions>,
    /// The stain file or normalisation target used, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stain_source: Option<String>,
    /// One entry per input, in input order.
    pub results: &'a [Entry],
    /// Counts.
    pub summary: Summary,
}

impl Report<'_> {
    /// Pretty JSON.
    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(self)? + "\n")
    }
}

/// Prints the failures, fallbacks and the summary line to standard error.
pub fn print_summary(entries: &[Entry], summary: &Summary, what: &str) {
    for e in entries {
        if let Some(err) = &e.error {
            eprintln!("failed: {}: [{}] {}", e.path, err.kind, err.message);
        } else if let Some(reason) = e.fallback() {
            eprintln!("fell back to ruifrok: {}: {reason}", e.path);
        }
    }
    eprintln!("{}", summary.line(what));
}
