//! A full decode of every sample: which files are unreadable, which needed a conversion.

use std::collections::BTreeMap;

use classm_stain::Converted;
use rayon::prelude::*;

use crate::dataset::Dataset;
use crate::decode::read_rgb8;
use crate::error::{DataError, Result};

/// What to do with files that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop at the first unreadable file (in dataset order).
    #[default]
    Fail,
    /// Report every unreadable file and go on without them.
    SkipAndReport,
}

/// Size and conversion of a readable sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The conversion that made it RGB8.
    pub converted: Converted,
}

/// An unreadable sample.
#[derive(Debug)]
pub struct Failure {
    /// Index of the sample in the dataset.
    pub index: usize,
    /// Why.
    pub error: DataError,
}

/// The outcome of [`scan`].
#[derive(Debug)]
pub struct ScanReport {
    /// One entry per sample: its size and conversion, or `None` if it failed.
    pub images: Vec<Option<ImageInfo>>,
    /// The unreadable samples, in dataset order.
    pub failures: Vec<Failure>,
}

impl ScanReport {
    /// How many samples needed each kind of conversion (RGB8 files are not counted).
    pub fn conversions(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for info in self.images.iter().flatten() {
            let name = match info.converted {
                Converted::None => continue,
                Converted::DroppedAlpha => "alpha dropped",
                Converted::GreyToRgb => "grey to RGB",
                Converted::ReducedDepth => "16-bit/float to 8-bit",
            };
            *out.entry(name).or_insert(0) += 1;
        }
        out
    }

    /// Sample counts per image size (width, height).
    pub fn sizes(&self) -> BTreeMap<(u32, u32), usize> {
        let mut out = BTreeMap::new();
        for info in self.images.iter().flatten() {
            *out.entry((info.width, info.height)).or_insert(0) += 1;
        }
        out
    }

    /// `assignment` (made for the whole dataset) narrowed to the samples [`ScanReport::readable`]
    /// keeps, in the same order.
    pub fn readable_assignment(&self, assignment: &crate::Assignment) -> crate::Assignment {
        crate::Assignment {
            names: assignment.names.clone(),
            of_sample: assignment
                .of_sample
                .iter()
                .zip(&self.images)
                .filter(|(_, info)| info.is_some())
                .map(|(&k, _)| k)
                .collect(),
        }
    }

    /// The dataset without its unreadable samples.
    pub fn readable(&self, dataset: &Dataset) -> Dataset {
        let mut out = dataset.clone();
        out.samples = dataset
            .samples
            .iter()
            .zip(&self.images)
            .filter(|(_, info)| info.is_some())
            .map(|(s, _)| s.clone())
            .collect();
        out
    }
}

/// Decodes every sample in parallel. With [`OnError::Fail`] the first unreadable file in
/// dataset order is the error; otherwise all failures are in the report. `progress` is called
/// once per sample, from worker threads.
pub fn scan(
    dataset: &Dataset,
    on_error: OnError,
    progress: &(dyn Fn() + Sync),
) -> Result<ScanReport> {
    let results: Vec<Result<ImageInfo>> = dataset
        .samples
        .par_iter()
        .map(|s| {
            let r = read_rgb8(&s.path).map(|d| ImageInfo {
                width: d.image.width(),
                height: d.image.height(),
                converted: d.converted,
            });
            progress();
            r
        })
        .collect();
    let mut images = Vec::with_capacity(results.len());
    let mut failures = Vec::new();
    for (index, r) in results.into_iter().enumerate() {
        match r {
            Ok(info) => images.push(Some(info)),
            Err(error) => {
                if on_error == OnError::Fail {
                    return Err(error);
                }
                tracing::warn!("skipping unreadable sample: {error}");
                images.push(None);
                failures.push(Failure { index, error });
            }
        }
    }
    Ok(ScanReport { images, failures })
}
