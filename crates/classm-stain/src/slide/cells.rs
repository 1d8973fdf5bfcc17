//! Counts by colour cell for the angle and concentration passes: the RGB cube cut into 64³
//! cells of 4³ colours. Where every colour of a cell adds to the same counters (artefact,
//! kept, lumped, tissue, negative H or E) and none of them is binned, a pixel of that cell is
//! one table lookup and one increment; only pixels of mixed cells take the per-pixel path.
//! With the probe's cut-offs, most pixels are lumped, so most cells count alike.
//!
//! A cell's range of each per-pixel value comes from the per-channel minima and maxima of
//! its lookup tables, summed in the per-pixel order: rounding is monotone, so the bounds hold
//! for the values the per-pixel path computes, and the counts are the same.

use rayon::prelude::*;

use crate::convention::{MaxConcPixels, TissueRule};
use crate::fit::pseudo_angle;
use crate::od::PairTable;
use crate::sampling::{Artefacts, Sink, artefact, one_by_one};

use super::probe::{Below, Between};
use super::sinks::conc_use;

/// Values per channel in one cell.
const SIDE: usize = 4;
const CELLS: usize = 256 / SIDE;
/// Cells whose colours do not all count alike.
pub(super) const MIXED: u8 = 0x80;
pub(super) const DARK: u8 = 1;
pub(super) const SATURATED: u8 = 2;
pub(super) const TISSUE: u8 = 4;
pub(super) const NEG_H: u8 = 8;
pub(super) const NEG_E: u8 = 16;
pub(super) const LUMP_H: u8 = 32;
pub(super) const LUMP_E: u8 = 64;

/// Angle pass: kept (tissue by the pass's rule), and kept and lumped.
pub(super) const KEPT: u8 = 4;
pub(super) const KEPT_LUMPED: u8 = 8;

/// A cell's class, or [`MIXED`], for each of the 64³ cells.
#[derive(Debug)]
pub(super) struct Cells {
    /// A fixed-size array, so that indexing it by a colour needs no bounds check.
    class: Box<[u8; CELLS * CELLS * CELLS]>,
}

type Ranges32 = [[(f32, f32); CELLS]; 3];
type Ranges64 = [[(f64, f64); CELLS]; 3];

/// Each table's range over each channel's cells, and the pass's rules.
#[derive(Debug)]
enum Bounds {
    Angles {
        x: Ranges32,
        y: Ranges32,
        sq: Ranges64,
        /// Only the all-channels rule reads it (boxed: the variants stay the same size).
        od: Box<Ranges64>,
        rule: TissueRule,
        beta: f64,
        beta2: f64,
        cut: Between,
    },
    Concentrations {
        h: Ranges32,
        e: Ranges32,
        sq: Ranges64,
        beta2: f64,
        lows: [f32; 2],
        mode: MaxConcPixels,
        cuts: [Below; 2],
    },
}

/// What the angle pass computes per pixel, as the cells need it.
pub(super) struct AngleCellRule<'a> {
    pub(super) lxy: &'a PairTable,
    pub(super) sq: &'a [[f64; 256]; 3],
    pub(super) od: &'a [[f64; 256]; 3],
    pub(super) rule: TissueRule,
    pub(super) beta: f64,
    pub(super) beta2: f64,
    pub(super) cut: Between,
    pub(super) artefacts: Artefacts,
}

/// What the concentration pass computes per pixel, as the cells need it.
pub(super) struct ConcRule<'a> {
    pub(super) lh: &'a [[f32; 256]; 3],
    pub(super) le: &'a [[f32; 256]; 3],
    pub(super) sq: &'a [[f64; 256]; 3],
    pub(super) beta2: f64,
    pub(super) lows: [f32; 2],
    pub(super) mode: MaxConcPixels,
    pub(super) cuts: [Below; 2],
    pub(super) artefacts: Artefacts,
}

/// Lower and upper bounds of a per-channel table over each cell's values.
fn ranges<T: Copy + PartialOrd>(t: &[[T; 256]; 3]) -> [[(T, T); CELLS]; 3] {
    std::array::from_fn(|c| {
        std::array::from_fn(|i| {
            let vals = &t[c][i * SIDE..(i + 1) * SIDE];
            vals.iter().fold((vals[0], vals[0]), |(lo, hi), &v| {
                (if v < lo { v } else { lo }, if v > hi { v } else { hi })
            })
        })
    })
}

/// Bounds of `t[0][r] + t[1][g] + t[2][b]` over cell (i, j, k), summed in that order.
#[inline(always)]
fn sum<T: Copy + std::ops::Add<Output = T>>(
    t: &[[(T, T); CELLS]; 3],
    i: usize,
    j: usize,
    k: usize,
) -> (T, T) {
    (
        t[0][i].0 + t[1][j].0 + t[2][k].0,
        t[0][i].1 + t[1][j].1 + t[2][k].1,
    )
}

/// Bounds of `min(t[0][r], t[1][g], t[2][b])` over cell (i, j, k).
#[inline(always)]
fn min3(t: &[[(f64, f64); CELLS]; 3], i: usize, j: usize, k: usize) -> (f64, f64) {
    (
        t[0][i].0.min(t[1][j].0).min(t[2][k].0),
        t[0][i].1.min(t[1][j].1).min(t[2][k].1),
    )
}

/// Bounds of `|v|` for `v` in `(lo, hi)`.
#[inline(always)]
fn abs_range((lo, hi): (f32, f32)) -> (f32, f32) {
    let (a, b) = (lo.abs(), hi.abs());
    let straddles = (lo <= 0.0) & (hi >= 0.0);
    (if straddles { 0.0 } else { a.min(b) }, a.max(b))
}

/// Pseudo-angles computed in f32 may step back by an ulp or so where the exact ones rise:
/// corner values are trusted only this far inside the cut-offs.
const ANGLE_SLACK: f32 = 1e-4;

// The two class functions below run for every cell of the cube before a pass: they are
// written without branches (`&` and `|` on bools, selects) so that a row of 64 cells
// vectorises; each is the per-pixel rule applied to both ends of the cell's bounds.

/// The angle pass's class of non-artefact pixels with plane coordinates in `(x, y)` whose
/// rule keeps the lower and upper ends of the cell as `kept`, or [`MIXED`] unless all agree
/// and none is binned.
#[inline(always)]
fn angle_class(
    (x, y): ((f32, f32), (f32, f32)),
    (kept, kept_hi): (bool, bool),
    cut: Between,
) -> u8 {
    // Corners' angles bound the box's, unless it holds the origin or crosses the negative x
    // axis, where the pseudo-angle jumps from 2 to -2.
    let crosses = (x.0 <= 0.0) & (y.0 <= 0.0) & (y.1 >= 0.0);
    let corners = [(x.0, y.0), (x.0, y.1), (x.1, y.0), (x.1, y.1)].map(|(a, b)| pseudo_angle(a, b));
    let lo = corners[0].min(corners[1]).min(corners[2]).min(corners[3]);
    let hi = corners[0].max(corners[1]).max(corners[2]).max(corners[3]);
    let lumped = cut.lumps(lo - ANGLE_SLACK) & cut.lumps(hi + ANGLE_SLACK);
    let class = if kept { KEPT | KEPT_LUMPED } else { 0 };
    let pure = (kept == kept_hi) & (!kept | (!crosses & lumped));
    if pure { class } else { MIXED }
}

/// Lower and upper bound of a value over a cell.
type Bound = (f32, f32);

/// A row of the angle pass's classes: `xy(k)` gives cell k's box in the plane, `kept` the
/// tissue rule at both ends of the cell, `artefact` the artefact classes.
#[inline(always)]
fn angle_row(
    row: &mut [u8],
    xy: impl Fn(usize) -> (Bound, Bound),
    kept: impl Fn(usize, Bound, Bound) -> (bool, bool),
    artefact: impl Fn(usize, u8) -> u8,
    cut: Between,
) {
    for (k, c) in row.iter_mut().enumerate() {
        let (x, y) = xy(k);
        *c = artefact(k, angle_class((x, y), kept(k, x, y), cut));
    }
}

/// Whether the projected-norm rule keeps the lower and upper ends of a box in the plane.
#[inline(always)]
fn projected_norm_keeps(x: (f32, f32), y: (f32, f32), b2: f32) -> (bool, bool) {
    let ((ax0, ax1), (ay0, ay1)) = (abs_range(x), abs_range(y));
    (ax0 * ax0 + ay0 * ay0 >= b2, ax1 * ax1 + ay1 * ay1 >= b2)
}

/// The concentration pass's class of non-artefact pixels with concentrations in `conc` and
/// squared OD norm in `sq`, or [`MIXED`] unless all agree and none is binned.
#[inline(always)]
fn conc_class(
    conc: [(f32, f32); 2],
    sq: (f64, f64),
    beta2: f64,
    lows: [f32; 2],
    mode: MaxConcPixels,
    cuts: [Below; 2],
) -> u8 {
    let tissue = sq.0 >= beta2;
    let mut pure = tissue == (sq.1 >= beta2);
    let mut class = if tissue { TISSUE } else { 0 };
    let by_range = matches!(mode, MaxConcPixels::ConcAtLeast(_));
    for (s, ((lo, hi), (neg_bit, lump_bit))) in conc
        .into_iter()
        .zip([(NEG_H, LUMP_H), (NEG_E, LUMP_E)])
        .enumerate()
    {
        pure &= !tissue | ((lo < 0.0) == (hi < 0.0));
        let in_range = lo >= lows[s];
        pure &= !by_range | (in_range == (hi >= lows[s]));
        // conc_use takes both stains' answers; only stain `s`'s is read here.
        let (uh, ue) = conc_use(mode, tissue, in_range, in_range);
        let used = if s == 0 { uh } else { ue };
        // Used pixels must all be lumped: a binned pixel needs its own value.
        pure &= !used | (cuts[s].lumps(lo) & cuts[s].lumps(hi));
        class |= if tissue & (lo < 0.0) { neg_bit } else { 0 } | if used { lump_bit } else { 0 };
    }
    if pure { class } else { MIXED }
}

impl Cells {
    /// The angle pass's cells.
    pub(super) fn angles(rule: &AngleCellRule<'_>) -> Self {
        let part = |p: usize| -> [[f32; 256]; 3] {
            std::array::from_fn(|c| std::array::from_fn(|v| rule.lxy[c][v][p]))
        };
        Self::new(
            rule.artefacts,
            Bounds::Angles {
                x: ranges(&part(0)),
                y: ranges(&part(1)),
                sq: ranges(rule.sq),
                od: Box::new(ranges(rule.od)),
                rule: rule.rule,
                beta: rule.beta,
                beta2: rule.beta2,
                cut: rule.cut,
            },
        )
    }

    /// The concentration pass's cells.
    pub(super) fn concentrations(rule: &ConcRule<'_>) -> Self {
        Self::new(
            rule.artefacts,
            Bounds::Concentrations {
                h: ranges(rule.lh),
                e: ranges(rule.le),
                sq: ranges(rule.sq),
                beta2: rule.beta2,
                lows: rule.lows,
                mode: rule.mode,
                cuts: rule.cuts,
            },
        )
    }

    /// Every cell classified before the pass, a row at a time on the rayon threads (about
    /// 2 ms on one thread). Classifying cells lazily, as pixels reached them, wrote into a
    /// table the other thread was reading: the passes then ran only 1.3-1.5 times faster on
    /// two threads than on one, against 1.6-2 times with the table complete (alternating
    /// runs, 6.6 MP image in 1,024-pixel tiles).
    fn new(artefacts: Artefacts, bounds: Bounds) -> Self {
        let rule = Rule { bounds, artefacts };
        let mut class = Box::new([MIXED; CELLS * CELLS * CELLS]);
        class
            .par_chunks_mut(CELLS * CELLS)
            .enumerate()
            .for_each(|(i, slab)| {
                for (j, row) in slab.chunks_exact_mut(CELLS).enumerate() {
                    rule.classify_row(i, j, row);
                }
            });
        Cells { class }
    }

    /// The class of colour (r, g, b).
    #[inline(always)]
    pub(super) fn class(&self, r: u8, g: u8, b: u8) -> u8 {
        let (i, j, k) = (
            usize::from(r) / SIDE,
            usize::from(g) / SIDE,
            usize::from(b) / SIDE,
        );
        self.class[(i * CELLS + j) * CELLS + k]
    }

    /// Counts `px` by cell: each pixel of a pure cell into `tally`, each pixel of a mixed cell
    /// through the artefact test and `sink.pixel`. Returns the dark and saturated pixels of
    /// mixed cells (the tally holds the others), as [`Sink::chunk`].
    #[inline(always)]
    pub(super) fn count<S: Sink>(
        &self,
        sink: &mut S,
        tally: &mut Tally,
        px: &[u8],
        dark: i16,
        sat: bool,
    ) -> (u64, u64) {
        let (mut n_dark, mut n_sat) = (0u64, 0u64);
        for (i, p) in px.chunks_exact(3).enumerate() {
            let (r, g, b) = (p[0], p[1], p[2]);
            let class = self.class(r, g, b);
            if class & MIXED == 0 {
                tally.add(i, class);
                continue;
            }
            match artefact(r, g, b, dark, sat) {
                (true, _) => n_dark += 1,
                (_, true) => n_sat += 1,
                _ => sink.pixel(r, g, b),
            }
        }
        (n_dark, n_sat)
    }
}

/// A pass's sink that counts by colour cell where the pass has cells.
pub(super) trait CellSink<'a>: Sink + Sized {
    /// The pass's cells, if it has them.
    fn cells(&self) -> Option<&'a Cells>;
    /// The sink's tally, created by the first chunk counted by cell.
    fn tally(&mut self) -> &mut Option<Box<Tally>>;

    /// [`Sink::chunk`] by colour cell: one lookup and one increment for a pixel whose cell
    /// counts alike, the per-pixel path for the others (and for every pixel without cells).
    #[inline(always)]
    fn chunk_by_cell(&mut self, px: &[u8], dark: i16, sat: bool) -> (u64, u64) {
        let Some(cells) = self.cells() else {
            return one_by_one(self, px, dark, sat);
        };
        let mut tally = self.tally().take().unwrap_or_default();
        let counts = cells.count(self, &mut tally, px, dark, sat);
        *self.tally() = Some(tally);
        counts
    }
}

/// What a cell's class is computed from.
struct Rule {
    bounds: Bounds,
    artefacts: Artefacts,
}

impl Rule {
    /// The classes of cells (i, j, 0..64): artefacts here, the rest from the pass's bounds.
    fn classify_row(&self, i: usize, j: usize, row: &mut [u8]) {
        let dark = self.artefacts.dark_max.map_or(-1i32, i32::from);
        let top = |x: usize| (x * SIDE + SIDE - 1) as i32;
        let bottom = |x: usize| (x * SIDE) as i32;
        let saturated = self.artefacts.saturated;
        // Dark: the brightest channel at most `dark`, monotone in each channel. Saturated: a
        // channel at 0, which only the first cell of a channel holds.
        let artefact = |k: usize, class: u8| -> u8 {
            let all_dark = top(i).max(top(j)).max(top(k)) <= dark;
            let none_dark = bottom(i).max(bottom(j)).max(bottom(k)) > dark;
            let maybe_saturated = saturated & ((i == 0) | (j == 0) | (k == 0));
            if all_dark {
                DARK
            } else if !none_dark | maybe_saturated {
                MIXED
            } else {
                class
            }
        };
        match &self.bounds {
            Bounds::Angles {
                x,
                y,
                sq,
                od,
                rule,
                beta,
                beta2,
                cut,
            } => {
                // One loop per tissue rule, so that each is straight-line code.
                let xy = |k: usize| (sum(x, i, j, k), sum(y, i, j, k));
                match rule {
                    TissueRule::ProjectedNorm => {
                        let b2 = *beta2 as f32;
                        angle_row(
                            row,
                            xy,
                            |_, xs, ys| projected_norm_keeps(xs, ys, b2),
                            artefact,
                            *cut,
                        );
                    }
                    TissueRule::OdNorm => angle_row(
                        row,
                        xy,
                        |k, _, _| {
                            let (lo, hi) = sum(sq, i, j, k);
                            (lo >= *beta2, hi >= *beta2)
                        },
                        artefact,
                        *cut,
                    ),
                    TissueRule::AllChannels => angle_row(
                        row,
                        xy,
                        |k, _, _| {
                            let (lo, hi) = min3(od, i, j, k);
                            (lo >= *beta, hi >= *beta)
                        },
                        artefact,
                        *cut,
                    ),
                }
            }
            Bounds::Concentrations {
                h,
                e,
                sq,
                beta2,
                lows,
                mode,
                cuts,
            } => {
                for (k, c) in row.iter_mut().enumerate() {
                    let class = conc_class(
                        [sum(h, i, j, k), sum(e, i, j, k)],
                        sum(sq, i, j, k),
                        *beta2,
                        *lows,
                        *mode,
                        *cuts,
                    );
                    *c = artefact(k, class);
                }
            }
        }
    }
}

/// Pixel counts per class. A sink keeps one for all its chunks (boxed, so that moving the
/// sink stays cheap) and drains it once: zeroed and drained for every chunk, it cost 2-7 ms
/// per pass over the 6.6 MP image in 1,024-pixel tiles, whose rows are chunks of their own.
pub(super) struct Tally {
    /// Four copies, so that a run of one class does not chain every increment to the last.
    counts: [[u64; 128]; 4],
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            counts: [[0; 128]; 4],
        }
    }
}

impl Tally {
    /// Counts pixel `i` (any running index) in `class`, which must not be [`MIXED`].
    #[inline(always)]
    pub(super) fn add(&mut self, i: usize, class: u8) {
        self.counts[i & 3][usize::from(class & !MIXED)] += 1;
    }

    /// Hands each non-artefact class with pixels to `fold` and returns the dark and saturated
    /// counts.
    pub(super) fn drain(&self, mut fold: impl FnMut(u8, u64)) -> (u64, u64) {
        let (mut n_dark, mut n_sat) = (0u64, 0u64);
        for class in 0..128u8 {
            let n: u64 = self.counts.iter().map(|c| c[usize::from(class)]).sum();
            match (class, n) {
                (_, 0) => {}
                (DARK, n) => n_dark += n,
                (SATURATED, n) => n_sat += n,
                (class, n) => fold(class, n),
            }
        }
        (n_dark, n_sat)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::convention::Convention;
    use crate::estimate::{EstimateOptions, I0Source, StainMatrix};
    use crate::fit::{RUIFROK_E, RUIFROK_H, dot, normalize};
    use crate::od::dot3;
    use crate::slide::sinks::AngleRule;
    use crate::slide::{Common, lut_ctx};

    /// Every colour of the cube against its cell: a cell that is not mixed must give each of
    /// its colours exactly the counts the per-pixel path gives it.
    #[test]
    fn every_colour_of_a_pure_cell_counts_as_its_cell_says() {
        let conventions = [
            Convention::classm(),
            Convention::macenko2009(),
            Convention {
                tissue_rule: TissueRule::OdNorm,
                ..Convention::classm()
            },
            Convention {
                max_conc_pixels: MaxConcPixels::Tissue,
                ..Convention::classm()
            },
        ];
        let art = Artefacts {
            dark_max: Some(20),
            saturated: true,
        };
        for conv in conventions {
            let i0 = match conv.i0 {
                crate::convention::I0Spec::Fixed(v) => v,
                crate::convention::I0Spec::Estimate { fallback } => fallback,
            };
            let opts = EstimateOptions::new(conv.clone()).with_artefacts(art);
            let ctx = lut_ctx(Arc::new(Common { opts }), i0, I0Source::Fixed);
            let (h, e) = (normalize(RUIFROK_H), normalize(RUIFROK_E));
            let d = dot(e, h);
            let e2 = normalize([e[0] - d * h[0], e[1] - d * h[1], e[2] - d * h[2]]);
            let lxy = ctx.lut.weighted_pair(h, e2);
            let cut = Between { lo: 0.1, hi: 0.7 };
            let angle = AngleRule::new(&ctx, &lxy);
            let angles = Cells::angles(&AngleCellRule {
                lxy: &lxy,
                sq: &ctx.lut.sq,
                od: &ctx.lut.od,
                rule: conv.tissue_rule,
                beta: conv.beta,
                beta2: ctx.beta2,
                cut,
                artefacts: art,
            });
            let pinv = StainMatrix { h, e }.pseudo_inverse();
            let (lh, le) = (ctx.lut.weighted(pinv[0]), ctx.lut.weighted(pinv[1]));
            let rule = ConcRule {
                lh: &lh,
                le: &le,
                sq: &ctx.lut.sq,
                beta2: ctx.beta2,
                lows: [0.15, 0.15],
                mode: conv.max_conc_pixels,
                cuts: [Below { below: 1.0 }, Below { below: 0.6 }],
                artefacts: art,
            };
            let concs = Cells::concentrations(&rule);
            let dark = art.dark_max.map_or(-1, i16::from);
            let mut pure = [0u64; 2];
            for r in 0..=255u8 {
                for g in 0..=255u8 {
                    for b in 0..=255u8 {
                        let artefact_class = match artefact(r, g, b, dark, art.saturated) {
                            (true, _) => Some(DARK),
                            (_, true) => Some(SATURATED),
                            _ => None,
                        };
                        let got = angles.class(r, g, b);
                        if got != MIXED {
                            pure[0] += 1;
                            let want =
                                artefact_class.unwrap_or_else(|| match angle.angle(r, g, b) {
                                    None => 0,
                                    Some(a) if cut.lumps(a) => KEPT | KEPT_LUMPED,
                                    Some(_) => MIXED,
                                });
                            assert_eq!(got, want, "angles {conv:?} ({r}, {g}, {b})");
                        }
                        let got = concs.class(r, g, b);
                        if got != MIXED {
                            pure[1] += 1;
                            let want = artefact_class.unwrap_or_else(|| {
                                let (ch, ce) = (dot3(&lh, r, g, b), dot3(&le, r, g, b));
                                let tissue = ctx.lut.norm_sq(r, g, b) >= ctx.beta2;
                                let (uh, ue) = conc_use(rule.mode, tissue, ch >= 0.15, ce >= 0.15);
                                let mut c = if tissue { TISSUE } else { 0 };
                                for (used, v, k, neg, lump) in
                                    [(uh, ch, 0, NEG_H, LUMP_H), (ue, ce, 1, NEG_E, LUMP_E)]
                                {
                                    if tissue && v < 0.0 {
                                        c |= neg;
                                    }
                                    if used {
                                        c |= if rule.cuts[k].lumps(v) { lump } else { MIXED };
                                    }
                                }
                                c
                            });
                            assert_eq!(got, want, "concentrations {conv:?} ({r}, {g}, {b})");
                        }
                    }
                }
            }
            // The cells must also be worth having (a real image sits in far fewer cells, but an
            // eighth of the whole cube in pure cells rules out cells that are almost all mixed).
            for (pass, n) in ["angles", "concentrations"].into_iter().zip(pure) {
                assert!(
                    n > (1 << 21),
                    "{conv:?} {pass}: only {n} colours in pure cells"
                );
            }
        }
    }
}
