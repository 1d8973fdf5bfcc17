//! Times each estimation pass and the separation on one image, single-threaded, and prints
//! the fastest of several runs of each (this VM's timings drift by a third between runs). A
//! profiling aid.
//!
//! `cargo run --release -p classm-stain --example pass_timing -- IMAGE [RUNS]`

use std::collections::BTreeMap;
use std::time::Instant;

use classm_stain::{EstimateOptions, Output, RgbView, Separator, SlideEstimator, Tile};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: pass_timing IMAGE [RUNS]")?;
    let runs: usize = args.next().map_or(Ok(7), |s| s.parse())?;
    let img = image::open(&path)?.to_rgb8();
    let view = RgbView::new(img.width() as usize, img.height() as usize, img.as_raw())?;
    let tile = Tile::new(view);
    let mut best: BTreeMap<String, f64> = BTreeMap::new();
    // Reused, so that the separation's time is not its first touch of fresh pages.
    let (mut h, mut e) = (vec![0f32; view.pixels()], vec![0f32; view.pixels()]);
    for _ in 0..runs {
        let mut est = SlideEstimator::new(EstimateOptions::default())?;
        while let Some(pass) = est.next_pass() {
            let t0 = Instant::now();
            let mut s = est.begin()?;
            s.add(&tile)?;
            let dt = t0.elapsed().as_secs_f64();
            let b = best.entry(format!("{pass:?}")).or_insert(f64::INFINITY);
            *b = b.min(dt);
            est.finish_pass(s)?;
        }
        // Separation into reused buffers, on one thread like the passes.
        let sep = Separator::new(&est.estimate()?)?;
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
        let t0 = Instant::now();
        one.install(|| sep.separate_into(view, Output::ModelInput, &mut h, &mut e))?;
        let dt = t0.elapsed().as_secs_f64();
        let b = best.entry("Separation".into()).or_insert(f64::INFINITY);
        *b = b.min(dt);
    }
    let mut line = String::new();
    for (pass, dt) in &best {
        line += &format!(
            "{pass} {:.1} ms ({:.2} ns/px)  ",
            dt * 1e3,
            dt * 1e9 / view.pixels() as f64
        );
    }
    println!("fastest of {runs}: {line}");
    Ok(())
}
