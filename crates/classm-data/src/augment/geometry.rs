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
    /// `None` where it falls outside the source (zero fill). Nearest neighbour with the grid of
    /// torchvision's tensor `rotate`: pixel centres, rotation about `((w − 1) / 2, (h − 1) / 2)`,
    /// coordinates rounded half to even.
    #[inline]
    pub fn map(
        &self,
        width: u32,
        height: u32,
        crop: u32,
        mut put: impl FnMut(usize, Option<usize>),
    ) {
        let (w, h) = (i64::from(width), i64::from(height));
        let s = crop as usize;
        let rad = f64::from(self.angle_deg).to_radians();
        let (sin, cos) = (rad.sin() as f32, rad.cos() as f32);
        let (cx, cy) = ((width as f32 - 1.0) / 2.0, (height as f32 - 1.0) / 2.0);
        let identity = self.angle_deg == 0.0;
        for i in 0..s {
            let ii = if self.vflip { s - 1 - i } else { i };
            let y = self.top + ii as i64;
            for j in 0..s {
                let jj = if self.hflip { s - 1 - j } else { j };
                let x = self.left + jj as i64;
                let out = i * s + j;
                if y < 0 || y >= h || x < 0 || x >= w {
                    put(out, None);
                    continue;
                }
                if identity {
                    put(out, Some((y * w + x) as usize));
                    continue;
                }
                let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                // Inverse of a counter-clockwise rotation on screen (y pointing down).
                let sx = (cx + cos * dx - sin * dy).round_ties_even();
                let sy = (cy + sin * dx + cos * dy).round_ties_even();
                if sx < 0.0 || sy < 0.0 || sx >= width as f32 || sy >= height as f32 {
                    put(out, None);
                } else {
                    put(out, Some(sy as usize * width as usize + sx as usize));
                }
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
