use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use classm_model::{
    ClassmConfig, ClassmNet, ModelConfig, ModelError, ResNet, ResNetConfig, load_model_dir,
    load_resnet, read_safetensors, save_model_dir,
};

const NARROW: ResNetConfig = ResNetConfig {
    depth: 18,
    width: 8,
    in_channels: 1,
};

/// A checkpoint laid out like timm's or torchvision's `resnet18` (3-channel stem, ImageNet fc,
/// `num_batches_tracked`), at width `w`.
fn imagenet_like(w: usize) -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let map = VarMap::new();
    let cfg = ResNetConfig {
        width: w,
        in_channels: 3,
        ..NARROW
    };
    ResNet::new(cfg, VarBuilder::from_varmap(&map, DType::F32, &dev)).unwrap();
    let mut out: HashMap<String, Tensor> = map
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    out.insert(
        "fc.weight".into(),
        Tensor::zeros((1000, 8 * w), DType::F32, &dev).unwrap(),
    );
    out.insert(
        "fc.bias".into(),
        Tensor::zeros(1000, DType::F32, &dev).unwrap(),
    );
    out.insert(
        "bn1.num_batches_tracked".into(),
        Tensor::new(&[7i64], &dev).unwrap().squeeze(0).unwrap(),
    );
    out
}

fn classm(map: &VarMap) -> ClassmNet {
    let cfg = ClassmConfig {
        encoder: NARROW,
        classes: 3,
    };
    ClassmNet::new(cfg, VarBuilder::from_varmap(map, DType::F32, &Device::Cpu)).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn imagenet_weights_load_by_name_with_the_stem_summed_over_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let ckpt = imagenet_like(8);
    candle_core::safetensors::save(&ckpt, &path).unwrap();
    let ckpt = read_safetensors(&path).unwrap();

    let map = VarMap::new();
    let _net = classm(&map);
    for prefix in ["h.", "e."] {
        let r = load_resnet(&map, prefix, &ckpt).unwrap();
        assert!(r.stem_summed);
        assert_eq!(
            r.loaded,
            ckpt.len() - 3,
            "every trunk tensor, not fc or counters"
        );
        assert_eq!(
            r.ignored,
            ["bn1.num_batches_tracked", "fc.bias", "fc.weight"]
        );
    }
    let vars = map.data().lock().unwrap();
    let stem = ckpt["conv1.weight"].sum_keepdim(1).unwrap();
    assert_eq!(max_diff(vars["h.conv1.weight"].as_tensor(), &stem), 0.0);
    assert_eq!(
        max_diff(
            vars["e.layer4.1.bn2.running_var"].as_tensor(),
            &ckpt["layer4.1.bn2.running_var"]
        ),
        0.0
    );
}

#[test]
fn checkpoint_problems_are_named() {
    let map = VarMap::new();
    let _net = classm(&map);
    let mut ckpt = imagenet_like(8);
    ckpt.remove("layer2.0.downsample.0.weight");
    match load_resnet(&map, "h.", &ckpt) {
        Err(ModelError::MissingTensor { name }) => assert_eq!(name, "layer2.0.downsample.0.weight"),
        other => panic!("{other:?}"),
    }
    match load_resnet(&map, "h.", &imagenet_like(16)) {
        Err(ModelError::ShapeMismatch {
            name,
            expected,
            found,
        }) => {
            assert_eq!(name, "bn1.bias");
            assert_eq!((expected, found), (vec![8], vec![16]));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        load_resnet(&map, "x.", &imagenet_like(8)),
        Err(ModelError::Config(_))
    ));

    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        read_safetensors(&dir.path().join("absent.safetensors")),
        Err(ModelError::Io { .. })
    ));
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").unwrap();
    let err = read_safetensors(&junk).unwrap_err();
    assert!(
        matches!(&err, ModelError::File { .. }) && err.to_string().contains("junk.safetensors"),
        "{err}"
    );
}

#[test]
fn a_model_directory_reloads_to_the_same_outputs() {
    let dev = Device::Cpu;
    let map = VarMap::new();
    let net = classm(&map);
    let config = ModelConfig {
        format: classm_model::MODEL_FORMAT.into(),
        network: net.config(),
        class_names: vec!["normal".into(), "cancer".into(), "necrosis".into()],
        input_size: 32,
        mean: [0.17, 0.25],
        std: [0.19, 0.15],
        views: "stains".into(),
        stain: Some(serde_json::json!({"convention": "classm"})),
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run/model");
    save_model_dir(&out, &map, &config).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["config.json", "model.safetensors"],
        "no temporary files left"
    );

    let (loaded, cfg) = load_model_dir(&out, &dev).unwrap();
    assert_eq!(cfg, config);
    let x = Tensor::randn(0f32, 1f32, (2, 1, 32, 32), &dev).unwrap();
    let a = net.forward_t(&x, &x, false).unwrap();
    let b = loaded.forward_t(&x, &x, false).unwrap();
    assert_eq!(max_diff(&a.logits, &b.logits), 0.0);
    assert_eq!(max_diff(&a.z_e, &b.z_e), 0.0);

    let bad = ModelConfig {
        class_names: vec!["one".into()],
        ..config.clone()
    };
    assert!(save_model_dir(&dir.path().join("bad"), &map, &bad).is_err());
    std::fs::remove_file(out.join("model.safetensors")).unwrap();
    assert!(matches!(
        load_model_dir(&out, &dev),
        Err(ModelError::Io { .. })
    ));
}
