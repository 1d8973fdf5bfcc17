//! Datasets: class folders or a CSV/TSV manifest, each sample with its label and group.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::decode::is_image_path;
use crate::error::{DataError, Result};

/// One image of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Where the image is (as found: relative paths resolved against the manifest's folder).
    pub path: PathBuf,
    /// Index into [`Dataset::classes`]; `None` for an unlabelled sample.
    pub label: Option<usize>,
    /// Slide, case or patient: samples of one group always land in one split.
    pub group: String,
    /// A split given by the manifest, if any.
    pub split: Option<String>,
}

/// Where a dataset was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// `<root>/<class>/…` folders.
    ClassFolders,
    /// A CSV or TSV manifest.
    Manifest,
}

/// A list of samples with class names and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// The folder or manifest it was read from.
    pub root: PathBuf,
    /// How it was read.
    pub origin: Origin,
    /// Class names; a sample's label indexes this list.
    pub classes: Vec<String>,
    /// The samples, in a deterministic order (sorted paths for folders, file order for manifests).
    pub samples: Vec<Sample>,
}

/// How class-folder datasets assign groups (a manifest names its group column instead).
#[derive(Debug, Clone, Default)]
pub enum GroupBy {
    /// Every file is its own group. Splits are then by patch, not by slide: only right when
    /// the patches really are independent.
    #[default]
    File,
    /// The first capture group (or the whole match) of a regular expression on the file name,
    /// for example `CRC-Prim-HE-\d+` for Kather's names. A file it does not match is an error.
    Pattern(Regex),
}

/// Which manifest column holds what. `None` picks the first present of the usual names.
#[derive(Debug, Clone, Default)]
pub struct ManifestColumns {
    /// Image path (default: `path`, `file`, `filename`, `image`).
    pub path: Option<String>,
    /// Class label, empty for unlabelled (default: `label`, `class`).
    pub label: Option<String>,
    /// Group id (default: `group`, `slide_id`, `case_id`, `patient_id`, `slide`, `case`,
    /// `patient`; without any, every file is its own group).
    pub group: GroupColumn,
    /// Split (default: `split` if present).
    pub split: Option<String>,
    /// Field delimiter (default: tab for `.tsv`/`.tab`, comma otherwise).
    pub delimiter: Option<u8>,
}

/// The group column of a manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GroupColumn {
    /// The first present of the usual names; every file its own group if none is.
    #[default]
    Auto,
    /// This column.
    Named(String),
    /// No group column: every file is its own group.
    PerFile,
}

/// How to read a dataset.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Name of the class folder that holds unlabelled images.
    pub unlabelled_folder: String,
    /// Groups for class folders.
    pub group_by: GroupBy,
    /// Columns for manifests.
    pub columns: ManifestColumns,
    /// Class names in this order (otherwise sorted); a label outside the list is an error.
    pub classes: Option<Vec<String>>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            unlabelled_folder: "unlabelled".into(),
            group_by: GroupBy::File,
            columns: ManifestColumns::default(),
            classes: None,
        }
    }
}

impl Dataset {
    /// Reads a dataset: a folder as class folders, a file as a manifest.
    pub fn open(path: &Path, opts: &SourceOptions) -> Result<Dataset> {
        let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        if meta.is_dir() {
            Self::from_class_folders(path, opts)
        } else {
            Self::from_manifest(path, opts)
        }
    }

    /// `<root>/<class>/**/*.{png,jpg,jpeg,tif,tiff}`; images in the unlabelled folder have no
    /// label. Files at the root and non-image files are ignored.
    pub fn from_class_folders(root: &Path, opts: &SourceOptions) -> Result<Dataset> {
        let mut folders = Vec::new();
        for entry in read_dir_sorted(root)? {
            if entry.is_dir() {
                folders.push(entry);
            }
        }
        let names: Vec<String> = folders
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let found: Vec<String> = names
            .iter()
            .filter(|n| **n != opts.unlabelled_folder)
            .cloned()
            .collect();
        let classes = match &opts.classes {
            Some(given) => {
                if let Some(extra) = found.iter().find(|f| !given.contains(f)) {
                    return Err(DataError::dataset(
                        root,
                        format!("folder `{extra}` is not one of the given classes {given:?}"),
                    ));
                }
                given.clone()
            }
            None => found,
        };
        if classes.is_empty() {
            return Err(DataError::dataset(root, "no class folders"));
        }
        let mut samples = Vec::new();
        for (folder, name) in folders.iter().zip(&names) {
            let label = classes.iter().position(|c| c == name);
            let mut files = Vec::new();
            walk_images(folder, &mut files)?;
            for path in files {
                let group = group_of(&path, &opts.group_by, root)?;
                samples.push(Sample {
                    path,
                    label,
                    group,
                    split: None,
                });
            }
        }
        if samples.is_empty() {
            return Err(DataError::dataset(
                root,
                "no image files in the class folders",
            ));
        }
        Ok(Dataset {
            root: root.to_path_buf(),
            origin: Origin::ClassFolders,
            classes,
            samples,
        })
    }

    /// A CSV/TSV manifest with a header row. Relative paths are resolved against the
    /// manifest's folder; an empty label means unlabelled.
    pub fn from_manifest(path: &Path, opts: &SourceOptions) -> Result<Dataset> {
        let cols = &opts.columns;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let delimiter = cols.delimiter.unwrap_or(if ext == "tsv" || ext == "tab" {
            b'\t'
        } else {
            b','
        });
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(false)
            .comment(Some(b'#'))
            .from_path(path)
            .map_err(|e| csv_error(path, e))?;
        let header: Vec<String> = rdr
            .headers()
            .map_err(|e| csv_error(path, e))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let find = |given: &Option<String>, usual: &[&str], what: &str| -> Result<Option<usize>> {
            match given {
                Some(name) => header
                    .iter()
                    .position(|h| h == name)
                    .map(Some)
                    .ok_or_else(|| {
                        DataError::table(
                            path,
                            Some(1),
                            format!("no {what} column `{name}` (columns: {})", header.join(", ")),
                        )
                    }),
                None => Ok(usual
                    .iter()
                    .find_map(|u| header.iter().position(|h| h == u))),
            }
        };
        let path_col = find(&cols.path, &["path", "file", "filename", "image"], "path")?
            .ok_or_else(|| {
                DataError::table(
                    path,
                    Some(1),
                    format!("no path column (columns: {})", header.join(", ")),
                )
            })?;
        let label_col = find(&cols.label, &["label", "class"], "label")?;
        let group_col = match &cols.group {
            GroupColumn::Auto => find(
                &None,
                &[
                    "group",
                    "slide_id",
                    "case_id",
                    "patient_id",
                    "slide",
                    "case",
                    "patient",
                ],
                "group",
            )?,
            GroupColumn::Named(n) => find(&Some(n.clone()), &[], "group")?,
            GroupColumn::PerFile => None,
        };
        let split_col = find(&cols.split, &["split"], "split")?;
        let base = path.parent().unwrap_or(Path::new("."));

        let mut rows = Vec::new();
        for (i, record) in rdr.records().enumerate() {
            let record = record.map_err(|e| csv_error(path, e))?;
            let line = record.position().map_or(i as u64 + 2, |p| p.line());
            let field = |c: usize| record.get(c).unwrap_or("").trim().to_string();
            let rel = field(path_col);
            if rel.is_empty() {
                return Err(DataError::table(path, Some(line), "empty path"));
            }
            let file = base.join(&rel);
            let label = label_col.map(field).filter(|l| !l.is_empty());
            let group = match group_col {
                Some(c) => {
                    let g = field(c);
                    if g.is_empty() {
                        return Err(DataError::table(path, Some(line), "empty group id"));
                    }
                    g
                }
                None => rel.clone(),
            };
            let split = split_col.map(field).filter(|s| !s.is_empty());
            rows.push((file, label, group, split, line));
        }
        let classes = match &opts.classes {
            Some(given) => given.clone(),
            None => rows
                .iter()
                .filter_map(|r| r.1.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        let mut samples = Vec::with_capacity(rows.len());
        for (file, label, group, split, line) in rows {
            let label = match label {
                None => None,
                Some(l) => Some(classes.iter().position(|c| *c == l).ok_or_else(|| {
                    DataError::table(
                        path,
                        Some(line),
                        format!("label `{l}` is not one of the classes {classes:?}"),
                    )
                })?),
            };
            samples.push(Sample {
                path: file,
                label,
                group,
                split,
            });
        }
        if samples.is_empty() {
            return Err(DataError::dataset(path, "the manifest lists no images"));
        }
        Ok(Dataset {
            root: path.to_path_buf(),
            origin: Origin::Manifest,
            classes,
            samples,
        })
    }

    /// Number of distinct groups.
    pub fn group_count(&self) -> usize {
        self.samples
            .iter()
            .map(|s| s.group.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The dataset-relative name of a sample (its path without the root folder), used in
    /// split files and caches so that they survive moving the dataset.
    pub fn relative_name(&self, sample: &Sample) -> String {
        let base = match self.origin {
            Origin::ClassFolders => self.root.as_path(),
            Origin::Manifest => self.root.parent().unwrap_or(Path::new("")),
        };
        let rel = sample.path.strip_prefix(base).unwrap_or(&sample.path);
        rel.to_string_lossy().replace('\\', "/")
    }
}

fn csv_error(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map(|p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(io) => DataError::io(path, io),
        kind => DataError::table(path, line, format!("{kind:?}")),
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        out.push(entry.map_err(|e| DataError::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

fn walk_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for p in read_dir_sorted(dir)? {
        if p.is_dir() {
            walk_images(&p, out)?;
        } else if is_image_path(&p) {
            out.push(p);
        }
    }
    Ok(())
}

fn group_of(path: &Path, by: &GroupBy, root: &Path) -> Result<String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match by {
        GroupBy::File => Ok(path
            .strip_prefix(root)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/")),
        GroupBy::Pattern(re) => {
            let caps = re.captures(&name).ok_or_else(|| {
                DataError::dataset(
                    root,
                    format!("group pattern `{re}` does not match file name `{name}`"),
                )
            })?;
            let m = caps.get(1).or_else(|| caps.get(0));
            Ok(m.map(|m| m.as_str().to_string()).unwrap_or_default())
        }
    }
}
