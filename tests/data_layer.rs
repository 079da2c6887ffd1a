//! The data layer (`nnc::internals::data`): consumes fixtures in tests/data/datasets/, files built
//! here byte by byte (IDX, .npy, .npz, safetensors) and the bundled example data; checks
//! loaders, bad-data errors, splits, batches and preprocessing.
//!
//! Fixtures: small CSVs (one gzipped) written by hand; `numpy_*.npz` / `numpy_*.npy` were
//! written by NumPy 2.4 (`np.savez_compressed`, `np.savez`, `np.save` of a Fortran-order
//! big-endian array) to check files from the real tool.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use nnc::internals::data::{
    self, batches, epoch_seed, gather, linalg, load, split, Array, ArrayData, DType, Dataset, InputSpec,
    PreprocessKind, Preprocessor,
};
use nnc::internals::settings::{Choice, Lit};

// ---------------------------------------------------------------------------------------
// helpers

fn choice(name: &str, args: &[(&str, Lit)]) -> Choice {
    Choice { name: name.to_string(), args: args.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() }
}
fn s(v: &str) -> Lit {
    Lit::Str(v.to_string())
}
fn n(v: f64) -> Lit {
    Lit::Num(v)
}
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/datasets")
}
fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}
/// A fresh folder per test for generated files.
fn tmp_dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("data_layer").join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}
fn xy(per_sample: &[usize]) -> Vec<InputSpec> {
    vec![InputSpec::new("x", DType::F32, per_sample), InputSpec::new("y", DType::I32, &[])]
}
fn f32s(ds: &Dataset, name: &str) -> Vec<f32> {
    ds.get(name).and_then(Array::as_f32).expect("f32 array").to_vec()
}
fn i32s(ds: &Dataset, name: &str) -> Vec<i32> {
    ds.get(name).and_then(Array::as_i32).expect("i32 array").to_vec()
}
fn load_err(c: &Choice, base: &Path, inputs: &[InputSpec]) -> String {
    match load(c, base, inputs) {
        Ok(ds) => panic!("expected an error, loaded {} samples", ds.n),
        Err(e) => e.to_string(),
    }
}
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}
fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("deflate");
    e.finish().expect("deflate")
}

/// An IDX file: magic 00 00 type ndim, big-endian dims, data.
fn idx(type_code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, type_code, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// A version-1 .npy file.
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = match shape.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}
fn le_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn le_i64(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// A zip archive: entries (name, data, deflated?).
fn zip(entries: &[(&str, Vec<u8>, bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data, deflated) in entries {
        let body = if *deflated { deflate(data) } else { data.clone() };
        let method: u16 = if *deflated { 8 } else { 0 };
        let offset = out.len() as u32;
        let crc = crc32(data);
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&method.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes()); // time, date
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&(body.len() as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // extra length
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        common(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&body);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes());
        common(&mut central);
        central.extend_from_slice(&[0u8; 10]); // comment length, disk, internal and external attrs
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_off = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_off.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn mean_var(values: &[f64]) -> (f64, f64) {
    let m = values.iter().sum::<f64>() / values.len() as f64;
    let v = values.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / values.len() as f64;
    (m, v)
}

/// Population covariance of the rows (flat, d per row).
fn covariance(x: &[f32], d: usize) -> Vec<f64> {
    let rows = x.len() / d;
    let mut mean = vec![0.0; d];
    for r in x.chunks(d) {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += f64::from(v) / rows as f64;
        }
    }
    let mut c = vec![0.0; d * d];
    for r in x.chunks(d) {
        for i in 0..d {
            for j in 0..d {
                c[i * d + j] += (f64::from(r[i]) - mean[i]) * (f64::from(r[j]) - mean[j]) / rows as f64;
            }
        }
    }
    c
}

// ---------------------------------------------------------------------------------------
// csv

#[test]
fn csv_loads_features_and_labels() {
    let ds = load(&choice("csv", &[("path", s("small.csv"))]), &fixtures(), &xy(&[3])).expect("loads");
    assert_eq!(ds.n, 12);
    assert_eq!(ds.get("x").map(|a| a.shape.clone()), Some(vec![12, 3]));
    assert_eq!(ds.get("y").map(|a| a.shape.clone()), Some(vec![12]));
    assert_eq!(&f32s(&ds, "x")[..6], &[0.0, 0.25, 0.0, 0.5, 1.25, -1.0]);
    assert_eq!(i32s(&ds, "y"), (0..12).map(|i| i % 3).collect::<Vec<_>>());
    assert_eq!(ds.max_label("y"), Some(2));
    assert_eq!(ds.max_label("nope"), None);
    assert_eq!(ds.class_counts("y"), Some(BTreeMap::from([(0, 4), (1, 4), (2, 4)])));

    // gzip gives the same data.
    let gz = load(&choice("csv", &[("path", s("small.csv.gz"))]), &fixtures(), &xy(&[3])).expect("loads gz");
    assert_eq!(gz, ds);

    // Reshaped to the input's per-sample shape; f32 labels for an f32 `y`.
    let inputs = vec![InputSpec::new("x", DType::F32, &[3, 1]), InputSpec::new("y", DType::F32, &[])];
    let r = load(&choice("csv", &[("path", s("small.csv"))]), &fixtures(), &inputs).expect("reshapes");
    assert_eq!(r.get("x").map(|a| a.shape.clone()), Some(vec![12, 3, 1]));
    assert_eq!(f32s(&r, "y")[..3], [0.0, 1.0, 2.0]);
    assert_eq!(r.max_label("y"), Some(2));

    // Label column by index (0 and -4 are the same), here the first feature as label.
    let first =
        load(&choice("csv", &[("path", s("small.csv")), ("label", n(-4.0))]), &fixtures(), &inputs).expect("label -4");
    assert_eq!(f32s(&first, "y")[..3], [0.0, 0.5, 1.0]);
    assert_eq!(f32s(&first, "x")[..3], [0.25, 0.0, 0.0]);
}

#[test]
fn csv_header_quotes_crlf_and_blank_lines() {
    let c = choice("csv", &[("path", s("header_first.csv")), ("label", n(0.0)), ("header", Lit::Bool(true))]);
    let ds = load(&c, &fixtures(), &xy(&[2])).expect("loads");
    assert_eq!(ds.n, 6);
    assert_eq!(i32s(&ds, "y"), vec![0, 1, 0, 1, 0, 1]);
    assert_eq!(&f32s(&ds, "x")[..4], &[0.0, 0.0, 1.0, 2.0]);
    // Without `header = true` the header is a non-number, with a hint.
    let e = load_err(&choice("csv", &[("path", s("header_first.csv")), ("label", n(0.0))]), &fixtures(), &xy(&[2]));
    assert!(
        e.contains("header_first.csv:1:1") && e.contains("`label` is not a number") && e.contains("header = true"),
        "{e}"
    );
}

#[test]
fn csv_byte_order_mark_and_non_utf8() {
    let dir = tmp_dir("csv_bom");
    std::fs::write(dir.join("bom.csv"), "\u{feff}1.5,2\n3,0\n").expect("write");
    let ds = load(&choice("csv", &[("path", s("bom.csv"))]), &dir, &xy(&[1])).expect("bom");
    assert_eq!((f32s(&ds, "x"), i32s(&ds, "y")), (vec![1.5, 3.0], vec![2, 0]));
    std::fs::write(dir.join("latin1.csv"), b"1,0\n2,1\n\xe93,0\n").expect("write");
    let e = load_err(&choice("csv", &[("path", s("latin1.csv"))]), &dir, &xy(&[1]));
    assert!(e.contains("latin1.csv:3:") && e.contains("not UTF-8"), "{e}");
}

#[test]
fn csv_bad_data_errors_name_file_and_row() {
    let cases: &[(&str, &[&str])] = &[
        ("bad_columns.csv", &["bad_columns.csv:3:", "expected 4 columns", "found 3"]),
        ("bad_number.csv", &["bad_number.csv:2:2:", "`abc` is not a number"]),
        ("bad_nan.csv", &["bad_nan.csv:4:2:", "NaN", "not a finite number"]),
        ("bad_inf.csv", &["bad_inf.csv:2:3:", "`inf` is not a finite number"]),
        ("bad_negative_label.csv", &["bad_negative_label.csv:3:", "label -1 is negative"]),
        ("bad_fraction_label.csv", &["bad_fraction_label.csv:2:", "label 1.5 is not an integer"]),
        ("bad_empty_cell.csv", &["bad_empty_cell.csv:2:2:", "empty value"]),
        ("empty.csv", &["empty.csv", "no data rows"]),
        ("missing.csv", &["cannot read", "missing.csv"]),
    ];
    for (file, wants) in cases {
        let e = load_err(&choice("csv", &[("path", s(file))]), &fixtures(), &xy(&[3]));
        for w in *wants {
            assert!(e.contains(w), "{file}: `{e}` should contain `{w}`");
        }
    }
    // Label column out of range.
    let e = load_err(&choice("csv", &[("path", s("small.csv")), ("label", n(7.0))]), &fixtures(), &xy(&[3]));
    assert!(e.contains("small.csv:1:") && e.contains("label column is 7") && e.contains("4 columns"), "{e}");
    // Per-sample element count differs: both shapes named.
    let e = load_err(&choice("csv", &[("path", s("small.csv"))]), &fixtures(), &xy(&[2, 2]));
    assert!(e.contains("[3]") && e.contains("[2, 2]") && e.contains("`x`"), "{e}");
    // No `y` input for the labels.
    let e =
        load_err(&choice("csv", &[("path", s("small.csv"))]), &fixtures(), &[InputSpec::new("x", DType::F32, &[3])]);
    assert!(e.contains("no input named `y`"), "{e}");
    // An input the source cannot feed.
    let mut inputs = xy(&[3]);
    inputs.push(InputSpec::new("mask", DType::F32, &[3]));
    let e = load_err(&choice("csv", &[("path", s("small.csv"))]), &fixtures(), &inputs);
    assert!(e.contains("`mask` has no data"), "{e}");
    // A .gz name on plain text.
    let dir = tmp_dir("csv_bad_gz");
    std::fs::write(dir.join("plain.csv.gz"), "1,0\n").expect("write");
    let e = load_err(&choice("csv", &[("path", s("plain.csv.gz"))]), &dir, &xy(&[1]));
    assert!(e.contains("plain.csv.gz") && e.contains("not gzip"), "{e}");
    // Non-integer features for an i32 features input (token ids).
    let inputs = vec![InputSpec::new("x", DType::I32, &[3]), InputSpec::new("y", DType::I32, &[])];
    let e = load_err(&choice("csv", &[("path", s("small.csv"))]), &fixtures(), &inputs);
    assert!(e.contains("small.csv:1") && e.contains("0.25") && e.contains("integer"), "{e}");
}

#[test]
fn bundled_digits_csv() {
    let c = choice("csv", &[("path", s("data/digits.csv.gz")), ("label", n(-1.0))]);
    let ds = load(&c, &examples(), &xy(&[64])).expect("digits load");
    assert_eq!(ds.n, 1797);
    assert_eq!(ds.get("x").map(|a| a.shape.clone()), Some(vec![1797, 64]));
    assert_eq!(ds.max_label("y"), Some(9));
    let counts = ds.class_counts("y").expect("counts");
    assert_eq!(counts.len(), 10);
    assert!(counts.values().all(|&c| (170..=190).contains(&c)), "{counts:?}");
    let x = f32s(&ds, "x");
    assert!(x.iter().all(|&v| (0.0..=16.0).contains(&v) && v.fract() == 0.0));
    assert_eq!(&x[..8], &[0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]);
    // As 8x8 images with one channel.
    let img = load(&c, &examples(), &xy(&[1, 8, 8])).expect("as images");
    assert_eq!(img.get("x").map(|a| a.shape.clone()), Some(vec![1797, 1, 8, 8]));
}

// ---------------------------------------------------------------------------------------
// idx

#[test]
fn idx_pair_plain_and_gzipped() {
    let dir = tmp_dir("idx");
    // 3 images of 2x2 u8, labels 0, 2, 1.
    let pixels: Vec<u8> = vec![0, 255, 51, 102, 10, 20, 30, 40, 255, 255, 0, 0];
    let images = idx(0x08, &[3, 2, 2], &pixels);
    let labels = idx(0x08, &[3], &[0, 2, 1]);
    std::fs::write(dir.join("img-idx3-ubyte"), &images).expect("write");
    std::fs::write(dir.join("lab-idx1-ubyte"), &labels).expect("write");
    std::fs::write(dir.join("img-idx3-ubyte.gz"), gzip(&images)).expect("write");
    std::fs::write(dir.join("lab-idx1-ubyte.gz"), gzip(&labels)).expect("write");
    let plain = choice("idx", &[("images", s("img-idx3-ubyte")), ("labels", s("lab-idx1-ubyte"))]);
    let ds = load(&plain, &dir, &xy(&[2, 2])).expect("idx loads");
    assert_eq!(ds.n, 3);
    assert_eq!(ds.get("x").map(|a| a.shape.clone()), Some(vec![3, 2, 2]));
    let x = f32s(&ds, "x");
    assert_eq!(x[1], 1.0);
    assert!((x[2] - 0.2).abs() < 1e-7);
    assert!(x.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert_eq!(i32s(&ds, "y"), vec![0, 2, 1]);
    let gz = choice("idx", &[("images", s("img-idx3-ubyte.gz")), ("labels", s("lab-idx1-ubyte.gz"))]);
    assert_eq!(load(&gz, &dir, &xy(&[2, 2])).expect("gz loads"), ds);
    // Flattened to [4] as well.
    assert_eq!(load(&plain, &dir, &xy(&[4])).expect("flat").get("x").map(|a| a.shape.clone()), Some(vec![3, 4]));
}

#[test]
fn idx_errors() {
    let dir = tmp_dir("idx_errors");
    let write = |name: &str, b: &[u8]| std::fs::write(dir.join(name), b).expect("write");
    write("img", &idx(0x08, &[3, 2, 2], &[0; 12]));
    write("lab", &idx(0x08, &[3], &[0, 1, 2]));
    write("lab2", &idx(0x08, &[2], &[0, 1]));
    write("short", &idx(0x08, &[3, 2, 2], &[0; 11]));
    write("badmagic", &[0x1f, 0x00, 0x08, 0x01, 0, 0, 0, 1, 0]);
    write("badtype", &idx(0x07, &[1], &[0]));
    write("neg", &idx(0x09, &[3], &[0, 0xff, 1]));
    let c = |i: &str, l: &str| choice("idx", &[("images", s(i)), ("labels", s(l))]);
    let cases: &[(&str, &str, &[&str])] = &[
        ("img", "lab2", &["img` has 3 images", "lab2` has 2 labels"]),
        ("short", "lab", &["short", "needs 12 bytes", "11 follow"]),
        ("badmagic", "lab", &["badmagic", "not an IDX file", "0x1f000801"]),
        ("img", "badtype", &["badtype", "type 0x07"]),
        ("lab", "img", &["lab", "swapped"]),
        ("img", "neg", &["neg: sample 2", "label -1 is negative"]),
        ("img", "absent", &["cannot read", "absent"]),
    ];
    for (i, l, wants) in cases {
        let e = load_err(&c(i, l), &dir, &xy(&[2, 2]));
        for w in *wants {
            assert!(e.contains(w), "({i}, {l}): `{e}` should contain `{w}`");
        }
    }
}

#[test]
fn bundled_mnist_idx() {
    let c = choice(
        "idx",
        &[("images", s("data/mnist10k-images-idx3-ubyte.gz")), ("labels", s("data/mnist10k-labels-idx1-ubyte.gz"))],
    );
    let ds = load(&c, &examples(), &xy(&[1, 28, 28])).expect("mnist loads");
    assert_eq!(ds.n, 10_000);
    assert_eq!(ds.get("x").map(|a| a.shape.clone()), Some(vec![10_000, 1, 28, 28]));
    let x = f32s(&ds, "x");
    assert!(x.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert!(x.contains(&1.0));
    assert_eq!(ds.max_label("y"), Some(9));
    assert_eq!(ds.class_counts("y").map(|c| c.len()), Some(10));
}

// ---------------------------------------------------------------------------------------
// npy, npz, safetensors

#[test]
fn npy_pair() {
    let dir = tmp_dir("npy");
    let feats: Vec<f32> = (0..8).map(|i| i as f32 * 0.5).collect();
    std::fs::write(dir.join("f.npy"), npy("<f4", &[4, 2], &le_f32(&feats))).expect("write");
    std::fs::write(dir.join("l.npy"), npy("<i8", &[4], &le_i64(&[1, 0, 1, 2]))).expect("write");
    std::fs::write(dir.join("l2.npy"), npy("<i8", &[4, 1], &le_i64(&[1, 0, 1, 2]))).expect("write");
    let ds = load(&choice("npy", &[("features", s("f.npy")), ("labels", s("l.npy"))]), &dir, &xy(&[2])).expect("npy");
    assert_eq!(f32s(&ds, "x"), feats);
    assert_eq!(i32s(&ds, "y"), vec![1, 0, 1, 2]);
    let ds2 =
        load(&choice("npy", &[("features", s("f.npy")), ("labels", s("l2.npy"))]), &dir, &xy(&[2])).expect("[n,1]");
    assert_eq!(ds2, ds);

    // NumPy-written: Fortran order, big-endian f8; u8 labels.
    let c = choice("npy", &[("features", s("numpy_fortran_be.npy")), ("labels", s("numpy_labels_u8.npy"))]);
    let ds = load(&c, &fixtures(), &xy(&[3])).expect("fortran");
    assert_eq!(f32s(&ds, "x"), (0..12).map(|i| i as f32).collect::<Vec<_>>());
    assert_eq!(i32s(&ds, "y"), vec![3, 0, 1, 2]);

    // Errors: bad magic, size mismatch, label count, NaN.
    std::fs::write(dir.join("junk.npy"), b"hello world").expect("write");
    std::fs::write(dir.join("short.npy"), npy("<f4", &[4, 2], &le_f32(&feats[..7]))).expect("write");
    std::fs::write(dir.join("l3.npy"), npy("<i8", &[3], &le_i64(&[0, 1, 2]))).expect("write");
    let mut nan = feats.clone();
    nan[5] = f32::NAN;
    std::fs::write(dir.join("nan.npy"), npy("<f4", &[4, 2], &le_f32(&nan))).expect("write");
    std::fs::write(dir.join("str.npy"), npy("<U3", &[1], &[0; 12])).expect("write");
    let cases: &[(&str, &str, &[&str])] = &[
        ("junk.npy", "l.npy", &["junk.npy", "not a .npy file"]),
        ("short.npy", "l.npy", &["short.npy", "needs 32 bytes", "28 follow"]),
        ("f.npy", "l3.npy", &["f.npy` has 4 samples", "l3.npy` has 3 labels"]),
        ("nan.npy", "l.npy", &["nan.npy: sample 3", "NaN"]),
        ("str.npy", "l.npy", &["str.npy", "'<U3' is not supported"]),
    ];
    for (f, l, wants) in cases {
        let e = load_err(&choice("npy", &[("features", s(f)), ("labels", s(l))]), &dir, &xy(&[2]));
        for w in *wants {
            assert!(e.contains(w), "({f}, {l}): `{e}` should contain `{w}`");
        }
    }
}

#[test]
fn npz_built_by_hand_stored_and_deflated() {
    let dir = tmp_dir("npz");
    let good: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let bad: Vec<f32> = (0..12).map(|i| -(i as f32)).collect();
    let archive = zip(&[
        ("good.npy", npy("<f4", &[2, 2, 3], &le_f32(&good)), false),
        ("bad.npy", npy("<f4", &[2, 6], &le_f32(&bad)), true),
        ("unused.npy", npy("<i8", &[1], &le_i64(&[7])), true),
    ]);
    std::fs::write(dir.join("w.npz"), &archive).expect("write");
    let inputs = vec![InputSpec::new("good", DType::F32, &[2, 3]), InputSpec::new("bad", DType::F32, &[2, 3])];
    let ds = load(&choice("npz", &[("path", s("w.npz"))]), &dir, &inputs).expect("npz");
    assert_eq!(ds.n, 2);
    assert_eq!(ds.arrays.len(), 2);
    assert_eq!(f32s(&ds, "good"), good);
    assert_eq!(f32s(&ds, "bad"), bad);
    assert_eq!(ds.get("bad").map(|a| a.shape.clone()), Some(vec![2, 2, 3]));

    // Missing array, shape mismatch, different sample counts, not a zip.
    let e = load_err(&choice("npz", &[("path", s("w.npz"))]), &dir, &[InputSpec::new("other", DType::F32, &[6])]);
    assert!(e.contains("w.npz") && e.contains("no array `other`") && e.contains("`good`"), "{e}");
    let e = load_err(&choice("npz", &[("path", s("w.npz"))]), &dir, &[InputSpec::new("good", DType::F32, &[5])]);
    assert!(e.contains("w.npz") && e.contains("`good`") && e.contains("[2, 2, 3]") && e.contains("[2, 5]"), "{e}");
    let e = load_err(
        &choice("npz", &[("path", s("w.npz"))]),
        &dir,
        &[InputSpec::new("good", DType::F32, &[2, 3]), InputSpec::new("unused", DType::F32, &[])],
    );
    assert!(e.contains("`unused` has 1 samples") && e.contains("`good` has 2"), "{e}");
    std::fs::write(dir.join("junk.npz"), b"not a zip at all, just some text that is long enough").expect("write");
    let e = load_err(&choice("npz", &[("path", s("junk.npz"))]), &dir, &inputs);
    assert!(e.contains("junk.npz") && e.contains("not a valid .npz"), "{e}");
}

#[test]
fn npz_written_by_numpy() {
    let inputs = vec![InputSpec::new("x", DType::F32, &[2, 3]), InputSpec::new("y", DType::I32, &[])];
    let want_x: Vec<f32> = (0..30).map(|i| (i as f32) / 10.0).collect();
    for file in ["numpy_compressed.npz", "numpy_stored.npz"] {
        let ds = load(&choice("npz", &[("path", s(file))]), &fixtures(), &inputs).expect(file);
        assert_eq!(ds.n, 5, "{file}");
        assert_eq!(i32s(&ds, "y"), vec![0, 1, 2, 1, 0], "{file}");
        let x = f32s(&ds, "x");
        assert!(x.iter().zip(&want_x).all(|(a, b)| (a - b).abs() < 1e-6), "{file}: {x:?}");
    }
    // f32 arrays for an i32 input must be integers.
    let wrong = vec![InputSpec::new("x", DType::I32, &[6])];
    let e = load_err(&choice("npz", &[("path", s("numpy_compressed.npz"))]), &fixtures(), &wrong);
    assert!(e.contains("numpy_compressed.npz: array `x`: sample 1") && e.contains("integer"), "{e}");
}

#[test]
fn safetensors_by_name() {
    let dir = tmp_dir("safetensors");
    let x: Vec<u8> = le_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y: Vec<u8> = [2i32, 0, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let neg: Vec<u8> = [2i32, -3, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        ("x".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 2], &x).expect("view")),
        ("y".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![3], &y).expect("view")),
        (
            "neg".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![3], &neg).expect("view"),
        ),
    ];
    let bytes = safetensors::serialize(views, None).expect("serialize");
    std::fs::write(dir.join("d.safetensors"), bytes).expect("write");
    let c = choice("safetensors", &[("path", s("d.safetensors"))]);
    let ds = load(&c, &dir, &xy(&[2])).expect("safetensors");
    assert_eq!(ds.n, 3);
    assert_eq!(f32s(&ds, "x"), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(i32s(&ds, "y"), vec![2, 0, 1]);
    assert_eq!(ds.max_label("y"), Some(2));
    // Negative class labels for `y` are rejected with the sample.
    let renamed = vec![InputSpec::new("x", DType::F32, &[2]), InputSpec::new("neg", DType::F32, &[])];
    assert!(load(&c, &dir, &renamed).is_ok(), "negative f32 values are fine for other inputs");
    std::fs::write(dir.join("bad.safetensors"), b"garbage").expect("write");
    let e = load_err(&choice("safetensors", &[("path", s("bad.safetensors"))]), &dir, &xy(&[2]));
    assert!(e.contains("bad.safetensors") && e.contains("not a valid safetensors"), "{e}");
    let e = load_err(&c, &dir, &[InputSpec::new("z", DType::F32, &[2])]);
    assert!(e.contains("d.safetensors") && e.contains("no array `z`"), "{e}");
    let e = load_err(&c, &dir, &xy(&[3]));
    assert!(e.contains("`x` has shape [3, 2]") && e.contains("[3, 3]"), "{e}");
}

#[test]
fn negative_labels_from_named_arrays() {
    let dir = tmp_dir("named_negative");
    let x = le_f32(&[1.0, 2.0, 3.0]);
    let y: Vec<u8> = [0i32, 1, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        ("x".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 1], &x).expect("view")),
        ("y".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![3], &y).expect("view")),
    ];
    std::fs::write(dir.join("n.safetensors"), safetensors::serialize(views, None).expect("ser")).expect("write");
    let e = load_err(&choice("safetensors", &[("path", s("n.safetensors"))]), &dir, &xy(&[1]));
    assert!(e.contains("n.safetensors: array `y`: sample 3") && e.contains("label -1 is negative"), "{e}");
}

// ---------------------------------------------------------------------------------------
// synthetic

#[test]
fn synthetic_sets_shapes_balance_and_determinism() {
    let base = Path::new(".");
    let sets = [
        (choice("spirals", &[("n", n(300.0)), ("classes", n(3.0)), ("noise", n(0.2)), ("seed", n(1.0))]), 3),
        (choice("spirals", &[("n", n(400.0)), ("seed", n(0.0))]), 2),
        (choice("moons", &[("n", n(201.0)), ("noise", n(0.1)), ("seed", n(2.0))]), 2),
        (choice("blobs", &[("n", n(300.0)), ("centers", n(4.0)), ("std", n(1.0)), ("seed", n(3.0))]), 4),
        (choice("xor", &[("n", n(200.0)), ("noise", n(0.1)), ("seed", n(4.0))]), 2),
    ];
    for (c, classes) in &sets {
        let ds = load(c, base, &xy(&[2])).expect("synthetic");
        let total = c.num("n").expect("n") as usize;
        assert_eq!(ds.n, total, "{}", c.render());
        assert_eq!(ds.get("x").map(|a| a.shape.clone()), Some(vec![total, 2]));
        let counts = ds.class_counts("y").expect("counts");
        assert_eq!(counts.len(), *classes, "{}", c.render());
        let (lo, hi) = (total / classes, total.div_ceil(*classes));
        assert!(counts.values().all(|&k| k == lo || k == hi), "{}: {counts:?}", c.render());
        assert!(f32s(&ds, "x").iter().all(|v| v.is_finite()));
        // Deterministic per seed, different for another seed.
        assert_eq!(load(c, base, &xy(&[2])).expect("again"), ds);
        let mut other = c.clone();
        other.args.retain(|(k, _)| k != "seed");
        other.args.push(("seed".into(), n(99.0)));
        assert_ne!(f32s(&load(&other, base, &xy(&[2])).expect("other seed"), "x"), f32s(&ds, "x"));
    }
    // Spirals without noise: radius in [0, 1]; xor labels are the sign XOR.
    let ds = load(&choice("spirals", &[("n", n(50.0)), ("noise", n(0.0))]), base, &xy(&[2])).expect("spirals");
    assert!(f32s(&ds, "x").chunks(2).all(|p| (p[0] * p[0] + p[1] * p[1]).sqrt() <= 1.0 + 1e-6));
    let ds = load(&choice("xor", &[("n", n(100.0)), ("noise", n(0.1))]), base, &xy(&[2])).expect("xor");
    for (p, &l) in f32s(&ds, "x").chunks(2).zip(&i32s(&ds, "y")) {
        assert_eq!(l, i32::from((p[0] > 0.0) != (p[1] > 0.0)), "{p:?}");
    }
    // Moons without noise lie on the two half circles.
    let ds = load(&choice("moons", &[("n", n(40.0)), ("noise", n(0.0))]), base, &xy(&[2])).expect("moons");
    for (p, &l) in f32s(&ds, "x").chunks(2).zip(&i32s(&ds, "y")) {
        let (cx, cy) = if l == 0 { (0.0, 0.0) } else { (1.0, 0.5) };
        let r = ((p[0] - cx).powi(2) + (p[1] - cy).powi(2)).sqrt();
        assert!((r - 1.0).abs() < 1e-5, "{p:?} {l}");
    }
    // Features reshaped to the first input; bad arguments are errors.
    let e = load_err(&choice("moons", &[("n", n(10.0))]), base, &xy(&[3]));
    assert!(e.contains("moons") && e.contains("[2]") && e.contains("[3]"), "{e}");
    let e = load_err(&choice("blobs", &[("n", n(0.0))]), base, &xy(&[2]));
    assert!(e.contains("`n`"), "{e}");
    let e = load_err(&choice("nope", &[]), base, &xy(&[2]));
    assert!(e.contains("unknown data source `nope`"), "{e}");
}

// ---------------------------------------------------------------------------------------
// split, batches, gather

fn labelled(counts: &[usize]) -> Dataset {
    let y: Vec<i32> = counts.iter().enumerate().flat_map(|(c, &k)| std::iter::repeat_n(c as i32, k)).collect();
    let total = y.len();
    let x: Vec<f32> = (0..total).map(|i| i as f32).collect();
    let arrays = BTreeMap::from([
        ("x".to_string(), Array { shape: vec![total, 1], data: ArrayData::F32(x) }),
        ("y".to_string(), Array { shape: vec![total], data: ArrayData::I32(y) }),
    ]);
    Dataset { n: total, arrays }
}

#[test]
fn split_is_stratified_complete_and_deterministic() {
    let ds = labelled(&[500, 300, 200]);
    let parts = split(&ds, &[0.8, 0.1, 0.1], 7, Some("y")).expect("split");
    assert_eq!(parts.len(), 3);
    assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), vec![800, 100, 100]);
    let mut all: Vec<usize> = parts.concat();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>(), "every row exactly once");
    for (part, frac) in parts.iter().zip([0.8, 0.1, 0.1]) {
        let sub = ds.subset(part);
        let counts = sub.class_counts("y").expect("counts");
        for (class, total) in [(0, 500.0), (1, 300.0), (2, 200.0)] {
            let k = counts.get(&class).copied().unwrap_or(0) as f64;
            assert!((k - total * frac).abs() < 1e-9, "class {class}: {k}");
        }
    }
    // The parts are shuffled (not class blocks).
    assert!(parts[0][..50].iter().any(|&r| r >= 500));
    assert_eq!(split(&ds, &[0.8, 0.1, 0.1], 7, Some("y")).expect("again"), parts);
    assert_ne!(split(&ds, &[0.8, 0.1, 0.1], 8, Some("y")).expect("other seed"), parts);

    // Many small classes: rounding is carried across classes, nothing is lost and the
    // small parts are not starved.
    let ds = labelled(&[5; 10]);
    let parts = split(&ds, &[0.8, 0.1, 0.1], 0, Some("y")).expect("split");
    assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), vec![40, 5, 5]);
    let digits = load(&choice("csv", &[("path", s("data/digits.csv.gz"))]), &examples(), &xy(&[64])).expect("digits");
    let parts = split(&digits, &[0.8, 0.2], 0, Some("y")).expect("split");
    assert_eq!(parts[0].len() + parts[1].len(), 1797);
    assert!((parts[1].len() as i64 - 359).abs() <= 1, "{}", parts[1].len());
    let all_counts = digits.class_counts("y").expect("counts");
    let test_counts = digits.subset(&parts[1]).class_counts("y").expect("counts");
    for (c, &k) in &all_counts {
        let t = test_counts.get(c).copied().unwrap_or(0) as f64;
        assert!((t - 0.2 * k as f64).abs() <= 1.0, "class {c}: {t} of {k}");
    }

    // Unstratified two-way split; no fractions = everything trains.
    let parts = split(&ds, &[0.7, 0.3], 1, None).expect("split");
    assert_eq!((parts[0].len(), parts[1].len()), (35, 15));
    assert_eq!(split(&ds, &[], 1, Some("y")).expect("all"), vec![(0..50).collect::<Vec<_>>()]);

    // Errors: empty training part, bad fractions, unknown label array.
    let tiny = labelled(&[1]);
    let e = split(&tiny, &[0.4, 0.6], 0, Some("y")).expect_err("empty train");
    assert!(e.contains("training part") && e.contains("empty"), "{e}");
    assert!(split(&ds, &[0.5, 0.6], 0, None).expect_err("sum").contains("add up to 1"));
    assert!(split(&ds, &[0.5, 0.5], 0, Some("label")).expect_err("label").contains("`label`"));
}

#[test]
fn batches_cover_every_row_once_with_a_partial_last() {
    let rows: Vec<usize> = (100..210).collect();
    let b = batches(&rows, 32, None);
    assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![32, 32, 32, 14]);
    assert_eq!(b.concat(), rows);
    let e0 = batches(&rows, 32, Some(epoch_seed(3, 0)));
    let e1 = batches(&rows, 32, Some(epoch_seed(3, 1)));
    for e in [&e0, &e1] {
        let mut all = e.concat();
        assert_eq!(e.last().map(Vec::len), Some(14));
        all.sort_unstable();
        assert_eq!(all, rows);
    }
    assert_ne!(e0, e1, "a new order per epoch");
    assert_ne!(e0.concat(), rows, "shuffled");
    assert_eq!(batches(&rows, 32, Some(epoch_seed(3, 0))), e0, "deterministic");
    assert_eq!(batches(&rows, 1000, None).len(), 1);
    assert_eq!(batches(&[], 8, Some(1)).len(), 0);
    assert_eq!(batches(&rows, 0, None).len(), rows.len(), "batch 0 is treated as 1");
}

#[test]
fn gather_takes_rows_in_order() {
    let ds = load(&choice("csv", &[("path", s("small.csv"))]), &fixtures(), &xy(&[3])).expect("loads");
    let g = gather(&ds, &[4, 0, 4]);
    assert_eq!(g["x"].shape, vec![3, 3]);
    assert_eq!(g["y"].shape, vec![3]);
    assert_eq!(g["x"].as_f32().expect("f32")[..6], [2.0, 1.25, -4.0, 0.0, 0.25, 0.0]);
    assert_eq!(g["y"].as_i32().expect("i32"), &[1, 0, 1]);
    assert_eq!(gather(&ds, &[])["x"].shape, vec![0, 3]);
}

// ---------------------------------------------------------------------------------------
// preprocessing

fn pre(name: &str, args: &[(&str, Lit)], ds: &Dataset, rows: &[usize], inputs: &[InputSpec]) -> Preprocessor {
    Preprocessor::fit(&choice(name, args), ds, rows, inputs).expect("fit")
}

#[test]
fn standardize_on_the_train_split() {
    let inputs = xy(&[64]);
    let mut ds = load(&choice("csv", &[("path", s("data/digits.csv.gz"))]), &examples(), &inputs).expect("digits");
    let parts = split(&ds, &[0.8, 0.2], 0, Some("y")).expect("split");
    let p = pre("standardize", &[], &ds, &parts[0], &inputs);
    assert_eq!(p.kind(), "standardize");
    assert_eq!((p.input.as_str(), p.dim), ("x", 64));
    let before = ds.clone();
    p.apply_dataset(&mut ds).expect("apply");
    let train = ds.subset(&parts[0]);
    let x = f32s(&train, "x");
    let raw = f32s(&before.subset(&parts[0]), "x");
    let mut constant = 0;
    for j in 0..64 {
        let col: Vec<f64> = x.chunks(64).map(|r| f64::from(r[j])).collect();
        let (m, v) = mean_var(&col);
        assert!(m.abs() < 1e-5, "feature {j}: mean {m}");
        let raw_col: Vec<f64> = raw.chunks(64).map(|r| f64::from(r[j])).collect();
        if mean_var(&raw_col).1 == 0.0 {
            constant += 1;
            assert_eq!(p.scale[j], 1.0, "a constant feature is centred only");
            assert!(col.iter().all(|&c| c == 0.0));
        } else {
            assert!((v - 1.0).abs() < 1e-4, "feature {j}: variance {v}");
        }
    }
    assert!(constant >= 1, "digits has constant pixels");
    // The test rows were transformed with the train statistics (not re-centred).
    let test = f32s(&ds.subset(&parts[1]), "x");
    let col: Vec<f64> = test.chunks(64).map(|r| f64::from(r[10])).collect();
    assert!(mean_var(&col).0.abs() > 1e-6);
    // `center` only subtracts the mean; `none` is the identity.
    let c = pre("center", &[], &before, &parts[0], &inputs);
    let mut g = gather(&before, &parts[1]);
    c.apply(&mut g).expect("apply");
    let want: Vec<f32> = f32s(&before.subset(&parts[1]), "x")
        .chunks(64)
        .flat_map(|r| r.iter().zip(&c.mean).map(|(v, m)| v - m).collect::<Vec<_>>())
        .collect();
    assert_eq!(g["x"].as_f32().expect("f32"), want.as_slice());
    let none = pre("none", &[], &before, &parts[0], &inputs);
    let mut g2 = gather(&before, &parts[1]);
    none.apply(&mut g2).expect("apply");
    assert_eq!(g2, gather(&before, &parts[1]));
}

/// 2000 samples of a correlated 4-D Gaussian (as x) with labels.
fn correlated() -> Dataset {
    let mut rng = nnc::internals::rng::SplitMix64::new(5);
    let mix = [[2.0, 0.0, 0.0, 0.0], [1.5, 0.5, 0.0, 0.0], [-1.0, 0.3, 0.8, 0.0], [0.5, 0.5, 0.5, 3.0]];
    let mut x = Vec::new();
    for _ in 0..2000 {
        let z: Vec<f64> = (0..4).map(|_| rng.normal()).collect();
        for row in &mix {
            x.push((row.iter().zip(&z).map(|(a, b)| a * b).sum::<f64>() + 10.0) as f32);
        }
    }
    let y: Vec<i32> = (0..2000).map(|i| i % 2).collect();
    Dataset {
        n: 2000,
        arrays: BTreeMap::from([
            ("x".to_string(), Array { shape: vec![2000, 4], data: ArrayData::F32(x) }),
            ("y".to_string(), Array { shape: vec![2000], data: ArrayData::I32(y) }),
        ]),
    }
}

#[test]
fn whitening_gives_identity_covariance() {
    let inputs = xy(&[4]);
    let ds = correlated();
    let parts = split(&ds, &[0.75, 0.25], 1, Some("y")).expect("split");
    for method in ["zca", "pca"] {
        let p = pre("whiten", &[("method", s(method)), ("eps", n(1e-5))], &ds, &parts[0], &inputs);
        assert_eq!(p.kind(), method);
        let mut train = gather(&ds, &parts[0]);
        p.apply(&mut train).expect("apply");
        let c = covariance(train["x"].as_f32().expect("f32"), 4);
        for i in 0..4 {
            for j in 0..4 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((c[i * 4 + j] - want).abs() < 1e-3, "{method}: cov[{i}][{j}] = {}", c[i * 4 + j]);
            }
        }
        if method == "zca" {
            // ZCA is symmetric and stays close to the input axes.
            for i in 0..4 {
                for j in 0..4 {
                    assert!((p.matrix[i * 4 + j] - p.matrix[j * 4 + i]).abs() < 1e-5);
                }
            }
        }
        // Round trip through checkpoint tensors.
        let t = p.to_tensors();
        assert_eq!(t["preprocess.matrix"].0, vec![4, 4]);
        assert_eq!(t["preprocess.mean"].0, vec![4]);
        assert!(t.contains_key("preprocess.kind"));
        assert_eq!(Preprocessor::from_tensors(&t, "x").expect("from tensors"), p);
    }
    // Standardize and none round-trip too; a bad tensor set is an error.
    let st = pre("standardize", &[], &ds, &parts[0], &inputs);
    assert_eq!(Preprocessor::from_tensors(&st.to_tensors(), "x").expect("round trip"), st);
    assert_eq!(Preprocessor::from_tensors(&BTreeMap::new(), "x").expect("none").kind, PreprocessKind::None);
    let mut t = st.to_tensors();
    t.remove("preprocess.scale");
    assert!(Preprocessor::from_tensors(&t, "x").expect_err("missing").contains("preprocess.scale"));
    // Errors: an i32 input, an unknown method.
    let e = Preprocessor::fit_input(&choice("standardize", &[]), &ds, &parts[0], "y").expect_err("i32");
    assert!(e.contains("i32"), "{e}");
    let e = Preprocessor::fit(&choice("whiten", &[("method", s("svd"))]), &ds, &parts[0], &inputs).expect_err("method");
    assert!(e.contains("pca") && e.contains("svd"), "{e}");
}

#[test]
fn symmetric_eigen_reconstructs() {
    let mut rng = nnc::internals::rng::SplitMix64::new(11);
    for &size in &[1usize, 2, 5, 17] {
        let b: Vec<f64> = (0..size * size).map(|_| rng.normal()).collect();
        // A = B + Bᵀ, plus a rank-deficient and a repeated-eigenvalue case.
        let cases: Vec<Vec<f64>> = vec![
            (0..size * size).map(|k| b[k] + b[(k % size) * size + k / size]).collect(),
            (0..size * size).map(|k| b[k / size] * b[k % size]).collect(),
            (0..size * size).map(|k| if k / size == k % size { 2.0 } else { 0.0 }).collect(),
            vec![0.0; size * size],
        ];
        for a in cases {
            let e = linalg::symmetric_eigen(&a, size).expect("eigen");
            assert!(e.values.windows(2).all(|w| w[0] >= w[1]), "descending");
            for i in 0..size {
                for j in 0..size {
                    let rec: f64 =
                        (0..size).map(|k| e.vectors[i * size + k] * e.values[k] * e.vectors[j * size + k]).sum();
                    assert!((rec - a[i * size + j]).abs() < 1e-9, "A[{i}][{j}]");
                    let dot: f64 = (0..size).map(|k| e.vectors[k * size + i] * e.vectors[k * size + j]).sum();
                    assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-9, "orthonormal");
                }
            }
        }
    }
    assert!(linalg::symmetric_eigen(&[1.0, f64::NAN, f64::NAN, 1.0], 2).is_err());
    assert!(linalg::symmetric_eigen(&[1.0, 2.0], 2).is_err());
    let inputs = vec![
        InputSpec::new("y", DType::I32, &[]),
        InputSpec::new("ids", DType::I32, &[3]),
        InputSpec::new("x", DType::F32, &[2]),
    ];
    assert_eq!(data::features_input(&inputs).map(|i| i.name.as_str()), Some("ids"));
    assert_eq!(data::preprocess_input(&inputs).map(|i| i.name.as_str()), Some("x"));
}

// ---------------------------------------------------------------------------------------
// cross-validation folds

/// Checks that `folds` are disjoint, sorted and together hold rows `0..n` once each.
fn assert_partition(folds: &[Vec<usize>], n: usize) {
    for f in folds {
        assert!(f.windows(2).all(|w| w[0] < w[1]), "each fold sorted ascending");
    }
    let mut all: Vec<usize> = folds.concat();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "every row in exactly one fold");
}

#[test]
fn kfold_is_a_shuffled_partition_with_sizes_within_one() {
    let ds = labelled(&[23, 0, 17]);
    for k in [2, 3, 7, 40] {
        let folds = data::kfold(&ds, k, 11, None).expect("folds");
        assert_eq!(folds.len(), k);
        assert_partition(&folds, 40);
        let sizes: Vec<usize> = folds.iter().map(Vec::len).collect();
        let (lo, hi) = (sizes.iter().min().copied(), sizes.iter().max().copied());
        assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "k = {k}: {sizes:?}");
    }
    // Shuffled: the first fold is not a block of consecutive rows.
    let folds = data::kfold(&ds, 4, 11, None).expect("folds");
    assert!(folds[0].windows(2).any(|w| w[1] - w[0] > 1));
    // Reproducible per seed, different across seeds, with or without stratification.
    for label in [None, Some("y")] {
        let a = data::kfold(&ds, 5, 3, label).expect("folds");
        assert_eq!(data::kfold(&ds, 5, 3, label).expect("again"), a);
        assert_ne!(data::kfold(&ds, 5, 4, label).expect("other seed"), a);
    }
}

#[test]
fn kfold_stratified_keeps_class_proportions() {
    // Three classes of 53, 31 and 7 rows, in blocks.
    let ds = labelled(&[53, 31, 7]);
    let all = ds.class_counts("y").expect("counts");
    for k in [2, 5, 10] {
        let folds = data::kfold(&ds, k, 9, Some("y")).expect("folds");
        assert_partition(&folds, 91);
        let sizes: Vec<usize> = folds.iter().map(Vec::len).collect();
        assert!(sizes.iter().max().zip(sizes.iter().min()).is_some_and(|(h, l)| h - l <= 1), "{sizes:?}");
        for fold in &folds {
            let counts = ds.subset(fold).class_counts("y").expect("counts");
            for (c, &m) in &all {
                // floor(m/k) or ceil(m/k) rows of every class: within one row of the
                // class's share of the fold.
                let got = counts.get(c).copied().unwrap_or(0);
                assert!(got == m / k || got == m.div_ceil(k), "k {k}, class {c}: {got} of {m}");
                let share = m as f64 * fold.len() as f64 / 91.0;
                assert!((got as f64 - share).abs() < 1.0 + 1e-9, "k {k}, class {c}: {got} vs {share}");
            }
        }
    }
    // Small classes are spread over the folds, not all dealt to fold 0: ten classes of 3
    // rows in 10 folds give every fold exactly 3 rows.
    let ds = labelled(&[3; 10]);
    let folds = data::kfold(&ds, 10, 0, Some("y")).expect("folds");
    assert_eq!(folds.iter().map(Vec::len).collect::<Vec<_>>(), vec![3; 10]);
    // Stratification changes the folds (class blocks are dealt class by class).
    let ds = labelled(&[50, 50]);
    let strat = data::kfold(&ds, 5, 1, Some("y")).expect("folds");
    for fold in &strat {
        let counts = ds.subset(fold).class_counts("y").expect("counts");
        assert_eq!((counts.get(&0).copied(), counts.get(&1).copied()), (Some(10), Some(10)));
    }
    // An unusable label array (two values per row) means unstratified folds.
    let mut two = ds.clone();
    two.arrays.insert("pair".into(), Array { shape: vec![100, 2], data: ArrayData::I32(vec![0; 200]) });
    assert_eq!(data::kfold(&two, 5, 1, Some("pair")).expect("folds"), data::kfold(&two, 5, 1, None).expect("f"));
}

#[test]
fn leave_one_out_and_fold_errors() {
    assert_eq!(data::leave_one_out(3), vec![vec![0], vec![1], vec![2]]);
    assert_eq!(data::leave_one_out(500).iter().map(Vec::len).collect::<Vec<_>>(), vec![1; 500]);
    assert!(data::leave_one_out(0).is_empty());
    let ds = labelled(&[3, 2]);
    // k == n is leave-one-out in shuffled order of folds.
    let folds = data::kfold(&ds, 5, 0, None).expect("folds");
    assert_eq!(folds.iter().map(Vec::len).collect::<Vec<_>>(), vec![1; 5]);
    assert_partition(&folds, 5);
    let e = data::kfold(&ds, 6, 0, None).expect_err("too many folds");
    assert!(e.contains("6 folds") && e.contains("5 samples") && e.contains("--folds loo"), "{e}");
    assert!(data::kfold(&ds, 1, 0, None).expect_err("one fold").contains("at least 2 folds"));
    assert!(data::kfold(&ds, 0, 0, None).is_err());
    let empty = Dataset { n: 0, arrays: BTreeMap::new() };
    assert!(data::kfold(&empty, 2, 0, None).expect_err("empty").contains("no samples"));
    assert!(data::kfold(&ds, 2, 0, Some("label")).expect_err("missing label").contains("`label`"));
}
