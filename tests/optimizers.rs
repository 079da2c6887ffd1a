//! Optimizers compiled into the step graph: a hand-computed few-step trajectory for
//! each (PyTorch's formulas), and convergence on a small convex problem.

use nnc::runtime::interp::{self, Feeds, Tensor};
use nnc::settings::{Choice, Lit, TrainSettings};
use nnc::train::update::{hyper_values, step_graph};

const MODEL: &str = "model Q {\n input a: [3]\n param w: [3] = zeros, decay = false\n param m: [2, 2] = zeros\n loss = sum(w * a) + 0.5 * sum(w * w) + 0.25 * sum(m * m * m * m)\n}\n";

fn settings(name: &str, args: &[(&str, f64)]) -> TrainSettings {
    TrainSettings {
        optimizer: Choice {
            name: name.into(),
            args: args.iter().map(|(k, v)| (k.to_string(), Lit::Num(*v))).collect(),
        },
        ..TrainSettings::default()
    }
}

/// Runs `steps` steps in the interpreter; returns the trajectory of every parameter.
fn run(s: &TrainSettings, w0: &[f64], m0: &[f64], steps: usize) -> Vec<(Vec<f64>, Vec<f64>)> {
    let prog = nnc::pipeline::compile_source("q.nn", MODEL, None).ok().expect("compiles").programs.remove(0);
    let g = step_graph(&prog.train, s).expect("step graph");
    let lr = s.optimizer.num("lr").expect("lr");
    let mut feeds = Feeds {
        inputs: vec![Tensor::f(vec![3], vec![1.0, -2.0, 0.5])],
        params: vec![w0.to_vec(), m0.to_vec()],
        states: g.states.iter().map(|st| vec![0.0; st.shape.iter().product::<i64>() as usize]).collect(),
        seed: 0,
        step: 0,
    };
    feeds.inputs.extend([Tensor::f(vec![], vec![0.0]), Tensor::f(vec![], vec![0.0]), Tensor::f(vec![], vec![0.0])]);
    let mut out = Vec::new();
    for t in 1..=steps {
        let h = hyper_values(s, lr, t as u64);
        for (k, v) in h.iter().enumerate() {
            feeds.inputs[1 + k] = Tensor::f(vec![], vec![*v]);
        }
        interp::step(&g, &mut feeds).expect("step");
        out.push((feeds.params[0].clone(), feeds.params[1].clone()));
    }
    out
}

/// The gradient of the test objective: dw = a + w, dm = m^3.
fn grads(w: &[f64], m: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let a = [1.0, -2.0, 0.5];
    (w.iter().zip(a).map(|(w, a)| a + w).collect(), m.iter().map(|m| m * m * m).collect())
}

/// Applies an elementwise update rule by hand to both parameters.
fn by_hand(steps: usize, mut rule: impl FnMut(usize, usize, f64, f64) -> f64) -> Vec<(Vec<f64>, Vec<f64>)> {
    let (mut w, mut m) = (vec![0.3, -0.1, 0.2], vec![0.5, -0.4, 0.3, 0.1]);
    let mut out = Vec::new();
    for t in 1..=steps {
        let (gw, gm) = grads(&w, &m);
        for i in 0..3 {
            w[i] = rule(t, i, w[i], gw[i]);
        }
        for i in 0..4 {
            m[i] = rule(t, 100 + i, m[i], gm[i]);
        }
        out.push((w.clone(), m.clone()));
    }
    out
}

fn assert_close(name: &str, got: &[(Vec<f64>, Vec<f64>)], want: &[(Vec<f64>, Vec<f64>)]) {
    for (t, ((gw, gm), (ww, wm))) in got.iter().zip(want).enumerate() {
        for (a, b) in gw.iter().chain(gm).zip(ww.iter().chain(wm)) {
            assert!((a - b).abs() < 1e-12, "{name}: step {} differs: {a} vs {b}", t + 1);
        }
    }
}

const W0: [f64; 3] = [0.3, -0.1, 0.2];
const M0: [f64; 4] = [0.5, -0.4, 0.3, 0.1];

#[test]
fn sgd_trajectory() {
    let got = run(&settings("sgd", &[("lr", 0.1)]), &W0, &M0, 4);
    assert_close("sgd", &got, &by_hand(4, |_, _, w, g| w - 0.1 * g));
}

#[test]
fn momentum_trajectory() {
    let mut v = std::collections::HashMap::new();
    let want = by_hand(4, |_, i, w, g| {
        let vi = v.entry(i).or_insert(0.0);
        *vi = 0.9 * *vi - 0.1 * g;
        w + *vi
    });
    assert_close("momentum", &run(&settings("momentum", &[("lr", 0.1), ("mu", 0.9)]), &W0, &M0, 4), &want);
}

#[test]
fn nesterov_trajectory() {
    let mut b = std::collections::HashMap::new();
    let want = by_hand(4, |_, i, w, g| {
        let bi = b.entry(i).or_insert(0.0);
        *bi = 0.8 * *bi + g;
        w - 0.1 * (g + 0.8 * *bi)
    });
    assert_close("nesterov", &run(&settings("nesterov", &[("lr", 0.1), ("mu", 0.8)]), &W0, &M0, 4), &want);
}

#[test]
fn adagrad_trajectory() {
    let mut s = std::collections::HashMap::new();
    let want = by_hand(4, |_, i, w, g| {
        let si = s.entry(i).or_insert(0.0);
        *si += g * g;
        w - 0.5 * g / (si.sqrt() + 1e-10)
    });
    assert_close("adagrad", &run(&settings("adagrad", &[("lr", 0.5), ("eps", 1e-10)]), &W0, &M0, 4), &want);
}

#[test]
fn rmsprop_trajectory() {
    let mut s = std::collections::HashMap::new();
    let want = by_hand(4, |_, i, w, g| {
        let si = s.entry(i).or_insert(0.0);
        *si = 0.9 * *si + 0.1 * g * g;
        w - 0.01 * g / (si.sqrt() + 1e-8)
    });
    let got = run(&settings("rmsprop", &[("lr", 0.01), ("beta", 0.9), ("eps", 1e-8)]), &W0, &M0, 4);
    assert_close("rmsprop", &got, &want);
}

fn adam_by_hand(wd: f64, decay_m: bool) -> Vec<(Vec<f64>, Vec<f64>)> {
    let (b1, b2, lr, eps) = (0.9, 0.999, 0.01, 1e-8);
    let mut st = std::collections::HashMap::new();
    by_hand(5, |t, i, w, g| {
        // `m` (ids >= 100) decays under adamw; `w` says `decay = false`.
        let w = if wd > 0.0 && (i >= 100) == decay_m { w - lr * wd * w } else { w };
        let (m, v) = st.entry(i).or_insert((0.0, 0.0));
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        let bc1 = 1.0 - b1.powi(t as i32);
        let bc2 = 1.0 - b2.powi(t as i32);
        w - (lr / bc1) * *m / (v.sqrt() / bc2.sqrt() + eps)
    })
}

#[test]
fn adam_trajectory_with_bias_correction() {
    let got = run(&settings("adam", &[("lr", 0.01), ("beta1", 0.9), ("beta2", 0.999), ("eps", 1e-8)]), &W0, &M0, 5);
    assert_close("adam", &got, &adam_by_hand(0.0, true));
}

#[test]
fn adamw_decays_weights_only() {
    let s = settings("adamw", &[("lr", 0.01), ("beta1", 0.9), ("beta2", 0.999), ("eps", 1e-8), ("weight_decay", 0.1)]);
    assert_close("adamw", &run(&s, &W0, &M0, 5), &adam_by_hand(0.1, true));
}

#[test]
fn l2_and_clipping_enter_the_gradient() {
    // l2 on the weight m only (rank 2); clip_value caps every gradient component.
    let mut s = settings("sgd", &[("lr", 0.1)]);
    s.l2 = 0.5;
    s.clip_value = Some(0.05);
    let got = run(&s, &W0, &M0, 3);
    let want = by_hand(3, |_, i, w, g| {
        let g = if i >= 100 { g + 0.5 * w } else { g };
        w - 0.1 * g.clamp(-0.05, 0.05)
    });
    assert_close("l2 + clip_value", &got, &want);
    // clip_norm scales all gradients by min(1, c / (||g|| + 1e-6)).
    let mut s = settings("sgd", &[("lr", 0.1)]);
    s.clip_norm = Some(0.5);
    let got = run(&s, &W0, &M0, 1);
    let (gw, gm) = grads(&W0, &M0);
    let norm = gw.iter().chain(&gm).map(|g| g * g).sum::<f64>().sqrt();
    let f = (0.5 / (norm + 1e-6)).min(1.0);
    let want_w: Vec<f64> = W0.iter().zip(&gw).map(|(w, g)| w - 0.1 * f * g).collect();
    for (a, b) in got[0].0.iter().zip(&want_w) {
        assert!((a - b).abs() < 1e-12);
    }
}

#[test]
fn every_optimizer_converges_on_a_convex_problem() {
    // The objective is minimized at w = -a, m = 0 with value -|a|^2 / 2 = -2.625.
    for (name, args) in [
        ("sgd", vec![("lr", 0.5)]),
        ("momentum", vec![("lr", 0.1), ("mu", 0.9)]),
        ("nesterov", vec![("lr", 0.1), ("mu", 0.9)]),
        ("adagrad", vec![("lr", 0.5)]),
        ("rmsprop", vec![("lr", 0.01)]),
        ("adam", vec![("lr", 0.05)]),
        ("adamw", vec![("lr", 0.05), ("weight_decay", 0.0)]),
    ] {
        let traj = run(&settings(name, &args), &W0, &M0, 400);
        let (w, _) = traj.last().expect("steps");
        let err: f64 = w.iter().zip([-1.0, 2.0, -0.5]).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err < 0.02, "{name} did not converge: w = {w:?}");
    }
}
