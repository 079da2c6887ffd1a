//! The `nnc` binary's contract: exit codes (0 success, 1 a user error, 2 bad usage),
//! diagnostics on stderr as `error[E....]` with `file.nn:line:col`, the outputs of
//! `check`, `ir` and `params`, and never a panic whatever the input.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Any single run of the binary on these small inputs must finish well within this.
const TIMEOUT: Duration = Duration::from_secs(30);

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    what: String,
}

impl Out {
    /// Asserts the exit code, showing everything on failure.
    fn code(&self, want: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(want),
            "{}: exit code\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.stdout,
            self.stderr
        );
        self
    }
    fn stderr_has(&self, needle: &str) -> &Self {
        assert!(self.stderr.contains(needle), "{}: stderr lacks {needle:?}:\n{}", self.what, self.stderr);
        self
    }
    fn stdout_has(&self, needle: &str) -> &Self {
        assert!(self.stdout.contains(needle), "{}: stdout lacks {needle:?}:\n{}", self.what, self.stdout);
        self
    }
    fn stdout_lacks(&self, needle: &str) -> &Self {
        assert!(!self.stdout.contains(needle), "{}: stdout has {needle:?}:\n{}", self.what, self.stdout);
        self
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/ is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("nn"))
        .collect();
    v.sort();
    assert!(v.len() >= 8, "expected the 8 examples, found {}", v.len());
    v
}

/// A scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnc-cli-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create a scratch directory");
    d
}

/// Runs `nnc --color never ARGS` in the crate root. Whatever the outcome, nnc must not
/// panic, report an internal error or take long.
fn nnc(args: &[&str]) -> Out {
    let mut all = vec!["--color", "never"];
    all.extend_from_slice(args);
    nnc_raw(&all)
}

/// Runs `nnc ARGS` exactly as given.
fn nnc_raw(args: &[&str]) -> Out {
    let what = format!("nnc {}", args.join(" "));
    let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .current_dir(root())
        .env_remove("NO_COLOR")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nnc");
    // Drain the pipes on threads so a large output cannot block the child.
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for nnc") {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: no answer after {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&t_out.join().expect("stdout reader")).to_string();
    let stderr = String::from_utf8_lossy(&t_err.join().expect("stderr reader")).to_string();
    let out = Out { code: status.code(), stdout, stderr, what };
    for bad in ["panicked at", "internal compiler error", "RUST_BACKTRACE", "stack overflow"] {
        assert!(!out.stderr.contains(bad), "{}: stderr has {bad:?}:\n{}", out.what, out.stderr);
    }
    assert!(out.code != Some(101) && out.code.is_some(), "{}: exit {:?}\n{}", out.what, out.code, out.stderr);
    out
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

// ---- check ----------------------------------------------------------------------------

#[test]
fn check_every_example_exits_0() {
    for ex in examples() {
        let o = nnc(&["check", s(&ex)]);
        // The result ("ok") on stdout, so `nnc check f.nn | grep ok` finds it.
        o.code(0).stdout_has(" ok: ");
        assert!(o.stderr.is_empty(), "{}: check prints nothing on stderr when fine:\n{}", o.what, o.stderr);
        assert!(!o.stderr.contains("error"), "{}: {}", o.what, o.stderr);
    }
    // All at once, with paths relative to the working directory.
    let rel: Vec<String> = examples()
        .iter()
        .map(|p| format!("examples/{}", p.file_name().and_then(|n| n.to_str()).expect("name")))
        .collect();
    let mut args = vec!["check"];
    args.extend(rel.iter().map(String::as_str));
    let o = nnc(&args);
    o.code(0);
    for r in &rel {
        o.stdout_has(&format!("{r}: model "));
    }
}

#[test]
fn check_reports_a_broken_model_with_its_location() {
    let dir = scratch("broken");
    // An unknown name at line 3, column 21.
    let f = dir.join("broken.nn");
    std::fs::write(&f, "model M {\n    input x: [B, 4]\n    output o = relu(zz)\n}\n").expect("write");
    let o = nnc(&["check", s(&f)]);
    o.code(1).stderr_has("error[E0201]").stderr_has("broken.nn:3:21").stderr_has("1 error");
    // A syntax error: the operand missing at the end of line 3 (column 12).
    let f = dir.join("syntax.nn");
    std::fs::write(&f, "model M {\n    input x: [B, 4]\n    y = x +\n}\n").expect("write");
    let o = nnc(&["check", s(&f)]);
    o.code(1).stderr_has("error[E0100]").stderr_has("syntax.nn:3:12");
    // A shape error inside a prelude layer is reported at the user's call.
    let f = dir.join("shape.nn");
    std::fs::write(&f, "model M {\n    input x: [B, 4]\n    layer fc = Dense(5, 2)\n    output o = fc(x)\n}\n")
        .expect("write");
    let o = nnc(&["check", s(&f)]);
    o.code(1).stderr_has("error[E").stderr_has("shape.nn:4:");
    // Two independent mistakes: both reported, and counted.
    let f = dir.join("two.nn");
    std::fs::write(&f, "model M {\n    input x: [B, 4]\n    a = relu(p)\n    b = relu(q)\n    output o = x\n}\n")
        .expect("write");
    let o = nnc(&["check", s(&f)]);
    o.code(1).stderr_has("two.nn:3:").stderr_has("two.nn:4:").stderr_has("2 errors");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_missing_file_names_it() {
    let o = nnc(&["check", "no/such/model_file.nn"]);
    o.code(1).stderr_has("error[E0107]").stderr_has("no/such/model_file.nn");
}

#[test]
fn check_directory_names_it() {
    let o = nnc(&["check", "examples"]);
    o.code(1).stderr_has("examples").stderr_has("directory");
}

#[test]
fn check_invalid_utf8_names_the_file() {
    let dir = scratch("utf8");
    let f = dir.join("latin1.nn");
    std::fs::write(&f, b"# caf\xe9\nmodel M {\n    input x: [B, 4]\n    output o = x\n}\n").expect("write");
    let o = nnc(&["check", s(&f)]);
    o.code(1).stderr_has("latin1.nn").stderr_has("not valid UTF-8").stderr_has("line 1");
    // The AST view reads the file through the same path.
    let o = nnc(&["ir", s(&f), "--stage", "ast"]);
    o.code(1).stderr_has("latin1.nn").stderr_has("not valid UTF-8");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_many_files_reports_each() {
    let dir = scratch("many");
    let bad = dir.join("bad.nn");
    std::fs::write(&bad, "model M {\n    input x: [B, 4]\n    output o = relu(zz)\n}\n").expect("write");
    let good = "examples/digits.nn";
    // The broken file first: the good one after it is still checked and reported.
    let o = nnc(&["check", s(&bad), good]);
    o.code(1).stderr_has("bad.nn:3:21").stdout_has("examples/digits.nn: model Digits ok");
    // And the other way round.
    let o = nnc(&["check", good, s(&bad), "examples/neuron.nn"]);
    o.code(1)
        .stdout_has("examples/digits.nn: model Digits ok")
        .stderr_has("error[E0201]")
        .stdout_has("examples/neuron.nn: model Neuron ok");
    // A missing file among good ones.
    let o = nnc(&["check", good, "missing_one.nn"]);
    o.code(1).stderr_has("missing_one.nn").stdout_has("model Digits ok");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn color_never_and_always() {
    let dir = scratch("color");
    let f = dir.join("broken.nn");
    std::fs::write(&f, "model M {\n    input x: [B, 4]\n    output o = relu(zz)\n}\n").expect("write");
    let o = nnc(&["check", s(&f)]);
    assert!(!o.stderr.contains('\u{1b}'), "--color never printed escapes:\n{}", o.stderr);
    let o = nnc_raw(&["--color", "always", "check", s(&f)]);
    o.code(1);
    assert!(o.stderr.contains('\u{1b}'), "--color always printed no escapes:\n{}", o.stderr);
    // `auto` with stderr not a terminal: plain.
    let o = nnc_raw(&["check", s(&f)]);
    o.code(1);
    assert!(!o.stderr.contains('\u{1b}'), "--color auto on a pipe printed escapes:\n{}", o.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- usage ----------------------------------------------------------------------------

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["frobnicate", "examples/digits.nn"][..],
        &["check", "--frobnicate", "examples/digits.nn"],
        &["--frobnicate", "check", "examples/digits.nn"],
        &["check"],
        &[],
        &["ir"],
        &["ir", "examples/digits.nn", "--stage", "bytecode"],
        &["ir", "examples/digits.nn", "--mode", "sideways"],
        &["ir", "examples/digits.nn", "--batch", "many"],
        &["ir", "examples/digits.nn", "--batch"],
        &["ir", "examples/digits.nn", "examples/neuron.nn"],
        &["params"],
        &["params", "examples/digits.nn", "--batch", "1.5"],
    ] {
        let o = nnc(args);
        o.code(2);
        assert!(o.stderr.contains("error") || o.stderr.contains("Usage"), "{}: {}", o.what, o.stderr);
    }
    let o = nnc_raw(&["--color", "sometimes", "check", "examples/digits.nn"]);
    o.code(2);
}

#[test]
fn help_and_version_exit_0() {
    let o = nnc_raw(&["--help"]);
    o.code(0).stdout_has("check").stdout_has("ir").stdout_has("params");
    let o = nnc_raw(&["--version"]);
    o.code(0).stdout_has("nnc");
    let o = nnc_raw(&["ir", "--help"]);
    o.code(0).stdout_has("--stage").stdout_has("--batch");
}

// ---- ir -------------------------------------------------------------------------------

#[test]
fn ir_stage_ast() {
    let o = nnc(&["ir", "examples/digits.nn", "--stage", "ast"]);
    o.code(0)
        .stdout_has("model Digits(hidden: int = 128, p: float = 0.2)")
        .stdout_has("input x: [B, 64]")
        .stdout_has("layer fc1 = Dense(64, hidden)")
        .stdout_has("h = dropout(relu(fc1(x)), p)")
        .stdout_lacks("graph train");
    // Operators come out fully parenthesized.
    let o = nnc(&["ir", "examples/neuron.nn", "--stage", "ast"]);
    o.code(0).stdout_has("z = ((x @ w) + b)");
    // The AST stage only parses: a model with a name error still prints...
    let dir = scratch("ast");
    let f = dir.join("names.nn");
    std::fs::write(&f, "model M {\n    input x: [B, 4]\n    output o = relu(zz)\n}\n").expect("write");
    nnc(&["ir", s(&f), "--stage", "ast"]).code(0).stdout_has("output o = relu(zz)");
    // ...but a syntax error does not.
    let f = dir.join("syntax.nn");
    std::fs::write(&f, "model M {\n    y = x +\n}\n").expect("write");
    let o = nnc(&["ir", s(&f), "--stage", "ast"]);
    o.code(1).stderr_has("error[E0100]").stderr_has("syntax.nn:2:");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ir_stage_ir_and_modes() {
    let o = nnc(&["ir", "examples/digits.nn", "--stage", "ir"]);
    o.code(0).stdout_has("model Digits").stdout_has("graph train {").stdout_has("graph eval {");
    // The default stage is the IR of both graphs.
    let d = nnc(&["ir", "examples/digits.nn"]);
    d.code(0);
    assert_eq!(d.stdout, o.stdout, "`--stage ir` is the default");
    let o = nnc(&["ir", "examples/digits.nn", "--mode", "train"]);
    o.code(0).stdout_has("graph train {").stdout_lacks("graph eval");
    // Dropout draws random numbers in training only.
    o.stdout_has("rand");
    let o = nnc(&["ir", "examples/digits.nn", "--mode", "eval"]);
    o.code(0).stdout_has("graph eval {").stdout_lacks("graph train").stdout_lacks("rand");
    let o = nnc(&["ir", "examples/digits.nn", "--mode", "both"]);
    o.code(0).stdout_has("graph train {").stdout_has("graph eval {");
    // Every example prints.
    for ex in examples() {
        nnc(&["ir", s(&ex)]).code(0).stdout_has("graph train {");
    }
}

#[test]
fn ir_batch_binds_the_batch_symbol() {
    let o = nnc(&["ir", "examples/digits.nn", "--batch", "32"]);
    o.code(0).stdout_has("f32[32, 64]").stdout_has("i32[32]").stdout_has("f32[32, 10]");
    assert!(!o.stdout.contains('B'), "the batch symbol is left in:\n{}", o.stdout);
    let o = nnc(&["ir", "examples/mnist_cnn.nn", "--batch", "7", "--mode", "eval"]);
    o.code(0).stdout_has("f32[7, 1, 28, 28]");
    assert!(!o.stdout.contains("[B"), "the batch symbol is left in:\n{}", o.stdout);
    // Without --batch the symbol stays.
    nnc(&["ir", "examples/digits.nn"]).code(0).stdout_has("f32[B, 64]");
}

#[test]
fn batch_must_be_positive_and_within_limits() {
    for args in [&["ir", "examples/digits.nn", "--batch", "0"][..], &["params", "examples/digits.nn", "--batch", "0"]] {
        let o = nnc(args);
        // A user error or a usage error, never success.
        assert!(matches!(o.code, Some(1) | Some(2)), "{}: exit {:?}\n{}", o.what, o.code, o.stderr);
        o.stderr_has("at least 1");
    }
    // Negative: clap reads it as a flag, a usage error.
    nnc(&["ir", "examples/digits.nn", "--batch", "-3"]).code(2);
    // Too big for the tensor limit.
    let o = nnc(&["ir", "examples/digits.nn", "--batch", "99999999999"]);
    o.code(1).stderr_has("limit");
    let o = nnc(&["ir", "examples/digits.nn", "--batch", "9223372036854775807"]);
    assert!(matches!(o.code, Some(1) | Some(2)), "{}: exit {:?}\n{}", o.what, o.code, o.stderr);
}

// ---- params ---------------------------------------------------------------------------

#[test]
fn params_lists_parameters_states_and_a_total() {
    let o = nnc(&["params", "examples/mnist_cnn.nn"]);
    o.code(0).stdout_has("model MnistCnn");
    let line = |name: &str| -> Vec<String> {
        let l = o
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{}", o.stdout));
        l.split_whitespace().map(str::to_string).collect()
    };
    let c1w = line("c1.W").join(" ");
    assert!(c1w.contains("[8, 1, 3, 3]") && c1w.contains(" 72 "), "c1.W row: {c1w}");
    let mean = line("bn.mean").join(" ");
    assert!(mean.contains("[8]") && mean.ends_with("state"), "bn.mean row: {mean}");
    for name in ["c1.b", "bn.gamma", "bn.beta", "bn.var", "c2.W", "c2.b", "fc.W", "fc.b"] {
        line(name);
    }
    let total = o.stdout.lines().find(|l| l.starts_with("total:")).unwrap_or_else(|| panic!("no total:\n{}", o.stdout));
    // 72 + 8 + 8 + 8 + 1152 + 16 + 7840 + 10 parameters in 8 tensors; 16 state values.
    assert!(total.contains("9114 parameters in 8 tensors"), "{total}");
    assert!(total.contains("16 state values"), "{total}");
    // Every example lists its parameters.
    for ex in examples() {
        nnc(&["params", s(&ex)]).code(0).stdout_has("total:");
    }
    // A broken file: exit 1, nothing on stdout.
    let o = nnc(&["params", "no_such_model.nn"]);
    o.code(1).stderr_has("no_such_model.nn");
    assert!(o.stdout.is_empty(), "{}", o.stdout);
}

#[test]
fn params_with_batch() {
    nnc(&["params", "examples/residual.nn", "--batch", "16"]).code(0).stdout_has("blocks.15.fc.W").stdout_has("total:");
}

// ---- gradcheck ------------------------------------------------------------------------

/// Results on stdout, the point and notes on stderr; `--method both` shows both errors on
/// the same coordinates; a failed check exits 1.
#[test]
fn gradcheck_methods_and_exit_codes() {
    let o = nnc(&["gradcheck", "examples/spirals.nn", "--method", "both"]);
    o.code(0).stdout_has("central err").stdout_has("forward err").stdout_has("(forward differences, tolerance 1e-3)");
    o.stderr_has("at random parameters").stderr_has("inputs: random, batch 3");
    // b2 has 2 coordinates: all are checked, and the note says so.
    o.stderr_has("--coords 64 covers every coordinate of: b1 (64), b2 (2)");
    assert!(!o.stdout.contains("at random"), "diagnostics belong on stderr:\n{}", o.stdout);
    let o = nnc(&["gradcheck", "examples/spirals.nn", "--method", "forward"]);
    o.code(0).stdout_has("max rel err").stdout_has("(forward differences, tolerance 1e-3)").stdout_lacks("central");
    // A tolerance no finite difference meets: the check fails, exit 1.
    let o = nnc(&["gradcheck", "examples/spirals.nn", "--tol", "1e-15"]);
    o.code(1).stdout_has("FAIL").stderr_has("gradient check failed");
}

/// `--wrt inputs`: float inputs are checked, i32 inputs skipped with a note; a model
/// without float inputs has nothing to check.
#[test]
fn gradcheck_with_respect_to_inputs() {
    let o = nnc(&["gradcheck", "examples/digits.nn", "--wrt", "inputs", "--method", "both"]);
    o.code(0)
        .stdout_has("x (input)")
        .stdout_lacks("fc1.W")
        .stderr_has("i32 inputs have no gradient and are skipped: y");
    let o = nnc(&["gradcheck", "examples/digits.nn", "--wrt", "both", "--coords", "4"]);
    o.code(0).stdout_has("x (input)").stdout_has("fc1.W").stdout_has("checked 20 coordinates");
    let dir = scratch("gradcheck_ids");
    let f = dir.join("ids.nn");
    std::fs::write(
        &f,
        "model E {\n input k: i32[B]\n param e: [5, 2] = normal(1.0)\n loss = sum(gather(e, k) * gather(e, k))\n}\n",
    )
    .expect("write");
    nnc(&["gradcheck", s(&f), "--wrt", "inputs"]).code(1).stderr_has("no float inputs");
    nnc(&["gradcheck", s(&f)]).code(0).stdout_has("checked 10 coordinates");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--params` and `--checkpoint` check at the given parameters: at W = 0 every
/// coordinate of relu(x @ W) sits at the kink, which random parameters never do.
#[test]
fn gradcheck_at_given_parameters() {
    let dir = scratch("gradcheck_params");
    let f = dir.join("kink.nn");
    std::fs::write(&f, "model K {\n input x: [B, 3]\n param W: [3, 2] = zeros\n loss = sum(relu(x @ W))\n}\n")
        .expect("write");
    nnc(&["gradcheck", s(&f)]).code(0).stdout_has("checked 6 coordinates (0 skipped at kinks)");
    let p = dir.join("zeros.safetensors");
    nnc(&["init", s(&f), "--out", s(&p)]).code(0);
    let o = nnc(&["gradcheck", s(&f), "--params", s(&p)]);
    o.code(1).stderr_has(&format!("at the parameters of {}", p.display())).stderr_has("no coordinate was checked");
    o.stdout_has("checked 0 coordinates (6 skipped at kinks)");
    // A trained checkpoint, with a note that its preprocessing is not applied.
    let run = dir.join("run");
    nnc(&["train", "examples/digits.nn", "--set", "epochs=1", "--out", s(&run)]).code(0);
    let ck = run.join("last.safetensors");
    let o = nnc(&["gradcheck", "examples/digits.nn", "--checkpoint", s(&ck), "--coords", "8"]);
    o.code(0).stderr_has("at the parameters of checkpoint").stderr_has("does not apply to random inputs");
    // Another model's parameters: a clear error naming what is missing.
    nnc(&["gradcheck", "examples/spirals.nn", "--checkpoint", s(&ck)]).code(1).stderr_has("does not fit this model");
    nnc(&["gradcheck", "examples/spirals.nn", "--params", s(&p)]).code(1).stderr_has("`W1` is missing");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad flags are usage errors (exit 2).
#[test]
fn gradcheck_bad_flags_are_usage_errors() {
    for args in [
        &["gradcheck", "examples/spirals.nn", "--method", "sideways"][..],
        &["gradcheck", "examples/spirals.nn", "--wrt", "labels"],
        &["gradcheck", "examples/spirals.nn", "--tol", "0"],
        &["gradcheck", "examples/spirals.nn", "--coords", "0"],
        &["gradcheck", "examples/spirals.nn", "--params", "a.safetensors", "--checkpoint", "b.safetensors"],
    ] {
        let o = nnc(args);
        o.code(2);
        assert!(o.stdout.is_empty(), "{}: {}", o.what, o.stdout);
    }
}

// ---- hostile inputs -------------------------------------------------------------------

/// Hostile files get exit 1 and a coded diagnostic, promptly, never a crash.
#[test]
fn hostile_files_exit_1_promptly() {
    let dir = scratch("hostile");
    let model = |body: &str| format!("model M {{\n    input x: [B, 4]\n{body}\n    output o = x\n}}\n");
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty.nn", String::new(), "error[E0200]"),
        ("comments.nn", "# nothing here\n".repeat(10), "error[E0200]"),
        ("garbage.nn", "@#$%^&*!~`".repeat(100_000), "error[E0100]"),
        ("parens.nn", model(&format!("    y = {}x{}", "(".repeat(100_000), ")".repeat(100_000))), "error[E0102]"),
        ("minus.nn", model(&format!("    y = {}x", "-".repeat(100_000))), "error[E0105]"),
        ("loop.nn", model("    for i in 0..1000000000 { y = x }"), "error[E0902]"),
        ("param.nn", model("    param W: [10000000, 10000000] = zeros"), "error[E0321]"),
        (
            "recursive.nn",
            "fn f(x: [N, 4]) -> [N, 4] { f(x) }\nmodel M {\n    input x: [B, 4]\n    output o = f(x)\n}\n".into(),
            "error[E0306]",
        ),
        ("number.nn", model("    y = x * 1e999"), "error[E0106]"),
    ];
    for (name, text, code) in cases {
        let f = dir.join(name);
        std::fs::write(&f, text).expect("write");
        let start = Instant::now();
        let o = nnc(&["check", s(&f)]);
        let took = start.elapsed();
        o.code(1).stderr_has(code).stderr_has(name);
        assert!(took < Duration::from_secs(5), "{name}: took {took:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The deepest nesting the limits allow (63 fns, each call under ~390 minus signs) needs
/// a deep stack; the binary runs the compiler on a big one, so it compiles.
#[test]
fn deep_inputs_compile_or_get_a_clear_error() {
    let dir = scratch("deepest");
    let mut src = String::new();
    for i in 0..63 {
        src.push_str(&format!("fn f{i}(x: [N, 4]) -> [N, 4] {{ {}f{}(x) }}\n", "-".repeat(390), i + 1));
    }
    src.push_str("fn f63(x: [N, 4]) -> [N, 4] { x }\nmodel M {\n    input x: [B, 4]\n    output o = f0(x)\n}\n");
    let f = dir.join("deepest.nn");
    std::fs::write(&f, src).expect("write");
    // 63 x 390 levels exceed the total evaluation depth: a clean error, not a crash.
    nnc(&["check", s(&f)]).code(1).stderr_has("E0905");
    let mut src = String::new();
    for i in 0..10 {
        src.push_str(&format!("fn f{i}(x: [N, 4]) -> [N, 4] {{ {}f{}(x) }}\n", "-".repeat(100), i + 1));
    }
    src.push_str("fn f10(x: [N, 4]) -> [N, 4] { x }\nmodel M {\n    input x: [B, 4]\n    output o = f0(x)\n}\n");
    std::fs::write(&f, src).expect("write");
    nnc(&["check", s(&f)]).code(0).stdout_has("model M ok");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every argument of every command has a one-line description in `--help`.
#[test]
fn every_argument_is_described() {
    let missing = nnc::internals::cli::undocumented_args();
    assert!(missing.is_empty(), "arguments without a description: {missing:?}");
}

/// The README's command table lists every command and every option of each.
#[test]
fn the_readme_table_matches_the_cli() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `nnc ")).collect();
    let mut problems = Vec::new();
    for (cmd, longs) in nnc::internals::cli::command_options() {
        let Some(row) =
            rows.iter().find(|r| r.starts_with(&format!("| `nnc {cmd} ")) || r.starts_with(&format!("| `nnc {cmd}`")))
        else {
            problems.push(format!("no row for `nnc {cmd}`"));
            continue;
        };
        for l in longs {
            if l == "color" {
                continue; // global, listed below the table
            }
            if !row.contains(&format!("--{l}")) {
                problems.push(format!("`nnc {cmd}` row lacks --{l}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn completions_and_manual_pages_come_from_the_same_definitions() {
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_nnc")).args(args).output().expect("run nnc");
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).to_string())
    };
    for shell in ["bash", "zsh", "fish"] {
        let (code, out) = run(&["completions", shell]);
        assert_eq!(code, 0, "{shell}");
        for word in ["train", "tune", "checkpoint", "space"] {
            assert!(out.contains(word), "{shell} completions lack {word}");
        }
    }
    let (code, out) = run(&["man", "tune"]);
    assert_eq!(code, 0);
    assert!(out.starts_with(".ie") && out.contains(".TH nnc-tune 1") && out.contains("\\-\\-space"), "{out}");
    let (code, out) = run(&["man"]);
    assert_eq!(code, 0);
    assert!(out.contains(".TH nnc 1") && out.contains("nnc\\-tune(1)"), "{}", &out[..out.len().min(400)]);
    assert_eq!(run(&["man", "bogus"]).0, 2);
}

/// `nnc plan` of a model trained by a host loop adds the optimizer's own state: BFGS's
/// inverse Hessian is n² f64 (3 parameters: 72 bytes), Newton's Hessian and factor twice that.
#[test]
fn plan_reports_a_host_optimizers_state() {
    let d = scratch("plan_host");
    let src = std::fs::read_to_string(root().join("examples/neuron.nn")).expect("neuron.nn");
    for (opt, bytes) in [("bfgs", 72), ("newton", 144), ("lbfgs", 2 * 10 * 3 * 8), ("newton_cg", 5 * 3 * 8)] {
        let f = d.join(format!("{opt}.nn"));
        std::fs::write(&f, src.replace("optimizer = sgd(lr = 0.5)", &format!("optimizer = {opt}"))).expect("write");
        nnc(&["plan", s(&f)])
            .code(0)
            .stdout_has(&format!("host optimizer {opt}: "))
            .stdout_has(&format!("its own state: {bytes} bytes"));
    }
    nnc(&["plan", s(&root().join("examples/neuron.nn"))]).code(0).stdout_lacks("host optimizer");
}

// ---- bench ----------------------------------------------------------------------------

/// `nnc bench` prints the training graph's node count (what tools/scaling.py plots compile
/// time against): an unrolled loop adds the same nodes per step, forward and backward.
#[test]
fn bench_prints_the_graph_size() {
    let dir = scratch("bench_graph");
    let counts: Vec<[usize; 3]> = [2, 4, 6]
        .iter()
        .map(|n| {
            let path = dir.join(format!("loop{n}.nn"));
            let src = format!(
                "model M {{\n input x: [B, 4]\n param w: [4, 4]\n h = x @ w\n \
                 for i in 0..{n} {{ h = h + 0.1 * tanh(h) }}\n loss = sum(h * h)\n}}\n"
            );
            std::fs::write(&path, src).expect("write the model");
            let out = nnc(&["bench", s(&path), "--batch", "3", "--steps", "1"]);
            out.code(0).stdout_has("graph: ");
            let line = out.stdout.lines().find(|l| l.starts_with("graph: ")).expect("a graph line");
            let nums: Vec<usize> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
            assert_eq!(nums.len(), 3, "{line}");
            [nums[0], nums[1], nums[2]]
        })
        .collect();
    for [nodes, simplified, kernels] in &counts {
        assert!(*simplified <= *nodes && *kernels >= 1, "{counts:?}");
    }
    let step = counts[1][0].saturating_sub(counts[0][0]);
    assert!(step > 0 && counts[2][0] == counts[1][0] + step, "nodes per loop step differ: {counts:?}");
}
