//! Runs the training pipeline over a dataset (on one thread unless told otherwise) and prints
//! patches/s: a target for profilers (`perf record`, `valgrind --tool=callgrind`).
//!
//!     cargo run --release -p classm-data --example pipeline -- [MANIFEST|DIR] [PATCHES] [SIZE] [THREADS]

use std::sync::Arc;
use std::time::Instant;

use classm_data::{
    AugmentConfig, Dataset, Mode, Normalization, Pipeline, Request, Source, SourceOptions,
    StainLookup, Unmixer,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().cloned().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/ebhi-mini/MANIFEST.tsv"
        )
        .into()
    });
    let patches: usize = args.get(1).map_or(Ok(64), |s| s.parse())?;
    let size: u32 = args.get(2).map_or(Ok(224), |s| s.parse())?;
    let dataset = Dataset::open(path.as_ref(), &SourceOptions::default())?;
    let n = dataset.samples.len();
    let config = AugmentConfig::scaled(size, size != 224);
    let pipeline = Pipeline::new(config, Normalization::paper())?;
    let source = Source::new(
        Arc::new(dataset),
        Arc::new(StainLookup::Fixed(Unmixer::paper_fixed())),
        Arc::new(pipeline),
        0,
    )?;
    let threads: usize = args.get(3).map_or(Ok(1), |s| s.parse())?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let t = Instant::now();
    let mut done = 0;
    while done < patches {
        let indices: Vec<usize> = (done..(done + 32).min(patches)).map(|i| i % n).collect();
        let req = Request {
            first_draw: done as u64,
            indices,
            mode: Mode::Train,
            views: 1,
            epoch: 0,
        };
        let batch = pool.install(|| source.load(&req))?;
        done += batch.indices.len();
        source.recycle(batch);
    }
    println!(
        "{done} patches in {:.3} s: {:.0} patches/s",
        t.elapsed().as_secs_f64(),
        done as f64 / t.elapsed().as_secs_f64()
    );
    Ok(())
}
