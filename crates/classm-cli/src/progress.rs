//! Progress: a bar on a terminal, otherwise one log line per file.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::{info, warn};

use crate::report::Entry;

/// Reports progress over a known number of steps.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A progress reporter over `len` steps; a bar when `bar` is set.
    pub fn new(len: usize, bar: bool, label: &str) -> Progress {
        let bar = bar.then(|| {
            let pb = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            pb.set_style(style);
            pb.set_prefix(label.to_owned());
            pb
        });
        Progress { bar }
    }

    /// One file is done.
    pub fn file_done(&self, entry: &Entry) {
        if let Some(pb) = &self.bar {
            pb.set_message(entry.path.clone());
            pb.inc(1);
            return;
        }
        if let Some(err) = &entry.error {
            warn!("{}: failed: [{}] {}", entry.path, err.kind, err.message);
        } else if let Some(reason) = entry.fallback() {
            warn!("{}: fell back to ruifrok: {reason}", entry.path);
        } else if entry.source == Some("stain_file") {
            info!("{}: ok ({} files written)", entry.path, entry.outputs.len());
        } else if let Some(est) = &entry.ok {
            let d = &est.diagnostics;
            info!(
                "{}: ok (H–E separation {:.1}°, {} of {} sampled pixels kept)",
                entry.path, d.separation_deg, d.kept_pixels, d.sampled_pixels
            );
        } else {
            info!("{}: ok", entry.path);
        }
    }

    /// One step that is not a whole file (slide passes); without a bar `msg` is logged, at
    /// info level when `info` is set and at debug level otherwise.
    pub fn step(&self, msg: &str, info: bool) {
        match &self.bar {
            Some(pb) => {
                pb.set_message(msg.to_owned());
                pb.inc(1);
            }
            None if info => info!("{msg}"),
            None => tracing::debug!("{msg}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}
