//! Recovery of known stains from the synthetic Beer–Lambert images in
//! `../shared/reference/stain/synthetic`.

use classm_stain::{Convention, EstimateOptions, I0Source, Output, Separator, estimate};

use crate::support::{Img, angle_deg, read_json, read_npy_f32};

#[test]
fn synthetic_images_recover_the_true_stains() {
    let shared = crate::require_shared!();
    let dir = shared.join("reference/stain/synthetic");
    let truth = read_json(&dir.join("truth.json"));
    let v = |k: &str| -> [f64; 3] {
        let a = truth["stains"][k]
            .as_array()
            .or_else(|| truth[k].as_array())
            .unwrap_or_else(|| panic!("truth {k}: {truth}"));
        [0, 1, 2].map(|i| a[i].as_f64().expect("num"))
    };
    let (th, te) = (v("H"), v("E"));
    let (_, true_h) = read_npy_f32(&dir.join("true_H.npy"));
    let (_, true_e) = read_npy_f32(&dir.join("true_E.npy"));
    for name in ["synth_glass255", "synth_glass235", "synth_noise2"] {
        let img = Img::open(&dir.join(format!("{name}.png")));
        // Estimating I0 removes the bias a fixed 255 has on the 235-glass image.
        let opts = EstimateOptions::new(Convention::classm().with_estimated_i0());
        let est = estimate(img.view(), &opts).expect(name);
        assert_eq!(est.i0_source, I0Source::Estimated, "{name}");
        let (dh, de) = (angle_deg(est.matrix.h, th), angle_deg(est.matrix.e, te));
        assert!(dh <= 1.5 && de <= 1.5, "{name}: H {dh:.3}° E {de:.3}°");
        let maps = Separator::new(&est)
            .expect("sep")
            .separate(img.view(), Output::Concentrations)
            .expect("maps");
        for (stain, ours, truth) in [("H", &maps.h, &true_h), ("E", &maps.e, &true_e)] {
            // relative L2 over truth tissue (either stain present)
            let (mut num, mut den) = (0f64, 0f64);
            for i in 0..truth.len() {
                if true_h[i] > 0.0 || true_e[i] > 0.0 {
                    num += (ours[i] as f64 - truth[i] as f64).powi(2);
                    den += (truth[i] as f64).powi(2);
                }
            }
            let err = (num / den).sqrt();
            assert!(err <= 0.1, "{name} {stain}: relative L2 {err:.4}");
        }
        eprintln!("{name}: I0 {:?}, H {dh:.3}° E {de:.3}°", est.i0);
    }
}

#[test]
fn estimated_i0_finds_the_glass_and_zeroes_it() {
    let shared = crate::require_shared!();
    let dir = shared.join("reference/stain/synthetic");
    let img = Img::open(&dir.join("synth_glass235.png"));
    let est = estimate(
        img.view(),
        &EstimateOptions::new(Convention::classm().with_estimated_i0()),
    )
    .expect("est");
    assert_eq!(est.i0, [235.0; 3]);
    // With the fixed I0 = 255 the glass gets false hematoxylin; with the estimate it does not.
    let fixed = estimate(img.view(), &EstimateOptions::default()).expect("fixed");
    let at = img
        .data
        .chunks_exact(3)
        .position(|p| p == [235, 235, 235])
        .expect("a glass pixel");
    let probe = classm_stain::RgbView::new(1, 1, &img.data[3 * at..3 * at + 3]).expect("px");
    let c_est = Separator::new(&est)
        .expect("s")
        .separate(probe, Output::Concentrations)
        .expect("m");
    let c_fix = Separator::new(&fixed)
        .expect("s")
        .separate(probe, Output::Concentrations)
        .expect("m");
    assert!(c_est.h[0].abs() < 1e-6, "{}", c_est.h[0]);
    assert!(c_fix.h[0] > 0.02, "{}", c_fix.h[0]);
}
