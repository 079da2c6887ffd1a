//! The library's front door (`nnc::Model`, `nnc::Predictor`, `nnc::Error`), as a
//! program embedding nnc uses it: typed errors that say where, settings with the
//! command line's checks, inspection, training with an observer that stops the run, a
//! predictor equal to the eval graph the command line runs, and the public surface
//! itself (a snapshot: a change to it must be deliberate).

use nnc::{Backend, Control, CvConfig, Error, Model, TrainConfig};
use std::path::{Path, PathBuf};

const MOONS: &str = "model Moons(hidden: int = 8) {
    input x: [B, 2]
    input y: i32[B]
    layer fc1 = Dense(2, hidden)
    layer fc2 = Dense(hidden, 2)
    output logits = fc2(tanh(fc1(x)))
    loss = cross_entropy(logits, y)
    train { data = moons(n = 200, noise = 0.1, seed = 1)  split = [0.7, 0.15, 0.15]
            optimizer = adam(lr = 0.02)  batch = 32  epochs = 6  preprocess = standardize }
}
";

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnc-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn a_compile_error_carries_its_diagnostics() {
    let src = "model M {\n input x: [B, 4]\n layer fc = Dense(3, 2)\n output y = fc(x)\n}\n";
    let Err(Error::Compile(c)) = Model::from_source("m.nn", src) else { panic!("compiled") };
    let d = &c.diagnostics[0];
    assert!(d.code.starts_with('E'), "{}", d.code);
    let (line, _) = c.sources.line_col(d.span.file, d.span.start);
    assert_eq!(line, 4, "{}", d.message);
    assert!(c.render(Default::default()).contains("m.nn:4:"), "{}", c.render(Default::default()));
}

#[test]
fn a_data_error_says_file_line_and_column() {
    let d = dir("data");
    std::fs::write(d.join("bad.csv"), "1,2,0\n3,,1\n").expect("write");
    let src = "model M {\n input x: [B, 2]\n input y: i32[B]\n layer fc = Dense(2, 2)\n output z = fc(x)\n \
               loss = cross_entropy(z, y)\n train { data = csv(\"bad.csv\") epochs = 1 }\n}\n";
    let m = Model::from_source("m.nn", src).expect("compiles").in_dir(&d).expect("dir");
    let err = m.train(&TrainConfig::new(d.join("run")), &mut nnc::Quiet).expect_err("bad data");
    let Error::Data { file, line, column, message } = &err else { panic!("{err:?}") };
    assert_eq!((file.as_path(), *line, *column), (d.join("bad.csv").as_path(), Some(2), Some(2)), "{message}");
    assert!(message.contains("empty value"), "{message}");
    assert_eq!(err.exit_code(), 1);
}

#[test]
fn settings_and_arguments_take_the_command_lines_checks() {
    let m = Model::from_source("moons.nn", MOONS).expect("compiles");
    assert_eq!(m.params()[0].shape, vec![2, 8]);
    let wide = m.clone().with("hidden", 32).expect("argument");
    assert_eq!(wide.params()[0].shape, vec![2, 32]);
    // A key given again is replaced, not refused.
    let again = wide.with("hidden", 4).expect("again");
    assert_eq!(again.params()[0].shape, vec![2, 4]);
    assert_eq!(again.settings(), ["hidden=4"]);
    for (k, v) in [("nosuch", "1"), ("epochs", "-3"), ("optimizer", "adamm(lr = 1)")] {
        let e = m.clone().with(k, v).expect_err(k);
        assert!(matches!(e, Error::Usage(_)), "{k}: {e:?}");
        assert_eq!(e.exit_code(), 2);
    }
    assert!(matches!(m.clone().with("hidden", 0), Err(Error::Compile(_))));
    // The checks of the train block against the model, for `--set` too (issue 30: both
    // exited 0 from the command line).
    let Err(Error::Usage(msg)) = m.clone().with("metrics_on", "nosuch") else { panic!("accepted") };
    assert!(msg.contains("has no output `nosuch`") && msg.contains("logits"), "{msg}");
    let Err(Error::Usage(msg)) = m.clone().with("schedule", "plateau(min_lr = 10)") else { panic!("accepted") };
    assert!(msg.contains("min_lr = 10") && msg.contains("0.02"), "{msg}");
    assert!(m.clone().with("schedule", "plateau(min_lr = 0.001)").is_ok());
    assert!(matches!(m.clone().select("Other"), Err(Error::Usage(_))));
}

#[test]
fn inspection_reads_shapes_params_and_the_plan() {
    let m = Model::from_source("moons.nn", MOONS).expect("compiles");
    let ins: Vec<String> = m.inputs().iter().map(|t| t.to_string()).collect();
    assert_eq!(ins, ["x: f32[B, 2]", "y: i32[B]"]);
    let outs: Vec<String> = m.outputs().iter().map(|t| t.to_string()).collect();
    assert_eq!(outs, ["logits: f32[B, 2]"]);
    let names: Vec<String> = m.params().iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, ["fc1.W", "fc1.b", "fc2.W", "fc2.b"]);
    assert!(m.params()[0].decay && !m.params()[1].decay);
    let plan = m.plan(Some(16)).expect("plan");
    assert_eq!(plan.batch, 16);
    assert!(plan.kernels > 0 && plan.arena_bytes > 0 && plan.arena_bytes < plan.naive_bytes, "{plan:?}");
    assert_eq!(plan.matmul_flops % (2 * 16), 0, "{plan:?}");
}

#[test]
fn an_observer_stops_the_run_and_the_predictor_equals_the_eval_graph() {
    let d = dir("train");
    let m = Model::from_source("moons.nn", MOONS).expect("compiles");
    let mut epochs = Vec::new();
    let mut stop_at_4 = |e: &nnc::Epoch| {
        epochs.push(e.epoch);
        if e.epoch == 4 {
            Control::Stop
        } else {
            Control::Continue
        }
    };
    let run = m.train(&TrainConfig::new(&d), &mut stop_at_4).expect("trains");
    assert_eq!(epochs, [1, 2, 3, 4]);
    assert!(run.stopped && !run.interrupted && run.epochs_run == 4, "{run:?}");
    assert!(run.test.contains_key("test_accuracy"), "{:?}", run.test);
    // A folder that holds a run is refused without resume or replace.
    let again = m.train(&TrainConfig::new(&d), &mut nnc::Quiet).expect_err("refused");
    assert!(matches!(again, Error::Usage(_)), "{again:?}");
    // The predictor (standardized inputs, compiled at batch 4) against the eval graph
    // run by the interpreter on the same standardized rows.
    let ck = m.load_checkpoint(run.best_checkpoint()).expect("checkpoint");
    let mut p = m.predictor(run.best_checkpoint(), 4).expect("predictor");
    let x = [0.5f32, -0.25, 1.5, 0.75, -1.0, 0.0, 0.1, 0.9];
    let mut got = [0.0f32; 8];
    assert_eq!(p.predict_into(&x, &mut got).expect("predict"), 4);
    let (mean, scale) = (ck.values("preprocess.mean").expect("mean"), ck.values("preprocess.scale").expect("scale"));
    let z: Vec<f64> = x.iter().enumerate().map(|(i, v)| f64::from((v - mean[i % 2]) / scale[i % 2])).collect();
    let prog = nnc::internals::pipeline::compile_source("moons.nn", MOONS, None).expect("c").programs.remove(0);
    let g = nnc::internals::pipeline::predict_graph(&prog, 4).expect("graph");
    let (params, _) = nnc::internals::train::checkpoint::read(&run.best_checkpoint()).expect("read");
    let inputs = nnc::internals::tensors::TensorMap::from([(
        "x".to_string(),
        nnc::internals::tensors::HostTensor::f32(vec![4, 2], z),
    )]);
    let run_opts =
        nnc::internals::runtime::exec::ExecOptions { backend: nnc::Backend::Interpreter, ..Default::default() };
    let want = nnc::internals::runtime::exec::run_named(&g, &params, &inputs, run_opts).expect("interp");
    let want = want["logits"].floats().expect("floats");
    for (a, b) in got.iter().zip(want) {
        assert!((f64::from(*a) - b).abs() <= 1e-5 * (1.0 + b.abs()), "{got:?} vs {want:?}");
    }
    // Fewer rows than the batch: the same first rows.
    let mut two = [0.0f32; 4];
    assert_eq!(p.predict_into(&x[..4], &mut two).expect("two rows"), 2);
    assert_eq!(two, got[..4]);
    // Wrong sizes and names are usage errors, and the predictor goes on.
    assert!(matches!(p.predict_into(&x[..3], &mut two), Err(Error::Usage(_))));
    assert!(matches!(p.set_input("nosuch", &x), Err(Error::Usage(_))));
    assert!(p.predict(&[("x", &x)]).expect("named")["logits"] == got);
}

#[test]
fn a_stop_flag_interrupts_and_resume_continues() {
    let d = dir("stop");
    let m = Model::from_source("moons.nn", MOONS).expect("compiles");
    let cfg = TrainConfig::new(&d);
    cfg.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let run = m.train(&cfg, &mut nnc::Quiet).expect("interrupted run");
    assert!(run.interrupted && run.test.is_empty(), "{run:?}");
    let rest = m.train(&TrainConfig::new(&d).resume(true), &mut nnc::Quiet).expect("resumed");
    assert!(!rest.interrupted && rest.epochs_run == 6, "{rest:?}");
}

#[test]
fn a_checkpoint_of_another_model_names_the_tensor() {
    let d = dir("ck");
    let m = Model::from_source("moons.nn", MOONS).expect("compiles");
    let ck = m.init(0).expect("init");
    let path = d.join("init.safetensors");
    ck.save(&path).expect("save");
    assert_eq!(m.load_checkpoint(&path).expect("own").names().len(), 4);
    let wide = m.with("hidden", 16).expect("wide");
    let Err(Error::Checkpoint { file, key, message }) = wide.load_checkpoint(&path) else { panic!("loaded") };
    assert_eq!(file, path);
    assert_eq!(key.as_deref(), Some("fc1.W"), "{message}");
}

#[test]
fn cross_validation_and_comparison_run_through_the_facade() {
    let m = Model::from_source("moons.nn", MOONS).expect("compiles");
    let mut seen = 0;
    let r = m.cross_validate(&CvConfig::folds(3), &mut |_| seen += 1).expect("cv");
    assert_eq!((r.folds.len(), seen), (3, 3));
    let linear = Model::from_source("moons.nn", MOONS).expect("compiles").with("hidden", 2).expect("narrow");
    let c = m.compare(&linear, Some(nnc::Folds::K(3)), Backend::Jit).expect("compare");
    assert_eq!(c.a.values.len(), 3);
    assert!((0.0..=1.0).contains(&c.p_value), "{}", c.p_value);
}

/// Every public item of the facade (`src/lib.rs`, `src/error.rs`, `src/api/`), one line
/// each: a change to the public surface changes this snapshot, so it is deliberate.
#[test]
fn public_surface() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![root.join("lib.rs"), root.join("error.rs")];
    let mut api: Vec<PathBuf> =
        std::fs::read_dir(root.join("api")).expect("api").filter_map(|e| e.ok().map(|e| e.path())).collect();
    api.sort();
    files.extend(api);
    let mut out = String::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        let name = f.strip_prefix(&root).expect("under src").display().to_string();
        let mut in_test = false;
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with("#[cfg(test)]") {
                in_test = true;
            }
            let public = t.starts_with("pub ") && !t.starts_with("pub(") && !t.starts_with("pub mod ");
            let variant = line.starts_with("    ") && !line.starts_with("        ") && enum_variant(t);
            if in_test || !(public || variant) {
                continue;
            }
            let sig = t.trim_end_matches('{').trim_end_matches(',').trim_end();
            out.push_str(&format!("{name}: {sig}\n"));
        }
    }
    insta::assert_snapshot!(out);
}

/// A line of an enum's body that declares a variant (`Jit,`, `Data {`, `Run(String),`).
fn enum_variant(t: &str) -> bool {
    t.starts_with(|c: char| c.is_ascii_uppercase())
        && (t.ends_with(',') || t.ends_with(" {"))
        && !t.contains("=>")
        && !t.contains(" = ")
}
