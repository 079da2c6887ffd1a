//! The trained model outside training: `predict` and `eval` on data files as `train`
//! reads them (csv, npy, npz, IDX), predictions as csv and npy, and pruning (`nnc prune`
//! and gradual pruning while training) whose pruned weights are exact zeros that
//! fine-tuning keeps.

use nnc::internals::tensors::{HostData, TensorMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fresh(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create folder");
    d
}

/// Runs nnc; returns (exit code, stdout, stderr).
fn nnc(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_nnc")).arg("--color").arg("never").args(args).output().expect("run nnc");
    let r: (i32, String, String) = (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    );
    assert!(!r.2.contains("panicked"), "nnc {args:?} panicked:\n{}", r.2);
    r
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = nnc(args);
    assert_eq!(code, 0, "nnc {args:?} failed:\n{out}\n{err}");
    out
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn digits() -> &'static str {
    static P: OnceLock<String> = OnceLock::new();
    P.get_or_init(|| root().join("examples/digits.nn").to_str().expect("utf-8 path").to_string())
}

/// One digits run (10 epochs) shared by the tests: its `last.safetensors`.
fn trained() -> &'static Path {
    static CK: OnceLock<PathBuf> = OnceLock::new();
    CK.get_or_init(|| {
        let out = fresh("run");
        ok(&["train", digits(), "--out", s(&out.join("r")), "--set", "epochs=10"]);
        out.join("r/last.safetensors")
    })
}

/// The first `n` rows of the digits csv (64 features, then the label).
fn digits_rows(n: usize) -> Vec<Vec<f64>> {
    let bytes = std::fs::read(root().join("examples/data/digits.csv.gz")).expect("digits");
    let mut text = String::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut text).expect("gunzip");
    text.lines().take(n).map(|l| l.split(',').map(|c| c.trim().parse().expect("number")).collect()).collect()
}

fn write_csv(path: &Path, rows: &[Vec<f64>], cols: std::ops::Range<usize>) {
    let text: String = rows
        .iter()
        .map(|r| r[cols.clone()].iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",") + "\n")
        .collect();
    std::fs::write(path, text).expect("write csv");
}

fn floats(t: &TensorMap, name: &str) -> Vec<f64> {
    t.get(name).and_then(|x| x.floats()).unwrap_or_else(|| panic!("no float tensor `{name}`")).to_vec()
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(path).expect("read csv");
    let mut lines = text.lines();
    let head = lines.next().expect("header").split(',').map(str::to_string).collect();
    (head, lines.map(|l| l.split(',').map(|c| c.parse().expect("number")).collect()).collect())
}

#[test]
fn predict_on_a_csv_equals_predict_on_the_same_tensors() {
    let d = fresh("csv_vs_tensors");
    let rows = digits_rows(50);
    write_csv(&d.join("x.csv"), &rows, 0..64);
    let x: Vec<f64> = rows.iter().flat_map(|r| r[..64].to_vec()).collect();
    let t = TensorMap::from([("x".to_string(), nnc::internals::tensors::HostTensor::f32(vec![50, 64], x))]);
    nnc::internals::tensors::write(&d.join("x.safetensors"), &t, None).expect("write");
    let ck = trained();
    for (inp, out) in [("x.csv", "a.safetensors"), ("x.safetensors", "b.safetensors")] {
        ok(&["predict", digits(), "--checkpoint", s(ck), "--inputs", s(&d.join(inp)), "--out", s(&d.join(out))]);
    }
    let a = nnc::internals::tensors::read(&d.join("a.safetensors")).expect("a");
    let b = nnc::internals::tensors::read(&d.join("b.safetensors")).expect("b");
    assert_eq!(a["logits"].shape, vec![50, 10]);
    assert_eq!(floats(&a, "logits"), floats(&b, "logits"));
    // The same rows with their label column: the column is named and left out.
    write_csv(&d.join("xy.csv"), &rows, 0..65);
    let (code, _, err) = nnc(&[
        "predict",
        digits(),
        "--checkpoint",
        s(ck),
        "--inputs",
        s(&d.join("xy.csv")),
        "--out",
        s(&d.join("c.csv")),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("65 values each") && err.contains("--label-column"), "{err}");
    ok(&[
        "predict",
        digits(),
        "--checkpoint",
        s(ck),
        "--inputs",
        s(&d.join("xy.csv")),
        "--label-column",
        "-1",
        "--out",
        s(&d.join("c.safetensors")),
    ]);
    let c = nnc::internals::tensors::read(&d.join("c.safetensors")).expect("c");
    assert_eq!(floats(&a, "logits"), floats(&c, "logits"));
}

#[test]
fn predictions_as_csv_and_npy_agree_with_the_logits_and_with_eval() {
    let d = fresh("csv_npy");
    let rows = digits_rows(200);
    write_csv(&d.join("xy.csv"), &rows, 0..65);
    let ck = trained();
    let xy = d.join("xy.csv");
    let base = ["predict", digits(), "--checkpoint", s(ck), "--inputs", s(&xy), "--label-column", "64"];
    let out = |name: &str| d.join(name);
    for name in ["p.csv", "p.npy", "p.safetensors"] {
        let o = out(name);
        let mut a = base.to_vec();
        a.extend(["--out", s(&o)]);
        ok(&a);
    }
    let logits = floats(&nnc::internals::tensors::read(&out("p.safetensors")).expect("logits"), "logits");
    let (head, table) = read_csv(&out("p.csv"));
    assert_eq!(head.len(), 11);
    assert_eq!(head[0], "class");
    assert_eq!(head[10], "probability_9");
    assert_eq!(table.len(), 200);
    let mut correct = 0;
    for (r, row) in table.iter().enumerate() {
        let z = &logits[r * 10..(r + 1) * 10];
        let arg = (0..10).max_by(|&i, &j| z[i].total_cmp(&z[j])).expect("a class");
        assert_eq!(row[0] as usize, arg, "row {r}");
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|v| (v - m).exp()).sum();
        for k in 0..10 {
            let p = (z[k] - m).exp() / sum;
            assert!((row[1 + k] - p).abs() <= 1e-6 * p.max(1e-3), "row {r} class {k}: {} vs {p}", row[1 + k]);
        }
        let total: f64 = row[1..].iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "row {r}: probabilities sum to {total}");
        correct += usize::from(row[0] == rows[r][64]);
    }
    // The npy: [200, 10] little-endian f32, the same probabilities.
    let npy = std::fs::read(out("p.npy")).expect("npy");
    assert_eq!(&npy[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let header = std::str::from_utf8(&npy[10..10 + hlen]).expect("header");
    assert!(header.contains("'shape': (200, 10)") && header.contains("<f4"), "{header}");
    assert_eq!((10 + hlen) % 64, 0, "the header is padded to 64 bytes");
    let vals: Vec<f32> = npy[10 + hlen..].chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(vals.len(), 2000);
    for (r, row) in table.iter().enumerate() {
        for k in 0..10 {
            assert_eq!(vals[r * 10 + k], row[1 + k] as f32, "row {r} class {k}");
        }
    }
    // eval on the same file: the accuracy of those predictions.
    let e = ok(&["eval", digits(), "--checkpoint", s(ck), "--data", s(&d.join("xy.csv")), "--json"]);
    let acc: f64 = e
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"accuracy\":"))
        .map(|v| v.trim().trim_end_matches(',').parse().expect("accuracy"))
        .expect("an accuracy");
    assert!((acc - correct as f64 / 200.0).abs() < 1e-12, "eval {acc} vs predict {correct}/200");
}

#[test]
fn eval_on_npy_features_needs_their_labels() {
    let d = fresh("npy_labels");
    let rows = digits_rows(30);
    let npy = |path: &Path, shape: &[usize], v: &[f32]| {
        let dims = shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        let dims = if shape.len() == 1 { format!("{dims},") } else { dims };
        let mut h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.as_bytes());
        v.iter().for_each(|x| b.extend(x.to_le_bytes()));
        std::fs::write(path, b).expect("write npy");
    };
    let x: Vec<f32> = rows.iter().flat_map(|r| r[..64].iter().map(|&v| v as f32)).collect();
    let y: Vec<f32> = rows.iter().map(|r| r[64] as f32).collect();
    npy(&d.join("x.npy"), &[30, 64], &x);
    npy(&d.join("y.npy"), &[30], &y);
    let ck = trained();
    let (code, _, err) = nnc(&["eval", digits(), "--checkpoint", s(ck), "--data", s(&d.join("x.npy"))]);
    assert_eq!(code, 1);
    assert!(err.contains("needs labels"), "{err}");
    let out =
        ok(&["eval", digits(), "--checkpoint", s(ck), "--data", s(&d.join("x.npy")), "--labels", s(&d.join("y.npy"))]);
    assert!(out.contains("on all 30 rows of"), "{out}");
    // The same features predicted from npy and from csv.
    write_csv(&d.join("x.csv"), &rows, 0..64);
    for (i, o) in [("x.npy", "a.safetensors"), ("x.csv", "b.safetensors")] {
        ok(&["predict", digits(), "--checkpoint", s(ck), "--inputs", s(&d.join(i)), "--out", s(&d.join(o))]);
    }
    let a = nnc::internals::tensors::read(&d.join("a.safetensors")).expect("a");
    let b = nnc::internals::tensors::read(&d.join("b.safetensors")).expect("b");
    assert_eq!(floats(&a, "logits"), floats(&b, "logits"));
    let (code, _, err) = nnc(&[
        "predict",
        digits(),
        "--checkpoint",
        s(ck),
        "--inputs",
        s(&d.join("x.npy")),
        "--out",
        s(&d.join("p.txt")),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains(".safetensors") && err.contains(".csv"), "{err}");
}

/// The weights (rank >= 2) of a checkpoint.
fn weights(t: &TensorMap) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    t.iter()
        .filter(|(k, v)| {
            v.shape.len() >= 2 && !k.starts_with("opt.") && !k.starts_with("prune.") && !k.starts_with("preprocess")
        })
        .map(|(k, v)| (k.clone(), v.shape.clone(), v.floats().expect("floats").to_vec()))
        .collect()
}

#[test]
fn pruned_weights_are_exact_zeros_that_fine_tuning_keeps() {
    let d = fresh("prune");
    let ck = trained();
    let dense = nnc::internals::tensors::read(ck).expect("dense");
    let n: usize = weights(&dense).iter().map(|w| w.2.len()).sum();
    for (extra, label) in [(&[][..], "one-shot"), (&["--finetune-epochs", "3"][..], "fine-tuned")] {
        let out = d.join(format!("{}.safetensors", label));
        let mut a = vec!["prune", digits(), "--checkpoint", s(ck), "--sparsity", "0.8", "-o", s(&out)];
        a.extend(extra);
        let table = ok(&a);
        assert!(table.contains("dense") && table.contains("0.8"), "{table}");
        let p = nnc::internals::tensors::read(&out).expect("pruned");
        let zeros: usize = weights(&p).iter().map(|w| w.2.iter().filter(|&&x| x == 0.0).count()).sum();
        assert_eq!(zeros, (0.8 * n as f64).round() as usize, "{label}: exactly 80% of the weights are zero");
        // Biases are never pruned, and no optimizer state or mask is left in the file.
        assert!(p.keys().all(|k| !k.starts_with("opt.") && !k.starts_with("prune.")), "{:?}", p.keys());
        if label == "one-shot" {
            // The weights kept are the dense ones, unchanged; the zeros are the smallest.
            let mut kept_min = f64::INFINITY;
            let mut cut_max: f64 = 0.0;
            for ((_, _, dv), (_, _, pv)) in weights(&dense).iter().zip(weights(&p).iter()) {
                for (a, b) in dv.iter().zip(pv) {
                    if *b == 0.0 {
                        cut_max = cut_max.max(a.abs());
                    } else {
                        assert_eq!(a, b);
                        kept_min = kept_min.min(a.abs());
                    }
                }
            }
            assert!(cut_max <= kept_min, "global magnitude: pruned {cut_max} > kept {kept_min}");
        }
        // A pruned checkpoint is a checkpoint like any other.
        let e = ok(&["eval", digits(), "--checkpoint", s(&out)]);
        assert!(e.contains("accuracy"), "{e}");
    }
}

#[test]
fn structured_pruning_removes_whole_output_units() {
    let d = fresh("structured");
    let out = d.join("c.safetensors");
    ok(&[
        "prune",
        digits(),
        "--checkpoint",
        s(trained()),
        "--sparsity",
        "0.25",
        "--structured",
        "channels",
        "-o",
        s(&out),
    ]);
    let p = nnc::internals::tensors::read(&out).expect("pruned");
    for (name, shape, v) in weights(&p) {
        let (rows, cols) = (shape[0], shape[1]);
        let dead: Vec<usize> = (0..cols).filter(|&c| (0..rows).all(|r| v[r * cols + c] == 0.0)).collect();
        assert_eq!(dead.len(), (0.25 * cols as f64).round() as usize, "{name}: a quarter of its columns");
        let zeros = v.iter().filter(|&&x| x == 0.0).count();
        assert_eq!(zeros, dead.len() * rows, "{name}: no zeros outside the dead columns");
    }
    // Only the hidden layer: the output layer's channels are the classes.
    let only = d.join("fc1.safetensors");
    let args = [
        "prune",
        digits(),
        "--checkpoint",
        s(trained()),
        "--sparsity",
        "0.5",
        "--structured",
        "channels",
        "--params",
        "fc1.W",
    ];
    ok(&[&args[..], &["-o", s(&only)]].concat());
    let p = nnc::internals::tensors::read(&only).expect("pruned");
    let dense = nnc::internals::tensors::read(trained()).expect("dense");
    assert_eq!(p["fc2.W"], dense["fc2.W"]);
    assert_ne!(p["fc1.W"], dense["fc1.W"]);
    let (code, _, err) = nnc(&[&args[..9], &["fc1.b", "-o", s(&only)]].concat());
    assert_eq!(code, 1);
    assert!(err.contains("`fc1.b` is not a weight") && err.contains("fc1.W, fc2.W"), "{err}");
}

#[test]
fn several_sparsities_write_a_table_and_one_checkpoint_each() {
    let d = fresh("sweep");
    let out = d.join("sweep");
    ok(&["prune", digits(), "--checkpoint", s(trained()), "--sparsity", "0.5,0.9", "-o", s(&out)]);
    let (head, rows) = {
        let text = std::fs::read_to_string(out.join("prune.csv")).expect("prune.csv");
        let mut l = text.lines().map(str::to_string).collect::<Vec<_>>();
        let h = l.remove(0);
        (h, l)
    };
    assert!(head.starts_with("sparsity,reached,zero_weights"), "{head}");
    assert_eq!(rows.len(), 2);
    for s_ in ["0.5", "0.9"] {
        assert!(out.join(format!("sparsity-{s_}.safetensors")).exists());
    }
    let (code, _, err) =
        nnc(&["prune", digits(), "--checkpoint", s(trained()), "--sparsity", "1.0", "-o", s(&d.join("x.safetensors"))]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("[0, 1)"), "{err}");
    let (code, _, err) =
        nnc(&["prune", digits(), "--checkpoint", s(trained()), "--sparsity", "0.5", "-o", s(trained())]);
    assert_eq!(code, 1);
    assert!(err.contains("being pruned"), "{err}");
}

#[test]
fn gradual_pruning_ramps_to_the_final_sparsity_and_keeps_it() {
    let d = fresh("gradual");
    let out = d.join("g");
    ok(&[
        "train",
        digits(),
        "--out",
        s(&out),
        "--set",
        "epochs=8",
        "--set",
        "prune=gradual(final = 0.75, start = 2, end = 5)",
    ]);
    let (head, rows) = read_csv(&out.join("metrics.csv"));
    let col = head.iter().position(|h| h == "sparsity").expect("a sparsity column");
    let sp: Vec<f64> = rows.iter().map(|r| r[col]).collect();
    assert_eq!(sp[0], 0.0, "{sp:?}");
    assert!(sp[1..5].windows(2).all(|w| w[1] > w[0]), "rising from epoch 2 to 5: {sp:?}");
    for &x in &sp[4..] {
        assert!((x - 0.75).abs() < 1e-3, "held at 0.75 after epoch 5: {sp:?}");
    }
    // The best checkpoint is chosen among the epochs at the final sparsity.
    let best = nnc::internals::tensors::read(&out.join("best.safetensors")).expect("best");
    let n: usize = weights(&best).iter().map(|w| w.2.len()).sum();
    let zeros: usize = weights(&best).iter().map(|w| w.2.iter().filter(|&&x| x == 0.0).count()).sum();
    assert!(zeros as f64 >= 0.75 * n as f64 - 1.0, "{zeros} of {n}");
    // Masks are states of the run (so --resume continues them), not of the model.
    assert!(best.keys().any(|k| k.starts_with("prune.mask.")), "{:?}", best.keys());
    for (name, _, w) in weights(&best) {
        let m = &best[&format!("prune.mask.{name}")];
        let HostData::F32(m) = &m.data else { panic!("f32 mask") };
        for (a, b) in w.iter().zip(m) {
            assert_eq!(*a == 0.0, *b == 0.0, "{name}: a weight is zero exactly where its mask is");
        }
    }
    let (code, _, err) = nnc(&[
        "train",
        digits(),
        "--out",
        s(&d.join("bad")),
        "--set",
        "prune=gradual(final = 0.9, start = 5, end = 50)",
    ]);
    assert_eq!(code, 2, "a bad --set value is bad usage");
    assert!(err.contains("after the last epoch"), "{err}");
}

/// The dtype of each tensor in a safetensors file's header.
fn dtypes(path: &Path) -> std::collections::BTreeMap<String, String> {
    let b = std::fs::read(path).expect("read");
    let n = u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as usize;
    let header = std::str::from_utf8(&b[8..8 + n]).expect("header");
    // `"name":{"dtype":"I8",...}`: enough for the names nnc writes.
    let mut out = std::collections::BTreeMap::new();
    for part in header.split("},").filter(|p| p.contains("\"dtype\"")) {
        let name = part.split('"').nth(1).expect("a name").to_string();
        let dtype = part.split("\"dtype\":\"").nth(1).and_then(|r| r.split('"').next()).expect("a dtype").to_string();
        out.insert(name, dtype);
    }
    out
}

#[test]
fn int8_checkpoints_store_int8_weights_and_score_the_int8_arithmetic() {
    let d = fresh("quantize");
    let ck = trained();
    let q = d.join("q.safetensors");
    let table = ok(&["quantize", digits(), "--checkpoint", s(ck), "--calibrate", "500", "-o", s(&q)]);
    assert!(table.contains("int8 weights and activations"), "{table}");
    let types = dtypes(&q);
    assert_eq!(types.get("fc1.W").map(String::as_str), Some("I8"), "{types:?}");
    assert_eq!(types.get("fc2.W").map(String::as_str), Some("I8"), "{types:?}");
    assert_eq!(types.get("fc1.b").map(String::as_str), Some("F32"), "{types:?}");
    assert!(types.keys().all(|k| !k.starts_with("opt.")), "{types:?}");
    // Read back (dequantized): every weight within half a step of the f32 one.
    let (dense, qt) =
        (nnc::internals::tensors::read(ck).expect("dense"), nnc::internals::train::checkpoint::read(&q).expect("q").0);
    for w in ["fc1.W", "fc2.W"] {
        let (a, b) = (floats(&dense, w), floats(&qt, w));
        let cols = dense[w].shape[1];
        let scale = floats(&qt, &format!("quant.scale.{w}"));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= 0.5 * scale[i % cols] * (1.0 + 1e-6), "{w}[{i}]: {x} vs {y}");
        }
    }
    // predict on the quantized checkpoint computes exactly: x standardized, rounded to
    // int8 on its scale, the product, relu, the hidden layer rounded, the product.
    let rows = digits_rows(40);
    write_csv(&d.join("x.csv"), &rows, 0..64);
    let out = d.join("p.safetensors");
    ok(&["predict", digits(), "--checkpoint", s(&q), "--inputs", s(&d.join("x.csv")), "--out", s(&out)]);
    let got = floats(&nnc::internals::tensors::read(&out).expect("out"), "logits");
    let f = |n: &str| floats(&qt, n);
    let (mean, sd, s0, s1) = (f("preprocess.mean"), f("preprocess.scale"), f("quant.act.0")[0], f("quant.act.1")[0]);
    let (w1, b1, w2, b2) = (f("fc1.W"), f("fc1.b"), f("fc2.W"), f("fc2.b"));
    let hidden = b1.len();
    let q8 = |v: f64, s: f64| (v / s).round_ties_even().clamp(-127.0, 127.0) * s;
    for (r, row) in rows.iter().enumerate() {
        let x: Vec<f64> = (0..64).map(|j| q8((row[j] - mean[j]) / sd[j], s0)).collect();
        let h: Vec<f64> = (0..hidden)
            .map(|k| q8((b1[k] + (0..64).map(|j| x[j] * w1[j * hidden + k]).sum::<f64>()).max(0.0), s1))
            .collect();
        for c in 0..10 {
            let want = b2[c] + (0..hidden).map(|k| h[k] * w2[k * 10 + c]).sum::<f64>();
            let g = got[r * 10 + c];
            assert!((g - want).abs() <= 1e-4 * want.abs().max(1.0), "row {r} class {c}: {g} vs {want}");
        }
    }
    // Within half a point of the f32 model on its test rows.
    let acc = |c: &Path| -> f64 {
        let e = ok(&["eval", digits(), "--checkpoint", s(c), "--json"]);
        e.lines()
            .find_map(|l| l.trim().strip_prefix("\"accuracy\":"))
            .expect("accuracy")
            .trim()
            .trim_end_matches(',')
            .parse()
            .expect("a number")
    };
    let (a32, a8) = (acc(ck), acc(&q));
    assert!((a32 - a8).abs() <= 0.005, "f32 {a32}, int8 {a8}");
    // Quantizing a quantized checkpoint is refused; a damaged scale is named.
    let (code, _, err) = nnc(&["quantize", digits(), "--checkpoint", s(&q), "-o", s(&d.join("qq.safetensors"))]);
    assert_eq!(code, 1);
    assert!(err.contains("quantized already"), "{err}");
    let mut bad = nnc::internals::tensors::read(&q).expect("raw");
    bad.insert("quant.scale.fc1.W".into(), nnc::internals::tensors::HostTensor::f32(vec![3], vec![1.0; 3]));
    let (_, meta) = nnc::internals::train::checkpoint::read(&q).expect("meta");
    nnc::internals::tensors::write(&d.join("bad.safetensors"), &bad, Some(meta)).expect("write");
    let (code, _, err) = nnc(&["eval", digits(), "--checkpoint", s(&d.join("bad.safetensors"))]);
    assert_eq!(code, 1);
    assert!(err.contains("quant.scale.fc1.W") && err.contains("needs [1, 128]"), "{err}");
}

#[test]
fn quantization_aware_training_runs_the_int8_model_it_trains() {
    let d = fresh("qat");
    let out = d.join("q");
    let log = ok(&["train", digits(), "--out", s(&out), "--set", "epochs=10", "--set", "quantize=qat()"]);
    let acc: f64 = log
        .lines()
        .find_map(|l| l.strip_prefix("test_accuracy: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a test accuracy");
    assert!(acc > 0.95, "{log}");
    let ck = out.join("last.safetensors");
    let t = nnc::internals::train::checkpoint::read(&ck).expect("read").0;
    let f = |n: &str| floats(&t, n);
    let (s0, s1) = (f("quant.act.0")[0], f("quant.act.1")[0]);
    assert!(s0 > 0.0 && s1 > 0.0, "scales learned: {s0} {s1}");
    // predict computes: x standardized and rounded on s0, weights rounded per output
    // channel on their own range, relu, the hidden layer rounded on s1.
    let rows = digits_rows(30);
    write_csv(&d.join("x.csv"), &rows, 0..64);
    let p = d.join("p.safetensors");
    ok(&["predict", digits(), "--checkpoint", s(&ck), "--inputs", s(&d.join("x.csv")), "--out", s(&p)]);
    let got = floats(&nnc::internals::tensors::read(&p).expect("out"), "logits");
    let q8 = |v: f64, s: f64| (v / s).round_ties_even().clamp(-127.0, 127.0) * s;
    let per_channel = |w: Vec<f64>, cols: usize| -> Vec<f64> {
        let amax: Vec<f64> =
            (0..cols).map(|c| w.iter().skip(c).step_by(cols).fold(0f64, |m, x| m.max(x.abs()))).collect();
        w.iter().enumerate().map(|(i, &x)| q8(x, f64::from((amax[i % cols] as f32) * (1.0 / 127.0f32)))).collect()
    };
    let (mean, sd) = (f("preprocess.mean"), f("preprocess.scale"));
    let (b1, b2) = (f("fc1.b"), f("fc2.b"));
    let hidden = b1.len();
    let (w1, w2) = (per_channel(f("fc1.W"), hidden), per_channel(f("fc2.W"), 10));
    let mut worst: f64 = 0.0;
    for (r, row) in rows.iter().enumerate() {
        let x: Vec<f64> = (0..64).map(|j| q8((row[j] - mean[j]) / sd[j], s0)).collect();
        let h: Vec<f64> = (0..hidden)
            .map(|k| q8((b1[k] + (0..64).map(|j| x[j] * w1[j * hidden + k]).sum::<f64>()).max(0.0), s1))
            .collect();
        for c in 0..10 {
            let want = b2[c] + (0..hidden).map(|k| h[k] * w2[k * 10 + c]).sum::<f64>();
            worst = worst.max((got[r * 10 + c] - want).abs() / want.abs().max(1.0));
        }
    }
    assert!(worst <= 1e-4, "largest relative difference {worst}");
}

/// State dicts and outputs written by PyTorch (`tools/torch_state_dict.py`).
#[test]
fn pytorch_state_dicts_give_pytorchs_outputs() {
    let d = fresh("torch");
    let data = root().join("tests/data/torch");
    for (model, file, out) in
        [("digits", digits().to_string(), "logits"), ("rnn", s(&data.join("rnn.nn")).to_string(), "y")]
    {
        let sd = data.join(format!("{model}_state_dict.safetensors"));
        let io = data.join(format!("{model}_io.safetensors"));
        let o = d.join(format!("{model}.safetensors"));
        ok(&["predict", &file, "--torch", s(&sd), "--inputs", s(&io), "--out", s(&o)]);
        let got = floats(&nnc::internals::tensors::read(&o).expect("out"), out);
        let want = floats(&nnc::internals::tensors::read(&io).expect("io"), "y");
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{model}[{i}]: nnc {g}, PyTorch {w}");
        }
    }
    // A state dict of another model names what is missing.
    let (code, _, err) = nnc(&[
        "predict",
        digits(),
        "--torch",
        s(&data.join("rnn_state_dict.safetensors")),
        "--inputs",
        s(&data.join("digits_io.safetensors")),
        "--out",
        s(&d.join("x.safetensors")),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no tensor `fc1.weight`"), "{err}");
    // eval scores a state dict on a labelled file: the accuracy of predict's classes.
    let sd = s(&data.join("digits_state_dict.safetensors")).to_string();
    let rows = digits_rows(200);
    write_csv(&d.join("rows.csv"), &rows, 0..65);
    let out = ok(&["eval", digits(), "--torch", &sd, "--data", s(&d.join("rows.csv"))]);
    ok(&[
        "predict",
        digits(),
        "--torch",
        &sd,
        "--inputs",
        s(&d.join("rows.csv")),
        "--label-column",
        "-1",
        "--out",
        s(&d.join("p.csv")),
    ]);
    let (_, preds) = read_csv(&d.join("p.csv"));
    let right = preds.iter().zip(&rows).filter(|(p, r)| p[0] == r[64]).count();
    assert!((metric(&out, "accuracy") - right as f64 / 200.0).abs() < 1e-6, "{out}");
    // A state dict records no split: there are no held-out rows to score.
    let (code, _, err) = nnc(&["eval", digits(), "--torch", &sd]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--data"), "{err}");
}

#[test]
fn a_logistic_model_on_float_labels_predicts_classes_and_probabilities() {
    let d = fresh("logistic");
    let src = "model L {\n input x: [B, 2]\n input y: [B]\n param w: [2, 1] = normal(1.0)\n output z = reshape(x @ w, [-1])\n loss = bce_logits(z, y)\n}\n";
    std::fs::write(d.join("l.nn"), src).expect("write");
    let (m, init, x) = (d.join("l.nn"), d.join("p.safetensors"), d.join("x.csv"));
    ok(&["init", s(&m), "--seed", "3", "--out", s(&init)]);
    std::fs::write(&x, "0.5,1\n-1,2\n3,-0.25\n").expect("write");
    for o in ["p.csv", "z.safetensors"] {
        ok(&["predict", s(&m), "--params", s(&init), "--inputs", s(&x), "--out", s(&d.join(o))]);
    }
    let z = floats(&nnc::internals::tensors::read(&d.join("z.safetensors")).expect("z"), "z");
    let (head, rows) = read_csv(&d.join("p.csv"));
    assert_eq!(head, vec!["class", "probability_1"]);
    for (r, row) in rows.iter().enumerate() {
        let p = 1.0 / (1.0 + (-z[r]).exp());
        assert!((row[1] - p).abs() < 1e-6, "row {r}: {} vs {p}", row[1]);
        assert_eq!(row[0], f64::from(u8::from(p > 0.5)), "row {r}");
    }
}

/// A student of the digits model in `d`: `body` after its inputs and its teacher (read
/// from `ck` with `args`), its train block `train`.
fn student(d: &Path, name: &str, teacher: &str, body: &str, train: &str) -> PathBuf {
    let data = root().join("examples/data/digits.csv.gz");
    let src = format!(
        "use {digits:?}\nmodel S {{\n input x: [B, 64]\n input y: i32[B]\n teacher = {teacher}\n{body}\n train {{ data = \
         csv({data:?}, label = -1) split = [0.8, 0.2] {train} }}\n}}\n",
        digits = digits(),
        data = s(&data),
    );
    let f = d.join(name);
    std::fs::write(&f, src).expect("write");
    f
}

fn metric(out: &str, name: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` in:\n{out}"))
}

#[test]
fn a_teacher_inside_a_student_computes_the_teachers_outputs_and_learns_nothing() {
    let d = fresh("teacher");
    let ck = trained();
    let teacher_eval = ok(&["eval", digits(), "--checkpoint", s(ck)]);
    // The student's only parameter shifts every logit alike: softmax, the loss and the
    // accuracy cannot change, so they are the teacher's exactly if the teacher inside
    // the student is the trained one and training (lr 0.5) never touched it.
    let m = student(
        &d,
        "echo.nn",
        &format!("Digits from {:?}", s(ck)),
        " param shift: [1] = zeros\n output logits = teacher.logits + shift\n loss = cross_entropy(logits, y)",
        "preprocess = standardize optimizer = sgd(lr = 0.5) batch = 32 epochs = 2",
    );
    let run = d.join("run");
    let out = ok(&["train", s(&m), "--out", s(&run)]);
    for k in ["accuracy", "loss"] {
        let (a, b) = (metric(&out, &format!("test_{k}")), metric(&teacher_eval, k));
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{k}: student {a}, teacher {b}");
    }
    let t = nnc::internals::tensors::read(&run.join("last.safetensors")).expect("checkpoint");
    assert!(t.keys().all(|k| !k.starts_with("teacher.")), "the teacher is stored: {:?}", t.keys());
    assert!(floats(&t, "shift")[0] != 0.0, "the student's own parameter was not trained");
    // predict reads the teacher's tensors too: the same probabilities as the teacher's.
    let rows = digits_rows(20);
    write_csv(&d.join("x.csv"), &rows, 0..64);
    for (model, ckpt, o) in [(s(&m), run.join("last.safetensors"), "s.csv"), (digits(), ck.to_path_buf(), "t.csv")] {
        ok(&["predict", model, "--checkpoint", s(&ckpt), "--inputs", s(&d.join("x.csv")), "--out", s(&d.join(o))]);
    }
    let (a, b) = (read_csv(&d.join("s.csv")).1, read_csv(&d.join("t.csv")).1);
    assert_eq!(a.len(), 20);
    for (r, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x[0], y[0], "row {r}: class");
        for (p, q) in x.iter().zip(y).skip(1) {
            assert!((p - q).abs() < 1e-6, "row {r}: {p} vs {q}");
        }
    }
}

#[test]
fn a_distilled_student_is_trained_with_its_teacher_and_shipped_without_it() {
    let d = fresh("distill");
    let ck = d.join("teacher.safetensors");
    std::fs::copy(trained(), &ck).expect("copy");
    let m = student(
        &d,
        "s.nn",
        "Digits from \"teacher.safetensors\"",
        " layer fc = Dense(64, 10)\n output logits = fc(x)\n loss = 0.5 * kl_div(teacher.logits, logits, temperature \
         = 2) + 0.5 * cross_entropy(logits, y)",
        "preprocess = standardize optimizer = adam(lr = 1e-2) batch = 32 epochs = 4",
    );
    let run = d.join("run");
    let out = ok(&["train", s(&m), "--out", s(&run)]);
    assert!(metric(&out, "test_accuracy") > 0.85, "{out}");
    let best = run.join("best.safetensors");
    let size = std::fs::metadata(&best).expect("checkpoint").len();
    // 650 values, Adam's two moments and the preprocessing: ~9 KB; the teacher's 9610
    // values alone would add 38 KB.
    assert!(size < 20_000, "the student's checkpoint is {size} bytes: it holds its teacher");
    // Its predictions, ONNX file and library do not need the teacher.
    std::fs::remove_file(&ck).expect("remove");
    write_csv(&d.join("x.csv"), &digits_rows(5), 0..64);
    ok(&["predict", s(&m), "--checkpoint", s(&best), "--inputs", s(&d.join("x.csv")), "--out", s(&d.join("p.csv"))]);
    ok(&["export", s(&m), "--checkpoint", s(&best), "-o", s(&d.join("s.onnx"))]);
    // Its loss does: eval says which file is missing.
    let (code, _, err) = nnc(&["eval", s(&m), "--checkpoint", s(&best)]);
    assert_eq!(code, 1);
    assert!(err.contains("teacher") && err.contains("teacher.safetensors"), "{err}");
}

#[test]
fn a_teacher_that_does_not_fit_its_student_is_refused_with_the_reason() {
    let d = fresh("teacher_errors");
    let ck = s(trained()).to_string();
    let head = " layer fc = Dense(64, 10)\n output logits = fc(x)\n loss = kl_div(teacher.logits, logits)";
    let train = "preprocess = standardize optimizer = sgd(lr = 0.1) batch = 32 epochs = 1";
    let cases: Vec<(String, &str, &str)> = vec![
        // Another width than the checkpoint's: the tensor, both shapes and the recorded argument.
        (
            format!("Digits(hidden = 64) from {ck:?}"),
            train,
            "tensor `fc1.W` has shape [64, 128], the teacher as declared needs [64, 64]",
        ),
        (format!("Digits from {ck:?}"), train, ""),
        ("Digits from \"nosuch.safetensors\"".to_string(), train, "nosuch.safetensors"),
        // The teacher was standardized with its own statistics; a student without preprocessing would feed it raw pixels.
        (
            format!("Digits from {ck:?}"),
            "preprocess = none optimizer = sgd(lr = 0.1) batch = 32 epochs = 1",
            "preprocessed differently",
        ),
    ];
    for (i, (teacher, train, want)) in cases.iter().enumerate() {
        let m = student(&d, &format!("s{i}.nn"), teacher, head, train);
        let (code, out, err) = nnc(&["train", s(&m), "--out", s(&d.join(format!("r{i}")))]);
        if want.is_empty() {
            assert_eq!(code, 0, "{out}{err}");
            continue;
        }
        assert_eq!(code, 1, "case {i}: {out}{err}");
        assert!(err.contains(want), "case {i}: expected `{want}` in:\n{err}");
        assert!(!d.join(format!("r{i}")).join("last.safetensors").exists(), "case {i} wrote a checkpoint");
    }
    // Compile-time refusals: an unknown model, an input the student lacks, a loss with a
    // teacher's value that is not an output.
    let bad = [
        ("teacher = Digitz from \"t.safetensors\"", "E0351", "there is no model `Digitz`"),
        ("teacher = S from \"t.safetensors\"", "E0350", "cannot be its own teacher"),
    ];
    for (i, (line, code_name, want)) in bad.iter().enumerate() {
        let src = format!(
            "use {:?}\nmodel S {{\n input x: [B, 64]\n input y: i32[B]\n {line}\n output logits = x[:, 0:10]\n}}\n",
            digits()
        );
        let f = d.join(format!("bad{i}.nn"));
        std::fs::write(&f, src).expect("write");
        let (code, _, err) = nnc(&["check", s(&f)]);
        assert_eq!(code, 1);
        assert!(err.contains(code_name) && err.contains(want), "{err}");
    }
    let src = format!(
        "use {:?}\nmodel S {{\n input z: [B, 64]\n teacher = Digits from \"t.safetensors\"\n output logits = teacher.h\n}}\n",
        digits()
    );
    let f = d.join("noinput.nn");
    std::fs::write(&f, &src).expect("write");
    let (code, _, err) = nnc(&["check", s(&f)]);
    assert_eq!(code, 1);
    assert!(err.contains("E0352") && err.contains("reads input `x`"), "{err}");
}
