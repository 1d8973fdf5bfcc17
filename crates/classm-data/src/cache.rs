//! An opt-in, size-bounded cache of decoded (and resized) patches, kept across epochs.
//!
//! Decoding a PNG is about half of a 224-px patch's cost and the same work every epoch; a
//! training run that can spare the memory decodes each patch once. What is cached is exactly
//! what the augmentation starts from, so batches are bit-identical with and without it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use image::RgbImage;

use crate::unmix::Unmixer;

/// What a sample's augmentation starts from: its decoded pixels (resized as configured when
/// cached: [`Pipeline::prepare`](crate::Pipeline::prepare)), and its own separation tables
/// when stains are estimated per image (from the pixels before resizing, as without the
/// cache).
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) rgb: RgbImage,
    pub(crate) per_image: Option<Unmixer>,
}

impl Prepared {
    fn bytes(&self) -> usize {
        self.rgb.as_raw().len() + self.per_image.as_ref().map_or(0, Unmixer::table_bytes)
    }
}

/// How much of the cache is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUsage {
    /// Patches held.
    pub entries: usize,
    /// Bytes of pixels (and per-image tables) held.
    pub bytes: usize,
    /// The most bytes it may hold.
    pub budget: usize,
}

/// One slot per dataset sample; a sample is cached the first time it is loaded while the
/// budget allows, and never evicted (every epoch reads every patch, so no eviction order
/// would do better than keeping the first ones).
#[derive(Debug)]
pub(crate) struct PatchCache {
    slots: Vec<OnceLock<Arc<Prepared>>>,
    used: AtomicUsize,
    entries: AtomicUsize,
    budget: usize,
    full_reported: AtomicBool,
}

impl PatchCache {
    pub(crate) fn new(samples: usize, budget: usize) -> Self {
        PatchCache {
            slots: (0..samples).map(|_| OnceLock::new()).collect(),
            used: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            budget,
            full_reported: AtomicBool::new(false),
        }
    }

    /// The cached entry of sample `index`, or `load`'s result, kept if the budget allows.
    pub(crate) fn get_or_load<E>(
        &self,
        index: usize,
        load: impl FnOnce() -> Result<Prepared, E>,
    ) -> Result<Arc<Prepared>, E> {
        if let Some(p) = self.slots[index].get() {
            return Ok(p.clone());
        }
        let prepared = Arc::new(load()?);
        let bytes = prepared.bytes();
        let reserved = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(bytes).filter(|&t| t <= self.budget)
            })
            .is_ok();
        if !reserved {
            self.report_full();
            return Ok(prepared);
        }
        // Two workers may load the same sample at once (a batch can repeat a sample): the
        // loser gives its reservation back.
        match self.slots[index].set(prepared.clone()) {
            Ok(()) => {
                self.entries.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.used.fetch_sub(bytes, Ordering::Relaxed);
            }
        }
        Ok(prepared)
    }

    fn report_full(&self) {
        if !self.full_reported.swap(true, Ordering::Relaxed) {
            let usage = self.usage();
            tracing::info!(
                "decoded-patch cache full: {} patches in {:.1} of {:.1} MiB; the other {} decode on every load",
                usage.entries,
                mib(usage.bytes),
                mib(usage.budget),
                self.slots.len() - usage.entries
            );
        }
    }

    pub(crate) fn usage(&self) -> CacheUsage {
        CacheUsage {
            entries: self.entries.load(Ordering::Relaxed),
            bytes: self.used.load(Ordering::Relaxed),
            budget: self.budget,
        }
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
