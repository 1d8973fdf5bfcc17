//! `classm data split`: a split file later runs reuse unchanged.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use classm_data::{SplitSpec, split};
use tracing::{info, warn};

use super::options::DatasetArgs;
use crate::Status;

/// Options of `classm data split`.
#[derive(Debug, Args)]
pub struct SplitArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// The split file to write (TSV: path, group, label, split).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Splits and their shares: NAME=10%, NAME=0.1, NAME=300 (samples) or NAME=rest.
    #[arg(long, default_value = "labelled=10%,validation=20%,unlabelled=rest")]
    pub splits: String,
    /// Seed of the group order (the same seed and dataset give the same split).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace an existing split file (runs that used it will no longer be comparable).
    #[arg(long)]
    pub force: bool,
}

/// Writes the split file and its count table (`<out>.counts.tsv`), and prints the table.
pub fn run(a: SplitArgs) -> Result<Status> {
    let spec: SplitSpec = a
        .splits
        .parse()
        .map_err(|e| crate::UsageError(format!("--splits: {e}")))?;
    if a.out.exists() && !a.force {
        crate::usage!(
            "{} exists: a split file is meant to be reused unchanged (pass --force to replace it)",
            a.out.display()
        );
    }
    let dataset = a.dataset.open()?;
    if dataset.group_count() < spec.parts.len() {
        crate::usage!(
            "{} has {} group(s) for {} splits: name a group column (--group-column) or pattern",
            a.dataset.dataset.display(),
            dataset.group_count(),
            spec.parts.len()
        );
    }
    let assignment = match split(&dataset, &spec, a.seed) {
        // Shares that do not fit the dataset are a problem with the command line.
        Err(classm_data::DataError::Config(m)) => crate::usage!("--splits: {m}"),
        other => other?,
    };
    let provenance = format!(
        "classm {} · dataset {} · splits {spec} · seed {}",
        env!("CARGO_PKG_VERSION"),
        a.dataset.dataset.display(),
        a.seed
    );
    assignment.write(&a.out, &dataset, &provenance)?;
    let table = assignment.counts(&dataset);
    let counts = counts_path(&a.out);
    classm_data::write_atomic(&counts, table.to_tsv().as_bytes())
        .with_context(|| format!("writing {}", counts.display()))?;
    print!("{table}");
    for (k, name) in table.splits.iter().enumerate() {
        let missing: Vec<&str> = table
            .classes
            .iter()
            .enumerate()
            .filter(|&(c, _)| table.counts[k][c] == 0)
            .map(|(_, n)| n.as_str())
            .collect();
        if !missing.is_empty() {
            warn!(
                "split `{name}` has no samples of {}: the groups did not allow it (more data or other shares)",
                missing.join(", ")
            );
        }
    }
    info!("wrote {} and {}", a.out.display(), counts.display());
    Ok(Status::Success)
}

/// `split.tsv` → `split.counts.tsv`.
pub fn counts_path(out: &std::path::Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!("{stem}.counts.tsv"))
}
