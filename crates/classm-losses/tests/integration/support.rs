//! Fixture loading, comparison, and the macro that runs a test on every built device.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

/// The golden tensors on `device`.
pub fn golden(device: &Device) -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/golden.safetensors"
    );
    candle_core::safetensors::load(path, device).expect("golden fixtures")
}

/// Asserts `max |a − b| ≤ tol · max(max |b|, 1e-6)`.
pub fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let a = a
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let b = b
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let scale = b.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        err <= tol * scale,
        "{what}: max error {err:e} > {tol:e} × {scale:e}"
    );
}

/// Runs `$body(&Device)` on the CPU and, in a `cuda` build, on GPU 0.
#[macro_export]
macro_rules! device_test {
    ($name:ident, $body:expr) => {
        #[test]
        fn $name() {
            let run: fn(&candle_core::Device) = $body;
            run(&candle_core::Device::Cpu);
            #[cfg(feature = "cuda")]
            run(&candle_core::Device::new_cuda(0).expect("CUDA device 0"));
        }
    };
}
