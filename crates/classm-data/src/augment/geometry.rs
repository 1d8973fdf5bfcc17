//! Rotation, centre crop, random crop and flips fused into one inverse mapping: each output
//! pixel is looked up once in the source, so the cost is that of the output, not the input.

use rand::Rng as _;

use crate::rng::Rng;

/// The geometric draws of one channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Rotation in degrees, counter-clockwise, about the image centre (nearest, fill 0).
    pub angle_deg: f32,
    /// Top-left corner of the output within the rotated image (may be negative where a
    /// centre crop larger than the image pads it).
    pub top: i64,
    /// See `top`.
    pub left: i64,
    /// Mirror left–right.
    pub hflip: bool,
    /// Mirror top–bottom.
    pub vflip: bool,
}

/// torchvision's `CenterCrop` offset: `round((size − crop) / 2)` (halves to even), or the
/// negative padding `−((crop − size) / 2)` when the crop is larger than the image.
pub fn center_offset(size: u32, crop: u32) -> i64 {
    if crop > size {
        -(i64::from(crop - size) / 2)
    } else {
        (f64::from(size - crop) / 2.0).round_ties_even() as i64
    }
}

impl Placement {
    /// The evaluation placement: a centre crop of `crop`, nothing else.
    pub fn center(width: u32, height: u32, crop: u32) -> Self {
        Placement {
            angle_deg: 0.0,
            top: center_offset(height, crop),
            left: center_offset(width, crop),
            hflip: false,
            vflip: false,
        }
    }

    /// Training draws, in the order of the authors' transform list: rotation angle uniform in
    /// (−360°, 360°) (if `rotate`), centre crop `center` (if given), random crop `crop`, then
    /// horizontal and vertical flips with probability ½ each (if `flips`).
    pub fn draw(
        width: u32,
        height: u32,
        rotate: bool,
        center: Option<u32>,
        crop: u32,
        flips: bool,
        rng: &mut Rng,
    ) -> Self {
        let angle_deg = if rotate {
            rng.random_range(-360.0f32..360.0)
        } else {
            0.0
        };
        let (cw, ch, ct, cl) = match center {
            Some(c) => (c, c, center_offset(height, c), center_offset(width, c)),
            None => (width, height, 0, 0),
        };
        let top = ct + i64::from(rng.random_range(0..=ch.saturating_sub(crop)));
        let left = cl + i64::from(rng.random_range(0..=cw.saturating_sub(crop)));
        let (hflip, vflip) = if flips {
            (rng.random_bool(0.5), rng.random_bool(0.5))
        } else {
            (false, false)
        };
        Placement {
            angle_deg,
            top,
            left,
            hflip,
            vflip,
        }
    }

    /// Calls `put(out_index, Some(src_index))` for every pixel of the `crop × crop` output, or
    /// `None` where it falls outside the source (zero fill). Nearest neighbour on the pixel
    /// centres, rotating about `((w − 1) / 2, (h − 1) / 2)` like torchvision's tensor `rotate`.
    /// Source coordinates step along each output row in 48.16 fixed point, rounded half up:
    /// exact integer arithmetic, so every platform picks the same pixels, and within
    /// `crop · 2⁻¹⁷` pixel of the exact rotation.
    #[inline]
    pub fn map(
        &self,
        width: u32,
        height: u32,
        crop: u32,
        mut put: impl FnMut(usize, Option<usize>),
    ) {
        const ONE: f64 = (1u64 << 16) as f64;
        const HALF: i64 = 1 << 15;
        let (w, h) = (i64::from(width), i64::from(height));
        let s = crop as usize;
        let rad = f64::from(self.angle_deg).to_radians();
        let (sin, cos) = rad.sin_cos();
        let (cx, cy) = (
            (f64::from(width) - 1.0) / 2.0,
            (f64::from(height) - 1.0) / 2.0,
        );
        let step: i64 = if self.hflip { -1 } else { 1 };
        let x0 = self.left + if self.hflip { s as i64 - 1 } else { 0 };
        let fixed = |v: f64| (v * ONE).round() as i64;
        let (ddx, ddy) = (fixed(step as f64 * cos), fixed(step as f64 * sin));
        for i in 0..s {
            let ii = if self.vflip { s - 1 - i } else { i };
            let y = self.top + ii as i64;
            let row = i * s;
            if !(0..h).contains(&y) {
                (0..s).for_each(|j| put(row + j, None));
                continue;
            }
            // Inverse of a counter-clockwise rotation on screen (y pointing down).
            let (dx0, dy) = (x0 as f64 - cx, y as f64 - cy);
            let mut fx = fixed(cx + cos * dx0 - sin * dy) + HALF;
            let mut fy = fixed(cy + sin * dx0 + cos * dy) + HALF;
            let mut x = x0;
            for j in 0..s {
                let (sx, sy) = (fx >> 16, fy >> 16);
                let inside = (0..w).contains(&x) && (0..w).contains(&sx) && (0..h).contains(&sy);
                put(row + j, inside.then(|| (sy * w + sx) as usize));
                fx += ddx;
                fy += ddy;
                x += step;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(p: &Placement, w: u32, h: u32, crop: u32, src: &[i32]) -> Vec<i32> {
        let mut out = vec![0; (crop * crop) as usize];
        p.map(w, h, crop, |o, s| out[o] = s.map_or(-1, |s| src[s]));
        out
    }

    #[test]
    fn center_offsets_follow_torchvision() {
        assert_eq!(center_offset(400, 282), 59);
        assert_eq!(center_offset(282, 256), 13);
        assert_eq!(center_offset(5, 2), 2); // round(1.5) = 2
        assert_eq!(center_offset(7, 2), 2); // round(2.5) = 2 (half to even)
        assert_eq!(center_offset(224, 282), -29);
        assert_eq!(center_offset(4, 7), -1);
    }

    #[test]
    fn quarter_turn_is_exact() {
        // 3x3 image, 90° counter-clockwise: the top row becomes the left column, reversed.
        let src: Vec<i32> = (0..9).collect();
        let p = Placement {
            angle_deg: 90.0,
            top: 0,
            left: 0,
            hflip: false,
            vflip: false,
        };
        assert_eq!(apply(&p, 3, 3, 3, &src), vec![2, 5, 8, 1, 4, 7, 0, 3, 6]);
        let full = Placement {
            angle_deg: 360.0,
            ..p
        };
        assert_eq!(apply(&full, 3, 3, 3, &src), src);
    }

    #[test]
    fn flips_and_padding() {
        let src: Vec<i32> = (0..4).collect();
        let p = Placement {
            angle_deg: 0.0,
            top: -1,
            left: 0,
            hflip: true,
            vflip: false,
        };
        // Output 2x2 from rows -1..1: the first row is padding, the second is row 0 mirrored.
        assert_eq!(apply(&p, 2, 2, 2, &src), vec![-1, -1, 1, 0]);
    }
}
