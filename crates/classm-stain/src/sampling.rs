//! Which pixels of a tile are looked at: deterministic sampling and artefact exclusion.

use serde::{Deserialize, Serialize};

use crate::error::{Result, StainError};
use crate::view::{MaskView, RgbView};

/// Deterministic pixel sampling for estimation. Positions are slide coordinates (tile origin +
/// pixel), so a tiling of an image samples exactly the pixels the whole image would.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Sampling {
    /// Every pixel.
    All,
    /// Every `step`-th row and column (CLASS-M slides: 10), starting at slide row and column 0.
    Grid {
        /// Distance between sampled rows and between sampled columns.
        step: u32,
    },
    /// Each pixel independently with probability `rate`, decided by a hash of
    /// (`seed`, x, y): reproducible, and independent of tiling and thread count.
    Random {
        /// Probability of keeping a pixel, in (0, 1].
        rate: f64,
        /// Seed of the hash.
        seed: u64,
    },
}

impl Sampling {
    pub(crate) fn validate(&self) -> Result<()> {
        match *self {
            Sampling::All => Ok(()),
            Sampling::Grid { step } if step >= 1 => Ok(()),
            Sampling::Grid { .. } => Err(StainError::config("grid sampling step must be ≥ 1")),
            Sampling::Random { rate, .. } if rate.is_finite() && rate > 0.0 && rate <= 1.0 => {
                Ok(())
            }
            Sampling::Random { rate, .. } => Err(StainError::config(format!(
                "random sampling rate {rate} must be in (0, 1]"
            ))),
        }
    }
}

/// Pixels that are never stain: excluded before the background rule, and counted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Artefacts {
    /// Exclude pixels whose every channel is at most this value (black pen, folds, dirt).
    /// Default 10.
    pub dark_max: Option<u8>,
    /// Exclude pixels with a channel at 0, whose OD is clipped by the offset rule. Default off.
    pub saturated: bool,
}

impl Default for Artefacts {
    fn default() -> Self {
        Artefacts {
            dark_max: Some(10),
            saturated: false,
        }
    }
}

impl Artefacts {
    /// No exclusion at all (the published implementations' behaviour).
    pub fn none() -> Self {
        Artefacts {
            dark_max: None,
            saturated: false,
        }
    }
}

/// One tile of a slide (or a whole image): pixels, an optional caller mask, and its position.
#[derive(Debug, Clone, Copy)]
pub struct Tile<'a> {
    /// The pixels.
    pub image: RgbView<'a>,
    /// Optional mask of the same size: zero excludes a pixel.
    pub mask: Option<MaskView<'a>>,
    /// Position of the tile's top-left pixel in the slide (x, y), used by sampling.
    pub origin: (u64, u64),
}

impl<'a> Tile<'a> {
    /// A tile at the slide origin with no mask.
    pub fn new(image: RgbView<'a>) -> Self {
        Tile {
            image,
            mask: None,
            origin: (0, 0),
        }
    }

    /// The same tile at another position.
    pub fn at(mut self, x: u64, y: u64) -> Self {
        self.origin = (x, y);
        self
    }

    /// The same tile with a caller mask (checked for size).
    pub fn with_mask(mut self, mask: MaskView<'a>) -> Result<Self> {
        if mask.width() != self.image.width() || mask.height() != self.image.height() {
            return Err(StainError::invalid(format!(
                "mask is {}x{}, image is {}x{}",
                mask.width(),
                mask.height(),
                self.image.width(),
                self.image.height()
            )));
        }
        self.mask = Some(mask);
        Ok(self)
    }

    /// Rows `y0..y1` as a tile with the right origin.
    pub(crate) fn rows(&self, y0: usize, y1: usize) -> Tile<'a> {
        Tile {
            image: self.image.rows(y0, y1),
            mask: self.mask.map(|m| m.rows(y0, y1)),
            origin: (self.origin.0, self.origin.1 + y0 as u64),
        }
    }

    /// Splits into bands of whole rows of about `target_pixels` pixels each (mask and origin
    /// follow), so that one large tile can be spread over threads. The split depends only on
    /// the tile's size, never on the thread count.
    pub fn bands(&self, target_pixels: usize) -> Vec<Tile<'a>> {
        let w = self.image.width().max(1);
        let h = self.image.height();
        let rows = (target_pixels / w).max(1);
        (0..h.div_ceil(rows))
            .map(|i| self.rows(i * rows, ((i + 1) * rows).min(h)))
            .collect()
    }
}

/// Pixel counts seen by one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Pixels of the tiles, sampled or not.
    pub pixels: u64,
    /// Pixels in the sample (before exclusion).
    pub sampled: u64,
    /// Excluded by the caller's mask.
    pub masked: u64,
    /// Excluded as near-black.
    pub dark: u64,
    /// Excluded as saturated.
    pub saturated: u64,
}

impl Seen {
    pub(crate) fn merge(&mut self, o: &Seen) {
        self.pixels += o.pixels;
        self.sampled += o.sampled;
        self.masked += o.masked;
        self.dark += o.dark;
        self.saturated += o.saturated;
    }

    /// Pixels excluded for any reason.
    pub fn excluded(&self) -> u64 {
        self.masked + self.dark + self.saturated
    }

    /// Pixels that reach the background rule.
    pub fn usable(&self) -> u64 {
        self.sampled - self.excluded()
    }
}

#[inline(always)]
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a pass does with one pixel. Implementations mark `pixel` `#[inline(always)]` so the
/// walk below compiles to one tight loop per pass.
pub(crate) trait Sink {
    fn pixel(&mut self, r: u8, g: u8, b: u8);

    /// Every pixel of `px` (RGB, at most [`CHUNK`] pixels) through the artefact rule (dark:
    /// brightest channel ≤ `dark`; saturated: a zero channel, when `sat`) and then `pixel`,
    /// returning the (dark, saturated) counts. A sink may override it with a loop over
    /// vectors of pixels; it runs compiled for the CPU's widest vectors ([`wide`]).
    #[inline(always)]
    fn chunk(&mut self, px: &[u8], dark: i16, sat: bool) -> (u64, u64)
    where
        Self: Sized,
    {
        one_by_one(self, px, dark, sat)
    }

    /// Called at least every [`CHUNK`] pixels handed to `pixel`, and at the end: the place
    /// for work that must not sit in the per-pixel loop (a call there would pin the sink's
    /// counters to memory).
    fn end_chunk(&mut self) {}
}

/// The artefact rule for one pixel, as (dark, saturated), never both: dark when its brightest
/// channel is at most `dark` (−1: never), else saturated when `sat` and a channel is 0.
#[inline(always)]
pub(crate) fn artefact(r: u8, g: u8, b: u8, dark: i16, sat: bool) -> (bool, bool) {
    // Short-circuit, not `&`: the one-pixel loops branch on the answer, and skipping the
    // minimum for most pixels kept them faster.
    if i16::from(r.max(g).max(b)) <= dark {
        (true, false)
    } else {
        (false, sat && r.min(g).min(b) == 0)
    }
}

/// [`Sink::chunk`]'s one-pixel loop: the artefact rule, then `sink.pixel`.
#[inline(always)]
pub(crate) fn one_by_one<S: Sink>(sink: &mut S, px: &[u8], dark: i16, sat: bool) -> (u64, u64) {
    let (mut n_dark, mut n_sat) = (0u64, 0u64);
    for p in px.chunks_exact(3) {
        let (r, g, b) = (p[0], p[1], p[2]);
        match artefact(r, g, b, dark, sat) {
            (true, _) => n_dark += 1,
            (_, true) => n_sat += 1,
            _ => sink.pixel(r, g, b),
        }
    }
    (n_dark, n_sat)
}

/// Runs `f` compiled for the widest vector extension of this CPU (AVX-512, AVX2, ...), chosen
/// at run time; the build itself targets baseline x86-64. `f` and what it calls must be
/// inlined into it (`#[inline(always)]`) to be compiled that way.
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    // Detected once: `Arch::new` tests a dozen CPU features.
    static ARCH: std::sync::LazyLock<pulp::Arch> = std::sync::LazyLock::new(pulp::Arch::new);
    ARCH.dispatch(f)
}

/// Pixels per band when a tile is split across threads (depends on the tile only, so the
/// split never depends on the thread count).
pub(crate) const BAND_PIXELS: usize = 1 << 18;

/// Most pixels `walk` hands to a sink between two `end_chunk` calls.
pub(crate) const CHUNK: usize = 4096;

/// Calls `sink.pixel(r, g, b)` for every sampled, non-excluded pixel of `tile`, counting into
/// `seen`, and hands the sink back. The common case (every pixel, no mask) is a tight loop of
/// its own. The sink travels by value into a function of its own so that its counters live in
/// registers rather than on the stack of a large caller.
#[inline(never)]
pub(crate) fn walk<S: Sink>(
    tile: &Tile<'_>,
    sampling: Sampling,
    art: Artefacts,
    seen: &mut Seen,
    mut sink: S,
) -> S {
    let img = tile.image;
    let w = img.width();
    seen.pixels += img.pixels() as u64;
    // A pixel is dark when its brightest channel is at most `dark` (-1: never).
    let dark = art.dark_max.map_or(-1i16, i16::from);
    let sat = art.saturated;
    if sampling == Sampling::All && tile.mask.is_none() {
        // The sink moves into the dispatched function and back, rather than being borrowed:
        // behind a reference its counters would be reloaded and stored around every
        // histogram update, which might alias them.
        let (sink, n_dark, n_sat) = wide(
            #[inline(always)]
            move || {
                let mut sink = sink;
                let (mut n_dark, mut n_sat) = (0u64, 0u64);
                for y in 0..img.height() {
                    for chunk in img.row(y).chunks(3 * CHUNK) {
                        let (d, s) = sink.chunk(chunk, dark, sat);
                        n_dark += d;
                        n_sat += s;
                        sink.end_chunk();
                    }
                }
                (sink, n_dark, n_sat)
            },
        );
        seen.sampled += img.pixels() as u64;
        seen.dark += n_dark;
        seen.saturated += n_sat;
        return sink;
    }
    let mut since = 0usize;
    let mut visit = |p: &[u8], m: u8, seen: &mut Seen| {
        seen.sampled += 1;
        if m == 0 {
            seen.masked += 1;
            return;
        }
        let (r, g, b) = (p[0], p[1], p[2]);
        match artefact(r, g, b, dark, sat) {
            (true, _) => seen.dark += 1,
            (_, true) => seen.saturated += 1,
            _ => {
                sink.pixel(r, g, b);
                since += 1;
                if since == CHUNK {
                    sink.end_chunk();
                    since = 0;
                }
            }
        }
    };
    for y in 0..img.height() {
        let gy = tile.origin.1 + y as u64;
        let row = img.row(y);
        let mrow = tile.mask.map(|m| m.row(y));
        match sampling {
            Sampling::All => match mrow {
                None => row.chunks_exact(3).for_each(|p| visit(p, 1, seen)),
                Some(m) => row
                    .chunks_exact(3)
                    .zip(m)
                    .for_each(|(p, &mv)| visit(p, mv, seen)),
            },
            Sampling::Grid { step } => {
                let step = u64::from(step);
                if gy % step != 0 {
                    continue;
                }
                let ox = tile.origin.0 % step;
                let mut x = ((step - ox) % step) as usize;
                while x < w {
                    visit(&row[3 * x..3 * x + 3], mrow.map_or(1, |m| m[x]), seen);
                    x += step as usize;
                }
            }
            Sampling::Random { rate, seed } => {
                // rate == 1 must keep everything: compare against a threshold that covers u64::MAX.
                let thr = if rate >= 1.0 {
                    u64::MAX
                } else {
                    (rate * u64::MAX as f64) as u64
                };
                let base = splitmix(seed ^ splitmix(gy));
                for x in 0..w {
                    let gx = tile.origin.0 + x as u64;
                    if splitmix(base ^ gx.wrapping_mul(0xD6E8_FEB8_6659_FD93)) <= thr {
                        visit(&row[3 * x..3 * x + 3], mrow.map_or(1, |m| m[x]), seen);
                    }
                }
            }
        }
    }
    sink.end_chunk();
    sink
}
