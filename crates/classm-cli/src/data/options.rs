//! How a dataset is read: the options `check` and `split` share.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use classm_data::{Dataset, GroupBy, GroupColumn, ManifestColumns, SourceOptions};

/// A dataset and how to read it.
#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// A folder of class folders (`<root>/<class>/*`, `unlabelled/` for unlabelled images) or
    /// a CSV/TSV manifest with a header row.
    pub dataset: PathBuf,
    /// Manifest column of the image path [default: path, file, filename or image].
    #[arg(long, value_name = "NAME", help_heading = "Dataset")]
    pub path_column: Option<String>,
    /// Manifest column of the class label, empty for unlabelled [default: label or class].
    #[arg(long, value_name = "NAME", help_heading = "Dataset")]
    pub label_column: Option<String>,
    /// Manifest column of the group (slide, case, patient), or `none` for one group per file
    /// [default: group, slide_id, case_id, patient_id, slide, case or patient].
    #[arg(long, value_name = "NAME", help_heading = "Dataset")]
    pub group_column: Option<String>,
    /// Manifest column of a predefined split [default: split, if present].
    #[arg(long, value_name = "NAME", help_heading = "Dataset")]
    pub split_column: Option<String>,
    /// Class folders: the group is this regular expression's first capture group (or whole
    /// match) on the file name, e.g. 'CRC-Prim-HE-\d+' [default: one group per file].
    #[arg(long, value_name = "REGEX", help_heading = "Dataset")]
    pub group_pattern: Option<String>,
    /// Class names in this order, comma-separated [default: sorted].
    #[arg(
        long,
        value_name = "A,B,..",
        value_delimiter = ',',
        help_heading = "Dataset"
    )]
    pub classes: Option<Vec<String>>,
    /// Name of the class folder holding unlabelled images.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "unlabelled",
        help_heading = "Dataset"
    )]
    pub unlabelled_folder: String,
}

impl DatasetArgs {
    /// Reads the dataset.
    pub fn open(&self) -> Result<Dataset> {
        let group_by = match &self.group_pattern {
            Some(p) => GroupBy::Pattern(
                regex::Regex::new(p)
                    .map_err(|e| crate::UsageError(format!("--group-pattern: {e}")))?,
            ),
            None => GroupBy::File,
        };
        let group = match self.group_column.as_deref() {
            None => GroupColumn::Auto,
            Some("none") => GroupColumn::PerFile,
            Some(n) => GroupColumn::Named(n.to_owned()),
        };
        let opts = SourceOptions {
            unlabelled_folder: self.unlabelled_folder.clone(),
            group_by,
            columns: ManifestColumns {
                path: self.path_column.clone(),
                label: self.label_column.clone(),
                group,
                split: self.split_column.clone(),
                delimiter: None,
            },
            classes: self.classes.clone(),
        };
        Dataset::open(&self.dataset, &opts)
            .with_context(|| format!("reading dataset {}", self.dataset.display()))
    }
}
