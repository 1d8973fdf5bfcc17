use std::collections::HashMap;

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use classm_model::{ClassmConfig, ClassmNet, ResNet, ResNetConfig};

fn golden(dev: &Device) -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/golden.safetensors"
    );
    candle_core::safetensors::load(path, dev).unwrap()
}

pub(crate) fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let a = a
        .flatten_all()
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = b
        .flatten_all()
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        f64::from(err) <= tol * f64::from(scale),
        "{what}: max error {err:e} (scale {scale:e})"
    );
}

/// Sets every variable of `map` from `g[prefix + name]`; the names must match exactly, both
/// ways (PyTorch's names are the contract): `modules` are the state-dict prefixes under `prefix`.
fn load(map: &VarMap, g: &HashMap<String, Tensor>, prefix: &str, modules: &[&str]) {
    let vars = map.data().lock().unwrap();
    let theirs = g
        .keys()
        .filter(|k| {
            modules
                .iter()
                .any(|m| k.starts_with(&format!("{prefix}{m}")))
        })
        .count();
    assert_eq!(
        vars.len(),
        theirs,
        "variable count vs torch's state dict under {prefix}"
    );
    for (name, var) in vars.iter() {
        let t = g
            .get(&format!("{prefix}{name}"))
            .unwrap_or_else(|| panic!("torch has no {name}"));
        var.set(t).unwrap();
    }
}

const TOL: f64 = 1e-4;
const NARROW: ResNetConfig = ResNetConfig {
    depth: 18,
    width: 8,
    in_channels: 1,
};

/// Runs `$body(&Device)` on the CPU and, in a `cuda` build, on GPU 0.
macro_rules! device_test {
    ($name:ident, $body:expr) => {
        #[test]
        fn $name() {
            let run: fn(&Device) = $body;
            run(&Device::Cpu);
            #[cfg(feature = "cuda")]
            run(&Device::new_cuda(0).expect("CUDA device 0"));
        }
    };
}

device_test!(
    resnet_train_forward_backward_running_stats_and_eval_match_torch,
    |dev: &Device| {
        let dev = dev.clone();
        let g = golden(&dev);
        let map = VarMap::new();
        let net = ResNet::new(NARROW, VarBuilder::from_varmap(&map, DType::F32, &dev)).unwrap();
        load(&map, &g, "init.", &["conv1.", "bn1.", "layer"]);

        let x = Var::from_tensor(&g["x"]).unwrap();
        let f = net.forward_t(x.as_tensor(), true).unwrap();
        assert_close(&f, &g["train.features"], TOL, "train-mode features");
        let loss = f
            .matmul(&g["proj"].unsqueeze(1).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        assert_close(grads.get(&x).unwrap(), &g["train.grad_x"], TOL, "d/dx");
        let vars = map.data().lock().unwrap().clone();
        for (name, key) in [
            ("conv1.weight", "train.grad_conv1"),
            (
                "layer3.0.downsample.0.weight",
                "train.grad_layer3.0.downsample.0",
            ),
            ("bn1.weight", "train.grad_bn1.weight"),
        ] {
            assert_close(grads.get(&vars[name]).unwrap(), &g[key], TOL, name);
        }
        for (name, var) in &vars {
            if name.contains("running_") {
                assert_close(
                    var.as_tensor(),
                    &g[&format!("after_train.{name}")],
                    TOL,
                    name,
                );
            }
        }
        let f = net.forward_t(&g["x"], false).unwrap();
        assert_close(&f, &g["eval.features"], TOL, "eval-mode features");
    }
);

device_test!(classm_head_matches_torch_in_both_modes, |dev: &Device| {
    let dev = dev.clone();
    let g = golden(&dev);
    let map = VarMap::new();
    let cfg = ClassmConfig {
        encoder: NARROW,
        classes: 3,
    };
    let net = ClassmNet::new(cfg, VarBuilder::from_varmap(&map, DType::F32, &dev)).unwrap();
    load(&map, &g, "classm.", &["h.", "e.", "fc.", "bn_h.", "bn_e."]);
    let out = net
        .forward_t(&g["classm.xh"], &g["classm.xe"], true)
        .unwrap();
    assert_close(&out.logits, &g["classm.train.logits"], TOL, "train logits");
    assert_close(&out.z_h, &g["classm.train.zh"], TOL, "z_h");
    assert_close(&out.z_e, &g["classm.train.ze"], TOL, "z_e");
    let vars = map.data().lock().unwrap().clone();
    assert_close(
        vars["bn_h.running_mean"].as_tensor(),
        &g["classm.after.bn_h.running_mean"],
        TOL,
        "bn_h mean",
    );
    assert_close(
        vars["bn_h.running_var"].as_tensor(),
        &g["classm.after.bn_h.running_var"],
        TOL,
        "bn_h var",
    );
    let out = net
        .forward_t(&g["classm.xh"], &g["classm.xe"], false)
        .unwrap();
    assert_close(&out.logits, &g["classm.eval.logits"], TOL, "eval logits");
    assert_close(&out.z_h, &g["classm.eval.zh"], TOL, "eval z_h");
});

#[test]
fn invalid_configurations_are_errors() {
    let dev = Device::Cpu;
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
    for bad in [
        ResNetConfig {
            depth: 50,
            ..NARROW
        },
        ResNetConfig { width: 0, ..NARROW },
    ] {
        assert!(ResNet::new(bad, vb.clone()).is_err(), "{bad:?}");
    }
    let deep = ResNet::new(
        ResNetConfig {
            depth: 34,
            ..NARROW
        },
        vb.pp("r34"),
    )
    .unwrap();
    let f = deep
        .forward_t(
            &Tensor::zeros((2, 1, 40, 40), DType::F32, &dev).unwrap(),
            false,
        )
        .unwrap();
    assert_eq!(f.dims(), &[2, 64]);
}
