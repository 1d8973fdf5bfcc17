use std::collections::BTreeMap;

use classm_data::{Assignment, DataError, Dataset, SourceOptions, SplitSpec, split};

use crate::require_shared;
use crate::support::mini;

fn groups_are_whole(d: &Dataset, a: &Assignment) {
    let mut seen = BTreeMap::new();
    for (s, &k) in d.samples.iter().zip(&a.of_sample) {
        assert_eq!(
            *seen.entry(&s.group).or_insert(k),
            k,
            "group {} spans splits",
            s.group
        );
    }
}

#[test]
fn spec_parses_percentages_fractions_counts_and_rest() {
    let s: SplitSpec = "labelled=10%, validation=0.2,test=30,unlabelled=rest"
        .parse()
        .unwrap();
    assert_eq!(s.parts.len(), 4);
    assert_eq!(
        s.to_string(),
        "labelled=10%,validation=20%,test=30,unlabelled=rest"
    );
    for bad in [
        "",
        "a",
        "a=x",
        "a=rest,b=rest",
        "a=60%,b=50%",
        "a=10%,a=20%",
        "a=0%",
    ] {
        assert!(
            matches!(bad.parse::<SplitSpec>(), Err(DataError::Config(_))),
            "{bad}"
        );
    }
}

#[test]
fn fixture_split_is_group_aware_deterministic_and_round_trips() {
    let d = mini();
    let spec: SplitSpec = "train=50%,validation=rest".parse().unwrap();
    let a = split(&d, &spec, 7).unwrap();
    groups_are_whole(&d, &a);
    assert_eq!(a, split(&d, &spec, 7).unwrap(), "same seed, same split");
    let seeds_differ = (0..8).any(|s| split(&d, &spec, s).unwrap() != a);
    assert!(seeds_differ, "the seed must matter");
    let n_train = a.indices("train").len();
    assert!((8..=14).contains(&n_train), "train has {n_train} of 22");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("splits/split.tsv");
    a.write(&file, &d, "seed=7").unwrap();
    let back = Assignment::read(&file, &d).unwrap();
    assert_eq!(back, a, "names keep their order, samples their split");
    for i in 0..d.samples.len() {
        assert_eq!(back.names[back.of_sample[i]], a.names[a.of_sample[i]]);
    }
    let table = a.counts(&d);
    assert_eq!(table.counts.iter().flatten().sum::<usize>(), 22);
    assert!(
        table.to_string().contains("train") && table.to_tsv().starts_with("split\tadenocarcinoma")
    );

    // A dataset that changed since the split: a missing row, a moved label, a split group.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(5);
    std::fs::write(&file, lines.join("\n")).unwrap();
    assert!(
        Assignment::read(&file, &d)
            .unwrap_err()
            .to_string()
            .contains("not in the split file")
    );
    let moved = text.replacen("\tadenocarcinoma\t", "\tpolyp\t", 1);
    std::fs::write(&file, moved).unwrap();
    assert!(matches!(
        Assignment::read(&file, &d),
        Err(DataError::Table { .. })
    ));
    let mut broken = a.clone();
    let first_group: Vec<usize> = (0..22)
        .filter(|&i| d.samples[i].group == d.samples[0].group)
        .collect();
    broken.of_sample[first_group[0]] = 1 - broken.of_sample[first_group[1]];
    broken.write(&file, &d, "broken").unwrap();
    assert!(
        Assignment::read(&file, &d)
            .unwrap_err()
            .to_string()
            .contains("is in splits")
    );
}

#[test]
fn a_split_narrows_to_the_readable_samples() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = mini();
    let gone = dir.path().join("gone.png");
    d.samples[3].path = gone;
    let a = split(&d, &"train=50%,validation=rest".parse().unwrap(), 1).unwrap();
    let report = classm_data::scan(&d, classm_data::OnError::SkipAndReport, &|| {}).unwrap();
    assert_eq!(report.failures.len(), 1);
    let readable = report.readable(&d);
    let narrowed = report.readable_assignment(&a);
    assert_eq!(narrowed.of_sample.len(), readable.samples.len());
    let mut kept = a.of_sample.clone();
    kept.remove(3);
    assert_eq!(narrowed.of_sample, kept);
}

#[test]
fn impossible_requests_fail_clearly() {
    let d = mini();
    let err = split(&d, &"a=30,b=rest".parse().unwrap(), 0).unwrap_err();
    assert!(err.to_string().contains("22"), "{err}");
    let err = split(&d, &"a=50%,b=20%".parse().unwrap(), 0).unwrap_err();
    assert!(err.to_string().contains("rest"), "{err}");
}

#[test]
fn ebhi_split_stratifies_by_class_within_cases() {
    let shared = require_shared!();
    let d = Dataset::open(
        &shared.join("data/ebhi-seg/MANIFEST.tsv"),
        &SourceOptions::default(),
    )
    .unwrap();
    let spec: SplitSpec = "labelled=10%,validation=20%,unlabelled=rest"
        .parse()
        .unwrap();
    let a = split(&d, &spec, 42).unwrap();
    groups_are_whole(&d, &a);
    let t = a.counts(&d);
    let total: usize = t.counts.iter().flatten().sum();
    assert_eq!(total, 1553);
    for (k, want) in [(0usize, 0.10), (1, 0.20), (2, 0.70)] {
        let got = t.counts[k].iter().sum::<usize>() as f64 / total as f64;
        assert!((got - want).abs() < 0.02, "split {k}: {got:.3} vs {want}");
    }
    // Every class is represented in every split, near its share where the cases allow.
    for c in 0..d.classes.len() {
        let n: usize = (0..3).map(|k| t.counts[k][c]).sum();
        for (k, want) in [(0usize, 0.10), (1, 0.20)] {
            let got = t.counts[k][c] as f64 / n as f64;
            assert!(
                t.counts[k][c] > 0,
                "class {} missing from split {k}",
                d.classes[c]
            );
            assert!(
                (got - want).abs() < 0.08,
                "class {} split {k}: {got:.3} vs {want}",
                d.classes[c]
            );
        }
    }
}
