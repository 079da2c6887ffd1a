//! Evaluation that cannot lie: metrics follow the prediction the loss scores, `eval`
//! rebuilds exactly the split a checkpoint held out (or refuses), checkpoints carry their
//! preprocessing wherever they are read, names say which rows and which average a number
//! is; cross-validation, comparison and ensembles on top; and writes that never destroy a
//! file that is not nnc's to replace.

use nnc::internals::train::session::Next;
use nnc::internals::train::trainer::{evaluate, train, TrainOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

fn program(src: &str) -> nnc::internals::ir::Program {
    match nnc::internals::pipeline::compile_source("m.nn", src, None) {
        Ok(mut c) => c.programs.remove(0),
        Err(e) => panic!("{}", nnc::internals::diagnostic::render(&e.diagnostics, &e.sources, Default::default())),
    }
}

fn fresh(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("evaluation").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create folder");
    d
}

fn fit(p: &nnc::internals::ir::Program, src: &str, base: &Path, out: &Path) -> nnc::internals::train::trainer::Report {
    let opts = TrainOptions {
        out_dir: out.to_path_buf(),
        resume: false,
        backend: nnc::Backend::Jit,
        threads: 1,
        source: src.into(),
    };
    train(p, base, &opts, &AtomicBool::new(false), &mut |_| Next::Continue).expect("train")
}

fn nnc(args: &[&str], dir: &Path) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_nnc")).args(args).current_dir(dir).output().expect("run nnc");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// Three well-separated blobs, a hidden output declared before the logits.
const HIDDEN_FIRST: &str = "model M {\n input x: [B, 2]\n input y: i32[B]\n layer fc1 = Dense(2, 16)\n layer fc2 = Dense(16, 3)\n output hidden = relu(fc1(x))\n output logits = fc2(hidden)\n loss = cross_entropy(logits, y)\n train { data = blobs(n = 300, centers = 3, std = 0.5, seed = 1)  split = [0.7, 0.3]\n optimizer = adam(lr = 0.05)  batch = 32  epochs = 15 }\n}\n";

#[test]
fn metrics_follow_the_prediction_the_loss_scores() {
    let p = program(HIDDEN_FIRST);
    let t = nnc::internals::train::target::target(&p).expect("a target");
    assert_eq!(t.output, "logits");
    let out = fresh("hidden_first");
    let r = fit(&p, HIDDEN_FIRST, Path::new("."), &out);
    // On the first output (16 relu units read as 16 "classes") this was near chance.
    assert!(r.test["test_accuracy"] > 0.9, "{:?}", r.test);
    assert!(r.notes.iter().any(|n| n.contains("`logits`, the prediction cross_entropy scores")), "{:?}", r.notes);
}

#[test]
fn a_loss_that_does_not_settle_the_prediction_gets_no_guess() {
    // Two predictions scored by two losses: nnc cannot tell which one the metrics are for.
    let two = "model M {\n input x: [B, 2]\n input y: i32[B]\n layer a = Dense(2, 3)\n layer b = Dense(2, 3)\n output p = a(x)\n output q = b(x)\n loss = cross_entropy(p, y) + cross_entropy(q, y)\n}\n";
    let e = nnc::internals::train::target::target(&program(two)).expect_err("ambiguous");
    assert!(e.contains("metrics_on"), "{e}");
    let chosen = two.replace(
        "loss = cross_entropy(p, y) + cross_entropy(q, y)\n",
        "loss = cross_entropy(p, y) + cross_entropy(q, y)\n train { metrics_on = q }\n",
    );
    assert_eq!(nnc::internals::train::target::target(&program(&chosen)).expect("chosen").output, "q");
    // A name that is no output is a compile error with the outputs listed.
    let bad = two.replace(
        "loss = cross_entropy(p, y) + cross_entropy(q, y)\n",
        "loss = cross_entropy(p, y)\n train { metrics_on = r }\n",
    );
    let Err(e) = nnc::internals::pipeline::compile_source("m.nn", &bad, None) else { panic!("compiled") };
    let text = nnc::internals::diagnostic::render(&e.diagnostics, &e.sources, Default::default());
    assert!(text.contains("E0613") && text.contains("has no output `r`") && text.contains("p, q"), "{text}");
}

#[test]
fn a_prediction_that_is_not_an_output_is_still_scored() {
    // neuron.nn's shape: the loss scores the logit z, the declared output is sigmoid(z).
    let src = "model N {\n input x: [B, 2]\n input y: [B]\n param w: [2] = normal(0.1)\n param b: [] = zeros\n z = x @ w + b\n output p = sigmoid(z)\n loss = bce_logits(z, y)\n train { data = blobs(n = 200, centers = 2, std = 0.5, seed = 1)  preprocess = standardize  split = [0.7, 0.3]  optimizer = sgd(lr = 0.1)  epochs = 10 }\n}\n";
    let p = program(src);
    let t = nnc::internals::train::target::target(&p).expect("target");
    assert_eq!(t.output, nnc::internals::train::target::SCORED_OUTPUT);
    let r = fit(&p, src, Path::new("."), &fresh("scored_output"));
    assert!(r.test["test_accuracy"] > 0.9, "{:?}", r.test);
}

/// The digits with a seed other than the file's: `eval` must score the rows that run held
/// out, not the file's split.
#[test]
fn eval_rebuilds_the_checkpoints_split() {
    let dir = fresh("split");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    std::fs::copy(&data, dir.join("digits.csv.gz")).expect("copy data");
    let src = "model D {\n input x: [B, 64]\n input y: i32[B]\n layer fc = Dense(64, 10)\n output logits = fc(x)\n loss = cross_entropy(logits, y)\n train { data = csv(\"digits.csv.gz\", label = -1)  preprocess = standardize  split = [0.8, 0.2]\n optimizer = adam(lr = 0.01)  epochs = 3  seed = 0 }\n}\n";
    let mut p = program(src);
    p.settings.seed = 3; // as `--set seed=3`: the split seed follows
    let out = dir.join("run");
    let r = fit(&p, src, &dir, &out);
    let ck = out.join("last.safetensors");
    let e = evaluate(&program(src), &dir, &ck, nnc::Backend::Jit, src).expect("eval");
    assert_eq!(e.eval.shown["accuracy"], r.test["test_accuracy"], "eval scored other rows than training held out");
    assert!(e.notes.iter().any(|n| n.contains("split_seed 3")), "{:?}", e.notes);
    assert_eq!(e.held_data.1.len(), 359);
    // A changed split in the file does not move the checkpoint's test rows.
    let resplit = src.replace("split = [0.8, 0.2]", "split = [0.5, 0.5]");
    let e2 = evaluate(&program(&resplit), &dir, &ck, nnc::Backend::Jit, &resplit).expect("eval");
    assert_eq!(e2.held_data.1, e.held_data.1);
    assert!(e2.notes.iter().any(|n| n.contains("different version")), "{:?}", e2.notes);
    // A changed data file: refused, not scored.
    let text = {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&data).expect("open")).read_to_string(&mut s).expect("gunzip");
        s
    };
    let mut lines: Vec<&str> = text.lines().collect();
    lines.truncate(lines.len() - 1);
    std::fs::remove_file(dir.join("digits.csv.gz")).expect("rm");
    std::fs::write(dir.join("digits.csv"), lines.join("\n")).expect("write csv");
    let changed = src.replace("digits.csv.gz", "digits.csv");
    let err = evaluate(&program(&changed), &dir, &ck, nnc::Backend::Jit, &changed).expect_err("data changed");
    assert!(err.contains("the data changed") && err.contains("1796 rows"), "{err}");
}

#[test]
fn the_split_seed_is_separate_from_the_init_seed() {
    let src = HIDDEN_FIRST.replace("epochs = 15", "epochs = 1  split_seed = 7");
    let a = program(&src);
    let mut b = a.clone();
    b.settings.seed = 11;
    let (raw, _) = nnc::internals::train::trainer::load_data(&a, Path::new(".")).expect("data");
    let pa = nnc::internals::train::trainer::split_rows(&a, &raw).expect("split");
    let pb = nnc::internals::train::trainer::split_rows(&b, &raw).expect("split");
    assert_eq!(pa, pb);
    let mut c = a.clone();
    c.settings.split_seed = Some(8);
    assert_ne!(pa, nnc::internals::train::trainer::split_rows(&c, &raw).expect("split"));
}

#[test]
fn binary_metrics_are_the_positive_classs_and_multiclass_ones_say_macro() {
    use nnc::internals::data::{Array, ArrayData, Dataset};
    use nnc::internals::train::target::{report, Scores};
    use std::collections::BTreeMap;
    // Labels 1 1 1 0 0, one logit: predictions 1 1 0 0 1 (logit > 0).
    let ds = Dataset {
        n: 5,
        arrays: BTreeMap::from([(
            "y".to_string(),
            Array { shape: vec![5], data: ArrayData::F32(vec![1., 1., 1., 0., 0.]) },
        )]),
    };
    let rows: Vec<usize> = (0..5).collect();
    let sc = Scores { loss: 0.5, values: vec![2.0, 1.0, -1.0, -2.0, 0.5], width: 1 };
    let want: Vec<String> = ["accuracy", "precision", "recall", "f1"].iter().map(|s| s.to_string()).collect();
    let e = report(&ds, &rows, &sc, nnc::internals::metrics::ScoreKind::Logits, "test_", &want);
    // Positive class: tp 2, fp 1, fn 1.
    assert_eq!(e.shown["test_precision"], 2.0 / 3.0);
    assert_eq!(e.shown["test_recall"], 2.0 / 3.0);
    assert!(e.all.contains_key("test_f1_macro") && !e.shown.contains_key("test_f1_macro"));
    assert!(e.confusion.is_some(), "a one-logit model has a confusion matrix");
    // Three classes: the plain names do not exist; the macro ones are shown and named.
    let ds3 = Dataset {
        n: 3,
        arrays: BTreeMap::from([("y".to_string(), Array { shape: vec![3], data: ArrayData::I32(vec![0, 1, 2]) })]),
    };
    let sc3 = Scores { loss: 0.1, values: vec![3., 0., 0., 0., 3., 0., 3., 0., 0.], width: 3 };
    let want3: Vec<String> = ["accuracy", "f1", "auc"].iter().map(|s| s.to_string()).collect();
    let e3 = report(&ds3, &[0, 1, 2], &sc3, nnc::internals::metrics::ScoreKind::Logits, "", &want3);
    assert!(e3.shown.contains_key("f1_macro") && !e3.shown.contains_key("f1"), "{:?}", e3.shown);
    assert!(e3.shown.contains_key("auc_ovr"));
    assert!(e3.notes.iter().any(|n| n.contains("macro")), "{:?}", e3.notes);
    // A regressor asked for classification metrics says why they are missing.
    let dsr = Dataset {
        n: 3,
        arrays: BTreeMap::from([(
            "y".to_string(),
            Array { shape: vec![3], data: ArrayData::F32(vec![0.5, 1.5, 2.5]) },
        )]),
    };
    let scr = Scores { loss: 0.1, values: vec![0.4, 1.5, 2.0], width: 1 };
    let er = report(
        &dsr,
        &[0, 1, 2],
        &scr,
        nnc::internals::metrics::ScoreKind::Logits,
        "",
        &["accuracy".into(), "auc".into()],
    );
    assert!(er.shown.contains_key("mse") && !er.shown.contains_key("accuracy"));
    assert!(er.notes.iter().any(|n| n.contains("auc skipped")), "{:?}", er.notes);
}

const DIGITS: &str = "examples/digits.nn";

/// Runs in a copy of `examples/` so parallel tests do not share run folders.
fn examples_copy(name: &str) -> PathBuf {
    let d = fresh(name);
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    std::fs::create_dir_all(d.join("data")).expect("mkdir");
    std::fs::copy(ex.join("data/digits.csv.gz"), d.join("data/digits.csv.gz")).expect("copy");
    for f in ["digits.nn", "digits_linear.nn"] {
        std::fs::copy(ex.join(f), d.join(f)).expect("copy");
    }
    d
}

#[test]
fn cli_predict_applies_a_checkpoints_preprocessing_however_it_is_passed() {
    let d = examples_copy("predict");
    let _ = DIGITS;
    let (code, _, err) = nnc(&["train", "digits.nn", "--set", "epochs=2", "--out", "run"], &d);
    assert_eq!(code, 0, "{err}");
    // Inputs: the first 5 raw rows of the data.
    let (raw, _) = nnc::internals::train::trainer::load_data(
        &program(&std::fs::read_to_string(d.join("digits.nn")).expect("read")),
        &d,
    )
    .expect("data");
    let x = raw.get("x").and_then(|a| a.as_f32()).expect("x")[..5 * 64].iter().map(|&v| f64::from(v)).collect();
    let mut m = nnc::internals::tensors::TensorMap::new();
    m.insert("x".into(), nnc::internals::tensors::HostTensor::f32(vec![5, 64], x));
    nnc::internals::tensors::write(&d.join("in.safetensors"), &m, None).expect("write inputs");
    for (flag, out) in [("--params", "a.safetensors"), ("--checkpoint", "b.safetensors")] {
        let (code, _, err) = nnc(
            &["predict", "digits.nn", flag, "run/last.safetensors", "--inputs", "in.safetensors", "--out", out],
            &d,
        );
        assert_eq!(code, 0, "{err}");
    }
    let a = nnc::internals::tensors::read(&d.join("a.safetensors")).expect("a");
    let b = nnc::internals::tensors::read(&d.join("b.safetensors")).expect("b");
    assert_eq!(a["logits"].floats(), b["logits"].floats());
    // The same logits as eval's model sees: train with no preprocessing differs.
    let (code, _, err) = nnc(&["eval", "digits.nn", "--checkpoint", "run/last.safetensors", "--json"], &d);
    assert_eq!(code, 0, "{err}");
    // A checkpoint stripped of its preprocessing is refused, not scored raw.
    let mut t = nnc::internals::tensors::read(&d.join("run/last.safetensors")).expect("ck");
    t.retain(|k, _| !k.starts_with("preprocess."));
    let (_, meta) = nnc::internals::train::checkpoint::read(&d.join("run/last.safetensors")).expect("meta");
    nnc::internals::tensors::write(&d.join("stripped.safetensors"), &t, Some(meta)).expect("write");
    let (code, _, err) = nnc(&["eval", "digits.nn", "--checkpoint", "stripped.safetensors"], &d);
    assert_eq!(code, 1);
    assert!(err.contains("no `preprocess.*` tensors"), "{err}");
    let (code, _, err) = nnc(
        &[
            "predict",
            "digits.nn",
            "--params",
            "stripped.safetensors",
            "--inputs",
            "in.safetensors",
            "--out",
            "c.safetensors",
        ],
        &d,
    );
    assert_eq!(code, 1, "{err}");
    // A changed model file warns.
    let edited = std::fs::read_to_string(d.join("digits.nn")).expect("read") + "\n# edited\n";
    std::fs::write(d.join("digits.nn"), edited).expect("write");
    let (code, _, err) = nnc(&["eval", "digits.nn", "--checkpoint", "run/last.safetensors"], &d);
    assert_eq!(code, 0);
    assert!(err.contains("different version of this model file"), "{err}");
}

#[test]
fn cli_eval_json_has_the_confusion_matrix_and_names_the_rows() {
    let d = examples_copy("eval_json");
    let (code, _, err) = nnc(&["train", "digits.nn", "--set", "epochs=1", "--out", "run"], &d);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = nnc(&["eval", "digits.nn", "--checkpoint", "run/last.safetensors", "--json"], &d);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"confusion\": [[") && out.contains("\"f1_weighted\""), "{out}");
    let (_, out, _) = nnc(&["eval", "digits.nn", "--checkpoint", "run/last.safetensors"], &d);
    assert!(out.starts_with("on the test split (359 rows):"), "{out}");
    // Without a split the numbers are named for the training rows.
    let (code, out, err) =
        nnc(&["train", "digits.nn", "--set", "epochs=1", "--out", "nosplit", "--set", "split_seed=1"], &d);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("test_accuracy"), "{out}");
    let nosplit = std::fs::read_to_string(d.join("digits.nn")).expect("read").replace("split = [0.8, 0.2]", "");
    std::fs::write(d.join("nosplit.nn"), nosplit).expect("write");
    let (code, out, err) = nnc(&["train", "nosplit.nn", "--set", "epochs=1", "--out", "ns"], &d);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("train_accuracy") && !out.contains("test_"), "{out}");
    assert!(err.contains("best epoch: 1 (lowest train_loss") && err.contains("no validation split"), "{err}");
}

#[test]
fn cli_cv_compare_and_ensembles() {
    let d = examples_copy("cv");
    let (code, out, err) = nnc(&["cv", "digits.nn", "--folds", "3", "--set", "epochs=2", "--out", "cvrun"], &d);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("fold ")).count(), 3, "{out}");
    assert!(out.contains("cv_accuracy: ") && out.contains("(3 folds)"), "{out}");
    let csv = std::fs::read_to_string(d.join("cvrun/cv.csv")).expect("cv.csv");
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.starts_with("fold,train_rows,test_rows,accuracy,loss"), "{csv}");
    // 1797 rows in 3 folds of 599: every fold trains on 1198 rows, 37 batches of 32 and one
    // of 14: two compiled steps for all the folds.
    assert!(err.contains("(2 training steps compiled)"), "{err}");
    // The same folder again is refused (no silent replacement) and --force replaces.
    let (code, _, err) = nnc(&["cv", "digits.nn", "--folds", "3", "--set", "epochs=1", "--out", "cvrun"], &d);
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = nnc(&["cv", "digits.nn", "--folds", "bad"], &d);
    assert_eq!(code, 2);
    let (code, out, err) = nnc(&["compare", "digits.nn", "digits_linear.nn", "--set", "epochs=2"], &d);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("p_value: ") && out.contains("McNemar") && out.contains("verdict: "), "{out}");
    assert!(out.contains("Digits: 9610 parameters"), "{out}");
    let (code, out, err) = nnc(&["compare", "digits.nn", "digits_linear.nn", "--folds", "3", "--set", "epochs=1"], &d);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("corrected resampled t-test over 3 folds") && out.contains("fold 3:"), "{out}");
    // Models on different data are refused.
    let other = std::fs::read_to_string(d.join("digits_linear.nn"))
        .expect("read")
        .replace("csv(\"data/digits.csv.gz\", label = -1)", "blobs(n = 100, centers = 10, seed = 1)");
    std::fs::write(d.join("other.nn"), other.replace("Dense(64, 10)", "Dense(2, 10)").replace("[B, 64]", "[B, 2]"))
        .expect("write");
    let (code, _, err) = nnc(&["compare", "digits.nn", "other.nn"], &d);
    assert_eq!(code, 1);
    assert!(err.contains("different data"), "{err}");
    // An ensemble of two members on one split.
    let (code, out, err) = nnc(&["train", "digits.nn", "--set", "epochs=2", "--ensemble", "2", "--out", "ens"], &d);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("member 2: ") && out.contains("ensemble of 2: accuracy"), "{out}");
    let (code, out, err) = nnc(
        &[
            "eval",
            "digits.nn",
            "--checkpoint",
            "ens/member-1/last.safetensors",
            "--checkpoint",
            "ens/member-2/last.safetensors",
        ],
        &d,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("member 1 (") && out.contains("ensemble of 2:"), "{out}");
    // predict with both members: each member's outputs and the mean probabilities.
    let (raw, _) = nnc::internals::train::trainer::load_data(
        &program(&std::fs::read_to_string(d.join("digits.nn")).expect("read")),
        &d,
    )
    .expect("data");
    let x = raw.get("x").and_then(|a| a.as_f32()).expect("x")[..3 * 64].iter().map(|&v| f64::from(v)).collect();
    let mut m = nnc::internals::tensors::TensorMap::new();
    m.insert("x".into(), nnc::internals::tensors::HostTensor::f32(vec![3, 64], x));
    nnc::internals::tensors::write(&d.join("in.safetensors"), &m, None).expect("write inputs");
    let (code, _, err) = nnc(
        &[
            "predict",
            "digits.nn",
            "--checkpoint",
            "ens/member-1/last.safetensors",
            "--checkpoint",
            "ens/member-2/last.safetensors",
            "--inputs",
            "in.safetensors",
            "--out",
            "ens.safetensors",
        ],
        &d,
    );
    assert_eq!(code, 0, "{err}");
    let t = nnc::internals::tensors::read(&d.join("ens.safetensors")).expect("read");
    let pr = t["ensemble.probabilities"].floats().expect("floats");
    assert_eq!(t["ensemble.probabilities"].shape, vec![3, 10]);
    for row in pr.chunks(10) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{row:?}");
    }
    assert!(t.contains_key("member1.logits") && t.contains_key("member2.logits"));
}

#[test]
fn a_run_folder_is_never_replaced_silently() {
    let d = examples_copy("runs");
    let (code, _, err) = nnc(&["train", "digits.nn", "--set", "epochs=1"], &d);
    assert_eq!(code, 0, "{err}");
    let first = std::fs::read(d.join("runs/digits/last.safetensors")).expect("first run");
    // The default folder holds a run: the next one goes beside it.
    let (code, _, err) = nnc(&["train", "digits.nn", "--set", "epochs=1", "--set", "seed=4"], &d);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("runs/digits-2"), "{err}");
    assert_eq!(std::fs::read(d.join("runs/digits/last.safetensors")).expect("kept"), first);
    // An explicit folder that holds a run is refused without --resume or --force.
    let (code, _, err) = nnc(&["train", "digits.nn", "--set", "epochs=1", "--out", "runs/digits"], &d);
    assert_eq!(code, 1);
    assert!(err.contains("--resume") && err.contains("--force"), "{err}");
    // A failed run leaves no folder behind.
    let (code, _, _) =
        nnc(&["train", "digits.nn", "--set", "epochs=1", "--set", "split=[0.0, 1.0]", "--out", "nope"], &d);
    assert_ne!(code, 0);
    assert!(!d.join("nope").exists());
}

#[test]
fn resume_refuses_another_run_and_bad_metadata() {
    let d = examples_copy("resume");
    let (code, _, err) = nnc(&["train", "digits.nn", "--set", "epochs=2", "--out", "run"], &d);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) =
        nnc(&["train", "digits.nn", "--set", "epochs=3", "--set", "batch=64", "--out", "run", "--resume"], &d);
    assert_eq!(code, 1);
    assert!(err.contains("batch: 32 then, 64 now"), "{err}");
    let (code, _, err) = nnc(&["train", "digits.nn", "--set", "epochs=3", "--out", "run", "--resume"], &d);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("resuming from epoch 2, step 90"), "{err}");
    let (code, _, err) = nnc(&["train", "digits.nn", "--set", "epochs=3", "--out", "run", "--resume"], &d);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("already finished"), "{err}");
    let ck = d.join("run/last.safetensors");
    let (t, meta) = nnc::internals::train::checkpoint::read(&ck).expect("read");
    for (k, v) in [("nnc.step", "abc"), ("nnc.epoch", "1000000000"), ("nnc.best", "nan"), ("nnc.best_epoch", "9")] {
        let mut m = meta.clone();
        m.insert(k.into(), v.into());
        nnc::internals::tensors::write(&ck, &t, Some(m)).expect("write");
        let (code, _, err) = nnc(&["train", "digits.nn", "--set", "epochs=4", "--out", "run", "--resume"], &d);
        assert_eq!(code, 1, "{k}={v}: {err}");
        assert!(err.contains(k), "{k}: {err}");
    }
    // A missing optimizer state tensor, a wrong shape.
    let opt =
        t.keys().find(|k| !k.starts_with("fc") && !k.starts_with("preprocess")).cloned().expect("an optimizer state");
    let mut broken = t.clone();
    broken.remove(&opt);
    nnc::internals::tensors::write(&ck, &broken, Some(meta.clone())).expect("write");
    let (code, _, err) = nnc(&["train", "digits.nn", "--set", "epochs=4", "--out", "run", "--resume"], &d);
    assert_eq!(code, 1);
    assert!(err.contains(&opt), "{err}");
    let mut reshaped = t.clone();
    let w = reshaped.get_mut("fc1.W").expect("fc1.W");
    w.shape = vec![128, 64];
    nnc::internals::tensors::write(&ck, &reshaped, Some(meta)).expect("write");
    let (code, _, err) = nnc(&["eval", "digits.nn", "--checkpoint", "run/last.safetensors"], &d);
    assert_eq!(code, 1);
    assert!(err.contains("`fc1.W` has shape [128, 64], the model needs [64, 128]"), "{err}");
}

#[cfg(unix)]
#[test]
fn writes_never_replace_what_is_not_a_regular_file() {
    let d = fresh("special");
    // A FIFO and a device are refused and stay what they were.
    let fifo = d.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    let e = nnc::internals::tensors::write_atomic(&fifo, b"x").expect_err("fifo");
    assert!(e.contains("a FIFO") && e.contains("fifo`"), "{e}");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo).expect("stat").file_type().is_fifo());
    let e = nnc::internals::tensors::write_atomic(Path::new("/dev/null"), b"x").expect_err("device");
    assert!(e.contains("character device"), "{e}");
    assert!(std::fs::metadata("/dev/null").expect("stat").file_type().is_char_device());
    // A symlink is written through: the link stays, its target changes.
    std::fs::write(d.join("target.txt"), b"old").expect("write");
    std::os::unix::fs::symlink(d.join("target.txt"), d.join("link.txt")).expect("symlink");
    nnc::internals::tensors::write_atomic(&d.join("link.txt"), b"new").expect("through the link");
    assert!(std::fs::symlink_metadata(d.join("link.txt")).expect("stat").file_type().is_symlink());
    assert_eq!(std::fs::read(d.join("target.txt")).expect("read"), b"new");
    // A failed write names the final path, leaves no temporary file and the old file intact.
    let ro = d.join("ro");
    std::fs::create_dir_all(&ro).expect("mkdir");
    let e = nnc::internals::tensors::write_atomic(&ro.join("sub/none.csv"), b"x").expect_err("no folder");
    assert!(e.contains("sub/none.csv`") && !e.contains(".tmp"), "{e}");
    // Stale temporary files of a dead process are removed, live ones kept.
    std::fs::write(d.join(".last.safetensors.tmp999999999"), b"stale").expect("write");
    let mine = format!(".x.tmp{}", std::process::id());
    std::fs::write(d.join(&mine), b"live").expect("write");
    nnc::internals::tensors::remove_stale_temps(&d);
    assert!(!d.join(".last.safetensors.tmp999999999").exists());
    assert!(d.join(&mine).exists());
}

#[test]
fn jit_writes_i32_outputs_as_i32() {
    let src = "model M {\n input x: [B, 2]\n input y: i32[B]\n layer fc = Dense(2, 3)\n output logits = fc(x)\n output ids = y\n}\n";
    let p = program(src);
    let mut params = nnc::internals::tensors::TensorMap::new();
    params.insert("fc.W".into(), nnc::internals::tensors::HostTensor::f32(vec![2, 3], vec![0.5; 6]));
    params.insert("fc.b".into(), nnc::internals::tensors::HostTensor::f32(vec![3], vec![0.0; 3]));
    let mut inputs = nnc::internals::tensors::TensorMap::new();
    inputs.insert("x".into(), nnc::internals::tensors::HostTensor::f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
    inputs.insert(
        "y".into(),
        nnc::internals::tensors::HostTensor {
            shape: vec![2],
            data: nnc::internals::tensors::HostData::I32(vec![7, -3]),
        },
    );
    for jit in [true, false] {
        let opts = nnc::internals::runtime::exec::ExecOptions {
            backend: if jit { nnc::Backend::Jit } else { nnc::Backend::Interpreter },
            ..Default::default()
        };
        let r = nnc::internals::runtime::exec::run_named(&p.eval, &params, &inputs, opts).expect("run");
        assert_eq!(r["ids"].data, nnc::internals::tensors::HostData::I32(vec![7, -3]), "jit {jit}");
        assert_eq!(r["ids"].dtype_name(), "i32");
    }
}

#[test]
fn model_arguments_are_set_recorded_and_rebuilt() {
    let d = examples_copy("model_args");
    let (code, _, err) = nnc(&["train", "digits.nn", "--set", "hidden=16", "--set", "epochs=1", "--out", "run"], &d);
    assert_eq!(code, 0, "{err}");
    let t = nnc::internals::tensors::read(&d.join("run/last.safetensors")).expect("read");
    assert_eq!(t["fc1.W"].shape, vec![64, 16]);
    let (_, meta) = nnc::internals::train::checkpoint::read(&d.join("run/last.safetensors")).expect("meta");
    assert_eq!(meta.get("nnc.arg.hidden").map(String::as_str), Some("16"));
    // eval and predict rebuild the model the checkpoint was trained as.
    let (code, _, err) = nnc(&["eval", "digits.nn", "--checkpoint", "run/last.safetensors"], &d);
    assert_eq!(code, 0, "{err}");
    // Resuming with another width is another run.
    let (code, _, err) =
        nnc(&["train", "digits.nn", "--set", "hidden=32", "--set", "epochs=2", "--out", "run", "--resume"], &d);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("arg.hidden: 16 then, 32 now"), "{err}");
    // A key that is neither a setting nor an argument, and a value of the wrong kind.
    let (code, _, err) = nnc(&["train", "digits.nn", "--set", "hiden=3"], &d);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("did you mean `hidden`?") && err.contains("its arguments are: hidden, p"), "{err}");
    let (code, _, err) = nnc(&["train", "digits.nn", "--set", "hidden=2.5", "--color", "never"], &d);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("argument `hidden` of model `Digits` must be an integer, found 2.5"), "{err}");
    assert!(!d.join("runs").exists());
}

#[test]
fn a_wrong_preprocessing_tensor_is_named() {
    let d = examples_copy("pre_shape");
    let (code, _, err) = nnc(&["train", "digits.nn", "--set", "epochs=1", "--out", "run"], &d);
    assert_eq!(code, 0, "{err}");
    let ck = d.join("run/last.safetensors");
    let (t, meta) = nnc::internals::train::checkpoint::read(&ck).expect("read");
    for (name, n) in [("preprocess.mean", 63usize), ("preprocess.scale", 63)] {
        let mut u = t.clone();
        u.insert(name.into(), nnc::internals::tensors::HostTensor::f32(vec![n], vec![1.0; n]));
        nnc::internals::tensors::write(&d.join("bad.safetensors"), &u, Some(meta.clone())).expect("write");
        let (code, _, err) = nnc(&["eval", "digits.nn", "--checkpoint", "bad.safetensors"], &d);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(name), "{name}: {err}");
        if name == "preprocess.mean" {
            // Both tensors are shown: the mean is the odd one.
            assert!(err.contains("[63]") && err.contains("[64]"), "{err}");
        }
    }
}
