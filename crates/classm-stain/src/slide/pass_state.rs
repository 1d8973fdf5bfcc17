//! Adding tiles to a pass state and merging states.

use rayon::prelude::*;

use crate::error::{Result, StainError};
use crate::sampling::{BAND_PIXELS, Sampling, Tile, walk};

use super::sinks::{AngleRule, AngleSink, BgSink, ConcSink, MomentSink};
use super::{Pass, PassState, State};
use crate::sampling::Seen;

impl PassState {
    /// Which pass this state accumulates.
    pub fn pass(&self) -> Pass {
        match self.state {
            State::Background { .. } => Pass::Background,
            State::Moments { .. } => Pass::Moments,
            State::Angles { .. } => Pass::Angles,
            State::Concentrations { .. } => Pass::Concentrations,
        }
    }

    /// Pixel counts seen so far in this pass.
    pub fn seen(&self) -> Seen {
        self.seen
    }

    /// Adds the sampled pixels of one tile.
    pub fn add(&mut self, tile: &Tile<'_>) -> Result<()> {
        if let Some(m) = tile.mask {
            if m.width() != tile.image.width() || m.height() != tile.image.height() {
                return Err(StainError::invalid("mask size differs from tile size"));
            }
        }
        let seen = &mut self.seen;
        match &mut self.state {
            State::Background { common, hist, n } => {
                let o = &common.opts;
                let sink = BgSink { hist, n: *n };
                *n = walk(tile, o.sampling, o.artefacts, seen, sink).n;
            }
            State::Moments {
                ctx,
                m,
                tissue,
                probe,
            } => {
                let o = &ctx.common.opts;
                let sink = MomentSink::new(ctx, std::mem::take(m), *tissue);
                let (mm, t) = walk(tile, o.sampling, o.artefacts, seen, sink).finish();
                *m = mm;
                *tissue = t;
                // Sampled estimates are cheap already; the probe serves the every-pixel ones.
                if o.sampling == Sampling::All {
                    probe.collect(tile, o.artefacts);
                }
            }
            State::Angles {
                ctx,
                hist,
                kept,
                lumped,
            } => {
                let o = &ctx.lut.common.opts;
                let sink = AngleSink {
                    rule: AngleRule::new(&ctx.lut, &ctx.lxy),
                    cut: ctx.cut,
                    cells: ctx.cells.as_deref(),
                    tally: None,
                    hist,
                    kept: *kept,
                    lumped: *lumped,
                };
                let mut sink = walk(tile, o.sampling, o.artefacts, seen, sink);
                let (dark, saturated) = sink.drain();
                seen.dark += dark;
                seen.saturated += saturated;
                *kept = sink.kept;
                *lumped = sink.lumped;
            }
            State::Concentrations {
                ctx,
                h,
                e,
                tissue,
                neg,
                lumped,
            } => {
                let o = &ctx.plane.lut.common.opts;
                let sink = ConcSink::new(ctx, h, e, *tissue, *neg, *lumped);
                let mut sink = walk(tile, o.sampling, o.artefacts, seen, sink);
                let (dark, saturated) = sink.drain();
                seen.dark += dark;
                seen.saturated += saturated;
                *tissue = sink.tissue;
                *neg = sink.neg;
                *lumped = sink.lumped;
            }
        }
        Ok(())
    }

    /// Adds `tiles` in parallel (one state per rayon worker, merged). Deterministic: merging
    /// is integer addition.
    pub fn add_all_parallel(self, tiles: &[Tile<'_>]) -> Result<PassState> {
        // Large tiles go in bands, so that a few of them still spread evenly over the threads:
        // whole tiles can leave one thread idle while the other finishes the last of them.
        let bands: Vec<Tile<'_>> = tiles.iter().flat_map(|t| t.bands(BAND_PIXELS)).collect();
        bands
            .par_iter()
            .try_fold(
                || self.clone(),
                |mut s, t| {
                    s.add(t)?;
                    Ok(s)
                },
            )
            .try_reduce(
                || self.clone(),
                |mut a, b| {
                    a.merge(b)?;
                    Ok(a)
                },
            )
    }

    /// Adds another partial state of the same pass (from another thread or machine).
    pub fn merge(&mut self, other: PassState) -> Result<()> {
        self.seen.merge(&other.seen);
        match (&mut self.state, other.state) {
            (
                State::Background { hist, n, .. },
                State::Background {
                    hist: h2, n: n2, ..
                },
            ) => {
                for c in 0..3 {
                    for v in 0..256 {
                        hist[c][v] += h2[c][v];
                    }
                }
                *n += n2;
            }
            (
                State::Moments {
                    m, tissue, probe, ..
                },
                State::Moments {
                    m: m2,
                    tissue: t2,
                    probe: p2,
                    ..
                },
            ) => {
                m.merge(&m2);
                *tissue += t2;
                probe.merge(p2);
            }
            (
                State::Angles {
                    hist, kept, lumped, ..
                },
                State::Angles {
                    hist: h2,
                    kept: k2,
                    lumped: l2,
                    ..
                },
            ) => {
                hist.iter_mut().zip(&h2).for_each(|(a, b)| *a += b);
                *kept += k2;
                *lumped += l2;
            }
            (
                State::Concentrations {
                    h,
                    e,
                    tissue,
                    neg,
                    lumped,
                    ..
                },
                State::Concentrations {
                    h: h2,
                    e: e2,
                    tissue: t2,
                    neg: n2,
                    lumped: l2,
                    ..
                },
            ) => {
                h.iter_mut().zip(&h2).for_each(|(a, b)| *a += b);
                e.iter_mut().zip(&e2).for_each(|(a, b)| *a += b);
                *tissue += t2;
                neg[0] += n2[0];
                neg[1] += n2[1];
                lumped[0] += l2[0];
                lumped[1] += l2[1];
            }
            _ => {
                return Err(StainError::Protocol {
                    reason: "cannot merge states of different passes".into(),
                });
            }
        }
        Ok(())
    }
}
