//! What each pass does with one pixel.

use crate::convention::{MaxConcPixels, PcaPixels, TissueRule};
use crate::fit::{ANGLE_BINS, CONC_BINS, FLUSH, Moments, bin_of, pseudo_angle};
use crate::od::{OdLut, PairTable, dot3, dot3_pair};
use crate::sampling::{CHUNK, Sink, artefact, one_by_one};

use super::cells::{self, CellSink, Cells, Tally};
use super::probe::{Below, Between};
use super::{LutCtx, VecCtx};

pub(super) struct BgSink<'a> {
    pub(super) hist: &'a mut [[u64; 256]; 3],
    pub(super) n: u64,
}

impl Sink for BgSink<'_> {
    #[inline(always)]
    fn pixel(&mut self, r: u8, g: u8, b: u8) {
        let lo = r.min(g).min(b);
        let hi = r.max(g).max(b);
        if lo >= BG_MIN && hi - lo <= BG_MAX_SPREAD {
            self.hist[0][r as usize] += 1;
            self.hist[1][g as usize] += 1;
            self.hist[2][b as usize] += 1;
            self.n += 1;
        }
    }
}

pub(super) struct MomentSink<'a> {
    pub(super) lut: &'a OdLut,
    pub(super) beta: f64,
    pub(super) beta2: f64,
    pub(super) all_channels: bool,
    pub(super) pca_tissue: bool,
    pub(super) pca_all: bool,
    pub(super) m: Moments,
    pub(super) tissue: u64,
    /// Partial sums (Σr, Σg, Σb, Σrr, Σrg, Σrb, Σgg, Σgb, Σbb) as scalars the compiler keeps in
    /// registers, carried into `m` every `FLUSH` pixels.
    pub(super) p: [f64; 9],
    pub(super) pending: u32,
}

impl MomentSink<'_> {
    pub(super) fn new(lut: &LutCtx, m: Moments, tissue: u64) -> MomentSink<'_> {
        let c = &lut.common.opts.convention;
        MomentSink {
            lut: &lut.lut,
            beta: c.beta,
            beta2: lut.beta2,
            all_channels: c.tissue_rule == TissueRule::AllChannels,
            pca_tissue: c.pca_pixels == PcaPixels::Tissue,
            pca_all: c.pca_pixels == PcaPixels::All,
            m,
            tissue,
            p: [0.0; 9],
            pending: 0,
        }
    }

    #[inline(never)]
    fn flush(&mut self) {
        // `walk` calls `end_chunk` every CHUNK pixels: the f64 partial sums are still exact.
        const _: () = assert!(CHUNK as u32 <= FLUSH);
        self.m.add_block(u64::from(self.pending), self.p);
        self.p = [0.0; 9];
        self.pending = 0;
    }

    pub(super) fn finish(mut self) -> (Moments, u64) {
        self.flush();
        (self.m, self.tissue)
    }
}

impl Sink for MomentSink<'_> {
    #[inline(always)]
    fn pixel(&mut self, r: u8, g: u8, b: u8) {
        let lut = self.lut;
        let is_tissue = if self.all_channels {
            lut.min_channel(r, g, b) >= self.beta
        } else {
            lut.norm_sq(r, g, b) >= self.beta2
        };
        self.tissue += u64::from(is_tissue);
        let q = [
            lut.fixed[0][r as usize],
            lut.fixed[1][g as usize],
            lut.fixed[2][b as usize],
        ];
        // PcaPixels as flags: branch-free, whatever the rule.
        let take = if self.pca_tissue {
            is_tissue
        } else {
            self.pca_all | (q[0] != 0.0) | (q[1] != 0.0) | (q[2] != 0.0)
        };
        let t = f64::from(u8::from(take));
        let [r, g, b] = q.map(|v| v * t);
        let [p0, p1, p2, p3, p4, p5, p6, p7, p8] = &mut self.p;
        *p0 += r;
        *p1 += g;
        *p2 += b;
        *p3 += r * r;
        *p4 += r * g;
        *p5 += r * b;
        *p6 += g * g;
        *p7 += g * b;
        *p8 += b * b;
        self.pending += u32::from(take);
    }

    /// Pixels in [`LANES`] lanes, each lane summing its own pixels: the sums are exact
    /// integers, so they equal the one-by-one sums whatever the order, and the lanes'
    /// arithmetic vectorises.
    #[inline(always)]
    fn chunk(&mut self, px: &[u8], dark: i16, sat: bool) -> (u64, u64) {
        let blocks = px.chunks_exact(3 * LANES);
        let rest = blocks.remainder();
        let lut = self.lut;
        let (all_channels, pca_tissue, pca_all) =
            (self.all_channels, self.pca_tissue, self.pca_all);
        let (beta, beta2) = (self.beta, self.beta2);
        let mut acc = [[0f64; LANES]; 9];
        let mut counts = [[0u32; LANES]; 4];
        for block in blocks {
            let mut q = [[0f64; LANES]; 3];
            let mut ok = [false; LANES];
            let mut tissue = [false; LANES];
            for l in 0..LANES {
                let (r, g, b) = (block[3 * l], block[3 * l + 1], block[3 * l + 2]);
                let (is_dark, is_sat) = artefact(r, g, b, dark, sat);
                ok[l] = !is_dark & !is_sat;
                counts[0][l] += u32::from(is_dark);
                counts[1][l] += u32::from(is_sat);
                tissue[l] = if all_channels {
                    lut.min_channel(r, g, b) >= beta
                } else {
                    lut.norm_sq(r, g, b) >= beta2
                };
                q[0][l] = lut.fixed[0][r as usize];
                q[1][l] = lut.fixed[1][g as usize];
                q[2][l] = lut.fixed[2][b as usize];
            }
            for l in 0..LANES {
                let is_tissue = ok[l] & tissue[l];
                let take = ok[l]
                    & if pca_tissue {
                        is_tissue
                    } else {
                        pca_all | (q[0][l] != 0.0) | (q[1][l] != 0.0) | (q[2][l] != 0.0)
                    };
                counts[2][l] += u32::from(is_tissue);
                counts[3][l] += u32::from(take);
                let t = f64::from(u8::from(take));
                let (r, g, b) = (q[0][l] * t, q[1][l] * t, q[2][l] * t);
                acc[0][l] += r;
                acc[1][l] += g;
                acc[2][l] += b;
                acc[3][l] += r * r;
                acc[4][l] += r * g;
                acc[5][l] += r * b;
                acc[6][l] += g * g;
                acc[7][l] += g * b;
                acc[8][l] += b * b;
            }
        }
        for (p, lanes) in self.p.iter_mut().zip(&acc) {
            // Integers below 2^52 in every order (`FLUSH`): exact.
            *p += lanes.iter().sum::<f64>();
        }
        let total = |c: &[u32; LANES]| c.iter().map(|&v| u64::from(v)).sum::<u64>();
        self.tissue += total(&counts[2]);
        self.pending += counts[3].iter().sum::<u32>();
        let (d, s) = one_by_one(self, rest, dark, sat);
        (total(&counts[0]) + d, total(&counts[1]) + s)
    }

    fn end_chunk(&mut self) {
        if self.pending > 0 {
            self.flush();
        }
    }
}

/// Pixels per block of the moments pass: eight f64 lanes, one AVX-512 register per sum. With
/// 16 the nine sums took 18 registers and spilled: 4.1 ns per pixel against 2.2 (4 lanes:
/// 9.7). Under AVX2 (forced on the same machine), blocks of 8 or 16 ran about as fast as the
/// one-pixel loop before them (5.4-8.1 against 5.7-7.6 ns in the same, noisy, runs): the
/// lanes pay off with AVX-512's 32 registers. The bits are the same on every CPU.
const LANES: usize = 8;

/// Which pixels the angle pass keeps, and their pseudo-angles in the plane.
pub(super) struct AngleRule<'a> {
    lut: &'a OdLut,
    lxy: &'a PairTable,
    beta: f64,
    beta2: f64,
    rule: TissueRule,
}

impl<'a> AngleRule<'a> {
    pub(super) fn new(ctx: &'a LutCtx, lxy: &'a PairTable) -> Self {
        let c = &ctx.common.opts.convention;
        AngleRule {
            lut: &ctx.lut,
            lxy,
            beta: c.beta,
            beta2: ctx.beta2,
            rule: c.tissue_rule,
        }
    }

    /// The pixel's pseudo-angle, if the pass keeps it.
    #[inline(always)]
    pub(super) fn angle(&self, r: u8, g: u8, b: u8) -> Option<f32> {
        let (x, y) = dot3_pair(self.lxy, r, g, b);
        let keep = match self.rule {
            TissueRule::ProjectedNorm => x * x + y * y >= self.beta2 as f32,
            TissueRule::OdNorm => self.lut.norm_sq(r, g, b) >= self.beta2,
            TissueRule::AllChannels => self.lut.min_channel(r, g, b) >= self.beta,
        };
        keep.then(|| pseudo_angle(x, y))
    }
}

pub(super) struct AngleSink<'a> {
    pub(super) rule: AngleRule<'a>,
    pub(super) cut: Between,
    pub(super) cells: Option<&'a Cells>,
    /// Pixels counted by cell, until [`Self::drain`].
    pub(super) tally: Option<Box<Tally>>,
    pub(super) hist: &'a mut [u64],
    pub(super) kept: u64,
    pub(super) lumped: u64,
}

/// The angle bin of pseudo-angle `a` (for an infinite cut-off, any bin: nothing is lumped
/// then). The pass and its cut-offs' bins both come from here.
pub(super) fn angle_bin(a: f32) -> usize {
    bin_of(a, -2.0, ANGLE_BINS as f32 / 4.0, ANGLE_BINS)
}

impl Sink for AngleSink<'_> {
    #[inline(always)]
    fn pixel(&mut self, r: u8, g: u8, b: u8) {
        if let Some(a) = self.rule.angle(r, g, b) {
            self.kept += 1;
            if self.cut.lumps(a) {
                self.lumped += 1;
            } else {
                self.hist[angle_bin(a)] += 1;
            }
        }
    }

    #[inline(always)]
    fn chunk(&mut self, px: &[u8], dark: i16, sat: bool) -> (u64, u64) {
        self.chunk_by_cell(px, dark, sat)
    }
}

impl<'a> CellSink<'a> for AngleSink<'a> {
    fn cells(&self) -> Option<&'a Cells> {
        self.cells
    }

    fn tally(&mut self) -> &mut Option<Box<Tally>> {
        &mut self.tally
    }
}

impl AngleSink<'_> {
    /// Adds the pixels counted by cell; returns the dark and saturated ones among them.
    pub(super) fn drain(&mut self) -> (u64, u64) {
        let Some(tally) = self.tally.take() else {
            return (0, 0);
        };
        tally.drain(|class, n| {
            let has = |bit: u8| if class & bit != 0 { n } else { 0 };
            self.kept += has(cells::KEPT);
            self.lumped += has(cells::KEPT_LUMPED);
        })
    }
}

pub(super) struct ConcSink<'a> {
    pub(super) lut: &'a OdLut,
    pub(super) beta2: f64,
    pub(super) lh: &'a [[f32; 256]; 3],
    pub(super) le: &'a [[f32; 256]; 3],
    pub(super) hlo: f32,
    pub(super) elo: f32,
    pub(super) hinv: f32,
    pub(super) einv: f32,
    pub(super) mode: MaxConcPixels,
    pub(super) cuts: [Below; 2],
    pub(super) cells: Option<&'a Cells>,
    /// Pixels counted by cell, until [`Self::drain`].
    pub(super) tally: Option<Box<Tally>>,
    pub(super) h: &'a mut [u64],
    pub(super) e: &'a mut [u64],
    pub(super) tissue: u64,
    pub(super) neg: [u64; 2],
    pub(super) lumped: [u64; 2],
}

impl Sink for ConcSink<'_> {
    #[inline(always)]
    fn pixel(&mut self, r: u8, g: u8, b: u8) {
        let ch = dot3(self.lh, r, g, b);
        let ce = dot3(self.le, r, g, b);
        self.record(ch, ce, r, g, b);
    }

    #[inline(always)]
    fn chunk(&mut self, px: &[u8], dark: i16, sat: bool) -> (u64, u64) {
        self.chunk_by_cell(px, dark, sat)
    }
}

impl<'a> CellSink<'a> for ConcSink<'a> {
    fn cells(&self) -> Option<&'a Cells> {
        self.cells
    }

    fn tally(&mut self) -> &mut Option<Box<Tally>> {
        &mut self.tally
    }
}

impl<'a> ConcSink<'a> {
    pub(super) fn new(
        ctx: &'a VecCtx,
        h: &'a mut [u64],
        e: &'a mut [u64],
        tissue: u64,
        neg: [u64; 2],
        lumped: [u64; 2],
    ) -> Self {
        let ((hlo, hinv), (elo, einv)) = (ctx.conc_scale(0), ctx.conc_scale(1));
        ConcSink {
            lut: &ctx.plane.lut.lut,
            beta2: ctx.plane.lut.beta2,
            lh: &ctx.lh,
            le: &ctx.le,
            hlo,
            elo,
            hinv,
            einv,
            mode: ctx.plane.lut.common.opts.convention.max_conc_pixels,
            cuts: ctx.cuts,
            cells: ctx.cells.as_deref(),
            tally: None,
            h,
            e,
            tissue,
            neg,
            lumped,
        }
    }

    /// Adds the pixels counted by cell; returns the dark and saturated ones among them.
    pub(super) fn drain(&mut self) -> (u64, u64) {
        let Some(tally) = self.tally.take() else {
            return (0, 0);
        };
        tally.drain(|class, n| {
            let has = |bit: u8| if class & bit != 0 { n } else { 0 };
            self.tissue += has(cells::TISSUE);
            self.neg[0] += has(cells::NEG_H);
            self.neg[1] += has(cells::NEG_E);
            self.lumped[0] += has(cells::LUMP_H);
            self.lumped[1] += has(cells::LUMP_E);
        })
    }

    #[inline(always)]
    fn record(&mut self, ch: f32, ce: f32, r: u8, g: u8, b: u8) {
        let is_tissue = self.lut.norm_sq(r, g, b) >= self.beta2;
        self.tissue += u64::from(is_tissue);
        self.neg[0] += u64::from(is_tissue & (ch < 0.0));
        self.neg[1] += u64::from(is_tissue & (ce < 0.0));
        let (use_h, use_e) = conc_use(self.mode, is_tissue, ch >= self.hlo, ce >= self.elo);
        // Counted without branches; the rare used pixels above the cut-offs are binned.
        let lump_h = use_h & self.cuts[0].lumps(ch);
        let lump_e = use_e & self.cuts[1].lumps(ce);
        self.lumped[0] += u64::from(lump_h);
        self.lumped[1] += u64::from(lump_e);
        if use_h & !lump_h {
            self.h[bin_of(ch, self.hlo, self.hinv, CONC_BINS)] += 1;
        }
        if use_e & !lump_e {
            self.e[bin_of(ce, self.elo, self.einv, CONC_BINS)] += 1;
        }
    }
}

/// Whether a pixel's H and E concentrations count towards the maximum concentrations, given
/// whether it is tissue and whether each concentration reaches its histogram's lower end.
#[inline(always)]
pub(super) fn conc_use(mode: MaxConcPixels, tissue: bool, h_in: bool, e_in: bool) -> (bool, bool) {
    match mode {
        MaxConcPixels::Tissue => (tissue, tissue),
        MaxConcPixels::All => (true, true),
        MaxConcPixels::ConcAtLeast(_) => (h_in, e_in),
    }
}

pub(super) const BG_MIN: u8 = 180;
pub(super) const BG_MAX_SPREAD: u8 = 24;
