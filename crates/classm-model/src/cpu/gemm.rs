//! A bounds-checked front to the `gemm` crate's f32 kernel (the one candle uses): every
//! extent is checked against its slice before the unsafe call, so callers stay safe.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::ops::Range;

use candle_core::{Result, bail};
use gemm::Parallelism as Par;
use rayon::prelude::*;

use super::scratch::Scratch;

/// A read-only matrix view: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major `rows × cols`.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major `cols × rows` matrix, seen as `rows × cols`.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: 1,
            cs: rows,
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst (m×n, row-major) = a·b`, or `dst += a·b` with `accumulate`. Runs on the current
/// rayon pool. The gemm kernel splits rows and columns among threads, never the inner
/// dimension, so the result does not depend on the thread count.
pub(crate) fn matmul(dst: &mut [f32], accumulate: bool, a: MatRef, b: MatRef) -> Result<()> {
    matmul_with(dst, accumulate, a, b, Par::Rayon(0))
}

/// [`matmul`] on the calling thread only, for callers that already run one product per task.
pub(crate) fn matmul_serial(dst: &mut [f32], accumulate: bool, a: MatRef, b: MatRef) -> Result<()> {
    matmul_with(dst, accumulate, a, b, Par::None)
}

fn matmul_with(dst: &mut [f32], accumulate: bool, a: MatRef, b: MatRef, par: Par) -> Result<()> {
    check(dst.len(), a, b)?;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return Ok(());
    }
    // SAFETY: `check` keeps every index the kernel forms — (i·rs + j·cs) for i < rows,
    // j < cols — inside its slice; `dst` is exclusively borrowed and holds m·n row-major
    // elements; the inputs are shared borrows that outlive the call.
    unsafe { kernel(dst.as_mut_ptr(), n, accumulate, a, b, par) };
    Ok(())
}

/// Appends `a·b` (m×n, row-major) to `out` without initialising the space first: the output
/// of a layer is written once, by the kernel.
pub(crate) fn matmul_append(out: &mut Vec<f32>, a: MatRef, b: MatRef) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    check(m * n, a, b)?;
    out.reserve(m * n);
    let start = out.len();
    let dst = &mut out.spare_capacity_mut()[..m * n];
    if k == 0 {
        dst.fill(MaybeUninit::new(0.0));
    } else if m * n > 0 {
        // SAFETY: as in `matmul` for the operands; `dst` is exclusively borrowed and holds
        // the m·n elements, which the kernel only writes (read_dst false, k ≥ 1), every one.
        unsafe {
            kernel(
                dst.as_mut_ptr().cast::<f32>(),
                n,
                false,
                a,
                b,
                Par::Rayon(0),
            )
        };
    }
    // SAFETY: every one of the m·n elements past `start` was written just above.
    unsafe { out.set_len(start + m * n) };
    Ok(())
}

/// One part of an [`append_parts`] output: `len` uninitialised elements that only a product
/// can fill, whole.
pub(crate) struct Part<'a>(&'a mut [MaybeUninit<f32>]);

/// Proof that the part starting at this address was filled.
pub(crate) struct Filled(usize);

/// The base of a part's output, shared by the tasks that write its disjoint column blocks.
#[derive(Clone, Copy)]
struct Base(*mut f32);

// SAFETY: only `by_columns` makes one, and each of its tasks writes its own columns through
// it.
unsafe impl Send for Base {}
// SAFETY: as for `Send`.
unsafe impl Sync for Base {}

impl Base {
    /// The pointer, through a method so that closures capture the whole `Base` (which is
    /// `Sync`) rather than its raw-pointer field (which is not).
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

impl Part<'_> {
    /// Writes `a·b` (m × n, row-major) into the part as [`matmul_by_columns`] does. The
    /// part's length must be m·n.
    pub fn product_by_columns<F>(self, a: MatRef, blocks: ColumnBlocks, fill: F) -> Result<Filled>
    where
        F: Fn(Range<usize>, &mut [f32]) + Sync,
    {
        let at = self.0.as_ptr() as usize;
        by_columns(self.0, a, blocks, fill)?;
        Ok(Filled(at))
    }
}

/// How a product's `n` columns are split: blocks of `width` (the last one shorter), run in
/// parallel or in order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ColumnBlocks {
    pub n: usize,
    pub width: usize,
    pub parallel: bool,
}

/// `dst (m × n, row-major) = a·b`, a block of `b`'s columns at a time: `fill` gets the columns
/// `j0..j1` and writes them as a row-major k × (j1 − j0) matrix into the slice it is given, so
/// that an operand built on the fly (an im2col block) stays in cache for its product. With
/// `parallel`, blocks run in parallel (a single block splits its product across threads); the
/// gemm never splits its inner dimension, so the bits depend on the block width only.
pub(crate) fn matmul_by_columns<F>(
    dst: &mut [f32],
    a: MatRef,
    blocks: ColumnBlocks,
    fill: F,
) -> Result<()>
where
    F: Fn(Range<usize>, &mut [f32]) + Sync,
{
    // SAFETY: `by_columns` only stores initialised values, so `dst` stays initialised.
    let dst = unsafe { &mut *(std::ptr::from_mut(dst) as *mut [MaybeUninit<f32>]) };
    by_columns(dst, a, blocks, fill)
}

/// The body of [`matmul_by_columns`]: writes every one of `dst`'s m·n elements.
fn by_columns<F>(
    dst: &mut [MaybeUninit<f32>],
    a: MatRef,
    blocks: ColumnBlocks,
    fill: F,
) -> Result<()>
where
    F: Fn(Range<usize>, &mut [f32]) + Sync,
{
    let ColumnBlocks { n, width, parallel } = blocks;
    let (m, k) = (a.rows, a.cols);
    if dst.len() != m * n || width == 0 || !a.fits() {
        bail!(
            "a {m}×{k} by {n} product in blocks of {width} columns for {} elements",
            dst.len()
        );
    }
    if k == 0 || m == 0 {
        dst.fill(MaybeUninit::new(0.0));
        return Ok(());
    }
    let count = n.div_ceil(width);
    let par = if parallel && count == 1 {
        Par::Rayon(0)
    } else {
        Par::None
    };
    let base = Base(dst.as_mut_ptr().cast::<f32>());
    let block = |j0: usize| {
        let w = width.min(n - j0);
        let mut b = Scratch::take(k * w);
        fill(j0..j0 + w, &mut b[..k * w]);
        let bm = MatRef::rows(&b[..k * w], k, w);
        // SAFETY: `a` fits its slice (checked above) and `bm` is a row-major k × w view of
        // `b`. The destination is columns [j0, j0 + w) of the m × n row-major `dst`: element
        // (i, j) at j0 + i·n + j < m·n, every one written (read_dst false, k ≥ 1), and no
        // other block writes these columns.
        unsafe { kernel(base.ptr().add(j0), n, false, a, bm, par) };
    };
    if parallel && count > 1 {
        (0..n).into_par_iter().step_by(width).for_each(block);
    } else {
        (0..n).step_by(width).for_each(block);
    }
    Ok(())
}

/// Appends `parts` parts of `len` elements each, computed in parallel by `fill`, which gets
/// its part's index and fills it with [`Part::product_by_columns`]: one part per task, so
/// that small products are not split across threads, where they would spend on the split
/// what they gain.
pub(crate) fn append_parts<F>(out: &mut Vec<f32>, parts: usize, len: usize, fill: F) -> Result<()>
where
    F: Fn(usize, Part<'_>) -> Result<Filled> + Sync,
{
    let total = parts * len;
    if total == 0 {
        return Ok(());
    }
    let start = out.len();
    out.reserve(total);
    out.spare_capacity_mut()[..total]
        .par_chunks_mut(len)
        .enumerate()
        .try_for_each(|(i, dst)| {
            let at = dst.as_ptr() as usize;
            let Filled(filled) = fill(i, Part(dst))?;
            if filled != at {
                bail!("append_parts: part {i} was not filled by its own product");
            }
            Ok(())
        })?;
    // SAFETY: every one of the `total` elements past `start` belongs to exactly one part, and
    // each part returned the proof (checked against its address) that a product filled it.
    unsafe { out.set_len(start + total) };
    Ok(())
}

fn check(dst_len: usize, a: MatRef, b: MatRef) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || dst_len < m * n || !a.fits() || !b.fits() {
        bail!(
            "matmul extents: dst {} for {m}×{n}, a {}×{} over {}, b {}×{} over {}",
            dst_len,
            a.rows,
            a.cols,
            a.data.len(),
            b.rows,
            b.cols,
            b.data.len()
        );
    }
    Ok(())
}

/// The gemm call. Callers guarantee that `dst` points to an m × n row-major matrix with rows
/// `dst_rs` apart, writable (readable too when `accumulate`) and that both views fit their slices.
unsafe fn kernel(dst: *mut f32, dst_rs: usize, accumulate: bool, a: MatRef, b: MatRef, par: Par) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // SAFETY: forwarded from the caller's guarantees.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: MatRef, b: MatRef) -> Vec<f32> {
        let mut out = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols)
                    .map(|l| a.data[i * a.rs + l * a.cs] * b.data[l * b.rs + j * b.cs])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn matches_a_naive_product_in_both_layouts_and_accumulates() {
        let a: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..56).map(|i| (i as f32 * 0.11).cos()).collect();
        let (ma, mb) = (MatRef::rows(&a, 5, 7), MatRef::rows(&b, 7, 8));
        let mut dst = vec![0f32; 40];
        matmul(&mut dst, false, ma, mb).unwrap();
        let want = naive(ma, mb);
        for (x, y) in dst.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
        matmul(&mut dst, true, ma, mb).unwrap();
        for (x, y) in dst.iter().zip(&want) {
            assert!((x - 2.0 * y).abs() < 1e-5);
        }
        let mut out = vec![7.0f32];
        matmul_append(&mut out, ma, mb).unwrap();
        assert_eq!(out.len(), 41);
        assert_eq!(out[0], 7.0);
        for (x, y) in out[1..].iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
        // a's transpose read from a 7×5 row-major buffer.
        let at = MatRef::transposed(&a, 5, 7);
        let mut dst2 = vec![0f32; 40];
        matmul(&mut dst2, false, at, mb).unwrap();
        let want = naive(at, mb);
        for (x, y) in dst2.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
    }

    #[test]
    fn parts_equal_appended_products_and_a_failed_part_appends_nothing() {
        let a: Vec<f32> = (0..6 * 40).map(|i| (i as f32 * 0.37).sin()).collect();
        let bs: Vec<Vec<f32>> = (0..5)
            .map(|j| {
                (0..40 * 70)
                    .map(|i| ((i + j) as f32 * 0.11).cos())
                    .collect()
            })
            .collect();
        let ma = MatRef::rows(&a, 6, 40);
        // Columns j0..j1 of b, row-major.
        let columns = |b: &[f32], cols: std::ops::Range<usize>, dst: &mut [f32]| {
            for (l, row) in dst.chunks_exact_mut(cols.len()).enumerate() {
                row.copy_from_slice(&b[l * 70 + cols.start..l * 70 + cols.end]);
            }
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        // Blocks of 16 columns, the last one partial, in order and in parallel: equal bits,
        // and the product within rounding.
        let mut runs = Vec::new();
        for parallel in [false, true] {
            let mut got = vec![1.5f32];
            pool.install(|| {
                append_parts(&mut got, 5, 6 * 70, |i, part| {
                    let blocks = ColumnBlocks {
                        n: 70,
                        width: 16,
                        parallel,
                    };
                    part.product_by_columns(ma, blocks, |cols, dst| columns(&bs[i], cols, dst))
                })
            })
            .unwrap();
            runs.push(got);
        }
        assert_eq!(runs[0], runs[1]);
        let got = &runs[0];
        assert_eq!((got.len(), got[0]), (1 + 5 * 6 * 70, 1.5));
        for (i, b) in bs.iter().enumerate() {
            let want = naive(ma, MatRef::rows(b, 40, 70));
            for (x, y) in got[1 + i * 420..][..420].iter().zip(&want) {
                assert!((x - y).abs() < 1e-4, "part {i}: {x} vs {y}");
            }
        }
        let mut got = runs[0].clone();
        let err = pool.install(|| {
            append_parts(&mut got, 5, 6 * 70, |i, part| {
                // Part 3 asks for a product of the wrong size.
                let n = if i == 3 { 69 } else { 70 };
                let blocks = ColumnBlocks {
                    n,
                    width: 16,
                    parallel: false,
                };
                part.product_by_columns(ma, blocks, |cols, dst| columns(&bs[i], cols, dst))
            })
        });
        assert!(err.is_err());
        assert_eq!(got, runs[0], "nothing appended");
    }

    #[test]
    fn large_products_do_not_depend_on_the_thread_count() {
        let (m, k, n) = (96, 3000, 700);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104_729) % 997) as f32 / 997.0 - 0.5)
            .collect();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut dst = vec![0f32; m * n];
            pool.install(|| {
                matmul(
                    &mut dst,
                    false,
                    MatRef::rows(&a, m, k),
                    MatRef::transposed(&b, k, n),
                )
            })
            .unwrap();
            dst
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn refuses_views_past_their_slices() {
        let a = vec![0f32; 6];
        let bad = MatRef::rows(&a, 3, 3);
        let mut dst = vec![0f32; 9];
        assert!(matmul(&mut dst, false, bad, MatRef::rows(&a, 3, 2)).is_err());
        let ok = MatRef::rows(&a, 2, 3);
        assert!(matmul(&mut dst[..1], false, ok, MatRef::rows(&a, 3, 2)).is_err());
    }
}
