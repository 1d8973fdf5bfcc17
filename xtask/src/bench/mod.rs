//! Benchmarks: `cargo xtask bench stain` and `bench data`.
//!
//! Every configuration runs in a fresh child process so that its peak memory (`VmHWM`) is its
//! own; the parent collects the JSON each child prints and writes the report.

pub mod cpu;
pub mod data;
pub mod input;
pub mod machine;
pub mod mem;
pub mod model;
pub mod python;
pub mod report;
pub mod stain;

/// Logical CPUs available to this process.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Median of a non-empty sample (mean of the two middle values for an even count).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_odd_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
