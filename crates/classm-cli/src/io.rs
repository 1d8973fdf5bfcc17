//! File IO: input discovery, image and mask loading, `.npy` and PNG writing, atomic writes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use classm_stain::{Conversion, Converted, rgb8_from_dynamic};
use image::{DynamicImage, GrayImage, ImageReader, RgbImage};

use crate::report::Tagged;

/// File extensions picked up in input directories (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "tif", "tiff"];

/// Extensions tried, in this order, for a mask in `--mask-dir`.
pub const MASK_EXTENSIONS: &[&str] = &["png", "tif", "tiff"];

/// One input image and where its outputs go.
#[derive(Debug, Clone)]
pub struct Input {
    /// The file.
    pub path: PathBuf,
    /// Sub-directory below the input directory it was found in (empty for files named on the
    /// command line or found at the top of a directory); outputs mirror it.
    pub rel_dir: PathBuf,
    /// File name without its last extension.
    pub stem: OsString,
}

impl Input {
    fn new(path: PathBuf, rel_dir: PathBuf) -> Input {
        let stem = path
            .file_stem()
            .map(|s| s.to_os_string())
            .unwrap_or_else(|| OsString::from("image"));
        Input {
            path,
            rel_dir,
            stem,
        }
    }

    /// `<dir>/<rel_dir>/<stem><suffix>`.
    pub fn output(&self, dir: &Path, suffix: &str) -> PathBuf {
        let mut name = self.stem.clone();
        name.push(suffix);
        dir.join(&self.rel_dir).join(name)
    }
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Expands the command-line inputs: files are taken as given (whatever their extension),
/// directories contribute their image files sorted by path (sub-directories too when
/// `recursive`, except `skip_dir`, typically the output directory). A path that does not exist
/// is kept, so that it is reported as a failed file.
pub fn collect_inputs(
    args: &[PathBuf],
    recursive: bool,
    skip_dir: Option<&Path>,
) -> Result<Vec<Input>> {
    let skip = skip_dir.and_then(|d| fs::canonicalize(d).ok());
    let mut out = Vec::new();
    for arg in args {
        if arg.is_dir() {
            let mut found = Vec::new();
            let not_entered = walk_dir(arg, Path::new(""), recursive, skip.as_deref(), &mut found)?;
            found.sort_by(|a, b| a.path.cmp(&b.path));
            if found.is_empty() {
                // A dataset's class folders hold its images one level down.
                let has_subdirs = !recursive && not_entered > 0;
                tracing::warn!(
                    "{}: no image files ({}){}",
                    arg.display(),
                    IMAGE_EXTENSIONS.join(", "),
                    if has_subdirs {
                        "; it has sub-directories: add --recursive to read them"
                    } else {
                        ""
                    }
                );
            }
            out.extend(found);
        } else {
            out.push(Input::new(arg.clone(), PathBuf::new()));
        }
    }
    Ok(out)
}

/// Returns how many sub-directories it did not enter.
fn walk_dir(
    dir: &Path,
    rel: &Path,
    recursive: bool,
    skip: Option<&Path>,
    out: &mut Vec<Input>,
) -> Result<usize> {
    let mut not_entered = 0;
    let entries =
        fs::read_dir(dir).with_context(|| format!("cannot list directory {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list directory {}", dir.display()))?;
        let path = entry.path();
        // Symbolic links to files are followed; links to directories are not (no cycles).
        let ft = entry
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if ft.is_dir() {
            if recursive && skip.is_none_or(|s| fs::canonicalize(&path).ok().as_deref() != Some(s))
            {
                not_entered += walk_dir(&path, &rel.join(entry.file_name()), recursive, skip, out)?;
            } else {
                not_entered += 1;
            }
        } else if has_image_extension(&path) && (ft.is_file() || path.is_file()) {
            out.push(Input::new(path, rel.to_path_buf()));
        }
    }
    Ok(not_entered)
}

/// Fails with a usage error when two inputs would write the same output files.
pub fn check_unique_outputs(inputs: &[Input]) -> Result<()> {
    let mut seen: HashMap<(PathBuf, OsString), &Path> = HashMap::new();
    for i in inputs {
        if let Some(first) = seen.insert((i.rel_dir.clone(), i.stem.clone()), &i.path) {
            crate::usage!(
                "{} and {} would write the same output files (same name without extension); \
                 rename one or process them separately",
                first.display(),
                i.path.display()
            );
        }
    }
    Ok(())
}

/// A decoded image as RGB8, with the conversion that was needed.
#[derive(Debug)]
pub struct Loaded {
    /// The pixels.
    pub image: RgbImage,
    /// What the file held before it became RGB8.
    pub conversion: Converted,
}

fn open_reader(path: &Path) -> Result<ImageReader<std::io::BufReader<fs::File>>> {
    ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))
}

/// Width and height from the file header, without decoding the pixels.
pub fn image_dimensions(path: &Path) -> Result<(u32, u32)> {
    open_reader(path)?
        .into_dimensions()
        .with_context(|| format!("cannot read the image header of {}", path.display()))
}

/// Decodes an image file (format from its content, else its extension) and converts it to RGB8
/// with every explicit conversion allowed: alpha dropped, grey replicated, depth reduced.
pub fn load_rgb(path: &Path) -> Result<Loaded> {
    let img = open_reader(path)?
        .decode()
        .with_context(|| format!("cannot decode {}", path.display()))?;
    let (cow, conversion) = rgb8_from_dynamic(&img, Conversion::permissive())
        .with_context(|| format!("cannot convert {} to RGB8", path.display()))?;
    let owned = match cow {
        Cow::Owned(o) => Some(o),
        Cow::Borrowed(_) => None,
    };
    // Already RGB8: take the buffer without copying it.
    let image = owned.unwrap_or_else(|| img.into_rgb8());
    if conversion != Converted::None {
        tracing::debug!("{}: converted to RGB8 ({:?})", path.display(), conversion);
    }
    Ok(Loaded { image, conversion })
}

/// The mask of `input` in `mask_dir`: `<mask_dir>/<rel_dir>/<stem>.{png,tif,tiff}`, the same
/// size as the image. A pixel is usable when any of its channels is non-zero.
pub fn load_mask(mask_dir: &Path, input: &Input, width: u32, height: u32) -> Result<GrayImage> {
    let candidates: Vec<PathBuf> = MASK_EXTENSIONS
        .iter()
        .map(|ext| input.output(mask_dir, &format!(".{ext}")))
        .collect();
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        return Err(Tagged::error(
            "mask",
            format!(
                "no mask for {}: expected {}",
                input.path.display(),
                candidates[0].with_extension("{png,tif,tiff}").display()
            ),
        ));
    };
    let img = open_reader(path)?
        .decode()
        .with_context(|| format!("cannot decode mask {}", path.display()))?;
    if (img.width(), img.height()) != (width, height) {
        return Err(Tagged::error(
            "mask",
            format!(
                "mask {} is {}x{}, image {} is {width}x{height}",
                path.display(),
                img.width(),
                img.height(),
                input.path.display()
            ),
        ));
    }
    Ok(match img {
        DynamicImage::ImageLuma8(g) => g,
        other => {
            let rgb = other.to_rgb16();
            GrayImage::from_fn(width, height, |x, y| {
                let p = rgb.get_pixel(x, y).0;
                image::Luma([if p.iter().any(|&v| v != 0) { 255 } else { 0 }])
            })
        }
    })
}

/// Creates a directory and its parents.
pub fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))
}

/// Writes `path` atomically: the content goes to a hidden temporary file
/// (`.<name>.XXXXXX.tmp`) in the same directory, is flushed to disk, then renamed over `path`.
/// On any error the temporary file is removed and `path` is left as it was.
pub fn write_atomic<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // A missing folder must not throw away a long run's result at the very end.
    create_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The usual mode of a new file (subject to the umask), not tempfile's 0600.
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        write(&mut w).with_context(|| format!("cannot write {}", path.display()))?;
        w.flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot rename the temporary file to {}", path.display()))?;
    Ok(())
}

/// Writes text atomically.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, |w| Ok(w.write_all(text.as_bytes())?))
}

/// The NumPy `.npy` version 1.0 header of a C-order little-endian float32 array of `shape`:
/// magic, version, header length, then the dictionary padded with spaces and ended by `\n` so
/// that the data starts at a multiple of 64 bytes.
pub fn npy_header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // 6 magic + 2 version + 2 length + dict + padding + '\n'
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header_len = dict.len() + pad + 1;
    let mut out = Vec::with_capacity(10 + header_len);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + pad, b' ');
    out.push(b'\n');
    out
}

/// Writes a `height × width` float32 map as `.npy` (v1.0, `<f4`, C order), atomically.
pub fn write_npy(path: &Path, width: usize, height: usize, data: &[f32]) -> Result<()> {
    anyhow::ensure!(
        data.len() == width * height,
        "map of {} values is not {width}x{height}",
        data.len()
    );
    write_atomic(path, |w| {
        w.write_all(&npy_header(&[height, width]))?;
        let mut buf = Vec::with_capacity(4 * 16384);
        for chunk in data.chunks(16384) {
            buf.clear();
            for v in chunk {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&buf)?;
        }
        Ok(())
    })
}

/// Writes an RGB8 buffer as PNG, atomically.
pub fn write_png(path: &Path, width: u32, height: u32, rgb: &[u8]) -> Result<()> {
    use image::ImageEncoder;
    write_atomic(path, |w| {
        image::codecs::png::PngEncoder::new(w).write_image(
            rgb,
            width,
            height,
            image::ExtendedColorType::Rgb8,
        )?;
        Ok(())
    })
}

/// Refuses to write `out` when it is the input file itself.
pub fn refuse_overwriting_input(input: &Path, out: &Path) -> Result<()> {
    if let (Ok(a), Ok(b)) = (fs::canonicalize(input), fs::canonicalize(out)) {
        if a == b {
            return Err(Tagged::error(
                "refused",
                format!(
                    "refusing to overwrite the input {} with an output",
                    input.display()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_terminated() {
        for shape in [[1usize, 1], [438, 584], [100000, 100000]] {
            let h = npy_header(&shape);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
            assert_eq!(u16::from_le_bytes([h[8], h[9]]) as usize, h.len() - 10);
            assert_eq!(h.last(), Some(&b'\n'));
            let text = std::str::from_utf8(&h[10..]).expect("ascii");
            assert!(text.contains(&format!("'shape': ({}, {})", shape[0], shape[1])));
        }
    }
}
