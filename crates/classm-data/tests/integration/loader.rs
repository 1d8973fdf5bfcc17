use std::sync::Arc;

use classm_data::{
    AugmentConfig, BalancedSampler, Mode, Normalization, Pipeline, Prefetch, Request, Source,
    StainLookup, StainOptions, UniformSampler, by_class, channel_stats, group_stains,
};

use crate::support::{mini, write_png};

fn source(norm: Normalization) -> Source {
    let d = mini();
    let stains = group_stains(&d, &StainOptions::default(), None, &|| {}).unwrap();
    let p = Pipeline::new(AugmentConfig::scaled(224, false), norm).unwrap();
    Source::new(
        Arc::new(d),
        Arc::new(StainLookup::per_group(&stains)),
        Arc::new(p),
        99,
    )
    .unwrap()
}

fn request(indices: Vec<usize>, views: usize) -> Request {
    Request {
        indices,
        mode: Mode::Train,
        views,
        epoch: 3,
        first_draw: 40,
    }
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn batches_are_bit_identical_across_runs_and_thread_counts() {
    let src = source(Normalization::paper());
    let req = request((0..22).collect(), 2);
    let one = in_pool(1, || src.load(&req).unwrap());
    let two = in_pool(2, || src.load(&req).unwrap());
    let again = in_pool(2, || source(Normalization::paper()).load(&req).unwrap());
    assert_eq!(one, two);
    assert_eq!(one, again);
    assert_eq!(one.h.len(), 2 * 22 * 136 * 136);
    let (v0, _) = one.view(0);
    let (v1, _) = one.view(1);
    assert_ne!(v0, v1, "two views of a sample are augmented independently");
    assert_eq!(one.labels.len(), 22);
    assert!(one.h.iter().chain(&one.e).all(|v| v.is_finite()));
}

#[test]
fn a_sample_is_the_same_whichever_batch_carries_it() {
    let src = source(Normalization::paper());
    let whole = src.load(&request(vec![4, 5, 6], 1)).unwrap();
    let part = src
        .load(&Request {
            first_draw: 41,
            ..request(vec![5], 1)
        })
        .unwrap();
    let s2 = 136 * 136;
    assert_eq!(&whole.h[s2..2 * s2], &part.h[..]);

    // Recycled buffers (of another size, holding other values) change nothing.
    let fresh = src.load(&request(vec![1, 2], 2)).unwrap();
    src.recycle(whole);
    src.recycle(part);
    assert_eq!(src.load(&request(vec![1, 2], 2)).unwrap(), fresh);
}

#[test]
fn prefetch_yields_the_requested_batches_in_order_and_stops_on_error() {
    let src = Arc::new(source(Normalization::paper()));
    let reqs: Vec<Request> = (0..5)
        .map(|b| Request {
            first_draw: b * 4,
            ..request((b as usize * 4..b as usize * 4 + 4).collect(), 1)
        })
        .collect();
    let got: Vec<_> = Prefetch::spawn(src.clone(), reqs.clone(), 2)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got.len(), 5);
    for (b, r) in got.iter().zip(&reqs) {
        assert_eq!(*b, src.load(r).unwrap());
    }
    // Dropping the iterator early stops the producer.
    let mut early = Prefetch::spawn(src.clone(), reqs.clone().into_iter().cycle().take(1000), 1);
    assert!(early.next().is_some());
    drop(early);

    // A file that disappears: the batch is an error naming it, and nothing follows it.
    let dir = tempfile::tempdir().unwrap();
    let mut d = mini();
    let gone = dir.path().join("gone.png");
    write_png(&gone, 30, 30, |_, _| [100, 50, 150]);
    d.samples[0].path = gone.clone();
    let src2 = Source::new(
        Arc::new(d),
        Arc::new(StainLookup::Fixed(classm_data::Unmixer::paper_fixed())),
        Arc::new(Pipeline::new(AugmentConfig::scaled(224, false), Normalization::paper()).unwrap()),
        1,
    )
    .unwrap();
    std::fs::remove_file(&gone).unwrap();
    let out: Vec<_> = Prefetch::spawn(Arc::new(src2), reqs, 2).collect();
    assert_eq!(out.len(), 1);
    let err = out.into_iter().next().unwrap().unwrap_err();
    assert!(err.to_string().contains("gone.png"), "{err}");
}

#[test]
fn balanced_batches_hold_each_class_equally_and_cycle_through_every_sample() {
    let d = mini();
    let all: Vec<usize> = (0..d.samples.len()).collect();
    let classes = by_class(|i| d.samples[i].label, &all, d.classes.len());
    let s = BalancedSampler::new(5, classes.clone(), 2).unwrap();
    assert_eq!(s.batch_size(), 12);
    let mut per_class_seen = vec![Vec::new(); classes.len()];
    for b in 0..6 {
        let batch = s.batch(b);
        assert_eq!(batch, s.batch(b), "random access is deterministic");
        for (c, list) in classes.iter().enumerate() {
            let n = batch.iter().filter(|i| list.contains(i)).count();
            assert_eq!(n, 2, "class {c} in batch {b}");
        }
        for &i in &batch {
            per_class_seen[d.samples[i].label.unwrap()].push(i);
        }
    }
    // Each class's first len(list) draws are a permutation of its list.
    for (c, list) in classes.iter().enumerate() {
        let mut first: Vec<usize> = per_class_seen[c][..list.len()].to_vec();
        first.sort();
        assert_eq!(&first, list, "class {c}");
    }
    assert!(BalancedSampler::new(5, vec![vec![1], vec![]], 2).is_err());
}

#[test]
fn uniform_batches_are_fresh_permutations_each_pass() {
    let pool: Vec<usize> = (100..130).collect();
    let s = UniformSampler::new(8, pool.clone(), 10).unwrap();
    let pass = |p: u64| -> Vec<usize> { (3 * p..3 * p + 3).flat_map(|b| s.batch(b)).collect() };
    let (a, b) = (pass(0), pass(1));
    for x in [&a, &b] {
        let mut sorted = x.clone();
        sorted.sort();
        assert_eq!(sorted, pool);
    }
    assert_ne!(a, b);
}

#[test]
fn channel_statistics_are_deterministic_and_plausible() {
    let src = source(Normalization::identity());
    let idx: Vec<usize> = (0..22).collect();
    let one = in_pool(1, || channel_stats(&src, &idx).unwrap());
    let two = in_pool(2, || channel_stats(&src, &idx).unwrap());
    assert_eq!(one, two);
    for k in 0..2 {
        assert!(one.mean[k] > 0.02 && one.mean[k] < 0.6, "{one:?}");
        assert!(one.std[k] > 0.02 && one.std[k] < 0.5, "{one:?}");
    }
    assert!(channel_stats(&source(Normalization::paper()), &idx).is_err());
}

#[test]
fn fixed_and_per_image_stain_modes_are_the_ablations() {
    let d = Arc::new(mini());
    let p = Arc::new(
        Pipeline::new(AugmentConfig::scaled(224, false), Normalization::identity()).unwrap(),
    );
    let eval = |lookup: StainLookup| {
        Source::new(d.clone(), Arc::new(lookup), p.clone(), 0)
            .unwrap()
            .load(&Request {
                mode: Mode::Eval,
                ..request(vec![0, 7, 15], 1)
            })
            .unwrap()
    };
    let fixed = eval(StainLookup::Fixed(classm_data::Unmixer::paper_fixed()));
    let per_image = eval(StainLookup::PerImage(classm_stain::Convention::classm()));
    let stains = group_stains(&d, &StainOptions::default(), None, &|| {}).unwrap();
    let per_group = eval(StainLookup::per_group(&stains));
    assert_ne!(fixed.h, per_image.h);
    assert_ne!(per_image.h, per_group.h);
    for b in [&fixed, &per_image, &per_group] {
        assert!(b.h.iter().chain(&b.e).all(|v| (0.0..=1.0).contains(v)));
    }
    // A group without a matrix is refused up front, not at batch time.
    let mut other = mini();
    other.samples[0].group = "nowhere".into();
    let err = Source::new(
        Arc::new(other),
        Arc::new(StainLookup::per_group(&stains)),
        p.clone(),
        0,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nowhere"));
}

/// The fixture dataset with its patches copied into `dir`, so that a test can remove them.
fn movable_mini(dir: &std::path::Path) -> classm_data::Dataset {
    let mut d = mini();
    for (i, s) in d.samples.iter_mut().enumerate() {
        let to = dir.join(format!("{i}.png"));
        std::fs::copy(&s.path, &to).unwrap();
        s.path = to;
    }
    d
}

#[test]
fn the_decoded_cache_changes_no_value_and_serves_later_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let d = Arc::new(movable_mini(dir.path()));
    let n = d.samples.len();
    let stains = group_stains(&d, &StainOptions::default(), None, &|| {}).unwrap();
    let cases = [
        // EBHI's native size with the case's matrix; resized for a CPU preset with each
        // image's own estimate (made before resizing).
        (
            AugmentConfig::scaled(224, false),
            StainLookup::per_group(&stains),
        ),
        (
            AugmentConfig::scaled(96, true),
            StainLookup::PerImage(classm_stain::Convention::classm()),
        ),
    ];
    let all: Vec<usize> = (0..n).collect();
    let requests = [
        Request {
            epoch: 0,
            ..request(all.clone(), 2)
        },
        Request {
            epoch: 1,
            ..request(all.clone(), 2)
        },
        Request {
            mode: Mode::Eval,
            ..request(all.clone(), 1)
        },
    ];
    let mut cached_sources = Vec::new();
    for (config, lookup) in cases {
        let resized = config.resize.is_some();
        let lookup = Arc::new(lookup);
        let p = Arc::new(Pipeline::new(config, Normalization::paper()).unwrap());
        let plain = Source::new(d.clone(), lookup.clone(), p.clone(), 7).unwrap();
        let cached = Source::new(d.clone(), lookup, p, 7)
            .unwrap()
            .with_decoded_cache(usize::MAX);
        assert_eq!(plain.cache_usage(), None);
        let expected: Vec<_> = requests.iter().map(|r| plain.load(r).unwrap()).collect();
        for (r, want) in requests.iter().zip(&expected) {
            assert_eq!(&in_pool(2, || cached.load(r).unwrap()), want);
        }
        let usage = cached.cache_usage().unwrap();
        assert_eq!(usage.entries, n);
        if resized {
            assert!(usage.bytes >= n * 96 * 96 * 3, "{usage:?}");
        }
        cached_sources.push((cached, expected));
    }
    // With the files gone, the cache alone reproduces every batch.
    for s in &d.samples {
        std::fs::remove_file(&s.path).unwrap();
    }
    for (cached, expected) in &cached_sources {
        for (r, want) in requests.iter().zip(expected) {
            assert_eq!(&cached.load(r).unwrap(), want);
        }
    }
}

#[test]
fn the_decoded_cache_keeps_to_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let d = Arc::new(movable_mini(dir.path()));
    let p =
        Arc::new(Pipeline::new(AugmentConfig::scaled(96, true), Normalization::paper()).unwrap());
    let patch = 96 * 96 * 3;
    let src = Source::new(
        d.clone(),
        Arc::new(StainLookup::Fixed(classm_data::Unmixer::paper_fixed())),
        p,
        7,
    )
    .unwrap()
    .with_decoded_cache(3 * patch + patch / 2);
    let all: Vec<usize> = (0..d.samples.len()).collect();
    let first = in_pool(1, || src.load(&request(all.clone(), 1)).unwrap());
    let usage = src.cache_usage().unwrap();
    assert_eq!((usage.entries, usage.bytes), (3, 3 * patch), "{usage:?}");
    assert_eq!(usage.budget, 3 * patch + patch / 2);

    // On one thread the first three loaded are kept; the others are read again.
    for s in &d.samples {
        std::fs::remove_file(&s.path).unwrap();
    }
    let kept = src.load(&request(vec![0, 1, 2], 1)).unwrap();
    assert_eq!(kept.h, first.h[..3 * 56 * 56]);
    let err = src.load(&request(vec![0, 3], 1)).unwrap_err();
    assert!(err.to_string().contains("3.png"), "{err}");
}
