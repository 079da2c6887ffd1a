//! Memory bandwidth of fused elementwise kernels against a plain copy, in the same run
//! (issue 4: at least 80% of the copy bandwidth over large tensors, counting bytes read
//! plus bytes written).
//!
//! Tensors are 8 Mi floats (32 MiB each), far beyond the caches. `copy` moves 64 MiB per
//! iteration (read + write); `axpy_relu` (`relu(a * x + y)`, one fused loop) reads two
//! tensors and writes one, 96 MiB; `adam_step` is a whole training step of the loss
//! `sum(w * x)` for a [2048, 4096] parameter: the loss reads w and x, the fused Adam
//! update reads w, g (= x), m, v and writes w, m, v (288 MiB). Criterion prints each as
//! GiB/s; compare the lines.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nnc::internals::runtime::executable::{concrete, Executable};
use std::hint::black_box;

const N: usize = 8 << 20;

fn compile(src: &str, batch: usize) -> Executable {
    compile_threads(src, batch, 1)
}

fn compile_threads(src: &str, batch: usize, threads: usize) -> Executable {
    let c = nnc::internals::pipeline::compile_source("bench.nn", src, None).expect("compiles");
    let p = &c.programs[0];
    let g = if p.train.loss.is_some() {
        nnc::internals::pipeline::step_graph(p, batch).expect("step")
    } else {
        concrete(&p.eval, batch).expect("bind")
    };
    Executable::new(&g, &nnc::internals::codegen::CodegenOptions { threads, ..Default::default() }).expect("jit")
}

fn x_small(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 11) as f32 - 5.0).collect()
}

fn bandwidth(c: &mut Criterion) {
    let mut group = c.benchmark_group("bandwidth");
    group.sample_size(20);

    let src: Vec<f32> = (0..N).map(|i| i as f32).collect();
    let mut dst = vec![0f32; N];
    group.throughput(Throughput::Bytes((2 * N * 4) as u64));
    group.bench_function("copy", |b| b.iter(|| dst.copy_from_slice(black_box(&src))));

    let axpy = "model M {\n input x: [B, 1024]\n input y: [B, 1024]\n output z = relu(2 * x + y)\n}\n";
    let mut exe = compile(axpy, N / 1024);
    exe.set_input_f32(0, &src).expect("x");
    exe.set_input_f32(1, &src).expect("y");
    group.throughput(Throughput::Bytes((3 * N * 4) as u64));
    group.bench_function("axpy_relu", |b| b.iter(|| exe.run(0, 0)));

    // Both cores: the copy in two halves, the kernel split by the step (`nnc_par`).
    let half = N / 2;
    group.throughput(Throughput::Bytes((2 * N * 4) as u64));
    group.bench_function("copy_2_threads", |b| {
        b.iter(|| {
            let (d0, d1) = dst.split_at_mut(half);
            std::thread::scope(|sc| {
                sc.spawn(|| d0.copy_from_slice(black_box(&src[..half])));
                d1.copy_from_slice(black_box(&src[half..]));
            })
        })
    });
    let mut exe2 = compile_threads(axpy, N / 1024, 2);
    exe2.set_input_f32(0, &src).expect("x");
    exe2.set_input_f32(1, &src).expect("y");
    group.throughput(Throughput::Bytes((3 * N * 4) as u64));
    group.bench_function("axpy_relu_2_threads", |b| b.iter(|| exe2.run(0, 0)));
    drop(exe2);

    // The same kernel on 3 x 128 KiB, which stays in L2: what the loop itself sustains.
    let small = 32 << 10;
    let mut exe = compile(axpy, small / 1024);
    exe.set_input_f32(0, &x_small(small)).expect("x");
    exe.set_input_f32(1, &x_small(small)).expect("y");
    group.throughput(Throughput::Bytes((3 * small * 4) as u64));
    group.bench_function("axpy_relu_in_l2", |b| b.iter(|| exe.run(0, 0)));

    // A materialized transpose (the MLP's W2ᵀ, 512 KiB, read and written inside L2).
    let mut exe = compile("model M {\n input x: [B, 256]\n output y = x.T\n}\n", 512);
    exe.set_input_f32(0, &x_small(512 * 256)).expect("x");
    group.throughput(Throughput::Bytes((2 * 512 * 256 * 4) as u64));
    group.bench_function("transpose_512x256", |b| b.iter(|| exe.run(0, 0)));

    // One Adam step of a [2048, 4096] weight whose gradient is the input itself.
    let src = "model M {\n input x: [2048, 4096]\n param w: [2048, 4096] = normal(0.1)\n loss = sum(w * x)\n train { optimizer = adam(lr = 1e-3) }\n}\n";
    let mut exe = compile(src, 2048);
    let x: Vec<f32> = (0..N).map(|i| (i % 7) as f32 * 1e-3).collect();
    exe.set_input_f32(0, &x).expect("x");
    for i in 1..exe.graph.inputs.len() {
        exe.set_input_f32(i, &[1e-3]).expect("hyper");
    }
    let adam = exe.schedule.kernels.len();
    group.throughput(Throughput::Bytes((9 * N * 4) as u64));
    group.bench_function(format!("adam_step ({adam} kernels)"), |b| b.iter(|| exe.run(0, 1)));

    // Row-wise work over 4 MiB (twice the 2 MiB L2 of a core, so from L3), counted as
    // one read of x and one write of the result: softmax and layer-norm rows of 64 and
    // 1024 (row groups: max, exp, sum and normalization row by row), and the sum over the
    // rows of a [4096, 256] gradient (a bias gradient; column blocks side by side).
    let rows_n = 1 << 20;
    for (name, cols, body) in [
        ("softmax_rows_64", 64, "softmax(x)"),
        ("softmax_rows_1024", 1024, "softmax(x)"),
        (
            "layer_norm_rows_64",
            64,
            "(x - mean(x, axis = -1, keep = true)) / sqrt(var(x, axis = -1, keep = true) + 1e-5)",
        ),
        (
            "layer_norm_rows_1024",
            1024,
            "(x - mean(x, axis = -1, keep = true)) / sqrt(var(x, axis = -1, keep = true) + 1e-5)",
        ),
    ] {
        let src = format!("model M {{\n input x: [B, {cols}]\n output y = {body}\n}}\n");
        let mut exe = compile(&src, rows_n / cols);
        exe.set_input_f32(0, &x_small(rows_n)).expect("x");
        let k = exe.schedule.kernels.len();
        group.throughput(Throughput::Bytes((2 * rows_n * 4) as u64));
        group.bench_function(format!("{name} ({k} kernels)"), |b| b.iter(|| exe.run(0, 0)));
    }
    let mut exe = compile("model M {\n input x: [B, 256]\n output y = sum(x * 2.0, axis = 0)\n}\n", rows_n / 256);
    exe.set_input_f32(0, &x_small(rows_n)).expect("x");
    group.throughput(Throughput::Bytes((rows_n * 4) as u64));
    group.bench_function("column_sum_4096x256", |b| b.iter(|| exe.run(0, 0)));
    group.finish();
}

criterion_group!(benches, bandwidth);
criterion_main!(benches);
