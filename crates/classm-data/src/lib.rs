//! Everything between image files on disk and a batch of normalised H and E maps, as the
//! CLASS-M authors' code does it (classm-method.md §1–3), fast and reproducible.
//!
//! - [`Dataset`]: class folders or a CSV/TSV manifest with labels and groups (slide, case,
//!   patient); [`scan`] decodes everything and reports unreadable files by name.
//! - [`split()`]: deterministic, group-aware, class-stratified splits, written to a split file
//!   that later runs reuse ([`Assignment`]), with a [`CountTable`].
//! - [`group_stains`]: one stain matrix per group from classm-stain's slide estimator, cached
//!   on disk; [`Unmixer`] turns RGB into the model inputs `clip(c / (2·max), 0, 1)`.
//! - [`Pipeline`]: RGB jitter, separation, independent H and E augmentation, normalisation.
//! - [`BalancedSampler`], [`UniformSampler`], [`Source`] and [`Prefetch`]: batches built in
//!   parallel and ahead of time, optionally from decoded patches kept across epochs
//!   ([`Source::with_decoded_cache`]).
//!
//! Every random draw comes from a generator derived from the run's seed and the draw's
//! coordinates ([`rng::derive`]): augmentations from (seed, epoch, draw, view), samplers from
//! (seed, class or pool, cycle), splits from the seed. Batches are therefore bit-identical
//! across runs and thread counts. Batches are plain `f32` buffers: this crate
//! does not depend on candle.
#![deny(missing_docs)]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod augment;
mod cache;
mod dataset;
mod decode;
mod error;
mod io;
mod loader;
pub mod rng;
mod sampler;
mod scan;
mod split;
mod stains;
mod stats;
mod unmix;

pub use augment::{AugmentConfig, Normalization, Pipeline, Scratch, Views};
pub use cache::CacheUsage;
pub use dataset::{Dataset, GroupBy, GroupColumn, ManifestColumns, Origin, Sample, SourceOptions};
pub use decode::{Decoded, IMAGE_EXTENSIONS, decode_rgb8, is_image_path, read_rgb8};
pub use error::{DataError, DecodeProblem, Result};
pub use io::write_atomic;
pub use loader::{Batch, Mode, Prefetch, Request, Source, StainLookup};
pub use rng::SampleKey;
pub use sampler::{BalancedSampler, UniformSampler, by_class};
pub use scan::{Failure, ImageInfo, OnError, ScanReport, scan};
pub use split::{Amount, Assignment, CountTable, SPLIT_FORMAT, SplitSpec, split};
pub use stains::{
    CACHE_FORMAT, Fallback, GroupStain, GroupStains, StainMode, StainOptions, group_stains,
    per_image_unmixer,
};
pub use stats::channel_stats;
pub use unmix::{PAPER_FIXED_ROWS, Unmixer, UnmixingRows};
