//! A sparse grid of the slide's pixels, kept from the moments pass, that tells the angle and
//! concentration passes which pixels cannot affect their percentiles.
//!
//! Both passes read only the tails of their histograms: the α and 100 − α percentile angles,
//! and the 99th percentile concentrations. A pixel whose value falls between cut-offs taken
//! from the probe (a few percent inside the tails) is only counted, not binned, so that the
//! every-pixel passes skip most histogram updates. The result stays that of the full
//! histograms: the lumped counts sit in bins the percentiles do not read, and when the probe
//! misled (a percentile's rank falls among the lumped bins) the pass is run again without
//! cut-offs. The cut-offs affect speed only, never the estimate.

use crate::sampling::{Artefacts, Tile, artefact};

/// Every `STEP`-th column of every `STEP`-th row, in slide coordinates (1/64 of the pixels).
const STEP: u64 = 8;

/// The most pixels kept; past twice this, every other one is dropped (memory stays bounded
/// on any slide; which pixels remain only changes the cut-offs).
const CAP: usize = 1 << 17;

/// Fewer usable probe pixels than this: no cut-offs (small images are fast anyway).
const MIN_PIXELS: usize = 4096;

/// How far inside each tail a cut-off sits, as a fraction of the probed pixels. With at
/// least `MIN_PIXELS` pixels, the sampling error of a 3 % quantile is under 0.3 %.
const MARGIN: f64 = 0.02;

/// Pixels gathered from the tiles of the moments pass.
#[derive(Debug, Clone, Default)]
pub(super) struct Probe {
    pixels: Vec<[u8; 3]>,
}

impl Probe {
    /// Adds the tile's grid pixels that the passes use (not masked, not artefacts).
    pub(super) fn collect(&mut self, tile: &Tile<'_>, art: Artefacts) {
        let img = tile.image;
        let dark = art.dark_max.map_or(-1i16, i16::from);
        let (ox, oy) = tile.origin;
        let first = |o: u64| ((STEP - o % STEP) % STEP) as usize;
        for y in (first(oy)..img.height()).step_by(STEP as usize) {
            let row = img.row(y);
            let mrow = tile.mask.map(|m| m.row(y));
            for x in (first(ox)..img.width()).step_by(STEP as usize) {
                let (r, g, b) = (row[3 * x], row[3 * x + 1], row[3 * x + 2]);
                if mrow.is_some_and(|m| m[x] == 0)
                    || artefact(r, g, b, dark, art.saturated) != (false, false)
                {
                    continue;
                }
                self.pixels.push([r, g, b]);
            }
        }
        self.thin();
    }

    pub(super) fn merge(&mut self, other: Probe) {
        self.pixels.extend(other.pixels);
        self.thin();
    }

    fn thin(&mut self) {
        if self.pixels.len() > 2 * CAP {
            let mut i = 0;
            self.pixels.retain(|_| {
                i += 1;
                i % 2 == 0
            });
        }
    }

    pub(super) fn pixels(&self) -> &[[u8; 3]] {
        &self.pixels
    }
}

/// Cut-offs for a two-sided pass: values strictly between `lo` and `hi` are lumped. The
/// default lumps nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Between {
    pub(super) lo: f32,
    pub(super) hi: f32,
}

impl Default for Between {
    fn default() -> Self {
        Between {
            lo: f32::INFINITY,
            hi: f32::NEG_INFINITY,
        }
    }
}

impl Between {
    /// From the probe's values, for the `tail` and `1 − tail` quantiles.
    pub(super) fn from_sample(mut values: Vec<f32>, tail: f64) -> Self {
        let n = values.len();
        let inner = tail + MARGIN;
        if n < MIN_PIXELS || inner >= 0.5 {
            return Between::default();
        }
        let (a, b) = (
            (inner * n as f64) as usize,
            ((1.0 - inner) * n as f64) as usize,
        );
        let (_, &mut lo, above) = values.select_nth_unstable_by(a, f32::total_cmp);
        let (_, &mut hi, _) = above.select_nth_unstable_by(b - a - 1, f32::total_cmp);
        if lo.is_finite() && hi.is_finite() && lo < hi {
            Between { lo, hi }
        } else {
            Between::default()
        }
    }

    /// Whether `v` is lumped (never NaN: a NaN is binned like any value).
    #[inline(always)]
    pub(super) fn lumps(&self, v: f32) -> bool {
        v > self.lo && v < self.hi
    }
}

/// Cut-off for an upper-quantile pass: values below `below` are lumped. The default lumps
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Below {
    pub(super) below: f32,
}

impl Default for Below {
    fn default() -> Self {
        Below {
            below: f32::NEG_INFINITY,
        }
    }
}

impl Below {
    /// From the probe's values, for the `q` quantile.
    pub(super) fn from_sample(mut values: Vec<f32>, q: f64) -> Self {
        let n = values.len();
        let inner = q - MARGIN;
        if n < MIN_PIXELS || inner <= 0.0 {
            return Below::default();
        }
        let (_, &mut below, _) =
            values.select_nth_unstable_by((inner * n as f64) as usize, f32::total_cmp);
        if below.is_finite() {
            Below { below }
        } else {
            Below::default()
        }
    }

    #[inline(always)]
    pub(super) fn lumps(&self, v: f32) -> bool {
        v < self.below
    }
}

/// Adds `lumped` values to bin `at` of `bins` and says whether the `q` quantile (as
/// [`hist_quantile`](crate::fit::hist_quantile) reads it) avoids the bins `range`, where the
/// lumped values may lie: only then is the quantile that of the full histogram.
pub(super) fn lump_and_check(
    bins: &mut [u64],
    lumped: u64,
    range: std::ops::RangeInclusive<usize>,
    qs: &[f64],
) -> bool {
    if lumped == 0 {
        return true;
    }
    let (a, b) = (*range.start(), *range.end());
    bins[a] += lumped;
    let n: u64 = bins.iter().sum();
    let before: u64 = bins[..a].iter().sum();
    let through = before + bins[a..=b].iter().sum::<u64>();
    qs.iter().all(|&q| {
        let h = (n - 1) as f64 * q;
        let k = h.floor() as u64;
        let mut ranks = vec![k];
        if h > k as f64 && k + 1 < n {
            ranks.push(k + 1);
        }
        ranks.iter().all(|&r| r < before || r >= through)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::hist_quantile;

    #[test]
    fn lumping_keeps_quantiles_outside_the_lumped_bins_and_flags_the_others() {
        // 1,000 values 0..1000 in 1,000 bins; the 1st and 99th percentiles read ranks 9-10
        // and 989-990.
        let full: Vec<u64> = vec![1; 1000];
        let (a, b) = (
            hist_quantile(&full, 0.0, 1000.0, 0.01),
            hist_quantile(&full, 0.0, 1000.0, 0.99),
        );
        // Lump the values of bins 100..=899 into bin 100.
        let mut part = full.clone();
        part[100..=899].iter_mut().for_each(|c| *c = 0);
        assert!(lump_and_check(&mut part, 800, 100..=899, &[0.01, 0.99]));
        assert_eq!(hist_quantile(&part, 0.0, 1000.0, 0.01), a);
        assert_eq!(hist_quantile(&part, 0.0, 1000.0, 0.99), b);
        // Lumping bins 5..=899 hides the 1st percentile's ranks.
        let mut part = full.clone();
        part[5..=899].iter_mut().for_each(|c| *c = 0);
        assert!(!lump_and_check(&mut part, 895, 5..=899, &[0.01, 0.99]));
        // Ranks 989 and 990 lie in bins 989 and 990: lumping up to bin 989 hides one of them.
        let mut part = full;
        part[0..=989].iter_mut().for_each(|c| *c = 0);
        assert!(!lump_and_check(&mut part, 990, 0..=989, &[0.99]));
    }

    #[test]
    fn cut_offs_need_enough_pixels_and_sit_inside_the_tails() {
        assert_eq!(
            Between::from_sample(vec![0.5; 100], 0.01),
            Between::default()
        );
        let v: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        let c = Between::from_sample(v.clone(), 0.01);
        assert_eq!((c.lo, c.hi), (300.0, 9700.0));
        assert!(c.lumps(5000.0) && !c.lumps(300.0) && !c.lumps(9700.0) && !c.lumps(f32::NAN));
        assert_eq!(Below::from_sample(v, 0.99).below, 9700.0);
        assert!(!Below::default().lumps(f32::NEG_INFINITY) && !Below::default().lumps(f32::NAN));
    }
}
