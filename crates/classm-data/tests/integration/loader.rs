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
