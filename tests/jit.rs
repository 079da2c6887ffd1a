//! The JIT equals the interpreter: every single-op fixture and every example, forward
//! (eval graph), backward (train graph + gradients) and a whole training step (Adam),
//! run with the planner's debug check on (dead buffers are filled with NaN after each
//! kernel, so a buffer reused too early shows up as NaN).
//!
//! Tolerance: both run in f32; the JIT sums in a different order (4 lanes, GEMM
//! blocking) and its exp/log/tanh/erf are within a few ulp of the interpreter's libm.
//! Each element is compared with the interpreter in f64: the JIT may err by 1e-4 of the
//! tensor's largest magnitude (the scale at which reassociated f32 sums err), plus four
//! times the f32 interpreter's own largest error on that tensor, which measures how badly
//! conditioned it is (gradients that cancel to zero, like a bias before batch norm,
//! come out as rounding residues of large sums in any f32 order).

use nnc::internals::codegen::CodegenOptions;
use nnc::internals::gradcheck::{random_inputs, random_params};
use nnc::internals::ir::{DType, Graph, Value};
use nnc::internals::runtime::executable::{concrete, Executable};
use nnc::internals::runtime::interp::{self, Data, Feeds, Tensor};
use std::path::{Path, PathBuf};

fn nn_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "nn"))
        .collect();
    files.sort();
    files
}

fn compile(path: &Path) -> nnc::internals::ir::Program {
    let text = std::fs::read_to_string(path).expect("readable");
    match nnc::internals::pipeline::compile_source(&path.display().to_string(), &text, path.parent()) {
        Ok(mut c) => c.programs.remove(0),
        Err(e) => panic!("{}", nnc::internals::diagnostic::render(&e.diagnostics, &e.sources, Default::default())),
    }
}

/// The first model of `src`, or a panic with the rendered diagnostics.
fn program(name: &str, src: &str) -> nnc::internals::ir::Program {
    match nnc::internals::pipeline::compile_source(name, src, None) {
        Ok(mut c) => c.programs.remove(0),
        Err(e) => panic!("{}", nnc::internals::diagnostic::render(&e.diagnostics, &e.sources, Default::default())),
    }
}

/// The gradient graph of `p` (loss, outputs and every parameter's gradient).
fn grads(p: &nnc::internals::ir::Program) -> Graph {
    nnc::internals::autodiff::grad_program(&p.train).expect("grad").graph
}

/// The training step of `p`: forward, backward and an SGD update, as nnc runs it.
fn sgd_step(p: &nnc::internals::ir::Program) -> Graph {
    let mut settings = nnc::internals::settings::TrainSettings::default();
    settings.optimizer.name = "sgd".into();
    with_hyper(nnc::internals::optim::update::step_graph(&p.train, &settings).expect("step"))
}

/// `p`'s eval graph, gradients and SGD step at `batch`, and its gradients at
/// `big_batch` on two threads.
fn compare_program(what: &str, p: &nnc::internals::ir::Program, batch: usize, big_batch: usize) {
    compare(&format!("{what}: eval"), &p.eval, batch);
    compare(&format!("{what}: gradients"), &grads(p), batch);
    compare(&format!("{what}: step"), &sgd_step(p), batch);
    compare_threads(&format!("{what}: gradients, 2 threads"), &grads(p), big_batch, 2);
}

/// Kernels with row groups replaced by their parts.
fn parts(kernels: &[nnc::internals::fusion::Kernel]) -> Vec<nnc::internals::fusion::Kernel> {
    kernels
        .iter()
        .flat_map(|k| match k {
            nnc::internals::fusion::Kernel::Rows { parts, .. } => parts.clone(),
            k => vec![k.clone()],
        })
        .collect()
}

/// The kernels `g` is scheduled into at batch `batch`.
fn kernels(g: &Graph, batch: usize) -> nnc::internals::fusion::Schedule {
    Executable::new(&concrete(g, batch).expect("bind"), &opts(1)).expect("jit").schedule
}

fn opts(threads: usize) -> CodegenOptions {
    CodegenOptions { poison: true, threads, verify: true, ..Default::default() }
}

/// Runs `g` (symbolic) at batch `batch` in both backends and compares every output,
/// the loss and every update.
fn compare(what: &str, g: &Graph, batch: usize) {
    compare_threads(what, g, batch, 1)
}

/// `compare` with GEMMs and large elementwise kernels split across `threads`.
fn compare_threads(what: &str, g: &Graph, batch: usize, threads: usize) {
    compare_with(what, g, batch, &opts(threads))
}

/// `compare_threads` with optimizer updates fused into their gradients' GEMMs.
fn compare_fused(what: &str, g: &Graph, batch: usize, threads: usize) {
    compare_with(what, g, batch, &CodegenOptions { fuse_updates: true, ..opts(threads) })
}

/// `compare` with the given code generation options.
fn compare_with(what: &str, g: &Graph, batch: usize, opts: &CodegenOptions) {
    let g = concrete(g, batch).unwrap_or_else(|e| panic!("{what}: {e}"));
    let inputs = random_inputs::<f32>(&g, batch, 3).unwrap_or_else(|e| panic!("{what}: {e}"));
    let (params, states) = random_params(&g, 3);
    let to32 =
        |v: &Vec<Vec<f64>>| v.iter().map(|p| p.iter().map(|&x| x as f32).collect::<Vec<f32>>()).collect::<Vec<_>>();
    let feeds = Feeds { inputs: inputs.clone(), params: to32(&params), states: to32(&states), seed: 7, step: 2 };
    let want = interp::run(&g, &feeds).unwrap_or_else(|e| panic!("{what}: interpreter: {e}"));
    let inputs64 = random_inputs::<f64>(&g, batch, 3).unwrap_or_else(|e| panic!("{what}: {e}"));
    let round = |v: &Vec<Vec<f64>>| {
        v.iter().map(|p| p.iter().map(|&x| x as f32 as f64).collect::<Vec<f64>>()).collect::<Vec<_>>()
    };
    let inputs64: Vec<Tensor<f64>> = inputs64
        .into_iter()
        .map(|t| match t.data {
            Data::F(d) => Tensor::f(t.shape, d.into_iter().map(|x| x as f32 as f64).collect()),
            Data::I(d) => Tensor::i(t.shape, d),
        })
        .collect();
    let feeds64 = Feeds { inputs: inputs64, params: round(&params), states: round(&states), seed: 7, step: 2 };
    let want64 = interp::run(&g, &feeds64).unwrap_or_else(|e| panic!("{what}: interpreter (f64): {e}"));
    let mut exe = Executable::new(&g, opts).unwrap_or_else(|e| panic!("{what}: compile: {e}"));
    for (i, p) in feeds.params.iter().enumerate() {
        exe.set_param(i, p).expect("param");
    }
    for (i, s) in feeds.states.iter().enumerate() {
        exe.set_state(i, s).expect("state");
    }
    for (i, t) in inputs.iter().enumerate() {
        match (&t.data, g.inputs[i].ty.dtype) {
            (Data::F(d), DType::F32) => exe.set_input_f32(i, d).expect("input"),
            (Data::I(d), DType::I32) => exe.set_input_i32(i, d).expect("input"),
            _ => panic!("input dtype"),
        }
    }
    exe.run(7, 2);
    let mut checks: Vec<(String, Value, Vec<f32>)> = Vec::new();
    for (name, v) in &g.outputs {
        checks.push((
            name.clone(),
            *v,
            exe.value(exe.graph.outputs.iter().find(|(n, _)| n == name).expect("out").1).expect("value").to_vec(),
        ));
    }
    if let Some(l) = g.loss {
        checks.push(("loss".into(), l, vec![exe.loss().expect("loss")]));
    }
    for (i, p) in g.params.iter().enumerate() {
        if let Some(u) = p.update {
            checks.push((format!("update {}", p.name), u, exe.param(i).to_vec()));
        }
    }
    for (i, s) in g.states.iter().enumerate() {
        if let Some(u) = s.update {
            checks.push((format!("update {}", s.name), u, exe.state(i).to_vec()));
        }
    }
    assert!(!checks.is_empty(), "{what}: nothing to compare");
    for (name, v, got) in checks {
        let w: &Tensor<f32> = want.get(v);
        let w = w.floats();
        let r = want64.get(v).floats();
        assert_eq!(got.len(), w.len(), "{what}: {name}: length");
        let scale = r.iter().fold(1e-3f64, |m, x| m.max(x.abs()));
        let f32_err = w.iter().zip(r).fold(0.0f64, |m, (b, x)| m.max((f64::from(*b) - x).abs()));
        let tol = 1e-4 * scale + 4.0 * f32_err;
        for (k, ((a, b), x)) in got.iter().zip(w).zip(r).enumerate() {
            let (a, b) = (f64::from(*a), f64::from(*b));
            let ok = (a - x).abs() <= tol || (a.is_nan() && b.is_nan());
            assert!(ok, "{what}: {name}[{k}]: jit {a} vs interpreter {b} (f64 {x}, scale {scale})");
        }
    }
}

fn all_graphs(path: &Path, batch: usize) {
    let p = compile(path);
    let what = path.display().to_string();
    compare(&format!("{what} (eval)"), &p.eval, batch);
    if p.train.loss.is_some() {
        let g = nnc::internals::autodiff::grad_program(&p.train).expect("grad").graph;
        compare(&format!("{what} (train + grad)"), &g, batch);
        // Momentum here: Adam divides by sqrt(v), so on gradients that cancel to zero it
        // turns rounding residues into full-size steps (see `adam_step_on_digits`).
        let settings = nnc::internals::settings::TrainSettings {
            optimizer: nnc::internals::settings::Choice {
                name: "momentum".into(),
                args: vec![
                    ("lr".into(), nnc::internals::settings::Lit::Num(0.1)),
                    ("mu".into(), nnc::internals::settings::Lit::Num(0.9)),
                ],
            },
            l2: 1e-3,
            clip_norm: Some(1.0),
            ..Default::default()
        };
        let step = nnc::internals::optim::update::step_graph(&p.train, &settings).expect("step");
        compare(&format!("{what} (momentum step)"), &with_hyper(step), batch);
    }
}

/// The hyper inputs become constants so `random_inputs` does not draw them.
fn with_hyper(mut g: Graph) -> Graph {
    let n = nnc::internals::optim::update::HYPER.len();
    let keep = g.inputs.len() - n;
    let hyper: Vec<Value> = g.inputs[keep..].iter().map(|i| i.value).collect();
    for (v, x) in hyper.iter().zip([1e-3, 0.1, 0.001]) {
        g.nodes[*v].op = nnc::internals::ir::Op::Fill(x);
    }
    g.inputs.truncate(keep);
    g
}

/// Every optimizer's step. The normalizing ones (Adam, AdamW, RMSprop, Adagrad) map a
/// first-step gradient g to about lr * sign(g), so they are compared on smooth models
/// (tanh, sigmoid) where no gradient is a rounding residue; dead ReLU units in digits
/// would make them compare noise.
#[test]
fn every_optimizer_step() {
    for (f, opts) in [
        ("examples/digits.nn", &["sgd", "nesterov", "momentum"][..]),
        ("examples/spirals.nn", &["adam", "adamw", "rmsprop", "adagrad", "nesterov", "sgd"][..]),
        ("examples/neuron.nn", &["adam", "adamw", "rmsprop", "adagrad"][..]),
    ] {
        let p = compile(&Path::new(env!("CARGO_MANIFEST_DIR")).join(f));
        for &opt in opts {
            let mut settings = nnc::internals::settings::TrainSettings::default();
            settings.optimizer.name = opt.into();
            settings.optimizer.args.push(("mu".into(), nnc::internals::settings::Lit::Num(0.9)));
            let step = nnc::internals::optim::update::step_graph(&p.train, &settings).expect("step");
            compare(&format!("{f} ({opt} step)"), &with_hyper(step), 8);
        }
    }
}

#[test]
fn primitives_jit_equals_interpreter() {
    for f in nn_files("tests/data/grad") {
        all_graphs(&f, 3);
    }
}

#[test]
fn examples_jit_equal_interpreter() {
    for f in nn_files("examples") {
        all_graphs(&f, 2);
    }
}

/// Large, odd batches (loop tails, column reductions over many rows).
#[test]
fn large_odd_batches() {
    let p = compile(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits.nn"));
    let g = nnc::internals::autodiff::grad_program(&p.train).expect("grad").graph;
    compare("digits grad at batch 1437", &g, 1437);
    compare("digits eval at batch 333", &p.eval, 333);
    // Kernels of 1437 x 128 elements are split across threads (in parts of odd sizes).
    for threads in [2, 3] {
        compare_threads(&format!("digits grad at batch 1437, {threads} threads"), &g, 1437, threads);
    }
}

/// Random well-typed programs: expression trees over [B, 4] tensors drawn from the
/// elementwise, reduction, matmul, broadcast, slicing and transpose primitives, compared
/// forward and backward (the fixtures cover each op alone; this covers combinations).
#[test]
fn random_programs_jit_equals_interpreter() {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % n
    };
    fn expr(depth: u32, next: &mut dyn FnMut(u64) -> u64) -> String {
        let leaves = ["a", "b", "(a @ w)", "(b * v)", "(w[0, :] + a)"];
        if depth == 0 {
            return leaves[next(leaves.len() as u64) as usize].to_string();
        }
        let x = expr(depth - 1, next);
        let y = expr(depth - 1, next);
        match next(23) {
            0 => format!("({x} + {y})"),
            1 => format!("({x} - {y})"),
            2 => format!("({x} * {y})"),
            3 => format!("({x} / (1 + {y} * {y}))"),
            4 => format!("exp(tanh({x}))"),
            5 => format!("sigmoid({x})"),
            6 => format!("relu({x})"),
            7 => format!("maximum({x}, {y})"),
            8 => format!("where({x} > {y}, {x}, 0.5 * {y})"),
            9 => format!("({x} @ w)"),
            10 => format!("({x} + sum({y}, axis = -1, keep = true))"),
            11 => format!("({x} * mean({y}, axis = 0, keep = true))"),
            12 => format!("concat([({x})[:, 0:2], ({y})[:, 2:4]], axis = 1)"),
            13 => format!("transpose(({x}).T, [1, 0])"),
            14 => format!("softmax({x})"),
            15 => format!("log(1 + {x} * {x})"),
            16 => format!("sqrt({x} * {x} + 1) * erf({y})"),
            17 => format!("concat([sigmoid(({x})[:, 0:2]) * ({y})[:, 1:3], ({y})[:, 2:4] - ({x})[:, 1:3]], axis = 1)"),
            // GEMM epilogues: a scale, an addend.
            18 => format!("(({x} @ w) * 0.5 + {y})"),
            19 => format!("({y} - (exp({x}) @ w))"),
            // Row groups: a normalized row, a max of a computed row.
            20 => format!("(({x} - mean({x}, axis = -1, keep = true)) / sqrt(var({x}, axis = -1, keep = true) + 1))"),
            21 => format!("({y} * max({x} * {x} - {y}, axis = -1, keep = true))"),
            _ => format!("gelu(abs({x}) - {y})"),
        }
    }
    for i in 0..90 {
        let body = expr(1 + (i % 4) as u32, &mut next);
        let src = format!(
            "model R {{\n input a: [B, 4]\n input b: [B, 4]\n param w: [4, 4] = normal(0.5)\n param v: [4] = normal(1.0)\n output y = {body}\n loss = mean(y * y) + sum(y[:, 0])\n}}\n"
        );
        let p = match nnc::internals::pipeline::compile_source("random.nn", &src, None) {
            Ok(mut c) => c.programs.remove(0),
            Err(e) => panic!(
                "program {i} does not compile:\n{src}\n{}",
                nnc::internals::diagnostic::render(&e.diagnostics, &e.sources, Default::default())
            ),
        };
        compare(&format!("random program {i}: {body}"), &p.eval, 3);
        let g = nnc::internals::autodiff::grad_program(&p.train).expect("grad").graph;
        compare(&format!("random program {i} (grad): {body}"), &g, 3);
        if i % 3 == 0 {
            // Vector loops with tails, row groups of many rows, two threads.
            compare_threads(&format!("random program {i} (grad, batch 67, 2 threads): {body}"), &g, 67, 2);
        }
    }
}

/// Transposes of the last two dims, copied in 4x4 register blocks with scalar edges:
/// every edge case of the blocking (rows and columns below, at and above multiples of 4
/// and 16, a batch of matrices), exactly. And a transposed right operand that is copied
/// once for many products (k >= 64, 256 rows of results), backward included.
#[test]
fn transposes_blocked_and_copied_for_gemm() {
    for (batch, rows, cols) in
        [(1, 1, 1), (1, 3, 5), (1, 4, 4), (2, 5, 8), (1, 16, 12), (3, 17, 6), (1, 33, 19), (2, 64, 36)]
    {
        let src =
            format!("model T {{\n input x: [B, {batch}, {rows}, {cols}]\n output y = transpose(x, [0, 1, 3, 2])\n}}\n");
        let p = program("t.nn", &src);
        let fused = kernels(&p.eval, 1);
        assert!(
            fused.kernels.iter().any(|k| matches!(k, nnc::internals::fusion::Kernel::Transpose { .. })),
            "[{batch}, {rows}, {cols}]: not a transpose kernel"
        );
        compare(&format!("transpose [{batch}, {rows}, {cols}]"), &p.eval, 1);
    }
    let src = "model G {\n input x: [B, 70]\n param w: [36, 70] = xavier_uniform\n param u: [36, 70] = xavier_uniform\n output y = tanh(x @ w.T) @ u\n loss = sum(y * y)\n}\n";
    let p = program("g.nn", src);
    let g = nnc::internals::autodiff::grad_program(&p.train).expect("grad").graph;
    let fused = kernels(&g, 300);
    assert!(
        fused.kernels.iter().any(|k| matches!(k, nnc::internals::fusion::Kernel::Transpose { .. })),
        "w.T is not copied"
    );
    compare("x @ w.T at batch 300, with gradients", &g, 300);
}

/// Concats along a leading axis are elided: each piece is computed in place inside the
/// concat's buffer; so are the column blocks of a concat along the last axis when
/// elementwise kernels write them. Pieces from every kind of kernel (elementwise, GEMM, reduction,
/// transpose, a view of one), a piece shared by two concats (only one can hold it), a
/// concat of concats and a concat that is read by later elementwise code, forward and
/// backward, with the planner's NaN check on.
#[test]
fn concats_elided_into_place() {
    let src = "model C {
 input x: [B, 8]
 param w: [8, 8] = xavier_uniform
 param u: [8, 8] = xavier_uniform
 fn stack(a: [B, 8], b: [B, 8], c: [B, 8]) -> [3, B, 8] {
  concat([reshape(a, [1, B, 8]), reshape(b, [1, B, 8]), reshape(c, [1, B, 8])], axis = 0)
 }
 h = tanh(x @ w)
 g = h @ u
 r = sum(h * g, axis = 1, keep = true) * x
 s1 = stack(h, g, r)
 s2 = stack(g, r, transpose(transpose(h)) + 1)
 s3 = concat([s1, s2], axis = 0)
 q = concat([tanh(g), r * 2, exp(h)], axis = 1)
 output y = sum(s3 * s3, axis = 0) + sum(s1, axis = 0) + q[:, 0:8] * q[:, 16:24]
 loss = sum(y * y)
}
";
    let p = program("c.nn", src);
    let fused = kernels(&p.eval, 5);
    assert!(fused.view_offset.iter().any(|&o| o > 0), "no concat was elided:\n{:?}", fused.kernels);
    assert!(fused.row_stride.contains(&24), "the column blocks of q were not placed:\n{:?}", fused.kernels);
    compare("concats (eval)", &p.eval, 5);
    let g = nnc::internals::autodiff::grad_program(&p.train).expect("grad").graph;
    compare("concats (train + grad)", &g, 5);
    compare_threads("concats (train + grad), 2 threads", &g, 37, 2);
}

/// Convolution windows (im2col and its adjoint col2im as JIT kernels): kernel sizes,
/// strides and paddings where rows and columns leave the image on either side, or a
/// window offset never lands inside (padding 2 with a 1-wide kernel), forward and
/// backward, including the image gradient; on one thread and split by images across
/// two and three.
#[test]
fn convolution_windows() {
    for (kh, kw, stride, pad, h, w) in [
        (1, 1, 1, 0, 4, 4),
        (3, 2, 1, 1, 7, 9),
        (3, 3, 2, 1, 7, 6),
        (5, 5, 1, 2, 5, 5),
        (1, 1, 2, 2, 5, 4),
        (2, 3, 3, 0, 9, 11),
    ] {
        let src = format!(
            "model W {{\n input x: [B, 2, {h}, {w}]\n param k: [3, 2, {kh}, {kw}] = normal(1.0)\n param s: [2, {h}, {w}] = normal(1.0)\n loss = sum(tanh(conv2d(x * s, k, stride = {stride}, padding = {pad})))\n}}\n"
        );
        let p = program("w.nn", &src);
        let g = nnc::internals::autodiff::grad_program(&p.train).expect("grad").graph;
        let fused = kernels(&g, 3);
        let kinds: Vec<bool> = fused
            .kernels
            .iter()
            .filter_map(|k| {
                if let nnc::internals::fusion::Kernel::Window { adjoint, .. } = k {
                    Some(*adjoint)
                } else {
                    None
                }
            })
            .collect();
        assert!(kinds.contains(&false) && kinds.contains(&true), "window {kh}x{kw}/{stride}/{pad}: {kinds:?}");
        compare(&format!("window {kh}x{kw} stride {stride} padding {pad} on {h}x{w}"), &g, 3);
        // Im2col and col2im split by images across threads (100 x 2 images).
        for threads in [2, 3] {
            compare_threads(
                &format!("window {kh}x{kw} stride {stride} on {h}x{w}, {threads} threads"),
                &g,
                100,
                threads,
            );
        }
    }
}

/// Max and average pooling as window reductions that read the image (`Kernel::Pool`,
/// no materialized windows): window sizes 1 to 4, strides 1 to 3 (vector loads with
/// stride 1, shuffled pairs with stride 2, scalar otherwise), odd image sizes and rows
/// whose tail is not a whole vector, batch 1 and 3, forward (eval) and the gradients
/// (average pooling's windows are never stored; max pooling's backward reads them),
/// and 150 images on two threads.
#[test]
fn pooling_reads_the_image() {
    for (k, stride, h, w) in [
        (2, 2, 28, 28),
        (2, 2, 7, 9),
        (3, 3, 10, 11),
        (3, 1, 7, 9),
        (3, 2, 9, 21),
        (2, 1, 5, 6),
        (1, 1, 4, 5),
        (4, 3, 11, 14),
    ] {
        for pool in ["maxpool2d", "avgpool2d"] {
            let src = format!(
                "model P {{\n input x: [B, 2, {h}, {w}]\n param s: [2, {h}, {w}] = normal(1.0)\n output y = {pool}(x * s, {k}, stride = {stride})\n loss = sum(tanh(y))\n}}\n"
            );
            let what = format!("{pool} {k}x{k} stride {stride} on {h}x{w}");
            let p = program("p.nn", &src);
            let fused = kernels(&p.eval, 1);
            assert!(
                fused.kernels.iter().any(|k| matches!(k, nnc::internals::fusion::Kernel::Pool { .. }))
                    && !fused.kernels.iter().any(|k| matches!(k, nnc::internals::fusion::Kernel::Window { .. })),
                "{what}: not a window reduction: {:?}",
                fused.kernels
            );
            for batch in [1, 3] {
                compare(&format!("{what} (eval, batch {batch})"), &p.eval, batch);
            }
            let g = grads(&p);
            if pool == "avgpool2d" {
                let windows = kernels(&g, 1)
                    .kernels
                    .iter()
                    .filter(|k| matches!(k, nnc::internals::fusion::Kernel::Window { adjoint: false, .. }))
                    .count();
                assert_eq!(windows, 0, "{what}: the gradient graph stores the windows");
            }
            compare(&format!("{what} (gradients)"), &g, 3);
            compare_threads(&format!("{what} (eval, 2 threads)"), &p.eval, 150, 2);
        }
    }
}

/// A convolution's bias and activation over its [N, O, OH, OW] result run as the GEMM's
/// epilogue, the loop regrouped to the product's [N·O, OH·OW] rows (the bias a per-row
/// value): several channel counts, kernel sizes, strides and paddings, odd image sizes,
/// batch 1 and 3, forward and gradients, and on two threads.
#[test]
fn convolution_bias_in_gemm_epilogue() {
    for (o, k, stride, pad, h, w) in
        [(8, 3, 1, 1, 28, 28), (3, 3, 2, 1, 7, 9), (5, 1, 1, 0, 5, 6), (2, 2, 3, 0, 11, 13)]
    {
        let src = format!(
            "model C {{\n input x: [B, 2, {h}, {w}]\n layer c = Conv2d(2, {o}, {k}, stride = {stride}, padding = {pad})\n output y = relu(c(x)) * 2\n loss = sum(tanh(y))\n}}\n"
        );
        let what = format!("conv {o}x{k}x{k} stride {stride} padding {pad} on {h}x{w}");
        let p = program("c.nn", &src);
        let fused = kernels(&p.eval, 3);
        assert!(
            fused.kernels.iter().any(|k| matches!(k, nnc::internals::fusion::Kernel::MatMul { epilogue: Some(_), .. }))
                && !fused.kernels.iter().any(|k| matches!(k, nnc::internals::fusion::Kernel::Elementwise { .. })),
            "{what}: the bias is not in the GEMM's epilogue: {:?}",
            fused.kernels
        );
        for batch in [1, 3] {
            compare(&format!("{what} (eval, batch {batch})"), &p.eval, batch);
        }
        compare(&format!("{what} (gradients)"), &grads(&p), 3);
        compare_threads(&format!("{what} (eval, 2 threads)"), &p.eval, 64, 2);
    }
}

/// Broadcasts of whole rows over a run of middle dims (`Access::Rows`, a pooling
/// window's max spread back over the window) are read in place by the loop: leading,
/// middle and single-dim runs, with rows of 32 or more (odd lengths too), on one and
/// two threads.
#[test]
fn row_broadcasts_over_middle_dims() {
    for (x, out) in [
        ("[B, 3, 1, 1, 5, 37]", "[B, 3, 2, 2, 5, 37]"),
        ("[1, 4, 33]", "[B, 2, 4, 33]"),
        ("[B, 1, 64]", "[B, 5, 64]"),
        ("[B, 2, 1, 3, 35]", "[B, 2, 4, 3, 35]"),
    ] {
        let src = format!("model R {{\n input x: {x}\n input y: {out}\n output z = exp(y) * x + (y == x)\n}}\n");
        let p = program("r.nn", &src);
        let fused = kernels(&p.eval, 3);
        assert!(
            fused.kernels.iter().all(|k| !matches!(k, nnc::internals::fusion::Kernel::Host { .. })),
            "{x} -> {out}: a broadcast was not fused: {:?}",
            fused.kernels
        );
        compare(&format!("{x} -> {out}"), &p.eval, 3);
        compare_threads(&format!("{x} -> {out}, 2 threads"), &p.eval, 150, 2);
    }
}

/// Transposes that keep the last dim (attention's head split and merge) are row copies:
/// ranks 3 to 5, rows of 1 to 19 elements, unit dims, exactly.
#[test]
fn row_permutes() {
    for (shape, perm) in [
        ("[B, 5, 3, 16]", "[0, 2, 1, 3]"),
        ("[B, 5, 3, 7]", "[2, 1, 0, 3]"),
        ("[B, 1, 4, 2, 19]", "[0, 3, 2, 1, 4]"),
        ("[B, 6, 1]", "[1, 0, 2]"),
        ("[B, 2, 3, 5, 4]", "[3, 0, 2, 1, 4]"),
        ("[B, 4, 1, 5]", "[2, 1, 0, 3]"),
    ] {
        let src = format!("model P {{\n input x: {shape}\n output y = transpose(x * 2, {perm}) + 1\n}}\n");
        let p = program("p.nn", &src);
        let fused = kernels(&p.eval, 3);
        assert!(
            fused.kernels.iter().any(|k| matches!(k, nnc::internals::fusion::Kernel::Permute { .. })),
            "{shape} by {perm}: {:?}",
            fused.kernels
        );
        compare(&format!("{shape} by {perm}"), &p.eval, 3);
    }
}

/// A reduction computes a producer that only it reads inside its own loop: rows reduced
/// (grid and flat producers, short and long rows with vector and scalar tails), leading
/// dims reduced (column blocks, single vectors, single columns), runs of middle dims,
/// max and min, forward and backward, on 1 and 2 threads.
#[test]
fn reductions_fuse_their_producers() {
    for (x, w, red) in [
        ("[B, 10]", "[10]", "axis = -1"),
        ("[B, 67]", "[67]", "axis = -1"),
        ("[B, 130]", "[130]", "axis = 1"),
        ("[B, 37]", "[37]", "axis = 0"),
        ("[B, 3, 5, 7]", "[7]", "axis = [1, 2]"),
        ("[B, 4, 21]", "[21]", "axis = [1, 2]"),
        ("[B, 4, 21]", "[21]", "axis = [0, 1]"),
        ("[B, 2, 9]", "[9]", "axis = 1"),
        ("[B, 3, 40]", "[40]", "axis = 1"),
    ] {
        let src = format!(
            "model R {{\n input x: {x}\n param w: {w} = normal(1.0)\n \
             z = x * w\n \
             s = sum(exp(z - max(z, {red}, keep = true)), {red}, keep = true)\n \
             output q = sum(z * z, {red}) + max(tanh(z) + x, {red}) - min(abs(z - 1), {red})\n \
             output p = s\n \
             loss = mean(log(s)) + mean(sum((z - x) * (z - x), {red}))\n \
             train {{ optimizer = sgd(lr = 0.1) }}\n}}\n"
        );
        let p = program("r.nn", &src);
        let fused = kernels(&sgd_step(&p), 5);
        let with_producer = parts(&fused.kernels)
            .iter()
            .filter(|k| matches!(k, nnc::internals::fusion::Kernel::Reduce { x, .. } if !fused.materialized[x.as_u32() as usize]))
            .count();
        assert!(with_producer >= 4, "{x} over {red}: {with_producer} reductions fused their producer");
        compare_program(&format!("{x} over {red}"), &p, 5, 70);
    }
}

/// GEMM epilogues: a constant scale and an addend the product is accumulated into are
/// applied by the gemm crate as it stores; an addend that another value still reads (in
/// whole or through an overlapping view) is not written into.
#[test]
fn gemm_epilogues() {
    let src = "model G {\n input x: [B, 6]\n input u: [B, 5]\n param w: [5, 6, 5] = normal(1.0)\n \
               param v: [5, 5] = normal(1.0)\n param c: [4, 5] = normal(1.0)\n \
               output s1 = (x @ w[0]) * 0.5\n \
               output s2 = (x @ w[1]) / 4.0\n \
               pp = x @ w[2] + x @ w[3]\n \
               output p = tanh(pp) + pp @ v\n \
               qq = u @ v - x @ w[4]\n \
               output q = tanh(qq) + qq @ v\n \
               h = exp(u * 0.5)\n \
               rr = h @ v + h\n \
               output r = tanh(rr) + rr @ v + h\n \
               b = exp(c * 0.25)\n \
               tt = b[2:4] @ v + b[0:2]\n \
               output t = tanh(tt) + tt @ v\n \
               b3 = exp(c * 0.75)\n \
               t3 = b3[1:3] @ v + b3[2:4]\n \
               output t4 = tanh(t3) + t3 @ v + b3[1:3]\n \
               layer l = LSTM(5, 4)\n \
               output y = l(reshape(x, [B, 3, 2]) @ ones([2, 5]))\n \
               loss = mean(s1 + s2 + p + q + r) + mean(t) + mean(t4) + mean(y)\n \
               train { optimizer = sgd(lr = 0.1) }\n}\n";
    let p = program("g.nn", src);
    let fused = kernels(&p.eval, 2);
    let (mut scaled, mut accumulated) = (0, 0);
    for k in &fused.kernels {
        if let nnc::internals::fusion::Kernel::MatMul { scale, accumulate, .. } = k {
            scaled += usize::from(*scale != 1.0);
            accumulated += usize::from(*accumulate);
        }
    }
    // s1, s2 and q (beta = -1) scale; p, q, t (into a view just before its left
    // operand's) and the LSTM's three steps accumulate; r and t4 do not: h and b3[2:4]
    // (through b3[1:3]) are read again after the product.
    assert_eq!((scaled, accumulated), (3, 6), "{:?}", fused.kernels);
    compare_program("epilogues", &p, 2, 70);
}

/// Elementwise kernels over a product's result run as its epilogue, block by block as
/// the GEMM finishes them: with a row (bias), column and scalar broadcast and another
/// full operand; over two depth blocks (k = 600); in each orientation of the driver
/// (vectors down the result's rows, down its columns for a narrow result whose left
/// operand runs that way, dot products for a narrow one that does not); on a batch of
/// products; written into the product's own buffer; on one thread and split across two.
#[test]
fn elementwise_epilogues_run_per_block() {
    let src =
        "model E {\n input x: [B, 600]\n input u: [B, 12]\n input t: [B, 5, 8]\n param w: [600, 40] = normal(0.05)\n \
               param c: [40] = normal(0.3)\n param q: [600, 9] = normal(0.05)\n param v: [12, 40] = normal(0.3)\n \
               k = tanh(sum(u, axis = 1, keep = true))\n \
               g = u @ v\n \
               h = relu(x @ w + c) * k + g\n \
               s = sigmoid(x @ q) * 2.0\n \
               output r = tanh(x.T @ s)\n \
               output bt = sigmoid(t @ transpose(t, [0, 2, 1]) - 0.5)\n \
               output o = h * 0.5\n \
               loss = mean(h * h) + mean(s) + mean(r * r) + mean(bt * bt)\n \
               train { optimizer = sgd(lr = 0.1) }\n}\n";
    let p = program("e.nn", src);
    for (what, g) in [("eval", p.eval.clone()), ("gradients", grads(&p))] {
        let fused = kernels(&g, 70);
        let epilogues = fused
            .kernels
            .iter()
            .filter(|k| matches!(k, nnc::internals::fusion::Kernel::MatMul { epilogue: Some(_), .. }))
            .count();
        assert!(epilogues >= 4, "{what}: {epilogues} epilogues in {:?}", fused.kernels);
        // The product over two depth blocks (k = 600) has one, and so has the batch.
        let deep = |k: &nnc::internals::fusion::Kernel| {
            matches!(k, nnc::internals::fusion::Kernel::MatMul { k: 600, n: 40, epilogue: Some(_), .. })
        };
        assert!(fused.kernels.iter().any(deep), "{what}: {:?}", fused.kernels);
        let batched = |k: &nnc::internals::fusion::Kernel| {
            matches!(k, nnc::internals::fusion::Kernel::MatMul { batch: 70, epilogue: Some(_), .. })
        };
        assert!(fused.kernels.iter().any(batched), "{what}: {:?}", fused.kernels);
    }
    compare_program("epilogues per block", &p, 70, 700);
}

/// An epilogue runs once per column of micro-tiles over all of a row block's rows (a
/// row of the result 1040 wide here: the 16-wide unrolled loop; 3 wide backward: the scalar tail
/// ), or per left panel over a column block's tiles when a product of few
/// rows packs its weight panel by panel (rows 1040 floats apart, batch 20): bias and
/// ReLU and a scale forward, the ReLU's backward epilogue, on one thread and on two.
#[test]
fn epilogues_over_wide_blocks() {
    let src = "model W {\n input x: [B, 40]\n param w: [40, 1040] = normal(0.2)\n param c: [1040] = normal(0.3)\n \
               param v: [1040, 3] = normal(0.05)\n \
               h = relu(x @ w + c) * 0.5\n \
               output y = h @ v\n \
               loss = mean(y * y)\n \
               train { optimizer = sgd(lr = 0.1) }\n}\n";
    let p = program("w.nn", src);
    let fused = kernels(&p.eval, 20);
    let wide = |k: &nnc::internals::fusion::Kernel| {
        matches!(k, nnc::internals::fusion::Kernel::MatMul { n: 1040, epilogue: Some(_), .. })
    };
    assert!(fused.kernels.iter().any(wide), "{:?}", fused.kernels);
    compare_program("wide epilogues, few rows", &p, 20, 20);
    compare_program("wide epilogues", &p, 130, 700);
}

/// Softmax, log-softmax, layer norm and cross-entropy rows run as row groups (one loop
/// over rows, every part of a row in turn), with rows of 1 to 130 elements, forward and
/// backward, on 1 thread and split across 2.
#[test]
fn row_groups_fuse_softmax_and_norm_rows() {
    for n in [1, 3, 10, 37, 64, 130] {
        let src = format!(
            "model S {{\n input x: [B, {n}]\n input y: i32[B]\n param w: [{n}] = normal(1.0)\n \
             layer ln = LayerNorm({n})\n \
             z = ln(x * w)\n \
             output p = softmax(z)\n \
             output q = log_softmax(x - w)\n \
             loss = cross_entropy(z, y) + mean(p * q)\n \
             train {{ optimizer = sgd(lr = 0.01) }}\n}}\n"
        );
        let p = program("s.nn", &src);
        let fused = kernels(&sgd_step(&p), 5);
        let grouped: usize = fused
            .kernels
            .iter()
            .map(|k| if let nnc::internals::fusion::Kernel::Rows { parts, .. } = k { parts.len() } else { 0 })
            .sum();
        assert!(grouped >= 12, "n = {n}: {grouped} kernels in row groups: {:?}", fused.kernels);
        // Every row of the step, forward and backward, is in one group: the batch means
        // between the loss rows and their gradient's rows are held back until it closes.
        let groups = fused.kernels.iter().filter(|k| matches!(k, nnc::internals::fusion::Kernel::Rows { .. })).count();
        let outside = fused.kernels.iter().any(|k| match k {
            nnc::internals::fusion::Kernel::Elementwise { rows, .. } => *rows == 5,
            nnc::internals::fusion::Kernel::Reduce { outer, inner, .. } => *outer == 5 && *inner == 1,
            _ => false,
        });
        assert!(groups == 1 && !outside, "n = {n}: {:?}", fused.kernels);
        compare_program(&format!("n = {n}"), &p, 5, 3000);
    }
}

/// A NaN anywhere in a row (any lane of any vector, or the scalar tail) makes the row's
/// max and min NaN, in reductions that load their rows and in those that compute them.
#[test]
fn reductions_propagate_nan() {
    for n in [1, 3, 4, 7, 8, 13, 64, 70] {
        let src = format!(
            "model M {{\n input x: [B, {n}]\n output a = max(x, axis = -1)\n output b = min(x, axis = -1)\n \
             output c = max(x * 2.0, axis = -1)\n output d = min(x + 1.0, axis = -1)\n \
             output e = sum(x, axis = -1)\n}}\n"
        );
        let p = program("m.nn", &src);
        let g = concrete(&p.eval, n).expect("bind");
        let mut exe = Executable::new(&g, &opts(1)).expect("jit");
        // Row i has its NaN at column i; the others are finite.
        let x: Vec<f32> = (0..n * n).map(|k| if k / n == k % n { f32::NAN } else { (k % 5) as f32 - 2.0 }).collect();
        exe.set_input_f32(0, &x).expect("input");
        exe.run(0, 0);
        for (name, v) in &g.outputs {
            let got = exe.value(*v).expect("value");
            assert!(got.iter().all(|y| y.is_nan()), "n = {n}: {name} = {got:?}");
        }
    }
}

/// A value one arithmetic op away from stored values, read only by elementwise ops, is
/// recomputed in each of their loops: the first layer's pre-activation x W + b is not
/// stored for its ReLU's gradient, nor are GELU's x/2 and x/√2. (The logits are: a
/// reduction reads them.)
#[test]
fn cheap_values_recomputed_not_stored() {
    let src = "model D {\n input x: [B, 9]\n input y: i32[B]\n layer d1 = Dense(9, 33)\n layer d2 = Dense(33, 7)\n \
               h = relu(d1(x))\n \
               loss = cross_entropy(d2(gelu(h) + h), y)\n \
               train { optimizer = sgd(lr = 0.1) }\n}\n";
    let p = program("d.nn", src);
    let step = sgd_step(&p);
    let g = concrete(&step, 6).expect("bind");
    let exe = Executable::new(&g, &opts(1)).expect("jit");
    let (g, fused) = (&exe.graph, &exe.schedule);
    let stored_pre_activations = g
        .nodes
        .iter()
        .filter(|(v, n)| {
            matches!(
                n.op,
                nnc::internals::ir::Op::Binary(nnc::internals::ir::BinaryOp::Add | nnc::internals::ir::BinaryOp::Mul)
            ) && n.args.iter().any(|a| matches!(g.nodes[*a].op, nnc::internals::ir::Op::MatMul))
                && g.ty(*v).shape.last().and_then(|d| d.as_const()) == Some(33)
                && fused.materialized[v.as_u32() as usize]
        })
        .count();
    let stored_scalings = g
        .nodes
        .iter()
        .filter(|(v, n)| {
            matches!(n.op, nnc::internals::ir::Op::Binary(nnc::internals::ir::BinaryOp::Mul))
                && n.args.iter().any(|a| matches!(g.nodes[*a].op, nnc::internals::ir::Op::Fill(_)))
                && g.ty(*v).shape.last().and_then(|d| d.as_const()) == Some(33)
                && fused.materialized[v.as_u32() as usize]
        })
        .count();
    assert_eq!((stored_pre_activations, stored_scalings), (0, 0), "{:?}", fused.kernels);
    compare_program("recomputed", &p, 6, 1500);
}

/// An elementwise output takes the buffer of an operand that dies in its kernel (every
/// iteration loads, then stores); operands read later keep theirs.
#[test]
fn elementwise_outputs_written_in_place() {
    let src = "model P {\n input x: [B, 37]\n param w: [37, 37] = normal(0.2)\n \
               a = tanh(x @ w)\n \
               b = a * sigmoid(a @ w)\n \
               c = exp(b @ w) - b\n \
               output y = c * 0.5 + a\n \
               loss = mean(c * c)\n \
               train { optimizer = sgd(lr = 0.1) }\n}\n";
    let p = program("p.nn", src);
    for (what, g) in [("eval", p.eval.clone()), ("gradients", grads(&p)), ("step", sgd_step(&p))] {
        let exe = Executable::new(&concrete(&g, 5).expect("bind"), &opts(1)).expect("jit");
        let shared = exe.plan.in_place_of.iter().filter(|x| x.is_some()).count();
        assert!(shared >= 2, "{what}: {shared} outputs written in place");
        compare(&format!("in place: {what}"), &g, 5);
        compare_threads(&format!("in place: {what}, 2 threads"), &g, 1000, 2);
    }
}

/// A batch of small products (x @ yᵀ, one per example, the right operand read
/// transposed) is split across threads by matrices, half on each; x @ w is one product
/// of B·64 rows with a scale epilogue, split by the crate.
#[test]
fn batched_gemms_split_across_threads() {
    let src = "model G {\n input x: [B, 64, 48]\n input y: [B, 64, 48]\n param w: [48, 64] = normal(0.2)\n \
               output p = (x @ w) * 0.5\n \
               output q = tanh(x @ y.T)\n}\n";
    let p = program("g.nn", src);
    compare("batched: 1 thread", &p.eval, 3);
    compare_threads("batched: 2 threads", &p.eval, 41, 2);
}

/// normal_like draws the interpreter's numbers: the same uniforms (bit for bit), through
/// the JIT's log, sqrt and cos (within a few ulp of libm), so each number agrees to a
/// few f32 ulps of its magnitude. Reversed slices move data exactly.
#[test]
fn normal_like_and_reversed_slices_equal_the_interpreter() {
    let p = program(
        "n.nn",
        "model N {\n input x: [B, 1000]\n output z = normal_like(x, std = 3.0)\n output f = x[:, ::-1][:, 999:0:-7]\n}\n",
    );
    let batch = 64;
    let g = concrete(&p.eval, batch).expect("bind");
    let xs: Vec<f32> = (0..batch * 1000).map(|i| i as f32).collect();
    let feeds = Feeds {
        inputs: vec![Tensor::f(vec![batch, 1000], xs.clone())],
        params: vec![],
        states: vec![],
        seed: 9,
        step: 4,
    };
    let want = interp::run(&g, &feeds).expect("interpreter");
    let mut exe = Executable::new(&g, &opts(1)).expect("jit");
    exe.set_input_f32(0, &xs).expect("input");
    exe.run(9, 4);
    let z = exe.output("z").expect("z").to_vec();
    let wz: &[f32] = want.get(g.outputs[0].1).floats();
    let mut worst = 0.0f64;
    for (a, b) in z.iter().zip(wz) {
        let err = f64::from((a - b).abs()) / f64::from(b.abs().max(1.0));
        worst = worst.max(err);
    }
    assert!(worst <= 4.0 * f64::from(f32::EPSILON), "relative error {worst}");
    assert_eq!(exe.output("f").expect("f").to_vec(), want.get(g.outputs[1].1).floats().to_vec());
}

/// A smooth two-layer model whose first weight gradient (128 x B @ B x 128) is large
/// enough to be split across two threads at batch 512.
const FUSED_UPDATES: &str = "model U {\n input x: [B, 128]\n input t: [B, 16]\n \
    layer fc1 = Dense(128, 128)\n layer fc2 = Dense(128, 16)\n \
    output y = fc2(tanh(fc1(x)))\n loss = mean((y - t) * (y - t))\n}\n";

/// The step graph of `FUSED_UPDATES` with optimizer `opt` and the given settings.
fn fused_step(opt: &str, f: impl Fn(&mut nnc::internals::settings::TrainSettings)) -> Graph {
    let p = program("u.nn", FUSED_UPDATES);
    let mut settings = nnc::internals::settings::TrainSettings::default();
    settings.optimizer.name = opt.into();
    settings.optimizer.args.push(("mu".into(), nnc::internals::settings::Lit::Num(0.9)));
    f(&mut settings);
    with_hyper(nnc::internals::optim::update::step_graph(&p.train, &settings).expect("step"))
}

/// The parameters (by index) whose update is the epilogue of a GEMM, and those written
/// in place (into the parameter's own slot, not copied at the end of the step).
fn fused_and_in_place(g: &Graph, batch: usize, fuse_updates: bool) -> (Vec<usize>, Vec<usize>) {
    let exe =
        Executable::new(&concrete(g, batch).expect("bind"), &CodegenOptions { fuse_updates, ..opts(1) }).expect("jit");
    let fused = exe
        .graph
        .params
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            exe.schedule.kernels.iter().any(|k| match k {
                nnc::internals::fusion::Kernel::MatMul { epilogue: Some(e), .. } => {
                    p.update.is_some_and(|u| e.outs().contains(&u))
                }
                _ => false,
            })
        })
        .map(|(i, _)| i)
        .collect();
    let in_place = exe
        .graph
        .params
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            p.update.is_some_and(|u| exe.plan.slots[u.as_u32() as usize] == Some(exe.plan.param_slots[*i]))
        })
        .map(|(i, _)| i)
        .collect();
    (fused, in_place)
}

/// With `fuse_updates`, every optimizer's update (with its states, weight decay and
/// clipping by value) runs as the epilogue of its weight gradient's GEMM, written in
/// place into the parameter and its states block by block, on one thread and on two
/// (the GEMM split in pieces). By default the updates are kernels of their own, in place
/// too.
#[test]
fn optimizer_updates_in_gradient_epilogues() {
    for opt in ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"] {
        for (what, decay, clip) in [("plain", 0.0, None), ("l2 and clip_value", 1e-2, Some(0.05))] {
            let g = fused_step(opt, |s| {
                s.l2 = decay;
                s.clip_value = clip;
            });
            let (fused, in_place) = fused_and_in_place(&g, 8, true);
            // fc1.w and fc2.w (the biases' gradients are reductions, not products).
            assert_eq!(fused.len(), 2, "{opt} {what}: fused {fused:?}");
            assert!(fused.iter().all(|i| in_place.contains(i)), "{opt} {what}: {fused:?} not all in {in_place:?}");
            assert_eq!(in_place.len(), g.params.len(), "{opt} {what}: in place {in_place:?}");
            let (apart, in_place) = fused_and_in_place(&g, 8, false);
            assert!(apart.is_empty(), "{opt} {what}: fused by default {apart:?}");
            assert_eq!(in_place.len(), g.params.len(), "{opt} {what}: in place by default {in_place:?}");
            compare_fused(&format!("fused {opt} ({what})"), &g, 8, 1);
            compare_fused(&format!("fused {opt} ({what}), 2 threads"), &g, 512, 2);
            compare(&format!("{opt} ({what})"), &g, 8);
        }
    }
}

/// Clipping by the global norm reads every gradient before any update: the updates
/// stay kernels of their own (the norm's reduction reads the gradient between its GEMM
/// and its update).
#[test]
fn global_norm_clipping_keeps_updates_apart() {
    let g = fused_step("adam", |s| s.clip_norm = Some(0.5));
    let (fused, in_place) = fused_and_in_place(&g, 8, true);
    assert!(fused.is_empty(), "fused {fused:?}");
    assert_eq!(in_place.len(), g.params.len(), "in place {in_place:?}");
    compare_fused("global norm clipping", &g, 8, 1);
    compare_fused("global norm clipping, 2 threads", &g, 512, 2);
}

/// With `log_grad_norms` (and `fuse_updates`) the old parameter is read after its update is computed (the
/// sum of squares of the parameter and of the update's change): the update is still
/// the GEMM's epilogue, but written to a buffer of its own and copied at the end of the
/// step, so the monitors read the old values.
#[test]
fn parameters_read_after_the_fused_update_are_not_overwritten() {
    let g = fused_step("adam", |s| s.log_grad_norms = true);
    let (fused, in_place) = fused_and_in_place(&g, 8, true);
    assert_eq!(fused.len(), 2, "fused {fused:?}");
    assert!(fused.iter().all(|i| !in_place.contains(i)), "{fused:?} written in place: {in_place:?}");
    compare_fused("log_grad_norms", &g, 8, 1);
    compare_fused("log_grad_norms, 2 threads", &g, 512, 2);
}

/// Kernels that differ only in where their buffers are (the steps of an unrolled loop:
/// an LSTM's cells forward, their GEMM epilogues backward, an elementwise recurrence)
/// share one compiled function, each call with its own buffers; the step still equals
/// the interpreter, on one thread and with the large kernels split across two.
#[test]
fn kernels_differing_only_in_buffers_share_code() {
    let src = "model S {\n input x: [B, 6, 5]\n input y: i32[B]\n layer l = LSTM(5, 8)\n \
               param w: [8, 8] = normal(0.3)\n \
               h = l(x)\n \
               for i in 0..4 { h = h + 0.1 * tanh(h @ w) }\n \
               output o = h\n \
               loss = cross_entropy(h, y)\n \
               train { optimizer = sgd(lr = 0.1) }\n}\n";
    let p = program("s.nn", src);
    for (what, g) in [("eval", p.eval.clone()), ("gradients", grads(&p)), ("step", sgd_step(&p))] {
        let exe = Executable::new(&concrete(&g, 3).expect("bind"), &opts(1)).expect("jit");
        let (functions, shared) = exe.functions();
        assert!(shared >= 4, "{what}: {functions} functions, {shared} shared");
    }
    compare_program("shared kernels", &p, 3, 4200);
}

/// `sum_over_ranks` (`Op::AllReduce`) in one process is the identity: the synchronized
/// batch norm's statistics and their gradients, and the collectives' in-place buffers,
/// through fusion's buckets, on the JIT as in the interpreter.
#[test]
fn sync_batch_norm_in_one_process() {
    let p = program(
        "sync.nn",
        "model M {\n input x: [B, 64]\n input y: i32[B]\n layer c = Conv2d(1, 4, 3, padding = 1)\n \
         layer n = BatchNorm(4, sync = true)\n layer f = Dense(4 * 4 * 4, 10)\n \
         h = n(maxpool2d(relu(c(reshape(x, [-1, 1, 8, 8]))), 2))\n output logits = f(flatten(h))\n \
         loss = cross_entropy(logits, y)\n}\n",
    );
    compare_program("sync batch norm", &p, 8, 64);
    let mut settings = nnc::internals::settings::TrainSettings::default();
    settings.optimizer.name = "adam".into();
    let step = with_hyper(nnc::internals::optim::update::step_graph(&p.train, &settings).expect("step"));
    for b in [8, 29, 64] {
        compare(&format!("sync batch norm: adam step at {b}"), &step, b);
    }
}

/// Cranelift on several threads (`codegen::jobs`) defines the same machine code in the
/// same order as on one: the three workloads' training steps, with GEMMs and elementwise
/// kernels on one thread and on two, compiled on 1, 2 and 3 threads, hash to the same
/// code and compute the same bits.
#[test]
fn parallel_compile_defines_the_sequential_code() {
    for w in ["mlp", "cnn", "lstm"] {
        let p = compile(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benches/workloads/{w}.nn")));
        let g = nnc::internals::pipeline::step_graph(&p, 8).expect("step graph");
        for threads in [1, 2] {
            let mut seen: Option<(u64, (usize, usize), Vec<u32>)> = None;
            for compile_threads in [1, 2, 3] {
                let o = CodegenOptions { threads, compile_threads, ..Default::default() };
                let mut exe = Executable::new(&g, &o).expect("jit");
                let inputs = random_inputs::<f32>(&exe.graph, 8, 0).expect("inputs");
                for (i, t) in inputs.iter().enumerate() {
                    match &t.data {
                        Data::F(d) => exe.set_input_f32(i, d).expect("input"),
                        Data::I(d) => exe.set_input_i32(i, d).expect("input"),
                    }
                }
                exe.run(0, 0);
                exe.run(0, 1);
                let bits: Vec<u32> = (0..exe.graph.params.len())
                    .flat_map(|i| exe.param(i).iter().map(|x| x.to_bits()).collect::<Vec<_>>())
                    .chain([exe.loss().expect("loss").to_bits()])
                    .collect();
                let now = (exe.code_hash(), exe.functions(), bits);
                match &seen {
                    None => seen = Some(now),
                    Some(first) => {
                        let what = format!("{w}, {threads} step threads, compiled on {compile_threads}");
                        assert_eq!(first.0, now.0, "{what}: other machine code");
                        assert_eq!(first.1, now.1, "{what}: other functions");
                        assert!(first.2 == now.2, "{what}: other results");
                    }
                }
            }
        }
    }
}
