use classm_stain::{EstimateOptions, RgbView, estimate};
use std::time::Instant;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    let view = RgbView::new(img.width() as usize, img.height() as usize, img.as_raw()).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for _ in 0..5 {
        let t = Instant::now();
        let e = pool
            .install(|| estimate(view, &EstimateOptions::default()))
            .unwrap();
        println!("{:.1} ms {:?}", t.elapsed().as_secs_f64() * 1e3, e.max_conc);
    }
}
