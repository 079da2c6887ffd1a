//! Inputs that must not hang, exhaust memory or pass silently: special files as sources
//! and data, text encodings, and flag values out of range (usage errors, exit 2).

use std::path::{Path, PathBuf};
use std::process::Command;

fn fresh(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create folder");
    d
}

fn nnc(args: &[&str], dir: &Path) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_nnc")).args(args).current_dir(dir).output().expect("run nnc");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into())
}

const MODEL: &str = "model M {\n input x: [B, 2]\n input y: i32[B]\n layer fc = Dense(2, 2)\n output logits = fc(x)\n loss = cross_entropy(logits, y)\n train { data = moons(n = 64)  epochs = 1 }\n}\n";

#[cfg(unix)]
#[test]
fn special_files_are_refused_not_read_forever() {
    let d = fresh("special");
    let (code, err) = nnc(&["check", "/dev/zero"], &d);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(Command::new("mkfifo").arg(d.join("fifo.nn")).status().expect("mkfifo").success());
    let (code, err) = nnc(&["check", "fifo.nn"], &d);
    assert_eq!(code, 1, "{err}");
    let used = MODEL.replace("model M {", "use \"/dev/zero\"\nmodel M {");
    std::fs::write(d.join("use.nn"), used).expect("write");
    let (code, err) = nnc(&["check", "use.nn"], &d);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    let csv = MODEL.replace("moons(n = 64)", "csv(\"/dev/zero\")");
    std::fs::write(d.join("csv.nn"), csv).expect("write");
    let (code, err) = nnc(&["train", "csv.nn", "--out", "run"], &d);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/dev/zero") && err.contains("not a regular file"), "{err}");
}

#[test]
fn a_byte_order_mark_and_cr_line_endings_are_accepted() {
    let d = fresh("encodings");
    std::fs::write(d.join("bom.nn"), format!("\u{feff}{MODEL}")).expect("write");
    let (code, err) = nnc(&["check", "bom.nn"], &d);
    assert_eq!(code, 0, "{err}");
    std::fs::write(d.join("cr.nn"), MODEL.replace('\n', "\r")).expect("write");
    let (code, err) = nnc(&["check", "cr.nn"], &d);
    assert_eq!(code, 0, "{err}");
    // An error after a BOM still points at the right column.
    std::fs::write(d.join("bad.nn"), format!("\u{feff}{}", MODEL.replace("model M {", "model M { oops")))
        .expect("write");
    let (code, err) = nnc(&["check", "bad.nn", "--color", "never"], &d);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bad.nn:1:11"), "{err}");
}

#[test]
fn flag_values_out_of_range_are_usage_errors() {
    let d = fresh("flags");
    std::fs::write(d.join("m.nn"), MODEL).expect("write");
    for args in [
        &["train", "m.nn", "--threads", "0"][..],
        &["train", "m.nn", "--threads", "99999999999"],
        &["train", "m.nn", "--threads", "10000"],
        &["bench", "m.nn", "--steps", "0"],
        &["bench", "m.nn", "--steps", "99999999999"],
        &["gradcheck", "m.nn", "--eps", "nan"],
        &["gradcheck", "m.nn", "--eps", "1e300000"],
        &["gradcheck", "m.nn", "--eps", "-1"],
        &["gradcheck", "m.nn", "--coords", "0"],
        &["gradcheck", "m.nn", "--tol", "inf"],
        &["train", "m.nn", "--set", "lr=0"],
        &["train", "m.nn", "--set", "epochs=2", "--set", "epochs=3"],
        &["cv", "m.nn", "--folds", "1"],
        &["train", "m.nn", "--ensemble", "1"],
    ] {
        let (code, err) = nnc(args, &d);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(!d.join("runs").exists(), "a refused run created its folder");
}

#[test]
fn values_that_cannot_work_do_not_pass_check() {
    let d = fresh("values");
    let cases = [
        ("output z = dropout(x, 1.0)", "`dropout`: `p` must be in [0, 1)"),
        ("output z = dropout(x, 2.0)", "`dropout`: `p` must be in [0, 1)"),
        ("output z = dropout(x, p = -1)", "`dropout`: `p` must be in [0, 1)"),
        ("output z = kl_div(x, x, temperature = 0)", "`temperature` must be above 0"),
        ("param w: [2] = normal(-1)\n output z = x * w", "standard deviation above 0"),
        ("output z = sum(zeros([4294967296, 4294967296, 4294967296]))", "more than 2^63 elements"),
        ("output z = sum(ones([4294967296, 4294967296, 4294967296, 4]))", "more than 2^63 elements"),
        ("output z = reshape(x, [B, 2]) + sum(zeros([B, 65536, 65536]))", "even at batch size 1"),
        ("output z = x * (3 ^ 9223372036854775807)", "numbers must stay"),
        ("output z = x * (1.0 / 0)", "numbers must stay"),
        ("output z = x * (3 ^ 100)", "overflow"),
        ("output z = reshape(x, [B, 2.])", "write `2` without a decimal point"),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let src = format!("model M {{\n input x: [B, 2]\n {body}\n}}\n");
        let f = format!("m{i}.nn");
        std::fs::write(d.join(&f), &src).expect("write");
        let (code, err) = nnc(&["check", &f, "--color", "never"], &d);
        assert_eq!(code, 1, "{body}: {err}");
        assert!(err.contains(want) && err.contains(&format!("{f}:3:")), "{body}: {err}");
    }
    // Right at the edges: still fine.
    let ok =
        "model M {\n input x: [B, 2]\n output z = dropout(x, 0.0) + dropout(x, 0.999) * (1 ^ 100) * ((-1) ^ 101)\n}\n";
    std::fs::write(d.join("ok.nn"), ok).expect("write");
    let (code, err) = nnc(&["check", "ok.nn"], &d);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn ids_out_of_range_are_refused_at_the_boundary_on_both_backends() {
    let src = "model M {\n input x: [B, 2]\n input y: i32[B]\n input t: i32[B]\n layer fc = Dense(2, 3)\n layer emb = Embedding(5, 3)\n output logits = fc(x) + emb(t)\n loss = cross_entropy(logits, y)\n}\n";
    let p = match nnc::internals::pipeline::compile_source("m.nn", src, None) {
        Ok(mut c) => c.programs.remove(0),
        Err(e) => panic!("{}", nnc::internals::diagnostic::render(&e.diagnostics, &e.sources, Default::default())),
    };
    let (ps, ss) = nnc::internals::runtime::init::init_all(&p.train, 0);
    let mut params = nnc::internals::tensors::TensorMap::new();
    for (d, v) in p.train.params.iter().zip(ps) {
        params.insert(
            d.name.clone(),
            nnc::internals::tensors::HostTensor::f32(d.shape.iter().map(|&x| x as usize).collect(), v),
        );
    }
    for (d, v) in p.train.states.iter().zip(ss) {
        params.insert(
            d.name.clone(),
            nnc::internals::tensors::HostTensor::f32(d.shape.iter().map(|&x| x as usize).collect(), v),
        );
    }
    let ints = |v: Vec<i32>| nnc::internals::tensors::HostTensor {
        shape: vec![v.len()],
        data: nnc::internals::tensors::HostData::I32(v),
    };
    for (y, t, want) in [
        (vec![0, 3], vec![0, 1], "input `y`: element 1 is 3, outside 0..3"),
        (vec![0, -1], vec![0, 1], "input `y`: element 1 is -1, outside 0..3"),
        (vec![0, 1], vec![5, 1], "input `t`: element 0 is 5, outside 0..5"),
        (vec![i32::MAX, 1], vec![0, 1], "element 0 is 2147483647"),
    ] {
        let mut inputs = nnc::internals::tensors::TensorMap::new();
        inputs.insert("x".into(), nnc::internals::tensors::HostTensor::f32(vec![2, 2], vec![0.1, 0.2, 0.3, 0.4]));
        inputs.insert("y".into(), ints(y));
        inputs.insert("t".into(), ints(t));
        for jit in [true, false] {
            let opts = nnc::internals::runtime::exec::ExecOptions {
                backend: if jit { nnc::Backend::Jit } else { nnc::Backend::Interpreter },
                ..Default::default()
            };
            let e =
                nnc::internals::runtime::exec::run_named(&p.train, &params, &inputs, opts).expect_err("out of range");
            assert!(e.contains(want), "jit {jit}: {e}");
        }
    }
    // An I64 beyond i32 in a tensor file names the tensor and the element.
    let d = fresh("i64");
    let mut bytes = Vec::new();
    for v in [1i64, 1 << 40] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![2], &bytes).expect("view");
    safetensors::serialize_to_file(vec![("y", view)], None, &d.join("y.safetensors")).expect("write");
    let e = nnc::internals::tensors::read(&d.join("y.safetensors")).expect_err("beyond i32");
    assert!(e.contains("tensor `y` element 1 is 1099511627776"), "{e}");
}

#[test]
fn steps_that_cannot_fit_in_memory_are_refused_before_allocating() {
    let d = fresh("memory");
    // 8 layers of 46000 x 46000 weights with Adam state: about 200 GB.
    let mut body = String::from("model H {\n input x: [B, 46000]\n input y: i32[B]\n");
    for i in 0..8 {
        body.push_str(&format!(" layer l{i} = Dense(46000, 46000)\n"));
    }
    body.push_str(" h = l7(l6(l5(l4(l3(l2(l1(l0(x))))))))\n output logits = h\n loss = cross_entropy(logits, y)\n}\n");
    std::fs::write(d.join("h.nn"), body).expect("write");
    for args in [&["plan", "h.nn", "--batch", "2"][..], &["init", "h.nn", "--out", "p.safetensors"]] {
        let (code, err) = nnc(args, &d);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("GB, more than this machine's"), "{args:?}: {err}");
    }
    assert!(!d.join("p.safetensors").exists());
}

#[test]
fn diagnostics_stop_after_a_documented_number() {
    let d = fresh("many_errors");
    let mut src = String::from("model M {\n input x: [B, 2]\n");
    for i in 0..10_000 {
        src.push_str(&format!(" a{i} = x + unknown{i}\n"));
    }
    src.push_str(" output z = x\n}\n");
    std::fs::write(d.join("many.nn"), src).expect("write");
    let (code, err) = nnc(&["check", "many.nn", "--color", "never"], &d);
    assert_eq!(code, 1);
    assert_eq!(err.matches("error[E0201]").count(), 100, "rendered");
    assert!(
        err.contains("... and 9900 more errors (the first 100 are shown)") && err.contains("10000 errors"),
        "{}",
        &err[err.len() - 300..]
    );
}

#[test]
fn data_errors_name_the_file_and_the_row() {
    let d = fresh("data_rows");
    std::fs::write(d.join("h.csv"), "a,b\n1,2,0\n3,4,1\n").expect("write");
    let m = MODEL.replace("moons(n = 64)", "csv(\"h.csv\", header = true)");
    std::fs::write(d.join("h.nn"), &m).expect("write");
    let (code, err) = nnc(&["train", "h.nn", "--out", "run"], &d);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("h.csv:2: the header (line 1) names 2 columns but the rows have 3"), "{err}");
    std::fs::write(d.join("l.csv"), "1,2,0\n3,4,1\n5,6,7\n").expect("write");
    std::fs::write(d.join("l.nn"), MODEL.replace("moons(n = 64)", "csv(\"l.csv\")")).expect("write");
    let (code, err) = nnc(&["train", "l.nn", "--out", "run"], &d);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("l.csv") && err.contains("the label of sample 2 (counting from 0) is 7, outside 0..2"),
        "{err}"
    );
    std::fs::write(d.join("n.csv"), "1,2,0\n3,4,-1\n").expect("write");
    std::fs::write(d.join("n.nn"), MODEL.replace("moons(n = 64)", "csv(\"n.csv\")")).expect("write");
    let (code, err) = nnc(&["train", "n.nn", "--out", "run"], &d);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("n.csv:2: label -1 is negative"), "{err}");
}

#[test]
fn a_missing_file_has_no_empty_source_box() {
    let d = fresh("missing");
    let (code, err) = nnc(&["check", "nosuch.nn", "--color", "never"], &d);
    assert_eq!(code, 1);
    assert!(err.contains("error[E0107]: cannot read `nosuch.nn`"), "{err}");
    assert!(!err.contains("╭─") && !err.contains("╰──"), "{err}");
}

#[test]
fn compile_time_lists_are_bounded() {
    let d = fresh("lists");
    for (body, want) in [
        ("l = []\n for i in 0..10000 {\n  l = l + [i]\n }", "copies more than 5000000 elements"),
        ("l = [1]\n for i in 0..64 {\n  l = l + l\n }", "this list would have 131072 elements"),
    ] {
        let src = format!("model M {{\n input x: [B, 2]\n {body}\n output z = x\n}}\n");
        std::fs::write(d.join("l.nn"), src).expect("write");
        let (code, err) = nnc(&["check", "l.nn", "--color", "never"], &d);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("E0906") && err.contains(want), "{err}");
    }
}

#[test]
fn an_exponential_tree_of_calls_stops_at_the_call_limit() {
    let d = fresh("calls");
    let mut src = String::from("fn f0(x: [...]) -> [...] { x + 1 }\n");
    for i in 1..40 {
        src.push_str(&format!("fn f{i}(x: [...]) -> [...] {{ f{}(x) + f{}(x) }}\n", i - 1, i - 1));
    }
    src.push_str("model M {\n input x: [B, 2]\n output z = f39(x)\n}\n");
    std::fs::write(d.join("tree.nn"), src).expect("write");
    let (code, err) = nnc(&["check", "tree.nn", "--color", "never"], &d);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("E0907") && err.contains("more than 1000000 calls"), "{err}");
}

#[test]
fn a_gzip_bomb_stops_at_the_data_limit() {
    use std::io::Write;
    let d = fresh("gzip_bomb");
    // 6 MiB of "0,0,0\n", written 190 times: 1.11 GiB of CSV in a file of a few MB, past
    // the 1 GiB limit for a data file's gunzipped contents.
    let block: Vec<u8> = b"0,0,0\n".iter().copied().cycle().take(6 << 20).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for _ in 0..190 {
        gz.write_all(&block).expect("compress");
    }
    let bytes = gz.finish().expect("compress");
    assert!(bytes.len() < 16 << 20, "{} bytes", bytes.len());
    std::fs::write(d.join("bomb.csv.gz"), &bytes).expect("write");
    std::fs::write(d.join("b.nn"), MODEL.replace("moons(n = 64)", "csv(\"bomb.csv.gz\")")).expect("write");
    let (code, err) = nnc(&["train", "b.nn", "--out", "run"], &d);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bomb.csv.gz` gunzips to more than 1073741824 bytes"), "{err}");
    assert!(!d.join("run").exists(), "nothing written");
}

/// Random corruptions of a real checkpoint (a tensor reshaped, retyped or removed,
/// metadata made invalid, the file truncated): `eval`, `predict` and `train --resume`
/// each refuse with exit 1 and a message naming the file and the tensor or key, and
/// never panic.
#[test]
fn corrupted_checkpoints_are_refused_by_every_command_that_reads_them() {
    use nnc::internals::tensors::{HostData, HostTensor};
    let d = fresh("corrupt");
    let model = MODEL.replace("moons(n = 64)  epochs = 1", "moons(n = 64)  split = [0.75, 0.25]  epochs = 1");
    std::fs::write(d.join("m.nn"), &model).expect("write");
    let (code, err) = nnc(&["train", "m.nn", "--out", "run"], &d);
    assert_eq!(code, 0, "{err}");
    let good = d.join("run/last.safetensors");
    let (tensors, meta) = nnc::internals::train::checkpoint::read(&good).expect("read");
    // Parameters and (optimizer) states; `preprocess.*` corruptions have their own test.
    let names: Vec<String> = tensors.keys().filter(|k| !k.starts_with("preprocess.")).cloned().collect();
    let bytes = std::fs::read(&good).expect("read");
    let inputs = nnc::internals::tensors::TensorMap::from([(
        "x".to_string(),
        HostTensor::f32(vec![2, 2], vec![0.5, -1.0, 1.5, 0.25]),
    )]);
    nnc::internals::tensors::write(&d.join("x.safetensors"), &inputs, None).expect("write inputs");
    let mut rng = nnc::internals::rng::SplitMix64::new(7);
    for case in 0..24 {
        let name = &names[rng.below(names.len() as u64) as usize];
        let mut t = tensors.clone();
        let mut m = meta.clone();
        let (what, expect): (String, String) = match case % 6 {
            0 => {
                let x = t.get_mut(name).expect("tensor");
                let n: usize = x.shape.iter().product();
                x.shape = if x.shape.len() == 1 { vec![1, n] } else { vec![n] };
                (format!("{name} reshaped"), name.clone())
            }
            1 => {
                let x = t.get_mut(name).expect("tensor");
                let n: usize = x.shape.iter().product();
                *x = HostTensor { shape: x.shape.clone(), data: HostData::I32(vec![0; n]) };
                (format!("{name} as i32"), name.clone())
            }
            2 => {
                t.remove(name);
                (format!("{name} removed"), name.clone())
            }
            3 => {
                let key = ["nnc.step", "nnc.epoch", "nnc.best", "nnc.bad_epochs"][rng.below(4) as usize];
                m.insert(key.into(), ["abc", "-1", "nan", "1e99"][rng.below(4) as usize].into());
                (format!("{key} corrupted"), key.to_string())
            }
            4 => {
                let key = ["nnc.split", "nnc.data_rows", "nnc.split_seed"][rng.below(3) as usize];
                m.insert(key.into(), "x,y".into());
                (format!("{key} corrupted"), key.to_string())
            }
            _ => (String::from("truncated"), String::from("bad.safetensors")),
        };
        let path = d.join("bad.safetensors");
        if case % 6 == 5 {
            let cut = 1 + rng.below(bytes.len() as u64 - 2) as usize;
            std::fs::write(&path, &bytes[..cut]).expect("write");
        } else {
            nnc::internals::tensors::write(&path, &t, Some(m)).expect("write");
        }
        // Resume reads the run folder's last.safetensors.
        let resume = d.join(format!("resume{case}"));
        std::fs::create_dir_all(&resume).expect("mkdir");
        std::fs::copy(&path, resume.join("last.safetensors")).expect("copy");
        let out = d.join("out.safetensors");
        let pruned = d.join("pruned.safetensors");
        let quantized = d.join("int8.safetensors");
        let runs: [Vec<&str>; 5] = [
            vec!["eval", "m.nn", "--checkpoint", "bad.safetensors"],
            vec![
                "prune",
                "m.nn",
                "--checkpoint",
                "bad.safetensors",
                "--sparsity",
                "0.5",
                "--out",
                pruned.to_str().expect("utf-8"),
            ],
            vec!["quantize", "m.nn", "--checkpoint", "bad.safetensors", "--out", quantized.to_str().expect("utf-8")],
            vec![
                "predict",
                "m.nn",
                "--checkpoint",
                "bad.safetensors",
                "--inputs",
                "x.safetensors",
                "--out",
                out.to_str().expect("utf-8"),
            ],
            vec!["train", "m.nn", "--out", resume.to_str().expect("utf-8"), "--resume"],
        ];
        for args in &runs {
            let (code, err) = nnc(args, &d);
            // `eval` and `predict` read neither the optimizer state nor the loop's position
            // (and `predict` not the split), so those corruptions may pass them; `--resume`
            // reads everything. What fails must fail cleanly, naming what is wrong.
            if code == 0 {
                let unread = match args[0] {
                    "eval" | "prune" | "quantize" => name.starts_with("opt.") && case % 6 < 3 || case % 6 == 3,
                    "predict" => name.starts_with("opt.") && case % 6 < 3 || case % 6 == 3 || case % 6 == 4,
                    _ => false,
                };
                assert!(unread, "{what}: `{}` accepted it", args[0]);
                continue;
            }
            assert_eq!(code, 1, "{what}: `{}` exit {code}: {err}", args[0]);
            assert!(!err.contains("panicked"), "{what}: {err}");
            let file = if args[0] == "train" { "last.safetensors" } else { "bad.safetensors" };
            assert!(err.contains(file), "{what}: `{}` does not name the file: {err}", args[0]);
            assert!(err.contains(&expect) || case % 6 == 5, "{what}: `{}` does not name `{expect}`: {err}", args[0]);
        }
    }
}
