use candle_core::{Device, Tensor, Var};
use classm_losses::{
    AdamW, AdamWParams, MixUp, Optimizer, Reduction, RmsProp, RmsPropParams, linear_rampup,
    sharpen, triplet_roll,
};
use rand::SeedableRng;

#[test]
fn mixup_draws_are_seeded_and_lambda_is_the_larger_share() {
    let draw = |seed| MixUp::draw(0.75, 95, &mut rand_pcg::Pcg64Mcg::seed_from_u64(seed)).unwrap();
    assert_eq!(draw(3), draw(3));
    assert_ne!(draw(3), draw(4));
    for seed in 0..200 {
        let m = draw(seed);
        assert!((0.5..=1.0).contains(&m.lambda), "{}", m.lambda);
        let mut p = m.perm.clone();
        p.sort();
        assert_eq!(p, (0..95).collect::<Vec<u32>>());
    }
    assert!(MixUp::draw(0.0, 4, &mut rand_pcg::Pcg64Mcg::seed_from_u64(0)).is_err());
}

#[test]
fn ramp_up_and_bad_inputs() {
    assert_eq!(linear_rampup(0.0, 16.0), 0.0);
    assert_eq!(linear_rampup(8.0, 16.0), 0.5);
    assert_eq!(linear_rampup(40.0, 16.0), 1.0);
    assert_eq!(linear_rampup(3.0, 0.0), 1.0);
    let p = Tensor::new(&[[0.2f32, 0.8]], &Device::Cpu).unwrap();
    assert!(sharpen(&p, 0.0).is_err());
    let h = Tensor::zeros((1, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(
        triplet_roll(&h, &h, 1.0, Reduction::Sum).is_err(),
        "one sample has no negative"
    );
}

#[test]
fn optimisers_refuse_a_gradient_of_another_shape_and_leave_the_parameter_alone() {
    let w0 = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &Device::Cpu).unwrap();
    let g = Tensor::new(&[0.5f32, 0.5, 0.5], &Device::Cpu).unwrap();
    for kind in 0..2 {
        let w = Var::from_tensor(&w0).unwrap();
        let mut opt: Box<dyn Optimizer> = if kind == 0 {
            Box::new(RmsProp::new(vec![w.clone()], RmsPropParams::classm()).unwrap())
        } else {
            Box::new(AdamW::new(vec![w.clone()], AdamWParams::default()).unwrap())
        };
        assert!(opt.step_with(&[Some(g.clone())]).is_err());
        assert_eq!(w.to_vec1::<f32>().unwrap(), w0.to_vec1::<f32>().unwrap());
    }
}
