//! Estimates and separates one image file, printing the stain matrix and the time taken.
//!
//! `cargo run --release -p classm-stain --example separate_file -- IMAGE`

use std::time::Instant;

use classm_stain::{EstimateOptions, Output, RgbView, Sampling, estimate_and_separate_into};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: separate_file IMAGE")?;
    let img = image::open(&path)?.to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let view = RgbView::new(w, h, img.as_raw())?;
    let mut hmap = vec![0f32; w * h];
    let mut emap = vec![0f32; w * h];
    for (name, opts) in [
        ("all pixels", EstimateOptions::default()),
        (
            "grid:10",
            EstimateOptions::default().with_sampling(Sampling::Grid { step: 10 }),
        ),
    ] {
        for _ in 0..3 {
            let t0 = Instant::now();
            let est =
                estimate_and_separate_into(view, &opts, Output::ModelInput, &mut hmap, &mut emap)?;
            let dt = t0.elapsed().as_secs_f64();
            println!(
                "{path} [{name}]: H {:.4?} E {:.4?}; {:.1} ms, {:.0} MP/s ({} threads)",
                est.matrix.h,
                est.matrix.e,
                dt * 1e3,
                (w * h) as f64 / 1e6 / dt,
                rayon::current_num_threads()
            );
        }
    }
    Ok(())
}
