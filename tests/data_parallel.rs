//! Data-parallel training without MPI: ranks are threads of one process, summing through
//! the in-process group (`dist::comm::Local`). Two ranks end with the parameters
//! of one process at the same global batch (MLP, CNN, LSTM), ranks stay equal with
//! per-rank batch norm, and shards of a batch not divisible by the ranks are handled.
//! The same runs under `mpirun` are in tests/distributed.rs (feature `mpi`).
//!
//! Scoring is sharded too: each rank scores whole chunks of the validation and test
//! rows and the results are gathered, so the metrics equal one process's bit for bit at
//! equal parameters; with the parameters of a distributed run (equal to one process's
//! within reassociation) metrics.csv equals one process's log within that tolerance.

use nnc::internals::dist::comm::{Communicator, Local};
use nnc::internals::tensors::TensorMap;
use nnc::internals::train::session::Next;
use nnc::internals::train::session::Session;
use nnc::internals::train::trainer::{train_with, Distributed, Report, TrainOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn program(src: &str) -> nnc::internals::ir::Program {
    match nnc::internals::pipeline::compile_source("m.nn", src, None) {
        Ok(mut c) => c.programs.remove(0),
        Err(e) => panic!("{}", nnc::internals::diagnostic::render(&e.diagnostics, &e.sources, Default::default())),
    }
}

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("data_parallel").join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Trains `src` on `ranks` threads (one process when `ranks` is 0) and returns rank 0's
/// last checkpoint.
fn run(src: &str, name: &str, ranks: usize, check: bool) -> TensorMap {
    run_report(src, name, ranks, check, true).0
}

/// `run` with the overlap of sums and backward on or off.
fn run_overlap(src: &str, name: &str, ranks: usize, check: bool, overlap: bool) -> TensorMap {
    run_report(src, name, ranks, check, overlap).0
}

/// `run`, with rank 0's report (its test metrics) and its metrics.csv.
fn run_report(src: &str, name: &str, ranks: usize, check: bool, overlap: bool) -> (TensorMap, Report, String) {
    let p = program(src);
    let dir = out_dir(name);
    let opts = TrainOptions {
        out_dir: dir.clone(),
        resume: false,
        backend: nnc::Backend::Jit,
        threads: 1,
        source: src.into(),
    };
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let report = if ranks == 0 {
        train_with(&p, &base, &opts, &AtomicBool::new(false), &mut |_| Next::Continue, None)
            .expect("single-process run")
    } else {
        let handles: Vec<_> = Local::group(ranks)
            .into_iter()
            .map(|c| {
                let (p, opts, base) = (p.clone(), opts.clone(), base.clone());
                std::thread::spawn(move || {
                    let rank = c.rank();
                    let d = Distributed { comm: Box::new(c), check_params: check, overlap };
                    train_with(&p, &base, &opts, &AtomicBool::new(false), &mut |_| Next::Continue, Some(d))
                        .map_err(|e| format!("rank {rank}: {e}"))
                })
            })
            .collect();
        let mut reports: Vec<Report> =
            handles.into_iter().map(|h| h.join().expect("a rank panicked").expect("distributed run")).collect();
        assert!(reports[1..].iter().all(|r| r.test.is_empty()), "only rank 0 reports the test metrics");
        reports.swap_remove(0)
    };
    let log = std::fs::read_to_string(dir.join("metrics.csv")).expect("metrics.csv");
    (nnc::internals::tensors::read(&dir.join("last.safetensors")).expect("checkpoint"), report, log)
}

/// The largest difference between the parameters (and optimizer state) of two
/// checkpoints, relative to the largest magnitude of each tensor.
fn max_rel_diff(a: &TensorMap, b: &TensorMap) -> (f64, String) {
    assert_eq!(a.len(), b.len(), "both checkpoints hold the same tensors");
    let mut worst = (0.0, String::new());
    for (k, t) in a {
        let (x, y) = (t.floats().expect("floats"), b.get(k).and_then(|u| u.floats()).expect(k));
        assert_eq!(x.len(), y.len(), "{k}");
        let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
        let d = x.iter().zip(y.iter()).fold(0.0f64, |m, (p, q)| m.max((p - q).abs())) / scale;
        if d > worst.0 {
            worst = (d, k.clone());
        }
    }
    worst
}

fn digits(model: &str, extra: &str) -> String {
    format!(
        "model M {{\n input x: [B, 64]\n input y: i32[B]\n{model}\n loss = cross_entropy(logits, y)\n \
         train {{ data = csv(\"data/digits.csv.gz\", label = -1)  preprocess = standardize  split = [0.8, 0.2]\n \
         batch = 64  epochs = 2  seed = 7 {extra} }}\n}}\n"
    )
}

const MLP: &str = " layer a = Dense(64, 32)\n layer b = Dense(32, 10)\n output logits = b(relu(a(x)))";
const CNN: &str = " layer c = Conv2d(1, 4, 3, padding = 1)\n layer f = Dense(4 * 4 * 4, 10)\n \
                   h = maxpool2d(relu(c(reshape(x, [-1, 1, 8, 8]))), 2)\n output logits = f(flatten(h))";
const CNN_BN: &str = " layer c = Conv2d(1, 4, 3, padding = 1)\n layer n = BatchNorm(4)\n \
                      layer f = Dense(4 * 4 * 4, 10)\n \
                      h = maxpool2d(relu(n(c(reshape(x, [-1, 1, 8, 8])))), 2)\n output logits = f(flatten(h))";
const CNN_SYNC_BN: &str = " layer c = Conv2d(1, 4, 3, padding = 1)\n layer n = BatchNorm(4, sync = true)\n \
                           layer f = Dense(4 * 4 * 4, 10)\n \
                           h = n(maxpool2d(relu(c(reshape(x, [-1, 1, 8, 8]))), 2))\n output logits = f(flatten(h))";
const LSTM: &str = " layer l = LSTM(8, 16)\n layer f = Dense(16, 10)\n output logits = f(l(reshape(x, [-1, 8, 8])))";

/// The tolerance of a distributed run against one process, relative to each tensor's
/// largest magnitude. The two runs differ only in how the batch's per-row gradient
/// terms are associated: one process sums all 64 rows in one reduction; two ranks sum
/// 32 each, scale by 32/64 and add the halves. Each regrouping changes a gradient by a few
/// f32 roundings (about 1e-7 relative), and the 46 steps of these runs carry such
/// differences forward (Adam divides by sqrt(v), which amplifies them where v is small):
/// the largest seen is 1.6e-6 (the LSTM's input weights). 1e-5 leaves a factor of six
/// above that and is far below what a wrong share or a missing or duplicated row does
/// (one row of 64 changes a mean gradient by about 1/64).
const TOL: f64 = 1e-5;

fn same_as_one_process(model: &str, extra: &str, name: &str) {
    let src = digits(model, extra);
    let one = run(&src, &format!("{name}-1"), 0, false);
    let two = run(&src, &format!("{name}-2"), 2, true);
    let (d, k) = max_rel_diff(&one, &two);
    eprintln!("{name}: largest relative difference {d:e} in `{k}`");
    assert!(d <= TOL, "{name}: `{k}` differs by {d:e} (relative) between 1 and 2 ranks");
}

#[test]
fn mlp_on_two_ranks_equals_one_process() {
    same_as_one_process(MLP, "optimizer = adam(lr = 1e-3)  l2 = 1e-4  clip_norm = 1", "mlp");
}

#[test]
fn cnn_on_two_ranks_equals_one_process() {
    same_as_one_process(CNN, "optimizer = momentum(lr = 0.01, mu = 0.9)", "cnn");
}

#[test]
fn lstm_on_two_ranks_equals_one_process() {
    same_as_one_process(LSTM, "optimizer = adam(lr = 1e-3)", "lstm");
}

/// A global batch of 64 over 3 ranks: shards of 21, 21 and 22 rows; the last partial
/// batch of each epoch (1437 rows = 22 * 64 + 29) is split 9, 10, 10. Shares weight each
/// shard by its rows, so the sum is still the 64-row (or 29-row) mean gradient.
#[test]
fn uneven_shards_equal_one_process() {
    let src = digits(MLP, "optimizer = sgd(lr = 0.1)");
    let one = run(&src, "uneven-1", 0, false);
    let three = run(&src, "uneven-3", 3, true);
    let (d, k) = max_rel_diff(&one, &three);
    eprintln!("uneven: largest relative difference {d:e} in `{k}`");
    assert!(d <= TOL, "`{k}` differs by {d:e} (relative) between 1 and 3 ranks");
}

/// Per-rank batch norm: each rank normalizes its shard with its own statistics, so the
/// run is not the one-process run; the parameter hash check (every epoch) passes, and
/// the running statistics are averaged over ranks into the checkpoint.
#[test]
fn per_rank_batch_norm_keeps_ranks_equal() {
    let src = digits(CNN_BN, "optimizer = adam(lr = 1e-3)");
    let two = run(&src, "bn-2", 2, true);
    let one = run(&src, "bn-1", 0, false);
    let (d, k) = max_rel_diff(&one, &two);
    assert!(d > TOL, "per-rank statistics differ from one process's, yet `{k}` is within {d:e}");
    let mean = two.get("n.mean").and_then(|t| t.floats()).expect("the checkpoint holds n.mean");
    assert!(mean.iter().any(|&m| m != 0.0), "the running mean moved from its zeros: {mean:?}");
}

/// Every value of two metric maps, bit for bit (NaN equal to NaN).
fn assert_same_metrics(a: &nnc::internals::metrics::Metrics, b: &nnc::internals::metrics::Metrics, what: &str) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{what}: the same metrics");
    for (k, x) in a {
        let y = b[k];
        assert!(x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()), "{what}: `{k}` is {x} and {y}");
    }
}

/// Sharded scoring at equal parameters: each rank scores whole chunks of 256 rows, and
/// the gathered scores and every metric of `target::report` (accuracy, the confusion
/// counts behind precision/recall/F1, the one-vs-rest AUC) are one process's, bit for bit,
/// on 2 and 3 ranks; also with fewer chunks than ranks (a rank that scores nothing).
#[test]
fn sharded_scoring_equals_one_process_bit_for_bit() {
    let p = program(&digits(MLP, "optimizer = adam(lr = 1e-3)"));
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let (ds, _) = nnc::internals::train::trainer::load_data(&p, &base).expect("data");
    let all: Vec<usize> = (0..ds.n).rev().collect();
    let few: Vec<usize> = (0..100).collect();
    let mut one = Session::new(&p, nnc::Backend::Jit, 1).expect("session");
    one.init(3, 64).expect("init");
    let tensors = one.tensors().expect("tensors");
    for rows in [&all, &few] {
        let want = one.score(&ds, rows).expect("score");
        let ev = nnc::internals::train::target::report(&ds, rows, &want, one.kind, "val_", &[]);
        assert!(ev.all.contains_key("val_auc_ovr") && ev.all.contains_key("val_f1_macro"), "{:?}", ev.all);
        for ranks in [2, 3] {
            let handles: Vec<_> = Local::group(ranks)
                .into_iter()
                .map(|c| {
                    let (p, tensors, ds, rows) = (p.clone(), tensors.clone(), ds.clone(), rows.clone());
                    std::thread::spawn(move || -> Result<_, String> {
                        let mut s = Session::new(&p, nnc::Backend::Jit, 1)?;
                        s.distribute(Box::new(c), false)?;
                        s.init(0, 64)?;
                        s.load_tensors(&tensors, 64)?;
                        let sc = s.score(&ds, &rows)?;
                        Ok((sc, s.kind))
                    })
                })
                .collect();
            for h in handles {
                let (got, kind) = h.join().expect("a rank panicked").expect("distributed scoring");
                let what = format!("{} rows on {ranks} ranks", rows.len());
                assert_eq!(got.width, want.width, "{what}");
                assert_eq!(got.loss.to_bits(), want.loss.to_bits(), "{what}: loss {} and {}", got.loss, want.loss);
                assert!(got.values.iter().zip(&want.values).all(|(a, b)| a == b), "{what}: the scores");
                assert_eq!(got.values.len(), want.values.len(), "{what}");
                let ev2 = nnc::internals::train::target::report(&ds, rows, &got, kind, "val_", &[]);
                assert_same_metrics(&ev.all, &ev2.all, &what);
            }
        }
    }
}

/// The columns of a metrics.csv, by name.
fn columns(log: &str) -> Vec<(String, Vec<f64>)> {
    let mut lines = log.lines();
    let header: Vec<String> = lines.next().expect("header").split(',').map(String::from).collect();
    let rows: Vec<Vec<f64>> =
        lines.map(|l| l.split(',').map(|v| v.parse::<f64>().expect("a number")).collect()).collect();
    header.into_iter().enumerate().map(|(i, h)| (h, rows.iter().map(|r| r[i]).collect())).collect()
}

/// A run with a validation split on two ranks logs what one process logs: the training
/// loss and accuracy are summed over ranks every step, the validation rows are scored in
/// shards and gathered, and the test metrics are rank 0's report of the gathered test
/// rows. The losses agree within `TOL` (relative): the parameters, which the scores are
/// computed from, agree within it (see `TOL`; the loss sums themselves add f32 means
/// of 32 rows instead of 64, a few roundings of 1e-7). The accuracies, counts of rows,
/// agree exactly here: a row changes class only when its two largest logits are closer
/// than the parameters' difference moves them (and a count that differs would be
/// reported by this test, not hidden).
#[test]
fn metrics_of_two_ranks_equal_one_process() {
    let src = digits(MLP, "optimizer = adam(lr = 1e-3)  l2 = 1e-4").replace("[0.8, 0.2]", "[0.6, 0.2, 0.2]");
    let (_, r1, log1) = run_report(&src, "metrics-1", 0, false, true);
    let (_, r2, log2) = run_report(&src, "metrics-2", 2, true, true);
    let (c1, c2) = (columns(&log1), columns(&log2));
    let names: Vec<&str> = c1.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(names, c2.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>());
    for want in ["train_loss", "train_accuracy", "val_loss", "val_accuracy"] {
        assert!(names.contains(&want), "metrics.csv has {want}: {names:?}");
    }
    for ((h, a), (_, b)) in c1.iter().zip(&c2) {
        if h == "seconds" || h == "samples_per_sec" {
            continue;
        }
        for (x, y) in a.iter().zip(b) {
            if h.ends_with("_loss") {
                let d = (x - y).abs() / x.abs().max(1e-30);
                eprintln!("{h}: {x} and {y} (relative difference {d:e})");
                assert!(d <= TOL, "{h}: {x} and {y} differ by {d:e} (relative)");
            } else {
                assert_eq!(x, y, "{h}");
            }
        }
    }
    assert_eq!(r1.test.keys().collect::<Vec<_>>(), r2.test.keys().collect::<Vec<_>>());
    for (k, x) in &r1.test {
        let y = r2.test[k];
        if k.ends_with("loss") {
            assert!((x - y).abs() / x.abs() <= TOL, "{k}: {x} and {y}");
        } else {
            assert_eq!(*x, y, "{k}");
        }
    }
}

/// Runs `body` on every rank of an in-process group of `ranks` and returns each rank's
/// result, in rank order.
fn on_ranks<T: Send + 'static>(
    ranks: usize,
    body: impl Fn(&mut dyn Communicator) -> Result<T, String> + Send + Sync + 'static,
) -> Vec<T> {
    let body = std::sync::Arc::new(body);
    let handles: Vec<_> = Local::group(ranks)
        .into_iter()
        .map(|mut c| {
            let body = body.clone();
            std::thread::spawn(move || {
                let rank = c.rank();
                body(&mut c).map_err(|e| format!("rank {rank}: {e}"))
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("a rank panicked").expect("the rank's run")).collect()
}

/// `nnc cv --distributed` without MPI: 3 folds over 2 ranks (folds 1 and 3 on rank 0,
/// fold 2 on rank 1). Every rank ends with every fold's result and the summary of one
/// process, bit for bit: a fold's result depends only on its rows and the recipe.
#[test]
fn folds_over_ranks_equal_one_process() {
    use nnc::internals::select::cv::{cross_validate, cross_validate_with, Folds};
    let p = program(&digits(MLP, "optimizer = adam(lr = 1e-3)"));
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let stop = AtomicBool::new(false);
    let one = cross_validate(&p, &base, Folds::K(3), nnc::Backend::Jit, 1, &stop, &mut |_| {}).expect("cv");
    let runs = on_ranks(2, move |c| {
        let mut seen = Vec::new();
        let r = cross_validate_with(
            &p,
            &base,
            Folds::K(3),
            nnc::Backend::Jit,
            1,
            &AtomicBool::new(false),
            &mut |f| seen.push(f.fold),
            Some(c),
        )?;
        Ok((r, seen))
    });
    for (rank, (r, seen)) in runs.iter().enumerate() {
        assert_eq!(seen, &[1, 2, 3], "rank {rank} sees every fold, in order");
        assert_eq!(r.folds.len(), 3);
        for (a, b) in one.folds.iter().zip(&r.folds) {
            let what = format!("rank {rank}, fold {}", a.fold);
            assert_eq!(
                (a.fold, a.train_rows, a.test_rows, a.epochs, a.steps),
                (b.fold, b.train_rows, b.test_rows, b.epochs, b.steps)
            );
            assert_same_metrics(&a.metrics, &b.metrics, &what);
            assert_same_metrics(&a.all, &b.all, &what);
            assert_eq!(a.correct, b.correct, "{what}");
            assert_eq!(a.held_out, b.held_out, "{what}");
        }
        assert_eq!(one.summary.len(), r.summary.len());
        for (a, b) in one.summary.iter().zip(&r.summary) {
            assert_eq!((&a.0, a.1.to_bits(), a.2.to_bits()), (&b.0, b.1.to_bits(), b.2.to_bits()), "rank {rank}");
        }
        assert_eq!(one.notes, r.notes, "rank {rank}");
    }
}

/// A digits MLP with a tune block, written to a file (trials compile from it).
fn tune_model(name: &str, tune: &str, epochs: u32) -> PathBuf {
    let d = out_dir(name);
    std::fs::create_dir_all(&d).expect("dir");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    let src = format!(
        "model M(hidden: int = 16) {{\n input x: [B, 64]\n input y: i32[B]\n layer a = Dense(64, hidden)\n \
         layer b = Dense(hidden, 10)\n output logits = b(relu(a(x)))\n loss = cross_entropy(logits, y)\n \
         train {{ data = csv({:?}, label = -1)  preprocess = standardize  split = [0.8, 0.2]\n \
         optimizer = adam(lr = 3e-3)  batch = 64  epochs = {epochs}  seed = 7 }}\n {tune}\n}}\n",
        data.display().to_string()
    );
    let path = d.join("m.nn");
    std::fs::write(&path, src).expect("write model");
    path
}

/// Runs `nnc tune`'s search on `file` on one process with `jobs` (`ranks` 0) or on
/// `ranks` in-process ranks; returns every rank's report.
fn search(file: &Path, jobs: usize, ranks: usize) -> Vec<Result<nnc::internals::select::tune::TuneReport, String>> {
    use nnc::internals::select::tune::{tune_with, TuneOptions};
    let file = file.to_path_buf();
    let go = move |comm: Option<&mut dyn Communicator>| {
        let p = nnc::internals::pipeline::configure(&file, &[], None).map_err(|_| "the model compiles".to_string())?;
        let spec = p.settings.tune.clone().ok_or("a tune block")?;
        let compile = |values: &[(String, String)]| -> Result<nnc::internals::ir::Program, String> {
            let sets: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
            nnc::internals::pipeline::configure(&file, &sets, None).map_err(|_| "a trial compiles".to_string())
        };
        let opts = TuneOptions {
            compile: &compile,
            fixed: vec![],
            backend: nnc::Backend::Jit,
            jobs,
            threads: 1,
            source: String::new(),
        };
        let base = file.parent().expect("folder").to_path_buf();
        tune_with(&p, &spec, &base, &opts, &AtomicBool::new(false), &|_, _| {}, comm)
    };
    if ranks == 0 {
        return vec![go(None)];
    }
    on_ranks(ranks, move |c| Ok(go(Some(c))))
}

/// Compares two searches trial for trial (values, states, metrics and curves bit for
/// bit), their best trial and model, and on rank 0 their test metrics.
fn assert_same_search(
    one: &nnc::internals::select::tune::TuneReport,
    r: &nnc::internals::select::tune::TuneReport,
    rank: usize,
) {
    assert_eq!(one.trials.len(), r.trials.len(), "rank {rank}");
    for (a, b) in one.trials.iter().zip(&r.trials) {
        assert_eq!((a.index, &a.values, &a.state, a.epochs), (b.index, &b.values, &b.state, b.epochs), "rank {rank}");
        assert_eq!(a.metric.map(f64::to_bits), b.metric.map(f64::to_bits), "rank {rank}, trial {}", a.index + 1);
        assert_eq!(a.curve, b.curve, "rank {rank}, trial {}", a.index + 1);
    }
    assert_eq!(one.best, r.best, "rank {rank}");
    let (ma, mb) = (one.best_model.as_ref().expect("a best model"), r.best_model.as_ref().expect("sent to every rank"));
    assert_eq!(ma.tensors, mb.tensors, "rank {rank}: the best model");
    assert_eq!((ma.progress.epoch, ma.progress.step), (mb.progress.epoch, mb.progress.step));
    if rank == 0 {
        let (ta, tb) =
            (one.test.as_ref().expect("test metrics"), r.test.as_ref().expect("rank 0 scores the test rows"));
        assert_same_metrics(ta, tb, "test metrics");
    } else {
        assert!(r.test.is_none(), "only rank 0 scores the test rows");
    }
}

/// `nnc tune --distributed` without MPI: 12 TPE trials (10 random start-up trials, then
/// two proposed from the earlier ones) on 2 ranks are the one-process search with
/// `jobs = 2`, trial for trial, with the same best trial, the same best model (sent by
/// the rank that trained it) and the same test metrics on rank 0.
#[test]
fn trials_over_ranks_equal_one_process() {
    let file = tune_model(
        "tune-ranks",
        "tune { method = bayes  trials = 12  prune = none  lr = loguniform(1e-4, 3e-2)  hidden = logint(4, 32) }",
        2,
    );
    let one = search(&file, 2, 0).remove(0).expect("one-process search");
    for (rank, r) in search(&file, 1, 2).into_iter().enumerate() {
        assert_same_search(&one, &r.expect("distributed search"), rank);
    }
}

/// Pruning over ranks: the trials of a round exchange their values after every epoch, so
/// the median pruner (from trial 3, past epoch 1) and ASHA stop the trials that one
/// process with `jobs = 3` stops, at the same epochs, on 3 ranks (whose trials end at
/// different epochs within a round).
#[test]
fn pruned_trials_over_ranks_equal_one_process() {
    for (name, prune) in
        [("median", "median(startup = 2, warmup = 1)"), ("asha", "asha(reduction = 2, min_epochs = 1)")]
    {
        let file = tune_model(
            &format!("tune-{name}"),
            &format!("tune {{ method = random  trials = 9  prune = {prune}  lr = loguniform(1e-5, 3e-2) }}"),
            4,
        );
        let one = search(&file, 3, 0).remove(0).expect("one-process search");
        let pruned =
            one.trials.iter().filter(|t| matches!(t.state, nnc::internals::select::tune::State::Stopped(_))).count();
        assert!(
            pruned >= 2,
            "{name}: the search prunes trials: {:?}",
            one.trials.iter().map(|t| &t.state).collect::<Vec<_>>()
        );
        for (rank, r) in search(&file, 1, 3).into_iter().enumerate() {
            assert_same_search(&one, &r.expect("distributed search"), rank);
        }
    }
}

/// The gradient sums overlap the backward pass: the MLP's step (784-512-256-10, 2.1 MB of
/// gradients) has several buckets; the first starts before the backward pass's last
/// matrix product (the first layer's weight gradient) and is waited for after it; every
/// wait follows its start, and the update reads no sum before its wait. (`Local` fills
/// started buffers with NaN until their wait, so the equality tests above also check that
/// nothing touches a gradient while its sum is in flight.)
#[test]
fn gradient_sums_start_during_the_backward_pass() {
    use nnc::internals::fusion::Kernel;
    let src = "model M {\n input x: [B, 784]\n input y: i32[B]\n layer a = Dense(784, 512)\n \
               layer b = Dense(512, 256)\n layer c = Dense(256, 10)\n output logits = c(relu(b(relu(a(x)))))\n \
               loss = cross_entropy(logits, y)\n train { optimizer = adam(lr = 1e-3)  batch = 64 }\n}\n";
    let p = program(src);
    let g = nnc::internals::optim::update::distributed_step_graph(&p.train, &p.settings).expect("step graph");
    let g = nnc::internals::runtime::executable::concrete(&g, 32).expect("batch bound");
    let (g, s, _) = nnc::internals::runtime::executable::prepare(&g).expect("scheduled");
    let at = |bucket: u32, wait: bool| {
        s.kernels
            .iter()
            .position(|k| matches!(k, Kernel::Collective { bucket: b, wait: w, .. } if *b == bucket && *w == wait))
    };
    let buckets = s.kernels.iter().filter(|k| matches!(k, Kernel::Collective { wait: false, .. })).count() as u32;
    assert!(buckets >= 2, "the MLP's 2.1 MB of gradients make several buckets, not {buckets}");
    for b in 0..buckets {
        let (start, wait) = (at(b, false).expect("a start"), at(b, true).expect("a wait"));
        assert!(start < wait, "bucket {b} starts at kernel {start} and is waited for at {wait}");
    }
    let (start0, wait0) = (at(0, false).unwrap_or(0), at(0, true).unwrap_or(0));
    let products_in_flight = s.kernels[start0..wait0].iter().filter(|k| matches!(k, Kernel::MatMul { .. })).count();
    assert!(products_in_flight >= 1, "no matrix product runs while bucket 0 is summed");
    // Every sum in place: no gradient is copied.
    let sums: Vec<_> =
        g.nodes.iter().filter(|(_, n)| n.op == nnc::internals::ir::Op::AllReduce).map(|(v, _)| v).collect();
    assert_eq!(sums.len(), 6);
    for v in sums {
        let x = g.nodes[v].args[0];
        assert_eq!(s.storage[v.as_u32() as usize], s.storage[x.as_u32() as usize], "{v} is summed in place");
    }
}

/// Overlap changes when the sums run, not what they compute: the same two-rank run with
/// every bucket summed, blocking, at its start ends with the same bits.
#[test]
fn overlap_changes_no_result() {
    let src = digits(MLP, "optimizer = adam(lr = 1e-3)  clip_norm = 1");
    let with = run_overlap(&src, "overlap-on", 2, true, true);
    let without = run_overlap(&src, "overlap-off", 2, true, false);
    for (k, t) in &with {
        assert_eq!(t.floats(), without.get(k).and_then(|u| u.floats()), "`{k}` differs with and without overlap");
    }
}

/// Synchronized batch norm (`BatchNorm(n, sync = true)`, after the pooling so that the
/// convolution's bias has a gradient that is not zero up to rounding): the batch
/// statistics and the backward pass's gradient terms are summed over the ranks, so two ranks normalize with
/// the global batch's statistics and end with the one-process run's parameters and
/// running statistics (which per-rank statistics do not: the test above).
#[test]
fn sync_batch_norm_on_two_ranks_equals_one_process() {
    same_as_one_process(CNN_SYNC_BN, "optimizer = adam(lr = 1e-3)", "sync-bn");
    let one = run(&digits(CNN_SYNC_BN, "optimizer = adam(lr = 1e-3)"), "sync-bn-1b", 0, false);
    let two = run(&digits(CNN_SYNC_BN, "optimizer = adam(lr = 1e-3)"), "sync-bn-2b", 2, true);
    let (a, b) = (one.get("n.var").and_then(|t| t.floats()), two.get("n.var").and_then(|t| t.floats()));
    let (a, b) = (a.expect("n.var"), b.expect("n.var"));
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() <= TOL * x.abs().max(1.0), "running variance {x} (one process) against {y} (two ranks)");
    }
}
