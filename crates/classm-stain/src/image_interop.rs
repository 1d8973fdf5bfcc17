//! Conversions from the `image` crate (default feature `image`).

use std::borrow::Cow;

use image::{DynamicImage, RgbImage};

use crate::error::{Result, StainError};
use crate::view::RgbView;

impl<'a> TryFrom<&'a RgbImage> for RgbView<'a> {
    type Error = StainError;

    fn try_from(img: &'a RgbImage) -> Result<Self> {
        RgbView::new(img.width() as usize, img.height() as usize, img.as_raw())
    }
}

/// How [`rgb8_from_dynamic`] treats inputs that are not 8-bit RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conversion {
    /// Accept RGBA by dropping alpha (otherwise an error).
    pub drop_alpha: bool,
    /// Accept grey images by replicating the channel (otherwise an error).
    pub grey_to_rgb: bool,
    /// Accept 16-bit and float images by scaling to 8 bits (otherwise an error).
    pub reduce_depth: bool,
}

impl Conversion {
    /// Every explicit conversion allowed.
    pub fn permissive() -> Self {
        Conversion {
            drop_alpha: true,
            grey_to_rgb: true,
            reduce_depth: true,
        }
    }
}

/// What a decoded image was before it became RGB8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converted {
    /// It was RGB8 already.
    None,
    /// Alpha was dropped.
    DroppedAlpha,
    /// Grey replicated to RGB.
    GreyToRgb,
    /// 16-bit or float reduced to 8-bit.
    ReducedDepth,
}

/// Borrows (or converts, where `conv` allows it) a decoded image as RGB8. RGBA, grey, 16-bit
/// and float images are errors unless their conversion is allowed: the crate never guesses.
pub fn rgb8_from_dynamic(
    img: &DynamicImage,
    conv: Conversion,
) -> Result<(Cow<'_, RgbImage>, Converted)> {
    let refuse = |what: &str, flag: &str| {
        Err(StainError::invalid(format!(
            "{what} image: convert it explicitly ({flag})"
        )))
    };
    match img {
        DynamicImage::ImageRgb8(i) => Ok((Cow::Borrowed(i), Converted::None)),
        DynamicImage::ImageRgba8(_) | DynamicImage::ImageLumaA8(_) if !conv.drop_alpha => {
            refuse("4-channel (RGBA)", "drop_alpha")
        }
        DynamicImage::ImageRgba8(_) => Ok((Cow::Owned(img.to_rgb8()), Converted::DroppedAlpha)),
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageLumaA8(_) if !conv.grey_to_rgb => {
            refuse("grey", "grey_to_rgb")
        }
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageLumaA8(_) => {
            Ok((Cow::Owned(img.to_rgb8()), Converted::GreyToRgb))
        }
        DynamicImage::ImageRgba16(_)
        | DynamicImage::ImageRgba32F(_)
        | DynamicImage::ImageLumaA16(_)
            if !conv.drop_alpha =>
        {
            refuse("4-channel (RGBA)", "drop_alpha")
        }
        _ if !conv.reduce_depth => refuse("16-bit or float", "reduce_depth"),
        _ => Ok((Cow::Owned(img.to_rgb8()), Converted::ReducedDepth)),
    }
}
