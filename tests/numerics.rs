//! Numerical oracles: gradient checks (f64 central differences) of every primitive,
//! prelude layer, loss and example; second derivatives; known-answer tests of the course
//! formulas (with the corrections of docs/language.md); kink handling; dropout.

use nnc::internals::autodiff;
use nnc::internals::gradcheck::{gradcheck, table, GradcheckOptions};
use nnc::internals::ir::{Graph, Program};
use nnc::internals::pipeline;
use nnc::internals::runtime::interp::{self, Feeds, Tensor};
use std::path::{Path, PathBuf};

fn compile_text(name: &str, text: &str) -> Program {
    match pipeline::compile_source(name, text, None) {
        Ok(mut c) => c.programs.remove(0),
        Err(e) => panic!("{}", nnc::internals::diagnostic::render(&e.diagnostics, &e.sources, Default::default())),
    }
}

fn compile(path: &Path) -> Program {
    let text = std::fs::read_to_string(path).expect("readable");
    match pipeline::compile_source(&path.display().to_string(), &text, path.parent()) {
        Ok(mut c) => c.programs.remove(0),
        Err(e) => panic!("{}", nnc::internals::diagnostic::render(&e.diagnostics, &e.sources, Default::default())),
    }
}

fn nn_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("folder exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "nn"))
        .collect();
    files.sort();
    files
}

fn assert_gradcheck(what: &str, g: &Graph, opts: &GradcheckOptions) {
    let reports = gradcheck(g, opts).unwrap_or_else(|e| panic!("{what}: {e}"));
    let worst = reports.iter().map(|r| r.max_rel_err).fold(0.0, f64::max);
    let checked: usize = reports.iter().map(|r| r.checked).sum();
    assert!(worst <= opts.tol, "{what}: gradient check failed\n{}", table(&reports, opts.tol));
    assert!(checked > 0, "{what}: no coordinate was checked\n{}", table(&reports, opts.tol));
}

/// Every primitive, prelude layer and loss (tests/data/grad), in both graphs.
#[test]
fn primitives_gradcheck() {
    let files = nn_files("tests/data/grad");
    assert!(files.len() >= 40);
    let opts = GradcheckOptions { batch: 2, max_coords: 24, ..Default::default() };
    for f in files {
        let p = compile(&f);
        assert_gradcheck(&format!("{} (train)", f.display()), &p.train, &opts);
        assert_gradcheck(&format!("{} (eval)", f.display()), &p.eval, &opts);
    }
}

/// Second derivatives: the gradient of <grad, v> (a Hessian-vector product) against
/// central differences of <grad, v>, for every fixture: each VJP rule's own VJP.
#[test]
fn second_derivatives_gradcheck() {
    let opts = GradcheckOptions { batch: 2, max_coords: 12, ..Default::default() };
    for f in nn_files("tests/data/grad") {
        let p = compile(&f);
        let g2 = autodiff::directional_graph(&p.train).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_gradcheck(&format!("{} (second order)", f.display()), &g2, &opts);
    }
}

/// Every example of docs/language.md (a sample of coordinates, a small batch).
#[test]
fn examples_gradcheck() {
    let opts = GradcheckOptions { batch: 2, max_coords: 6, ..Default::default() };
    for f in nn_files("examples") {
        let p = compile(&f);
        assert_gradcheck(&format!("{} (train)", f.display()), &p.train, &opts);
        assert_gradcheck(&format!("{} (eval)", f.display()), &p.eval, &opts);
    }
}

/// A Hessian-vector product of a small MLP's loss equals finite differences of its
/// gradient: (grad(w + h v) - grad(w - h v)) / 2h.
#[test]
fn hessian_vector_product_matches_finite_differences() {
    let p = compile_text(
        "mlp.nn",
        "model M {\n input x: [B, 3]\n input y: i32[B]\n layer a = Dense(3, 5)\n layer b = Dense(5, 2)\n loss = cross_entropy(b(tanh(a(x))), y)\n}\n",
    );
    let g = &p.train;
    let hv_graph = autodiff::directional_graph(g).expect("directional graph");
    let wrt: Vec<_> = hv_graph.params.iter().map(|d| d.value).collect();
    let (hv_full, hv) = autodiff::grad(&hv_graph, hv_graph.loss.expect("loss"), &wrt).expect("second grad");
    let (grad_graph, grads) = autodiff::grad(g, g.loss.expect("loss"), &wrt).expect("grad");
    let inputs = nnc::internals::gradcheck::random_inputs::<f64>(g, 4, 1).expect("inputs");
    let (params, states) = nnc::internals::gradcheck::random_params(g, 1);
    let mut rng = nnc::internals::rng::SplitMix64::new(9);
    let v: Vec<Vec<f64>> = params.iter().map(|p| p.iter().map(|_| rng.normal()).collect()).collect();
    // H v from the twice-differentiated graph.
    let mut hv_inputs = inputs.clone();
    for (vp, d) in v.iter().zip(&g.params) {
        hv_inputs.push(Tensor::f(d.shape.iter().map(|&x| x as usize).collect(), vp.clone()));
    }
    let feeds = Feeds { inputs: hv_inputs, params: params.clone(), states: states.clone(), seed: 0, step: 0 };
    let run = interp::run(&hv_full, &feeds).expect("run");
    // Finite differences of the gradient along v.
    let h = 1e-5;
    let grad_at = |sign: f64| {
        let ps: Vec<Vec<f64>> =
            params.iter().zip(&v).map(|(p, vp)| p.iter().zip(vp).map(|(a, b)| a + sign * h * b).collect()).collect();
        let f = Feeds { inputs: inputs.clone(), params: ps, states: states.clone(), seed: 0, step: 0 };
        let r = interp::run(&grad_graph, &f).expect("run");
        grads.iter().map(|gv| r.get(*gv).floats().to_vec()).collect::<Vec<_>>()
    };
    let (gp, gm) = (grad_at(1.0), grad_at(-1.0));
    let mut worst: f64 = 0.0;
    for (k, hvk) in hv.iter().enumerate() {
        for (i, a) in run.get(*hvk).floats().iter().enumerate() {
            let n = (gp[k][i] - gm[k][i]) / (2.0 * h);
            worst = worst.max((a - n).abs() / a.abs().max(n.abs()).max(1e-2));
        }
    }
    assert!(worst < 1e-6, "H v differs from finite differences: {worst:e}");
}

fn run_f64(g: &Graph, inputs: Vec<Tensor<f64>>, params: Vec<Vec<f64>>) -> interp::Run<f64> {
    let states = nnc::internals::runtime::init::init_all(g, 0).1;
    interp::run(g, &Feeds { inputs, params, states, seed: 0, step: 0 }).expect("run")
}

/// The course's one-hidden-layer window scorer with the max-margin loss, by hand:
/// s = U . sigmoid(W x + b), J = max(0, 1 - s + s_c), and with J active
/// dJ/dU = -a + a_c, dJ/dW_ij = -U_i f'(z_i) x_j + U_i f'(z_c,i) x_c,j (no sum over i:
/// docs/language.md), dJ/db_i = -U_i f'(z_i) + U_i f'(z_c,i).
#[test]
fn max_margin_formulas_by_hand() {
    let p = compile_text(
        "window.nn",
        "model W {\n input good: [1, 4]\n input bad: [1, 4]\n param W: [4, 3] = xavier_uniform\n param b: [3] = zeros\n param U: [3] = xavier_uniform\n fn score(x: [N, 4]) -> [N] { sigmoid(x @ W + b) @ U }\n loss = mean(max(0, 1.0 - score(good) + score(bad)))\n}\n",
    );
    let g = &p.train;
    let gr = autodiff::grad_program(g).expect("grad");
    let x = [0.5, -1.0, 2.0, 0.25];
    let xc = [-0.3, 0.8, 0.1, -1.5];
    let w: Vec<f64> = (0..12).map(|i| ((i * 7 % 11) as f64 - 5.0) / 10.0).collect();
    let b = vec![0.1, -0.2, 0.05];
    let u = vec![0.3, -0.7, 0.2];
    let run = run_f64(
        &gr.graph,
        vec![Tensor::f(vec![1, 4], x.to_vec()), Tensor::f(vec![1, 4], xc.to_vec())],
        vec![w.clone(), b.clone(), u.clone()],
    );
    let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
    let hidden = |x: &[f64]| -> (Vec<f64>, Vec<f64>) {
        let z: Vec<f64> = (0..3).map(|i| (0..4).map(|j| x[j] * w[j * 3 + i]).sum::<f64>() + b[i]).collect();
        let a = z.iter().map(|&z| sig(z)).collect();
        (z, a)
    };
    let (z, a) = hidden(&x);
    let (zc, ac) = hidden(&xc);
    let s: f64 = (0..3).map(|i| u[i] * a[i]).sum();
    let sc: f64 = (0..3).map(|i| u[i] * ac[i]).sum();
    let j = (1.0 - s + sc).max(0.0);
    assert!(j > 0.0, "the margin must be active for this test");
    assert!((run.get(g.loss.expect("loss")).floats()[0] - j).abs() < 1e-12);
    let fp = |z: f64| sig(z) * (1.0 - sig(z));
    let grad = |name: &str| {
        let k = g.params.iter().position(|p| p.name == name).expect("param");
        run.get(gr.grads[k]).floats().to_vec()
    };
    let (gw, gb, gu) = (grad("W"), grad("b"), grad("U"));
    for i in 0..3 {
        assert!((gu[i] - (-a[i] + ac[i])).abs() < 1e-12);
        assert!((gb[i] - (-u[i] * fp(z[i]) + u[i] * fp(zc[i]))).abs() < 1e-12);
        for jj in 0..4 {
            // W is [in, out]: W[j][i] connects input j to hidden unit i (aᵀ·δ layout).
            let want = -u[i] * fp(z[i]) * x[jj] + u[i] * fp(zc[i]) * xc[jj];
            assert!((gw[jj * 3 + i] - want).abs() < 1e-12, "dJ/dW[{jj},{i}]");
        }
    }
}

/// Softmax cross-entropy: dL/dz = (softmax(z) - onehot(y)) / B.
#[test]
fn softmax_cross_entropy_gradient_by_hand() {
    let p = compile_text(
        "ce.nn",
        "model C {\n input y: i32[2]\n param z: [2, 3] = zeros\n loss = cross_entropy(z, y)\n}\n",
    );
    let g = &p.train;
    let gr = autodiff::grad_program(g).expect("grad");
    let z = vec![1.0, 2.0, 0.5, -1.0, 0.0, 3.0];
    let y = [2, 0];
    let run = run_f64(&gr.graph, vec![Tensor::i(vec![2], y.to_vec())], vec![z.clone()]);
    let dz = run.get(gr.grads[0]).floats().to_vec();
    let mut loss = 0.0;
    for r in 0..2 {
        let row = &z[r * 3..r * 3 + 3];
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        loss += -(e[y[r] as usize] / s).ln() / 2.0;
        for c in 0..3 {
            let want = (e[c] / s - f64::from(u8::from(c == y[r] as usize))) / 2.0;
            assert!((dz[r * 3 + c] - want).abs() < 1e-12);
        }
    }
    assert!((run.get(g.loss.expect("loss")).floats()[0] - loss).abs() < 1e-12);
}

/// Soft sign's derivative is 1/(1+|x|)^2 (not sgn(x)/(1+|x|)^2, as the notes say).
#[test]
fn softsign_derivative() {
    let p = compile_text("s.nn", "model S {\n param w: [4] = zeros\n loss = sum(softsign(w))\n}\n");
    let gr = autodiff::grad_program(&p.train).expect("grad");
    let w = vec![-2.0, -0.5, 0.5, 3.0];
    let run = run_f64(&gr.graph, vec![], vec![w.clone()]);
    for (d, x) in run.get(gr.grads[0]).floats().iter().zip(&w) {
        assert!((d - 1.0 / (1.0 + x.abs()).powi(2)).abs() < 1e-12);
    }
}

/// stop_gradient passes the value and blocks the gradient.
#[test]
fn stop_gradient_blocks_gradient() {
    let p = compile_text("sg.nn", "model S {\n param w: [3] = zeros\n loss = sum(stop_gradient(w) * w)\n}\n");
    let gr = autodiff::grad_program(&p.train).expect("grad");
    let w = vec![1.5, -2.0, 0.25];
    let run = run_f64(&gr.graph, vec![], vec![w.clone()]);
    assert_eq!(run.get(gr.grads[0]).floats(), &w[..]);
}

/// Kinks are found, not stumbled on: with a step as large as the inputs, relu's
/// central differences straddle 0 for many coordinates; those are skipped and counted,
/// and the rest still agree.
#[test]
fn kinks_are_detected_and_skipped() {
    let p = compile_text(
        "k.nn",
        "model K {\n input x: [B, 4]\n param w: [4, 4] = normal(1.0)\n loss = sum(relu(x @ w) * relu(x @ w))\n}\n",
    );
    let opts = GradcheckOptions { eps: 0.3, tol: 1.0, batch: 8, ..Default::default() };
    let reports = gradcheck(&p.train, &opts).expect("gradcheck");
    let kinks: usize = reports.iter().map(|r| r.kinks).sum();
    assert!(kinks > 0, "a step of 0.3 must cross some kinks:\n{}", table(&reports, 1.0));
    // Where no kink is crossed, relu(.)^2 is quadratic, so central differences are exact.
    assert!(reports.iter().all(|r| r.max_rel_err < 1e-9), "{}", table(&reports, 1.0));
    // A tie in max splits the gradient evenly.
    let t = compile_text(
        "t.nn",
        "model T {\n param a: [2] = zeros\n param b: [2] = zeros\n loss = sum(maximum(a, b))\n}\n",
    );
    let gr = autodiff::grad_program(&t.train).expect("grad");
    let run = run_f64(&gr.graph, vec![], vec![vec![1.0, 2.0], vec![1.0, 0.0]]);
    assert_eq!(run.get(gr.grads[0]).floats(), &[0.5, 1.0]);
    assert_eq!(run.get(gr.grads[1]).floats(), &[0.5, 0.0]);
}

/// Dropout: a (seed, step) pair always gives the same mask; another step another mask;
/// kept units are scaled by 1/(1-p); evaluation is the identity.
#[test]
fn dropout_is_deterministic_and_inverted() {
    let p = compile_text("d.nn", "model D {\n input x: [B, 1000]\n output y = dropout(x, 0.25)\n}\n");
    let x = Tensor::f(vec![1, 1000], vec![1.0; 1000]);
    let run = |g: &Graph, step: u64| -> Vec<f64> {
        let f = Feeds { inputs: vec![x.clone()], params: vec![], states: vec![], seed: 42, step };
        let r = interp::run(g, &f).expect("run");
        r.get(g.outputs[0].1).floats().to_vec() as Vec<f64>
    };
    let a = run(&p.train, 3);
    assert_eq!(a, run(&p.train, 3));
    assert_ne!(a, run(&p.train, 4));
    let kept = a.iter().filter(|&&v| v != 0.0).count();
    assert!((700..800).contains(&kept), "kept {kept} of 1000 with p = 0.25");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-12));
    assert!(run(&p.eval, 3).iter().all(|&v| v == 1.0));
}

/// BatchNorm updates its running statistics in training (unbiased variance, PyTorch's
/// momentum convention) and uses them in evaluation.
#[test]
fn batchnorm_running_statistics() {
    let p = compile_text(
        "bn.nn",
        "model N {\n input x: [B, 2]\n layer bn = BatchNorm(2, momentum = 0.9)\n output y = bn(x)\n}\n",
    );
    let g = &p.train;
    let x = Tensor::f(vec![3, 2], vec![1.0, 10.0, 2.0, 20.0, 6.0, 0.0]);
    let params = nnc::internals::runtime::init::init_all(g, 0).0;
    let r = run_f64(g, vec![x], params);
    let mean_u = g.states[0].update.expect("mean updated");
    let var_u = g.states[1].update.expect("var updated");
    let m = r.get(mean_u).floats().to_vec();
    let v = r.get(var_u).floats().to_vec();
    // Column 0: mean 3, unbiased variance 7; column 1: mean 10, unbiased variance 100.
    assert!((m[0] - 0.3).abs() < 1e-12 && (m[1] - 1.0).abs() < 1e-12);
    assert!((v[0] - (0.9 + 0.1 * 7.0)).abs() < 1e-12 && (v[1] - (0.9 + 0.1 * 100.0)).abs() < 1e-12);
    assert!(p.eval.states.iter().all(|s| s.update.is_none()));
}

/// A smooth model (tanh MLP, mean squared error) for the finite-difference comparisons.
const SMOOTH: &str = "model S {\n input x: [B, 3]\n input t: [B, 2]\n param W1: [3, 5] = normal(1.0)\n param W2: [5, 2] = normal(1.0)\n loss = mean((tanh(x @ W1) @ W2 - t) * (tanh(x @ W1) @ W2 - t))\n}\n";

/// Forward differences are first order, central differences second order: on the same
/// coordinates forward's error is the larger, and shrinking the step tenfold shrinks it
/// about tenfold (central's about a hundredfold).
#[test]
fn forward_differences_are_less_accurate_than_central() {
    use nnc::internals::gradcheck::Method;
    let p = compile_text("s.nn", SMOOTH);
    let worst = |eps: f64| {
        let opts = GradcheckOptions { eps, method: Method::Both, batch: 4, ..Default::default() };
        let reports = gradcheck(&p.train, &opts).expect("gradcheck");
        for r in &reports {
            let f = r.forward.as_ref().expect("both methods");
            assert!(r.checked == r.size && r.kinks == 0, "{}", table(&reports, 1.0));
            assert!(f.max_rel_err > r.max_rel_err, "{}: forward is not the worse:\n{}", r.name, table(&reports, 1.0));
        }
        let c = reports.iter().map(|r| r.max_rel_err).fold(0.0, f64::max);
        let f = reports.iter().filter_map(|r| r.forward.as_ref()).map(|f| f.max_rel_err).fold(0.0, f64::max);
        (c, f)
    };
    let (c3, f3) = worst(1e-3);
    let (c4, f4) = worst(1e-4);
    assert!(f3 > 100.0 * c3, "forward {f3:e} against central {c3:e} at h = 1e-3");
    // O(h) against O(h^2) (rounding is far below both at these steps).
    assert!((5.0..20.0).contains(&(f3 / f4)), "forward: {f3:e} at 1e-3, {f4:e} at 1e-4");
    assert!((50.0..200.0).contains(&(c3 / c4)), "central: {c3:e} at 1e-3, {c4:e} at 1e-4");
    // Forward alone checks the same coordinates with the same numbers.
    let opts = GradcheckOptions { eps: 1e-3, method: Method::Forward, batch: 4, ..Default::default() };
    let fw = gradcheck(&p.train, &opts).expect("gradcheck");
    assert_eq!(fw.iter().map(|r| r.max_rel_err).fold(0.0, f64::max), f3);
}

/// Input gradients: autodiff's d loss / d x equals the closed form 2/(n) (xW - t) W^T of
/// a linear least-squares loss; the check against finite differences passes with it and
/// fails with a gradient 1% off.
#[test]
fn input_gradients_match_an_independent_computation() {
    use nnc::internals::gradcheck::{check, compare, Slot, Wrt};
    let p = compile_text(
        "lin.nn",
        "model L {\n input x: [B, 3]\n input t: [B, 2]\n input k: i32[B]\n param W: [3, 2] = normal(1.0)\n param e: [4, 2] = normal(1.0)\n loss = mean((x @ W + gather(e, k) - t) * (x @ W + gather(e, k) - t))\n}\n",
    );
    let g = &p.train;
    let opts = GradcheckOptions { wrt: Wrt::Inputs, batch: 4, ..Default::default() };
    let reports = check(g, &opts, None, &mut |_, _| {}).expect("gradcheck");
    // x and t are checked, every coordinate; the ids k are not.
    let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["x", "t"]);
    assert!(reports.iter().all(|r| r.checked == r.size && r.max_rel_err < 1e-6), "{}", table(&reports, 1e-6));
    // The closed form at the same point.
    let inputs = nnc::internals::gradcheck::random_inputs::<f64>(g, 4, opts.seed).expect("inputs");
    let (params, states) = nnc::internals::gradcheck::random_params(g, opts.seed);
    let (x, t, k) = (inputs[0].floats(), inputs[1].floats(), inputs[2].ints());
    let (w, e) = (&params[0], &params[1]);
    let n = 4 * 2;
    let mut r = vec![0.0; n]; // residual xW + e[k] - t
    for b in 0..4 {
        for j in 0..2 {
            r[b * 2 + j] =
                (0..3).map(|i| x[b * 3 + i] * w[i * 2 + j]).sum::<f64>() + e[k[b] as usize * 2 + j] - t[b * 2 + j];
        }
    }
    let dx: Vec<f64> = (0..12)
        .map(|bi| {
            let (b, i) = (bi / 3, bi % 3);
            (0..2).map(|j| 2.0 / n as f64 * r[b * 2 + j] * w[i * 2 + j]).sum()
        })
        .collect();
    let dt: Vec<f64> = r.iter().map(|v| -2.0 / n as f64 * v).collect();
    let wrt = [g.inputs[0].value, g.inputs[1].value];
    let (gg, grads) = autodiff::grad(g, g.loss.expect("loss"), &wrt).expect("grad");
    let feeds = Feeds { inputs: inputs.clone(), params: params.clone(), states: states.clone(), seed: 0, step: 0 };
    let run = interp::run(&gg, &feeds).expect("run");
    for (got, want) in [(run.get(grads[0]).floats(), &dx), (run.get(grads[1]).floats(), &dt)] {
        for (a, b) in got.iter().zip(want.iter()) {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "autodiff {a} against closed form {b}");
        }
    }
    // The finite differences judge a given gradient: the closed form passes, 1% off fails.
    let judge = |scale: f64| {
        let mut f = Feeds { inputs: inputs.clone(), params: params.clone(), states: states.clone(), seed: 0, step: 0 };
        let analytic = vec![
            (Slot::Input(0), dx.iter().map(|v| v * scale).collect()),
            (Slot::Input(1), dt.iter().map(|v| v * scale).collect()),
        ];
        let reps = compare(g, &opts, &mut f, &analytic, &mut |_, _| {}).expect("compare");
        reps.iter().map(|r| r.max_rel_err).fold(0.0, f64::max)
    };
    assert!(judge(1.0) < 1e-8, "the closed form: {:e}", judge(1.0));
    let off = judge(1.01);
    assert!(off > 9e-3 && off < 1.1e-2, "a gradient 1% off: {off:e}");
}

/// `max_coords` distinct coordinates per tensor (a sample without replacement), all of
/// a smaller tensor; the sample depends on the seed only.
#[test]
fn coordinates_are_distinct() {
    use nnc::internals::gradcheck::distinct_sample;
    let mut rng = nnc::internals::rng::SplitMix64::new(7);
    for (n, k) in [(100, 64), (100, 99), (100, 100), (10, 64), (1, 1), (1_000_000, 64), (65, 64)] {
        let s = distinct_sample(n, k, &mut rng);
        assert_eq!(s.len(), k.min(n), "n = {n}, k = {k}");
        assert!(s.windows(2).all(|w| w[0] < w[1]) && s.iter().all(|&i| i < n), "n = {n}, k = {k}: {s:?}");
    }
    // Both halves of a large range are reached.
    let s = distinct_sample(1000, 64, &mut rng);
    assert!(s.iter().any(|&i| i < 500) && s.iter().any(|&i| i >= 500), "{s:?}");
    // A smooth model with 100 coordinates in W: exactly 64 checked (a sample with
    // replacement checks about 47 distinct ones).
    let p = compile_text(
        "c.nn",
        "model C {\n input x: [B, 10]\n param W: [10, 10] = normal(1.0)\n loss = sum(tanh(x @ W))\n}\n",
    );
    let opts = GradcheckOptions { max_coords: 64, ..Default::default() };
    let r = gradcheck(&p.train, &opts).expect("gradcheck");
    assert_eq!((r[0].checked, r[0].kinks, r[0].size), (64, 0, 100));
    let all = gradcheck(&p.train, &GradcheckOptions { max_coords: 500, ..Default::default() }).expect("gradcheck");
    assert!(all[0].checked == 100 && all[0].all_coordinates());
}

/// The first output of `g` run by the interpreter (f64) on `inputs` and `params`.
fn output(g: &Graph, inputs: Vec<Tensor<f64>>, params: Vec<Vec<f64>>, seed: u64, step: u64) -> Vec<f64> {
    let f = Feeds { inputs, params, states: vec![], seed, step };
    let r = interp::run(g, &f).expect("run");
    r.get(g.outputs[0].1).floats().to_vec()
}

/// normal_like: mean, variance and the share within one std match N(0, std^2) to within
/// five standard errors of 200,000 draws; the tails end at 5.77 std (the 24-bit uniform);
/// a (seed, step) pair gives the same numbers, another step others.
#[test]
fn normal_like_moments_and_determinism() {
    let p = compile_text("n.nn", "model N {\n input x: [B, 1000]\n output y = normal_like(x, std = 2.0)\n}\n");
    let x = Tensor::f(vec![200, 1000], vec![0.0; 200_000]);
    let z = output(&p.train, vec![x.clone()], vec![], 11, 3);
    let n = z.len() as f64;
    let std = 2.0;
    let mean = z.iter().sum::<f64>() / n;
    let var = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    assert!(mean.abs() <= 5.0 * std / n.sqrt(), "mean {mean}");
    // The sample variance of a normal has standard error sigma^2 sqrt(2 / n).
    assert!((var - std * std).abs() <= 5.0 * std * std * (2.0 / n).sqrt(), "variance {var}");
    let p1 = 0.682_689_492_137_086;
    let within = z.iter().filter(|v| v.abs() < std).count() as f64 / n;
    assert!((within - p1).abs() <= 5.0 * (p1 * (1.0 - p1) / n).sqrt(), "share within one std {within}");
    let max = z.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(max <= std * (2.0 * 24.0 * std::f64::consts::LN_2).sqrt() + 1e-9 && max > 4.0 * std, "max |z| {max}");
    assert_eq!(z, output(&p.train, vec![x.clone()], vec![], 11, 3));
    assert_ne!(z, output(&p.train, vec![x.clone()], vec![], 11, 4));
    assert_ne!(z, output(&p.train, vec![x], vec![], 12, 3));
}

/// Variational dropout: an RNN whose state is 1 + 2 h (Wx = 1, Wh = I, kept units scaled
/// by 1 / (1 - 0.5)) from x = 1: a unit whose state is dropped stays at tanh(1) at every
/// step, a kept one grows; so each (row, unit) is one or the other for all steps if and
/// only if the mask is the same at every step. The input mask on x = 1 through Wx = I
/// zeroes the same units at every step. The eval graph draws nothing, and the default
/// rate 0 draws nothing in training either.
#[test]
fn recurrent_dropout_mask_is_constant_over_time() {
    let (rows, n, steps) = (64usize, 4usize, 6usize);
    let state = compile_text(
        "r.nn",
        &format!("model R {{\n input x: [B, {steps}, 1]\n layer rnn = RNN(1, {n}, recurrent_dropout = 0.5)\n output h = rnn.seq(x)\n}}\n"),
    );
    let params = |g: &Graph, wx: Vec<f64>, wh: Vec<f64>| -> Vec<Vec<f64>> {
        g.params
            .iter()
            .map(|d| match d.name.as_str() {
                "rnn.Wx" => wx.clone(),
                "rnn.Wh" => wh.clone(),
                _ => vec![0.0; n],
            })
            .collect()
    };
    let eye: Vec<f64> = (0..n * n).map(|k| if k / n == k % n { 1.0 } else { 0.0 }).collect();
    let x = Tensor::f(vec![rows, steps, 1], vec![1.0; rows * steps]);
    let h = output(&state.train, vec![x], params(&state.train, vec![1.0; n], eye.clone()), 5, 1);
    let t1 = 1f64.tanh();
    let (mut dropped, mut kept) = (0, 0);
    for r in 0..rows {
        for u in 0..n {
            let at = |t: usize| h[(r * steps + t) * n + u];
            assert_eq!(at(0), t1);
            let stays: Vec<bool> = (1..steps).map(|t| at(t) == t1).collect();
            assert!(stays.iter().all(|&s| s) || stays.iter().all(|&s| !s), "row {r} unit {u}: {stays:?}");
            if stays[0] {
                dropped += 1;
            } else {
                kept += 1;
            }
        }
    }
    assert!(dropped > 64 && kept > 64, "{dropped} dropped, {kept} kept of {}", rows * n);

    let input = compile_text(
        "i.nn",
        &format!("model I {{\n input x: [B, {steps}, {n}]\n layer rnn = RNN({n}, {n}, dropout = 0.5)\n output h = rnn.seq(x)\n}}\n"),
    );
    let x = Tensor::f(vec![rows, steps, n], vec![1.0; rows * steps * n]);
    let h = output(&input.train, vec![x], params(&input.train, eye, vec![0.0; n * n]), 5, 1);
    for r in 0..rows {
        for u in 0..n {
            let first = h[r * steps * n + u];
            assert!(first == 0.0 || first == 2f64.tanh(), "{first}");
            assert!((1..steps).all(|t| h[(r * steps + t) * n + u] == first), "row {r} unit {u}");
        }
    }

    let rands =
        |g: &Graph| g.nodes.iter().filter(|(_, node)| matches!(node.op, nnc::internals::ir::Op::Rand { .. })).count();
    let both =
        compile_text("l.nn", "model L {\n input x: [B, 9, 3]\n layer lstm = LSTM(3, 4, dropout = 0.2, recurrent_dropout = 0.3)\n output h = lstm(x)\n}\n");
    assert_eq!(rands(&both.train), 2, "one input mask and one state mask for 9 steps");
    assert_eq!(rands(&both.eval), 0);
    let plain = compile_text("p.nn", "model P {\n input x: [B, 9, 3]\n layer gru = GRU(3, 4)\n output h = gru(x)\n}\n");
    assert_eq!(rands(&plain.train), 0);
}

/// Additive attention: with v = 0 every score is 0, so the weights are uniform and the
/// context is the mean of the keys; in general the weights are positive and sum to 1.
#[test]
fn additive_attention_weights_and_context() {
    let p = compile_text(
        "a.nn",
        "model A {\n input s: [B, 3]\n input h: [B, 5, 2]\n layer att = AdditiveAttention(3, 2, 4)\n output c = att(s, h)\n output w = att.weights(s, h)\n}\n",
    );
    let g = &p.eval;
    let mut rng = nnc::internals::rng::SplitMix64::new(3);
    let mut draw = |n: usize| (0..n).map(|_| rng.normal()).collect::<Vec<f64>>();
    let s = Tensor::f(vec![2, 3], draw(6));
    let keys = draw(20);
    let h = Tensor::f(vec![2, 5, 2], keys.clone());
    let mut params: Vec<Vec<f64>> = g.params.iter().map(|d| draw(d.shape.iter().product::<i64>() as usize)).collect();
    let run = |params: Vec<Vec<f64>>| {
        let r = interp::run(g, &Feeds { inputs: vec![s.clone(), h.clone()], params, states: vec![], seed: 0, step: 0 })
            .expect("run");
        (r.get(g.outputs[0].1).floats().to_vec(), r.get(g.outputs[1].1).floats().to_vec())
    };
    let (_, w) = run(params.clone());
    for row in w.chunks(5) {
        assert!(row.iter().all(|&a| a > 0.0) && (row.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{row:?}");
    }
    let v = g.params.iter().position(|d| d.name == "att.v").expect("att.v");
    params[v] = vec![0.0; 4];
    let (c, w) = run(params);
    assert!(w.iter().all(|&a| (a - 0.2).abs() < 1e-15));
    for r in 0..2 {
        for j in 0..2 {
            let mean = (0..5).map(|t| keys[(r * 5 + t) * 2 + j]).sum::<f64>() / 5.0;
            assert!((c[r * 2 + j] - mean).abs() < 1e-12);
        }
    }
}

/// Reversed slices: x[:, ::-1] reverses, flipping twice is the identity, and a:b:-s
/// follows Python (3:0:-2 is 3, 1; ::-3 from the end).
#[test]
fn reversed_slices_follow_python() {
    let p = compile_text(
        "f.nn",
        "model F {\n input x: [B, 5]\n output a = x[:, ::-1]\n output b = x[:, ::-1][:, ::-1]\n output c = x[:, 3:0:-2]\n output d = x[:, ::-3]\n output e = x[:, -2::-1]\n}\n",
    );
    let g = &p.eval;
    let x: Vec<f64> = (0..10).map(f64::from).collect();
    let r = interp::run(
        g,
        &Feeds { inputs: vec![Tensor::f(vec![2, 5], x.clone())], params: vec![], states: vec![], seed: 0, step: 0 },
    )
    .expect("run");
    let out = |k: usize| r.get(g.outputs[k].1).floats().to_vec();
    assert_eq!(out(0), vec![4.0, 3.0, 2.0, 1.0, 0.0, 9.0, 8.0, 7.0, 6.0, 5.0]);
    assert_eq!(out(1), x);
    assert_eq!(out(2), vec![3.0, 1.0, 8.0, 6.0]);
    assert_eq!(out(3), vec![4.0, 1.0, 9.0, 6.0]);
    assert_eq!(out(4), vec![3.0, 2.0, 1.0, 0.0, 8.0, 7.0, 6.0, 5.0]);
}
