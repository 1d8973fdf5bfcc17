//! Estimates and separates one image file, printing the stain matrix and the time taken.
//!
//! `cargo run --release -p classm-stain --example separate_file -- IMAGE`

use std::time::Instant;

use classm_stain::{EstimateOptions, Output, RgbView, Separator, estimate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: separate_file IMAGE")?;
    let img = image::open(&path)?.to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let view = RgbView::new(w, h, img.as_raw())?;
    let mut hmap = vec![0f32; w * h];
    let mut emap = vec![0f32; w * h];
    for _ in 0..3 {
        let t0 = Instant::now();
        let est = estimate(view, &EstimateOptions::default())?;
        let t1 = Instant::now();
        Separator::new(&est)?.separate_into(view, Output::ModelInput, &mut hmap, &mut emap)?;
        let t2 = Instant::now();
        let mp = (w * h) as f64 / 1e6;
        println!(
            "{path}: H {:?} E {:?}; estimate {:.1} ms, separate {:.1} ms, {:.0} MP/s end to end",
            est.matrix.h,
            est.matrix.e,
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            mp / (t2 - t0).as_secs_f64()
        );
    }
    Ok(())
}
