//! classm's CPU kernels against candle's ops on the whole CLASS-M network, and their
//! independence from the thread count.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use classm_model::{ClassmConfig, ClassmNet, Kernels, ResNetConfig};

const CONFIG: ClassmConfig = ClassmConfig {
    encoder: ResNetConfig {
        depth: 18,
        width: 8,
        in_channels: 1,
    },
    classes: 3,
};

fn pattern(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n as u64)
        .map(|i| ((i * 2_654_435_761 + seed * 97) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A network whose variables are copies of `like`'s, or a fixed initialisation seeded by
/// each variable's name (candle's generator cannot be seeded, and a HashMap's order changes
/// between processes), with its map.
fn network(like: Option<&VarMap>, kernels: Kernels) -> (VarMap, ClassmNet) {
    let map = VarMap::new();
    let net = ClassmNet::new(
        CONFIG,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )
    .unwrap()
    .with_kernels(kernels);
    for (k, v) in map.data().lock().unwrap().iter() {
        let t = match like {
            Some(like) => like.data().lock().unwrap()[k].as_tensor().copy().unwrap(),
            None => {
                let seed = k
                    .bytes()
                    .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                let dims = v.as_tensor().dims().to_vec();
                let fan_in: usize = dims[1..].iter().product::<usize>().max(1);
                let p = pattern(&dims, seed % 1000);
                if k.ends_with("running_var") {
                    p.affine(0.1, 1.0).unwrap()
                } else if k.ends_with("running_mean") || k.ends_with("bias") {
                    (p * 0.1).unwrap()
                } else if dims.len() == 1 {
                    p.affine(0.2, 1.0).unwrap()
                } else {
                    (p * (3.0 / fan_in as f64).sqrt()).unwrap()
                }
            }
        };
        v.set(&t).unwrap();
    }
    (map, net)
}

/// Outputs, then the gradient of every variable and of both inputs after one training
/// forward and backward, then the running statistics, by name.
fn train_step(map: &VarMap, net: &ClassmNet) -> BTreeMap<String, Tensor> {
    step_with(map, net, false)
}

/// As [`train_step`], through `forward_train` and its split backward when `split`.
fn step_with(map: &VarMap, net: &ClassmNet, split: bool) -> BTreeMap<String, Tensor> {
    let h = Var::from_tensor(&pattern(&[4, 1, 40, 40], 1)).unwrap();
    let e = Var::from_tensor(&pattern(&[4, 1, 40, 40], 2)).unwrap();
    let pass = split.then(|| net.forward_train(h.as_tensor(), e.as_tensor()).unwrap());
    let out = match &pass {
        Some(p) => p.out.clone(),
        None => net.forward_t(h.as_tensor(), e.as_tensor(), true).unwrap(),
    };
    let loss = ((out.logits.clone() * pattern(&[4, 3], 3))
        .unwrap()
        .sum_all()
        .unwrap()
        + (out.z_h.clone() * pattern(&[4, 64], 4))
            .unwrap()
            .sum_all()
            .unwrap()
        + (out.z_e.clone() * pattern(&[4, 64], 5))
            .unwrap()
            .sum_all()
            .unwrap())
    .unwrap();
    let grads = match &pass {
        Some(p) => p.backward(&loss).unwrap(),
        None => loss.backward().unwrap(),
    };
    let mut all = BTreeMap::new();
    all.insert("out.logits".into(), out.logits);
    all.insert("out.z_h".into(), out.z_h);
    all.insert("out.z_e".into(), out.z_e);
    all.insert("grad.input.h".into(), grads.get(&h).unwrap().clone());
    all.insert("grad.input.e".into(), grads.get(&e).unwrap().clone());
    for (k, v) in map.data().lock().unwrap().iter() {
        let t = if k.contains("running_") {
            v.as_tensor().copy().unwrap()
        } else {
            grads
                .get(v)
                .unwrap_or_else(|| panic!("no gradient for {k}"))
                .clone()
        };
        all.insert(k.clone(), t);
    }
    let eval = net.forward_t(h.as_tensor(), e.as_tensor(), false).unwrap();
    all.insert("eval.logits".into(), eval.logits);
    all.insert("eval.z_h".into(), eval.z_h);
    all
}

#[test]
fn cpu_kernels_match_candle_on_the_whole_network() {
    let (map_a, net_a) = network(None, Kernels::Auto);
    let (map_b, net_b) = network(Some(&map_a), Kernels::Candle);
    let a = train_step(&map_a, &net_a);
    let b = train_step(&map_b, &net_b);
    assert_eq!(a.len(), b.len());
    // Each kernel agrees with candle to 1e-5 (unit tests); through twenty layers of
    // train-mode BatchNorm the different summation orders compound, to 1.7e-5 at worst with
    // this initialisation.
    for (k, ta) in &a {
        super::golden::assert_close(ta, &b[k], 2e-4, k);
    }
}

#[test]
fn cpu_kernels_give_the_same_bits_on_one_and_two_threads() {
    let (map_1, net_1) = network(None, Kernels::Auto);
    let (map_2, net_2) = network(Some(&map_1), Kernels::Auto);
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one = pool(1).install(|| train_step(&map_1, &net_1));
    let two = pool(2).install(|| train_step(&map_2, &net_2));
    for (k, t) in &one {
        let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(bits(t), bits(&two[k]), "{k}");
    }
}

#[test]
fn the_split_backward_gives_the_same_bits_as_one_backward() {
    for threads in [1, 2] {
        let (map_a, net_a) = network(None, Kernels::Auto);
        let (map_b, net_b) = network(Some(&map_a), Kernels::Auto);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let one = pool.install(|| step_with(&map_a, &net_a, false));
        let split = pool.install(|| step_with(&map_b, &net_b, true));
        assert_eq!(one.len(), split.len());
        for (k, t) in &one {
            let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(bits(t), bits(&split[k]), "{k}, {threads} thread(s)");
        }
    }
}
