//! Borrowed pixel buffers: the only way pixels enter the crate.

use crate::error::{Result, StainError};

/// A borrowed, read-only 8-bit RGB image (interleaved `R G B R G B ...`), possibly a window into
/// a larger buffer (`stride` bytes between row starts).
///
/// The crate never writes through it: estimation and separation leave the caller's pixels as
/// they are.
#[derive(Debug, Clone, Copy)]
pub struct RgbView<'a> {
    width: usize,
    height: usize,
    stride: usize,
    data: &'a [u8],
}

impl<'a> RgbView<'a> {
    /// Wraps a tightly packed buffer of `width * height * 3` bytes.
    ///
    /// Zero-sized views are allowed (estimation then fails with `InvalidInput`, separation
    /// produces nothing); a buffer of the wrong length is an error.
    pub fn new(width: usize, height: usize, data: &'a [u8]) -> Result<Self> {
        let stride = width
            .checked_mul(3)
            .ok_or_else(|| StainError::invalid("width overflows"))?;
        Self::with_stride(width, height, stride, data)
    }

    /// Wraps a buffer whose rows start `stride` bytes apart (`stride >= 3 * width`).
    pub fn with_stride(width: usize, height: usize, stride: usize, data: &'a [u8]) -> Result<Self> {
        let row = width
            .checked_mul(3)
            .ok_or_else(|| StainError::invalid("width overflows"))?;
        if stride < row {
            return Err(StainError::invalid(format!(
                "stride {stride} is shorter than a row of {width} RGB pixels ({row} bytes)"
            )));
        }
        let needed = if height == 0 || width == 0 {
            0
        } else {
            (height - 1)
                .checked_mul(stride)
                .and_then(|v| v.checked_add(row))
                .ok_or_else(|| StainError::invalid("image size overflows"))?
        };
        if data.len() < needed || (stride == row && data.len() != needed) {
            return Err(StainError::invalid(format!(
                "buffer of {} bytes does not hold {width}x{height} RGB8 pixels ({needed} bytes); \
                 RGBA, grey or 16-bit data must be converted explicitly",
                data.len()
            )));
        }
        Ok(RgbView {
            width,
            height,
            stride,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Number of pixels.
    pub fn pixels(&self) -> usize {
        self.width * self.height
    }

    /// True when the view holds no pixel.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// Row `y` as `3 * width` bytes.
    pub fn row(&self, y: usize) -> &'a [u8] {
        let start = y * self.stride;
        &self.data[start..start + 3 * self.width]
    }

    /// A rectangular window of this view, without copying.
    pub fn crop(&self, x: usize, y: usize, width: usize, height: usize) -> Result<RgbView<'a>> {
        if x.checked_add(width).is_none_or(|r| r > self.width)
            || y.checked_add(height).is_none_or(|b| b > self.height)
        {
            return Err(StainError::invalid(format!(
                "crop {width}x{height}+{x}+{y} lies outside the {}x{} image",
                self.width, self.height
            )));
        }
        if width == 0 || height == 0 {
            return Ok(RgbView {
                width,
                height,
                stride: 3 * width,
                data: &[],
            });
        }
        let start = y * self.stride + 3 * x;
        let end = (y + height - 1) * self.stride + 3 * (x + width);
        Ok(RgbView {
            width,
            height,
            stride: self.stride,
            data: &self.data[start..end],
        })
    }

    /// Rows `y0..y1` as a view.
    pub(crate) fn rows(&self, y0: usize, y1: usize) -> RgbView<'a> {
        if y0 >= y1 || self.width == 0 {
            return RgbView {
                width: self.width,
                height: 0,
                stride: self.stride,
                data: &[],
            };
        }
        let start = y0 * self.stride;
        let end = (y1 - 1) * self.stride + 3 * self.width;
        RgbView {
            width: self.width,
            height: y1 - y0,
            stride: self.stride,
            data: &self.data[start..end],
        }
    }
}

/// A borrowed per-pixel mask: `width * height` bytes, row-major; a non-zero byte marks a pixel
/// that may be used, zero excludes it (pen marks, folds, labels).
#[derive(Debug, Clone, Copy)]
pub struct MaskView<'a> {
    width: usize,
    height: usize,
    data: &'a [u8],
}

impl<'a> MaskView<'a> {
    /// Wraps `width * height` bytes.
    pub fn new(width: usize, height: usize, data: &'a [u8]) -> Result<Self> {
        let needed = width
            .checked_mul(height)
            .ok_or_else(|| StainError::invalid("mask size overflows"))?;
        if data.len() != needed {
            return Err(StainError::invalid(format!(
                "mask of {} bytes does not match {width}x{height} pixels",
                data.len()
            )));
        }
        Ok(MaskView {
            width,
            height,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Row `y` of the mask.
    pub fn row(&self, y: usize) -> &'a [u8] {
        &self.data[y * self.width..(y + 1) * self.width]
    }

    pub(crate) fn rows(&self, y0: usize, y1: usize) -> MaskView<'a> {
        MaskView {
            width: self.width,
            height: y1.saturating_sub(y0),
            data: &self.data[y0 * self.width..y1.max(y0) * self.width],
        }
    }
}

/// Declared value range of floating-point pixels, required to convert them to 8-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatRange {
    /// Values in `[0, 1]` (scaled by 255).
    Unit,
    /// Values in `[0, 255]`.
    Byte,
}

/// Converts interleaved RGBA8 to RGB8 by dropping alpha. The caller decides that the alpha
/// channel carries nothing (the crate never guesses).
pub fn rgb_from_rgba(rgba: &[u8]) -> Result<Vec<u8>> {
    if rgba.len() % 4 != 0 {
        return Err(StainError::invalid(format!(
            "RGBA buffer length {} is not a multiple of 4",
            rgba.len()
        )));
    }
    Ok(rgba
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect())
}

/// Converts interleaved float RGB to RGB8 with round-to-nearest, given the declared range.
/// Non-finite values and values outside the range are rejected rather than clamped silently.
pub fn rgb_from_f32(rgb: &[f32], range: FloatRange) -> Result<Vec<u8>> {
    let scale = match range {
        FloatRange::Unit => 255.0,
        FloatRange::Byte => 1.0,
    };
    let max = match range {
        FloatRange::Unit => 1.0,
        FloatRange::Byte => 255.0,
    };
    rgb.iter()
        .enumerate()
        .map(|(i, &v)| {
            if !v.is_finite() || !(0.0..=max).contains(&v) {
                Err(StainError::invalid(format!(
                    "sample {i} = {v} is outside the declared range [0, {max}]"
                )))
            } else {
                Ok((v * scale).round() as u8)
            }
        })
        .collect()
}
