//! Seeded randomness: every draw comes from a generator derived from the run's seed and the
//! draw's coordinates, so results do not depend on thread count or on the order of work.

use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;

/// The generator used everywhere in classm-data.
pub type Rng = Pcg64Mcg;

/// What a generator is for. Jitter, H and E draw from separate streams, so switching the
/// jitter off leaves the H and E draws unchanged (within a stream, switching a step off shifts
/// the draws after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// RGB colour jitter.
    Jitter = 1,
    /// Augmentation of the first channel (H).
    First = 2,
    /// Augmentation of the second channel (E).
    Second = 3,
    /// Sampler permutations.
    Sampler = 4,
    /// Split assignment.
    Split = 5,
}

/// SplitMix64's finaliser: a bijective mix, so distinct inputs give distinct outputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A generator for the draw at `coords` (for example epoch, sample index, view) of `stream`.
pub fn derive(seed: u64, stream: Stream, coords: &[u64]) -> Rng {
    let mut h = mix(seed ^ 0x636c_6173_736d_2d64);
    h = mix(h ^ stream as u64);
    for &c in coords {
        h = mix(h.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ c);
    }
    let lo = mix(h ^ 0x5851_f42d_4c95_7f2d);
    Rng::seed_from_u64(h ^ lo.rotate_left(17))
}

/// Where one sample's random draws come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// The run's seed.
    pub seed: u64,
    /// Epoch (or pass) number.
    pub epoch: u64,
    /// Position of the draw within the epoch (not the sample's dataset index, so that a
    /// sample drawn twice gets two augmentations).
    pub draw: u64,
    /// View number, for several augmented views of one sample.
    pub view: u64,
}

impl SampleKey {
    /// The generator of `stream` for this sample.
    pub fn rng(&self, stream: Stream) -> Rng {
        derive(self.seed, stream, &[self.epoch, self.draw, self.view])
    }
}

/// Fisher–Yates permutation of `0..n` from `rng`.
pub fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    use rand::Rng as _;
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        p.swap(i, j);
    }
    p
}
