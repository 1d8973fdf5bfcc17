//! Each kernel against candle's own ops on the same input: values and every gradient.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::layers::{Kernels, Norm};

fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .max(1e-6);
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    d / scale
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // A fixed pseudo-random pattern: candle's CPU generator cannot be seeded.
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            // splitmix64 of (seed, i)
            let mut z = (seed << 32 ^ i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn convolution_and_its_gradients_match_candle() {
    // (n, c, h, w, o, k, stride, pad); the last spans several im2col chunks.
    for (i, &(n, c, h, w, o, k, s, p)) in [
        (2, 3, 9, 7, 4, 3, 1, 1),
        (2, 3, 9, 7, 4, 3, 2, 1),
        (3, 2, 8, 8, 5, 1, 2, 0),
        (2, 1, 13, 11, 4, 7, 2, 3),
        (1, 2, 2, 3, 3, 3, 1, 1),
        (2, 2, 5, 5, 3, 3, 3, 0),
        (16, 64, 32, 32, 64, 3, 1, 1),
        (2, 3, 1, 1, 4, 3, 1, 1),
        (2, 3, 2, 2, 4, 3, 1, 1),
        (2, 3, 1, 5, 4, 3, 1, 1),
        (2, 3, 4, 1, 4, 3, 1, 1),
        (2, 3, 3, 3, 2, 1, 1, 0),
        (5, 2, 7, 6, 3, 5, 1, 2),
    ]
    .iter()
    .enumerate()
    {
        let x = Var::from_tensor(&randn(&[n, c, h, w], i as u64)).unwrap();
        let wt = Var::from_tensor(&(randn(&[o, c, k, k], 100 + i as u64) * 0.3).unwrap()).unwrap();
        let ours = super::conv::conv2d(x.as_tensor(), wt.as_tensor(), s, p).unwrap();
        let want = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, 1).unwrap();
        assert_eq!(ours.dims(), want.dims());
        assert!(rel_diff(&ours, &want) < 1e-5, "case {i}: forward");
        let r = randn(want.dims(), 7);
        let g_ours = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g_want = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("input", &x), ("weight", &wt)] {
            let d = rel_diff(g_ours.get(v).unwrap(), g_want.get(v).unwrap());
            assert!(d < 1e-5, "case {i}: {name} gradient off by {d}");
        }
    }
}

#[test]
fn an_untracked_input_gets_only_a_weight_gradient() {
    let x = randn(&[2, 1, 9, 9], 3);
    let wt = Var::from_tensor(&randn(&[4, 1, 3, 3], 4)).unwrap();
    let y = super::conv::conv2d(&x, wt.as_tensor(), 2, 1).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let want = x
        .conv2d(wt.as_tensor(), 1, 2, 1, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(rel_diff(g.get(&wt).unwrap(), want.get(&wt).unwrap()) < 1e-5);
    assert!(g.get(&x).is_none());
}

fn norm_pair(c: usize, affine: bool) -> (VarMap, Norm, VarMap, Norm) {
    let build = || {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let norm = Norm::new(c, affine, vb).unwrap();
        for (k, v) in map.data().lock().unwrap().iter() {
            let seed = k.len() as u64;
            let t = if k.contains("var") || k.contains("weight") {
                (randn(&[c], seed).abs().unwrap() + 0.5).unwrap()
            } else {
                randn(&[c], seed)
            };
            v.set(&t).unwrap();
        }
        (map, norm)
    };
    let (a, na) = build();
    let (b, nb) = build();
    (a, na, b, nb)
}

#[test]
fn batch_norm_with_and_without_relu_matches_candle_in_both_modes() {
    for (shape, affine) in [
        (vec![4usize, 3, 5, 6], true),
        (vec![6, 5], false),
        (vec![3, 4, 1, 1], true),
    ] {
        for train in [true, false] {
            for relu in [false, true] {
                let c = shape[1];
                let (ma, ours, mb, theirs) = norm_pair(c, affine);
                let x = Var::from_tensor(&randn(&shape, 11)).unwrap();
                let y1 = ours
                    .forward_t(x.as_tensor(), train, relu, Kernels::Auto)
                    .unwrap();
                let y2 = theirs
                    .forward_t(x.as_tensor(), train, relu, Kernels::Candle)
                    .unwrap();
                let case = format!("{shape:?} train {train} relu {relu}");
                assert!(rel_diff(&y1, &y2) < 1e-5, "{case}: forward");
                let r = randn(&shape, 12);
                let g1 = (&y1 * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = (&y2 * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let d = rel_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap());
                assert!(d < 1e-4, "{case}: input gradient off by {d}");
                let (da, db) = (ma.data().lock().unwrap(), mb.data().lock().unwrap());
                for (k, va) in da.iter() {
                    let vb = &db[k];
                    if k.starts_with("running") {
                        assert!(
                            rel_diff(va.as_tensor(), vb.as_tensor()) < 1e-5,
                            "{case}: {k}"
                        );
                    } else {
                        let d = rel_diff(g1.get(va).unwrap(), g2.get(vb).unwrap());
                        assert!(d < 1e-4, "{case}: {k} gradient off by {d}");
                    }
                }
            }
        }
    }
}

#[test]
fn training_batch_norm_refuses_a_single_value_per_channel() {
    let (_m, norm, _m2, _n) = norm_pair(3, false);
    let x = randn(&[1, 3], 1);
    assert!(norm.forward_t(&x, true, false, Kernels::Auto).is_err());
    assert!(norm.forward_t(&x, false, false, Kernels::Auto).is_ok());
}

#[test]
fn residual_join_matches_candle() {
    let a = Var::from_tensor(&randn(&[2, 3, 4, 5], 1)).unwrap();
    let b = Var::from_tensor(&randn(&[2, 3, 4, 5], 2)).unwrap();
    let ours = crate::layers::add_relu(a.as_tensor(), b.as_tensor(), Kernels::Auto).unwrap();
    let want = (a.as_tensor() + b.as_tensor()).unwrap().relu().unwrap();
    assert_eq!(rel_diff(&ours, &want), 0.0);
    let r = randn(&[2, 3, 4, 5], 3);
    let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for v in [&a, &b] {
        assert_eq!(rel_diff(g1.get(v).unwrap(), g2.get(v).unwrap()), 0.0);
    }
}

/// Direct convolution and its gradients for upstream gradient `r`, by definition.
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &[f32],
    wt: &[f32],
    r: &[f32],
    [n, c, h, w]: [usize; 4],
    [o, k]: [usize; 2],
    s: usize,
    p: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let mut y = vec![0f32; n * o * ho * wo];
    let (mut dx, mut dw) = (vec![0f32; x.len()], vec![0f32; wt.len()]);
    for b in 0..n {
        for oo in 0..o {
            for oy in 0..ho {
                for ox in 0..wo {
                    let yi = ((b * o + oo) * ho + oy) * wo + ox;
                    for cc in 0..c {
                        for ki in 0..k {
                            for kj in 0..k {
                                let (iy, ix) = (oy * s + ki, ox * s + kj);
                                if iy < p || ix < p || iy - p >= h || ix - p >= w {
                                    continue;
                                }
                                let xi = ((b * c + cc) * h + iy - p) * w + ix - p;
                                let wi = ((oo * c + cc) * k + ki) * k + kj;
                                y[yi] += x[xi] * wt[wi];
                                dx[xi] += r[yi] * wt[wi];
                                dw[wi] += r[yi] * x[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    (y, dx, dw)
}

#[test]
fn every_small_geometry_matches_a_direct_convolution() {
    let close = |a: &Tensor, b: &[f32]| {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * scale)
    };
    let mut cases = 0;
    for h in 1..=5 {
        for w in [1, 2, 4, 5] {
            for k in [1, 2, 3, 5] {
                for s in 1..=3 {
                    for p in 0..=2 {
                        if h + 2 * p < k || w + 2 * p < k {
                            continue;
                        }
                        let seed = (h * 1000 + w * 100 + k * 10 + s + p * 7) as u64;
                        let x = Var::from_tensor(&randn(&[2, 2, h, w], seed)).unwrap();
                        let wt = Var::from_tensor(&randn(&[3, 2, k, k], seed + 1)).unwrap();
                        let y = super::conv::conv2d(x.as_tensor(), wt.as_tensor(), s, p).unwrap();
                        let r = randn(y.dims(), seed + 2);
                        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                        let (wy, wdx, wdw) = naive_conv(
                            &flat(x.as_tensor()),
                            &flat(wt.as_tensor()),
                            &flat(&r),
                            [2, 2, h, w],
                            [3, k],
                            s,
                            p,
                        );
                        let case = format!("{h}×{w} k{k} s{s} p{p}");
                        assert!(close(&y, &wy), "{case}: forward");
                        assert!(close(g.get(&x).unwrap(), &wdx), "{case}: input gradient");
                        assert!(close(g.get(&wt).unwrap(), &wdw), "{case}: weight gradient");
                        cases += 1;
                    }
                }
            }
        }
    }
    assert!(cases > 300, "{cases} cases");
}

#[test]
fn mismatched_shapes_are_errors_not_panics() {
    let x = randn(&[2, 3, 8, 8], 1);
    assert!(super::conv::conv2d(&x, &randn(&[4, 2, 3, 3], 2), 1, 1).is_err());
    assert!(super::conv::conv2d(&x, &randn(&[4, 3, 11, 11], 2), 1, 1).is_err());
    assert!(super::conv::conv2d(&randn(&[2, 3, 8], 1), &randn(&[4, 3, 3, 3], 2), 1, 1).is_err());
    assert!(super::conv::conv2d(&x, &randn(&[4, 3, 3, 3], 2), 0, 1).is_err());
    let wt = Var::from_tensor(&randn(&[4, 3, 3, 3], 2)).unwrap();
    let empty = super::conv::conv2d(&randn(&[0, 3, 8, 8], 1), wt.as_tensor(), 1, 1).unwrap();
    assert_eq!(empty.dims(), &[0, 4, 8, 8]);
    let g = empty.sum_all().unwrap().backward().unwrap();
    assert_eq!(
        g.get(&wt)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    let a = randn(&[2, 3], 1);
    assert!(crate::layers::add_relu(&a, &randn(&[3, 2], 2), Kernels::Auto).is_err());
    assert!(super::pool::max_pool_3x3_s2(&a).is_err());
}

#[test]
fn larger_odd_sizes_and_paddings_match_a_direct_convolution() {
    // One thread runs the im2col blocks (of output rows for maps of 64 positions or more, of
    // whole images below) in order, four threads (more than the three images) in parallel:
    // both must match the direct convolution and each other bit for bit.
    let cases = [(10, 10), (11, 13), (10, 17), (16, 9)]
        .map(|hw| (3, hw, 5, 3, 1))
        .into_iter()
        // Strided, as a stage's first convolution (3×3) and its downsample (1×1).
        .chain(
            [(17, 19), (20, 16)]
                .into_iter()
                .flat_map(|hw| [(3, hw, 5, 3, 2), (3, hw, 5, 1, 2)]),
        )
        // Enough channels for the per-image paths to build and multiply im2col in several
        // blocks of output rows, the last one partial, padding rows inside blocks.
        .chain([(3, (22, 19), 128, 3, 1), (3, (40, 38), 128, 3, 2)])
        // Small maps in several blocks of whole images, the last one smaller.
        .chain([(7, (7, 7), 128, 3, 1), (7, (9, 9), 128, 3, 2)]);
    for (nb, (h, w), c, k, stride) in cases {
        for p in 0..=2.min(k) {
            let case = format!("{nb}×{h}×{w} c{c} k{k} s{stride} p{p}");
            let x = Var::from_tensor(&randn(&[nb, c, h, w], (h * 31 + w + p) as u64)).unwrap();
            let wt = Var::from_tensor(&randn(&[4, c, k, k], 77 + p as u64)).unwrap();
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let y = super::conv::conv2d(x.as_tensor(), wt.as_tensor(), stride, p).unwrap();
                    let r = randn(y.dims(), 5);
                    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                    [
                        flat(&y),
                        flat(g.get(&x).unwrap()),
                        flat(g.get(&wt).unwrap()),
                        flat(&r),
                    ]
                })
            };
            let [y, dx, dw, r] = run(1);
            assert_eq!(
                run(4),
                [y.clone(), dx.clone(), dw.clone(), r.clone()],
                "{case}"
            );
            let (wy, wdx, wdw) = naive_conv(
                &flat(x.as_tensor()),
                &flat(wt.as_tensor()),
                &r,
                [nb, c, h, w],
                [4, k],
                stride,
                p,
            );
            for (what, got, want) in [
                ("forward", y, wy),
                ("input gradient", dx, wdx),
                ("weight gradient", dw, wdw),
            ] {
                let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                let err = got
                    .iter()
                    .zip(&want)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    got.len() == want.len() && err <= 1e-5 * scale,
                    "{case} {what}: {err}"
                );
            }
        }
    }
}

#[test]
fn max_pool_matches_a_row_major_scan_with_ties_signed_zeros_and_nans() {
    // Few distinct values so that windows tie; −0 and +0 tie too, and the first one's sign
    // must come out. NaNs propagate, and the first NaN takes the gradient.
    let palette = [0.0f32, -0.0, 1.0, -1.0, 2.0, f32::NAN];
    for (h, w) in [(1, 1), (1, 4), (5, 1), (2, 3), (7, 8), (8, 7), (13, 10)] {
        let n = 2 * 3 * h * w;
        let pick = |seed: u64, nan: bool| -> Vec<f32> {
            let t = randn(&[n], seed).to_vec1::<f32>().unwrap();
            let k = if nan {
                palette.len()
            } else {
                palette.len() - 1
            };
            t.iter()
                .map(|v| palette[((v + 1.5) * 1000.0) as usize % k])
                .collect()
        };
        for nan in [false, true] {
            let xv = pick((h * 16 + w) as u64, nan);
            let x = Var::from_tensor(
                &Tensor::from_vec(xv.clone(), (2, 3, h, w), &Device::Cpu).unwrap(),
            )
            .unwrap();
            let y = super::pool::max_pool_3x3_s2(x.as_tensor()).unwrap();
            let (ho, wo) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
            let gy = randn(&[2, 3, ho, wo], 9);
            let g = (&y * &gy).unwrap().sum_all().unwrap().backward().unwrap();
            let (yv, gyv, dx) = (flat(&y), flat(&gy), flat(g.get(&x).unwrap()));
            let mut want_dx = vec![0f32; n];
            for plane in 0..6 {
                for oy in 0..ho {
                    for ox in 0..wo {
                        // The scan PyTorch's kernel does: the first strictly larger, or NaN.
                        let mut best = None::<usize>;
                        for yy in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h) {
                            for xx in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w) {
                                let i = plane * h * w + yy * w + xx;
                                let better = match best {
                                    None => true,
                                    Some(b) => !xv[b].is_nan() && (xv[i] > xv[b] || xv[i].is_nan()),
                                };
                                if better {
                                    best = Some(i);
                                }
                            }
                        }
                        let (b, k) = (best.unwrap(), (plane * ho + oy) * wo + ox);
                        assert_eq!(yv[k].to_bits(), xv[b].to_bits(), "{h}×{w} output {k}");
                        want_dx[b] += gyv[k];
                    }
                }
            }
            assert_eq!(dx, want_dx, "{h}×{w} nan {nan}");
        }
    }
}
