//! Data-parallel training without MPI: ranks are threads of one process, summing through
//! the in-process group (`train::distributed::Local`). Two ranks end with the parameters
//! of one process at the same global batch (MLP, CNN, LSTM), ranks stay equal with
//! per-rank batch norm, and shards of a batch not divisible by the ranks are handled.
//! The same runs under `mpirun` are in tests/distributed.rs (feature `mpi`).

use nnc::tensors::TensorMap;
use nnc::train::distributed::{Communicator, Local};
use nnc::train::trainer::{train_with, Distributed, TrainOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn program(src: &str) -> nnc::ir::Program {
    match nnc::pipeline::compile_source("m.nn", src, None) {
        Ok(mut c) => c.programs.remove(0),
        Err(e) => panic!("{}", nnc::diagnostic::render(&e.diagnostics, &e.sources, Default::default())),
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
    run_overlap(src, name, ranks, check, true)
}

fn run_overlap(src: &str, name: &str, ranks: usize, check: bool, overlap: bool) -> TensorMap {
    let p = program(src);
    let dir = out_dir(name);
    let opts = TrainOptions { out_dir: dir.clone(), resume: false, jit: true, threads: 1, source: src.into() };
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    if ranks == 0 {
        train_with(&p, &base, &opts, &AtomicBool::new(false), &mut |_| {}, None).expect("single-process run");
    } else {
        let handles: Vec<_> = Local::group(ranks)
            .into_iter()
            .map(|c| {
                let (p, opts, base) = (p.clone(), opts.clone(), base.clone());
                std::thread::spawn(move || {
                    let rank = c.rank();
                    let d = Distributed { comm: Box::new(c), check_params: check, overlap };
                    train_with(&p, &base, &opts, &AtomicBool::new(false), &mut |_| {}, Some(d))
                        .map_err(|e| format!("rank {rank}: {e}"))
                })
            })
            .collect();
        for h in handles {
            h.join().expect("a rank panicked").expect("distributed run");
        }
    }
    nnc::tensors::read(&dir.join("last.safetensors")).expect("checkpoint")
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

/// The gradient sums overlap the backward pass: the MLP's step (784-512-256-10, 2.1 MB of
/// gradients) has several buckets; the first starts before the backward pass's last
/// matrix product (the first layer's weight gradient) and is waited for after it; every
/// wait follows its start, and the update reads no sum before its wait. (`Local` fills
/// started buffers with NaN until their wait, so the equality tests above also check that
/// nothing touches a gradient while its sum is in flight.)
#[test]
fn gradient_sums_start_during_the_backward_pass() {
    use nnc::fusion::Kernel;
    let src = "model M {\n input x: [B, 784]\n input y: i32[B]\n layer a = Dense(784, 512)\n \
               layer b = Dense(512, 256)\n layer c = Dense(256, 10)\n output logits = c(relu(b(relu(a(x)))))\n \
               loss = cross_entropy(logits, y)\n train { optimizer = adam(lr = 1e-3)  batch = 64 }\n}\n";
    let p = program(src);
    let g = nnc::train::update::distributed_step_graph(&p.train, &p.settings).expect("step graph");
    let g = nnc::runtime::executable::concrete(&g, 32).expect("batch bound");
    let (g, s, _) = nnc::runtime::executable::prepare(&g).expect("scheduled");
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
    let sums: Vec<_> = g.nodes.iter().filter(|(_, n)| n.op == nnc::ir::Op::AllReduce).map(|(v, _)| v).collect();
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
