//! RGB colour jitter with the arithmetic of torchvision's `ColorJitter` on PIL images
//! (`ImageEnhance`): each step blends with a degenerate image, `trunc(clip(d + f·(x − d)))`.

use rand::Rng as _;

use crate::rng::Rng;

/// One jitter step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitterOp {
    /// Blend with black.
    Brightness,
    /// Blend with the image's mean grey level.
    Contrast,
    /// Blend with the pixel's own grey level.
    Saturation,
}

/// Draws of one jitter: the step order and the three factors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterDraw {
    /// Order of the steps (torchvision permutes them for every image).
    pub order: [JitterOp; 3],
    /// Brightness, contrast and saturation factors.
    pub factors: [f32; 3],
}

impl JitterDraw {
    /// Factors uniform in `[1 − strength, 1 + strength)` for each of brightness, contrast and
    /// saturation, in a random order.
    pub fn draw(strength: [f32; 3], rng: &mut Rng) -> Self {
        let mut order = [
            JitterOp::Brightness,
            JitterOp::Contrast,
            JitterOp::Saturation,
        ];
        for i in (1..3).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        let mut factors = [1.0f32; 3];
        for (f, s) in factors.iter_mut().zip(strength) {
            if s > 0.0 {
                *f = rng.random_range((1.0 - s)..(1.0 + s));
            }
        }
        JitterDraw { order, factors }
    }

    /// Applies the draw to packed RGB8 pixels in place.
    pub fn apply(&self, rgb: &mut [u8]) {
        for op in self.order {
            match op {
                JitterOp::Brightness => brightness(rgb, self.factors[0]),
                JitterOp::Contrast => contrast(rgb, self.factors[1]),
                JitterOp::Saturation => saturation(rgb, self.factors[2]),
            }
        }
    }
}

/// A jitter folded for one image: per-byte tables before and after the saturation step (the
/// only step that mixes channels), with the contrast means already measured. Applying it to a
/// pixel gives exactly what [`JitterDraw::apply`] gives, without writing the image.
#[derive(Debug, Clone)]
pub struct FoldedJitter {
    /// Per-byte table before saturation.
    pub pre: [u8; 256],
    /// The saturation step as a table `[grey][value]`, if that step changes anything: 65 536
    /// blends computed once per image instead of three per pixel.
    pub saturation: Option<Box<[[u8; 256]; 256]>>,
    /// Per-byte table after saturation.
    pub post: [u8; 256],
}

fn identity() -> [u8; 256] {
    std::array::from_fn(|v| v as u8)
}

/// `outer ∘ inner` as one table.
fn compose(outer: &[u8; 256], inner: &[u8; 256]) -> [u8; 256] {
    std::array::from_fn(|v| outer[inner[v] as usize])
}

/// `blend(d, v, f)` for every `v`.
fn blend_table(d: f32, f: f32) -> [u8; 256] {
    let mut t = [0u8; 256];
    for (v, o) in t.iter_mut().enumerate() {
        *o = blend(d, v as u8, f);
    }
    t
}

impl FoldedJitter {
    /// The pixel after the jitter, before the `post` table.
    #[inline(always)]
    pub fn before_post(&self, r: u8, g: u8, b: u8) -> [u8; 3] {
        let p = [
            self.pre[r as usize],
            self.pre[g as usize],
            self.pre[b as usize],
        ];
        match &self.saturation {
            None => p,
            Some(t) => {
                let row = &t[luma(p[0], p[1], p[2]) as usize];
                [row[p[0] as usize], row[p[1] as usize], row[p[2] as usize]]
            }
        }
    }

    /// Σ luma of the jittered pixels of `rgb`, the contrast step's mean times the pixel count:
    /// the luma weights folded into the last per-byte table, so a pixel costs three lookups
    /// and two adds (plus the saturation lookups when that step came first).
    fn luma_sum(&self, rgb: &[u8]) -> u64 {
        // The last per-byte table: everything after saturation, or the whole jitter without it.
        let last = match &self.saturation {
            None => compose(&self.post, &self.pre),
            Some(_) => self.post,
        };
        // luma(r, g, b) = (19595 r + 38470 g + 7471 b + 0x8000) >> 16; the sum of the three
        // weighted bytes stays below 2³².
        let weigh = |w: u32, add: u32| -> [u32; 256] {
            std::array::from_fn(|v| w * u32::from(last[v]) + add)
        };
        let (wr, wg, wb) = (weigh(19595, 0), weigh(38470, 0), weigh(7471, 0x8000));
        match &self.saturation {
            None => sum_pixels(rgb, |p| {
                wr[p[0] as usize] + wg[p[1] as usize] + wb[p[2] as usize]
            }),
            Some(sat) => {
                let pre = &self.pre;
                sum_pixels(rgb, |p| {
                    let q = [pre[p[0] as usize], pre[p[1] as usize], pre[p[2] as usize]];
                    let row = &sat[luma(q[0], q[1], q[2]) as usize];
                    wr[row[q[0] as usize] as usize]
                        + wg[row[q[1] as usize] as usize]
                        + wb[row[q[2] as usize] as usize]
                })
            }
        }
    }

    /// No change at all.
    pub fn is_identity(&self) -> bool {
        self.saturation.is_none() && self.pre == identity() && self.post == identity()
    }
}

impl JitterDraw {
    /// Folds the draw for the packed RGB8 image `rgb`: at most two read passes (for contrast
    /// means), no writes.
    pub fn fold(&self, rgb: &[u8]) -> FoldedJitter {
        let mut folded = FoldedJitter {
            pre: identity(),
            saturation: None,
            post: identity(),
        };
        for op in self.order {
            match op {
                JitterOp::Brightness if self.factors[0] != 1.0 => {
                    let t = blend_table(0.0, self.factors[0]);
                    folded.post = compose(&t, &folded.post);
                }
                JitterOp::Contrast if self.factors[1] != 1.0 && rgb.len() >= 3 => {
                    let sum = folded.luma_sum(rgb);
                    let mean = (sum as f64 / (rgb.len() / 3) as f64 + 0.5).floor() as f32;
                    let t = blend_table(mean, self.factors[1]);
                    folded.post = compose(&t, &folded.post);
                }
                JitterOp::Saturation if self.factors[2] != 1.0 => {
                    // Everything so far becomes the table before saturation.
                    folded.pre = compose(&folded.post, &folded.pre);
                    folded.post = identity();
                    let f = self.factors[2];
                    let mut t = Box::new([[0u8; 256]; 256]);
                    for (l, row) in t.iter_mut().enumerate() {
                        *row = blend_table(l as f32, f);
                    }
                    folded.saturation = Some(t);
                }
                _ => {}
            }
        }
        folded
    }
}

/// Σ `f(pixel) >> 16` over the packed RGB pixels of `rgb`.
#[inline(always)]
fn sum_pixels(rgb: &[u8], f: impl Fn(&[u8]) -> u32) -> u64 {
    rgb.chunks_exact(3).map(|p| u64::from(f(p) >> 16)).sum()
}

/// PIL's `L` conversion: ITU-R 601-2 luma in 16-bit fixed point, rounded.
#[inline(always)]
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// PIL's `Image.blend` for 8-bit bands: computed in float, clipped to [0, 255], truncated.
///
/// The same as `(d + f * (x - d)) as u8` for every input, NaN (0) included, but vectorisable:
/// a saturating float-to-integer `as` keeps LLVM scalar on baseline x86-64, and the
/// saturation table is 65 536 of these per image. So the clip is `max` (which drops a NaN)
/// and `min`, and the truncation reads the bits of `t + 2²³`, whose low mantissa holds
/// `round(t)`, corrected by one where that rounded up.
#[inline(always)]
#[allow(clippy::manual_clamp)] // `clamp` keeps a NaN; `max` drops it
fn blend(d: f32, x: u8, f: f32) -> u8 {
    const MAGIC: f32 = 8_388_608.0;
    let t = (d + f * (f32::from(x) - d)).max(0.0).min(255.0);
    let m = t + MAGIC;
    let rounded = m.to_bits() as i32 - MAGIC.to_bits() as i32;
    (rounded - i32::from(m - MAGIC > t)) as u8
}

fn brightness(rgb: &mut [u8], f: f32) {
    if f == 1.0 {
        return;
    }
    let table: [u8; 256] = std::array::from_fn(|v| blend(0.0, v as u8, f));
    for v in rgb.iter_mut() {
        *v = table[*v as usize];
    }
}

fn contrast(rgb: &mut [u8], f: f32) {
    if f == 1.0 || rgb.len() < 3 {
        return;
    }
    // ImageEnhance.Contrast: the degenerate image is the mean of the L image, rounded.
    let sum: u64 = rgb
        .chunks_exact(3)
        .map(|p| u64::from(luma(p[0], p[1], p[2])))
        .sum();
    let n = (rgb.len() / 3) as f64;
    let mean = (sum as f64 / n + 0.5).floor() as f32;
    let table: [u8; 256] = std::array::from_fn(|v| blend(mean, v as u8, f));
    for v in rgb.iter_mut() {
        *v = table[*v as usize];
    }
}

fn saturation(rgb: &mut [u8], f: f32) {
    if f == 1.0 {
        return;
    }
    for p in rgb.chunks_exact_mut(3) {
        let l = f32::from(luma(p[0], p[1], p[2]));
        let (r, g, b) = (blend(l, p[0], f), blend(l, p[1], f), blend(l, p[2], f));
        p[0] = r;
        p[1] = g;
        p[2] = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_matches_pil() {
        // PIL: Image.new("RGB", (1, 1), (200, 100, 50)).convert("L").getpixel((0, 0)) == 124
        assert_eq!(luma(200, 100, 50), 124);
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(0, 0, 0), 0);
    }

    #[test]
    fn blend_truncates_like_pil() {
        assert_eq!(blend(0.0, 100, 1.057), 105); // 105.7 → 105
        assert_eq!(blend(0.0, 250, 1.1), 255);
        assert_eq!(blend(128.0, 0, 1.1), 0); // −12.8 clipped
    }

    #[test]
    fn blend_equals_a_saturating_cast() {
        let mut fs = vec![0.0f32, 0.5, 0.9, 1.0, 1.1, 1.7, 100.0, -1.0, f32::INFINITY];
        let mut x = 99u32;
        for _ in 0..300 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            fs.push(x as f32 / u32::MAX as f32 * 2.0);
        }
        for f in fs {
            for d in 0..=255 {
                let d = d as f32;
                for v in 0..=255u8 {
                    let want = (d + f * (f32::from(v) - d)) as u8;
                    assert_eq!(blend(d, v, f), want, "{d} {v} {f}");
                }
            }
        }
    }

    #[test]
    fn blend_table_equals_blend() {
        for d in [0.0f32, 17.0, 128.0, 255.0] {
            for f in [0.0f32, 0.5, 0.9, 1.0, 1.1, 1.7] {
                let t = blend_table(d, f);
                for v in 0..=255u8 {
                    assert_eq!(t[v as usize], blend(d, v, f), "{d} {v} {f}");
                }
            }
        }
    }

    #[test]
    fn identity_factors_change_nothing() {
        let mut px: Vec<u8> = (0..=255).collect::<Vec<u8>>().repeat(3);
        let before = px.clone();
        let d = JitterDraw {
            order: [
                JitterOp::Saturation,
                JitterOp::Contrast,
                JitterOp::Brightness,
            ],
            factors: [1.0; 3],
        };
        d.apply(&mut px);
        assert_eq!(px, before);
    }

    #[test]
    fn folded_jitter_equals_applying_the_steps() {
        use rand::{Rng as _, SeedableRng};
        let mut rng = crate::rng::Rng::seed_from_u64(3);
        for case in 0..60 {
            let n = 1 + case * 7;
            let px: Vec<u8> = (0..3 * n).map(|_| rng.random()).collect();
            let d = JitterDraw::draw([0.3, 0.4, 0.5], &mut rng);
            let mut want = px.clone();
            d.apply(&mut want);
            let f = d.fold(&px);
            let got: Vec<u8> = px
                .chunks_exact(3)
                .flat_map(|p| f.before_post(p[0], p[1], p[2]).map(|v| f.post[v as usize]))
                .collect();
            assert_eq!(got, want, "{d:?}");
        }
    }

    #[test]
    fn zero_saturation_gives_grey() {
        let mut px = vec![200, 100, 50, 10, 220, 90];
        saturation(&mut px, 0.0);
        assert_eq!(
            px,
            vec![
                124,
                124,
                124,
                luma(10, 220, 90),
                luma(10, 220, 90),
                luma(10, 220, 90)
            ]
        );
    }
}
