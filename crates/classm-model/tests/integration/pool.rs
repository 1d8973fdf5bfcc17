use candle_core::{Device, Tensor, Var};
use classm_model::{Kernels, max_pool_3x3_s2};

#[test]
fn both_pools_equal_the_builtin_forward_and_have_a_backward() {
    for k in [Kernels::Auto, Kernels::Candle] {
        pool_equals_the_builtin_forward_and_has_a_backward(k);
    }
}

fn pool_equals_the_builtin_forward_and_has_a_backward(k: Kernels) {
    let dev = Device::Cpu;
    for (h, w) in [(8usize, 8usize), (9, 7), (33, 16), (2, 3), (1, 1)] {
        let x = Tensor::randn(0f32, 1f32, (2, 3, h, w), &dev).unwrap();
        let ours = max_pool_3x3_s2(&x, k).unwrap();
        // The builtin forward with −∞ padding: pad by hand and pool 3×3 at stride 2.
        let padded = x
            .pad_with_zeros(2, 1, 1)
            .unwrap()
            .pad_with_zeros(3, 1, 1)
            .unwrap();
        let mask = Tensor::ones((2, 3, h, w), candle_core::DType::F32, &dev)
            .unwrap()
            .pad_with_zeros(2, 1, 1)
            .unwrap()
            .pad_with_zeros(3, 1, 1)
            .unwrap();
        let neg = ((mask.ones_like().unwrap() - &mask).unwrap() * -1e9).unwrap();
        let want = (padded + neg)
            .unwrap()
            .max_pool2d_with_stride(3, 2)
            .unwrap();
        assert_eq!(ours.dims(), want.dims(), "{h}x{w}");
        let diff = (ours - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0, "{k:?} {h}x{w}");
    }
    let x = Var::from_tensor(
        &Tensor::arange(0f32, 16f32, &dev)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap(),
    )
    .unwrap();
    let y = max_pool_3x3_s2(x.as_tensor(), k).unwrap();
    assert_eq!(
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![5.0, 7.0, 13.0, 15.0]
    );
    let g = y.sum_all().unwrap().backward().unwrap();
    let gx = g
        .get(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut want = vec![0f32; 16];
    for i in [5, 7, 13, 15] {
        want[i] = 1.0;
    }
    assert_eq!(gx, want, "{k:?}: each maximum gets its window's gradient");
}
