//! The streaming slide estimator against an exact pooled computation done here, independently,
//! in f64 with sorting (no histograms, no fixed point).

use classm_stain::{
    Convention, EstimateOptions, PassState, Sampling, SlideEstimator, StainEstimate, StainMatrix,
    Tile, TissueRule, estimate,
};
use nalgebra::{Matrix3, SymmetricEigen};

use crate::support::{Img, angle_deg};

/// The exact estimate of the classm convention over `pixels`: f64 OD, two-pass covariance,
/// `atan2` angles, sorted type-7 quantiles.
fn exact_classm(pixels: &[[u8; 3]], beta: f64) -> StainMatrix {
    let od: Vec<[f64; 3]> = pixels
        .iter()
        .map(|p| p.map(|v| (255.0 / f64::from(v).max(1.0)).log10()))
        .collect();
    let pca: Vec<&[f64; 3]> = od.iter().filter(|o| o.iter().any(|&v| v != 0.0)).collect();
    let n = pca.len() as f64;
    let mut mean = [0.0; 3];
    for o in &pca {
        for c in 0..3 {
            mean[c] += o[c] / n;
        }
    }
    let mut cov: Matrix3<f64> = Matrix3::zeros();
    for o in &pca {
        for i in 0..3 {
            for j in 0..3 {
                cov[(i, j)] += (o[i] - mean[i]) * (o[j] - mean[j]) / n;
            }
        }
    }
    let eig: SymmetricEigen<f64, nalgebra::U3> = SymmetricEigen::new(cov);
    let mut idx: [usize; 3] = [0, 1, 2];
    idx.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let col = |i: usize| {
        let c = eig.eigenvectors.column(idx[i]);
        [c[0], c[1], c[2]]
    };
    let mut v1 = col(0);
    let mut v2 = col(1);
    if v1[0] < 0.0 {
        v1 = v1.map(|x| -x);
    }
    if v2[0] > 0.0 {
        v2 = v2.map(|x| -x);
    }
    let mut th: Vec<f64> = od
        .iter()
        .filter_map(|o| {
            let x = o[0] * v1[0] + o[1] * v1[1] + o[2] * v1[2];
            let y = o[0] * v2[0] + o[1] * v2[1] + o[2] * v2[2];
            (x * x + y * y >= beta * beta).then(|| y.atan2(x))
        })
        .collect();
    th.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let h = (th.len() - 1) as f64 * p;
        let k = h.floor() as usize;
        let f = h - k as f64;
        if k + 1 < th.len() {
            th[k] + f * (th[k + 1] - th[k])
        } else {
            th[k]
        }
    };
    let dir = |t: f64| [0, 1, 2].map(|c| t.cos() * v1[c] + t.sin() * v2[c]);
    let (a, b) = (dir(q(0.01)), dir(q(0.99)));
    let (h, e) = if a[0] >= b[0] { (a, b) } else { (b, a) };
    StainMatrix::new(h, e).expect("matrix")
}

fn tiles_of(img: &Img, size: usize) -> Vec<Tile<'_>> {
    let mut v = Vec::new();
    for y in (0..img.height).step_by(size) {
        for x in (0..img.width).step_by(size) {
            let view = img
                .view()
                .crop(x, y, size.min(img.width - x), size.min(img.height - y))
                .expect("crop");
            v.push(Tile::new(view).at(x as u64, y as u64));
        }
    }
    v
}

fn streamed(opts: &EstimateOptions, tiles: &[Tile<'_>]) -> StainEstimate {
    SlideEstimator::run_streaming(opts.clone(), |s: &mut PassState| {
        for t in tiles {
            s.add(t)?;
        }
        Ok(())
    })
    .expect("slide estimate")
}

fn opts() -> EstimateOptions {
    EstimateOptions::default().with_artefacts(classm_stain::Artefacts::none())
}

fn real_images() -> Option<Vec<Img>> {
    let shared = crate::support::shared()?;
    let t = shared.join("data/stain/tiles");
    Some(
        [
            "torchstain__source",
            "henorm__example1",
            "histolab__tcga-lung-rgb",
            "tiatoolbox__target_image",
        ]
        .iter()
        .map(|n| Img::open(&t.join(format!("{n}.png"))))
        .collect(),
    )
}

#[test]
fn tiled_estimate_matches_the_exact_pooled_estimate() {
    let mut images = match real_images() {
        Some(v) => v,
        None => {
            crate::support::skip("slide pooled test on ../shared tiles (the fixture still runs)");
            Vec::new()
        }
    };
    images.push(Img::open(
        &crate::support::fixtures().join("stain/torchstain__source.png"),
    ));
    for img in &images {
        let px: Vec<[u8; 3]> = img
            .data
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        let exact = exact_classm(&px, 0.15);
        let est = streamed(&opts(), &tiles_of(img, 97));
        let (dh, de) = (
            angle_deg(est.matrix.h, exact.h),
            angle_deg(est.matrix.e, exact.e),
        );
        assert!(
            dh <= 0.05 && de <= 0.05,
            "{}x{}: H {dh:.4}° E {de:.4}°",
            img.width,
            img.height
        );
    }
}

#[test]
fn pooled_slide_of_several_images_matches_the_exact_pool() {
    let Some(images) = real_images() else {
        crate::support::skip("pooled_slide_of_several_images_matches_the_exact_pool");
        return;
    };
    let mut px = Vec::new();
    let mut tiles = Vec::new();
    let mut x0 = 0u64;
    for img in &images {
        px.extend(img.data.chunks_exact(3).map(|p| [p[0], p[1], p[2]]));
        tiles.extend(tiles_of(img, 256).into_iter().map(|t| {
            let (x, y) = t.origin;
            t.at(x0 + x, y)
        }));
        x0 += img.width as u64;
    }
    let exact = exact_classm(&px, 0.15);
    let est = SlideEstimator::run_parallel(opts(), &tiles).expect("parallel");
    let (dh, de) = (
        angle_deg(est.matrix.h, exact.h),
        angle_deg(est.matrix.e, exact.e),
    );
    assert!(dh <= 0.05 && de <= 0.05, "pooled: H {dh:.4}° E {de:.4}°");
    assert_eq!(est.diagnostics.sampled_pixels, px.len() as u64);
}

#[test]
fn grid_sampling_samples_exactly_the_grid_and_reports_the_rate() {
    let img = Img::open(&crate::support::fixtures().join("stain/torchstain__source.png"));
    let o = opts().with_sampling(Sampling::Grid { step: 10 });
    let est = streamed(&o, &tiles_of(&img, 64));
    // Every 10th row and column of the whole image, whatever the tiling.
    let grid: Vec<[u8; 3]> = (0..img.height)
        .step_by(10)
        .flat_map(|y| (0..img.width).step_by(10).map(move |x| (x, y)))
        .map(|(x, y)| {
            let i = 3 * (y * img.width + x);
            [img.data[i], img.data[i + 1], img.data[i + 2]]
        })
        .collect();
    assert_eq!(est.diagnostics.sampled_pixels, grid.len() as u64);
    assert_eq!(
        est.diagnostics.total_pixels,
        (img.width * img.height) as u64
    );
    assert!(
        (est.diagnostics.sampling_rate - grid.len() as f64 / (img.width * img.height) as f64).abs()
            < 1e-12
    );
    let exact = exact_classm(&grid, 0.15);
    let (dh, de) = (
        angle_deg(est.matrix.h, exact.h),
        angle_deg(est.matrix.e, exact.e),
    );
    assert!(dh <= 0.05 && de <= 0.05, "grid: H {dh:.4}° E {de:.4}°");
    // And the whole image at once samples the same pixels.
    assert_eq!(estimate(img.view(), &o).expect("whole"), est);
}

#[test]
fn tile_order_grouping_and_threads_do_not_change_a_bit() {
    let img = Img::open(&crate::support::fixtures().join("stain/torchstain__source.png"));
    let o = EstimateOptions::new(Convention::classm().with_estimated_i0())
        .with_sampling(Sampling::Random { rate: 0.3, seed: 7 });
    let tiles = tiles_of(&img, 50);
    let a = streamed(&o, &tiles);
    let mut rev = tiles.clone();
    rev.reverse();
    let b = streamed(&o, &rev);
    let c = SlideEstimator::run_parallel(o.clone(), &tiles).expect("par");
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let d = one
        .install(|| SlideEstimator::run_parallel(o.clone(), &tiles))
        .expect("1 thread");
    let e = estimate(img.view(), &o).expect("whole image");
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a, d);
    assert_eq!(a, e);
    let rate = a.diagnostics.sampling_rate;
    assert!((rate - 0.3).abs() < 0.01, "{rate}");
    // Another seed samples other pixels.
    let other = streamed(
        &o.clone()
            .with_sampling(Sampling::Random { rate: 0.3, seed: 8 }),
        &tiles,
    );
    assert_ne!(other.diagnostics.kept_pixels, a.diagnostics.kept_pixels);
    assert!(angle_deg(other.matrix.h, a.matrix.h) < 0.5);
}

#[test]
fn passes_must_come_in_order() {
    let img = Img::open(&crate::support::fixtures().join("stain/torchstain__source.png"));
    let mut est = SlideEstimator::new(opts()).expect("new");
    let s1 = est.begin().expect("begin");
    let mut s1b = est.begin().expect("begin");
    s1b.add(&Tile::new(img.view())).expect("add");
    est.finish_pass(s1b).expect("moments");
    // A state of the finished pass cannot complete the next one.
    assert_eq!(
        est.finish_pass(s1).unwrap_err().kind(),
        classm_stain::ErrorKind::Protocol
    );
    let fresh = SlideEstimator::new(opts()).expect("new");
    let moments = fresh.begin().expect("b");
    assert!(fresh.estimate().is_err());
    let _ = moments;
    // The all-channel rule also streams.
    let mut m = EstimateOptions::new(Convention::macenko2009());
    m.on_ambiguous_order = classm_stain::OrderPolicy::Flag;
    assert_eq!(m.convention.tissue_rule, TissueRule::AllChannels);
    assert_eq!(
        streamed(&m, &tiles_of(&img, 128)),
        estimate(img.view(), &m).expect("whole")
    );
}

#[test]
fn the_vector_loops_of_the_all_pixel_path_give_the_per_pixel_loops_bits() {
    // The unmasked all-pixel path runs passes over vectors of 16 pixels; a mask sends every
    // pixel through the one-pixel loop. An all-ones mask must therefore change nothing.
    let img = Img::open(&crate::support::fixtures().join("stain/torchstain__source.png"));
    // A width that leaves a remainder after the 16-pixel blocks, and artefacts of each kind.
    let (w, h) = (img.width - 5, img.height);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        data.extend_from_slice(&img.data[y * img.width * 3..][..w * 3]);
    }
    for (i, p) in data.chunks_exact_mut(3).enumerate() {
        match i % 997 {
            0 => p.copy_from_slice(&[4, 9, 2]),
            1 => p.copy_from_slice(&[200, 0, 120]),
            2 => p.copy_from_slice(&[255, 255, 255]),
            _ => {}
        }
    }
    let view = classm_stain::RgbView::new(w, h, &data).expect("view");
    let ones = vec![1u8; w * h];
    let mask = classm_stain::MaskView::new(w, h, &ones).expect("mask");
    let conventions = [
        Convention::classm(),
        Convention::macenko2009(),
        Convention::classm().with_estimated_i0(),
    ];
    let artefacts = artefact_settings();
    for conv in conventions {
        for art in artefacts {
            let o = EstimateOptions::new(conv.clone()).with_artefacts(art);
            let plain = estimate(view, &o).expect("unmasked");
            let masked = classm_stain::estimate_masked(view, mask, &o).expect("masked");
            assert_eq!(plain, masked, "{conv:?} {art:?}");
            assert!(plain.diagnostics.excluded_dark > 0);
        }
    }
}

/// The default artefact rules, and stricter ones (dark up to 20, saturated channels).
fn artefact_settings() -> [classm_stain::Artefacts; 2] {
    [
        classm_stain::Artefacts::default(),
        classm_stain::Artefacts {
            dark_max: Some(20),
            saturated: true,
        },
    ]
}

/// The fixture tile mirrored into a 3 × 3 mosaic (2.3 MP): past the size from which the angle
/// and concentration passes count by colour cell.
fn mosaic() -> Img {
    let img = Img::open(&crate::support::fixtures().join("stain/torchstain__source.png"));
    let (w, h) = (img.width * 3, img.height * 3);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let (ty, sy) = (y / img.height, y % img.height);
        let sy = if ty % 2 == 1 { img.height - 1 - sy } else { sy };
        for x in 0..w {
            let (tx, sx) = (x / img.width, x % img.width);
            let sx = if tx % 2 == 1 { img.width - 1 - sx } else { sx };
            data.extend_from_slice(&img.data[(sy * img.width + sx) * 3..][..3]);
        }
    }
    Img {
        width: w,
        height: h,
        data,
    }
}

/// The estimate as the one-pixel loops give it: sampling at rate 1 keeps every pixel but
/// takes neither the probe's cut-offs nor the colour cells.
fn per_pixel(view: classm_stain::RgbView<'_>, o: &EstimateOptions) -> StainEstimate {
    let every = o
        .clone()
        .with_sampling(Sampling::Random { rate: 1.0, seed: 0 });
    let mut e = estimate(view, &every).expect("per-pixel estimate");
    e.sampling = Sampling::All;
    e.convention = o.convention.clone();
    e
}

#[test]
fn cut_offs_and_colour_cells_leave_every_estimate_unchanged() {
    let mut img = mosaic();
    // Artefacts of each kind, and pixels in the colour cells that mix them.
    for (i, p) in img.data.chunks_exact_mut(3).enumerate() {
        match i % 997 {
            0 => p.copy_from_slice(&[4, 9, 2]),
            1 => p.copy_from_slice(&[200, 0, 120]),
            _ => {}
        }
    }
    let view = img.view();
    let conventions = [
        Convention::classm(),
        Convention::macenko2009(),
        Convention::classm().with_estimated_i0(),
        Convention {
            tissue_rule: TissueRule::OdNorm,
            ..Convention::classm()
        },
    ];
    let artefacts = artefact_settings();
    for conv in conventions {
        for art in artefacts {
            let o = EstimateOptions::new(conv.clone()).with_artefacts(art);
            let fast = estimate(view, &o).unwrap_or_else(|e| panic!("{conv:?} {art:?}: {e}"));
            assert_eq!(fast, per_pixel(view, &o), "{conv:?} {art:?}");
            assert!(fast.diagnostics.excluded_dark > 0);
        }
    }
}

#[test]
fn a_misleading_probe_costs_a_repeated_pass_not_accuracy() {
    // The probe reads every 8th column of every 8th row. Paint those pixels in two extreme
    // stains: the probe's cut-offs then lump the real percentiles, which the estimator must
    // notice and run the pass again without cut-offs.
    let mut img = mosaic();
    for y in (0..img.height).step_by(8) {
        for x in (0..img.width).step_by(8) {
            let c = if (x / 8 + y / 8) % 2 == 0 {
                [27, 23, 93]
            } else {
                [218, 26, 198]
            };
            img.data[(y * img.width + x) * 3..][..3].copy_from_slice(&c);
        }
    }
    let view = img.view();
    let o = EstimateOptions::default();
    let mut est = SlideEstimator::new(o.clone()).expect("estimator");
    let mut passes = Vec::new();
    while let Some(pass) = est.next_pass() {
        passes.push(pass);
        let state = est.begin().expect("begin");
        est.finish_pass(state.add_all_parallel(&[Tile::new(view)]).expect("add"))
            .expect("pass");
    }
    assert!(passes.len() > 3, "no pass was repeated: {passes:?}");
    assert_eq!(est.estimate().expect("estimate"), per_pixel(view, &o));
}
