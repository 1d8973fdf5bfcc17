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
use crate::unmix::Unmixer;
pub use geometry::{Placement, center_offset};
pub use jitter::{JitterDraw, JitterOp};

/// What the two input channels of the model are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Views {
    /// Hematoxylin and eosin from stain separation (CLASS-M).
    #[default]
    Stains,
    /// Red and green channels, `v / 255` (the paper's RGB-view comparison).
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
}

/// The configured pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    config: AugmentConfig,
    norm: Normalization,
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
        Ok(Pipeline { config, norm })
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
    pub fn view_unmixer<'a>(&self, stains: &'a Unmixer) -> std::borrow::Cow<'a, Unmixer> {
        match self.config.views {
            Views::Stains => std::borrow::Cow::Borrowed(stains),
            Views::RedGreen => std::borrow::Cow::Owned(Unmixer::channels(0, 1)),
            Views::RedBlue => std::borrow::Cow::Owned(Unmixer::channels(0, 2)),
        }
    }

    /// The RGB pixels the maps are read from: resized and jittered where configured.
    fn prepare<'a>(
        &self,
        rgb: &'a RgbImage,
        scratch: &'a mut Scratch,
        jitter: Option<JitterDraw>,
    ) -> (&'a [u8], u32, u32) {
        let (w, h) = (rgb.width(), rgb.height());
        match self.config.resize {
            Some(s) if (w, h) != (s, s) => {
                let resized = image::imageops::resize(rgb, s, s, FilterType::Triangle);
                scratch.rgb = resized.into_raw();
                if let Some(j) = jitter {
                    j.apply(&mut scratch.rgb);
                }
                (&scratch.rgb, s, s)
            }
            _ => match jitter {
                Some(j) => {
                    scratch.rgb.clear();
                    scratch.rgb.extend_from_slice(rgb.as_raw());
                    j.apply(&mut scratch.rgb);
                    (&scratch.rgb, w, h)
                }
                None => (rgb.as_raw(), w, h),
            },
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
        let unmixer = self.view_unmixer(stains);
        let (src, w, hgt) = self.prepare(rgb, scratch, jitter);
        for (k, (out, stream)) in [(h, Stream::First), (e, Stream::Second)]
            .into_iter()
            .enumerate()
        {
            let mut rng = key.rng(stream);
            let factor = c
                .channel_brightness
                .map_or(1.0, |s| rng.random_range((1.0 - s)..(1.0 + s)));
            let place = Placement::draw(w, hgt, c.rotate, c.center_crop, c.crop, c.flips, &mut rng);
            self.render(&unmixer, k, src, w, hgt, &place, factor, out);
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
        let unmixer = self.view_unmixer(stains);
        let (src, w, hgt) = self.prepare(rgb, scratch, None);
        let place = Placement::center(w, hgt, self.config.crop);
        for (k, out) in [h, e].into_iter().enumerate() {
            self.render(&unmixer, k, src, w, hgt, &place, 1.0, out);
        }
    }

    /// Channel `k` of the placed, brightened, normalised output. Separation is pointwise, so
    /// it happens at lookup time, only for the pixels the output needs.
    #[allow(clippy::too_many_arguments)]
    fn render(
        &self,
        unmixer: &Unmixer,
        k: usize,
        src: &[u8],
        w: u32,
        h: u32,
        place: &Placement,
        factor: f32,
        out: &mut [f32],
    ) {
        let (mean, std) = (self.norm.mean[k], self.norm.std[k]);
        let inv = 1.0 / std;
        let fill = (0.0 - mean) * inv;
        let t = unmixer.table(k);
        place.map(w, h, self.config.crop, |o, s| {
            out[o] = match s {
                None => fill,
                Some(s) => {
                    let p = &src[3 * s..3 * s + 3];
                    let v = (t[0][p[0] as usize] + t[1][p[1] as usize] + t[2][p[2] as usize])
                        .clamp(0.0, 1.0);
                    ((v * factor).clamp(0.0, 1.0) - mean) * inv
                }
            };
        });
    }
}
