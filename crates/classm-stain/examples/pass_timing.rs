//! Times each estimation pass on one image, single-threaded (a profiling aid).
//!
//! `cargo run --release -p classm-stain --example pass_timing -- IMAGE`

use std::time::Instant;

use classm_stain::{EstimateOptions, RgbView, SlideEstimator, Tile};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: pass_timing IMAGE")?;
    let img = image::open(&path)?.to_rgb8();
    let view = RgbView::new(img.width() as usize, img.height() as usize, img.as_raw())?;
    let tile = Tile::new(view);
    for _ in 0..3 {
        let mut est = SlideEstimator::new(EstimateOptions::default())?;
        let mut line = String::new();
        while let Some(pass) = est.next_pass() {
            let t0 = Instant::now();
            let mut s = est.begin()?;
            s.add(&tile)?;
            let dt = t0.elapsed().as_secs_f64();
            line += &format!(
                "{pass:?} {:.1} ms ({:.2} ns/px)  ",
                dt * 1e3,
                dt * 1e9 / view.pixels() as f64
            );
            est.finish_pass(s)?;
        }
        println!("{line}");
    }
    Ok(())
}
