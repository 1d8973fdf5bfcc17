//! Per-group (slide, case) stain matrices from classm-stain's slide estimator, computed once
//! and cached on disk; the fixed and per-image alternatives for ablations.

use std::collections::BTreeMap;
use std::path::Path;

use classm_stain::{
    Convention, EstimateOptions, PassState, RgbView, Sampling, SlideEstimator, StainEstimate, Tile,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::Dataset;
use crate::decode::read_rgb8;
use crate::error::{DataError, Result};
use crate::io::write_atomic;
use crate::unmix::Unmixer;

/// Format tag of the cache file.
pub const CACHE_FORMAT: &str = "classm-stain-cache/1";

/// Which stain matrix separates a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StainMode {
    /// One estimate per group from all its patches (CLASS-M).
    #[default]
    PerGroup,
    /// The paper's fixed matrix for every sample (ablation).
    Fixed,
    /// One estimate per patch, every pixel (ablation); the fixed matrix where it fails.
    PerImage,
}

/// What a group whose estimate fails gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    /// The paper's fixed matrix, reported.
    #[default]
    PaperFixed,
    /// The failure is an error.
    Error,
}

/// Settings of the per-group estimates.
#[derive(Debug, Clone, PartialEq)]
pub struct StainOptions {
    /// Convention, thresholds and artefact rules of the estimator. Its sampling is the
    /// coarsest used: see `min_samples`.
    pub estimate: EstimateOptions,
    /// A group with fewer pixels than `min_samples × step²` is sampled on a finer grid (down to
    /// every pixel) so that small groups still give an estimate.
    pub min_samples: u64,
    /// What a failed group gets.
    pub fallback: Fallback,
}

impl Default for StainOptions {
    fn default() -> Self {
        StainOptions {
            // classm-method.md §2: every 10th row and column of all the slide's tiles.
            estimate: EstimateOptions::new(Convention::classm())
                .with_sampling(Sampling::Grid { step: 10 }),
            min_samples: 100_000,
            fallback: Fallback::PaperFixed,
        }
    }
}

/// The separation of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupStain {
    /// Estimated from the group's pixels.
    Estimated(Box<StainEstimate>),
    /// The estimate failed; the paper's fixed matrix is used.
    Fallback {
        /// Why the estimate failed.
        reason: String,
    },
}

impl GroupStain {
    /// The unmixing tables.
    pub fn unmixer(&self) -> Unmixer {
        match self {
            GroupStain::Estimated(est) => Unmixer::from_estimate(est),
            GroupStain::Fallback { .. } => Unmixer::paper_fixed(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CacheEntry {
    key: String,
    files: usize,
    stain: GroupStain,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    format: String,
    groups: BTreeMap<String, CacheEntry>,
}

/// Stain separations per group.
#[derive(Debug, Clone)]
pub struct GroupStains {
    /// Per group: its separation and how many files it pooled.
    pub groups: BTreeMap<String, (GroupStain, usize)>,
    /// Groups estimated in this call.
    pub computed: usize,
    /// Groups taken from the cache.
    pub cached: usize,
}

impl GroupStains {
    /// Groups whose estimate failed, with the reason.
    pub fn fallbacks(&self) -> Vec<(&str, &str)> {
        self.groups
            .iter()
            .filter_map(|(g, (s, _))| match s {
                GroupStain::Fallback { reason } => Some((g.as_str(), reason.as_str())),
                GroupStain::Estimated(_) => None,
            })
            .collect()
    }

    /// Unmixing tables per group.
    pub fn unmixers(&self) -> BTreeMap<String, Unmixer> {
        self.groups
            .iter()
            .map(|(g, (s, _))| (g.clone(), s.unmixer()))
            .collect()
    }
}

/// Estimates every group of `dataset` (in parallel), reusing the entries of the cache file
/// `cache` whose key — options, group, and the group's file names and sizes — is unchanged, and
/// rewrites the cache atomically. `progress` is called once per group.
pub fn group_stains(
    dataset: &Dataset,
    opts: &StainOptions,
    cache: Option<&Path>,
    progress: &(dyn Fn() + Sync),
) -> Result<GroupStains> {
    opts.estimate
        .validate()
        .map_err(|e| DataError::Config(e.to_string()))?;
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in dataset.samples.iter().enumerate() {
        members.entry(&s.group).or_default().push(i);
    }
    let old = match cache {
        Some(p) if p.exists() => read_cache(p)?,
        _ => BTreeMap::new(),
    };
    let opts_json = serde_json::to_string(&opts.estimate).unwrap_or_default();
    let jobs: Vec<(&str, &Vec<usize>, String)> = members
        .iter()
        .map(|(g, idx)| Ok((*g, idx, group_key(dataset, g, idx, &opts_json, opts)?)))
        .collect::<Result<_>>()?;
    let results: Vec<Result<(String, CacheEntry, bool)>> = jobs
        .par_iter()
        .map(|(g, idx, key)| {
            let r = match old.get(*g) {
                Some(e) if e.key == *key => Ok(((*g).to_string(), e.clone(), true)),
                _ => {
                    let paths: Vec<&Path> = idx
                        .iter()
                        .map(|&i| dataset.samples[i].path.as_path())
                        .collect();
                    estimate_group(g, &paths, opts).map(|stain| {
                        (
                            (*g).to_string(),
                            CacheEntry {
                                key: key.clone(),
                                files: paths.len(),
                                stain,
                            },
                            false,
                        )
                    })
                }
            };
            progress();
            r
        })
        .collect();
    let mut groups = BTreeMap::new();
    let mut entries = BTreeMap::new();
    let (mut computed, mut cached) = (0, 0);
    for r in results {
        let (g, entry, hit) = r?;
        if hit {
            cached += 1;
        } else {
            computed += 1;
        }
        groups.insert(g.clone(), (entry.stain.clone(), entry.files));
        entries.insert(g, entry);
    }
    if let Some(p) = cache
        && computed > 0
    {
        let file = CacheFile {
            format: CACHE_FORMAT.into(),
            groups: entries,
        };
        let json = serde_json::to_string_pretty(&file)
            .map_err(|e| DataError::Config(format!("cannot serialise the stain cache: {e}")))?;
        write_atomic(p, json.as_bytes())?;
    }
    Ok(GroupStains {
        groups,
        computed,
        cached,
    })
}

fn read_cache(path: &Path) -> Result<BTreeMap<String, CacheEntry>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    match serde_json::from_str::<CacheFile>(&text) {
        Ok(f) if f.format == CACHE_FORMAT => Ok(f.groups),
        // An unreadable or older cache is only a cost: everything is recomputed and rewritten.
        Ok(_) | Err(_) => {
            tracing::warn!("{}: not a {CACHE_FORMAT} file; recomputing", path.display());
            Ok(BTreeMap::new())
        }
    }
}

fn group_key(
    dataset: &Dataset,
    group: &str,
    idx: &[usize],
    opts_json: &str,
    opts: &StainOptions,
) -> Result<String> {
    let mut h = Sha256::new();
    h.update(CACHE_FORMAT.as_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(opts_json.as_bytes());
    h.update(format!("{}|{:?}|", opts.min_samples, opts.fallback).as_bytes());
    h.update(group.as_bytes());
    let mut files: Vec<(String, u64)> = idx
        .iter()
        .map(|&i| {
            let s = &dataset.samples[i];
            let len = std::fs::metadata(&s.path)
                .map_err(|e| DataError::io(&s.path, e))?
                .len();
            Ok((dataset.relative_name(s), len))
        })
        .collect::<Result<_>>()?;
    files.sort();
    for (name, len) in files {
        h.update(format!("\n{name}\t{len}").as_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Groups up to this many files are decoded once and held; larger ones are decoded again for
/// every pass so that memory stays that of one image.
const IN_MEMORY_FILES: usize = 256;

fn estimate_group(group: &str, paths: &[&Path], opts: &StainOptions) -> Result<GroupStain> {
    let fail = |e: classm_stain::StainError| -> Result<GroupStain> {
        match opts.fallback {
            Fallback::Error => Err(DataError::Stain {
                group: group.to_string(),
                source: e,
            }),
            Fallback::PaperFixed => {
                tracing::warn!("group `{group}`: {e}; using the paper's fixed matrix");
                Ok(GroupStain::Fallback {
                    reason: e.to_string(),
                })
            }
        }
    };
    if paths.len() <= IN_MEMORY_FILES {
        let images = paths
            .iter()
            .map(|p| read_rgb8(p).map(|d| d.image))
            .collect::<Result<Vec<_>>>()?;
        let pixels: u64 = images
            .iter()
            .map(|i| u64::from(i.width()) * u64::from(i.height()))
            .sum();
        let est_opts = sampled(opts, pixels);
        let views = images
            .iter()
            .map(RgbView::try_from)
            .collect::<classm_stain::Result<Vec<_>>>();
        let views = match views {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        let tiles: Vec<Tile<'_>> = views.into_iter().map(Tile::new).collect();
        match SlideEstimator::run_parallel(est_opts, &tiles) {
            Ok(est) => Ok(GroupStain::Estimated(Box::new(est))),
            Err(e) => fail(e),
        }
    } else {
        // The sampling step needs the pixel count only: headers, not a decode of every file.
        let mut pixels = 0u64;
        for p in paths {
            let (w, h) = crate::decode::dimensions(p)?;
            pixels += u64::from(w) * u64::from(h);
        }
        let est_opts = sampled(opts, pixels);
        let mut read_error = None;
        let r = SlideEstimator::run_streaming(est_opts, |state: &mut PassState| {
            for p in paths {
                let d = match read_rgb8(p) {
                    Ok(d) => d,
                    Err(e) => {
                        read_error = Some(e);
                        return Err(classm_stain::StainError::Protocol {
                            reason: "a file could not be read".into(),
                        });
                    }
                };
                state.add(&Tile::new(RgbView::try_from(&d.image)?))?;
            }
            Ok(())
        });
        if let Some(e) = read_error {
            return Err(e);
        }
        match r {
            Ok(est) => Ok(GroupStain::Estimated(Box::new(est))),
            Err(e) => fail(e),
        }
    }
}

/// The configured grid, made finer for groups too small to give `min_samples` on it.
fn sampled(opts: &StainOptions, pixels: u64) -> EstimateOptions {
    let mut o = opts.estimate.clone();
    if let Sampling::Grid { step } = o.sampling {
        let mut s = step.max(1);
        while s > 1 && pixels / (u64::from(s) * u64::from(s)) < opts.min_samples {
            s -= 1;
        }
        o.sampling = Sampling::Grid { step: s };
    }
    o
}

/// Stain estimates of single images ([`StainMode::PerImage`]): every pixel, the paper's fixed
/// matrix where the estimate fails.
pub fn per_image_unmixer(
    rgb: &image::RgbImage,
    convention: &Convention,
) -> (Unmixer, Option<String>) {
    let opts = EstimateOptions::new(convention.clone());
    let est = RgbView::try_from(rgb).and_then(|v| classm_stain::estimate(v, &opts));
    match est {
        Ok(e) => (Unmixer::from_estimate(&e), None),
        Err(e) => (Unmixer::paper_fixed(), Some(e.to_string())),
    }
}
