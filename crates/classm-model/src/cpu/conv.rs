//! 2-D convolution without bias (one group, no dilation): im2col of a chunk of images into
//! one `[C·kh·kw, images·positions]` matrix and a single gemm per chunk, so deep layers with
//! few positions still make one large product. The backward computes the weight gradient
//! (summed over chunks in order) and the input gradient (gemm + col2im) in one op.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::gemm::{MatRef, matmul};
use super::{applies, values};

/// Floats of im2col scratch per chunk of images (16 MiB); a chunk holds at least one image.
const COL_BUDGET: usize = 1 << 22;

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

    fn out_dims(&self) -> [usize; 4] {
        [self.n, self.o, self.ho, self.wo]
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

/// Writes images `[n0, n0+b)` of `x` as columns of `col` (`[ckk][b·positions]`).
fn im2col(g: &Geom, x: &[f32], n0: usize, b: usize, col: &mut [f32]) {
    let (p, plane) = (g.positions(), g.h * g.w);
    let l = b * p;
    col[..g.ckk() * l]
        .par_chunks_mut(l)
        .enumerate()
        .for_each(|(r, row)| {
            let (c, ki, kj) = (r / (g.kh * g.kw), (r / g.kw) % g.kh, r % g.kw);
            let (lo, hi) = g.columns(kj);
            for i in 0..b {
                let src = &x[((n0 + i) * g.c + c) * plane..][..plane];
                for oy in 0..g.ho {
                    let dst = &mut row[i * p + oy * g.wo..][..g.wo];
                    let Some(iy) = g.row(oy, ki).filter(|_| lo < hi) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let line = &src[iy * g.w..][..g.w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    let ix0 = lo * g.stride + kj - g.pad;
                    if g.stride == 1 {
                        dst[lo..hi].copy_from_slice(&line[ix0..ix0 + hi - lo]);
                    } else {
                        for (k, d) in dst[lo..hi].iter_mut().enumerate() {
                            *d = line[ix0 + k * g.stride];
                        }
                    }
                }
            }
        });
}

/// Adds the columns of `dcol` (`[ckk][b·positions]`) back onto the `b·c` planes of `dx`.
fn col2im(g: &Geom, dcol: &[f32], b: usize, dx: &mut [f32]) {
    let (p, plane) = (g.positions(), g.h * g.w);
    let l = b * p;
    dx[..b * g.c * plane]
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(idx, dst)| {
            let (i, c) = (idx / g.c, idx % g.c);
            dst.fill(0.0);
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let (lo, hi) = g.columns(kj);
                    if lo == hi {
                        continue;
                    }
                    let r = (c * g.kh + ki) * g.kw + kj;
                    let src = &dcol[r * l + i * p..][..p];
                    let ix0 = lo * g.stride + kj - g.pad;
                    for oy in 0..g.ho {
                        let Some(iy) = g.row(oy, ki) else { continue };
                        let line = &mut dst[iy * g.w..][..g.w];
                        let s = &src[oy * g.wo + lo..oy * g.wo + hi];
                        if g.stride == 1 {
                            for (d, v) in line[ix0..ix0 + s.len()].iter_mut().zip(s) {
                                *d += v;
                            }
                        } else {
                            for (k, v) in s.iter().enumerate() {
                                line[ix0 + k * g.stride] += v;
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

/// `[o][b·p]` → `[b][o][p]`.
fn scatter(src: &[f32], b: usize, o: usize, p: usize, dst: &mut [f32]) {
    dst[..b * o * p]
        .par_chunks_mut(p)
        .enumerate()
        .for_each(|(idx, d)| {
            let (i, oo) = (idx / o, idx % o);
            d.copy_from_slice(&src[oo * b * p + i * p..][..p]);
        });
}

fn forward(g: &Geom, x: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    let (p, ckk, o) = (g.positions(), g.ckk(), g.o);
    let chunk = g.chunk();
    let mut out = vec![0f32; g.n * o * p];
    let mut col = vec![0f32; ckk * chunk * p];
    let mut tmp = vec![0f32; if chunk > 1 { o * chunk * p } else { 0 }];
    let wm = MatRef::rows(w, o, ckk);
    for n0 in (0..g.n).step_by(chunk) {
        let b = chunk.min(g.n - n0);
        let l = b * p;
        im2col(g, x, n0, b, &mut col);
        let cm = MatRef::rows(&col[..ckk * l], ckk, l);
        let dst = &mut out[n0 * o * p..(n0 + b) * o * p];
        if b == 1 {
            matmul(dst, false, wm, cm)?;
        } else {
            matmul(&mut tmp[..o * l], false, wm, cm)?;
            scatter(&tmp, b, o, p, dst);
        }
    }
    Ok(out)
}

/// `[dx (if asked) | dw]`, flat.
fn backward(g: &Geom, x: &[f32], w: &[f32], dy: &[f32], need_dx: bool) -> Result<Vec<f32>> {
    let (p, ckk, o) = (g.positions(), g.ckk(), g.o);
    let chunk = g.chunk();
    let image = g.c * g.h * g.w;
    let nx = if need_dx { g.n * image } else { 0 };
    let mut packed = vec![0f32; nx + o * ckk];
    let (dx, dw) = packed.split_at_mut(nx);
    let mut col = vec![0f32; ckk * chunk * p];
    let mut dyt = vec![0f32; if chunk > 1 { o * chunk * p } else { 0 }];
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
        im2col(g, x, n0, b, &mut col);
        // dW (o × ckk) += dYᵀ (o × l) · colᵀ (l × ckk), chunks in order.
        matmul(
            dw,
            n0 > 0,
            dyt_m,
            MatRef::transposed(&col[..ckk * l], l, ckk),
        )?;
        if need_dx {
            // dcol (ckk × l) = Wᵀ (ckk × o) · dYᵀ (o × l), reusing col's buffer.
            matmul(
                &mut col[..ckk * l],
                false,
                MatRef::transposed(w, ckk, o),
                dyt_m,
            )?;
            col2im(g, &col, b, &mut dx[n0 * image..(n0 + b) * image]);
        }
    }
    Ok(packed)
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
        let need_dx = x.track_op();
        let packed = x.apply_op3_no_bwd(
            w,
            &grad.contiguous()?,
            &Conv2dBackward {
                stride: self.stride,
                pad: self.pad,
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
        Ok((dx, Some(dw)))
    }
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

/// `conv2d(x, w)` without bias: the CPU kernel for CPU f32 tensors, candle's op elsewhere.
pub(crate) fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    if applies(x) {
        x.contiguous()?
            .apply_op2(&w.contiguous()?, Conv2d { stride, pad })
    } else {
        x.conv2d(w, pad, stride, 1, 1)
    }
}
