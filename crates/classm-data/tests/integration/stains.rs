use classm_data::{
    DataError, Dataset, Fallback, GroupStain, SourceOptions, StainOptions, Unmixer, group_stains,
    read_rgb8,
};
use classm_stain::{Output, RgbView, Sampling, Separator};

use crate::require_shared;
use crate::support::{mini, write_png};

#[test]
fn fixture_cases_get_estimates_and_the_cache_is_reused_until_inputs_change() {
    let d = mini();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache/stains.json");
    let opts = StainOptions::default();
    let first = group_stains(&d, &opts, Some(&cache), &|| {}).unwrap();
    assert_eq!((first.computed, first.cached), (18, 0));
    assert!(first.fallbacks().is_empty(), "{:?}", first.fallbacks());
    for (g, (stain, files)) in &first.groups {
        let GroupStain::Estimated(est) = stain else {
            unreachable!()
        };
        assert!(est.diagnostics.separation_deg > 5.0, "{g}");
        assert_eq!(*files, d.samples.iter().filter(|s| &s.group == g).count());
        // 224² patches are too small for every 10th pixel: the grid gets finer.
        assert!(
            matches!(est.sampling, Sampling::Grid { step } if step < 10),
            "{g}"
        );
    }

    let again = group_stains(&d, &opts, Some(&cache), &|| {}).unwrap();
    assert_eq!((again.computed, again.cached), (0, 18));
    assert_eq!(again.groups, first.groups);

    // A changed file list recomputes that group only; changed options recompute all.
    let mut fewer = d.clone();
    let drop = fewer
        .samples
        .iter()
        .position(|s| s.group == "C2001837")
        .unwrap();
    fewer.samples.remove(drop);
    let partial = group_stains(&fewer, &opts, Some(&cache), &|| {}).unwrap();
    assert_eq!((partial.computed, partial.cached), (1, 17));
    let other = StainOptions {
        min_samples: 50_000,
        ..StainOptions::default()
    };
    let all = group_stains(&d, &other, Some(&cache), &|| {}).unwrap();
    assert_eq!(all.computed, 18);

    // A damaged cache costs a recomputation, not an error.
    std::fs::write(&cache, "{ not json").unwrap();
    assert_eq!(
        group_stains(&d, &opts, Some(&cache), &|| {})
            .unwrap()
            .computed,
        18
    );
}

#[test]
fn a_blank_group_falls_back_explicitly_or_fails_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("x/blank.png"), 64, 64, |_, _| {
        [244, 244, 246]
    });
    let m = dir.path().join("m.tsv");
    std::fs::write(&m, "path\tlabel\tgroup\nx/blank.png\tx\tglass\n").unwrap();
    let d = Dataset::open(&m, &SourceOptions::default()).unwrap();
    let s = group_stains(&d, &StainOptions::default(), None, &|| {}).unwrap();
    let fb = s.fallbacks();
    assert_eq!(fb.len(), 1);
    assert_eq!(fb[0].0, "glass");
    assert!(!fb[0].1.is_empty());
    let strict = StainOptions {
        fallback: Fallback::Error,
        ..StainOptions::default()
    };
    let err = group_stains(&d, &strict, None, &|| {}).unwrap_err();
    assert!(
        matches!(&err, DataError::Stain { group, .. } if group == "glass"),
        "{err}"
    );
}

#[test]
fn unmixer_equals_classm_stain_model_inputs_bit_for_bit() {
    let d = mini();
    let s = group_stains(&d, &StainOptions::default(), None, &|| {}).unwrap();
    let sample = &d.samples[3];
    let GroupStain::Estimated(est) = &s.groups[&sample.group].0 else {
        unreachable!()
    };
    let rgb = read_rgb8(&sample.path).unwrap().image;
    let view = RgbView::try_from(&rgb).unwrap();
    let want = Separator::new(est)
        .unwrap()
        .separate(view, Output::ModelInput)
        .unwrap();
    let n = view.pixels();
    let (mut h, mut e) = (vec![0f32; n], vec![0f32; n]);
    Unmixer::from_estimate(est).separate_into(rgb.as_raw(), &mut h, &mut e);
    assert_eq!(h, want.h);
    assert_eq!(e, want.e);
    assert!(h.iter().chain(&e).all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn ebhi_cases_mostly_estimate() {
    let shared = require_shared!();
    let d = Dataset::open(
        &shared.join("data/ebhi-seg/MANIFEST.tsv"),
        &SourceOptions::default(),
    )
    .unwrap();
    let s = group_stains(&d, &StainOptions::default(), None, &|| {}).unwrap();
    assert_eq!(s.groups.len(), 238);
    let fallbacks = s.fallbacks().len();
    assert!(
        fallbacks <= 5,
        "{fallbacks} of 238 cases fell back: {:?}",
        s.fallbacks()
    );
}
