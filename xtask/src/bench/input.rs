//! Benchmark images: decoding, mirror tiling and a checksum shared with the Python script.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use classm_stain::{Conversion, rgb8_from_dynamic};
use image::DynamicImage;
use serde::{Deserialize, Serialize};

/// Which image a configuration uses: a file, optionally mirror-tiled to `mirror`×`mirror`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// The decoded file.
    pub path: PathBuf,
    /// Side of the square mirror tiling built from it (as the stain-ref harness's
    /// `make_images.mirror_tile`), or `None` for the file as it is.
    pub mirror: Option<usize>,
}

impl ImageSpec {
    /// File name, with the tiling if any.
    pub fn name(&self) -> String {
        let file = self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |f| f.to_string_lossy().into(),
        );
        match self.mirror {
            Some(s) => format!("{file}, mirror-tiled to {s}x{s}"),
            None => file,
        }
    }
}

/// A decoded RGB8 image.
#[derive(Debug)]
pub struct Loaded {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Packed RGB8.
    pub data: Vec<u8>,
    /// Seconds to read and decode the file.
    pub decode_s: f64,
    /// Seconds to build the mirror tiling (0 without).
    pub mirror_s: f64,
}

/// Decodes `spec` to packed RGB8 (alpha dropped if present) and builds its mirror tiling.
pub fn load(spec: &ImageSpec) -> Result<Loaded> {
    let t0 = Instant::now();
    let (width, height, data) = decode(&spec.path)?;
    let decode_s = t0.elapsed().as_secs_f64();
    let Some(side) = spec.mirror else {
        return Ok(Loaded {
            width,
            height,
            data,
            decode_s,
            mirror_s: 0.0,
        });
    };
    let t1 = Instant::now();
    let tiled = mirror_tile(&data, width, height, side, side);
    drop(data);
    Ok(Loaded {
        width: side,
        height: side,
        data: tiled,
        decode_s,
        mirror_s: t1.elapsed().as_secs_f64(),
    })
}

fn decode(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()?
        .decode()
        .with_context(|| format!("cannot decode {}", path.display()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data = match img {
        DynamicImage::ImageRgb8(rgb) => rgb.into_raw(),
        other => {
            let conv = Conversion {
                drop_alpha: true,
                ..Conversion::default()
            };
            let (rgb, _) = rgb8_from_dynamic(&other, conv)
                .with_context(|| format!("{} is not RGB(A) 8-bit", path.display()))?;
            rgb.into_owned().into_raw()
        }
    };
    if data.len() != w * h * 3 {
        bail!("{}: decoded buffer has the wrong size", path.display());
    }
    Ok((w, h, data))
}

/// `out_w`×`out_h` crop of the periodic tiling of `[a, fliplr(a)]` over `[row, flipud(row)]`:
/// numpy's `make_images.mirror_tile` of the stain-ref harness, pixel for pixel.
pub fn mirror_tile(src: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    let fold = |i: usize, n: usize| {
        let b = i % (2 * n);
        if b < n { b } else { 2 * n - 1 - b }
    };
    let xs: Vec<usize> = (0..out_w).map(|x| 3 * fold(x, w)).collect();
    let mut out = vec![0u8; out_w * out_h * 3];
    for (y, row) in out.chunks_exact_mut(3 * out_w).enumerate() {
        let s = &src[3 * w * fold(y, h)..3 * w * (fold(y, h) + 1)];
        for (o, &sx) in row.chunks_exact_mut(3).zip(&xs) {
            o.copy_from_slice(&s[sx..sx + 3]);
        }
    }
    out
}

/// `[Σ_y (y+1)·rowsum_y, Σ_x (x+1)·colsum_x]` over all bytes: cheap, order-sensitive in both
/// directions, and computed identically by `xtask/python/bench_stain.py`.
pub fn checksum(data: &[u8], w: usize, h: usize) -> [u64; 2] {
    let mut cols = vec![0u64; w];
    let mut by_row = 0u64;
    for (y, row) in data.chunks_exact(3 * w).take(h).enumerate() {
        let mut s = 0u64;
        for (c, p) in cols.iter_mut().zip(row.chunks_exact(3)) {
            let v = u64::from(p[0]) + u64::from(p[1]) + u64::from(p[2]);
            *c += v;
            s += v;
        }
        by_row = by_row.wrapping_add((y as u64 + 1).wrapping_mul(s));
    }
    let by_col = cols.iter().enumerate().fold(0u64, |a, (x, &c)| {
        a.wrapping_add((x as u64 + 1).wrapping_mul(c))
    });
    [by_row, by_col]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_matches_numpy_recipe() {
        // 2x1 source: pixels A=(1,1,1), B=(2,2,2); 5x3 mirror tiling.
        let src = [1, 1, 1, 2, 2, 2];
        let out = mirror_tile(&src, 2, 1, 5, 3);
        let firsts: Vec<u8> = out.chunks_exact(3).map(|p| p[0]).collect();
        // row pattern A B B A A; every row identical (height 1 folds onto itself)
        assert_eq!(firsts, [1, 2, 2, 1, 1, 1, 2, 2, 1, 1, 1, 2, 2, 1, 1]);
    }

    #[test]
    fn checksum_sees_flips() {
        let a = [1u8, 0, 0, 2, 0, 0];
        let b = [2u8, 0, 0, 1, 0, 0];
        assert_ne!(checksum(&a, 2, 1), checksum(&b, 2, 1));
        assert_eq!(checksum(&a, 2, 1), [3, 5]);
    }
}
