//! `nnc build` as a user runs it: build a model's library, compile a C program against
//! it with the system C compiler (`tests/c/run_model.c`, which learns every shape from the
//! library's functions), run it on deterministic inputs, and compare its outputs with
//! `nnc predict` (the JIT) on the same inputs. Batch sizes that are not compiled sizes
//! exercise the padding; the shared and the static library are both linked.

use nnc::internals::tensors::{HostData, HostTensor, TensorMap};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnc-build-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Runs nnc; asserts the exit code; returns stderr.
fn nnc(args: &[&str], want: i32) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_nnc")).args(args).output().expect("run nnc");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        o.status.code(),
        Some(want),
        "nnc {args:?}\nstdout:\n{}\nstderr:\n{err}",
        String::from_utf8_lossy(&o.stdout)
    );
    err
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[derive(Clone, Copy, PartialEq)]
enum Link {
    Shared,
    Static,
}

/// Compiles a C program of `tests/c/` against the library in `dir`.
fn compile_c(dir: &Path, name: &str, link: Link, program: &str) -> PathBuf {
    let exe = dir.join(format!("{program}_{name}_{}", if link == Link::Shared { "so" } else { "a" }));
    let mut cmd = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cmd.args(["-O2", "-Wall", "-Werror", &format!("-DMODEL={name}"), "-include"])
        .arg(dir.join(format!("{name}.h")))
        .arg(root().join(format!("tests/c/{program}.c")))
        .arg("-o")
        .arg(&exe);
    match link {
        Link::Shared => {
            cmd.arg(format!("-L{}", s(dir))).arg(format!("-l{name}")).arg(format!("-Wl,-rpath,{}", s(dir)));
        }
        Link::Static => {
            cmd.arg(dir.join(format!("lib{name}.a")));
        }
    }
    cmd.args(["-lm", "-lpthread", "-ldl"]);
    let o = cmd.output().expect("run cc");
    assert!(o.status.success(), "cc failed: {cmd:?}\n{}", String::from_utf8_lossy(&o.stderr));
    exe
}

/// One input or output as the library describes it.
#[derive(Debug)]
struct Port {
    name: String,
    i32: bool,
    size: usize,
    bound: i64,
    dims: Vec<usize>,
}

/// `run_model --info`: the maximum batch, the inputs, the outputs.
fn info(exe: &Path) -> (usize, Vec<Port>, Vec<Port>) {
    let o = Command::new(exe).arg("--info").output().expect("run the C program");
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let (mut max, mut ins, mut outs) = (0, Vec::new(), Vec::new());
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w[0] == "max_batch" {
            max = w[1].parse().expect("max batch");
            continue;
        }
        let p = Port {
            name: w[1].to_string(),
            i32: w[2] == "1",
            size: w[3].parse().expect("size"),
            bound: w[4].parse().expect("bound"),
            dims: w[5..].iter().map(|d| d.parse().expect("dim")).collect(),
        };
        assert_eq!(p.size, p.dims.iter().product::<usize>(), "{line}");
        if w[0] == "input" {
            ins.push(p)
        } else {
            outs.push(p)
        }
    }
    (max, ins, outs)
}

/// Deterministic inputs: floats in [-1, 1) (or [0, 16) for pixel-like `scale`), ids in
/// their range.
fn inputs(ins: &[Port], batch: usize, seed: u64, scale: f64) -> Vec<(Vec<usize>, Vec<f64>, bool)> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    ins.iter()
        .map(|p| {
            let n = batch * p.size;
            let v: Vec<f64> = if p.i32 {
                let b = if p.bound > 0 { p.bound } else { 4 };
                (0..n).map(|_| (next() * b as f64).floor()).collect()
            } else if scale > 1.0 {
                (0..n).map(|_| (next() * scale).floor()).collect()
            } else {
                (0..n).map(|_| next() * 2.0 - 1.0).collect()
            };
            let mut shape = vec![batch];
            shape.extend(&p.dims);
            (shape, v, p.i32)
        })
        .collect()
}

/// Runs the C program on `batch` rows; returns its exit code and the outputs.
fn run_c(
    exe: &Path,
    dir: &Path,
    data: &[(Vec<usize>, Vec<f64>, bool)],
    batch: i64,
    outs: &[Port],
) -> (i32, Vec<Vec<f32>>) {
    let mut bytes = Vec::new();
    for (_, v, i32) in data {
        for &x in v {
            if *i32 {
                bytes.extend_from_slice(&(x as i32).to_le_bytes());
            } else {
                bytes.extend_from_slice(&(x as f32).to_le_bytes());
            }
        }
    }
    let (inp, outp) = (dir.join("in.bin"), dir.join("out.bin"));
    std::fs::write(&inp, &bytes).expect("write inputs");
    let _ = std::fs::remove_file(&outp);
    let o = Command::new(exe).arg(&inp).arg(batch.to_string()).arg(&outp).output().expect("run the C program");
    let code = o.status.code().unwrap_or(-1);
    if code != 0 {
        return (code, Vec::new());
    }
    let raw = std::fs::read(&outp).expect("read outputs");
    let mut at = 0;
    let mut result = Vec::new();
    for p in outs {
        let n = batch as usize * p.size;
        let v: Vec<f32> = raw[at..at + 4 * n]
            .chunks(4)
            .map(|c| {
                let b = [c[0], c[1], c[2], c[3]];
                if p.i32 {
                    i32::from_le_bytes(b) as f32
                } else {
                    f32::from_le_bytes(b)
                }
            })
            .collect();
        at += 4 * n;
        result.push(v);
    }
    assert_eq!(at, raw.len(), "the output file has extra bytes");
    (0, result)
}

/// `nnc predict` on the same inputs: every output by name.
fn predict(file: &Path, weights: &Path, dir: &Path, ins: &[Port], data: &[(Vec<usize>, Vec<f64>, bool)]) -> TensorMap {
    let mut map = TensorMap::new();
    for (p, (shape, v, i32)) in ins.iter().zip(data) {
        let t = if *i32 {
            HostTensor { shape: shape.clone(), data: HostData::I32(v.iter().map(|&x| x as i32).collect()) }
        } else {
            HostTensor::f32(shape.clone(), v.clone())
        };
        map.insert(p.name.clone(), t);
    }
    let (inp, outp) = (dir.join("in.safetensors"), dir.join("out.safetensors"));
    nnc::internals::tensors::write(&inp, &map, None).expect("write inputs");
    nnc(&["predict", s(file), "--checkpoint", s(weights), "--inputs", s(&inp), "--out", s(&outp)], 0);
    nnc::internals::tensors::read(&outp).expect("read predictions")
}

/// The largest relative error of the library's outputs against predict's; asserts each
/// value is within 1e-5 relative, plus an absolute floor of 1e-6.
fn compare(what: &str, got: &[Vec<f32>], want: &TensorMap, outs: &[Port]) -> f64 {
    let mut worst: f64 = 0.0;
    for (p, g) in outs.iter().zip(got) {
        let w = want
            .get(&p.name)
            .and_then(HostTensor::floats)
            .unwrap_or_else(|| panic!("{what}: predict gave no {}", p.name));
        assert_eq!(w.len(), g.len(), "{what}: output {} has {} values, predict {}", p.name, g.len(), w.len());
        for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
            let (a, b) = (f64::from(a), b);
            let err = (a - b).abs();
            assert!(err <= 1e-5 * b.abs() + 1e-6, "{what}: {}[{i}] is {a}, predict gives {b}", p.name);
            worst = worst.max(err / b.abs().max(1e-30));
        }
    }
    worst
}

/// Builds `example` with `weights` (an init file when None) and checks the library at
/// `batches` against predict, through the shared and the static library.
fn check_model(
    tag: &str,
    example: &str,
    weights: Option<&Path>,
    build_args: &[&str],
    batches: &[i64],
    scale: f64,
) -> f64 {
    let file = if example.contains('/') { root().join(example) } else { root().join("examples").join(example) };
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_string();
    let dir = scratch(&format!("{tag}-{stem}"));
    let w = match weights {
        Some(w) => w.to_path_buf(),
        None => {
            let p = dir.join("params.safetensors");
            nnc(&["init", s(&file), "--seed", "0", "--out", s(&p)], 0);
            p
        }
    };
    let lib = dir.join("lib");
    let mut args = vec!["build", s(&file), "--checkpoint", s(&w), "-o", s(&lib)];
    args.extend_from_slice(build_args);
    nnc(&args, 0);
    let name = std::fs::read_dir(&lib)
        .expect("the output folder")
        .filter_map(Result::ok)
        .find_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".h")).map(str::to_string))
        .expect("a header");
    let mut worst: f64 = 0.0;
    for link in [Link::Shared, Link::Static] {
        let exe = compile_c(&lib, &name, link, "run_model");
        let (max, ins, outs) = info(&exe);
        for &b in batches {
            assert!(b as usize <= max);
            let data = inputs(&ins, b as usize, b as u64, scale);
            let (code, got) = run_c(&exe, &dir, &data, b, &outs);
            assert_eq!(code, 0, "{example}: the library returned {code} at batch {b}");
            let want = predict(&file, &w, &dir, &ins, &data);
            worst = worst.max(compare(&format!("{example} batch {b}"), &got, &want, &outs));
        }
        // Several threads at once, each result equal to the main thread's.
        let threads = compile_c(&lib, &name, link, "threads");
        let b = batches.iter().copied().max().unwrap_or(1);
        let data = inputs(&ins, b as usize, 3, scale);
        run_c(&exe, &dir, &data, b, &outs);
        let o = Command::new(&threads).arg(dir.join("in.bin")).args([&b.to_string(), "4", "20"]).output().expect("run");
        assert!(o.status.success(), "{example}: threads: {}", String::from_utf8_lossy(&o.stderr));
        // Out of range: batch 0 and one above the maximum.
        let data = inputs(&ins, max + 1, 7, scale);
        assert_eq!(run_c(&exe, &dir, &data, 0, &outs).0, 1, "{example}: batch 0");
        assert_eq!(run_c(&exe, &dir, &data, max as i64 + 1, &outs).0, 1, "{example}: batch {}", max + 1);
        // An id outside its range.
        if let Some(i) = ins.iter().position(|p| p.i32 && p.bound > 0) {
            let mut data = inputs(&ins, 2, 5, scale);
            data[i].1[1] = ins[i].bound as f64;
            assert_eq!(run_c(&exe, &dir, &data, 2, &outs).0, 3, "{example}: an id out of range");
        }
    }
    eprintln!("{tag} {example}: max relative error against nnc predict {worst:.3e}");
    let _ = std::fs::remove_dir_all(&dir);
    worst
}

#[test]
fn digits_mlp_matches_predict() {
    check_model("mlp", "digits.nn", None, &["--max-batch", "8"], &[1, 5, 8], 1.0);
}

#[test]
fn digits_exact_batch_pads_smaller_calls() {
    check_model("exact", "digits.nn", None, &["--batch", "6"], &[6, 3], 1.0);
}

#[test]
fn mnist_cnn_matches_predict() {
    check_model("cnn", "mnist_cnn.nn", None, &["--max-batch", "4"], &[3, 4], 1.0);
}

#[test]
fn row_lstm_matches_predict() {
    check_model("lstm", "row_lstm.nn", None, &["--max-batch", "4"], &[3, 4], 1.0);
}

#[test]
fn row_attention_matches_predict() {
    check_model("attention", "row_attention.nn", None, &["--max-batch", "4"], &[3, 4], 1.0);
}

#[test]
fn row_lstm_attention_matches_predict() {
    check_model("lstm-attention", "row_lstm_attention.nn", None, &["--max-batch", "4"], &[3, 4], 1.0);
}

/// sin and cos (the JIT's branch to the exact reduction inside a kernel) and reversed
/// slices, at arguments large enough to take the branch.
#[test]
fn sin_cos_and_reversed_slices_match_predict() {
    check_model("trig", "tests/data/lower/ok/trig_and_flips.nn", None, &["--max-batch", "8"], &[5, 8], 1.0);
    check_model("trig-big", "tests/data/lower/ok/trig_and_flips.nn", None, &["--max-batch", "8"], &[8], 1e9);
}

#[test]
fn the_other_examples_match_predict() {
    for ex in ["residual.nn", "spirals.nn", "window.nn", "neuron.nn", "digits_linear.nn"] {
        check_model("other", ex, None, &["--max-batch", "8"], &[5, 8], 1.0);
    }
}

/// i32 ids (an embedding: a host gather), two outputs, one of rank 3, layer norm.
#[test]
fn an_embedding_model_with_two_outputs_matches_predict() {
    check_model("embed", "tests/data/lower/ok/layers_embedding_norm.nn", None, &["--max-batch", "8"], &[3, 8], 1.0);
}

/// A trained checkpoint: its preprocessing is embedded, so the library takes the raw
/// features `nnc predict --checkpoint` takes.
#[test]
fn a_trained_checkpoint_with_preprocessing_matches_predict() {
    let dir = scratch("trained");
    let run = dir.join("run");
    let file = root().join("examples/digits.nn");
    nnc(&["train", s(&file), "--out", s(&run), "--set", "epochs=2"], 0);
    let ck = ["best.safetensors", "last.safetensors", "checkpoint.safetensors"]
        .iter()
        .map(|n| run.join(n))
        .find(|p| p.is_file())
        .expect("a checkpoint in the run folder");
    let meta = nnc::internals::train::checkpoint::read(&ck).expect("read checkpoint").1;
    assert!(meta.get("nnc.preprocess").is_some_and(|p| p.starts_with("standardize")), "{meta:?}");
    // Pixel-like raw features (0..16), where standardizing matters.
    check_model("trained", "digits.nn", Some(&ck), &["--max-batch", "16"], &[1, 11], 16.0);
    // The header says what is embedded.
    let lib = dir.join("lib");
    nnc(&["build", s(&file), "--checkpoint", s(&ck), "--batch", "4", "-o", s(&lib)], 0);
    let h = std::fs::read_to_string(lib.join("digits.h")).expect("header");
    assert!(h.contains("preprocessing (`standardize`) is embedded and applied to `x`"), "{h}");
    assert!(h.contains("int digits_run(const float *x, int64_t batch, float *logits);"), "{h}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_of_another_model_is_refused_and_nothing_is_written() {
    let dir = scratch("wrong");
    let p = dir.join("cnn.safetensors");
    nnc(&["init", s(&root().join("examples/mnist_cnn.nn")), "--out", s(&p)], 0);
    let lib = dir.join("lib");
    let err = nnc(&["build", s(&root().join("examples/digits.nn")), "--checkpoint", s(&p), "-o", s(&lib)], 1);
    assert!(err.contains("fc1.W") || err.contains("parameter `"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!lib.exists() || std::fs::read_dir(&lib).expect("dir").next().is_none(), "files were written");
    // No runtime archive: a clear error naming it.
    let ok = dir.join("digits.safetensors");
    nnc(&["init", s(&root().join("examples/digits.nn")), "--out", s(&ok)], 0);
    let o = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["build", s(&root().join("examples/digits.nn")), "--checkpoint", s(&ok), "-o", s(&lib)])
        .env("NNC_RUNTIME", dir.join("no-such-libnnc.a"))
        .output()
        .expect("run nnc");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("NNC_RUNTIME") && err.contains("no-such-libnnc.a"), "{err}");
    assert!(!lib.exists() || std::fs::read_dir(&lib).expect("dir").next().is_none(), "files were written");
    // A truncated file: an error, no panic.
    let t = dir.join("truncated.safetensors");
    let bytes = std::fs::read(&p).expect("read");
    std::fs::write(&t, &bytes[..bytes.len() / 2]).expect("write");
    let err = nnc(&["build", s(&root().join("examples/mnist_cnn.nn")), "--checkpoint", s(&t), "-o", s(&lib)], 1);
    assert!(err.contains("truncated.safetensors") && !err.contains("panicked"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
