//! The training loop: resuming is bit-identical, the partial last batch is trained on,
//! bad labels and a diverging loss are clear errors, Ctrl-C saves a checkpoint.

use nnc::train::trainer::{train, TrainOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

const MODEL: &str = "model M {\n input x: [B, 2]\n input y: i32[B]\n layer a = Dense(2, 8)\n layer b = Dense(8, 2)\n output logits = b(dropout(tanh(a(x)), 0.1))\n loss = cross_entropy(logits, y)\n train { data = moons(n = 200, seed = 3)  split = [0.7, 0.15, 0.15]  optimizer = adam(lr = 0.01)\n batch = 32  epochs = 4  seed = 5 }\n}\n";

fn program(src: &str) -> nnc::ir::Program {
    match nnc::pipeline::compile_source("m.nn", src, None) {
        Ok(mut c) => c.programs.remove(0),
        Err(e) => panic!("{}", nnc::diagnostic::render(&e.diagnostics, &e.sources, Default::default())),
    }
}

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(p: &nnc::ir::Program, dir: &Path, resume: bool, jit: bool) -> Result<nnc::train::trainer::Report, String> {
    let opts = TrainOptions { out_dir: dir.to_path_buf(), resume, jit, threads: 1, source: MODEL.into() };
    train(p, Path::new("."), &opts, &AtomicBool::new(false), &mut |_| {})
}

fn params(dir: &Path) -> nnc::tensors::TensorMap {
    nnc::tensors::read(&dir.join("last.safetensors")).expect("checkpoint")
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
    let opts = TrainOptions { out_dir: resumed.clone(), resume: false, jit: true, threads: 1, source: MODEL.into() };
    let stop = AtomicBool::new(false);
    let mut batches = 0;
    let r = train(&p, Path::new("."), &opts, &stop, &mut |e| {
        if let nnc::train::trainer::Event::Batch { .. } = e {
            batches += 1;
            if batches == 7 {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
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
        let opts = TrainOptions { out_dir: dir.to_path_buf(), resume, jit: true, threads: 1, source: AUG.into() };
        let stop = AtomicBool::new(false);
        let mut batches = 0;
        train(&p, Path::new("."), &opts, &stop, &mut |e| {
            if let nnc::train::trainer::Event::Batch { .. } = e {
                batches += 1;
                if batches == stop_after {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
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
    let opts = TrainOptions { out_dir: resumed.clone(), resume: true, jit: true, threads: 1, source: AUG.into() };
    let err = train(&other, Path::new("."), &opts, &AtomicBool::new(false), &mut |_| {}).expect_err("other recipe");
    assert!(err.contains("augment:"), "{err}");
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
    let opts = TrainOptions { out_dir: dir.clone(), resume: false, jit: true, threads: 1, source: MODEL.into() };
    let r = train(&program(MODEL), Path::new("."), &opts, &AtomicBool::new(true), &mut |_| {}).expect("train");
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
