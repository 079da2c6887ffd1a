//! Allocations inside a compiled step, counted by a global allocator around
//! `Executable::run`. nnc's own code (JIT kernels, host kernels, the step) allocates
//! nothing; the `gemm` crate allocates its packing buffers on every call (two
//! allocations per GEMM: `MemBuffer::new` and a `Vec<bool>` in gemm-common 0.19), which
//! this test bounds and reports, so that removing them is a measured change.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
/// All allocations, and this thread's (tests run in parallel threads).
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static MINE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    let _ = MINE.try_with(|c| c.set(c.get() + 1));
}

fn mine() -> usize {
    MINE.with(|c| c.get())
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

fn allocations_per_step(text: &str) -> (usize, usize) {
    {
        let w = "model";
        let p = nnc::pipeline::compile_source(w, text, None).ok().expect("compiles").programs.remove(0);
        let g = nnc::pipeline::step_graph(&p, 16).expect("step graph");
        let mut exe = nnc::runtime::executable::Executable::new(&g, &Default::default()).expect("jit");
        let inputs = nnc::gradcheck::random_inputs::<f32>(&exe.graph, 16, 0).expect("inputs");
        for (i, t) in inputs.iter().enumerate() {
            match &t.data {
                nnc::runtime::interp::Data::F(d) => exe.set_input_f32(i, d).expect("input"),
                nnc::runtime::interp::Data::I(d) => exe.set_input_i32(i, d).expect("input"),
            }
        }
        exe.run(0, 0); // warm-up: anything lazily set up once happens here
        let before = mine();
        for step in 1..6 {
            exe.run(0, step);
        }
        let after = mine();
        // gemm calls: one per matrix of each (batched) GEMM kernel.
        let gemms = exe
            .schedule
            .kernels
            .iter()
            .map(|k| if let nnc::fusion::Kernel::MatMul { batch, .. } = k { *batch } else { 0 })
            .sum();
        ((after - before) / 5, gemms)
    }
}

/// Without matrix products, a whole training step allocates nothing.
#[test]
fn steps_without_gemm_do_not_allocate() {
    let src = "model M {\n input x: [B, 32]\n input y: i32[B]\n param g: [32] = ones\n layer ln = LayerNorm(32)\n z = ln(x) * g\n output s = softmax(z)\n loss = cross_entropy(z, y) + mean(gelu(z) * sigmoid(z) + tanh(z))\n train { optimizer = adam(lr = 1e-3) }\n}\n";
    let (n, gemms) = allocations_per_step(src);
    assert_eq!(gemms, 0);
    assert_eq!(n, 0, "{n} heap allocations per step");
}

/// With matrix products, only the gemm crate allocates: at most two per call.
#[test]
fn only_gemm_allocates_in_training_steps() {
    for w in ["mlp", "cnn", "lstm"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benches/workloads/{w}.nn"));
        let text = std::fs::read_to_string(&path).expect("workload");
        let (n, gemms) = allocations_per_step(&text);
        println!("{w}: {n} allocations per step, {gemms} gemm calls");
        assert!(n <= 2 * gemms, "{w}: {n} allocations per step for {gemms} gemm calls");
    }
}
