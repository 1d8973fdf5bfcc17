//! Separation outputs and normalisation.

use classm_stain::{
    Convention, ErrorKind, EstimateOptions, NormalizationTarget, Normalizer, Output, RgbView,
    Separator, Stain, StainEstimate, StainMatrix, estimate,
};

use crate::support::{Img, fixtures};

fn fixture() -> (Img, StainEstimate) {
    let img = Img::open(&fixtures().join("stain/torchstain__source.png"));
    let est = estimate(img.view(), &EstimateOptions::default()).expect("fixture estimate");
    (img, est)
}

#[test]
fn model_input_is_clipped_concentration_over_twice_the_maximum() {
    let (img, est) = fixture();
    let sep = Separator::new(&est).expect("sep");
    let c = sep.separate(img.view(), Output::Concentrations).expect("c");
    let m = sep.separate(img.view(), Output::ModelInput).expect("m");
    for i in 0..c.h.len() {
        for (s, (cv, mv)) in [(c.h[i], m.h[i]), (c.e[i], m.e[i])].into_iter().enumerate() {
            let want = (cv as f64 / (2.0 * est.max_conc[s])).clamp(0.0, 1.0);
            assert!(
                (mv as f64 - want).abs() < 1e-5,
                "pixel {i} stain {s}: {mv} vs {want}"
            );
        }
    }
    // CLASS-M's maximum: the 99th percentile of the values ≥ 0.15.
    let mut hs: Vec<f32> = c.h.iter().copied().filter(|&v| v >= 0.15).collect();
    hs.sort_by(f32::total_cmp);
    let h = (hs.len() - 1) as f64 * 0.99;
    let k = h.floor() as usize;
    let p99 = hs[k] as f64 + (h - k as f64) * (hs[k + 1] as f64 - hs[k] as f64);
    assert!(
        (est.max_conc[0] - p99).abs() < 1e-3 * p99,
        "{} vs {p99}",
        est.max_conc[0]
    );
}

#[test]
fn concentrations_reconstruct_the_optical_density() {
    let (img, est) = fixture();
    let c = Separator::new(&est)
        .expect("sep")
        .separate(img.view(), Output::Concentrations)
        .expect("c");
    let pinv = est.matrix.pseudo_inverse();
    for (i, p) in img.data.chunks_exact(3).enumerate().step_by(997) {
        let od = [0, 1, 2].map(|k| (255.0 / f64::from(p[k]).max(1.0)).log10());
        let want_h: f64 = (0..3).map(|k| pinv[0][k] * od[k]).sum();
        let want_e: f64 = (0..3).map(|k| pinv[1][k] * od[k]).sum();
        assert!((c.h[i] as f64 - want_h).abs() < 1e-5);
        assert!((c.e[i] as f64 - want_e).abs() < 1e-5);
    }
}

#[test]
fn renderings_are_white_on_glass_and_darker_where_stained() {
    let (img, est) = fixture();
    let sep = Separator::new(&est).expect("sep");
    let white = [255u8; 12];
    let w = RgbView::new(2, 2, &white).expect("w");
    assert_eq!(sep.render(w, Stain::H).expect("r"), vec![255; 12]);
    let h = sep.render(img.view(), Stain::H).expect("h");
    let e = sep.render(img.view(), Stain::E).expect("e");
    assert_eq!(h.len(), img.data.len());
    let mean = |v: &[u8]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    assert!(mean(&h) < 250.0 && mean(&e) < 250.0);
    // Hematoxylin renders blue-purple: red darkest relative to the stain vector's red share.
    let reds: f64 = h.chunks_exact(3).map(|p| p[0] as f64).sum();
    let blues: f64 = h.chunks_exact(3).map(|p| p[2] as f64).sum();
    assert!(reds < blues, "H rendering should absorb red more than blue");
    assert_eq!(
        sep.render_into(img.view(), Stain::H, &mut [0u8; 5])
            .unwrap_err()
            .kind(),
        ErrorKind::OutputSize
    );
}

#[test]
fn normalising_to_its_own_target_is_nearly_the_identity() {
    let (img, est) = fixture();
    let target = NormalizationTarget::from_estimate(&est);
    let back = NormalizationTarget::from_json(&target.to_json()).expect("round trip");
    assert_eq!(back, target);
    let out = Normalizer::new(&est, &back)
        .expect("normaliser")
        .normalize(img.view())
        .expect("n");
    // Exactly the projection onto the stain plane, computed directly in f64 ...
    let (m, pinv) = (est.matrix, est.matrix.pseudo_inverse());
    for (p, o) in img.data.chunks_exact(3).zip(out.chunks_exact(3)) {
        let od = [0, 1, 2].map(|k| (255.0 / f64::from(p[k]).max(1.0)).log10());
        let c = [0, 1].map(|s| (0..3).map(|k| pinv[s][k] * od[k]).sum::<f64>());
        for ch in 0..3 {
            let want = (255.0 * 10f64.powf(-(m.h[ch] * c[0] + m.e[ch] * c[1])))
                .round()
                .clamp(0.0, 255.0);
            assert!(
                (o[ch] as f64 - want).abs() <= 1.0,
                "{p:?} -> {o:?}, want {want} in channel {ch}"
            );
        }
    }
    // ... which moves pixels only by the small OD orthogonal to the plane.
    let mean_abs: f64 = out
        .iter()
        .zip(&img.data)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / out.len() as f64;
    assert!(mean_abs < 6.0, "mean |Δ| = {mean_abs}");
}

#[test]
fn normalising_to_another_target_moves_the_colours_towards_it() {
    let (img, est) = fixture();
    // A target with Ruifrok vectors and stronger hematoxylin.
    let mut target = NormalizationTarget::from_estimate(&est);
    target.matrix = StainMatrix::ruifrok();
    target.max_conc = [est.max_conc[0] * 1.5, est.max_conc[1]];
    let out = Normalizer::new(&est, &target)
        .expect("n")
        .normalize(img.view())
        .expect("out");
    let tgt_est = estimate(
        RgbView::new(img.width, img.height, &out).expect("v"),
        &EstimateOptions::default(),
    )
    .expect("re-estimate");
    let ang = crate::support::angle_deg(tgt_est.matrix.h, StainMatrix::ruifrok().h);
    assert!(
        ang < 3.0,
        "normalised image's H is {ang}° from the target's"
    );
}

#[test]
fn conventions_must_match_and_targets_are_validated() {
    let (_, est) = fixture();
    let mut target = NormalizationTarget::from_estimate(&est);
    target.convention = Convention::macenko2009();
    assert_eq!(
        Normalizer::new(&est, &target).unwrap_err().kind(),
        ErrorKind::ConventionMismatch
    );
    let bad = NormalizationTarget::from_estimate(&est)
        .to_json()
        .replace("classm-stain-target/1", "other/9");
    assert_eq!(
        NormalizationTarget::from_json(&bad).unwrap_err().kind(),
        ErrorKind::Parse
    );
    assert_eq!(
        NormalizationTarget::from_json("{").unwrap_err().kind(),
        ErrorKind::Parse
    );
    let json = est.to_json();
    assert_eq!(
        StainEstimate::from_json(&json).expect("estimate round trip"),
        est
    );
}

#[test]
fn fallback_estimates_are_explicit() {
    let fb = StainEstimate::fallback(
        StainMatrix::ruifrok(),
        [1.0, 1.0],
        Convention::classm(),
        [255.0; 3],
        "empty tissue",
    );
    assert_eq!(fb.fallback.as_deref(), Some("empty tissue"));
    assert!(fb.to_json().contains("\"fallback\": \"empty tissue\""));
    let white = [255u8; 3 * 16];
    let m = Separator::new(&fb)
        .expect("sep")
        .separate(RgbView::new(4, 4, &white).expect("v"), Output::ModelInput)
        .expect("m");
    assert!(m.h.iter().all(|&v| v == 0.0));
}

#[test]
fn fused_estimate_and_separate_equals_the_two_steps() {
    let (img, _) = fixture();
    for opts in [
        EstimateOptions::default(),
        EstimateOptions::new(Convention::macenko2009()),
        EstimateOptions::default().with_sampling(classm_stain::Sampling::Grid { step: 3 }),
    ] {
        for out in [Output::Concentrations, Output::ModelInput] {
            let (est, maps) =
                classm_stain::estimate_and_separate(img.view(), &opts, out).expect("fused");
            let two = estimate(img.view(), &opts).expect("estimate");
            assert_eq!(est, two);
            let sep = Separator::new(&two)
                .expect("sep")
                .separate(img.view(), out)
                .expect("maps");
            for (a, b) in maps.h.iter().chain(&maps.e).zip(sep.h.iter().chain(&sep.e)) {
                assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
            }
        }
    }
}

#[test]
fn an_estimate_from_a_target_separates_like_the_estimate_it_came_from() {
    let (img, est) = fixture();
    let from = StainEstimate::from_target(&NormalizationTarget::from_estimate(&est));
    assert!(from.fallback.is_none());
    assert_eq!(
        (from.matrix, from.max_conc, from.i0),
        (est.matrix, est.max_conc, est.i0)
    );
    let a = Separator::new(&from)
        .expect("s")
        .separate(img.view(), Output::ModelInput)
        .expect("a");
    let b = Separator::new(&est)
        .expect("s")
        .separate(img.view(), Output::ModelInput)
        .expect("b");
    assert_eq!(a, b);
}
