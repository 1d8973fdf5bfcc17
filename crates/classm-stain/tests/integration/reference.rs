//! Correctness against the Python reference implementations in `../shared/reference/stain`
//! (skipped with a message when `../shared` is absent) and against the copy of one tile and its
//! reference in `fixtures/stain` (always runs).

use std::path::Path;

use classm_stain::{
    Artefacts, Convention, EstimateOptions, MaxConcPixels, OrderPolicy, Output, Separator,
    StainEstimate, Warning, estimate,
};

use crate::support::{Img, angle_deg, read_json, read_npy_f32, ref_matrix, rel_l2};

/// The references use no artefact exclusion, so neither do these comparisons.
fn classm_opts() -> EstimateOptions {
    EstimateOptions::new(Convention::classm()).with_artefacts(Artefacts::none())
}

fn macenko_opts() -> EstimateOptions {
    let mut o = EstimateOptions::new(Convention::macenko2009()).with_artefacts(Artefacts::none());
    // torchstain always answers; where its order is doubtful we flag, and check the flag below.
    o.on_ambiguous_order = OrderPolicy::Flag;
    o
}

fn worst(est: &StainEstimate, j: &serde_json::Value, name: &str) -> (f64, f64) {
    let r = ref_matrix(j, name).expect("reference result");
    (angle_deg(est.matrix.h, r.h), angle_deg(est.matrix.e, r.e))
}

fn tiles(shared: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(shared.join("data/stain/tiles"))
        .expect("tiles dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 20,
        "expected the 23 real tiles, found {}",
        v.len()
    );
    v
}

#[test]
fn classm_convention_matches_classm_style_on_every_real_tile() {
    let shared = crate::require_shared!();
    let mut max = 0f64;
    for p in tiles(&shared) {
        let stem = p.file_stem().and_then(|s| s.to_str()).expect("stem");
        let j = read_json(&shared.join(format!("reference/stain/tiles/{stem}.json")));
        let est = estimate(Img::open(&p).view(), &classm_opts()).expect(stem);
        let (dh, de) = worst(&est, &j, "classm_style");
        assert!(
            dh <= 0.5 && de <= 0.5,
            "{stem}: H {dh:.4}° E {de:.4}° from classm_style"
        );
        max = max.max(dh).max(de);
        // Same pixel counts as the reference's own rule.
        let kept = j["implementations"]["classm_style"]["kept_pixels"]
            .as_u64()
            .expect("kept");
        let diff = (est.diagnostics.kept_pixels as i64 - kept as i64).abs();
        assert!(
            diff as f64 <= 1e-3 * kept as f64 + 2.0,
            "{stem}: kept {} vs {kept}",
            est.diagnostics.kept_pixels
        );
    }
    eprintln!("classm vs classm_style: worst {max:.4}°");
}

#[test]
fn macenko2009_matches_torchstain_numpy_on_every_real_tile() {
    let shared = crate::require_shared!();
    let mut max = 0f64;
    for p in tiles(&shared) {
        let stem = p.file_stem().and_then(|s| s.to_str()).expect("stem");
        let j = read_json(&shared.join(format!("reference/stain/tiles/{stem}.json")));
        let est = estimate(Img::open(&p).view(), &macenko_opts()).expect(stem);
        let (dh, de) = worst(&est, &j, "torchstain_numpy");
        assert!(
            dh <= 0.5 && de <= 0.5,
            "{stem}: H {dh:.4}° E {de:.4}° from torchstain_numpy"
        );
        max = max.max(dh).max(de);
        let kept = j["implementations"]["torchstain_numpy"]["kept_pixels"]
            .as_u64()
            .expect("kept");
        assert_eq!(
            est.diagnostics.kept_pixels, kept,
            "{stem}: all-channel rule pixel count"
        );
        for w in &est.diagnostics.warnings {
            if let Warning::AmbiguousOrder { ruifrok_margin, .. } = w {
                // Flagged only where the Ruifrok cross-check really disagrees.
                assert!(
                    *ruifrok_margin <= 0.0 || est.diagnostics.red_margin < 0.01,
                    "{stem}"
                );
            }
        }
    }
    eprintln!("macenko2009 vs torchstain_numpy: worst {max:.4}°");
}

#[test]
fn default_options_stay_close_to_the_references_on_real_tiles() {
    // Default options also exclude near-black pixels; on these tiles that changes at most the
    // one with a black scanner border, and only slightly.
    let shared = crate::require_shared!();
    for p in tiles(&shared) {
        let stem = p.file_stem().and_then(|s| s.to_str()).expect("stem");
        let j = read_json(&shared.join(format!("reference/stain/tiles/{stem}.json")));
        let est = estimate(Img::open(&p).view(), &EstimateOptions::default()).expect(stem);
        let (dh, de) = worst(&est, &j, "classm_style");
        assert!(dh <= 1.0 && de <= 1.0, "{stem}: H {dh:.3}° E {de:.3}°");
        assert!(
            est.diagnostics.warnings.is_empty(),
            "{stem}: {:?}",
            est.diagnostics.warnings
        );
    }
}

#[test]
fn large_image_matches_the_references() {
    let shared = crate::require_shared!();
    let img = Img::open(&shared.join("data/stain/large/openslide__CMU-1-Small-Region.png"));
    let j = read_json(&shared.join("reference/stain/large/openslide__CMU-1-Small-Region.json"));
    let (dh, de) = worst(
        &estimate(img.view(), &classm_opts()).expect("classm"),
        &j,
        "classm_style",
    );
    assert!(dh <= 0.5 && de <= 0.5, "classm: {dh} {de}");
    let (dh, de) = worst(
        &estimate(img.view(), &macenko_opts()).expect("mac"),
        &j,
        "torchstain_numpy",
    );
    assert!(dh <= 0.5 && de <= 0.5, "macenko2009: {dh} {de}");
}

/// Checks the per-pixel maps of one tile against the reference `.npy` files.
fn check_maps(png: &Path, json: &Path, dir: &Path) {
    let img = Img::open(png);
    let j = read_json(json);
    let stem = png.file_stem().and_then(|s| s.to_str()).expect("stem");
    for (name, opts, to_log10) in [
        ("classm_style", classm_opts(), 1.0f32),
        (
            "torchstain_numpy",
            macenko_opts(),
            std::f32::consts::LOG10_E,
        ),
    ] {
        let hf = dir.join(format!("{stem}.{name}.H.npy"));
        if !hf.exists() {
            continue;
        }
        let est = estimate(img.view(), &opts).expect(stem);
        let maps = Separator::new(&est)
            .expect("sep")
            .separate(img.view(), Output::Concentrations)
            .expect("maps");
        for (stain, ours) in [("H", &maps.h), ("E", &maps.e)] {
            let (shape, reference) = read_npy_f32(&dir.join(format!("{stem}.{name}.{stain}.npy")));
            assert_eq!(shape, vec![img.height, img.width]);
            let ours: Vec<f32> = ours.iter().map(|v| v * to_log10).collect();
            let err = rel_l2(&ours, &reference);
            assert!(err <= 1e-3, "{stem} {name} {stain}: relative L2 {err:.2e}");
        }
        if name != "classm_style" {
            continue; // the reference's tissue set T is defined in the log10 convention
        }
        // Tissue statistics agree too.
        let t = &j["implementations"][name];
        let neg: Vec<f64> = t["negative_conc_fraction"]
            .as_array()
            .expect("neg")
            .iter()
            .map(|v| v.as_f64().expect("f"))
            .collect();
        for s in 0..2 {
            let d = (est.diagnostics.negative_fraction[s] - neg[s]).abs();
            assert!(
                d <= 2e-3,
                "{stem} {name}: negative fraction {} vs {}",
                est.diagnostics.negative_fraction[s],
                neg[s]
            );
        }
    }
}

#[test]
fn maps_match_the_reference_npy_files() {
    let shared = crate::require_shared!();
    let refdir = shared.join("reference/stain/tiles");
    let mut n = 0;
    for entry in std::fs::read_dir(&refdir).expect("dir") {
        let p = entry.expect("entry").path();
        let name = p
            .file_name()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_string();
        if let Some(stem) = name.strip_suffix(".classm_style.H.npy") {
            check_maps(
                &shared.join(format!("data/stain/tiles/{stem}.png")),
                &refdir.join(format!("{stem}.json")),
                &refdir,
            );
            n += 1;
        }
    }
    assert_eq!(n, 3, "three tiles have reference maps");
}

#[test]
fn fixture_tile_matches_its_reference() {
    let dir = crate::support::fixtures().join("stain");
    let png = dir.join("torchstain__source.png");
    let json = dir.join("torchstain__source.reference.json");
    let j = read_json(&json);
    let est = estimate(Img::open(&png).view(), &classm_opts()).expect("fixture");
    let (dh, de) = worst(&est, &j, "classm_style");
    assert!(dh <= 0.5 && de <= 0.5, "{dh} {de}");
    // Same tissue-pixel percentile as the reference's max_conc_p99 when taken over tissue.
    let mut o = classm_opts();
    o.convention.max_conc_pixels = MaxConcPixels::Tissue;
    let est_t = estimate(Img::open(&png).view(), &o).expect("fixture");
    let p99 = &j["implementations"]["classm_style"]["max_conc_p99"];
    for s in 0..2 {
        let r = p99[s].as_f64().expect("p99");
        assert!(
            (est_t.max_conc[s] - r).abs() <= 2e-3 * r,
            "p99 {s}: {} vs {r}",
            est_t.max_conc[s]
        );
    }
    // The reference's maps are named after the tile in the JSON; check them from the fixture.
    let maps_dir = dir.clone();
    let img = Img::open(&png);
    let maps = Separator::new(&est)
        .expect("sep")
        .separate(img.view(), Output::Concentrations)
        .expect("maps");
    for (stain, ours) in [("H", &maps.h), ("E", &maps.e)] {
        let (_, reference) =
            read_npy_f32(&maps_dir.join(format!("torchstain__source.classm_style.{stain}.npy")));
        let err = rel_l2(ours, &reference);
        assert!(err <= 1e-3, "fixture {stain}: relative L2 {err:.2e}");
    }
}
