//! The 16-lane transcendentals (`codegen::wide`) against the JIT's own 4-lane code, bit
//! for bit: the host functions over a sweep of the f32 range (with and without flushed
//! denormals) and every tail length, kernels that run them in strips (several levels,
//! outputs feeding transcendentals, flat, row, row-group and GEMM-epilogue kernels), and
//! whole training steps (the LSTM workload, the row attention and row LSTM examples) on
//! one and two threads. Without AVX-512 the wide path is never taken; each test then
//! says so in its output.

use nnc::internals::codegen::wide::{self, Func};
use nnc::internals::codegen::{fp, CodegenOptions};
use nnc::internals::runtime::executable::{concrete, Executable};
use nnc::internals::runtime::interp::Data;

/// Whether the machine runs the wide path; prints why not.
fn wide_here(test: &str) -> bool {
    let ok = wide::available();
    if !ok {
        println!("{test}: SKIPPED: this CPU has no AVX-512F/DQ, so the 16-lane path is never used");
    }
    ok
}

const FUNCS: [(Func, &str); 5] =
    [(Func::Exp, "exp"), (Func::Log, "log"), (Func::Tanh, "tanh"), (Func::Sigmoid, "sigmoid"), (Func::Erf, "erf")];

/// `fname(x)` for every x through a compiled flat kernel.
fn jit(fname: &str, xs: &[f32], narrow: bool, keep_denormals: bool) -> Vec<f32> {
    let src = format!("model M {{\n input x: [B]\n output y = {fname}(x)\n}}\n");
    let p = nnc::internals::pipeline::compile_source("m.nn", &src, None).expect("compiles").programs.remove(0);
    let g = concrete(&p.eval, xs.len()).expect("bind");
    let opts = CodegenOptions { verify: true, threads: 1, keep_denormals, narrow_math: narrow, ..Default::default() };
    let mut exe = Executable::new(&g, &opts).expect("jit");
    exe.set_input_f32(0, xs).expect("input");
    exe.run(0, 0);
    exe.output("y").expect("y").to_vec()
}

/// Special values (zeros, infinities, NaNs with several payloads and signs, the denormal
/// range, the largest finite values, each function's thresholds) and every 1021st bit
/// pattern, plus a dense run of the working range [-20, 20].
fn sweep() -> Vec<f32> {
    let mut v: Vec<f32> = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7f80_0001), // signalling
        f32::from_bits(0xff80_1234),
        f32::from_bits(0x7fc1_2345),
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::from_bits(0x8000_0001),
        f32::from_bits(0x007f_ffff),
        f32::MAX,
        f32::MIN,
    ];
    for t in [0.625f32, 1.0, 2.0, 4.5, 10.0, 20.0, 87.0, 88.7, 89.0, 104.0, 150.0, std::f32::consts::FRAC_1_SQRT_2] {
        for d in -3i32..=3 {
            let x = f32::from_bits((t.to_bits() as i32 + d) as u32);
            v.push(x);
            v.push(-x);
        }
    }
    let mut bits: u64 = 0;
    while bits <= u64::from(u32::MAX) {
        v.push(f32::from_bits(bits as u32));
        bits += 1021;
    }
    for i in 0..200_000 {
        v.push(-20.0 + 40.0 * i as f32 / 200_000.0);
    }
    v
}

/// `f` over `xs` on the 16-lane host function, in the thread's mode with FTZ and DAZ set
/// or cleared as a compiled step sets them.
fn host(f: Func, xs: &[f32], keep_denormals: bool) -> Vec<f32> {
    let mut out = xs.to_vec();
    let saved = fp::fp_mode();
    let ftz_daz = (1 << 15) | (1 << 6);
    fp::set_fp_mode(if keep_denormals { saved & !ftz_daz } else { saved | ftz_daz });
    let ran = wide::apply(f, &mut out);
    fp::set_fp_mode(saved);
    assert!(ran, "AVX-512 was detected");
    out
}

fn first_difference(a: &[f32], b: &[f32], xs: &[f32]) -> Option<String> {
    a.iter().zip(b).zip(xs).find(|((p, q), _)| p.to_bits() != q.to_bits()).map(|((p, q), x)| {
        format!("x = {x:e} ({:#010x}): {p:e} ({:#010x}) vs {q:e} ({:#010x})", x.to_bits(), p.to_bits(), q.to_bits())
    })
}

/// Each host function equals the JIT's 4-lane code bit for bit over the sweep, with
/// denormals flushed (the default step mode) and kept; so does the JIT's kernel that
/// calls it in strips.
#[test]
fn host_functions_equal_the_jit_bit_for_bit() {
    if !wide_here("host_functions_equal_the_jit_bit_for_bit") {
        return;
    }
    let xs = sweep();
    for (f, name) in FUNCS {
        for keep in [false, true] {
            let narrow = jit(name, &xs, true, keep);
            let wide = host(f, &xs, keep);
            if let Some(d) = first_difference(&wide, &narrow, &xs) {
                panic!("{name} (keep_denormals {keep}): host function vs 4-lane JIT at {d}");
            }
            let strips = jit(name, &xs, false, keep);
            if let Some(d) = first_difference(&strips, &narrow, &xs) {
                panic!("{name} (keep_denormals {keep}): wide kernel vs 4-lane JIT at {d}");
            }
        }
        println!("{name}: {} values bit-equal", xs.len());
    }
}

/// Every length from 0 to 70 (whole vectors and masked tails), at an aligned and an
/// unaligned start: the first n values are the JIT's, the rest untouched.
#[test]
fn host_functions_tails() {
    if !wide_here("host_functions_tails") {
        return;
    }
    let xs: Vec<f32> = (0..72).map(|i| (i as f32 * 0.37 - 13.0) * if i % 3 == 0 { 1.0 } else { 0.25 }).collect();
    for (f, name) in FUNCS {
        let want = jit(name, &xs, true, false);
        for start in [0usize, 1] {
            for n in 0..=70 {
                let mut buf = vec![f32::from_bits(0x7fa5_a5a5); 80];
                buf[start..start + n].copy_from_slice(&xs[..n]);
                let saved = fp::fp_mode();
                fp::set_fp_mode(saved | (1 << 15) | (1 << 6));
                assert!(wide::apply(f, &mut buf[start..start + n]));
                fp::set_fp_mode(saved);
                for (i, y) in buf.iter().enumerate() {
                    let expect =
                        if i >= start && i < start + n { want[i - start] } else { f32::from_bits(0x7fa5_a5a5) };
                    assert_eq!(y.to_bits(), expect.to_bits(), "{name}, start {start}, n {n}, index {i}");
                }
            }
        }
    }
}

/// Runs the eval graph of `src` at `batch` with random inputs: every output.
fn eval_outputs(src: &str, batch: usize, narrow: bool, threads: usize) -> Vec<(String, Vec<f32>)> {
    let p = nnc::internals::pipeline::compile_source("m.nn", src, None).expect("compiles").programs.remove(0);
    let g = concrete(&p.eval, batch).expect("bind");
    let opts = CodegenOptions { verify: true, threads, narrow_math: narrow, ..Default::default() };
    let mut exe = Executable::new(&g, &opts).expect("jit");
    let (params, _) = nnc::internals::gradcheck::random_params(&exe.graph, 5);
    for (i, p) in params.iter().enumerate() {
        exe.set_param(i, &p.iter().map(|&x| x as f32).collect::<Vec<_>>()).expect("param");
    }
    let inputs = nnc::internals::gradcheck::random_inputs::<f32>(&exe.graph, batch, 1).expect("inputs");
    for (i, t) in inputs.iter().enumerate() {
        match &t.data {
            Data::F(d) => exe.set_input_f32(i, &d.iter().map(|x| x * 3.0).collect::<Vec<_>>()).expect("input"),
            Data::I(d) => exe.set_input_i32(i, d).expect("input"),
        }
    }
    exe.run(0, 0);
    g.outputs.iter().map(|(n, _)| (n.clone(), exe.output(n).expect("output").to_vec())).collect()
}

/// Kernels of every shape the strips handle give the 4-lane results bit for bit: flat
/// kernels longer than a strip with a tail, chains of transcendentals (three levels), a
/// stored output that a transcendental reads, rows with a slice (the LSTM cell), rows
/// shorter and longer than a strip, a row group (softmax, layer norm with GELU), and a
/// GEMM's epilogue.
#[test]
fn kernels_in_strips_equal_four_lanes() {
    if !wide_here("kernels_in_strips_equal_four_lanes") {
        return;
    }
    let models = [
        ("flat, three levels", "model M {\n input x: [B, 37]\n output y = exp(tanh(sigmoid(x) * 2.0 - 1.0) + log(abs(x) + 1.0)) * erf(x)\n}\n", 29),
        ("stored output read", "model M {\n input x: [B, 300]\n output a = x * 0.5 + 1.0\n output b = sigmoid(x * 0.5 + 1.0) + tanh(x * 0.5 + 1.0)\n}\n", 3),
        ("rows with slices", "model M {\n input x: [B, 4, 96]\n layer l = LSTM(96, 72)\n output h = l(x)\n}\n", 5),
        ("long rows", "model M {\n input x: [B, 700]\n input z: [B, 1]\n output y = tanh(x * z) + exp(-abs(x)) * sigmoid(z)\n}\n", 6),
        ("row group", "model M {\n input x: [B, 100]\n layer n = LayerNorm(100)\n output s = softmax(x)\n output t = gelu(n(x))\n}\n", 9),
        ("epilogue", "model M {\n input x: [B, 48]\n layer d = Dense(48, 300)\n output y = sigmoid(d(x)) * tanh(d(x))\n}\n", 70),
    ];
    for (what, src, batch) in models {
        for threads in [1, 2] {
            let narrow = eval_outputs(src, batch, true, threads);
            let wide = eval_outputs(src, batch, false, threads);
            for ((name, a), (_, b)) in narrow.iter().zip(&wide) {
                assert_eq!(a.len(), b.len());
                let diff = a.iter().zip(b).position(|(p, q)| p.to_bits() != q.to_bits());
                assert!(diff.is_none(), "{what}, output {name}, {threads} threads: differs at {diff:?}");
            }
        }
    }
}

/// Parameters after a few training steps of `text` (batch `batch`).
fn trained(text: &str, batch: usize, narrow: bool, threads: usize) -> Vec<Vec<f32>> {
    let p = nnc::internals::pipeline::compile_source("model", text, None).expect("compiles").programs.remove(0);
    let g = nnc::internals::pipeline::step_graph(&p, batch).expect("step graph");
    let opts = CodegenOptions { threads, narrow_math: narrow, ..Default::default() };
    let mut exe = Executable::new(&g, &opts).expect("jit");
    let (params, states) = nnc::internals::gradcheck::random_params(&exe.graph, 11);
    for (i, p) in params.iter().enumerate() {
        exe.set_param(i, &p.iter().map(|&x| x as f32).collect::<Vec<_>>()).expect("param");
    }
    for (i, s) in states.iter().enumerate() {
        exe.set_state(i, &s.iter().map(|&x| x as f32).collect::<Vec<_>>()).expect("state");
    }
    for step in 0..4 {
        let inputs = nnc::internals::gradcheck::random_inputs::<f32>(&exe.graph, batch, step).expect("inputs");
        for (i, t) in inputs.iter().enumerate() {
            match &t.data {
                Data::F(d) => exe.set_input_f32(i, d).expect("input"),
                Data::I(d) => exe.set_input_i32(i, d).expect("input"),
            }
        }
        exe.run(1, step);
    }
    (0..exe.graph.params.len()).map(|i| exe.param(i).to_vec()).collect()
}

/// Training steps of the LSTM workload and of the row attention and row LSTM examples
/// leave the same parameters, bit for bit, with and without the 16-lane functions, on one
/// thread and two.
#[test]
fn training_steps_equal_four_lanes() {
    if !wide_here("training_steps_equal_four_lanes") {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, batch) in
        [("benches/workloads/lstm.nn", 32), ("examples/row_attention.nn", 16), ("examples/row_lstm.nn", 32)]
    {
        let text = std::fs::read_to_string(root.join(file)).expect("model file");
        for threads in [1, 2] {
            let narrow = trained(&text, batch, true, threads);
            let wide = trained(&text, batch, false, threads);
            let moved = narrow.iter().zip(&wide).all(|(a, b)| a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()));
            assert!(moved, "{file}, {threads} threads: parameters differ");
        }
        println!("{file}: parameters bit-equal after 4 steps, 1 and 2 threads");
    }
}
