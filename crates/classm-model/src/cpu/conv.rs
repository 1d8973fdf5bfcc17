//! 2-D convolution without bias (one group, no dilation) as im2col + gemm, the im2col matrix
//! built and multiplied a cache-sized block of columns at a time: blocks of output rows of one
//! image for large maps, blocks of whole images for the deep layers' small maps (so that
//! their products still have enough columns). Maps narrower than [`NARROW`] fill their im2col
//! rows through a per-call index table instead of line copies. The backward computes the
//! weight gradient and the input gradient in one op: for stride 1 as the transposed
//! convolution, otherwise as gemm + col2im over chunks of images.

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::gemm::{
    ColumnBlocks, MatRef, append_parts, matmul, matmul_append, matmul_by_columns, matmul_serial,
};
use super::scratch::Scratch;
use super::{applies, values, wide};

/// Positions per image from which each image gets its own products written straight into
/// the output; below it, products over blocks of whole images and a reordering copy.
const PER_IMAGE: usize = 64;

/// Floats of im2col scratch per chunk of images on the backward's chunked paths (16 MiB); a
/// chunk holds at least one image.
const COL_BUDGET: usize = 1 << 22;

/// Floats of an image's im2col matrix built and multiplied at a time on the per-image paths
/// (256 KiB, about this machine's L2): a whole image's matrix runs to 9 MiB at the paper's
/// size, and writing it out to memory for the gemm to read back and pack cost up to 40% of
/// the layer (a 64-channel 64 × 64 map: 30 → 52 GFLOP/s in blocks).
const FWD_BLOCK: usize = 1 << 16;

/// As [`FWD_BLOCK`] for the weight gradient, whose product takes the block as its inner
/// dimension and prefers it longer.
const DW_BLOCK: usize = 1 << 17;

/// Positions a block holds at least, whatever its size: the gemm runs its narrower, slower
/// kernel on fewer than 16 rows, and deep layers (2304 to 4608 im2col rows) lose more to
/// short products than they gain from cache.
const MIN_BLOCK_POSITIONS: usize = 128;

/// f32 lanes of the gemm's widest vectors (AVX-512), the granularity of its row tails.
const LANES: usize = 16;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[derive(Debug, Clone, Copy)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Geom {
    fn new(x: &[usize], k: &[usize], stride: usize, pad: usize) -> Result<Self> {
        let (&[n, c, h, w], &[o, ci, kh, kw]) = (x, k) else {
            bail!("conv2d: input {x:?} and kernel {k:?} must both be 4-D")
        };
        if ci != c || stride == 0 || kh == 0 || kw == 0 || h + 2 * pad < kh || w + 2 * pad < kw {
            bail!("conv2d: input {x:?}, kernel {k:?}, stride {stride}, padding {pad} do not fit")
        }
        Ok(Geom {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            stride,
            pad,
            ho: (h + 2 * pad - kh) / stride + 1,
            wo: (w + 2 * pad - kw) / stride + 1,
        })
    }

    fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }

    fn positions(&self) -> usize {
        self.ho * self.wo
    }

    fn chunk(&self) -> usize {
        (COL_BUDGET / (self.ckk() * self.positions()).max(1)).clamp(1, self.n.max(1))
    }

    /// Units of `unit` im2col columns per block of about `budget` im2col floats, at least
    /// [`MIN_BLOCK_POSITIONS`] columns and at most all `units`, evened out over the blocks so
    /// that the last one is not a sliver, then rounded up to a whole number of [`LANES`]
    /// columns when that fits in `units`.
    fn block_units(&self, budget: usize, unit: usize, units: usize) -> usize {
        let (unit, units) = (unit.max(1), units.max(1));
        let per = (budget / (self.ckk() * unit).max(1))
            .max(MIN_BLOCK_POSITIONS.div_ceil(unit))
            .clamp(1, units);
        let per = units.div_ceil(units.div_ceil(per));
        // Whole vectors of positions where the units allow: a block of 72 positions leaves the
        // gemm a tail of 8 rows, which its narrowest kernel runs at half its lanes (96-px
        // inputs: 12 × 12 maps in blocks of 6 rows, 3 × 3 maps in blocks of 8 images).
        let round = per.next_multiple_of(LANES / gcd(unit, LANES));
        if round <= units { round } else { per }
    }

    /// Output rows per block of one image's im2col (maps of [`PER_IMAGE`] positions or more).
    fn block_rows(&self, budget: usize) -> usize {
        self.block_units(budget, self.wo, self.ho)
    }

    /// Whole images per block of the batch's im2col (maps under [`PER_IMAGE`] positions).
    fn block_images(&self, budget: usize) -> usize {
        self.block_units(budget, self.positions(), self.n)
    }

    fn out_dims(&self) -> [usize; 4] {
        [self.n, self.o, self.ho, self.wo]
    }

    /// Stride 1 with the output the input's size (3×3 with padding 1, 1×1 without).
    fn same(&self) -> bool {
        self.stride == 1 && self.ho == self.h && self.wo == self.w
    }

    /// Output columns `[lo, hi)` whose input column `ox·stride + kj − pad` is inside the image.
    fn columns(&self, kj: usize) -> (usize, usize) {
        let lo = self
            .pad
            .saturating_sub(kj)
            .div_ceil(self.stride)
            .min(self.wo);
        let hi = if self.w + self.pad > kj {
            ((self.w + self.pad - kj - 1) / self.stride + 1).min(self.wo)
        } else {
            0
        };
        (lo, hi.max(lo))
    }

    /// Input row of output row `oy` under kernel row `ki`, if inside the image.
    fn row(&self, oy: usize, ki: usize) -> Option<usize> {
        (oy * self.stride + ki)
            .checked_sub(self.pad)
            .filter(|&iy| iy < self.h)
    }
}

/// Kernel tap (ki, kj) and its output columns `[lo, hi)` inside the image, computed once per
/// im2col call: on the deep layers' small maps, a row's divisions cost as much as its copy.
#[derive(Debug, Clone, Copy)]
struct Tap {
    ki: usize,
    kj: usize,
    lo: usize,
    hi: usize,
}

impl Geom {
    /// Every tap in im2col row order (kernel row, then kernel column).
    fn taps(&self) -> Vec<Tap> {
        (0..self.kh)
            .flat_map(|ki| {
                (0..self.kw).map(move |kj| {
                    let (lo, hi) = self.columns(kj);
                    Tap { ki, kj, lo, hi }
                })
            })
            .collect()
    }

    /// Channel `c` of image `n`.
    fn plane<'a>(&self, x: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        let plane = self.h * self.w;
        &x[(n * self.c + c) * plane..][..plane]
    }
}

/// Output widths below which im2col gathers through an index table: on narrow maps a copy
/// and edge fills per output line cost several times the values they move.
const NARROW: usize = 16;

impl Geom {
    fn narrow(&self) -> bool {
        self.wo < NARROW
    }

    /// The plane index each im2col value of output rows `rows` reads, tap by tap (`[taps][rows ·
    /// wo]`), or `u32::MAX` where it falls in the padding.
    fn gather_table(&self, rows: Range<usize>) -> Vec<u32> {
        let mut t = Vec::with_capacity(self.kh * self.kw * rows.len() * self.wo);
        for ki in 0..self.kh {
            for kj in 0..self.kw {
                for oy in rows.clone() {
                    let iy = self.row(oy, ki);
                    for ox in 0..self.wo {
                        let ix = (ox * self.stride + kj)
                            .checked_sub(self.pad)
                            .filter(|&ix| ix < self.w);
                        t.push(match (iy, ix) {
                            (Some(iy), Some(ix)) => (iy * self.w + ix) as u32,
                            _ => u32::MAX,
                        });
                    }
                }
            }
        }
        t
    }
}

/// `dst[k] = src[idx[k]]`, zero where the index is past the plane.
#[inline(always)]
fn gather_plane(src: &[f32], idx: &[u32], dst: &mut [f32]) {
    let Some(last) = src.len().checked_sub(1) else {
        dst.fill(0.0);
        return;
    };
    for (d, &i) in dst.iter_mut().zip(idx) {
        // A clamped read and a select, which vectorise (AVX2 and AVX-512 gathers), rather
        // than a branch on the padding.
        let i = i as usize;
        let v = src[i.min(last)];
        *d = if i <= last { v } else { 0.0 };
    }
}

/// Writes images `[n0, n0+b)` of `x` as columns of `col` (`[ckk][b·positions]`), rows in
/// parallel with `parallel`.
fn im2col(g: &Geom, x: &[f32], n0: usize, b: usize, col: &mut [f32], parallel: bool) {
    let p = g.positions();
    let l = b * p;
    let taps = g.taps();
    let table = g.narrow().then(|| g.gather_table(0..g.ho));
    let row = |(r, row): (usize, &mut [f32])| {
        let (c, t) = (r / taps.len(), r % taps.len());
        // One dispatch per im2col row: a small map's plane is as few as 4 values.
        wide(
            #[inline(always)]
            || {
                for (i, dst) in row.chunks_exact_mut(p).enumerate() {
                    let src = g.plane(x, n0 + i, c);
                    match &table {
                        Some(table) => gather_plane(src, &table[t * p..][..p], dst),
                        None => im2col_row(g, src, &taps[t], 0..g.ho, dst),
                    }
                }
            },
        )
    };
    let col = &mut col[..g.ckk() * l];
    if parallel {
        col.par_chunks_mut(l).enumerate().for_each(row);
    } else {
        col.chunks_mut(l).enumerate().for_each(row);
    }
}

/// The columns of image `n`'s im2col matrix for output rows `rows`, as a row-major
/// `[ckk][rows·wo]` matrix, on the calling thread.
fn im2col_rows(g: &Geom, x: &[f32], n: usize, rows: Range<usize>, col: &mut [f32]) {
    let taps = g.taps();
    let len = rows.len() * g.wo;
    if g.narrow() {
        let table = g.gather_table(rows);
        wide(
            #[inline(always)]
            || {
                for (c, block) in col.chunks_exact_mut(taps.len() * len).enumerate() {
                    gather_plane(g.plane(x, n, c), &table, block);
                }
            },
        );
        return;
    }
    for (c, block) in col.chunks_exact_mut(taps.len() * len).enumerate() {
        let src = g.plane(x, n, c);
        for (tap, row) in taps.iter().zip(block.chunks_exact_mut(len)) {
            im2col_row(g, src, tap, rows.clone(), row);
        }
    }
}

/// One im2col row over output rows `rows`: tap `t` on one channel plane `src` of one image.
fn im2col_row(g: &Geom, src: &[f32], t: &Tap, rows: Range<usize>, dst: &mut [f32]) {
    if g.same() {
        shifted_copy(g, src, t.ki, t.kj, rows, dst);
    } else {
        gather_rows(g, src, t, rows, dst);
    }
}

/// im2col row of one image for a stride-1 convolution whose output has the input's size,
/// over output rows `rows`: the plane shifted by (ki − pad, kj − pad), as one copy, then the
/// wrapped edge columns and the rows outside the image zeroed.
fn shifted_copy(g: &Geom, src: &[f32], ki: usize, kj: usize, rows: Range<usize>, dst: &mut [f32]) {
    let (h, w) = (g.h as isize, g.w as isize);
    let (dy, dx) = (ki as isize - g.pad as isize, kj as isize - g.pad as isize);
    let (r0, r1) = (rows.start as isize, rows.end as isize);
    // Source index of local position q: q + base.
    let base = r0 * w + dy * w + dx;
    // Output rows of the block whose input row is inside the image, as local positions.
    let oy_lo = (-dy).clamp(r0, r1);
    let oy_hi = (h - dy).clamp(oy_lo, r1);
    let (q0, q1) = (((oy_lo - r0) * w) as usize, ((oy_hi - r0) * w) as usize);
    let n = dst.len();
    let qa = q0.max((-base).max(0) as usize).min(q1);
    let qb = q1.min((h * w - base).max(0) as usize).max(qa);
    dst[..qa].fill(0.0);
    dst[qb..n].fill(0.0);
    if qa < qb {
        // qa ≥ −base and qb ≤ h·w − base here, so the source range is inside the plane.
        let (sa, sb) = ((qa as isize + base) as usize, (qb as isize + base) as usize);
        dst[qa..qb].copy_from_slice(&src[sa..sb]);
    }
    let (wu, edge) = (g.w, dx.unsigned_abs().min(g.w));
    if edge > 0 {
        for line in dst[q0..q1].chunks_exact_mut(wu) {
            if dx > 0 {
                line[wu - edge..].fill(0.0);
            } else {
                line[..edge].fill(0.0);
            }
        }
    }
}

/// im2col row of one image, any stride and padding, a line at a time.
fn gather_rows(g: &Geom, src: &[f32], t: &Tap, rows: Range<usize>, dst: &mut [f32]) {
    let &Tap { ki, kj, lo, hi } = t;
    for (oy, line_out) in rows.zip(dst.chunks_exact_mut(g.wo)) {
        let Some(iy) = g.row(oy, ki).filter(|_| lo < hi) else {
            line_out.fill(0.0);
            continue;
        };
        let line = &src[iy * g.w..][..g.w];
        line_out[..lo].fill(0.0);
        line_out[hi..].fill(0.0);
        let ix0 = lo * g.stride + kj - g.pad;
        if g.stride == 1 {
            line_out[lo..hi].copy_from_slice(&line[ix0..ix0 + hi - lo]);
        } else {
            for (d, &v) in line_out[lo..hi]
                .iter_mut()
                .zip(line[ix0..].iter().step_by(g.stride))
            {
                *d = v;
            }
        }
    }
}

/// Adds the columns of `dcol` (`[ckk][b·positions]`) onto the `b·c` planes of `dx`.
fn col2im(g: &Geom, dcol: &[f32], b: usize, dx: &mut [f32]) {
    let (p, plane) = (g.positions(), g.h * g.w);
    let l = b * p;
    dx[..b * g.c * plane]
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(idx, dst)| {
            let (i, c) = (idx / g.c, idx % g.c);
            for ki in 0..g.kh {
                // Output rows whose input row under ki is inside the image.
                let oy_lo = g.pad.saturating_sub(ki).div_ceil(g.stride).min(g.ho);
                let oy_hi = if g.h + g.pad > ki {
                    ((g.h + g.pad - ki - 1) / g.stride + 1).min(g.ho)
                } else {
                    0
                };
                for kj in 0..g.kw {
                    let (lo, hi) = g.columns(kj);
                    if lo == hi {
                        continue;
                    }
                    let r = (c * g.kh + ki) * g.kw + kj;
                    let src = &dcol[r * l + i * p..][..p];
                    let ix0 = lo * g.stride + kj - g.pad;
                    for oy in oy_lo..oy_hi {
                        let iy = oy * g.stride + ki - g.pad;
                        let line = &mut dst[iy * g.w..][..g.w];
                        let s = &src[oy * g.wo + lo..oy * g.wo + hi];
                        if g.stride == 1 {
                            for (d, v) in line[ix0..ix0 + s.len()].iter_mut().zip(s) {
                                *d += v;
                            }
                        } else {
                            for (d, v) in line[ix0..].iter_mut().step_by(g.stride).zip(s) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        });
}

/// `[b][o][p]` → `[o][b·p]`.
fn gather(src: &[f32], b: usize, o: usize, p: usize, dst: &mut [f32]) {
    dst[..o * b * p]
        .par_chunks_mut(p)
        .enumerate()
        .for_each(|(idx, d)| {
            let (oo, i) = (idx / b, idx % b);
            d.copy_from_slice(&src[(i * o + oo) * p..][..p]);
        });
}

fn forward(g: &Geom, x: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(g.n * g.o * g.positions());
    forward_into(g, x, w, &mut out)?;
    Ok(out)
}

/// Appends the convolution's output to `out`.
fn forward_into(g: &Geom, x: &[f32], w: &[f32], out: &mut Vec<f32>) -> Result<()> {
    let (p, ckk, o) = (g.positions(), g.ckk(), g.o);
    let wm = MatRef::rows(w, o, ckk);
    if p >= PER_IMAGE {
        // Each image's im2col built and multiplied a block of output rows at a time, the
        // block still in cache when the product reads it, written straight into the output.
        // With at least one image per thread the images run in parallel and each one's blocks
        // in order (no fork-join between them; faster on one thread too), else the blocks run
        // in parallel. The blocks are the same either way, and so are the bits.
        let blocks = ColumnBlocks {
            n: p,
            width: g.block_rows(FWD_BLOCK) * g.wo,
            parallel: g.n < rayon::current_num_threads(),
        };
        return append_parts(out, g.n, o * p, |i, part| {
            part.product_by_columns(wm, blocks, |cols, b| {
                im2col_rows(g, x, i, cols.start / g.wo..cols.end / g.wo, b);
            })
        });
    }
    // Few positions per image: the product over all images' columns, a block of whole images
    // at a time (blocks in parallel), then [o][n·p] → [n][o][p].
    let l = g.n * p;
    let mut tmp = Scratch::take(o * l);
    let blocks = ColumnBlocks {
        n: l,
        width: g.block_images(FWD_BLOCK) * p,
        parallel: true,
    };
    matmul_by_columns(&mut tmp[..o * l], wm, blocks, |cols, b| {
        im2col(g, x, cols.start / p, cols.len() / p, b, false);
    })?;
    // [o][n·p] → [n][o][p], images in parallel: a serial copy here left the other thread
    // idle.
    let start = out.len();
    out.resize(start + g.n * o * p, 0.0);
    out[start..]
        .par_chunks_mut((o * p).max(1))
        .enumerate()
        .for_each(|(i, img)| {
            for (oo, d) in img.chunks_exact_mut(p.max(1)).enumerate() {
                d.copy_from_slice(&tmp[oo * l + i * p..][..p]);
            }
        });
    Ok(())
}

/// For stride 1 the input gradient is itself a convolution: of the output gradient with the
/// kernel flipped and its channels swapped, padding k − 1 − pad. That runs on the forward's
/// well-shaped gemm and writes dx once, instead of a k²-times larger column gradient that
/// col2im must add back.
fn transposed(g: &Geom) -> Option<Geom> {
    (g.stride == 1 && g.kh == g.kw && g.pad < g.kh).then_some(Geom {
        n: g.n,
        c: g.o,
        h: g.ho,
        w: g.wo,
        o: g.c,
        kh: g.kh,
        kw: g.kw,
        stride: 1,
        pad: g.kh - 1 - g.pad,
        ho: g.h,
        wo: g.w,
    })
}

/// `w[o][c][i][j]` → `[c][o][kh−1−i][kw−1−j]`, in blocks of 16 input channels (one task
/// each) by 16 kernels: a plain loop over `c` then `o` reads the deep layers' weights (up to
/// 2.4 MiB) at a stride of `c·kh·kw` floats and spent most of the backward's own time waiting
/// for them. On one thread this ran while the other waited, about 2% of a two-thread step.
fn flipped(g: &Geom, w: &[f32]) -> Vec<f32> {
    const BLOCK: usize = 16;
    let kk = g.kh * g.kw;
    let mut out = vec![0f32; w.len()];
    out.par_chunks_mut((BLOCK * g.o * kk).max(1))
        .enumerate()
        .for_each(|(blk, dst)| {
            let c0 = blk * BLOCK;
            let c1 = (c0 + BLOCK).min(g.c);
            for o0 in (0..g.o).step_by(BLOCK) {
                let o1 = (o0 + BLOCK).min(g.o);
                if kk == 9 {
                    // The 3×3 kernels as arrays: a fixed reversal instead of a 9-step loop
                    // with its bounds checks, 2–3 cycles per float on the deep layers.
                    for c in c0..c1 {
                        for o in o0..o1 {
                            let mut r = [0f32; 9];
                            r.copy_from_slice(&w[(o * g.c + c) * 9..][..9]);
                            r.reverse();
                            dst[((c - c0) * g.o + o) * 9..][..9].copy_from_slice(&r);
                        }
                    }
                    continue;
                }
                for c in c0..c1 {
                    for o in o0..o1 {
                        let k = &w[(o * g.c + c) * kk..][..kk];
                        let d = &mut dst[((c - c0) * g.o + o) * kk..][..kk];
                        for (d, &v) in d.iter_mut().zip(k.iter().rev()) {
                            *d = v;
                        }
                    }
                }
            }
        });
    out
}

/// `[dx (if asked) | dw]`, flat.
fn backward(g: &Geom, x: &[f32], w: &[f32], dy: &[f32], need_dx: bool) -> Result<Vec<f32>> {
    let (p, ckk, o) = (g.positions(), g.ckk(), g.o);
    let chunk = g.chunk();
    let image = g.c * g.h * g.w;
    let nx = if need_dx { g.n * image } else { 0 };
    let mut packed = Vec::with_capacity(nx + o * ckk);
    let via_transposed = need_dx.then(|| transposed(g)).flatten();
    match via_transposed {
        Some(gt) => forward_into(&gt, dy, &flipped(g, w), &mut packed)?,
        // col2im adds into dx.
        None => packed.resize(nx, 0f32),
    }
    if p >= PER_IMAGE && (!need_dx || via_transposed.is_some()) {
        packed.extend(weight_gradient_by_parts(g, x, dy)?);
        return Ok(packed);
    }
    let mut col = Scratch::take(ckk * chunk * p);
    let mut dyt = Scratch::take(o * chunk * p);
    for n0 in (0..g.n).step_by(chunk) {
        let b = chunk.min(g.n - n0);
        let l = b * p;
        let dy_c = &dy[n0 * o * p..(n0 + b) * o * p];
        if b > 1 {
            gather(dy_c, b, o, p, &mut dyt);
        }
        let dyt_m = if b == 1 {
            MatRef::rows(dy_c, o, p)
        } else {
            MatRef::rows(&dyt[..o * l], o, l)
        };
        im2col(g, x, n0, b, &mut col, true);
        // dW (o × ckk) += dYᵀ (o × l) · colᵀ (l × ckk), chunks in order.
        let cols = MatRef::transposed(&col[..ckk * l], l, ckk);
        if n0 == 0 {
            matmul_append(&mut packed, dyt_m, cols)?;
        } else {
            matmul(&mut packed[nx..], true, dyt_m, cols)?;
        }
        if need_dx && via_transposed.is_none() {
            // dcol (ckk × l) = Wᵀ (ckk × o) · dYᵀ (o × l), reusing col's buffer.
            let wt = MatRef::transposed(w, ckk, o);
            matmul(&mut col[..ckk * l], false, wt, dyt_m)?;
            let dx = &mut packed[n0 * image..(n0 + b) * image];
            col2im(g, &col, b, dx);
        }
    }
    if g.n == 0 {
        // No images: a zero weight gradient.
        packed.resize(nx + o * ckk, 0.0);
    }
    Ok(packed)
}

/// Partial weight gradients over this many groups of images, summed in order at the end. A
/// constant, not the thread count: the sums, and so the bits, are the same on any machine.
const DW_PARTS: usize = 4;

/// dW = Σ over images of dY_i (o × p) · col_iᵀ (p × ckk), for maps of at least
/// [`PER_IMAGE`] positions: each group of images on one thread (im2col and product of an
/// image in cache, no fork-join per image), the groups in parallel.
fn weight_gradient_by_parts(g: &Geom, x: &[f32], dy: &[f32]) -> Result<Vec<f32>> {
    let (p, ckk, o) = (g.positions(), g.ckk(), g.o);
    let parts = g.n.clamp(1, DW_PARTS);
    let partials = (0..parts)
        .into_par_iter()
        .map(|j| {
            let mut acc = vec![0f32; o * ckk];
            let rows = g.block_rows(DW_BLOCK);
            let mut col = Scratch::take(ckk * rows * g.wo);
            for i in j * g.n / parts..(j + 1) * g.n / parts {
                let dy_i = &dy[i * o * p..][..o * p];
                // A block of output rows at a time, as the forward: the block's columns of
                // dY_i (rows p apart) times the block's im2col, transposed.
                for r0 in (0..g.ho).step_by(rows) {
                    let (r1, j0) = ((r0 + rows).min(g.ho), r0 * g.wo);
                    let len = (r1 - r0) * g.wo;
                    im2col_rows(g, x, i, r0..r1, &mut col[..ckk * len]);
                    let dy_b = MatRef {
                        data: &dy_i[j0..],
                        rows: o,
                        cols: len,
                        rs: p,
                        cs: 1,
                    };
                    let cols = MatRef::transposed(&col[..ckk * len], len, ckk);
                    matmul_serial(&mut acc, true, dy_b, cols)?;
                }
            }
            Ok(acc)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut parts = partials.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![0f32; o * ckk]);
    for q in parts {
        dw.iter_mut().zip(&q).for_each(|(a, b)| *a += b);
    }
    Ok(dw)
}

/// The convolution as a custom op on (input, weight).
#[derive(Debug, Clone, Copy)]
struct Conv2d {
    stride: usize,
    pad: usize,
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "classm-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let out = forward(&g, values(s1, l1, "conv2d")?, values(s2, l2, "conv2d")?)?;
        Ok((CpuStorage::F32(out), Shape::from(g.out_dims().to_vec())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = conv2d_backward(x, w, grad, self.stride, self.pad, x.track_op())?;
        Ok((dx, Some(dw)))
    }
}

/// The gradients of `conv2d(x, w)` for output gradient `grad`: the input's (when `need_dx`)
/// and the weight's.
pub(crate) fn conv2d_backward(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    stride: usize,
    pad: usize,
    need_dx: bool,
) -> Result<(Option<Tensor>, Tensor)> {
    let packed = x.apply_op3_no_bwd(
        w,
        &grad.contiguous()?,
        &Conv2dBackward {
            stride,
            pad,
            need_dx,
        },
    )?;
    let nx = if need_dx { x.elem_count() } else { 0 };
    let dw = packed.narrow(0, nx, w.elem_count())?.reshape(w.shape())?;
    let dx = if need_dx {
        Some(packed.narrow(0, 0, nx)?.reshape(x.shape())?)
    } else {
        None
    };
    Ok((dx, dw))
}

/// The backward on (input, weight, output gradient) → flat `[dx | dw]`.
#[derive(Debug, Clone, Copy)]
struct Conv2dBackward {
    stride: usize,
    pad: usize,
    need_dx: bool,
}

impl CustomOp3 for Conv2dBackward {
    fn name(&self) -> &'static str {
        "classm-conv2d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        if l3.dims() != g.out_dims() {
            bail!(
                "conv2d backward: gradient {:?} for output {:?}",
                l3.dims(),
                g.out_dims()
            )
        }
        let op = "conv2d backward";
        let (x, w, dy) = (
            values(s1, l1, op)?,
            values(s2, l2, op)?,
            values(s3, l3, op)?,
        );
        let out = backward(&g, x, w, dy, self.need_dx)?;
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// `conv2d(x, w)` on contiguous CPU f32 tensors, recorded in no graph: for a backward that
/// calls [`conv2d_backward`] itself.
pub(crate) fn conv2d_untracked(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &Conv2d { stride, pad })
}

/// `conv2d(x, w)` without bias: the CPU kernel for CPU f32 tensors, candle's op elsewhere.
pub(crate) fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    if applies(x) {
        x.contiguous()?
            .apply_op2(&w.contiguous()?, Conv2d { stride, pad })
    } else {
        x.conv2d(w, pad, stride, 1, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gather_table_reads_what_the_line_copies_read() {
        // (c, h, w, k, stride, pad): same-size, strided, the stem's 7×7, 1×1 downsampling,
        // odd sizes, a kernel wider than the map, padding past a whole kernel row.
        for &(c, h, w, k, stride, pad) in &[
            (2, 4, 4, 3, 1, 1),
            (2, 5, 3, 3, 1, 1),
            (3, 8, 8, 3, 2, 1),
            (1, 13, 11, 7, 2, 3),
            (2, 7, 9, 1, 2, 0),
            (2, 2, 2, 3, 1, 1),
            (1, 1, 1, 3, 1, 1),
            (2, 3, 2, 5, 1, 2),
            (2, 6, 7, 3, 3, 2),
            (1, 20, 18, 3, 1, 1),
        ] {
            let g = Geom::new(&[2, c, h, w], &[3, c, k, k], stride, pad).unwrap();
            let x: Vec<f32> = (0..2 * c * h * w).map(|i| i as f32 + 1.0).collect();
            let taps = g.taps();
            for rows in [0..g.ho, g.ho / 2..g.ho, 0..g.ho.div_ceil(2)] {
                let len = rows.len() * g.wo;
                let table = g.gather_table(rows.clone());
                for n in 0..2 {
                    for ch in 0..c {
                        let src = g.plane(&x, n, ch);
                        for (t, tap) in taps.iter().enumerate() {
                            let (mut a, mut b) = (vec![-1f32; len], vec![-1f32; len]);
                            gather_plane(src, &table[t * len..][..len], &mut a);
                            im2col_row(&g, src, tap, rows.clone(), &mut b);
                            assert_eq!(
                                a,
                                b,
                                "{:?} rows {rows:?} tap {t}",
                                (c, h, w, k, stride, pad)
                            );
                        }
                    }
                }
            }
        }
    }
}
