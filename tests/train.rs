//! The training loop: resuming is bit-identical, the partial last batch is trained on,
//! bad labels and a diverging loss are clear errors, Ctrl-C saves a checkpoint.

use nnc::internals::train::session::Next;
use nnc::internals::train::trainer::{train, TrainOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

const MODEL: &str = "model M {\n input x: [B, 2]\n input y: i32[B]\n layer a = Dense(2, 8)\n layer b = Dense(8, 2)\n output logits = b(dropout(tanh(a(x)), 0.1))\n loss = cross_entropy(logits, y)\n train { data = moons(n = 200, seed = 3)  split = [0.7, 0.15, 0.15]  optimizer = adam(lr = 0.01)\n batch = 32  epochs = 4  seed = 5 }\n}\n";

fn program(src: &str) -> nnc::internals::ir::Program {
    match nnc::internals::pipeline::compile_source("m.nn", src, None) {
        Ok(mut c) => c.programs.remove(0),
        Err(e) => panic!("{}", nnc::internals::diagnostic::render(&e.diagnostics, &e.sources, Default::default())),
    }
}

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(
    p: &nnc::internals::ir::Program,
    dir: &Path,
    resume: bool,
    jit: bool,
) -> Result<nnc::internals::train::trainer::Report, String> {
    let opts = TrainOptions {
        out_dir: dir.to_path_buf(),
        resume,
        backend: if jit { nnc::Backend::Jit } else { nnc::Backend::Interpreter },
        threads: 1,
        source: MODEL.into(),
    };
    train(p, Path::new("."), &opts, &AtomicBool::new(false), &mut |_| Next::Continue).map_err(String::from)
}

fn params(dir: &Path) -> nnc::internals::tensors::TensorMap {
    nnc::internals::tensors::read(&dir.join("last.safetensors")).expect("checkpoint")
}

/// 140 training rows in batches of 32: four full batches and a partial one of 12, every
/// epoch; two epochs, then two more with --resume, equal four epochs straight, bit for bit
/// (parameters, optimizer state and all).
#[test]
fn resume_is_bit_identical() {
    let straight = out_dir("straight");
    let p = program(MODEL);
    let r = run(&p, &straight, false, true).expect("train");
    assert_eq!(r.epochs_run, 4);
    let resumed = out_dir("resumed");
    let mut half = p.clone();
    half.settings.epochs = 2;
    run(&half, &resumed, false, true).expect("first half");
    run(&p, &resumed, true, true).expect("resume");
    let (a, b) = (params(&straight), params(&resumed));
    assert_eq!(a.len(), b.len());
    for (k, t) in &a {
        assert_eq!(Some(t), b.get(k), "{k} differs after resuming");
    }
    assert!(a.keys().any(|k| k.starts_with("opt.m.")), "the optimizer state is checkpointed");
    let log = std::fs::read_to_string(resumed.join("metrics.csv")).expect("metrics.csv");
    assert_eq!(log.lines().count(), 5, "a header and one row per epoch:\n{log}");
}

/// Ctrl-C in the middle of an epoch (after its 2nd of 5 batches), then --resume: the
/// run continues at the next batch with the epoch's running sums, and ends bit for bit
/// where the uninterrupted run ends, metrics included.
#[test]
fn resume_mid_epoch_is_bit_identical() {
    let straight = out_dir("straight_mid");
    let p = program(MODEL);
    run(&p, &straight, false, true).expect("train");
    let resumed = out_dir("resumed_mid");
    let opts = TrainOptions {
        out_dir: resumed.clone(),
        resume: false,
        backend: nnc::Backend::Jit,
        threads: 1,
        source: MODEL.into(),
    };
    let stop = AtomicBool::new(false);
    let mut batches = 0;
    let r = train(&p, Path::new("."), &opts, &stop, &mut |e| {
        if let nnc::internals::train::trainer::Event::Batch { .. } = e {
            batches += 1;
            if batches == 7 {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        Next::Continue
    })
    .expect("interrupted run");
    assert!(r.interrupted);
    assert_eq!(r.epochs_run, 1, "stopped inside the second epoch");
    let r = run(&p, &resumed, true, true).expect("resume");
    assert_eq!(r.epochs_run, 4);
    let (a, b) = (params(&straight), params(&resumed));
    for (k, t) in &a {
        assert_eq!(Some(t), b.get(k), "{k} differs after resuming mid-epoch");
    }
    let strip = |d: &Path| {
        let log = std::fs::read_to_string(d.join("metrics.csv")).expect("metrics.csv");
        // Wall-clock columns differ; everything else must not.
        log.lines().map(|l| l.split(',').take(4).collect::<Vec<_>>().join(",")).collect::<Vec<_>>()
    };
    assert_eq!(strip(&straight), strip(&resumed));
}

/// The same with augmentation on (image augmentations of the digits read as 8x8 images,
/// standardized after augmenting): the draws depend on (seed, epoch, row) only, so
/// stopping mid-epoch and resuming ends bit for bit where the straight run ends.
#[test]
fn resume_with_augmentation_is_bit_identical() {
    const AUG: &str = "model D {\n input x: [B, 64]\n input y: i32[B]\n layer a = Dense(64, 16)\n layer b = Dense(16, 10)\n output logits = b(relu(a(x)))\n loss = cross_entropy(logits, y)\n train { data = csv(\"examples/data/digits.csv.gz\")  preprocess = standardize  split = [0.5, 0.5]\n optimizer = adam(lr = 0.01)  batch = 128  epochs = 3  seed = 2\n augment = [flip_horizontal(p = 0.3), shift(max = 1), crop(size = 8, padding = 1), rotate(degrees = 15), noise(std = 0.5)]  augment_shape = [8, 8] }\n}\n";
    let p = program(AUG);
    let go = |dir: &Path, resume: bool, stop_after: usize| {
        let opts = TrainOptions {
            out_dir: dir.to_path_buf(),
            resume,
            backend: nnc::Backend::Jit,
            threads: 1,
            source: AUG.into(),
        };
        let stop = AtomicBool::new(false);
        let mut batches = 0;
        train(&p, Path::new("."), &opts, &stop, &mut |e| {
            if let nnc::internals::train::trainer::Event::Batch { .. } = e {
                batches += 1;
                if batches == stop_after {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            Next::Continue
        })
        .expect("train")
    };
    let straight = out_dir("straight_aug");
    go(&straight, false, 0);
    let resumed = out_dir("resumed_aug");
    // About 900 training rows in batches of 128: 8 per epoch; stop in the second epoch.
    assert!(go(&resumed, false, 11).interrupted);
    assert_eq!(go(&resumed, true, 0).epochs_run, 3);
    let (a, b) = (params(&straight), params(&resumed));
    for (k, t) in &a {
        assert_eq!(Some(t), b.get(k), "{k} differs after resuming with augmentation");
    }
    // A resume with other augmentations is another run.
    let other = program(&AUG.replace("noise(std = 0.5)", "noise(std = 0.4)"));
    let opts = TrainOptions {
        out_dir: resumed.clone(),
        resume: true,
        backend: nnc::Backend::Jit,
        threads: 1,
        source: AUG.into(),
    };
    let err = train(&other, Path::new("."), &opts, &AtomicBool::new(false), &mut |_| Next::Continue)
        .expect_err("other recipe");
    assert!(err.to_string().contains("augment:"), "{err}");
}

/// The interpreter backend trains to the same place as the JIT, up to f32 rounding.
#[test]
fn interpreter_backend_agrees_with_jit() {
    let p = program(MODEL);
    let (j, i) = (out_dir("jit"), out_dir("interp"));
    run(&p, &j, false, true).expect("jit");
    run(&p, &i, false, false).expect("interp");
    let (a, b) = (params(&j), params(&i));
    for (k, t) in &a {
        let (x, y) = (t.floats().expect("f"), b[k].floats().expect("f"));
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() <= 1e-3 * (1.0 + u.abs()), "{k}: jit {u} vs interpreter {v}");
        }
    }
}

#[test]
fn labels_out_of_range_are_an_error() {
    let src = MODEL.replace("Dense(8, 2)", "Dense(8, 1)");
    let err = run(&program(&src), &out_dir("labels"), false, true).expect_err("label 1 needs 2 classes");
    assert!(
        err.contains("moons(") && err.contains("the label of sample") && err.contains("is 1, outside 0..1"),
        "{err}"
    );
}

#[test]
fn a_diverging_loss_names_the_step() {
    let src = "model R {\n input x: [B, 2]\n input y: [B]\n param w: [2] = ones\n loss = mse(x @ w, y)\n train { data = moons(n = 200, seed = 3)  optimizer = sgd(lr = 1e20)  batch = 32  epochs = 4 }\n}\n";
    let err = run(&program(src), &out_dir("nan"), false, true).expect_err("diverges");
    assert!(err.contains("at step") && err.contains("checkpoint"), "{err}");
}

#[test]
fn stopping_saves_a_checkpoint() {
    let dir = out_dir("stop");
    let opts = TrainOptions {
        out_dir: dir.clone(),
        resume: false,
        backend: nnc::Backend::Jit,
        threads: 1,
        source: MODEL.into(),
    };
    let r =
        train(&program(MODEL), Path::new("."), &opts, &AtomicBool::new(true), &mut |_| Next::Continue).expect("train");
    assert!(r.interrupted);
    assert!(dir.join("last.safetensors").exists());
}

/// L-BFGS (full batch, strong Wolfe line search) trains through the compiled objective
/// and gradient, on both backends.
#[test]
fn lbfgs_trains() {
    let src = MODEL
        .replace("optimizer = adam(lr = 0.01)", "optimizer = lbfgs(max_iter = 30)")
        .replace("dropout(tanh(a(x)), 0.1)", "tanh(a(x))");
    for jit in [true, false] {
        let r =
            run(&program(&src), &out_dir(if jit { "lbfgs_jit" } else { "lbfgs_interp" }), false, jit).expect("train");
        let acc = r.test.get("test_accuracy").copied().unwrap_or(0.0);
        assert!(acc > 0.9, "L-BFGS on moons: test accuracy {acc}");
    }
}

const NORMS: &str = "model G {\n input x: [B, 2]\n input y: i32[B]\n layer a = Dense(2, 8)\n layer b = Dense(8, 3)\n output logits = b(tanh(a(x)))\n loss = cross_entropy(logits, y)\n train { data = blobs(n = 60, centers = 3, seed = 1)  optimizer = sgd(lr = 0.1)\n batch = 60  epochs = 2  seed = 2  log_grad_norms = true }\n}\n";

fn log_of(dir: &Path) -> Vec<std::collections::BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).expect("metrics.csv");
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().expect("header").split(',').collect();
    lines
        .map(|l| head.iter().zip(l.split(',')).map(|(k, v)| (k.to_string(), v.parse().expect("number"))).collect())
        .collect()
}

/// `log_grad_norms`: one step per epoch (the batch is every row) with sgd, so each epoch's
/// logged norm is the gradient norm at that epoch's starting parameters, and the update
/// ratio is lr ||g|| / ||w||. Both against the gradient computed independently (autodiff
/// in f64 in the interpreter, at the initializers' parameters, on the same rows), on both
/// backends; `grad_norms.png` is drawn.
#[test]
fn grad_norms_match_an_independent_gradient() {
    use nnc::internals::runtime::interp::{self, Feeds, Tensor};
    let p = program(NORMS);
    let prep = nnc::internals::train::trainer::prepare(&p, Path::new(".")).expect("data");
    let rows = nnc::internals::train::trainer::roles(&prep.parts).0.to_vec();
    assert_eq!(rows.len(), 60);
    let arrays = nnc::internals::data::gather(&prep.ds, &rows);
    let inputs: Vec<Tensor<f64>> = p
        .train
        .inputs
        .iter()
        .map(|i| {
            let a = &arrays[&i.name];
            match &a.data {
                nnc::internals::data::ArrayData::F32(v) => {
                    Tensor::f(a.shape.clone(), v.iter().map(|&x| f64::from(x)).collect())
                }
                nnc::internals::data::ArrayData::I32(v) => Tensor::i(a.shape.clone(), v.clone()),
            }
        })
        .collect();
    let gr = nnc::internals::autodiff::grad_program(&p.train).expect("grad");
    let (mut params, states) = nnc::internals::runtime::init::init_all(&p.train, 2);
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    // Per epoch: (name, ||g||, ||w||) at the epoch's start, then the sgd step.
    let mut want = Vec::new();
    for _ in 0..2 {
        let feeds = Feeds { inputs: inputs.clone(), params: params.clone(), states: states.clone(), seed: 0, step: 0 };
        let r = interp::run(&gr.graph, &feeds).expect("run");
        let mut epoch = Vec::new();
        for (i, d) in p.train.params.iter().enumerate() {
            let g = r.get(gr.grads[i]).floats().to_vec();
            epoch.push((d.name.clone(), norm(&g), norm(&params[i])));
            for (w, gi) in params[i].iter_mut().zip(&g) {
                *w -= 0.1 * gi;
            }
        }
        want.push(epoch);
    }
    for jit in [true, false] {
        let dir = out_dir(if jit { "norms_jit" } else { "norms_interp" });
        run(&p, &dir, false, jit).expect("train");
        let log = log_of(&dir);
        assert_eq!(log.len(), 2);
        for (row, epoch) in log.iter().zip(&want) {
            for (name, g, w) in epoch {
                let got = row[&format!("grad_norm.{name}")];
                assert!((got - g).abs() <= 1e-4 * g, "jit {jit}, {name}: logged {got}, computed {g}");
                let ratio = row[&format!("update_ratio.{name}")];
                if *w == 0.0 {
                    // A bias at its zero initializer has no ratio.
                    assert!(ratio.is_nan(), "jit {jit}, {name}: {ratio}");
                } else {
                    let r = 0.1 * g / w;
                    assert!((ratio - r).abs() <= 1e-4 * r, "jit {jit}, {name}: logged ratio {ratio}, computed {r}");
                }
            }
        }
        assert!(log[1]["update_ratio.a.b"].is_finite(), "after the first step the bias is not 0");
        let png = std::fs::read(dir.join("grad_norms.png")).expect("grad_norms.png");
        assert!(png.starts_with(b"\x89PNG"));
    }
}

/// Without `log_grad_norms` nothing changes: no monitoring outputs in the step graph, no
/// columns, no plot; with it, the training itself is the same (bit for bit here).
#[test]
fn grad_norms_off_changes_nothing() {
    let on = program(NORMS);
    let off = program(&NORMS.replace("  log_grad_norms = true", ""));
    assert!(!off.settings.log_grad_norms);
    let outputs = |p: &nnc::internals::ir::Program| {
        let g = nnc::internals::optim::update::step_graph(&p.train, &p.settings).expect("step graph");
        g.outputs.iter().filter(|(n, _)| n.starts_with(nnc::internals::optim::update::MONITOR_PREFIX)).count()
    };
    assert_eq!(outputs(&off), 0);
    assert_eq!(outputs(&on), 3 * on.train.params.len());
    let (a, b) = (out_dir("norms_on"), out_dir("norms_off"));
    run(&on, &a, false, true).expect("on");
    run(&off, &b, false, true).expect("off");
    let header =
        |d: &Path| std::fs::read_to_string(d.join("metrics.csv")).expect("csv").lines().next().map(String::from);
    let off_header = header(&b).expect("header");
    assert!(!off_header.contains("grad_norm") && !off_header.contains("update_ratio"), "{off_header}");
    let on_header = header(&a).expect("header");
    for name in ["a.W", "a.b", "b.W", "b.b"] {
        assert!(
            on_header.contains(&format!("grad_norm.{name}")) && on_header.contains(&format!("update_ratio.{name}"))
        );
    }
    assert!(!b.join("grad_norms.png").exists());
    let (la, lb) = (log_of(&a), log_of(&b));
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x["train_loss"], y["train_loss"]);
    }
    assert_eq!(params(&a), params(&b));
}

/// `log_grad_norms` is true or false, and needs a compiled update step.
#[test]
fn grad_norms_setting_is_checked() {
    let bad = NORMS.replace("log_grad_norms = true", "log_grad_norms = 1");
    let e = nnc::internals::pipeline::compile_source("m.nn", &bad, None).err().expect("a number is refused");
    assert!(e.diagnostics.iter().any(|d| d.code == "E0603" && d.message.contains("true or false")));
    let lbfgs = NORMS.replace("sgd(lr = 0.1)", "lbfgs");
    let e = nnc::internals::pipeline::compile_source("m.nn", &lbfgs, None).err().expect("lbfgs is refused");
    assert!(e.diagnostics.iter().any(|d| d.code == "E0612" && d.message.contains("log_grad_norms")));
}
/// BFGS, Newton and Newton-CG train a small MLP through the compiled objective, gradient
/// and Hessian-vector products, on both backends: an epoch is one call of up to
/// `max_iter` iterations, every one ending in a line search, so the training objective
/// (the loss: no regularization here) never rises from epoch to epoch, and it ends below
/// half of ln 2 (the loss of a
/// constant guess). BFGS reaches 90% test accuracy; Newton and Newton-CG stop in a
/// poorer local minimum of this non-convex problem (83%), which Newton's method may
/// converge to as to any point where the Hessian is positive definite.
#[test]
fn second_order_optimizers_train() {
    for opt in ["bfgs(max_iter = 30)", "newton(max_iter = 10)", "newton_cg(max_iter = 15)"] {
        let src = MODEL
            .replace("optimizer = adam(lr = 0.01)", &format!("optimizer = {opt}"))
            .replace("dropout(tanh(a(x)), 0.1)", "tanh(a(x))");
        for jit in [true, false] {
            let dir = out_dir(&format!("second_order_{}_{jit}", opt.split('(').next().unwrap_or("")));
            let r = run(&program(&src), &dir, false, jit).unwrap_or_else(|e| panic!("{opt}: {e}"));
            let log = std::fs::read_to_string(dir.join("metrics.csv")).expect("metrics.csv");
            let losses: Vec<f64> = log
                .lines()
                .skip(1)
                .map(|l| l.split(',').nth(2).expect("train_loss").parse().expect("a number"))
                .collect();
            assert_eq!(losses.len(), 4, "{opt}: 4 epochs\n{log}");
            assert!(losses.windows(2).all(|w| w[1] <= w[0]), "{opt} (jit {jit}): the objective rose\n{log}");
            assert!(losses[3] < 0.5 * std::f64::consts::LN_2, "{opt} (jit {jit})\n{log}");
            if opt.starts_with("bfgs") {
                let acc = r.test.get("test_accuracy").copied().unwrap_or(0.0);
                assert!(acc > 0.9, "{opt} (jit {jit}) on moons: test accuracy {acc}");
            }
        }
    }
}

/// Logistic regression with l2 (one optimum): every host-loop optimizer, through the
/// compiled f32 objective, ends at the same training objective (within 4 f32 ulps) and
/// parameters: within 2·√(2 ε f / l2), the distance along which an l2-strongly convex
/// objective changes by less than f32 can resolve (ε f), where every line search stops.
#[test]
fn host_optimizers_reach_one_optimum() {
    let src = "model N {\n input x: [B, 2]\n input y: [B]\n param w: [2] = zeros\n param b: [] = zeros\n z = x @ w + b\n output p = sigmoid(z)\n loss = bce_logits(z, y)\n train { data = spirals(n = 400, classes = 2, seed = 0)  optimizer = OPT  l2 = 1e-2  epochs = 3 }\n}\n";
    let mut results = Vec::new();
    for opt in ["lbfgs", "bfgs", "newton", "newton(line_search = false)", "newton_cg"] {
        let dir = out_dir(&format!("one_optimum_{}", results.len()));
        run(&program(&src.replace("OPT", opt)), &dir, false, true).unwrap_or_else(|e| panic!("{opt}: {e}"));
        let log = std::fs::read_to_string(dir.join("metrics.csv")).expect("metrics.csv");
        let last = log.lines().last().expect("a row").split(',').nth(2).expect("train_loss").to_string();
        let p = params(&dir);
        let w: Vec<f64> = ["w", "b"].iter().flat_map(|k| p[*k].floats().expect("floats").to_vec()).collect();
        // train_loss is the loss alone; the objective adds l2/2 · |w|² (every parameter decays).
        let objective = last.parse::<f64>().expect("a number") + 0.5e-2 * w.iter().map(|v| v * v).sum::<f64>();
        results.push((opt, objective, w));
    }
    let (_, f0, w0) = &results[0];
    let eps = f64::from(f32::EPSILON);
    let reach = 2.0 * (2.0 * eps * f0 / 1e-2).sqrt();
    for (opt, f, w) in &results {
        assert!((f - f0).abs() <= 4.0 * eps * f0, "{opt}: objective {f}, lbfgs {f0}");
        let dist = w.iter().zip(w0).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        assert!(dist <= reach, "{opt}: parameters {w:?}, lbfgs {w0:?}: {dist:e} apart, more than {reach:e}");
    }
}

/// Newton and BFGS refuse a model above their parameter limits, naming its count; the
/// Hessian-free Newton-CG takes it.
#[test]
fn dense_second_order_methods_refuse_large_models() {
    // 64·40 + 40 + 40·2 + 2 = 2,682 parameters: above Newton's 2,000, below BFGS's 5,000.
    let src = MODEL.replace("Dense(2, 8)", "Dense(2, 800)").replace("Dense(8, 2)", "Dense(800, 2)");
    let n = 2 * 800 + 800 + 800 * 2 + 2;
    let with = |opt: &str| program(&src.replace("optimizer = adam(lr = 0.01)", &format!("optimizer = {opt}")));
    let err = nnc::internals::train::session::Session::new(&with("newton"), nnc::Backend::Jit, 1)
        .err()
        .expect("newton refuses");
    assert!(err.contains(&format!("{n} parameters")) && err.contains("at most 2000"), "{err}");
    assert!(nnc::internals::train::session::Session::new(&with("bfgs"), nnc::Backend::Jit, 1).is_ok());
    assert!(nnc::internals::train::session::Session::new(&with("newton_cg"), nnc::Backend::Jit, 1).is_ok());
    let big = MODEL.replace("Dense(2, 8)", "Dense(2, 2000)").replace("Dense(8, 2)", "Dense(2000, 2)");
    let n = 2 * 2000 + 2000 + 2000 * 2 + 2;
    let p = program(&big.replace("optimizer = adam(lr = 0.01)", "optimizer = bfgs"));
    let err = nnc::internals::train::session::Session::new(&p, nnc::Backend::Jit, 1).err().expect("bfgs refuses");
    assert!(err.contains(&format!("{n} parameters")) && err.contains("at most 5000"), "{err}");
}

/// The host-loop optimizers have no compiled update: proximal l1 and pruning are refused
/// with E0612, naming the optimizer.
#[test]
fn host_optimizers_refuse_proximal_l1_and_pruning() {
    for opt in ["lbfgs", "bfgs", "newton", "newton_cg"] {
        for extra in ["l1 = 1e-3  l1_method = proximal", "prune = gradual(final = 0.5, start = 1, end = 2)"] {
            let src = MODEL.replace("optimizer = adam(lr = 0.01)", &format!("optimizer = {opt}  {extra}"));
            let e = nnc::internals::pipeline::compile_source("m.nn", &src, None).err().expect("refused");
            let d = e.diagnostics.iter().find(|d| d.code == "E0612").expect("E0612");
            assert!(d.message.contains(&format!("`{opt}` has none")), "{opt}, {extra}: {}", d.message);
        }
    }
}
