//! Adaptive Macenko H&E stain separation: per image and per slide, fast, deterministic and
//! defensive.
//!
//! - [`estimate`] fits the hematoxylin and eosin vectors of one image and reports diagnostics;
//!   [`SlideEstimator`] does the same for a whole slide in constant memory, tile by tile.
//! - [`Separator`] turns an estimate into concentration maps, CLASS-M model inputs
//!   `clip(c / (2·max), 0, 1)`, or single-stain RGB renderings.
//! - [`Normalizer`] maps an image's stains onto a serialisable [`NormalizationTarget`].
//!
//! Every numeric choice lives in a [`Convention`] recorded in each result: [`Convention::classm`]
//! (the CLASS-M paper, default) or [`Convention::macenko2009`] (MATLAB / torchstain).
//! Degenerate input is a typed [`StainError`], never a panic or a NaN; the caller's pixels are
//! never written.
//!
//! ```
//! use classm_stain::{estimate, EstimateOptions, Output, RgbView, Separator};
//!
//! // A synthetic two-stain image: hematoxylin and eosin in varying amounts.
//! let (w, h) = (64usize, 64usize);
//! let hv = [0.65f64, 0.70, 0.29];
//! let ev = [0.07f64, 0.99, 0.11];
//! let mut px = Vec::with_capacity(w * h * 3);
//! for y in 0..h {
//!     for x in 0..w {
//!         let (ch, ce) = (1.2 * x as f64 / w as f64, 0.8 * y as f64 / h as f64);
//!         for c in 0..3 {
//!             let od = ch * hv[c] + ce * ev[c];
//!             px.push((255.0 * 10f64.powf(-od)).round() as u8);
//!         }
//!     }
//! }
//! let image = RgbView::new(w, h, &px)?;
//! let est = estimate(image, &EstimateOptions::default())?;
//! assert!(est.diagnostics.separation_deg > 20.0);
//! let maps = Separator::new(&est)?.separate(image, Output::ModelInput)?;
//! assert!(maps.h.iter().all(|v| (0.0..=1.0).contains(v)));
//! # Ok::<(), classm_stain::StainError>(())
//! ```
#![deny(missing_docs)]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod convention;
mod error;
mod estimate;
mod fit;
#[cfg(feature = "image")]
mod image_interop;
mod normalize;
mod od;
mod sampling;
mod separate;
mod slide;
mod view;

pub use convention::{
    Convention, I0Spec, LogBase, MaxConcPixels, OffsetRule, PcaPixels, TissueRule,
};
pub use error::{ErrorKind, Result, StainError};
pub use estimate::{
    Diagnostics, EstimateOptions, I0Source, OrderPolicy, StainEstimate, StainMatrix, Warning,
    estimate, estimate_and_separate, estimate_and_separate_into, estimate_masked, estimate_tile,
};
pub use fit::{RUIFROK_E, RUIFROK_H};
#[cfg(feature = "image")]
pub use image_interop::{Conversion, Converted, rgb8_from_dynamic};
pub use normalize::{NormalizationTarget, Normalizer, TARGET_FORMAT};
pub use sampling::{Artefacts, Sampling, Seen, Tile};
pub use separate::{Maps, Output, Separator, Stain};
pub use slide::{Pass, PassState, SlideEstimator};
pub use view::{FloatRange, MaskView, RgbView, rgb_from_f32, rgb_from_rgba};
