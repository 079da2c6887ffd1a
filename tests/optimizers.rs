//! Optimizers compiled into the step graph: a hand-computed few-step trajectory for
//! each (PyTorch's formulas), and convergence on a small convex problem.

use nnc::internals::optim::update::{hyper_values, step_graph};
use nnc::internals::runtime::interp::{self, Feeds, Tensor};
use nnc::internals::settings::{Choice, Lit, TrainSettings};

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
    let prog = nnc::internals::pipeline::compile_source("q.nn", MODEL, None).expect("compiles").programs.remove(0);
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

// ---------------------------------------------------------------------------------------
// Second-order methods (BFGS, Newton, Newton-CG) and L-BFGS on the model's own compiled
// pieces: the objective-and-gradient graph and the Hessian-vector graph the session
// compiles, run in the f64 interpreter so that convergence is seen down to rounding.

use nnc::internals::optim::second_order::{self, Iterate, Method, Objective};

/// A model's full-batch objective in f64: the host optimizers' step graph and the
/// Hessian-vector graph, with the data fed once.
struct Interp64 {
    obj: nnc::internals::ir::Graph,
    hvp: nnc::internals::ir::Graph,
    data: Vec<Tensor<f64>>,
    shapes: Vec<Vec<usize>>,
    evals: usize,
}

impl Interp64 {
    fn new(src: &str, l2: f64, data: Vec<Tensor<f64>>) -> (Interp64, Vec<f64>) {
        let prog = nnc::internals::pipeline::compile_source("m.nn", src, None).expect("compiles").programs.remove(0);
        let s = TrainSettings { l2, ..TrainSettings::default() };
        let obj = nnc::internals::train::session::objective_graph(&prog.train, &s).expect("objective graph");
        let hvp = nnc::internals::train::session::hvp_graph(&prog.train, &s).expect("hvp graph");
        let shapes = prog.train.params.iter().map(|p| p.shape.iter().map(|&d| d as usize).collect()).collect();
        let x0 = nnc::internals::runtime::init::init_all(&prog.train, 1).0.concat();
        (Interp64 { obj, hvp, data, shapes, evals: 0 }, x0)
    }

    fn split(&self, x: &[f64]) -> Vec<Vec<f64>> {
        let mut at = 0;
        self.shapes
            .iter()
            .map(|s| {
                let n: usize = s.iter().product();
                at += n;
                x[at - n..at].to_vec()
            })
            .collect()
    }
}

impl Objective for Interp64 {
    fn eval(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>), String> {
        self.evals += 1;
        let feeds = Feeds { inputs: self.data.clone(), params: self.split(x), states: vec![], seed: 0, step: 0 };
        let r = interp::run(&self.obj, &feeds)?;
        let f = r.get(self.obj.outputs[0].1).floats()[0];
        let grads = self.obj.outputs.iter().filter(|(n, _)| n.starts_with("grad."));
        let g = grads.flat_map(|(_, v)| r.get(*v).floats().to_vec()).collect();
        Ok((f, g))
    }
    fn hvp(&mut self, x: &[f64], v: &[f64]) -> Result<Vec<f64>, String> {
        let mut inputs = self.data.clone();
        for (vp, s) in self.split(v).into_iter().zip(&self.shapes) {
            inputs.push(Tensor::f(s.clone(), vp));
        }
        let feeds = Feeds { inputs, params: self.split(x), states: vec![], seed: 0, step: 0 };
        let r = interp::run(&self.hvp, &feeds)?;
        Ok(self.hvp.outputs.iter().flat_map(|(_, v)| r.get(*v).floats().to_vec()).collect())
    }
}

/// Logistic regression on 3 features (every parameter decays, so with l2 > 0 the
/// objective is strongly convex: one optimum).
const LOGISTIC: &str = "model L {\n input x: [B, 3]\n input y: [B]\n param w: [3] = zeros\n param b: [] = zeros\n loss = bce_logits(x @ w + b, y)\n}\n";
/// A 2-4-1 tanh MLP (17 parameters, every one decaying; one logit, so that no direction
/// leaves the loss unchanged, as a shift of every class's logit does under softmax).
const MLP: &str = "model M {\n input x: [B, 2]\n input y: [B]\n param W: [2, 4] = xavier_uniform\n param b: [4] = zeros\n param u: [4] = xavier_uniform\n param c: [] = zeros\n loss = bce_logits(tanh(x @ W + b) @ u + c, y)\n}\n";

/// 80 noisy rows: labels from a linear rule (logistic) or a circle (MLP), a tenth flipped.
fn rows(features: usize, circle: bool) -> Vec<Tensor<f64>> {
    let mut rng = nnc::internals::rng::SplitMix64::new(11);
    let n = 80;
    let x: Vec<f64> = (0..n * features).map(|_| rng.normal()).collect();
    let mut y = Vec::new();
    for r in 0..n {
        let p = &x[r * features..(r + 1) * features];
        let mut c = if circle { p[0] * p[0] + p[1] * p[1] < 1.2 } else { p[0] - 0.5 * p[1] + 0.25 * p[2] > 0.2 };
        if r % 10 == 3 {
            c = !c;
        }
        y.push(c);
    }
    vec![Tensor::f(vec![n, features], x), Tensor::f(vec![n], y.iter().map(|&c| c as u8 as f64).collect())]
}

fn minimize(obj: &mut Interp64, x0: &[f64], m: Method) -> (Vec<f64>, Vec<Iterate>) {
    let mut x = x0.to_vec();
    let o = second_order::Options { method: m, max_iter: 500, tolerance_grad: 1e-11, tolerance_change: 0.0 };
    let trace = second_order::minimize(obj, &mut x, &mut second_order::State::default(), &o).expect("runs");
    (x, trace)
}

fn lbfgs(obj: &mut Interp64, x0: &[f64]) -> (Vec<f64>, f64, f64) {
    let mut x = x0.to_vec();
    let o = nnc::internals::optim::lbfgs::Options {
        lr: 1.0,
        history: 10,
        max_iter: 500,
        tolerance_grad: 1e-11,
        tolerance_change: 0.0,
    };
    let mut f = |p: &[f64]| obj.eval(p);
    let v = nnc::internals::optim::lbfgs::minimize(&mut f, &mut x, &mut Default::default(), &o).expect("runs");
    let g = obj.eval(&x).expect("eval").1;
    (x, v, g.iter().map(|a| a * a).sum::<f64>().sqrt())
}

/// Near the optimum Newton's gradient norm falls quadratically, ‖g_{k+1}‖ <= C ‖g_k‖²:
/// over the steps from ‖g_k‖ < 1e-3 (and above rounding, 1e-14), which must reach below
/// 1e-6, every C_k = ‖g_{k+1}‖/‖g_k‖² is at most 1e4 (linear convergence at a rate r gives
/// C_k = r/‖g_k‖ > 1e4 there unless r < 1e-2), and the ratio ‖g_{k+1}‖/‖g_k‖ of the last
/// step is below 1e-5 (superlinear).
fn assert_quadratic(what: &str, trace: &[Iterate]) {
    let g: Vec<f64> = trace.iter().map(|t| t.grad_norm).collect();
    let tail: Vec<usize> = (0..g.len() - 1).filter(|&k| g[k] < 1e-3 && g[k] > 1e-14).collect();
    let deepest = tail.iter().map(|&k| g[k]).fold(f64::INFINITY, f64::min);
    assert!(deepest < 1e-6, "{what}: no step from below 1e-6: {g:?}");
    for &k in &tail {
        let c = g[k + 1] / (g[k] * g[k]);
        assert!(c <= 1e4, "{what}: ‖g‖ {:e} -> {:e}: C = {c:e}, gradient norms {g:?}", g[k], g[k + 1]);
    }
    let last = *tail.last().expect("a step");
    let ratio = g[last + 1] / g[last];
    assert!(ratio < 1e-5, "{what}: last ratio {ratio:e}, gradient norms {g:?}");
}

#[test]
fn newton_converges_quadratically() {
    for (what, src, data) in [("logistic", LOGISTIC, rows(3, false)), ("mlp", MLP, rows(2, true))] {
        let (mut obj, x0) = Interp64::new(src, 1e-2, data);
        let (xs, trace) = minimize(&mut obj, &x0, Method::Newton { damping: 0.0, line_search: true });
        assert_quadratic(what, &trace);
        // Without the line search too (from a start where the unit step converges).
        if what == "logistic" {
            let half: Vec<f64> = xs.iter().map(|v| 0.5 * v).collect();
            let (_, trace) = minimize(&mut obj, &half, Method::Newton { damping: 0.0, line_search: false });
            assert_quadratic("logistic, unit steps", &trace);
        }
    }
}

/// Newton, BFGS, L-BFGS and Newton-CG reach one optimum. Each stops with ‖g‖ within twice
/// the f64 floor of a line search, √(2 λ ε f) (a step changes f by about ‖g‖²/2λ, λ up to
/// the Hessian's largest eigenvalue, which f64 cannot see below ε·f), the loss agrees to
/// 1e-14, and
/// the parameters within (‖g_a‖ + ‖g_b‖)/μ, μ the smallest eigenvalue of the Hessian at
/// Newton's optimum (positive: a strict minimum, l2 > 0): for the logistic regression the
/// objective is μ-strongly convex everywhere (μ >= l2) and the bound is exact; for the MLP
/// it holds where the Hessian stays above μ/2, hence the factor 2. The MLP's hidden units
/// can be permuted or negated into other optima of equal loss, so its runs start near
/// Newton's optimum (a perturbation of 0.05), in that optimum's basin; the logistic
/// regression starts every method from the initializers' zeros.
#[test]
fn every_method_reaches_the_same_optimum() {
    let l2 = 1e-2;
    for (what, src, data) in [("logistic", LOGISTIC, rows(3, false)), ("mlp", MLP, rows(2, true))] {
        let (mut obj, x0) = Interp64::new(src, l2, data);
        let (xn, tn) = minimize(&mut obj, &x0, Method::Newton { damping: 1e-4, line_search: true });
        let (fn_, gn) = (tn.last().expect("a point").value, tn.last().expect("a point").grad_norm);
        let h = second_order::hessian(&mut obj, &xn).expect("hessian");
        let eig = nnc::internals::data::linalg::symmetric_eigen(&h, xn.len()).expect("eigen");
        let mu = *eig.values.last().expect("values");
        let floor = (2.0 * eig.values[0] * f64::EPSILON * fn_.abs()).sqrt();
        if what == "logistic" {
            assert!(mu >= l2, "{what}: smallest eigenvalue {mu} below l2");
        }
        assert!(mu > 0.0, "{what}: Newton's point is not a strict minimum (smallest eigenvalue {mu})");
        let (start, slack) = if what == "mlp" {
            let mut rng = nnc::internals::rng::SplitMix64::new(5);
            (xn.iter().map(|v| v + 0.05 * rng.normal()).collect::<Vec<f64>>(), 2.0)
        } else {
            (x0.clone(), 1.0)
        };
        let mut results = vec![];
        for m in [Method::Bfgs { lr: 1.0 }, Method::NewtonCg { max_cg: 50, tol: 0.5 }] {
            let (x, t) = minimize(&mut obj, &start, m);
            let last = t.last().expect("a point");
            results.push((m.name(), x, last.value, last.grad_norm));
        }
        let (x, v, g) = lbfgs(&mut obj, &start);
        results.push(("lbfgs", x, v, g));
        for (name, x, v, g) in results {
            let dist = x.iter().zip(&xn).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
            assert!(g < 2.0 * floor && gn < 2.0 * floor, "{what}: {name} stopped at ‖g‖ = {g:e} (newton at {gn:e})");
            assert!((v - fn_).abs() < 1e-14, "{what}: {name} ends at {v}, newton at {fn_}");
            let bound = slack * (g + gn) / mu;
            assert!(dist <= bound, "{what}: {name} is {dist:e} from Newton's optimum, more than {bound:e}");
        }
    }
}

/// (ab − 1)²: a saddle at a = b = 0, minima on ab = 1. At a = b = 0.1 the Hessian
/// [[2b², 4ab − 2], [4ab − 2, 2a²]] is indefinite: Newton raises its damping until
/// H + λI is positive definite and still descends to a minimum (never to the saddle).
#[test]
fn newton_handles_an_indefinite_hessian() {
    let src = "model S {\n input x: [B]\n param a: [] = zeros\n param b: [] = zeros\n loss = mean((a * b * x - 1.0) * (a * b * x - 1.0))\n}\n";
    let (mut obj, _) = Interp64::new(src, 0.0, vec![Tensor::f(vec![4], vec![1.0; 4])]);
    let x0 = [0.1, 0.1];
    let (x, trace) = minimize(&mut obj, &x0, Method::Newton { damping: 1e-4, line_search: true });
    assert!(trace[1].damping >= 1.0, "damping {:e} at an indefinite Hessian", trace[1].damping);
    assert!((x[0] * x[1] - 1.0).abs() < 1e-8 && trace.last().expect("a point").value < 1e-15, "{x:?}: {trace:?}");
    // The undamped Newton step at x0 heads to the saddle (a and b shrink): the damped one
    // moves away from it.
    assert!(trace[1].value < trace[0].value);
    let (x, _) = minimize(&mut obj, &x0, Method::NewtonCg { max_cg: 10, tol: 0.5 });
    assert!((x[0] * x[1] - 1.0).abs() < 1e-8, "newton_cg: {x:?}");
}
