use candle_core::{Device, Tensor, Var};
use classm_losses::{
    AdamW, AdamWParams, Ema, MixUp, Optimizer, ReduceLrOnPlateau, Reduction, RmsProp,
    RmsPropParams, interleave, mse_probabilities, sharpen, soft_cross_entropy, triplet_roll,
};

use crate::device_test;
use crate::support::{assert_close, golden};

const TOL: f64 = 1e-4;

device_test!(soft_cross_entropy_and_its_gradient, |dev: &Device| {
    let g = golden(dev);
    let z = Var::from_tensor(&g["ce.logits"]).unwrap();
    let loss = soft_cross_entropy(z.as_tensor(), &g["ce.targets"]).unwrap();
    assert_close(&loss.reshape(1).unwrap(), &g["ce.loss"], TOL, "Lx");
    let grads = loss.backward().unwrap();
    assert_close(grads.get(&z).unwrap(), &g["ce.grad"], TOL, "dLx/dz");
});

device_test!(probability_mse_and_its_gradient, |dev: &Device| {
    let g = golden(dev);
    let z = Var::from_tensor(&g["mse.logits"]).unwrap();
    let loss = mse_probabilities(z.as_tensor(), &g["mse.targets"]).unwrap();
    assert_close(&loss.reshape(1).unwrap(), &g["mse.loss"], TOL, "Lu");
    let grads = loss.backward().unwrap();
    assert_close(grads.get(&z).unwrap(), &g["mse.grad"], TOL, "dLu/dz");
});

device_test!(sharpening, |dev: &Device| {
    let g = golden(dev);
    assert_close(
        &sharpen(&g["sharpen.p"], 0.5).unwrap(),
        &g["sharpen.q"],
        TOL,
        "sharpen",
    );
});

device_test!(mixup_with_a_given_lambda_and_permutation, |dev: &Device| {
    let g = golden(dev);
    let perm: Vec<u32> = g["mixup.perm"]
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&v| v as u32)
        .collect();
    let lambda = f64::from(g["mixup.lambda"].to_vec1::<f32>().unwrap()[0]);
    let m = MixUp { lambda, perm };
    assert_close(
        &m.apply(&g["mixup.x"]).unwrap(),
        &g["mixup.x_mixed"],
        TOL,
        "mixed x",
    );
    assert_close(
        &m.apply(&g["mixup.t"]).unwrap(),
        &g["mixup.t_mixed"],
        TOL,
        "mixed targets",
    );
});

device_test!(
    interleave_matches_mixmatch_and_undoes_itself,
    |dev: &Device| {
        let g = golden(dev);
        let all = Tensor::arange(0f32, 95f32, dev)
            .unwrap()
            .reshape((95, 1))
            .unwrap();
        let chunks: Vec<Tensor> = (0..3)
            .map(|i| all.narrow(0, 33 * i, if i < 2 { 33 } else { 29 }).unwrap())
            .collect();
        let out = interleave(&chunks, 33).unwrap();
        for (i, c) in out.iter().enumerate() {
            assert_close(c, &g[&format!("interleave.out{i}")], 0.0, "interleave");
        }
        let back = interleave(&out, 33).unwrap();
        for (a, b) in back.iter().zip(&chunks) {
            assert_close(a, b, 0.0, "interleave twice");
        }
    }
);

device_test!(triplet_loss_sum_and_mean_with_gradients, |dev: &Device| {
    let g = golden(dev);
    for (red, name) in [(Reduction::Sum, "sum"), (Reduction::Mean, "mean")] {
        let h = Var::from_tensor(&g["triplet.h"]).unwrap();
        let e = Var::from_tensor(&g["triplet.e"]).unwrap();
        let loss = triplet_roll(h.as_tensor(), e.as_tensor(), 5.0, red).unwrap();
        assert_close(
            &loss.reshape(1).unwrap(),
            &g[&format!("triplet.{name}.loss")],
            TOL,
            name,
        );
        let grads = loss.backward().unwrap();
        assert_close(
            grads.get(&h).unwrap(),
            &g[&format!("triplet.{name}.grad_h")],
            TOL,
            "grad h",
        );
        assert_close(
            grads.get(&e).unwrap(),
            &g[&format!("triplet.{name}.grad_e")],
            TOL,
            "grad e",
        );
    }
});

fn run_optimizer(dev: &Device, prefix: &str, make: impl Fn(Var) -> Box<dyn Optimizer>) {
    let g = golden(dev);
    let w = Var::from_tensor(&g["optim.w0"]).unwrap();
    let mut opt = make(w.clone());
    for k in 0..5 {
        opt.step_with(&[Some(g[&format!("optim.grad{k}")].clone())])
            .unwrap();
        assert_close(
            w.as_tensor(),
            &g[&format!("{prefix}.w{k}")],
            TOL,
            &format!("{prefix} step {k}"),
        );
    }
}

const RMS: RmsPropParams = RmsPropParams {
    lr: 1e-2,
    alpha: 0.99,
    eps: 1e-8,
    weight_decay: 1e-3,
    momentum: 0.9,
};

device_test!(rmsprop_steps_match_torch, |dev: &Device| {
    // The fused CPU loop (or tensor ops on a GPU), and tensor ops everywhere.
    run_optimizer(dev, "rmsprop", |w| {
        Box::new(RmsProp::new(vec![w], RMS).unwrap())
    });
    run_optimizer(dev, "rmsprop", |w| {
        Box::new(RmsProp::with_tensor_ops(vec![w], RMS).unwrap())
    });
});

/// Two steps, a checkpoint of the weights and optimiser state, a fresh optimiser that loads
/// it, three more steps: the same weights as five uninterrupted torch steps.
fn resume_optimizer(dev: &Device, prefix: &str, make: impl Fn(Var) -> Box<dyn Optimizer>) {
    let g = golden(dev);
    let w = Var::from_tensor(&g["optim.w0"]).unwrap();
    let mut opt = make(w.clone());
    for k in 0..2 {
        opt.step_with(&[Some(g[&format!("optim.grad{k}")].clone())])
            .unwrap();
    }
    let state: std::collections::HashMap<String, Tensor> =
        opt.state().unwrap().into_iter().collect();
    let saved = w.as_tensor().copy().unwrap();
    let w2 = Var::from_tensor(&saved).unwrap();
    let mut resumed = make(w2.clone());
    resumed.load_state(&state).unwrap();
    for k in 2..5 {
        resumed
            .step_with(&[Some(g[&format!("optim.grad{k}")].clone())])
            .unwrap();
    }
    assert_close(
        w2.as_tensor(),
        &g[&format!("{prefix}.w4")],
        TOL,
        &format!("{prefix} resumed"),
    );
    let mut wrong = make(Var::from_tensor(&g["optim.w0"]).unwrap());
    let mut bad = state.clone();
    bad.retain(|k, _| k != "step" && !k.ends_with(".0"));
    assert!(
        wrong.load_state(&bad).is_err(),
        "a state without the parameter's entries is refused"
    );
}

device_test!(optimizer_state_resumes_exactly, |dev: &Device| {
    resume_optimizer(dev, "rmsprop", |w| {
        Box::new(RmsProp::new(vec![w], RMS).unwrap())
    });
    resume_optimizer(dev, "rmsprop", |w| {
        Box::new(RmsProp::with_tensor_ops(vec![w], RMS).unwrap())
    });
    let adamw = AdamWParams {
        lr: 1e-2,
        weight_decay: 0.05,
        ..AdamWParams::default()
    };
    resume_optimizer(dev, "adamw", |w| {
        Box::new(AdamW::new(vec![w], adamw).unwrap())
    });
    resume_optimizer(dev, "adamw", |w| {
        Box::new(AdamW::with_tensor_ops(vec![w], adamw).unwrap())
    });
});

device_test!(adamw_steps_match_torch, |dev: &Device| {
    let p = AdamWParams {
        lr: 1e-2,
        weight_decay: 0.05,
        ..AdamWParams::default()
    };
    // The fused CPU loop (or tensor ops on a GPU), and tensor ops everywhere.
    run_optimizer(dev, "adamw", |w| Box::new(AdamW::new(vec![w], p).unwrap()));
    run_optimizer(dev, "adamw", |w| {
        Box::new(AdamW::with_tensor_ops(vec![w], p).unwrap())
    });
});

device_test!(ema_and_live_decay_match_weight_ema, |dev: &Device| {
    let g = golden(dev);
    let live = Var::from_tensor(&g["ema.live0"]).unwrap();
    let mut ema = Ema::from_shadow(vec![g["ema.init"].clone()], 0.9, 2e-3);
    for k in 0..4 {
        live.set(&g[&format!("ema.live_in{k}")]).unwrap();
        ema.step(std::slice::from_ref(&live)).unwrap();
        assert_close(&ema.shadow()[0], &g[&format!("ema.ema{k}")], TOL, "ema");
        assert_close(
            live.as_tensor(),
            &g[&format!("ema.live{}", k + 1)],
            TOL,
            "live decay",
        );
    }
});

#[test]
fn plateau_schedule_matches_torch() {
    let g = golden(&Device::Cpu);
    let metrics = g["plateau.metrics"].to_vec1::<f32>().unwrap();
    let want = g["plateau.lrs"].to_vec1::<f32>().unwrap();
    let mut s = ReduceLrOnPlateau::new(0.9, 2);
    let mut lr = 1.0;
    for (m, w) in metrics.iter().zip(want) {
        lr = s.step(f64::from(*m), lr);
        assert!((lr - f64::from(w)).abs() < 1e-6, "lr {lr} vs {w}");
    }
}
