//! Batches: rayon-parallel decode, separation and augmentation straight into the batch
//! buffers, and a bounded prefetch queue so that training overlaps loading.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use classm_stain::Convention;
use rayon::prelude::*;

use crate::augment::{Pipeline, Scratch};
use crate::cache::{CacheUsage, PatchCache, Prepared};
use crate::dataset::Dataset;
use crate::decode::read_rgb8;
use crate::error::{DataError, Result};
use crate::rng::SampleKey;
use crate::stains::{GroupStains, StainMode, per_image_unmixer};
use crate::unmix::Unmixer;

/// The output slices of one sample, one per view.
type Slots<'a> = Vec<&'a mut [f32]>;

/// Which matrix separates each sample.
#[derive(Debug, Clone)]
pub enum StainLookup {
    /// The sample's group's tables.
    PerGroup(BTreeMap<String, Unmixer>),
    /// One table for all samples.
    Fixed(Unmixer),
    /// An estimate of each image itself under this convention (fixed matrix where it fails).
    PerImage(Convention),
}

impl StainLookup {
    /// Per-group tables from estimates.
    pub fn per_group(stains: &GroupStains) -> Self {
        StainLookup::PerGroup(stains.unmixers())
    }

    /// The lookup of a configured [`StainMode`]; per-group needs the group estimates.
    pub fn from_mode(
        mode: StainMode,
        stains: Option<&GroupStains>,
        convention: &Convention,
    ) -> Result<Self> {
        match (mode, stains) {
            (StainMode::PerGroup, Some(s)) => Ok(Self::per_group(s)),
            (StainMode::PerGroup, None) => Err(DataError::Config(
                "per-group stain matrices need the group estimates (group_stains)".into(),
            )),
            (StainMode::Fixed, _) => Ok(StainLookup::Fixed(Unmixer::paper_fixed())),
            (StainMode::PerImage, _) => Ok(StainLookup::PerImage(convention.clone())),
        }
    }
}

/// Training (augmented) or evaluation (centre crop) transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Random augmentation, keyed by (seed, epoch, draw, view).
    Train,
    /// The deterministic evaluation transform.
    Eval,
}

/// One batch to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Dataset indices.
    pub indices: Vec<usize>,
    /// Transform.
    pub mode: Mode,
    /// Independently augmented views per sample (1 for labelled, K for unlabelled).
    pub views: usize,
    /// Epoch of the draws.
    pub epoch: u64,
    /// Draw number of the first sample (the others follow), so that every draw of a run has
    /// its own key.
    pub first_draw: u64,
}

/// A built batch. `h` and `e` are laid out `[view][sample][crop][crop]`, contiguous.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Dataset indices.
    pub indices: Vec<usize>,
    /// Labels (`None` for unlabelled samples).
    pub labels: Vec<Option<usize>>,
    /// Views per sample.
    pub views: usize,
    /// Side of each map.
    pub size: usize,
    /// First channel (H).
    pub h: Vec<f32>,
    /// Second channel (E).
    pub e: Vec<f32>,
}

impl Batch {
    /// The H and E maps of view `v` (`[sample][crop][crop]`).
    pub fn view(&self, v: usize) -> (&[f32], &[f32]) {
        let len = self.indices.len() * self.size * self.size;
        (
            &self.h[v * len..(v + 1) * len],
            &self.e[v * len..(v + 1) * len],
        )
    }
}

/// Everything needed to turn a [`Request`] into a [`Batch`].
#[derive(Debug)]
pub struct Source {
    dataset: Arc<Dataset>,
    stains: Arc<StainLookup>,
    pipeline: Arc<Pipeline>,
    seed: u64,
    /// Buffers of batches handed back with [`Source::recycle`]: a fresh multi-megabyte
    /// allocation per batch costs page faults and zeroing on every batch.
    spare: std::sync::Mutex<Vec<Vec<f32>>>,
    /// Decoded patches kept across epochs, when asked for.
    cache: Option<PatchCache>,
}

/// The paper's fixed tables, built once.
static PAPER_FIXED: std::sync::LazyLock<Unmixer> = std::sync::LazyLock::new(Unmixer::paper_fixed);

/// Spare buffers kept at most (two per batch in flight, a few batches deep).
const SPARE_BUFFERS: usize = 8;

impl Source {
    /// A source of batches from `dataset`.
    pub fn new(
        dataset: Arc<Dataset>,
        stains: Arc<StainLookup>,
        pipeline: Arc<Pipeline>,
        seed: u64,
    ) -> Result<Self> {
        if let StainLookup::PerGroup(map) = stains.as_ref()
            && let Some(s) = dataset.samples.iter().find(|s| !map.contains_key(&s.group))
        {
            return Err(DataError::Config(format!(
                "no stain matrix for group `{}` ({})",
                s.group,
                s.path.display()
            )));
        }
        Ok(Source {
            dataset,
            stains,
            pipeline,
            seed,
            spare: std::sync::Mutex::new(Vec::new()),
            cache: None,
        })
    }

    /// Keeps decoded (and resized) patches in memory, up to `budget_bytes`, so that later
    /// epochs skip decoding them. Batches are bit-identical with and without the cache; the
    /// patches loaded first while it has room are the ones kept. Memory then grows with the
    /// dataset up to the budget, not only with the prefetch depth.
    pub fn with_decoded_cache(mut self, budget_bytes: usize) -> Self {
        self.cache = Some(PatchCache::new(self.dataset.samples.len(), budget_bytes));
        self
    }

    /// How full the decoded-patch cache is (`None` without one).
    pub fn cache_usage(&self) -> Option<CacheUsage> {
        self.cache.as_ref().map(PatchCache::usage)
    }

    /// Sample `index` decoded and, for per-image stains, estimated. Not resized: without the
    /// cache the pipeline resizes into the worker's reused buffer.
    fn decode(&self, index: usize) -> Result<Prepared> {
        let rgb = read_rgb8(&self.dataset.samples[index].path)?.image;
        let per_image = match self.stains.as_ref() {
            StainLookup::PerImage(conv) => Some(per_image_unmixer(&rgb, conv).0),
            StainLookup::Fixed(_) | StainLookup::PerGroup(_) => None,
        };
        Ok(Prepared { rgb, per_image })
    }

    /// Hands a finished batch's buffers back for reuse by later batches (optional: without
    /// it every batch allocates its own).
    pub fn recycle(&self, batch: Batch) {
        if let Ok(mut spare) = self.spare.lock() {
            for buf in [batch.h, batch.e] {
                if spare.len() < SPARE_BUFFERS {
                    spare.push(buf);
                }
            }
        }
    }

    /// A buffer of `len` values whose content will be overwritten entirely.
    fn buffer(&self, len: usize) -> Vec<f32> {
        let reused = self.spare.lock().ok().and_then(|mut s| s.pop());
        match reused {
            Some(mut b) => {
                b.resize(len, 0.0);
                b
            }
            None => vec![0f32; len],
        }
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Builds one batch, in parallel over its samples. The result does not depend on the
    /// number of threads; the first failing sample (in batch order) is the error.
    pub fn load(&self, req: &Request) -> Result<Batch> {
        let n = req.indices.len();
        let s = self.pipeline.config().crop as usize;
        let s2 = s * s;
        let views = req.views.max(1);
        if let Some(&bad) = req
            .indices
            .iter()
            .find(|&&i| i >= self.dataset.samples.len())
        {
            return Err(DataError::Config(format!(
                "sample index {bad} is out of range"
            )));
        }
        // Every value is written below, so reused buffers need no clearing.
        let mut h = self.buffer(views * n * s2);
        let mut e = self.buffer(views * n * s2);
        let mut items: Vec<(Slots<'_>, Slots<'_>)> =
            (0..n).map(|_| (Vec::new(), Vec::new())).collect();
        for (hv, ev) in h.chunks_mut(n * s2.max(1)).zip(e.chunks_mut(n * s2.max(1))) {
            for (i, (hc, ec)) in hv.chunks_mut(s2).zip(ev.chunks_mut(s2)).enumerate() {
                items[i].0.push(hc);
                items[i].1.push(ec);
            }
        }
        let results: Vec<Result<()>> = items
            .par_iter_mut()
            .enumerate()
            .map_init(Scratch::default, |scratch, (pos, (hs, es))| {
                let index = req.indices[pos];
                let held = match &self.cache {
                    Some(cache) => cache.get_or_load(index, || {
                        let Prepared { rgb, per_image } = self.decode(index)?;
                        let rgb = self.pipeline.prepare(rgb, scratch);
                        Ok::<_, DataError>(Prepared { rgb, per_image })
                    })?,
                    None => Arc::new(self.decode(index)?),
                };
                let rgb = &held.rgb;
                let unmixer = match self.stains.as_ref() {
                    StainLookup::Fixed(u) => u,
                    StainLookup::PerGroup(map) => &map[&self.dataset.samples[index].group],
                    // `decode` always estimates under PerImage; the fixed matrix is also
                    // what a failed estimate falls back to.
                    StainLookup::PerImage(_) => held.per_image.as_ref().unwrap_or(&PAPER_FIXED),
                };
                for (v, (ho, eo)) in hs.iter_mut().zip(es.iter_mut()).enumerate() {
                    match req.mode {
                        Mode::Eval => self.pipeline.eval_into(rgb, unmixer, scratch, ho, eo),
                        Mode::Train => {
                            let key = SampleKey {
                                seed: self.seed,
                                epoch: req.epoch,
                                draw: req.first_draw + pos as u64,
                                view: v as u64,
                            };
                            self.pipeline.train_into(rgb, unmixer, key, scratch, ho, eo);
                        }
                    }
                }
                Ok(())
            })
            .collect();
        drop(items);
        results.into_iter().collect::<Result<()>>()?;
        Ok(Batch {
            labels: req
                .indices
                .iter()
                .map(|&i| self.dataset.samples[i].label)
                .collect(),
            indices: req.indices.clone(),
            views,
            size: s,
            h,
            e,
        })
    }
}

/// Batches built ahead on a background thread, at most `depth` waiting: memory is bounded by
/// the queue depth, not by the dataset. Iterating yields the batches in request order.
#[derive(Debug)]
pub struct Prefetch {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    /// Set when the worker thread could not be started: the first item is this error.
    spawn_error: Option<DataError>,
}

impl Prefetch {
    /// Starts building the batches of `requests` in order.
    pub fn spawn<I>(source: Arc<Source>, requests: I, depth: usize) -> Self
    where
        I: IntoIterator<Item = Request>,
        I::IntoIter: Send + 'static,
    {
        let (tx, rx): (SyncSender<Result<Batch>>, _) = sync_channel(depth.max(1));
        let requests = requests.into_iter();
        let handle = std::thread::Builder::new()
            .name("classm-prefetch".into())
            .spawn(move || {
                for req in requests {
                    let r = source.load(&req);
                    let failed = r.is_err();
                    // The receiver hung up: the consumer stopped early.
                    if tx.send(r).is_err() || failed {
                        break;
                    }
                }
            });
        match handle {
            Ok(h) => Prefetch {
                rx: Some(rx),
                handle: Some(h),
                spawn_error: None,
            },
            Err(e) => Prefetch {
                rx: None,
                handle: None,
                spawn_error: Some(DataError::io("classm-prefetch thread", e)),
            },
        }
    }
}

impl Iterator for Prefetch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.spawn_error.take() {
            return Some(Err(e));
        }
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(b) => Some(b),
            Err(_) => {
                self.rx = None;
                let panicked = self
                    .handle
                    .take()
                    .map(JoinHandle::join)
                    .is_some_and(|r| r.is_err());
                panicked.then_some(Err(DataError::LoaderStopped))
            }
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Hang up first so that a producer blocked on a full queue returns.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
