//! Hyperparameter search (`nnc tune`) and adaptive training: grid enumerates exactly
//! the product, random and TPE are reproducible per seed and do not depend on how many
//! trials run at once, pruned trials are recorded with their epoch, a diverging trial
//! does not end the search, the best checkpoint scores what the search printed; and the
//! schedules that depend on the run (plateau, batch-size schedule, monitored early
//! stopping) against hand-computed values.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fresh(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tune").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create folder");
    d
}

fn nnc(args: &[&str], dir: &Path) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_nnc")).args(args).current_dir(dir).output().expect("run nnc");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// A small digits MLP with a width argument; `train` replaces or adds train settings,
/// `tune` is its `tune` block.
fn model(dir: &Path, train: &[(&str, &str)], tune: &str) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    let data = format!("csv(\"{}\", label = -1)", data.display());
    let mut keys: Vec<(&str, &str)> = vec![
        ("data", &data),
        ("preprocess", "standardize"),
        ("split", "[0.8, 0.2]"),
        ("optimizer", "adam(lr = 3e-3)"),
        ("batch", "64"),
        ("epochs", "6"),
    ];
    for (k, v) in train {
        match keys.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v,
            None => keys.push((k, v)),
        }
    }
    let block: Vec<String> = keys.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    let src = format!(
        "model M(hidden: int = 32, p: float = 0.0) {{\n  input x: [B, 64]\n  input y: i32[B]\n  layer fc1 = Dense(64, hidden)\n  \
         layer fc2 = Dense(hidden, 10)\n  output logits = fc2(dropout(relu(fc1(x)), p))\n  loss = cross_entropy(logits, y)\n  \
         train {{ {} }}\n  {tune}\n}}\n",
        block.join("\n    ")
    );
    let path = dir.join("m.nn");
    std::fs::write(&path, src).expect("write model");
    path
}

/// tune.csv without the seconds column (which varies run to run).
fn rows(dir: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("tune.csv")).expect("tune.csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let skip = header.iter().position(|h| *h == "seconds").expect("seconds column");
    lines.map(|l| l.split(',').enumerate().filter(|(i, _)| *i != skip).map(|(_, v)| v.to_string()).collect()).collect()
}

fn column(dir: &Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("tune.csv")).expect("tune.csv");
    let header: Vec<&str> = text.lines().next().expect("header").split(',').collect();
    let k = header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    text.lines().skip(1).map(|l| l.split(',').nth(k).unwrap_or("").to_string()).collect()
}

#[test]
fn grid_enumerates_exactly_the_product() {
    let d = fresh("grid");
    let m =
        model(&d, &[], "tune { method = grid  prune = none  hidden = choice([8, 16, 32])  batch = choice([32, 64]) }");
    let (code, out, err) = nnc(&["tune", m.to_str().expect("utf-8 path"), "--out", "o", "--set", "epochs=2"], &d);
    assert_eq!(code, 0, "{err}");
    let o = d.join("o");
    let pairs: Vec<(String, String)> = column(&o, "hidden").into_iter().zip(column(&o, "batch")).collect();
    let want: Vec<(String, String)> = ["8", "16", "32"]
        .iter()
        .flat_map(|h| ["32", "64"].iter().map(move |b| (h.to_string(), b.to_string())))
        .collect();
    assert_eq!(pairs, want, "the grid in order, first key slowest");
    assert!(column(&o, "state").iter().all(|s| s == "complete"));
    assert!(out.contains("best_val_accuracy: "), "{out}");
    assert!(out.contains("best: hidden="), "{out}");
    assert!(o.join("tune.png").exists() && o.join("best.safetensors").exists());
    // A continuous range cannot be a grid: a compile error at the key's block.
    let bad = model(&d, &[], "tune { method = grid  lr = loguniform(1e-4, 1e-1) }");
    let (code, _, err) = nnc(&["check", bad.to_str().expect("utf-8 path")], &d);
    assert_eq!(code, 1);
    assert!(err.contains("E0623") && err.contains("loguniform(0.0001, 0.1)"), "{err}");
}

#[test]
fn random_and_bayes_are_reproducible_and_independent_of_jobs() {
    let d = fresh("repro");
    let m = model(
        &d,
        &[],
        "tune { trials = 12  prune = median(startup = 2, warmup = 1)\n lr = loguniform(1e-4, 3e-2)  hidden = logint(8, 64) }",
    );
    let file = m.to_str().expect("utf-8 path");
    for method in ["random", "bayes"] {
        let run = |out: &str, seed: &str, jobs: &str| {
            let (code, _, err) =
                nnc(&["tune", file, "--method", method, "--seed", seed, "--jobs", jobs, "--out", out, "--force"], &d);
            assert_eq!(code, 0, "{err}");
            rows(&d.join(out))
        };
        let a = run("a", "1", "2");
        assert_eq!(a.len(), 12);
        assert_eq!(a, run("b", "1", "2"), "{method}: the same seed gives the same trials");
        assert_ne!(
            column(&d.join("a"), "lr"),
            {
                run("c", "2", "2");
                column(&d.join("c"), "lr")
            },
            "{method}: another seed, other values"
        );
        if method == "random" {
            // Values and pruning decisions depend only on the trials before: one at a time
            // gives the same search.
            assert_eq!(a, run("d", "1", "1"), "random search with --jobs 1 and 2");
        }
    }
}

#[test]
fn pruned_and_diverging_trials_are_recorded_and_the_search_goes_on() {
    let d = fresh("prune");
    // sgd at lr 1e4 diverges; a tiny rate learns slowly and is pruned at a rung.
    let m = model(
        &d,
        &[],
        "tune { method = grid  prune = asha(reduction = 2, min_epochs = 2)\n lr = choice([0.003, 10000.0, 0.00001, 0.002]) }",
    );
    let sets = ["--set", "epochs=8", "--set", "optimizer=sgd(lr = 0.1)"];
    let (code, out, err) = nnc(&[&["tune", m.to_str().expect("utf-8 path"), "--out", "o"][..], &sets[..]].concat(), &d);
    assert_eq!(code, 0, "{out}{err}");
    let o = d.join("o");
    let states = column(&o, "state");
    assert_eq!(states.len(), 4);
    assert_eq!(states[0], "complete", "{states:?}");
    assert_eq!(states[1], "failed", "the diverging trial: {states:?}");
    assert!(column(&o, "note")[1].contains("became"), "{:?}", column(&o, "note"));
    assert_eq!(states[2], "pruned", "the slow trial: {states:?}\n{out}");
    let at = column(&o, "pruned_at_epoch");
    assert_eq!(at[2], "2", "pruned at the first rung");
    assert_eq!(column(&o, "epochs")[2], "2");
    assert!(out.contains("trial 2: ") && out.contains("failed: "), "{out}");
    assert!(out.contains("pruned at epoch 2"), "{out}");
}

#[test]
fn the_best_checkpoint_scores_what_the_search_printed() {
    let d = fresh("best");
    let m = model(&d, &[], "tune { method = random  trials = 3  prune = none  hidden = choice([16, 48]) }");
    let (code, out, err) = nnc(&["tune", m.to_str().expect("utf-8 path"), "--out", "o"], &d);
    assert_eq!(code, 0, "{err}");
    let test_acc = out.lines().find_map(|l| l.strip_prefix("test_accuracy: ")).expect("test accuracy").to_string();
    assert!(err.contains("never seen by the search"), "{err}");
    let ck = d.join("o/best.safetensors");
    let (code, eval_out, err) =
        nnc(&["eval", m.to_str().expect("utf-8 path"), "--checkpoint", ck.to_str().expect("utf-8 path")], &d);
    assert_eq!(code, 0, "{err}");
    assert!(eval_out.contains(&format!("accuracy: {test_acc}")), "tune said {test_acc}; eval:\n{eval_out}");
    // The folder holds a search now: a second search goes elsewhere unless forced.
    let (code, _, err) = nnc(&["tune", m.to_str().expect("utf-8 path"), "--out", "o"], &d);
    assert_eq!(code, 1);
    assert!(err.contains("--force"), "{err}");
}

#[test]
fn tune_blocks_and_flags_are_checked() {
    let d = fresh("errors");
    for (tune, code, want) in [
        ("tune { lr = loguniform(0, 1) }", "E0602", "above 0"),
        ("tune { hidden = uniform(8, 64) }", "E0603", "model argument `hidden` is int"),
        ("tune { hiden = int(8, 64) }", "E0621", "did you mean `hidden`"),
        ("tune { split = choice([1]) }", "E0622", "cannot be tuned"),
        ("tune { epochs = uniform(2, 9) }", "E0603", "integer"),
        ("tune { lr = 0.1 }", "E0601", "needs a distribution"),
        ("tune { method = grid }", "E0620", "no hyperparameter"),
        ("tune { optimizer = choice([adamm]) }", "E0604", "unknown optimizer"),
    ] {
        let m = model(&d, &[], tune);
        let (c, _, err) = nnc(&["check", m.to_str().expect("utf-8 path")], &d);
        assert_eq!(c, 1, "{tune}");
        assert!(err.contains(code) && err.contains(want), "{tune}: {err}");
    }
    let m = model(&d, &[], "");
    let (c, _, err) = nnc(&["tune", m.to_str().expect("utf-8 path")], &d);
    assert_eq!(c, 1);
    assert!(err.contains("no `tune` block and no --space"), "{err}");
    let (c, _, err) =
        nnc(&["tune", m.to_str().expect("utf-8 path"), "--space", "lr=loguniform(1e-3, 1e-2)", "--set", "lr=0.1"], &d);
    assert_eq!(c, 1);
    assert!(err.contains("cannot also be fixed"), "{err}");
    // From the command line the space is checked by compiling its bounds.
    let (c, _, err) = nnc(&["tune", m.to_str().expect("utf-8 path"), "--space", "hidden=uniform(8, 64)"], &d);
    assert_eq!(c, 1);
    assert!(err.contains("`hidden` = 8.0"), "{err}");
    let (c, _, err) = nnc(&["tune", m.to_str().expect("utf-8 path"), "--space", "lr=uniform(1, 0)"], &d);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("lo < hi"), "{err}");
}

/// metrics.csv as rows of (column, value).
fn log(dir: &Path) -> Vec<Vec<(String, f64)>> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).expect("metrics.csv");
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().expect("header").split(',').map(str::to_string).collect();
    lines.map(|l| header.iter().cloned().zip(l.split(',').map(|v| v.parse().unwrap_or(f64::NAN))).collect()).collect()
}

fn get(row: &[(String, f64)], k: &str) -> f64 {
    row.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("no {k}")).1
}

#[test]
fn batch_size_schedule_changes_the_steps_per_epoch() {
    let d = fresh("batch_schedule");
    let m = model(&d, &[("batch", "[32, 128, 256]"), ("batch_at", "[1, 2]"), ("epochs", "4")], "");
    let (code, _, err) = nnc(&["train", m.to_str().expect("utf-8 path"), "--out", "o"], &d);
    assert_eq!(code, 0, "{err}");
    // 1438 training rows: 45 batches of 32, then 12 of 128, then 6 of 256 (twice).
    let steps: Vec<f64> = log(&d.join("o")).iter().map(|r| get(r, "step")).collect();
    assert_eq!(steps, [45.0, 57.0, 63.0, 69.0]);
    let m = model(&d, &[("batch", "[32, 64]"), ("batch_at", "[1, 2]")], "");
    let (code, _, err) = nnc(&["check", m.to_str().expect("utf-8 path")], &d);
    assert_eq!(code, 1);
    assert!(err.contains("E0612") && err.contains("`batch_at` 2 epoch(s)"), "{err}");
}

#[test]
fn plateau_reduces_the_rate_as_computed_by_hand() {
    let d = fresh("plateau");
    // A relative threshold of 1 makes every epoch after the first a bad one; with
    // patience 0 the rate is multiplied by 0.5 after every bad epoch, down to 1e-3 * 0.125.
    let m = model(&d, &[("schedule", "plateau(factor = 0.5, patience = 0, threshold = 1, min_lr = 0.000375)")], "");
    let (code, _, err) = nnc(&["train", m.to_str().expect("utf-8 path"), "--out", "o", "--set", "lr=0.003"], &d);
    assert_eq!(code, 0, "{err}");
    let lrs: Vec<f64> = log(&d.join("o")).iter().map(|r| get(r, "lr")).collect();
    let want = [0.003, 0.003, 0.0015, 0.00075, 0.000375, 0.000375];
    for (e, (a, b)) in lrs.iter().zip(want).enumerate() {
        assert!((a - b).abs() < 1e-12, "epoch {}: lr {a}, expected {b} ({lrs:?})", e + 1);
    }
}

#[test]
fn early_stopping_monitors_any_metric_with_a_mode() {
    let d = fresh("monitor");
    let train = [
        ("split", "[0.6, 0.2, 0.2]"),
        ("epochs", "30"),
        ("early_stop", "2"),
        ("monitor", "val_accuracy"),
        ("min_delta", "0.5"),
    ];
    let m = model(&d, &train, "");
    // No epoch can improve accuracy by 0.5 over the first: the run stops after 1 + 2 epochs.
    let (code, _, err) = nnc(&["train", m.to_str().expect("utf-8 path"), "--out", "o"], &d);
    assert_eq!(code, 0, "{err}");
    let rows = log(&d.join("o"));
    assert_eq!(rows.len(), 3, "stopped after patience 2");
    assert!(rows.iter().all(|r| get(r, "val_accuracy").is_finite()));
    assert!(err.contains("val_accuracy"), "the best epoch is named by its metric: {err}");
    let m = model(&d, &[("split", "[0.6, 0.2, 0.2]"), ("monitor", "val_bogus")], "");
    let (code, _, err) = nnc(&["train", m.to_str().expect("utf-8 path"), "--out", "p"], &d);
    assert_eq!(code, 1);
    assert!(err.contains("`monitor = val_bogus`") && err.contains("val_accuracy"), "{err}");
    let m = model(&d, &[("monitor", "val_accuracy")], "");
    let (code, _, err) = nnc(&["check", m.to_str().expect("utf-8 path")], &d);
    assert_eq!(code, 1);
    assert!(err.contains("needs a validation part"), "{err}");
}

#[test]
fn a_cross_validated_metric_scores_every_trial_on_folds_of_the_training_rows() {
    let d = fresh("cv");
    let m = model(&d, &[("epochs", "2")], "tune { method = random  trials = 2  folds = 3  hidden = choice([8, 16]) }");
    let (code, out, err) = nnc(&["tune", m.to_str().expect("utf-8 path"), "--metric", "cv_accuracy", "--out", "o"], &d);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("best_cv_accuracy: "), "{out}");
    assert!(err.contains("are not pruned") && err.contains("refitted on"), "{err}");
    assert_eq!(column(&d.join("o"), "state"), ["complete", "complete"]);
    assert!(d.join("o/best.safetensors").exists());
}

/// The host-loop optimizers are choices of a search like any other: each trial trains with
/// its own (full batch, `max_iter` iterations an epoch) and is scored as the others.
/// (Measured: 0.92, 0.91, 0.78 and 0.95 validation accuracy after 2 epochs.)
#[test]
fn second_order_optimizers_are_tunable() {
    let d = fresh("second_order");
    let opts =
        "[adam(lr = 3e-3), lbfgs(max_iter = 5), bfgs(max_iter = 5), newton(max_iter = 2), newton_cg(max_iter = 5)]";
    let m = model(
        &d,
        &[],
        &format!("tune {{ method = grid  prune = none  hidden = choice([8])  optimizer = choice({opts}) }}"),
    );
    let (code, out, err) = nnc(&["tune", m.to_str().expect("utf-8 path"), "--out", "o", "--set", "epochs=2"], &d);
    assert_eq!(code, 0, "{err}");
    let o = d.join("o");
    let names: Vec<String> =
        column(&o, "optimizer").iter().map(|s| s.split('(').next().unwrap_or("").to_string()).collect();
    assert_eq!(names, ["adam", "lbfgs", "bfgs", "newton", "newton_cg"], "{out}");
    assert!(column(&o, "state").iter().all(|s| s == "complete"), "{:?}", column(&o, "state"));
    let acc: Vec<f64> = column(&o, "val_accuracy").iter().map(|s| s.parse().expect("a number")).collect();
    // Every host loop trained (ten classes: chance is 0.1) in its few iterations.
    assert!(acc[1..].iter().all(|&a| a > 0.5), "{acc:?}");
}
