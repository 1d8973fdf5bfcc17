//! The CLASS-M per-sample pipeline (classm-method.md §3): RGB jitter, separation with the
//! group's matrix, independent H and E augmentation, normalisation; and the evaluation
//! transform. Every step can be switched off for ablations.

pub mod geometry;
pub mod jitter;

use image::RgbImage;
use image::imageops::FilterType;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::rng::{SampleKey, Stream};
use crate::unmix::{Unmixer, unit};
pub use geometry::{Placement, center_offset};
pub use jitter::{JitterDraw, JitterOp};

/// What the two input channels of the model are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Views {
    /// Hematoxylin and eosin from stain separation (CLASS-M).
    #[default]
    Stains,
    /// Red and green channels, `v / 255`: an RGB channel pair in place of the stains, the
    /// alternative views CLASS-M's stain views are compared against.
    RedGreen,
    /// Red and blue channels.
    RedBlue,
}

/// Sizes and switches of the pipeline. The defaults are the paper's (`paper()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Resize the RGB patch to this square size first (bilinear); for small CPU presets.
    pub resize: Option<u32>,
    /// Colour jitter strength for brightness, contrast and saturation (factors uniform in
    /// `[1 − s, 1 + s)`); `None` switches the step off.
    pub jitter: Option<[f32; 3]>,
    /// Per-channel brightness strength on H and E (factor uniform in `[1 − s, 1 + s)`).
    pub channel_brightness: Option<f32>,
    /// Rotation by a uniform angle in (−360°, 360°).
    pub rotate: bool,
    /// Centre crop after the rotation (the paper: 282 = 400/√2, which cuts the rotated
    /// corners away).
    pub center_crop: Option<u32>,
    /// Random crop in training, centre crop in evaluation: the model's input size.
    pub crop: u32,
    /// Horizontal and vertical flips with probability ½ each.
    pub flips: bool,
    /// The two channels.
    pub views: Views,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self::paper()
    }
}

impl AugmentConfig {
    /// The authors' settings: 400 px patches, jitter 0.1, brightness 0.1, rotation, centre crop
    /// 282, random crop 256, flips.
    pub fn paper() -> Self {
        AugmentConfig {
            resize: None,
            jitter: Some([0.1; 3]),
            channel_brightness: Some(0.1),
            rotate: true,
            center_crop: Some(282),
            crop: 256,
            flips: true,
            views: Views::Stains,
        }
    }

    /// The paper's chain scaled to patches of `size` pixels (centre crop `size/√2`, random crop
    /// ~0.9 of that, rounded down to a multiple of 8), optionally resized to `size` first.
    pub fn scaled(size: u32, resize: bool) -> Self {
        let center = (f64::from(size) / std::f64::consts::SQRT_2).floor() as u32;
        let crop = ((f64::from(center) * 256.0 / 282.0) as u32 / 8 * 8).max(8);
        AugmentConfig {
            resize: resize.then_some(size),
            center_crop: Some(center),
            crop,
            ..Self::paper()
        }
    }

    /// Checks sizes and strengths.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DataError::Config(m));
        if self.crop == 0 {
            return bad("crop size must be ≥ 1".into());
        }
        if let Some(c) = self.center_crop
            && c < self.crop
        {
            return bad(format!(
                "centre crop {c} is smaller than the crop {}",
                self.crop
            ));
        }
        if self.resize == Some(0) {
            return bad("resize must be ≥ 1".into());
        }
        let strengths = self.jitter.unwrap_or([0.0; 3]);
        for s in strengths.iter().chain(self.channel_brightness.iter()) {
            if !(s.is_finite() && (0.0..1.0).contains(s)) {
                return bad(format!("augmentation strength {s} not in [0, 1)"));
            }
        }
        Ok(())
    }

    /// Pixels per channel of one output.
    pub fn out_pixels(&self) -> usize {
        (self.crop as usize).pow(2)
    }
}

/// Mean and standard deviation of each channel, applied as `(x − mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Means of the two channels.
    pub mean: [f32; 2],
    /// Standard deviations of the two channels (> 0).
    pub std: [f32; 2],
}

impl Normalization {
    /// The authors' constants for their data (classm-method.md §3.4).
    pub fn paper() -> Self {
        Normalization {
            mean: [0.1738, 0.2507],
            std: [0.1876, 0.1546],
        }
    }

    /// No normalisation.
    pub fn identity() -> Self {
        Normalization {
            mean: [0.0; 2],
            std: [1.0; 2],
        }
    }
}

/// Reused buffers of one worker.
#[derive(Debug, Default)]
pub struct Scratch {
    rgb: Vec<u8>,
    resizer: fast_image_resize::Resizer,
}

/// The configured pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    config: AugmentConfig,
    norm: Normalization,
    /// The channel tables of the RGB views, built once rather than per sample.
    rgb_views: Option<Unmixer>,
}

impl Pipeline {
    /// A pipeline; fails on invalid sizes or strengths.
    pub fn new(config: AugmentConfig, norm: Normalization) -> Result<Self> {
        config.validate()?;
        if norm.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || norm.mean.iter().any(|m| !m.is_finite())
        {
            return Err(DataError::Config(format!("invalid normalisation {norm:?}")));
        }
        let rgb_views = match config.views {
            Views::Stains => None,
            Views::RedGreen => Some(Unmixer::channels(0, 1)),
            Views::RedBlue => Some(Unmixer::channels(0, 2)),
        };
        Ok(Pipeline {
            config,
            norm,
            rgb_views,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AugmentConfig {
        &self.config
    }

    /// The normalisation.
    pub fn normalization(&self) -> Normalization {
        self.norm
    }

    /// The unmixing tables of the configured views: `stains` for [`Views::Stains`], channel
    /// tables for the RGB views.
    pub fn view_unmixer<'a>(&'a self, stains: &'a Unmixer) -> &'a Unmixer {
        self.rgb_views.as_ref().unwrap_or(stains)
    }

    /// The pixels the maps are drawn from: `rgb` resized to the configured size, or `rgb`
    /// itself. [`train_into`](Self::train_into) and [`eval_into`](Self::eval_into) give the
    /// same maps from the result as from `rgb`, so it can be kept and reused across epochs.
    pub fn prepare(&self, rgb: RgbImage, scratch: &mut Scratch) -> RgbImage {
        if !matches!(self.config.resize, Some(s) if rgb.dimensions() != (s, s)) {
            return rgb;
        }
        let (_, w, h) = self.resized(&rgb, scratch);
        // `resized` leaves exactly w·h pixels; were it not so, `rgb` itself is still right,
        // only resized again on every use.
        RgbImage::from_raw(w, h, std::mem::take(&mut scratch.rgb)).unwrap_or(rgb)
    }

    /// The RGB pixels the maps come from: `rgb`, or its resized copy in `scratch`.
    fn resized<'a>(&self, rgb: &'a RgbImage, scratch: &'a mut Scratch) -> (&'a [u8], u32, u32) {
        let (w, h) = (rgb.width(), rgb.height());
        match self.config.resize {
            Some(s) if (w, h) != (s, s) => {
                scratch.rgb.resize(s as usize * s as usize * 3, 0);
                if let Err(e) = resize_bilinear(rgb, s, scratch) {
                    // Only a programming error gets here (the sizes are consistent); the slow
                    // resize gives the same geometry.
                    tracing::warn!("fast resize failed ({e}); using image::imageops::resize");
                    scratch.rgb =
                        image::imageops::resize(rgb, s, s, FilterType::Triangle).into_raw();
                }
                (&scratch.rgb, s, s)
            }
            _ => (rgb.as_raw(), w, h),
        }
    }

    /// One training sample: `h` and `e` receive `crop × crop` normalised values each.
    /// `stains` separates the sample (its group's matrix); the draws come from `key`.
    pub fn train_into(
        &self,
        rgb: &RgbImage,
        stains: &Unmixer,
        key: SampleKey,
        scratch: &mut Scratch,
        h: &mut [f32],
        e: &mut [f32],
    ) {
        let c = &self.config;
        let jitter = c
            .jitter
            .map(|s| JitterDraw::draw(s, &mut key.rng(Stream::Jitter)));
        let (src, w, hgt) = self.resized(rgb, scratch);
        let folded = jitter.map(|j| j.fold(src)).filter(|f| !f.is_identity());
        let view = self.view_unmixer(stains);
        let tables = match &folded {
            Some(f) => std::borrow::Cow::Owned(view.after(&f.post)),
            None => std::borrow::Cow::Borrowed(view),
        };
        for (k, (out, stream)) in [(h, Stream::First), (e, Stream::Second)]
            .into_iter()
            .enumerate()
        {
            let mut rng = key.rng(stream);
            let factor = c
                .channel_brightness
                .map_or(1.0, |s| rng.random_range((1.0 - s)..(1.0 + s)));
            let place = Placement::draw(w, hgt, c.rotate, c.center_crop, c.crop, c.flips, &mut rng);
            let target = Target {
                src,
                w,
                h: hgt,
                place: &place,
                factor,
            };
            match &folded {
                Some(f) => self.render(
                    k,
                    &target,
                    tables.table(k),
                    |r, g, b| f.before_post(r, g, b),
                    out,
                ),
                None => self.render(k, &target, tables.table(k), |r, g, b| [r, g, b], out),
            }
        }
    }

    /// One evaluation sample: no jitter, no rotation, a centre crop of `crop`, normalised.
    pub fn eval_into(
        &self,
        rgb: &RgbImage,
        stains: &Unmixer,
        scratch: &mut Scratch,
        h: &mut [f32],
        e: &mut [f32],
    ) {
        let (src, w, hgt) = self.resized(rgb, scratch);
        let view = self.view_unmixer(stains);
        let place = Placement::center(w, hgt, self.config.crop);
        let target = Target {
            src,
            w,
            h: hgt,
            place: &place,
            factor: 1.0,
        };
        self.render(0, &target, view.table(0), |r, g, b| [r, g, b], h);
        self.render(1, &target, view.table(1), |r, g, b| [r, g, b], e);
    }

    /// Channel `k` of the placed, separated, brightened, normalised output. Separation is
    /// pointwise, so it happens as each output pixel is read: only the pixels the output needs,
    /// and no intermediate map.
    #[inline]
    fn render(
        &self,
        k: usize,
        t: &Target<'_>,
        table: &[[f32; 256]; 3],
        jitter: impl Fn(u8, u8, u8) -> [u8; 3],
        out: &mut [f32],
    ) {
        let (mean, std) = (self.norm.mean[k], self.norm.std[k]);
        let inv = 1.0 / std;
        let fill = (0.0 - mean) * inv;
        let factor = t.factor;
        t.place.map(t.w, t.h, self.config.crop, |o, s| {
            out[o] = match s {
                None => fill,
                Some(s) => {
                    let p = &t.src[3 * s..3 * s + 3];
                    let [r, g, b] = jitter(p[0], p[1], p[2]).map(usize::from);
                    let v = unit(table[0][r] + table[1][g] + table[2][b]);
                    // v is in [0, 1] and the factor positive: only the top can clip.
                    ((v * factor).min(1.0) - mean) * inv
                }
            };
        });
    }
}

/// Bilinear (triangle-filter, antialiased when shrinking) resize of `rgb` to `s × s` into
/// `scratch.rgb`: SIMD convolution with integer weights, the same filter as PIL's `BILINEAR`.
fn resize_bilinear(
    rgb: &RgbImage,
    s: u32,
    scratch: &mut Scratch,
) -> std::result::Result<(), String> {
    use fast_image_resize::images::{Image, ImageRef};
    use fast_image_resize::{FilterType as F, PixelType, ResizeAlg, ResizeOptions};
    let src = ImageRef::new(rgb.width(), rgb.height(), rgb.as_raw(), PixelType::U8x3)
        .map_err(|e| e.to_string())?;
    let mut dst =
        Image::from_slice_u8(s, s, &mut scratch.rgb, PixelType::U8x3).map_err(|e| e.to_string())?;
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(F::Bilinear));
    scratch
        .resizer
        .resize(&src, &mut dst, &opts)
        .map_err(|e| e.to_string())
}

/// Where one channel's output comes from.
struct Target<'a> {
    src: &'a [u8],
    w: u32,
    h: u32,
    place: &'a Placement,
    factor: f32,
}
