use classm_data::augment::{Placement, center_offset};
use classm_data::{
    AugmentConfig, Normalization, Pipeline, SampleKey, Scratch, Unmixer, Views, read_rgb8,
};

use crate::support::mini;

fn patch() -> image::RgbImage {
    read_rgb8(&mini().samples[0].path).unwrap().image
}

fn separated(rgb: &image::RgbImage, u: &Unmixer) -> (Vec<f32>, Vec<f32>) {
    let n = (rgb.width() * rgb.height()) as usize;
    let (mut h, mut e) = (vec![0f32; n], vec![0f32; n]);
    u.separate_into(rgb.as_raw(), &mut h, &mut e);
    (h, e)
}

fn key(draw: u64, view: u64) -> SampleKey {
    SampleKey {
        seed: 11,
        epoch: 2,
        draw,
        view,
    }
}

#[test]
fn eval_is_the_normalised_centre_crop_of_the_separated_maps() {
    let rgb = patch();
    let u = Unmixer::paper_fixed();
    let (h, e) = separated(&rgb, &u);
    let cfg = AugmentConfig::scaled(224, false);
    assert_eq!((cfg.center_crop, cfg.crop), (Some(158), 136));
    let norm = Normalization::paper();
    let p = Pipeline::new(cfg.clone(), norm).unwrap();
    let s = cfg.crop as usize;
    let (mut oh, mut oe) = (vec![0f32; s * s], vec![0f32; s * s]);
    p.eval_into(&rgb, &u, &mut Scratch::default(), &mut oh, &mut oe);
    let off = center_offset(224, cfg.crop) as usize;
    for i in 0..s {
        for j in 0..s {
            let src = (off + i) * 224 + off + j;
            assert_eq!(oh[i * s + j], (h[src] - norm.mean[0]) * (1.0 / norm.std[0]));
            assert_eq!(oe[i * s + j], (e[src] - norm.mean[1]) * (1.0 / norm.std[1]));
        }
    }
}

#[test]
fn training_draws_are_keyed_and_channels_independent() {
    let rgb = patch();
    let u = Unmixer::paper_fixed();
    let p = Pipeline::new(AugmentConfig::scaled(224, false), Normalization::paper()).unwrap();
    let s = p.config().out_pixels();
    let run = |k: SampleKey| {
        let (mut h, mut e) = (vec![0f32; s], vec![0f32; s]);
        p.train_into(&rgb, &u, k, &mut Scratch::default(), &mut h, &mut e);
        (h, e)
    };
    let a = run(key(5, 0));
    assert_eq!(a, run(key(5, 0)), "same key, same output");
    assert_ne!(a, run(key(5, 1)), "another view differs");
    assert_ne!(a, run(key(6, 0)), "another draw differs");
    assert!(a.0.iter().chain(&a.1).all(|v| v.is_finite()));
    // H and E are rotated independently: their zero-fill corners differ.
    let fill = |m: &[f32], k: usize| {
        let f = -Normalization::paper().mean[k] / Normalization::paper().std[k];
        m.iter().map(|&v| (v == f) as u8).collect::<Vec<_>>()
    };
    let differ = (0..20).any(|d| {
        let (h, e) = run(key(d, 0));
        fill(&h, 0) != fill(&e, 1)
    });
    assert!(differ);
}

#[test]
fn without_random_steps_training_is_a_crop_at_the_drawn_offset() {
    let rgb = patch();
    let u = Unmixer::paper_fixed();
    let (h, _) = separated(&rgb, &u);
    let cfg = AugmentConfig {
        jitter: None,
        channel_brightness: None,
        rotate: false,
        center_crop: None,
        crop: 100,
        flips: false,
        ..AugmentConfig::paper()
    };
    let p = Pipeline::new(cfg, Normalization::identity()).unwrap();
    let (mut oh, mut oe) = (vec![0f32; 10_000], vec![0f32; 10_000]);
    p.train_into(
        &rgb,
        &u,
        key(1, 0),
        &mut Scratch::default(),
        &mut oh,
        &mut oe,
    );
    // Find the offset: the output must be an exact window of the map.
    let found = (0..=124)
        .flat_map(|t| (0..=124).map(move |l| (t, l)))
        .any(|(t, l)| {
            (0..100).all(|i| {
                oh[i * 100..(i + 1) * 100] == h[(t + i) * 224 + l..(t + i) * 224 + l + 100]
            })
        });
    assert!(found);
}

#[test]
fn rgb_views_use_raw_channels() {
    let rgb = patch();
    let cfg = AugmentConfig {
        views: Views::RedBlue,
        ..AugmentConfig::scaled(224, false)
    };
    let p = Pipeline::new(cfg, Normalization::identity()).unwrap();
    let s = p.config().crop as usize;
    let (mut oh, mut oe) = (vec![0f32; s * s], vec![0f32; s * s]);
    p.eval_into(
        &rgb,
        &Unmixer::paper_fixed(),
        &mut Scratch::default(),
        &mut oh,
        &mut oe,
    );
    let off = center_offset(224, s as u32);
    let px = rgb.get_pixel(off as u32, off as u32).0;
    assert_eq!(oh[0], px[0] as f32 / 255.0);
    assert_eq!(oe[0], px[2] as f32 / 255.0);
}

#[test]
fn paper_sizes_pad_small_patches_like_torchvision() {
    // 224 px patches under the paper's 282 centre crop: the crop pads with zeros.
    let rgb = patch();
    let p = Pipeline::new(AugmentConfig::paper(), Normalization::identity()).unwrap();
    let (mut oh, mut oe) = (vec![0f32; 256 * 256], vec![0f32; 256 * 256]);
    p.train_into(
        &rgb,
        &Unmixer::paper_fixed(),
        key(3, 0),
        &mut Scratch::default(),
        &mut oh,
        &mut oe,
    );
    let zeros = oh.iter().filter(|&&v| v == 0.0).count();
    assert!(zeros >= 256 * 256 - 224 * 224, "{zeros}");
    // Resizing first gives the paper's geometry on the same patch.
    let cfg = AugmentConfig {
        resize: Some(400),
        ..AugmentConfig::paper()
    };
    let p = Pipeline::new(cfg, Normalization::identity()).unwrap();
    p.eval_into(
        &rgb,
        &Unmixer::paper_fixed(),
        &mut Scratch::default(),
        &mut oh,
        &mut oe,
    );
    assert!(oh.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn invalid_configurations_are_rejected() {
    let bad = [
        AugmentConfig {
            crop: 0,
            ..AugmentConfig::paper()
        },
        AugmentConfig {
            center_crop: Some(200),
            ..AugmentConfig::paper()
        },
        AugmentConfig {
            jitter: Some([0.1, f32::NAN, 0.1]),
            ..AugmentConfig::paper()
        },
        AugmentConfig {
            channel_brightness: Some(1.5),
            ..AugmentConfig::paper()
        },
    ];
    for cfg in bad {
        assert!(Pipeline::new(cfg, Normalization::paper()).is_err());
    }
    let zero_std = Normalization {
        mean: [0.0; 2],
        std: [0.0, 1.0],
    };
    assert!(Pipeline::new(AugmentConfig::paper(), zero_std).is_err());
}

#[test]
fn placement_draws_stay_inside_the_centre_crop() {
    let mut rng = classm_data::rng::derive(1, classm_data::rng::Stream::First, &[]);
    for _ in 0..200 {
        let p = Placement::draw(400, 400, true, Some(282), 256, true, &mut rng);
        assert!(
            (59..=59 + 26).contains(&p.top) && (59..=59 + 26).contains(&p.left),
            "{p:?}"
        );
        assert!((-360.0..360.0).contains(&p.angle_deg));
    }
}
