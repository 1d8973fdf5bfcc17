//! The streaming estimator: tiles fed one at a time or in parallel into mergeable pass states.
//!
//! Pass order: background (only when I0 is estimated) → moments → angles → concentrations.
//! The plane comes from exact integer OD moments, the stain vectors from a 65 536-bin
//! pseudo-angle histogram in that plane, the maximum concentrations from concentration
//! histograms. Every state is integer counts, so merging is associative and commutative: the
//! result does not depend on tile order, grouping or thread count.

use std::sync::Arc;

use crate::convention::{I0Spec, MaxConcPixels};
use crate::error::{Result, StainError};
use crate::estimate::{
    Diagnostics, EstimateOptions, I0Source, OrderPolicy, StainEstimate, StainMatrix, Warning,
};
use crate::fit::{
    self, ANGLE_BINS, CONC_BINS, Moments, Plane, bin_of, dot, hist_quantile, pseudo_to_angle,
};
use crate::od::{OdLut, PairTable, dot3};
use crate::sampling::{Seen, Tile};

mod cells;
mod pass_state;
mod probe;
mod sinks;

use sinks::{AngleRule, angle_bin, conc_use};

use cells::{AngleCellRule, Cells, ConcRule};
use probe::{Below, Between, Probe, lump_and_check};

/// Fewer pixels than this in a pass: the angle and concentration passes run pixel by pixel.
/// Classifying the 64³ colour cells takes about 2 ms per pass on one thread, what counting
/// by cell saves on about 2 megapixels in the angle pass (about 1 ns per pixel) and on about
/// half a megapixel in the concentration pass (about 4).
const CELL_MIN_PIXELS: u64 = 1 << 21;

/// The pass a [`PassState`] accumulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Intensity histograms of bright neutral pixels, for the I0 estimate.
    Background,
    /// OD moments of the PCA pixels.
    Moments,
    /// Angle histogram in the fitted plane.
    Angles,
    /// Concentration histograms for the maximum concentrations and diagnostics.
    Concentrations,
}

#[derive(Debug)]
struct Common {
    opts: EstimateOptions,
}

#[derive(Debug)]
struct LutCtx {
    common: Arc<Common>,
    lut: OdLut,
    i0: [f64; 3],
    i0_source: I0Source,
    beta2: f64,
}

#[derive(Debug, Clone)]
struct PlaneCtx {
    lut: Arc<LutCtx>,
    plane: Plane,
    pca_pixels: u64,
    tissue_pixels: u64,
    seen: Seen,
    /// Plane coordinates (x, y) per channel value.
    lxy: PairTable,
    /// The moments pass's probe, for the cut-offs of both later passes.
    probe: Arc<Probe>,
    /// Pseudo-angles the angle pass lumps rather than bins.
    cut: Between,
    /// Counts by colour cell, for a pass over enough pixels to repay building them.
    cells: Option<Arc<Cells>>,
}

#[derive(Debug, Clone)]
struct VecCtx {
    plane: Arc<PlaneCtx>,
    matrix: StainMatrix,
    plane_angles_deg: [f64; 2],
    red_margin: f64,
    ruifrok_margin: f64,
    kept: u64,
    warnings: Vec<Warning>,
    lh: [[f32; 256]; 3],
    le: [[f32; 256]; 3],
    h_range: (f32, f32),
    e_range: (f32, f32),
    /// H and E concentrations the concentration pass lumps rather than bins.
    cuts: [Below; 2],
    /// Counts by colour cell, for a pass over enough pixels to repay building them.
    cells: Option<Arc<Cells>>,
}

#[derive(Debug, Clone)]
enum State {
    Background {
        common: Arc<Common>,
        hist: Box<[[u64; 256]; 3]>,
        n: u64,
    },
    Moments {
        ctx: Arc<LutCtx>,
        m: Moments,
        tissue: u64,
        probe: Probe,
    },
    Angles {
        ctx: Arc<PlaneCtx>,
        hist: Vec<u64>,
        kept: u64,
        lumped: u64,
    },
    Concentrations {
        ctx: Arc<VecCtx>,
        h: Vec<u64>,
        e: Vec<u64>,
        tissue: u64,
        neg: [u64; 2],
        lumped: [u64; 2],
    },
}

/// Mergeable accumulator of one pass. Create it with [`SlideEstimator::begin`], feed it tiles
/// with [`add`](Self::add), combine partial states with [`merge`](Self::merge), and hand it
/// back with [`SlideEstimator::finish_pass`].
#[derive(Debug, Clone)]
pub struct PassState {
    state: State,
    seen: Seen,
}

#[derive(Debug)]
enum Stage {
    Background(Arc<Common>),
    Moments(Arc<LutCtx>),
    Angles(Arc<PlaneCtx>),
    Concentrations(Arc<VecCtx>),
    Done(Box<StainEstimate>),
}

/// Slide-level stain estimation in constant memory.
///
/// Feed every tile of the slide once per pass. Each pass's state is mergeable, so tiles can be
/// processed in parallel or on several machines:
///
/// ```
/// use classm_stain::{EstimateOptions, RgbView, SlideEstimator, Tile};
/// # fn tiles() -> Vec<Vec<u8>> { vec![vec![255u8; 16 * 16 * 3]; 4] }
/// let mut est = SlideEstimator::new(EstimateOptions::default())?;
/// while let Some(_pass) = est.next_pass() {
///     let mut state = est.begin()?;
///     for (i, t) in tiles().iter().enumerate() {
///         state.add(&Tile::new(RgbView::new(16, 16, t)?).at(16 * i as u64, 0))?;
///     }
///     if let Err(e) = est.finish_pass(state) {
///         // all-white tiles: no tissue
///         assert_eq!(e.kind(), classm_stain::ErrorKind::EmptyTissue);
///         break;
///     }
/// }
/// # Ok::<(), classm_stain::StainError>(())
/// ```
#[derive(Debug)]
pub struct SlideEstimator {
    stage: Option<Stage>,
}

impl SlideEstimator {
    /// A new estimator (options are validated).
    pub fn new(opts: EstimateOptions) -> Result<Self> {
        opts.validate()?;
        let common = Arc::new(Common { opts });
        let stage = match common.opts.convention.i0 {
            I0Spec::Estimate { .. } => Stage::Background(common),
            I0Spec::Fixed(i0) => Stage::Moments(Arc::new(lut_ctx(common, i0, I0Source::Fixed))),
        };
        Ok(SlideEstimator { stage: Some(stage) })
    }

    /// The pass that needs tiles next, or `None` when the estimate is complete.
    pub fn next_pass(&self) -> Option<Pass> {
        match self.stage.as_ref()? {
            Stage::Background(_) => Some(Pass::Background),
            Stage::Moments(_) => Some(Pass::Moments),
            Stage::Angles(_) => Some(Pass::Angles),
            Stage::Concentrations(_) => Some(Pass::Concentrations),
            Stage::Done(_) => None,
        }
    }

    /// An empty state for the current pass. Call it once per worker and merge the results.
    pub fn begin(&self) -> Result<PassState> {
        let state = match self.stage.as_ref() {
            Some(Stage::Background(c)) => State::Background {
                common: c.clone(),
                hist: Box::new([[0; 256]; 3]),
                n: 0,
            },
            Some(Stage::Moments(c)) => State::Moments {
                ctx: c.clone(),
                m: Moments::default(),
                tissue: 0,
                probe: Probe::default(),
            },
            Some(Stage::Angles(c)) => State::Angles {
                ctx: c.clone(),
                hist: vec![0; ANGLE_BINS],
                kept: 0,
                lumped: 0,
            },
            Some(Stage::Concentrations(c)) => State::Concentrations {
                ctx: c.clone(),
                h: vec![0; CONC_BINS],
                e: vec![0; CONC_BINS],
                tissue: 0,
                neg: [0; 2],
                lumped: [0; 2],
            },
            Some(Stage::Done(_)) | None => {
                return Err(StainError::Protocol {
                    reason: "the estimate is already complete (or failed)".into(),
                });
            }
        };
        Ok(PassState {
            state,
            seen: Seen::default(),
        })
    }

    /// Completes the current pass with the merged state of all tiles. On an error the
    /// estimator is spent.
    pub fn finish_pass(&mut self, state: PassState) -> Result<()> {
        let stage = self.stage.take().ok_or_else(|| StainError::Protocol {
            reason: "the estimator failed earlier".into(),
        })?;
        let next = self.advance(stage, state)?;
        self.stage = Some(next);
        Ok(())
    }

    /// The finished estimate.
    pub fn estimate(self) -> Result<StainEstimate> {
        match self.stage {
            Some(Stage::Done(e)) => Ok(*e),
            _ => Err(StainError::Protocol {
                reason: "not every pass has been completed".into(),
            }),
        }
    }

    /// Runs every pass over `tiles`, in parallel with rayon. Deterministic.
    pub fn run_parallel(opts: EstimateOptions, tiles: &[Tile<'_>]) -> Result<StainEstimate> {
        let mut est = SlideEstimator::new(opts)?;
        while est.next_pass().is_some() {
            let empty = est.begin()?;
            est.finish_pass(empty.add_all_parallel(tiles)?)?;
        }
        est.estimate()
    }

    /// Runs every pass, calling `feed` once per pass to add all tiles (for example by reading
    /// them from disk again). Memory stays that of one state plus what `feed` holds.
    pub fn run_streaming<F>(opts: EstimateOptions, mut feed: F) -> Result<StainEstimate>
    where
        F: FnMut(&mut PassState) -> Result<()>,
    {
        let mut est = SlideEstimator::new(opts)?;
        while est.next_pass().is_some() {
            let mut state = est.begin()?;
            feed(&mut state)?;
            est.finish_pass(state)?;
        }
        est.estimate()
    }

    fn advance(&self, stage: Stage, state: PassState) -> Result<Stage> {
        match (stage, state.state) {
            (Stage::Background(common), State::Background { hist, n, .. }) => {
                let fallback = match common.opts.convention.i0 {
                    I0Spec::Estimate { fallback } | I0Spec::Fixed(fallback) => fallback,
                };
                let (i0, src) = estimate_i0(&hist, n, state.seen.usable())
                    .map_or((fallback, I0Source::Fallback), |v| (v, I0Source::Estimated));
                Ok(Stage::Moments(Arc::new(lut_ctx(common, i0, src))))
            }
            (
                Stage::Moments(ctx),
                State::Moments {
                    m, tissue, probe, ..
                },
            ) => fit_plane(ctx, m, tissue, state.seen, probe).map(Stage::Angles),
            (
                Stage::Angles(ctx),
                State::Angles {
                    mut hist,
                    kept,
                    lumped,
                    ..
                },
            ) => {
                let a = ctx.lut.common.opts.convention.alpha_percent / 100.0;
                let range = angle_bin(ctx.cut.lo)..=angle_bin(ctx.cut.hi);
                if !lump_and_check(&mut hist, lumped, range, &[a, 1.0 - a]) {
                    // The probe misled: a percentile lies among the lumped pixels.
                    return Ok(Stage::Angles(Arc::new(PlaneCtx {
                        cut: Between::default(),
                        cells: None,
                        ..(*ctx).clone()
                    })));
                }
                fit_vectors(ctx, &hist, kept).map(Stage::Concentrations)
            }
            (
                Stage::Concentrations(ctx),
                State::Concentrations {
                    mut h,
                    mut e,
                    tissue,
                    neg,
                    lumped,
                    ..
                },
            ) => {
                let q = ctx.plane.lut.common.opts.convention.max_conc_percentile / 100.0;
                let ok_h = lump_and_check(&mut h, lumped[0], 0..=conc_bin(&ctx, 0), &[q]);
                let ok_e = lump_and_check(&mut e, lumped[1], 0..=conc_bin(&ctx, 1), &[q]);
                if !(ok_h && ok_e) {
                    return Ok(Stage::Concentrations(Arc::new(VecCtx {
                        cuts: [Below::default(); 2],
                        cells: None,
                        ..(*ctx).clone()
                    })));
                }
                Ok(Stage::Done(Box::new(finish(&ctx, &h, &e, tissue, neg))))
            }
            _ => Err(StainError::Protocol {
                reason: "the state belongs to another pass".into(),
            }),
        }
    }
}

fn lut_ctx(common: Arc<Common>, i0: [f64; 3], i0_source: I0Source) -> LutCtx {
    let beta = common.opts.convention.beta;
    LutCtx {
        lut: OdLut::new(&common.opts.convention, i0),
        common,
        i0,
        i0_source,
        beta2: beta * beta,
    }
}

/// Per-channel mode of the bright, near-neutral pixels (ties go to the brighter value). Needs
/// at least 0.1 % of the usable pixels and 100 pixels of background.
fn estimate_i0(hist: &[[u64; 256]; 3], n: u64, usable: u64) -> Option<[f64; 3]> {
    if n < 100 || n * 1000 < usable {
        return None;
    }
    let mut i0 = [255.0; 3];
    for c in 0..3 {
        let mut best = (0u64, 255usize);
        for (v, &count) in hist[c].iter().enumerate() {
            if count >= best.0 {
                best = (count, v);
            }
        }
        i0[c] = best.1.max(1) as f64;
    }
    Some(i0)
}

/// The bin of stain `k`'s concentration cut-off.
fn conc_bin(ctx: &VecCtx, k: usize) -> usize {
    let (lo, inv) = ctx.conc_scale(k);
    bin_of(ctx.cuts[k].below, lo, inv, CONC_BINS)
}

impl VecCtx {
    /// Stain `k`'s concentration histogram: its lower end and bins per unit. The pass and the
    /// cut-off's bin must use the same values, bit for bit.
    fn conc_scale(&self, k: usize) -> (f32, f32) {
        let (lo, hi) = if k == 0 { self.h_range } else { self.e_range };
        (lo, CONC_BINS as f32 / (hi - lo))
    }
}

fn fit_plane(
    ctx: Arc<LutCtx>,
    m: Moments,
    tissue: u64,
    seen: Seen,
    probe: Probe,
) -> Result<Arc<PlaneCtx>> {
    let o = &ctx.common.opts;
    if tissue == 0 {
        return Err(StainError::EmptyTissue {
            kept: 0,
            total: seen.sampled,
        });
    }
    if tissue < o.min_pixels.max(3) {
        return Err(StainError::TooFewPixels {
            kept: tissue,
            min: o.min_pixels.max(3),
        });
    }
    let plane = Plane::from_covariance(m.covariance());
    let [l1, l2, _] = plane.eigenvalues;
    if l1.is_nan() || l1 <= 1e-12 || l2 <= o.rank_epsilon * l1 {
        return Err(StainError::RankDeficient {
            eigenvalues: plane.eigenvalues,
        });
    }
    let lxy = ctx.lut.weighted_pair(plane.v[0], plane.v[1]);
    let rule = AngleRule::new(&ctx, &lxy);
    let angles = probe
        .pixels()
        .iter()
        .filter_map(|&[r, g, b]| rule.angle(r, g, b))
        .collect();
    let cut = Between::from_sample(angles, o.convention.alpha_percent / 100.0);
    let cells = (cut != Between::default() && seen.sampled >= CELL_MIN_PIXELS).then(|| {
        Arc::new(Cells::angles(&AngleCellRule {
            lxy: &lxy,
            sq: &ctx.lut.sq,
            od: &ctx.lut.od,
            rule: o.convention.tissue_rule,
            beta: o.convention.beta,
            beta2: ctx.beta2,
            cut,
            artefacts: o.artefacts,
        }))
    });
    Ok(Arc::new(PlaneCtx {
        lut: ctx,
        plane,
        pca_pixels: m.n,
        tissue_pixels: tissue,
        seen,
        lxy,
        probe: Arc::new(probe),
        cut,
        cells,
    }))
}

fn fit_vectors(ctx: Arc<PlaneCtx>, hist: &[u64], kept: u64) -> Result<Arc<VecCtx>> {
    let o = &ctx.lut.common.opts;
    if kept == 0 {
        return Err(StainError::EmptyTissue {
            kept: 0,
            total: ctx.seen.sampled,
        });
    }
    if kept < o.min_pixels.max(3) {
        return Err(StainError::TooFewPixels {
            kept,
            min: o.min_pixels.max(3),
        });
    }
    let a = o.convention.alpha_percent / 100.0;
    let lo = hist_quantile(hist, -2.0, 2.0, a).unwrap_or(0.0);
    let hi = hist_quantile(hist, -2.0, 2.0, 1.0 - a).unwrap_or(0.0);
    let (ta, tb) = (pseudo_to_angle(lo), pseudo_to_angle(hi));
    let va = ctx.plane.direction(ta);
    let vb = ctx.plane.direction(tb);
    // Red-OD rule: the vector with the larger red component is hematoxylin.
    let (h, e, th, te) = if va[0] >= vb[0] {
        (va, vb, ta, tb)
    } else {
        (vb, va, tb, ta)
    };
    let matrix = StainMatrix { h, e };
    let separation = matrix.separation_deg();
    let red_margin = h[0] - e[0];
    let rh = fit::normalize(fit::RUIFROK_H);
    let re = fit::normalize(fit::RUIFROK_E);
    let ruifrok_margin = (dot(h, rh) + dot(e, re)) - (dot(h, re) + dot(e, rh));
    if separation.is_nan() || separation < o.min_separation_deg {
        return Err(StainError::SingleStainSuspected {
            separation_deg: separation,
            min_deg: o.min_separation_deg,
        });
    }
    for (name, v) in [("H", h), ("E", e)] {
        let component = v[0].min(v[1]).min(v[2]);
        if component < o.min_component {
            return Err(StainError::ImplausibleStain {
                stain: name.into(),
                component,
                min: o.min_component,
            });
        }
    }
    let mut warnings = Vec::new();
    if ctx.lut.i0_source == I0Source::Fallback {
        warnings.push(Warning::I0Fallback);
    }
    if red_margin < o.min_red_margin
        || (o.ruifrok_check && (ruifrok_margin.is_nan() || ruifrok_margin <= 0.0))
    {
        match o.on_ambiguous_order {
            OrderPolicy::Error => {
                return Err(StainError::AmbiguousOrder {
                    red_margin,
                    ruifrok_margin,
                });
            }
            OrderPolicy::Flag => warnings.push(Warning::AmbiguousOrder {
                red_margin,
                ruifrok_margin,
            }),
        }
    }
    let pinv = matrix.pseudo_inverse();
    let lh = ctx.lut.lut.weighted(pinv[0]);
    let le = ctx.lut.lut.weighted(pinv[1]);
    let range = |t: &[[f32; 256]; 3]| -> (f32, f32) {
        let mut lo = 0f32;
        let mut hi = 0f32;
        for c in t {
            lo += c.iter().copied().fold(f32::INFINITY, f32::min);
            hi += c.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        }
        (lo, hi + 1e-3 * (hi - lo).abs().max(1e-3))
    };
    let (mut h_range, mut e_range) = (range(&lh), range(&le));
    if let MaxConcPixels::ConcAtLeast(t) = o.convention.max_conc_pixels {
        let t = t as f32;
        h_range = (t, h_range.1.max(t + 1e-3));
        e_range = (t, e_range.1.max(t + 1e-3));
    }
    let cuts = conc_cuts(&ctx, [&lh, &le], [h_range.0, e_range.0]);
    let cells = (cuts != [Below::default(); 2] && ctx.seen.sampled >= CELL_MIN_PIXELS).then(|| {
        Arc::new(Cells::concentrations(&ConcRule {
            lh: &lh,
            le: &le,
            sq: &ctx.lut.lut.sq,
            beta2: ctx.lut.beta2,
            lows: [h_range.0, e_range.0],
            mode: o.convention.max_conc_pixels,
            cuts,
            artefacts: o.artefacts,
        }))
    });
    Ok(Arc::new(VecCtx {
        plane: ctx,
        matrix,
        plane_angles_deg: [th.to_degrees(), te.to_degrees()],
        red_margin,
        ruifrok_margin,
        kept,
        warnings,
        lh,
        le,
        h_range,
        e_range,
        cuts,
        cells,
    }))
}

/// The concentration pass's cut-offs, from the probe pixels it would use.
fn conc_cuts(ctx: &PlaneCtx, tables: [&[[f32; 256]; 3]; 2], lows: [f32; 2]) -> [Below; 2] {
    let lc = &ctx.lut;
    let c = &lc.common.opts.convention;
    let mut values = [Vec::new(), Vec::new()];
    for &[r, g, b] in ctx.probe.pixels() {
        let [ch, ce] = tables.map(|t| dot3(t, r, g, b));
        let tissue = lc.lut.norm_sq(r, g, b) >= lc.beta2;
        let uses = conc_use(c.max_conc_pixels, tissue, ch >= lows[0], ce >= lows[1]);
        for (k, (used, v)) in [(uses.0, ch), (uses.1, ce)].into_iter().enumerate() {
            if used {
                values[k].push(v);
            }
        }
    }
    values.map(|v| Below::from_sample(v, c.max_conc_percentile / 100.0))
}

fn finish(ctx: &VecCtx, h: &[u64], e: &[u64], tissue: u64, neg: [u64; 2]) -> StainEstimate {
    let pc = &ctx.plane;
    let lc = &pc.lut;
    let o = &lc.common.opts;
    let q = o.convention.max_conc_percentile / 100.0;
    let mh = hist_quantile(h, ctx.h_range.0 as f64, ctx.h_range.1 as f64, q).unwrap_or(0.0);
    let me = hist_quantile(e, ctx.e_range.0 as f64, ctx.e_range.1 as f64, q).unwrap_or(0.0);
    let seen = pc.seen;
    let frac = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let ev = pc.plane.eigenvalues;
    StainEstimate {
        matrix: ctx.matrix,
        max_conc: [mh, me],
        i0: lc.i0,
        i0_source: lc.i0_source,
        convention: o.convention.clone(),
        sampling: o.sampling,
        diagnostics: Diagnostics {
            total_pixels: seen.pixels,
            sampled_pixels: seen.sampled,
            sampling_rate: frac(seen.sampled, seen.pixels),
            excluded_masked: seen.masked,
            excluded_dark: seen.dark,
            excluded_saturated: seen.saturated,
            excluded_fraction: frac(seen.excluded(), seen.sampled),
            tissue_pixels: pc.tissue_pixels,
            pca_pixels: pc.pca_pixels,
            kept_pixels: ctx.kept,
            kept_fraction: frac(ctx.kept, seen.sampled),
            eigenvalues: ev,
            eigenvalue_ratio: if ev[0] > 0.0 { ev[1] / ev[0] } else { 0.0 },
            separation_deg: ctx.matrix.separation_deg(),
            plane_angles_deg: ctx.plane_angles_deg,
            red_margin: ctx.red_margin,
            ruifrok_margin: ctx.ruifrok_margin,
            negative_fraction: [frac(neg[0], tissue), frac(neg[1], tissue)],
            max_conc_pixels: [h.iter().sum(), e.iter().sum()],
            warnings: ctx.warnings.clone(),
        },
        fallback: None,
    }
}
