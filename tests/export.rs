//! `nnc export`: ONNX models run by a real ONNX runtime (tract) give what `nnc predict`
//! (the JIT) gives on the same inputs, at two batch sizes from one file; preprocessing
//! of a trained checkpoint is part of the model; errors name the op or the tensor and
//! leave no file behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use nnc::internals::ir::{DType, Dim, Graph, Mode, Op, Type};
use nnc::internals::tensors::{HostData, HostTensor, TensorMap};
use tract_onnx::prelude::*;

/// Agreement: |onnx - nnc| <= REL * |nnc| + ABS * max(1, max |nnc| of the tensor).
const REL: f64 = 1e-5;
const ABS: f64 = 1e-6;
/// Two batch sizes run from the same file.
const BATCHES: [usize; 2] = [3, 7];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnc-export-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a scratch directory");
    d
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Runs `nnc --color never ARGS`: (exit code, stderr).
fn nnc(args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .arg("--color")
        .arg("never")
        .args(args)
        .current_dir(root())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run nnc");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!err.contains("panicked"), "nnc {}: {err}", args.join(" "));
    (o.status.code().unwrap_or(-1), err)
}

fn nnc_ok(args: &[&str]) -> String {
    let (code, err) = nnc(args);
    assert_eq!(code, 0, "nnc {}:\n{err}", args.join(" "));
    err
}

/// Deterministic numbers in [lo, hi) (a 64-bit LCG).
fn numbers(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            // Rounded to 1/64 so f32 holds the input exactly on both sides.
            ((lo + u * (hi - lo)) * 64.0).round() / 64.0
        })
        .collect()
}

/// The eval graph that `nnc predict` and `nnc export` run (outputs only).
fn eval_graph(file: &Path) -> Graph {
    let c = nnc::internals::pipeline::compile_file(file).expect("the model compiles");
    let mut g = c.programs[0].eval.clone();
    g.loss = None;
    nnc::internals::simplify::drop_unused_inputs(&nnc::internals::simplify::dead_code(&g))
}

/// Inputs of `g` at batch size `b`: f32 in [lo, hi), i32 ids below their bound.
fn inputs(g: &Graph, b: usize, seed: u64, (lo, hi): (f64, f64)) -> TensorMap {
    let bounds = nnc::internals::ir::id_bounds(g);
    let mut m = TensorMap::new();
    for (i, decl) in g.inputs.iter().enumerate() {
        let shape: Vec<usize> =
            decl.ty.shape.iter().map(|d| d.eval(&|_| Some(b as i64)).expect("a dim") as usize).collect();
        let n = shape.iter().product();
        let t = match decl.ty.dtype {
            DType::F32 => HostTensor::f32(shape, numbers(n, seed + i as u64, lo, hi)),
            DType::I32 => {
                let k = bounds[i].map(|(k, _)| k).unwrap_or(2);
                let v =
                    numbers(n, seed + i as u64, 0.0, k as f64).iter().map(|&x| (x as i32).min(k as i32 - 1)).collect();
                HostTensor { shape, data: HostData::I32(v) }
            }
        };
        m.insert(decl.name.clone(), t);
    }
    m
}

/// Runs the ONNX file with tract: outputs by name. The batch stays symbolic, so one
/// optimized model serves every batch size.
struct Tract {
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl Tract {
    fn load(path: &Path) -> Tract {
        let model = tract_onnx::onnx().model_for_path(path).expect("tract reads the file");
        let inputs = model.input_outlets().expect("inputs").iter().map(|o| model.node(o.node).name.clone()).collect();
        let outputs = model
            .output_outlets()
            .expect("outputs")
            .iter()
            .map(|o| model.outlet_label(*o).map(str::to_string).unwrap_or_else(|| model.node(o.node).name.clone()))
            .collect();
        let plan =
            model.into_optimized().expect("tract optimizes the model").into_runnable().expect("tract plans the model");
        Tract { plan, inputs, outputs }
    }

    fn run(&self, ins: &TensorMap) -> BTreeMap<String, (Vec<usize>, Vec<f64>)> {
        let mut values: TVec<TValue> = tvec!();
        for name in &self.inputs {
            let t = ins.get(name).unwrap_or_else(|| panic!("no input `{name}`"));
            let tensor = match &t.data {
                HostData::F32(v) | HostData::F64(v) => {
                    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                    Tensor::from_shape(&t.shape, &v).expect("an f32 tensor")
                }
                HostData::I32(v) => Tensor::from_shape(&t.shape, v).expect("an i32 tensor"),
            };
            values.push(tensor.into());
        }
        let out = self.plan.run(values).expect("tract runs the model");
        self.outputs
            .iter()
            .zip(out.iter())
            .map(|(name, t)| {
                let t = t.cast_to::<f32>().expect("f32 output");
                let view = t.try_as_plain_ram().expect("plain data");
                let v = view.as_slice::<f32>().expect("f32 data").iter().map(|&x| f64::from(x)).collect();
                (name.clone(), (t.shape().to_vec(), v))
            })
            .collect()
    }
}

/// The largest error of `got` against `want`, relative to `REL * |want| + ABS * scale`
/// (1.0 is the tolerance) and as a plain relative error.
fn compare(what: &str, got: &(Vec<usize>, Vec<f64>), want: &HostTensor) -> (f64, f64) {
    assert_eq!(got.0, want.shape, "{what}: shape");
    let w = want.floats().expect("float output");
    let scale = w.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    let (mut worst, mut rel) = (0.0f64, 0.0f64);
    for (i, (a, b)) in got.1.iter().zip(w).enumerate() {
        let e = (a - b).abs();
        let r = e / (REL * b.abs() + ABS * scale);
        assert!(r <= 1.0, "{what}[{i}]: onnx {a} vs nnc {b} (|diff| {e:e})");
        worst = worst.max(r);
        rel = rel.max(e / b.abs().max(ABS * scale));
    }
    (worst, rel)
}

/// Exports `file` with `ck`, then runs the file at both batch sizes with tract and with
/// `nnc predict`; returns the largest relative error over every output.
fn check_against_predict(dir: &Path, file: &Path, ck: &Path, range: (f64, f64)) -> f64 {
    let stem = file.file_stem().and_then(|x| x.to_str()).expect("stem");
    let onnx = dir.join(format!("{stem}.onnx"));
    let t0 = std::time::Instant::now();
    let msg = nnc_ok(&["export", s(file), "--checkpoint", s(ck), "-o", s(&onnx)]);
    let secs = t0.elapsed().as_secs_f64();
    assert!(msg.contains("opset 18"), "{msg}");
    let tract = Tract::load(&onnx);
    let g = eval_graph(file);
    let (mut worst, mut used) = (0.0f64, 0.0f64);
    for (k, b) in BATCHES.into_iter().enumerate() {
        let ins = inputs(&g, b, 17 + k as u64, range);
        let in_path = dir.join(format!("{stem}-in{b}.safetensors"));
        let out_path = dir.join(format!("{stem}-out{b}.safetensors"));
        nnc::internals::tensors::write(&in_path, &ins, None).expect("write inputs");
        nnc_ok(&["predict", s(file), "--checkpoint", s(ck), "--inputs", s(&in_path), "--out", s(&out_path)]);
        let want = nnc::internals::tensors::read(&out_path).expect("read predictions");
        let got = tract.run(&ins);
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{stem}: output names");
        for (name, t) in &want {
            assert_eq!(t.shape.first(), Some(&b), "{stem}: {name} has the batch first");
            let (r, rel) = compare(&format!("{stem} batch {b} {name}"), &got[name], t);
            worst = worst.max(rel);
            used = used.max(r);
        }
    }
    eprintln!(
        "{stem}: export {secs:.2} s, {} bytes, max relative error {worst:.2e}, \
         {:.0}% of the tolerance",
        std::fs::metadata(&onnx).map(|m| m.len()).unwrap_or(0),
        used * 100.0
    );
    worst
}

#[test]
fn every_example_runs_in_tract_as_in_nnc_predict() {
    let d = scratch("examples");
    let mut seen = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "nn"))
        .collect();
    files.sort();
    for file in files {
        let g = eval_graph(&file);
        if g.outputs.is_empty() {
            continue;
        }
        let stem = file.file_stem().and_then(|x| x.to_str()).expect("stem").to_string();
        let ck = d.join(format!("{stem}-init.safetensors"));
        nnc_ok(&["init", s(&file), "--seed", "3", "--out", s(&ck)]);
        let range = if stem.starts_with("digits") || stem == "residual" { (0.0, 16.0) } else { (-1.0, 1.0) };
        check_against_predict(&d, &file, &ck, range);
        seen += 1;
    }
    assert!(seen >= 9, "expected the 9 examples with outputs, exported {seen}");
}

/// A trained checkpoint carries its preprocessing: the ONNX model takes raw features.
#[test]
fn trained_checkpoints_with_preprocessing_take_raw_features() {
    let d = scratch("trained");
    let cases = [
        ("digits.nn", "standardize"),
        ("digits_linear.nn", "whiten(method = \"zca\")"),
        ("digits_linear.nn", "whiten(method = \"pca\")"),
        ("residual.nn", "center"),
    ];
    for (i, (file, pre)) in cases.into_iter().enumerate() {
        let file = root().join("examples").join(file);
        let run = d.join(format!("run{i}"));
        nnc_ok(&["train", s(&file), "--set", "epochs=1", "--set", &format!("preprocess={pre}"), "--out", s(&run)]);
        let ck = run.join("last.safetensors");
        let sub = d.join(format!("case{i}"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        check_against_predict(&sub, &file, &ck, (0.0, 16.0));
        // The leading ops are there: the same file without the preprocessing tensors
        // would be a different model.
        let (ps, _) = nnc::internals::train::checkpoint::read(&ck).expect("read the checkpoint");
        assert!(ps.contains_key("preprocess.mean"), "{pre}: the checkpoint has its preprocessing");
        let msg = nnc_ok(&["export", s(&file), "--checkpoint", s(&ck), "-o", s(&sub.join("again.onnx"))]);
        let kind = pre.split('(').next().unwrap_or(pre);
        let kind = if kind == "whiten" {
            if pre.contains("pca") {
                "pca"
            } else {
                "zca"
            }
        } else {
            kind
        };
        assert!(msg.contains(&format!("preprocessing `{kind}` of `x` as leading ops")), "{msg}");
    }
}

/// A model over the primitives the examples do not use: strided and padded convolution,
/// average pooling, gather, one_hot, comparisons, where, pow, the unary functions,
/// concat, strided and reversed slices, transposes, arange, a symbolic size, batch
/// broadcasting in matmul, a mean over the batch, sin and cos.
const OPS: &str = "model Ops {
    input x: [B, 3, 8, 8]
    input ids: i32[B, 6]
    param W: [4, 3, 3, 3] = he_uniform
    param table: [10, 5] = normal(1.0)
    param P: [3, 1, 4, 5] = normal(1.0)
    c = conv2d(x, W, stride = 2, padding = 1)
    f = flatten(avgpool2d(c, 2))
    e = gather(table, ids)
    t = transpose(e, [0, 2, 1])
    output m1 = where(f > 0, exp(-abs(f)), log(1 + f ^ 2))
    output m2 = sqrt(abs(f)) * sign(f) + erf(f) + minimum(f, 0.5) + maximum(f, -0.5) + tanh(f) * sigmoid(f)
    output m3 = concat([flatten(t), sum(one_hot(ids, 10), axis = 1)], axis = 1)
    output m4 = f / size(x, 0) + arange(16) + mean(f, axis = 0)
    output m5 = (f >= 0.1) + (f <= 0.2) + (f < 0) + (f == 0) + 2 * (f != 0) - max(f, axis = 1, keep = true) + min(f, axis = 1, keep = true)
    output m6 = transpose(P @ t, [1, 0, 2, 3])
    output m7 = x[:, 1, 0:7:3, 1:7:2] + x[:, 2, 1:4, 5:8]
    output m8 = sin(3 * f) * cos(2 * f)
    output m9 = x[:, ::-1, 7:0:-3, ::-2]
}
";

#[test]
fn the_other_primitives_run_in_tract_as_in_nnc_predict() {
    let d = scratch("ops");
    let file = d.join("ops.nn");
    std::fs::write(&file, OPS).expect("write the model");
    let ck = d.join("ops-init.safetensors");
    nnc_ok(&["init", s(&file), "--seed", "5", "--out", s(&ck)]);
    check_against_predict(&d, &file, &ck, (-2.0, 2.0));
}

// ---- graphs built by hand: the primitives no model's eval graph reaches -----------------

fn batch_graph() -> (Graph, Dim) {
    let mut g = Graph::new(Mode::Eval);
    g.symbols.push("B".into());
    let b = Dim::sym(nnc::internals::ir::Sym(0));
    (g, b)
}

fn input(g: &mut Graph, name: &str, shape: Vec<Dim>) -> nnc::internals::ir::Value {
    let ty = Type::f32(shape);
    let v = g.push(Op::Input(g.inputs.len() as u32), vec![], Some(ty.clone())).expect("input");
    g.inputs.push(nnc::internals::ir::InputDecl { name: name.into(), ty, value: v, span: Default::default() });
    v
}

/// Exports `g` with the library call, runs it in tract and with the JIT at both batch
/// sizes.
fn check_graph(g: &Graph, what: &str) {
    let d = scratch(what);
    let opts = nnc::internals::export::Options {
        model_name: what.into(),
        batch_symbol: Some("B".into()),
        metadata: vec![],
        int8: Default::default(),
    };
    let bytes = nnc::internals::export::to_onnx(g, &TensorMap::new(), None, &opts).expect("export");
    let path = d.join("g.onnx");
    std::fs::write(&path, bytes).expect("write");
    let tract = Tract::load(&path);
    for (k, b) in BATCHES.into_iter().enumerate() {
        let ins = inputs(g, b, 40 + k as u64, (-1.0, 1.0));
        let bound = nnc::internals::ir::bind_symbol(g, "B", b as i64).expect("bind B");
        let want = nnc::internals::runtime::exec::run_named(
            &bound,
            &TensorMap::new(),
            &ins,
            nnc::internals::runtime::exec::ExecOptions { backend: nnc::Backend::Jit, ..Default::default() },
        )
        .expect("the JIT runs the graph");
        let got = tract.run(&ins);
        for (name, t) in &want {
            compare(&format!("{what} batch {b} {name}"), &got[name], t);
        }
    }
}

#[test]
fn pads_and_symbolic_sizes_run_in_tract_as_in_the_jit() {
    let (mut g, b) = batch_graph();
    let x = input(&mut g, "x", vec![b.clone(), Dim::konst(3)]);
    let mut outs = Vec::new();
    // Dense, spread out by 2 and 3, with leading and trailing zeros, and one that ends on
    // its last element (no trailing zeros: the spread is cut).
    // Reversed (negative steps): down from 6 by 2, and down to the first element.
    for (start, step, len) in [(2, 1, 7), (1, 2, 8), (0, 3, 7), (2, 3, 9), (6, -2, 7), (2, -1, 4)] {
        outs.push(g.push(Op::Pad { axis: 1, start, step, len: Dim::konst(len) }, vec![x], None).expect("pad"));
    }
    // The value of 2*B + 1 as a number, broadcast over the rows.
    let two_b1 = b.mul(&Dim::konst(2)).and_then(|d| d.add(&Dim::konst(1))).expect("2B+1");
    let n = g.push(Op::DimValue(two_b1), vec![], None).expect("dim");
    let nb = g.push(Op::Broadcast { shape: vec![b.clone(), Dim::konst(3)] }, vec![n], None).expect("broadcast");
    outs.push(g.push(Op::Binary(nnc::internals::ir::BinaryOp::Mul), vec![x, nb], None).expect("mul"));
    // A broadcast read whole (an output): an Expand whose target holds B.
    let row = g.push(Op::Slice { axis: 1, start: 0, end: 1, step: 1 }, vec![x], None).expect("slice");
    let flat = g.push(Op::Reshape { shape: vec![b.clone()] }, vec![row], None).expect("reshape");
    let r = g.push(Op::Reshape { shape: vec![Dim::konst(1), b.clone()] }, vec![flat], None).expect("reshape");
    outs.push(g.push(Op::Broadcast { shape: vec![Dim::konst(4), b.clone()] }, vec![r], None).expect("broadcast"));
    // An iota along the batch: its length read at run time.
    outs.push(g.push(Op::Iota { axis: 0 }, vec![], Some(Type::f32(vec![b.clone(), Dim::konst(2)]))).expect("iota"));
    // A fill of a symbolic shape, whole.
    outs.push(g.push(Op::Fill(0.25), vec![], Some(Type::f32(vec![Dim::konst(2), b.clone()]))).expect("fill"));
    for (i, v) in outs.into_iter().enumerate() {
        g.outputs.push((format!("o{i}"), v));
    }
    let problems = nnc::internals::ir::verify::verify(&g);
    assert!(problems.is_empty(), "{problems:?}");
    check_graph(&g, "pads");
}

#[test]
fn primitives_without_an_onnx_form_are_refused_by_name() {
    let (mut g, b) = batch_graph();
    let x = input(&mut g, "x", vec![b.clone(), Dim::konst(3)]);
    let img =
        g.push(Op::Reshape { shape: vec![b.clone(), Dim::konst(1), Dim::konst(1), Dim::konst(3)] }, vec![x], None);
    let img = img.expect("reshape");
    let w = nnc::internals::ir::Window { kh: 1, kw: 2, stride_h: 1, stride_w: 1, pad_h: 0, pad_w: 0 };
    let cols = g.push(Op::Im2col(w), vec![img], None).expect("im2col");
    let back = g.push(Op::Col2im { window: w, h: 1, w: 3 }, vec![cols], None).expect("col2im");
    g.outputs.push(("y".into(), back));
    let opts = nnc::internals::export::Options::default();
    let err = nnc::internals::export::to_onnx(&g, &TensorMap::new(), None, &opts).expect_err("col2im has no export");
    assert!(err.contains("cannot export `col2im` (value v3, f32[B, 1, 1, 3])"), "{err}");
}

/// Random numbers in an eval graph are refused, naming both random built-ins; drawn only
/// in training (`if training`), they leave the eval graph and it exports.
#[test]
fn normal_like_is_refused_in_an_eval_graph_only() {
    let compile = |src: &str| match nnc::internals::pipeline::compile_source("n.nn", src, None) {
        Ok(mut c) => c.programs.remove(0),
        Err(_) => panic!("compiles"),
    };
    let opts = nnc::internals::export::Options::default();
    let eval_noise = compile("model N {\n input x: [B, 4]\n output y = x + normal_like(x, std = 0.1)\n}\n");
    let err = nnc::internals::export::to_onnx(&eval_noise.eval, &TensorMap::new(), None, &opts).expect_err("refused");
    assert!(err.contains("cannot export `rand`") && err.contains("`normal_like`"), "{err}");
    let train_noise = compile(
        "model N {\n input x: [B, 4]\n h = x\n if training { h = x + normal_like(x, std = 0.1) }\n output y = h * 2\n}\n",
    );
    nnc::internals::export::to_onnx(&train_noise.eval, &TensorMap::new(), None, &opts)
        .expect("no random op in the eval graph");
}

#[test]
fn cli_refuses_an_unsupported_primitive_and_writes_nothing() {
    let d = scratch("rand");
    let file = d.join("noisy.nn");
    std::fs::write(
        &file,
        "model Noisy {\n input x: [B, 4]\n layer fc = Dense(4, 2)\n output y = fc(x + uniform_like(x))\n}\n",
    )
    .expect("write");
    let ck = d.join("init.safetensors");
    nnc_ok(&["init", s(&file), "--out", s(&ck)]);
    let out = d.join("noisy.onnx");
    let (code, err) = nnc(&["export", s(&file), "--checkpoint", s(&ck), "-o", s(&out)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot export `rand` (value v"), "{err}");
    assert!(err.contains("f32[B, 4]"), "{err}");
    assert!(!out.exists(), "no file is written on an error");
}

#[test]
fn cli_refuses_another_models_checkpoint_naming_the_tensor() {
    let d = scratch("other");
    let ck = d.join("linear.safetensors");
    let linear = root().join("examples/digits_linear.nn");
    let mlp = root().join("examples/digits.nn");
    nnc_ok(&["init", s(&linear), "--out", s(&ck)]);
    let out = d.join("digits.onnx");
    let (code, err) = nnc(&["export", s(&mlp), "--checkpoint", s(&ck), "-o", s(&out)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`fc1.W`"), "the error names the missing tensor: {err}");
    assert!(!out.exists(), "no file is written on an error");
    // A tensor of the right name and the wrong shape is named too.
    let spirals = root().join("examples/spirals.nn");
    let mut ps = nnc::internals::tensors::read(&ck).expect("read");
    ps.clear();
    ps.insert("W1".into(), HostTensor::f32(vec![3, 64], vec![0.0; 192]));
    let bad = d.join("bad.safetensors");
    nnc::internals::tensors::write(&bad, &ps, None).expect("write");
    let (code, err) = nnc(&["export", s(&spirals), "--checkpoint", s(&bad), "-o", s(&out)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`W1` has shape [3, 64], the model needs [2, 64]"), "{err}");
    assert!(!out.exists());
}

/// An `nnc quantize` checkpoint exports its int8 weights as INT8 initializers behind
/// DequantizeLinear (per output channel) and its int8 activations as the same rounding
/// ops `nnc predict` runs: tract gives nnc's outputs, from a file about 3x smaller.
#[test]
fn int8_checkpoints_export_int8_weights_and_their_rounding() {
    let d = scratch("int8");
    let file = root().join("examples/digits.nn");
    let run = d.join("run");
    nnc_ok(&["train", s(&file), "--set", "epochs=2", "--out", s(&run)]);
    let q = d.join("q.safetensors");
    nnc_ok(&["quantize", s(&file), "--checkpoint", s(&run.join("last.safetensors")), "-o", s(&q)]);
    check_against_predict(&d, &file, &q, (0.0, 16.0));
    let onnx = std::fs::read(d.join("digits.onnx")).expect("the export");
    let model =
        <nnc::internals::export::onnx_pb::ModelProto as prost::Message>::decode(onnx.as_slice()).expect("decode");
    let graph = model.graph.expect("graph");
    let dq = graph.node.iter().filter(|n| n.op_type.as_deref() == Some("DequantizeLinear")).count();
    assert_eq!(dq, 2, "one DequantizeLinear per weight");
    let int8_code = nnc::internals::export::onnx_pb::tensor_proto::DataType::Int8 as i32;
    let int8 = graph.initializer.iter().filter(|t| t.data_type == Some(int8_code));
    assert_eq!(int8.map(|t| t.dims.iter().product::<i64>()).sum::<i64>(), 64 * 128 + 128 * 10);
    nnc_ok(&["export", s(&file), "--checkpoint", s(&run.join("last.safetensors")), "-o", s(&d.join("f32.onnx"))]);
    let f32_size = std::fs::metadata(d.join("f32.onnx")).expect("f32").len();
    assert!((onnx.len() as u64) * 5 / 2 < f32_size, "int8 {} bytes vs f32 {f32_size}", onnx.len());
}
