//! `nnc train --distributed` under `mpirun -np 2` (feature `mpi`; MPICH's `mpirun`
//! on the PATH): the job ends with rank 0's checkpoint equal to a one-process run's at the
//! same global batch, within the tolerance of tests/data_parallel.rs (the same
//! reassociation of the batch sum; MPI sums the two ranks' f32 gradients in f32, which adds
//! one rounding per step). Ranks compare parameter hashes every epoch (`--check-params`).
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::Command;

const NNC: &str = env!("CARGO_BIN_EXE_nnc");

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("distributed").join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn digits() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join("digits.nn")
}

/// Runs `nnc train` (under `mpirun -np <ranks>` when `ranks` > 0) and returns stderr.
fn train(model: &Path, out: &Path, ranks: usize, sets: &[&str]) -> String {
    let mut cmd = if ranks > 0 {
        let mut c = Command::new("mpirun");
        c.args(["-np", &ranks.to_string(), NNC]);
        c
    } else {
        Command::new(NNC)
    };
    cmd.arg("train").arg(model).arg("--out").arg(out);
    if ranks > 0 {
        cmd.args(["--distributed", "--check-params"]);
    }
    for s in sets {
        cmd.args(["--set", s]);
    }
    let o = cmd.output().expect("run nnc (is mpirun on the PATH?)");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "nnc train failed:\n{err}");
    err
}

fn max_rel_diff(a: &Path, b: &Path) -> (f64, String) {
    let a = nnc::internals::tensors::read(&a.join("last.safetensors")).expect("checkpoint");
    let b = nnc::internals::tensors::read(&b.join("last.safetensors")).expect("checkpoint");
    assert_eq!(a.len(), b.len());
    let mut worst = (0.0, String::new());
    for (k, t) in &a {
        let (x, y) = (t.floats().expect("floats"), b.get(k).and_then(|u| u.floats()).expect(k));
        let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
        let d = x.iter().zip(y.iter()).fold(0.0f64, |m, (p, q)| m.max((p - q).abs())) / scale;
        if d > worst.0 {
            worst = (d, k.clone());
        }
    }
    worst
}

/// As tests/data_parallel.rs.
const TOL: f64 = 1e-5;

fn same_as_one_process(model: &Path, name: &str, sets: &[&str]) {
    let (one, two) = (dir(&format!("{name}-1")), dir(&format!("{name}-2")));
    train(model, &one, 0, sets);
    let err = train(model, &two, 2, sets);
    assert!(err.contains("2 ranks"), "rank 0 reports the step times:\n{err}");
    assert_eq!(err.matches("best epoch").count(), 1, "only rank 0 prints:\n{err}");
    let (d, k) = max_rel_diff(&one, &two);
    assert!(d <= TOL, "{name}: `{k}` differs by {d:e} (relative) between 1 and 2 ranks");
}

/// The README's model (dropout off: each rank draws its own masks).
#[test]
fn digits_mlp_on_two_ranks_equals_one_process() {
    same_as_one_process(&digits(), "mlp", &["p=0", "epochs=3"]);
}

fn write_model(name: &str, body: &str, train: &str) -> PathBuf {
    let d = dir(&format!("{name}-model"));
    std::fs::create_dir_all(&d).expect("dir");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    let src = format!(
        "model M {{\n input x: [B, 64]\n input y: i32[B]\n{body}\n loss = cross_entropy(logits, y)\n \
         train {{ data = csv({:?}, label = -1)  preprocess = standardize  split = [0.8, 0.2]\n \
         batch = 64  epochs = 2  seed = 7  {train} }}\n}}\n",
        data.display().to_string()
    );
    let path = d.join("m.nn");
    std::fs::write(&path, src).expect("write model");
    path
}

#[test]
fn cnn_and_lstm_on_two_ranks_equal_one_process() {
    let cnn = write_model(
        "cnn",
        " layer c = Conv2d(1, 4, 3, padding = 1)\n layer f = Dense(4 * 4 * 4, 10)\n \
         h = maxpool2d(relu(c(reshape(x, [-1, 1, 8, 8]))), 2)\n output logits = f(flatten(h))",
        "optimizer = momentum(lr = 0.01, mu = 0.9)",
    );
    same_as_one_process(&cnn, "cnn", &[]);
    let lstm = write_model(
        "lstm",
        " layer l = LSTM(8, 16)\n layer f = Dense(16, 10)\n output logits = f(l(reshape(x, [-1, 8, 8])))",
        "optimizer = adam(lr = 1e-3)",
    );
    same_as_one_process(&lstm, "lstm", &[]);
    // Synchronized batch norm: statistics and their gradients summed over the ranks
    // inside the step (MPI_Iallreduce from the step's bucket kernels).
    let sync = write_model(
        "sync-bn",
        " layer c = Conv2d(1, 4, 3, padding = 1)\n layer n = BatchNorm(4, sync = true)\n \
         layer f = Dense(4 * 4 * 4, 10)\n h = n(maxpool2d(relu(c(reshape(x, [-1, 1, 8, 8]))), 2))\n \
         output logits = f(flatten(h))",
        "optimizer = adam(lr = 1e-3)",
    );
    same_as_one_process(&sync, "sync-bn", &[]);
}

/// Per-rank batch norm: the ranks stay equal (`--check-params` every epoch) and the job
/// ends normally; `--resume` continues the distributed run.
#[test]
fn batch_norm_ranks_stay_equal_and_resume() {
    let bn = write_model(
        "bn",
        " layer c = Conv2d(1, 4, 3, padding = 1)\n layer n = BatchNorm(4)\n layer f = Dense(4 * 4 * 4, 10)\n \
         h = maxpool2d(relu(n(c(reshape(x, [-1, 1, 8, 8])))), 2)\n output logits = f(flatten(h))",
        "optimizer = adam(lr = 1e-3)",
    );
    let out = dir("bn-run");
    train(&bn, &out, 2, &["epochs=1"]);
    let o = Command::new("mpirun")
        .args(["-np", "2", NNC, "train"])
        .arg(&bn)
        .arg("--out")
        .arg(&out)
        .args(["--distributed", "--check-params", "--resume", "--set", "epochs=2"])
        .output()
        .expect("mpirun");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming from epoch 1"), "{err}");
    let log = std::fs::read_to_string(out.join("metrics.csv")).expect("metrics.csv");
    assert_eq!(log.lines().count(), 3, "a header and two epochs:\n{log}");
}

/// Runs `nnc <args>` (under `mpirun -np 2` with `--distributed` when `ranks`) and returns
/// stdout; the command must succeed.
fn nnc(args: &[&str], ranks: bool) -> String {
    let mut cmd = if ranks {
        let mut c = Command::new("mpirun");
        c.args(["-np", "2", NNC]);
        c
    } else {
        Command::new(NNC)
    };
    cmd.args(args);
    if ranks {
        cmd.arg("--distributed");
    }
    let o = cmd.output().expect("run nnc (is mpirun on the PATH?)");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "nnc {args:?} failed:\n{err}");
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A csv file without its `seconds` column (which varies run to run).
fn without_seconds(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let skip = header.iter().position(|h| *h == "seconds").expect("a seconds column");
    text.lines()
        .map(|l| l.split(',').enumerate().filter(|(i, _)| *i != skip).map(|(_, v)| v.into()).collect())
        .collect()
}

/// `nnc cv --distributed` (3 folds over 2 ranks) and `nnc tune --distributed` (4 random
/// trials over 2 ranks, with the median pruner deciding at epoch 2) write the cv.csv and
/// tune.csv of one process (`tune --jobs 2`), every value but the seconds; rank 0 alone
/// prints.
#[test]
fn cv_and_tune_over_two_ranks_equal_one_process() {
    let m = write_model(
        "search",
        " layer a = Dense(64, 16)\n layer b = Dense(16, 10)\n output logits = b(relu(a(x)))",
        "optimizer = adam(lr = 3e-3)",
    );
    let file = m.to_str().expect("utf-8 path");
    let (one, two) = (dir("cv-1"), dir("cv-2"));
    let cv = |out: &Path, ranks| nnc(&["cv", file, "--folds", "3", "--out", out.to_str().expect("path")], ranks);
    cv(&one, false);
    let out = cv(&two, true);
    assert_eq!(out.matches("fold 2:").count(), 1, "only rank 0 prints:\n{out}");
    assert_eq!(without_seconds(&one.join("cv.csv")), without_seconds(&two.join("cv.csv")));
    let (one, two) = (dir("tune-1"), dir("tune-2"));
    let tune = |out: &Path, ranks: bool| {
        let mut args = vec!["tune", file, "--space", "lr=loguniform(1e-4, 3e-2)", "--method", "random"];
        args.extend([
            "--trials",
            "4",
            "--prune",
            "median(startup = 1, warmup = 1)",
            "--out",
            out.to_str().expect("path"),
        ]);
        if !ranks {
            args.extend(["--jobs", "2"]);
        }
        nnc(&args, ranks)
    };
    let a = tune(&one, false);
    let b = tune(&two, true);
    assert_eq!(without_seconds(&one.join("tune.csv")), without_seconds(&two.join("tune.csv")));
    let best =
        |s: &str| s.lines().filter(|l| l.starts_with("best") || l.starts_with("test_")).collect::<Vec<_>>().join("\n");
    assert_eq!(best(&a), best(&b), "the best trial and its test metrics");
    assert!(two.join("best.safetensors").exists());
}
