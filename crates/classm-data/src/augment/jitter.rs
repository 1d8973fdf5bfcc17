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

/// PIL's `L` conversion: ITU-R 601-2 luma in 16-bit fixed point, rounded.
#[inline(always)]
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// PIL's `Image.blend` for 8-bit bands: computed in float, clipped, truncated.
#[inline(always)]
fn blend(d: f32, x: u8, f: f32) -> u8 {
    let t = d + f * (f32::from(x) - d);
    if t <= 0.0 {
        0
    } else if t >= 255.0 {
        255
    } else {
        t as u8
    }
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
        for v in p.iter_mut() {
            *v = blend(l, *v, f);
        }
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
