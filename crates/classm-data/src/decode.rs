//! Image files to RGB8, with every conversion explicit and every failure typed.

use std::io::ErrorKind as IoKind;
use std::path::Path;

use classm_stain::{Conversion, Converted, rgb8_from_dynamic};
use image::{DynamicImage, ImageError, ImageFormat, RgbImage};

use crate::error::{DataError, DecodeProblem, Result};

/// File extensions a dataset scan treats as images (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "tif", "tiff"];

/// Whether `path` has one of [`IMAGE_EXTENSIONS`].
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// A decoded image and what was done to make it RGB8.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The pixels.
    pub image: RgbImage,
    /// The conversion applied (grey to RGB, alpha dropped, 16-bit reduced, or none).
    pub converted: Converted,
}

/// Reads and decodes one PNG, JPEG or TIFF file into RGB8. Grey, grey+alpha, RGBA, 16-bit
/// and float images are converted and the conversion is returned so that callers count it.
/// The format comes from the file's bytes, not its name.
pub fn read_rgb8(path: &Path) -> Result<Decoded> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_rgb8(path, &bytes)
}

/// Width and height from the file's header, without decoding the pixels.
pub fn dimensions(path: &Path) -> Result<(u32, u32)> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    reader.into_dimensions().map_err(|e| DataError::Decode {
        path: path.to_path_buf(),
        problem: classify(&e),
        detail: e.to_string(),
    })
}

/// [`read_rgb8`] on bytes already read; `path` is only used in errors.
pub fn decode_rgb8(path: &Path, bytes: &[u8]) -> Result<Decoded> {
    let fail = |problem, detail: String| DataError::Decode {
        path: path.to_path_buf(),
        problem,
        detail,
    };
    if bytes.is_empty() {
        return Err(fail(DecodeProblem::Empty, "the file has no bytes".into()));
    }
    let format = image::guess_format(bytes).map_err(|_| {
        fail(
            DecodeProblem::Unsupported,
            "not a PNG, JPEG or TIFF file (unrecognised signature)".into(),
        )
    })?;
    if !matches!(
        format,
        ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Tiff
    ) {
        return Err(fail(
            DecodeProblem::Unsupported,
            format!("{format:?} is not one of PNG, JPEG, TIFF"),
        ));
    }
    let img = image::load_from_memory_with_format(bytes, format)
        .map_err(|e| fail(classify(&e), e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(fail(DecodeProblem::Empty, "the image has no pixels".into()));
    }
    if let DynamicImage::ImageRgb8(image) = img {
        // The common case keeps the decoder's buffer: no copy.
        return Ok(Decoded {
            image,
            converted: Converted::None,
        });
    }
    let (rgb, converted) = rgb8_from_dynamic(&img, Conversion::permissive())
        .map_err(|e| fail(DecodeProblem::Unsupported, e.to_string()))?;
    Ok(Decoded {
        image: rgb.into_owned(),
        converted,
    })
}

fn classify(e: &ImageError) -> DecodeProblem {
    match e {
        ImageError::Unsupported(_) => DecodeProblem::Unsupported,
        ImageError::IoError(io) if io.kind() == IoKind::UnexpectedEof => DecodeProblem::Truncated,
        _ => {
            // Decoders report a short file in their own words.
            let msg = e.to_string().to_ascii_lowercase();
            if [
                "eof",
                "end of file",
                "unexpected end",
                "truncated",
                "not enough data",
            ]
            .iter()
            .any(|k| msg.contains(k))
            {
                DecodeProblem::Truncated
            } else {
                DecodeProblem::Corrupt
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_dimensions_equal_decoded_ones_and_junk_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let png = dir.path().join("a.png");
        image::RgbImage::new(7, 5).save(&png).expect("write png");
        assert_eq!(dimensions(&png).expect("dimensions"), (7, 5));
        let junk = dir.path().join("b.png");
        std::fs::write(&junk, b"not an image").expect("write");
        assert!(matches!(dimensions(&junk), Err(DataError::Decode { .. })));
    }
}
