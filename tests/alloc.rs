//! Allocations inside a compiled step, counted by a global allocator around
//! `Executable::run`: none, GEMMs included (they pack into a workspace the executable
//! allocates once, `src/codegen/gemm.rs`). On two threads the split parts go to the
//! team's workers (`codegen::team`) through preallocated slots: none there either.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
/// Allocations made by counted threads: the test's own while it runs steps, and the
/// team's workers during two-thread steps (not the test harness's, nor other tests').
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
/// Steps counted (enough that an allocation every few dozen split jobs would show).
const STEPS: u64 = 100;
/// Held while a test compiles and runs steps: the counter is shared.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Set while a two-thread measurement runs: the team's workers count only then (they
/// live through the whole test, beside other tests' measurements).
static POOL_COUNTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
thread_local! {
    static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count() {
    let mine = COUNTED.try_with(|c| c.get()).unwrap_or(false);
    let worker = nnc::internals::codegen::team::in_worker() && POOL_COUNTED.load(Ordering::Relaxed);
    if mine || worker {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations in `STEPS` steps (on this thread and the team's workers) and gemm
/// calls per step, at batch `batch`.
fn allocations_per_step(text: &str, batch: usize, threads: usize) -> (usize, usize) {
    {
        let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
        let w = "model";
        let p = nnc::internals::pipeline::compile_source(w, text, None).expect("compiles").programs.remove(0);
        let g = nnc::internals::pipeline::step_graph(&p, batch).expect("step graph");
        let opts = nnc::internals::codegen::CodegenOptions { threads, ..Default::default() };
        let mut exe = nnc::internals::runtime::executable::Executable::new(&g, &opts).expect("jit");
        let inputs = nnc::internals::gradcheck::random_inputs::<f32>(&exe.graph, batch, 0).expect("inputs");
        for (i, t) in inputs.iter().enumerate() {
            match &t.data {
                nnc::internals::runtime::interp::Data::F(d) => exe.set_input_f32(i, d).expect("input"),
                nnc::internals::runtime::interp::Data::I(d) => exe.set_input_i32(i, d).expect("input"),
            }
        }
        exe.run(0, 0); // warm-up: anything lazily set up once happens here
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        COUNTED.with(|c| c.set(true));
        POOL_COUNTED.store(threads > 1, Ordering::SeqCst);
        for step in 1..STEPS + 1 {
            exe.run(0, step);
        }
        COUNTED.with(|c| c.set(false));
        POOL_COUNTED.store(false, Ordering::SeqCst);
        let after = ALLOCATIONS.load(Ordering::SeqCst);
        // gemm calls: one per matrix of each (batched) GEMM kernel.
        let gemms = exe
            .schedule
            .kernels
            .iter()
            .map(|k| if let nnc::internals::fusion::Kernel::MatMul { batch, .. } = k { *batch } else { 0 })
            .sum();
        (after - before, gemms)
    }
}

/// Without matrix products, a whole training step allocates nothing.
#[test]
fn steps_without_gemm_do_not_allocate() {
    let src = "model M {\n input x: [B, 32]\n input y: i32[B]\n param g: [32] = ones\n layer ln = LayerNorm(32)\n z = ln(x) * g\n output s = softmax(z)\n loss = cross_entropy(z, y) + mean(gelu(z) * sigmoid(z) + tanh(z))\n train { optimizer = adam(lr = 1e-3) }\n}\n";
    let (n, gemms) = allocations_per_step(src, 16, 1);
    assert_eq!(gemms, 0);
    assert_eq!(n, 0, "{n} heap allocations in {STEPS} steps");
}

/// With matrix products, a training step allocates nothing either: on one thread, and on
/// two (GEMMs and elementwise kernels split across the team).
#[test]
fn training_steps_do_not_allocate() {
    for w in ["mlp", "cnn", "lstm"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benches/workloads/{w}.nn"));
        let text = std::fs::read_to_string(&path).expect("workload");
        for (batch, threads) in [(16, 1), (128, 2)] {
            let (n, gemms) = allocations_per_step(&text, batch, threads);
            println!(
                "{w}, batch {batch}, {threads} threads: {n} allocations in {STEPS} steps, {gemms} gemm calls each"
            );
            assert!(gemms > 0);
            if nnc::internals::codegen::gemm::isa().is_none() {
                // No AVX2+FMA: products go through `gemm::gemm`, which allocates its
                // packing buffers (and a flag vector) on every call.
                assert!(n <= 2 * gemms * STEPS as usize, "{w}: {n} allocations in {STEPS} steps");
                continue;
            }
            assert_eq!(n, 0, "{w}, batch {batch}, {threads} threads: {n} allocations in {STEPS} steps");
        }
    }
}

/// The MLP workload's step (issue 4: XLA plans 2.39 MB of temporaries for it) fits its
/// arena in less, with every parameter and optimizer state updated in place: updates run
/// as soon as their gradient exists, which frees it before the next one is computed.
#[test]
fn mlp_arena_within_xla_temporaries() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/workloads/mlp.nn");
    let text = std::fs::read_to_string(path).expect("workload");
    let p = nnc::internals::pipeline::compile_source("mlp", &text, None).expect("compiles").programs.remove(0);
    let g = nnc::internals::pipeline::step_graph(&p, 128).expect("step graph");
    let exe = nnc::internals::runtime::executable::Executable::new(&g, &Default::default()).expect("jit");
    let bytes = exe.plan.arena_len * 4;
    assert!(bytes <= 2_390_000, "arena {bytes} bytes");
    assert!(exe.plan.copies.is_empty(), "{} updates copied", exe.plan.copies.len());
}

/// The library's `Predictor` (`nnc::Model::predictor_from`) answers a call at its batch
/// with no heap allocation: the rows are copied into its buffers, preprocessed in place
/// (standardize), run, and copied out into the caller's.
#[test]
fn predictor_calls_do_not_allocate() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let src = "model P {\n input x: [B, 2]\n input y: i32[B]\n layer h = Dense(2, 32)\n layer o = Dense(32, 3)\n \
               output logits = o(relu(h(x)))\n loss = cross_entropy(logits, y)\n \
               train { data = blobs(n = 60, centers = 3, seed = 0)  preprocess = standardize  epochs = 2  batch = 20 }\n}\n";
    let model = nnc::Model::from_source("p.nn", src).expect("compiles");
    let out = std::env::temp_dir().join("nnc-alloc-predictor");
    let run = model.train(&nnc::TrainConfig::new(&out).replace(true), &mut nnc::Quiet).expect("trains");
    let ck = model.load_checkpoint(run.best_checkpoint()).expect("checkpoint");
    let mut p = model.predictor_from(&ck, 8, 1).expect("predictor");
    let x: Vec<f32> = (0..8 * 2).map(|i| (i % 7) as f32 - 3.0).collect();
    let mut y = vec![0.0f32; 8 * 3];
    p.predict_into(&x, &mut y).expect("warm-up");
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTED.with(|c| c.set(true));
    for rows in [8usize, 5, 1, 8] {
        p.predict_into(&x[..rows * 2], &mut y[..rows * 3]).expect("predict");
    }
    COUNTED.with(|c| c.set(false));
    let n = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert_eq!(n, 0, "{n} allocations in 4 predictor calls");
    assert!(y.iter().all(|v| v.is_finite()));
}
