//! Property tests: no panic, no NaN, no mutation, no dependence on the thread count.

use classm_stain::{
    Artefacts, Convention, EstimateOptions, MaskView, Output, RgbView, Sampling, Separator,
    StainEstimate, estimate, estimate_masked,
};
use proptest::prelude::*;

fn pools() -> (rayon::ThreadPool, rayon::ThreadPool) {
    let p = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("pool")
    };
    (p(1), p(2))
}

fn finite(est: &StainEstimate) -> bool {
    let d = &est.diagnostics;
    est.matrix
        .h
        .iter()
        .chain(&est.matrix.e)
        .chain(&est.max_conc)
        .chain(&est.i0)
        .all(|v| v.is_finite())
        && d.eigenvalues.iter().all(|v| v.is_finite())
        && d.separation_deg.is_finite()
        && d.red_margin.is_finite()
        && d.ruifrok_margin.is_finite()
}

/// Arbitrary bytes of any size, including 0x0 and 1x1.
fn any_image() -> impl Strategy<Value = (usize, usize, Vec<u8>)> {
    (0usize..48, 0usize..48).prop_flat_map(|(w, h)| {
        proptest::collection::vec(any::<u8>(), w * h * 3).prop_map(move |d| (w, h, d))
    })
}

/// Beer–Lambert images of two random stains, so that the success paths are exercised too.
fn stained_image() -> impl Strategy<Value = (usize, usize, Vec<u8>)> {
    (
        8usize..64,
        8usize..64,
        [0.05f64..1.0, 0.05..1.0, 0.05..1.0],
        [0.05f64..1.0, 0.05..1.0, 0.05..1.0],
        any::<u64>(),
    )
        .prop_map(|(w, h, sh, se, seed)| {
            let mut s = seed | 1;
            let mut rnd = move || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64
            };
            let mut d = Vec::with_capacity(w * h * 3);
            for _ in 0..w * h {
                let (ch, ce) = (1.2 * rnd(), 1.0 * rnd());
                for c in 0..3 {
                    d.push((255.0 * 10f64.powf(-(ch * sh[c] + ce * se[c]))).round() as u8);
                }
            }
            (w, h, d)
        })
}

fn options() -> Vec<EstimateOptions> {
    vec![
        EstimateOptions::default().with_min_pixels(20),
        EstimateOptions::new(Convention::macenko2009()).with_min_pixels(20),
        EstimateOptions::new(Convention::classm().with_estimated_i0())
            .with_artefacts(Artefacts {
                dark_max: Some(30),
                saturated: true,
            })
            .with_sampling(Sampling::Random { rate: 0.5, seed: 3 })
            .with_min_pixels(10),
        EstimateOptions::default()
            .with_sampling(Sampling::Grid { step: 3 })
            .with_min_pixels(5),
    ]
}

fn check(w: usize, h: usize, data: &[u8]) -> Result<(), TestCaseError> {
    let copy = data.to_vec();
    let view = RgbView::new(w, h, data).expect("view");
    let (one, two) = pools();
    for o in options() {
        let a = one.install(|| estimate(view, &o));
        let b = two.install(|| estimate(view, &o));
        prop_assert_eq!(&a, &b, "1 vs 2 threads");
        if let Ok(est) = &a {
            prop_assert!(finite(est), "{:?}", est);
            let sep = Separator::new(est).expect("separator of an estimate");
            for out in [Output::Concentrations, Output::ModelInput] {
                let m1 = one.install(|| sep.separate(view, out)).expect("separate");
                let m2 = two.install(|| sep.separate(view, out)).expect("separate");
                prop_assert!(m1.h.iter().chain(&m1.e).all(|v| v.is_finite()));
                prop_assert_eq!(&m1, &m2);
                if out == Output::ModelInput {
                    prop_assert!(m1.h.iter().chain(&m1.e).all(|v| (0.0..=1.0).contains(v)));
                }
            }
        }
        // A mask that keeps every other pixel never panics either.
        let mask: Vec<u8> = (0..w * h).map(|i| (i % 2) as u8).collect();
        let r = estimate_masked(view, MaskView::new(w, h, &mask).expect("mask"), &o);
        if let Ok(est) = &r {
            prop_assert!(finite(est));
        }
    }
    prop_assert_eq!(data, &copy[..], "input mutated");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_or_nan((w, h, data) in any_image()) {
        check(w, h, &data)?;
    }

    #[test]
    fn stained_images_are_finite_and_thread_independent((w, h, data) in stained_image()) {
        check(w, h, &data)?;
    }

    #[test]
    fn wrong_buffer_lengths_are_errors(w in 0usize..20, h in 0usize..20, extra in 1usize..5) {
        let data = vec![128u8; w * h * 3 + extra];
        prop_assert!(RgbView::new(w, h, &data).is_err());
    }
}
