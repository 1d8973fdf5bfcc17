//! Times the dual network's eval forward and train-mode forward + backward on random input,
//! for profiling (`perf record`); `cargo xtask bench model` is the benchmark against PyTorch.
//!
//! `cargo run --release -p classm-model --example step -- [size] [width] [batch] [reps]`
//! (with `CANDLE_BARRIER_POOL_SPIN_LIMIT=1` and `CANDLE_NUM_THREADS` = `RAYON_NUM_THREADS`, as
//! the benchmark sets them). `CLASSM_DEVICE=cuda` runs it on GPU 0 (built with `--features
//! cuda`): the paper's step is `-- 256 64 95 20` there.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use classm_model::{ClassmConfig, ClassmNet, ResNetConfig};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // As a training binary: before the pool's threads start.
    classm_model::keep_freed_memory();
    // Inside the rayon pool, as a training loop runs (RAYON_NUM_THREADS sets its size).
    rayon::ThreadPoolBuilder::new().build()?.install(run)
}

fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let arg = |i: usize, d: usize| -> usize {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (size, width, batch, reps) = (arg(1, 64), arg(2, 64), arg(3, 16), arg(4, 5));
    let dev = match std::env::var("CLASSM_DEVICE").as_deref() {
        Ok("cuda") => Device::new_cuda(0)?,
        Ok("cpu") | Err(_) => Device::Cpu,
        Ok(other) => return Err(format!("CLASSM_DEVICE={other}: expected cpu or cuda").into()),
    };
    let map = VarMap::new();
    let cfg = ClassmConfig {
        encoder: ResNetConfig {
            depth: 18,
            width,
            in_channels: 1,
        },
        classes: 3,
    };
    let net = ClassmNet::new(cfg, VarBuilder::from_varmap(&map, DType::F32, &dev))?;
    classm_model::init_seeded(&map, 0)?;
    let xh = Tensor::rand(0f32, 1f32, (batch, 1, size, size), &dev)?;
    let xe = Tensor::rand(0f32, 1f32, (batch, 1, size, size), &dev)?;
    let (mut best_fwd, mut best_step) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..reps {
        let t = Instant::now();
        let out = net.forward_t(&xh, &xe, false)?;
        out.logits.sum_all()?.to_scalar::<f32>()?;
        let fwd = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let pass = net.forward_train(&xh, &xe)?;
        let out = &pass.out;
        let loss = (out.logits.sum_all()? + (out.z_h.sqr()?.sum_all()? + out.z_e.sum_all()?)?)?;
        let grads = pass.backward(&loss)?;
        // A GPU runs the kernels asynchronously: the time is theirs only once they are done.
        dev.synchronize()?;
        std::hint::black_box(grads);
        let step = t.elapsed().as_secs_f64();
        best_fwd = best_fwd.min(fwd);
        best_step = best_step.min(step);
    }
    println!(
        "{dev:?}, {size} px, width {width}, batch {batch}, best of {reps}: forward {:.1} img/s, train fwd+bwd {:.2} img/s",
        batch as f64 / best_fwd,
        batch as f64 / best_step
    );
    Ok(())
}
