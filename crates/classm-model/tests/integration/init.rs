//! Seeded initialisation: reproducible from the seed alone, with torchvision's distributions.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use classm_model::{ClassmConfig, ClassmNet, ModelError, ResNet, ResNetConfig, init_seeded};

const ENCODER: ResNetConfig = ResNetConfig {
    depth: 18,
    width: 16,
    in_channels: 1,
};
const CONFIG: ClassmConfig = ClassmConfig {
    encoder: ENCODER,
    classes: 6,
};

fn seeded_net(seed: u64) -> BTreeMap<String, Vec<f32>> {
    let map = VarMap::new();
    ClassmNet::new(
        CONFIG,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )
    .unwrap();
    init_seeded(&map, seed).unwrap();
    values(&map)
}

fn values(map: &VarMap) -> BTreeMap<String, Vec<f32>> {
    map.data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), flat(v.as_tensor())))
        .collect()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / n;
    (m, var.sqrt())
}

#[test]
fn the_seed_alone_decides_every_value() {
    let a = seeded_net(7);
    assert_eq!(a, seeded_net(7));
    let b = seeded_net(8);
    for (name, v) in &a {
        let constant = v.iter().all(|&x| x == v[0]);
        assert_eq!(
            constant,
            v == &b[name],
            "{name}: only constants agree across seeds"
        );
    }
}

#[test]
fn a_variable_does_not_depend_on_which_others_exist() {
    // The H encoder alone, under the same prefix, gets the values it has inside the network.
    let map = VarMap::new();
    ResNet::new(
        ENCODER,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu).pp("h"),
    )
    .unwrap();
    init_seeded(&map, 7).unwrap();
    let alone = values(&map);
    let whole = seeded_net(7);
    assert!(alone.len() > 50);
    for (name, v) in alone {
        assert_eq!(v, whole[&name], "{name}");
    }
}

#[test]
fn distributions_are_torchvisions() {
    let map = VarMap::new();
    ClassmNet::new(
        CONFIG,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )
    .unwrap();
    init_seeded(&map, 3).unwrap();
    let fan_in = ENCODER.features() as f64;
    let mut convs = 0;
    for (name, var) in map.data().lock().unwrap().iter() {
        let dims = var.dims().to_vec();
        let v = flat(var.as_tensor());
        let leaf = name.rsplit('.').next().unwrap();
        let all = |c: f32| v.iter().all(|&x| x == c);
        if dims.len() == 4 {
            // Kaiming normal, fan-out mode: std √(2 / (out·k·k)).
            convs += 1;
            let want = (2.0 / (dims[0] * dims[2] * dims[3]) as f64).sqrt();
            let (m, s) = mean_std(&v);
            let tol = 4.0 / (v.len() as f64).sqrt();
            assert!(m.abs() < tol * want, "{name}: mean {m}");
            assert!(
                (s / want - 1.0).abs() < tol.max(0.02),
                "{name}: std {s}, want {want}"
            );
        } else if name.starts_with("fc.") {
            // PyTorch's Linear: uniform in ±1/√fan_in, so std b/√3.
            let b = 1.0 / fan_in.sqrt();
            assert!(v.iter().all(|&x| f64::from(x).abs() <= b + 1e-7), "{name}");
            assert!(!all(v[0]), "{name} is drawn, not constant");
            if leaf == "weight" {
                let (_, s) = mean_std(&v);
                assert!(
                    (s / (b / 3f64.sqrt()) - 1.0).abs() < 0.05,
                    "{name}: std {s}"
                );
            }
        } else {
            match leaf {
                "running_mean" | "bias" => assert!(all(0.0), "{name}"),
                "running_var" | "weight" => assert!(all(1.0), "{name}"),
                _ => panic!("unexpected variable {name}"),
            }
        }
    }
    assert_eq!(convs, 2 * 20, "two ResNet18 trunks of 20 convolutions each");
}

#[test]
fn a_variable_without_a_rule_is_an_error() {
    let map = VarMap::new();
    VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu)
        .get((2, 3, 4), "odd.scale")
        .unwrap();
    let err = init_seeded(&map, 0).unwrap_err();
    assert!(matches!(err, ModelError::Config(_)), "{err}");
    assert!(err.to_string().contains("odd.scale"), "{err}");
}
