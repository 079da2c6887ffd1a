//! Robustness: no input makes nnc panic, overflow its stack, hang or allocate a huge
//! buffer.
//!
//! Two parts:
//! - `mutated_examples_*`: a deterministic mutation loop over every `examples/*.nn`
//!   (truncations, byte flips, token deletions and duplications, line swaps and splices,
//!   inserted ASCII and raw bytes). Every mutant must come back as `Ok` or as `Err` with
//!   at least one diagnostic whose spans lie inside their source text; rendering those
//!   diagnostics must not panic either. Mutants that are not UTF-8 go through the file
//!   path (`pipeline::compile_file`) and the binary.
//! - `pathological_*`: hostile inputs at and beyond the documented limits
//!   (`src/limits.rs`). Each must give a clear error (checked by code and message) within
//!   `PROMPT`, on a thread with an ordinary 8 MB stack, as a library user would call it.
//!
//! Set `NNC_FUZZ_SEED` to vary the mutants and `NNC_FUZZ_SCALE` (default 1) to run more.

use nnc::internals::diagnostic::{render, RenderOptions, SourceMap, Span};
use nnc::internals::pipeline::{self, CompileError, Compiled};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The stack a library user's thread typically has.
const STACK: usize = 8 << 20;
/// A pathological input must be answered within this (a hang guard, not a benchmark: a
/// quadratic pass over a megabyte takes minutes; a linear one about a second, several on a
/// loaded machine).
const PROMPT: Duration = Duration::from_secs(10);
/// After this, a case is declared hung and the test fails (instead of running forever).
const HANG: Duration = Duration::from_secs(60);
/// One mutant (a small file) taking longer than this is reported as a near-hang.
const MUTANT_SLOW: Duration = Duration::from_secs(2);

// ---- helpers ------------------------------------------------------------------------

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Every example: (file name, text), sorted by name.
fn examples() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).expect("examples/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("nn") {
            let name = path.file_name().and_then(|n| n.to_str()).expect("UTF-8 name").to_string();
            let text = std::fs::read_to_string(&path).expect("example is UTF-8");
            out.push((name, text));
        }
    }
    out.sort();
    assert!(out.len() >= 8, "expected the 8 examples of the language draft, found {}", out.len());
    out
}

/// A scratch directory for this test process.
fn scratch(sub: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnc-robustness-{}-{sub}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create a scratch directory");
    d
}

/// Shortens text for a failure message (keeps both ends).
fn excerpt(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut a = max / 2;
    while !s.is_char_boundary(a) {
        a -= 1;
    }
    let mut b = s.len() - max / 2;
    while !s.is_char_boundary(b) {
        b += 1;
    }
    format!("{}\n... [{} bytes cut] ...\n{}", &s[..a], b - a, &s[b..])
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic".to_string()
    }
}

/// A span must name a file of the map and lie on char boundaries inside its text.
fn check_span(sources: &SourceMap, span: Span, what: &str) -> Result<(), String> {
    let name = sources.name(span.file);
    if name == "<unknown>" {
        return Err(format!("{what}: span {span:?} names a file that is not in the source map"));
    }
    let text = sources.text(span.file);
    let (s, e) = (span.start as usize, span.end as usize);
    if s > e || e > text.len() {
        return Err(format!("{what}: span {s}..{e} lies outside `{name}` ({} bytes)", text.len()));
    }
    if !text.is_char_boundary(s) || !text.is_char_boundary(e) {
        return Err(format!("{what}: span {s}..{e} splits a UTF-8 character of `{name}`"));
    }
    Ok(())
}

/// The invariants of a failed compilation: at least one diagnostic, every span in range,
/// a stable-looking code, a non-empty message, and rendering that does not panic.
fn check_error(e: &CompileError) -> Result<(), String> {
    if e.diagnostics.is_empty() {
        return Err("an Err without any diagnostic".to_string());
    }
    for d in &e.diagnostics {
        let what = format!("error[{}] {:?}", d.code, d.message);
        let code_ok = d.code.len() == 5 && d.code.starts_with('E') && d.code[1..].bytes().all(|b| b.is_ascii_digit());
        if !code_ok {
            return Err(format!("{what}: malformed code"));
        }
        if d.code == "E0999" {
            return Err(format!("{what}: an internal parser error reached the user"));
        }
        if d.message.trim().is_empty() {
            return Err(format!("{what}: empty message"));
        }
        check_span(&e.sources, d.span, &what)?;
        for l in &d.labels {
            check_span(&e.sources, l.span, &format!("{what}, label {:?}", l.message))?;
        }
    }
    let text = render(&e.diagnostics, &e.sources, RenderOptions { color: false });
    if !text.contains("error[") {
        return Err(format!("rendered diagnostics lack `error[`: {}", excerpt(&text, 400)));
    }
    Ok(())
}

/// The invariants of a successful compilation: well-formed graphs that print and bind.
fn check_ok(c: &Compiled) -> Result<(), String> {
    for p in &c.programs {
        for g in [&p.train, &p.eval] {
            let problems = nnc::internals::ir::verify::verify(g);
            if !problems.is_empty() {
                return Err(format!("model {}: the IR verifier complains: {problems:?}", p.name));
            }
            let _ = nnc::internals::ir::print::print(g);
            if let Some(sym) = pipeline::batch_symbol(g) {
                let _ = nnc::internals::ir::bind_symbol(g, &sym, 32);
            }
        }
    }
    Ok(())
}

/// Compiles `text` (and parses it alone, the `--stage ast` path), catching panics.
fn compile_checked(name: &str, text: &str, dir: Option<&Path>) -> Result<(), String> {
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        match pipeline::parse_source(name, text) {
            Ok((_, ast)) => {
                let _ = nnc::internals::syntax::print::print(&ast);
            }
            Err(e) => check_error(&e).map_err(|m| format!("parse_source: {m}"))?,
        }
        match pipeline::compile_source(name, text, dir) {
            Ok(c) => check_ok(&c),
            Err(e) => check_error(&e).map_err(|m| format!("compile_source: {m}")),
        }
    }));
    match r {
        Ok(r) => r,
        Err(p) => Err(format!("PANIC: {}", panic_text(&*p))),
    }
}

/// Runs `f` on a fresh thread with an ordinary 8 MB stack and returns its value and how
/// long it took. Fails the test (naming `what`) if it panics or runs longer than `HANG`.
fn guarded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> (T, Duration) {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::Builder::new()
        .name(format!("guarded: {what}"))
        .stack_size(STACK)
        .spawn(move || {
            let r = panic::catch_unwind(AssertUnwindSafe(f));
            let _ = tx.send(r.map_err(|p| panic_text(&*p)));
        })
        .expect("spawn a thread");
    match rx.recv_timeout(HANG) {
        Ok(Ok(v)) => (v, start.elapsed()),
        Ok(Err(p)) => panic!("{what}: nnc panicked: {p}"),
        Err(_) => panic!("{what}: no answer after {HANG:?} (a hang)"),
    }
}

/// The outcome of compiling one pathological input, reduced to what the asserts need.
struct Outcome {
    /// None: it compiled.
    diagnostics: Option<Vec<(String, String)>>,
    /// `check_error`'s verdict.
    problem: Option<String>,
    rendered: String,
}

fn outcome(r: Result<Compiled, CompileError>) -> Outcome {
    match r {
        Ok(c) => Outcome { diagnostics: None, problem: check_ok(&c).err(), rendered: String::new() },
        Err(e) => Outcome {
            diagnostics: Some(e.diagnostics.iter().map(|d| (d.code.to_string(), d.message.clone())).collect()),
            problem: check_error(&e).err(),
            rendered: render(&e.diagnostics, &e.sources, RenderOptions { color: false }),
        },
    }
}

/// Asserts a failed outcome with a diagnostic whose code starts with one of `codes`
/// (`"E0102"`, or `"E04"` for any lowering error) and whose message contains `needle`,
/// answered within `PROMPT`.
fn assert_rejected(what: &str, o: &Outcome, took: Duration, codes: &[&str], needle: &str) {
    let Some(diags) = &o.diagnostics else { panic!("{what}: compiled, but should have been rejected") };
    if let Some(p) = &o.problem {
        panic!("{what}: bad diagnostics: {p}");
    }
    assert!(
        diags.iter().any(|(c, m)| codes.iter().any(|p| c.starts_with(p)) && m.contains(needle)),
        "{what}: expected error {codes:?} mentioning {needle:?}, got {:?}",
        diags.iter().map(|(c, m)| format!("{c}: {}", excerpt(m, 200))).collect::<Vec<_>>()
    );
    assert!(took < PROMPT, "{what}: took {took:?}, more than {PROMPT:?}");
}

/// Compiles `src` as a library user would (8 MB stack) and asserts a prompt, clear error.
fn expect_err(what: &str, src: String, codes: &[&str], needle: &str) {
    let (o, took) = guarded(what, move || outcome(pipeline::compile_source("patho.nn", &src, None)));
    assert_rejected(what, &o, took, codes, needle);
}

/// Like `expect_err`, for the parser alone (`nnc ir --stage ast`).
fn expect_parse_err(what: &str, src: String, codes: &[&str], needle: &str) {
    let (o, took) = guarded(what, move || match pipeline::parse_source("patho.nn", &src) {
        Ok(_) => Outcome { diagnostics: None, problem: None, rendered: String::new() },
        Err(e) => outcome(Err(e)),
    });
    assert_rejected(&format!("{what} (parse_source)"), &o, took, codes, needle);
}

/// Compiles `src` on an 8 MB stack and asserts it is accepted within `PROMPT`.
fn expect_ok(what: &str, src: String) {
    let (o, took) = guarded(what, move || outcome(pipeline::compile_source("limit.nn", &src, None)));
    if let Some(d) = &o.diagnostics {
        panic!("{what}: should compile, got {d:?}\n{}", excerpt(&o.rendered, 2000));
    }
    if let Some(p) = &o.problem {
        panic!("{what}: {p}");
    }
    assert!(took < PROMPT, "{what}: took {took:?}, more than {PROMPT:?}");
}

/// A model around some statements.
fn model(body: &str) -> String {
    format!("model M {{\n    input x: [B, 4]\n{body}\n    output o = x\n}}\n")
}

// ---- mutation ------------------------------------------------------------------------

/// Bytes a source may plausibly contain, weighted towards the grammar's punctuation.
const ASCII: &[u8] = b"()[]{}\n\n;;,,::==--++**//@@^^<>!.#\"\t\r _aBx019eE";
/// Snippets that poke at the grammar and the limits.
const SNIPPETS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "\n",
    ";",
    ",",
    ":",
    "..",
    "...",
    "=",
    "==",
    "<-",
    "->",
    "@",
    "^",
    "^-",
    "-",
    "!",
    "#",
    "\"",
    ".T",
    ".seq",
    "model",
    "layer",
    "fn",
    "use",
    "input",
    "output",
    "param",
    "state",
    "loss",
    "train",
    "for i in 0..3",
    "if training",
    "else",
    "training",
    "true",
    "false",
    "0",
    "-1",
    "1e999",
    "1e-999",
    "99999999999999999999",
    "9223372036854775807",
    "0.5",
    ".5",
    "1.",
    "B",
    "x",
    "h",
    "f32",
    "i32",
    "[B, 4]",
    "[...]",
    "[]",
    "[;]",
    "[0; 0]",
    "[Dense(4, 4); 3]",
    "Dense(4, 4)",
    "x[:, 0]",
    "x[::]",
    "x[0:0]",
    "sum(x, axis = 9)",
    "reshape(x, [-1])",
    "zeros([0])",
    "one_hot(y, 0)",
    "conv2d(x, x, 0, 0)",
    "maxpool2d(x, 0)",
    "use \"digits.nn\"",
    "use \"data\"",
    "use \"\"",
    "fn f(a: int) { a }",
    "layer L() {}",
    "model N {}",
    "\u{3c3}",
    "\u{2014}",
    "\u{feff}",
    "\u{0}",
];

/// Byte ranges of tokens: identifier/number runs, and single other characters
/// (whitespace is not a token).
fn tokens(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c.is_whitespace() {
            continue;
        }
        let mut end = i + c.len_utf8();
        if c.is_alphanumeric() || c == '_' || c == '.' {
            while let Some(&(j, d)) = it.peek() {
                if d.is_alphanumeric() || d == '_' || (d == '.' && c != '.') {
                    end = j + d.len_utf8();
                    it.next();
                } else {
                    break;
                }
            }
        }
        out.push((i, end));
    }
    out
}

/// A random char boundary of `s` (0..=len).
fn boundary(rng: &mut Rng, s: &str) -> usize {
    let mut i = rng.below(s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One random text-level mutation (the result is always UTF-8).
fn mutate_text(rng: &mut Rng, s: &str, others: &[(String, String)]) -> (String, String) {
    let mut t = s.to_string();
    let desc;
    match rng.below(10) {
        0 => {
            let toks = tokens(s);
            if toks.is_empty() {
                return (t, "no token to delete".into());
            }
            let (a, b) = *rng.pick(&toks);
            t.replace_range(a..b, "");
            desc = format!("delete token {:?} at {a}", &s[a..b]);
        }
        1 => {
            let toks = tokens(s);
            if toks.is_empty() {
                return (t, "no token to duplicate".into());
            }
            let (a, b) = *rng.pick(&toks);
            let n = 1 + rng.below(3);
            t.insert_str(b, &s[a..b].repeat(n));
            desc = format!("duplicate token {:?} at {a} x{n}", &s[a..b]);
        }
        2 => {
            let lines: Vec<&str> = s.split('\n').collect();
            let (i, j) = (rng.below(lines.len()), rng.below(lines.len()));
            let mut l = lines.clone();
            l.swap(i, j);
            t = l.join("\n");
            desc = format!("swap lines {} and {}", i + 1, j + 1);
        }
        3 => {
            let i = boundary(rng, s);
            let c = *rng.pick(ASCII) as char;
            t.insert(i, c);
            desc = format!("insert {c:?} at {i}");
        }
        4 => {
            let i = boundary(rng, s);
            let mut ins = String::new();
            for _ in 0..1 + rng.below(8) {
                ins.push((0x20 + rng.below(0x5f)) as u8 as char);
            }
            t.insert_str(i, &ins);
            desc = format!("insert {ins:?} at {i}");
        }
        5 | 6 => {
            let i = boundary(rng, s);
            let snip = *rng.pick(SNIPPETS);
            t.insert_str(i, snip);
            desc = format!("insert {snip:?} at {i}");
        }
        7 => {
            // Replace one char by a random printable ASCII char.
            let i = boundary(rng, s);
            if i < s.len() {
                let c = s[i..].chars().next().map_or(1, char::len_utf8);
                let r = (0x20 + rng.below(0x5f)) as u8 as char;
                t.replace_range(i..i + c, &r.to_string());
                desc = format!("replace the char at {i} by {r:?}");
            } else {
                desc = "replace nothing".into();
            }
        }
        8 => {
            // Splice a line of another example over one of this one.
            let (_, other) = rng.pick(others);
            let ol: Vec<&str> = other.split('\n').collect();
            let mut l: Vec<&str> = s.split('\n').collect();
            let i = rng.below(l.len());
            let o = *rng.pick(&ol);
            l[i] = o;
            t = l.join("\n");
            desc = format!("line {} := {o:?}", i + 1);
        }
        _ => {
            // Delete a random range.
            let a = boundary(rng, s);
            let mut b = (a + 1 + rng.below(40)).min(s.len());
            while !s.is_char_boundary(b) {
                b += 1;
            }
            t.replace_range(a..b, "");
            desc = format!("delete bytes {a}..{b}");
        }
    }
    (t, desc)
}

/// One random byte-level mutation; the result may not be UTF-8.
fn mutate_bytes(rng: &mut Rng, s: &[u8]) -> (Vec<u8>, String) {
    let mut t = s.to_vec();
    if rng.below(2) == 0 && !t.is_empty() {
        let i = rng.below(t.len());
        let bit = rng.below(8);
        t[i] ^= 1 << bit;
        (t, format!("flip bit {bit} of byte {i}"))
    } else {
        let i = rng.below(t.len() + 1);
        let n = 1 + rng.below(4);
        let ins: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        t.splice(i..i, ins.iter().copied());
        (t, format!("insert bytes {ins:02x?} at {i}"))
    }
}

/// Collects failures of the mutation loop; fails the test with the first few.
#[derive(Default)]
struct Failures {
    list: Vec<String>,
    count: usize,
}

impl Failures {
    fn add(&mut self, what: String, text: &str, why: String) {
        self.count += 1;
        if self.list.len() < 8 {
            self.list.push(format!("--- {what}: {why}\n{}\n", excerpt(text, 1500)));
        }
    }
    fn finish(self, total: usize, label: &str) {
        assert!(
            self.count == 0,
            "{label}: {} of {total} mutants failed; the first ones:\n{}",
            self.count,
            self.list.join("\n")
        );
    }
}

/// Where a long loop reports what it is working on.
struct Progress {
    tx: mpsc::Sender<Option<Result<(), String>>>,
    current: Arc<Mutex<String>>,
}

impl Progress {
    fn working_on(&self, what: &str, text: &str) {
        if let Ok(mut c) = self.current.lock() {
            c.clear();
            c.push_str(what);
            c.push('\n');
            c.push_str(text);
        }
        let _ = self.tx.send(None);
    }
}

/// Runs `body` on an 8 MB thread. If one input takes longer than `HANG` (no progress
/// reported for that long), fails the test with that input instead of hanging.
fn with_hang_guard(label: &str, body: impl FnOnce(&Progress) + Send + 'static) {
    let current = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let progress = Progress { tx: tx.clone(), current: current.clone() };
    std::thread::Builder::new()
        .name(label.to_string())
        .stack_size(STACK)
        .spawn(move || {
            let r = panic::catch_unwind(AssertUnwindSafe(|| body(&progress)));
            let _ = tx.send(Some(r.map_err(|p| panic_text(&*p))));
        })
        .expect("spawn a thread");
    loop {
        match rx.recv_timeout(HANG) {
            Ok(None) => {}
            Ok(Some(Ok(()))) => return,
            Ok(Some(Err(p))) => panic!("{p}"),
            Err(_) => {
                let c = current.lock().map(|c| c.clone()).unwrap_or_default();
                panic!("{label}: no answer after {HANG:?}; working on:\n{}", excerpt(&c, 3000));
            }
        }
    }
}

/// Compiles one text mutant, recording a failure if it panics, breaks an invariant or
/// is slow.
fn try_mutant(progress: &Progress, fails: &mut Failures, what: String, text: &str) {
    progress.working_on(&what, text);
    let start = Instant::now();
    let r = compile_checked("mutant.nn", text, Some(&examples_dir()));
    let took = start.elapsed();
    if let Err(why) = r {
        fails.add(what, text, why);
    } else if took > MUTANT_SLOW {
        fails.add(what, text, format!("took {took:?}"));
    }
}

#[test]
fn mutated_examples_truncated() {
    with_hang_guard("truncations", |progress| {
        let mut fails = Failures::default();
        let mut total = 0;
        let scale = env_u64("NNC_FUZZ_SCALE", 1) as usize;
        for (name, text) in examples() {
            // ~150 cut points per example, evenly spread, plus every cut in the first line
            // after the header comment (where the item keyword starts).
            let step = (text.len() / (150 * scale)).max(1);
            let mut cuts: Vec<usize> = (0..=text.len()).step_by(step).collect();
            let first = text.find("\nmodel").or_else(|| text.find("\nlayer")).unwrap_or(0);
            cuts.extend(first..(first + 24).min(text.len()));
            cuts.sort_unstable();
            cuts.dedup();
            for cut in cuts {
                let mut c = cut;
                while !text.is_char_boundary(c) {
                    c -= 1;
                }
                total += 1;
                try_mutant(progress, &mut fails, format!("{name} truncated at byte {c}"), &text[..c]);
            }
        }
        fails.finish(total, "truncations");
    });
}

#[test]
fn mutated_examples_random() {
    with_hang_guard("random mutations", |progress| {
        let seed = env_u64("NNC_FUZZ_SEED", 0x6e6e63);
        let per_example = 600 * env_u64("NNC_FUZZ_SCALE", 1) as usize;
        let exs = examples();
        let mut rng = Rng::new(seed);
        let mut fails = Failures::default();
        let mut total = 0;
        for (name, text) in &exs {
            for k in 0..per_example {
                // Mostly one mutation; sometimes a stack of up to six.
                let n = if k % 4 == 3 { 2 + rng.below(5) } else { 1 };
                let mut t = text.clone();
                let mut descs = Vec::new();
                for _ in 0..n {
                    let (nt, d) = mutate_text(&mut rng, &t, &exs);
                    t = nt;
                    descs.push(d);
                }
                total += 1;
                try_mutant(progress, &mut fails, format!("{name} (seed {seed:#x}, #{k}): {}", descs.join("; ")), &t);
            }
        }
        fails.finish(total, "random mutations");
    });
}

/// Byte-level mutants: valid UTF-8 ones go through `compile_source`, the others through
/// the file path, which must reject them with a clear E0107 naming the file.
#[test]
fn mutated_examples_bytes() {
    with_hang_guard("byte mutations", |progress| {
        let seed = env_u64("NNC_FUZZ_SEED", 0x6e6e63) ^ 0xb17e;
        let per_example = 200 * env_u64("NNC_FUZZ_SCALE", 1) as usize;
        let dir = scratch("bytes");
        let mut rng = Rng::new(seed);
        let mut fails = Failures::default();
        let mut total = 0;
        let mut invalid = 0;
        for (name, text) in examples() {
            for k in 0..per_example {
                let (bytes, desc) = mutate_bytes(&mut rng, text.as_bytes());
                let what = format!("{name} (seed {seed:#x}, #{k}): {desc}");
                total += 1;
                match std::str::from_utf8(&bytes) {
                    Ok(t) => try_mutant(progress, &mut fails, what, t),
                    Err(_) => {
                        invalid += 1;
                        // Every invalid mutant through the read path would be slow; a
                        // third of them is plenty.
                        if invalid % 3 != 0 {
                            continue;
                        }
                        let lossy = String::from_utf8_lossy(&bytes).to_string();
                        progress.working_on(&what, &lossy);
                        let path = dir.join(format!("m{k}-{name}"));
                        std::fs::write(&path, &bytes).expect("write a mutant");
                        let r = panic::catch_unwind(AssertUnwindSafe(|| pipeline::compile_file(&path)));
                        let why = match r {
                            Err(p) => Some(format!("PANIC: {}", panic_text(&*p))),
                            Ok(Ok(_)) => Some("invalid UTF-8 was accepted".to_string()),
                            Ok(Err(e)) => check_error(&e).err().or_else(|| {
                                let d = &e.diagnostics[0];
                                let clear = d.code == "E0107"
                                    && d.message.contains("not valid UTF-8")
                                    && d.message.contains(&path.display().to_string());
                                (!clear).then(|| format!("unclear error: {}: {}", d.code, d.message))
                            }),
                        };
                        if let Some(why) = why {
                            fails.add(what, &lossy, why);
                        }
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert!(invalid > 0, "the byte mutations never produced invalid UTF-8");
        fails.finish(total, "byte mutations");
    });
}

/// A few invalid-UTF-8 mutants through the binary: exit 1, the file named, no panic.
#[test]
fn invalid_utf8_through_the_binary() {
    let dir = scratch("binary");
    let mut rng = Rng::new(env_u64("NNC_FUZZ_SEED", 0x6e6e63) ^ 0xb1);
    for (name, text) in examples() {
        let mut bytes = text.into_bytes();
        let at = rng.below(bytes.len());
        bytes.splice(at..at, [0xff, 0xc3]);
        let path = dir.join(&name);
        std::fs::write(&path, &bytes).expect("write a mutant");
        let start = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nnc"))
            .args(["--color", "never", "check"])
            .arg(&path)
            .output()
            .expect("run nnc");
        let took = start.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name} with bytes ff c3 at {at}: stderr:\n{err}");
        assert!(err.contains("not valid UTF-8") && err.contains(&name), "{name}: unclear message:\n{err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(took < PROMPT, "{name}: took {took:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--set key=value` parses one expression: the same mutants must not panic there.
#[test]
fn mutated_expressions() {
    with_hang_guard("expression mutations", |progress| {
        let seeds = [
            "adam(lr = 1e-3, beta1 = 0.9)",
            "[0.8, 0.1, 0.1]",
            "cosine(warmup = 100, min_lr = 1e-5)",
            "csv(\"data/digits.csv.gz\", label = -1)",
            "x[:, t, 0:4:2] @ W.T + b ^ -2",
        ];
        let others: Vec<(String, String)> = seeds.iter().map(|s| (String::new(), s.to_string())).collect();
        let mut rng = Rng::new(env_u64("NNC_FUZZ_SEED", 0x6e6e63) ^ 0xe);
        let mut fails = Failures::default();
        let mut total = 0;
        for s in seeds {
            for k in 0..200 {
                let (t, d) = mutate_text(&mut rng, s, &others);
                progress.working_on(&d, &t);
                total += 1;
                let r = panic::catch_unwind(AssertUnwindSafe(|| {
                    let mut sources = SourceMap::default();
                    let id = sources.add("--set", t.as_str());
                    match nnc::internals::syntax::parse_expr(&t, id) {
                        Ok(e) => {
                            let _ = nnc::internals::syntax::print::expr(&e);
                            Ok(())
                        }
                        Err(d) => check_error(&CompileError { sources, diagnostics: vec![d] }),
                    }
                }));
                let why = match r {
                    Ok(Ok(())) => continue,
                    Ok(Err(m)) => m,
                    Err(p) => format!("PANIC: {}", panic_text(&*p)),
                };
                fails.add(format!("{s:?} #{k}: {d}"), &t, why);
            }
        }
        fails.finish(total, "expression mutations");
    });
}

/// Every example compiles on an ordinary 8 MB stack (the baseline for the mutants).
#[test]
fn examples_compile_on_a_small_stack() {
    for (name, text) in examples() {
        let dir = examples_dir();
        let label = name.clone();
        let (r, took) = guarded(&label, move || {
            let r = pipeline::compile_source(&name, &text, Some(&dir));
            r.map(|c| check_ok(&c)).map_err(|e| render(&e.diagnostics, &e.sources, RenderOptions { color: false }))
        });
        match r {
            Ok(Ok(())) => {}
            Ok(Err(p)) => panic!("{p}"),
            Err(d) => panic!("an example does not compile:\n{d}"),
        }
        assert!(took < PROMPT, "took {took:?}");
    }
}

// ---- pathological inputs ----------------------------------------------------------------

#[test]
fn pathological_empty_and_comments() {
    expect_err("an empty file", String::new(), &["E0200"], "no `model`");
    expect_err("only comments", "# one\n# two\n\n   # three".into(), &["E0200"], "no `model`");
    expect_err("only whitespace", " \n\t\r\n ;;\n".into(), &["E0200", "E0100"], "");
    expect_err("a million comment lines", "#\n".repeat(500_000), &["E0200"], "no `model`");
}

#[test]
fn pathological_megabyte_lines() {
    // `x = 1 + 1 + ...`, one megabyte on one line inside a model: too deep a chain.
    let chain = format!("    x = 1{}", " + 1".repeat(250_000));
    expect_err("a 1 MB chain of `+`", model(&chain), &["E0105"], "nested more than");
    // One megabyte of garbage: a syntax error at the first byte.
    expect_err("1 MB of punctuation", "@#$%^&*!~`".repeat(100_000), &["E0100"], "syntax error");
    expect_parse_err("1 MB of punctuation", "@#$%^&*!~`".repeat(100_000), &["E0100"], "syntax error");
    // One megabyte of random printable ASCII: rejected by the syntax stage.
    let mut rng = Rng::new(1);
    let garbage: String = (0..1 << 20).map(|_| (0x20 + rng.below(0x5f)) as u8 as char).collect();
    expect_err("1 MB of random ASCII", garbage, &["E0100", "E0102", "E0109"], "");
    // One megabyte of identifiers and commas in a call: long but shallow.
    let args = vec!["x"; 200_000].join(", ");
    expect_err("a call with 200k arguments", model(&format!("    y = sum({args})")), &["E04"], "");
    // One megabyte of statements: each fine, the model is just long.
    let stmts = "    h = x\n".repeat(100_000);
    expect_ok("100k statements", model(&stmts));
    // A megabyte-long name: the "did you mean" search must not be quadratic in it.
    let long = "a".repeat(1 << 20);
    expect_err("a 1 MB name", model(&format!("    y = {long}")), &["E0201"], "unknown name");
    // A megabyte-long string.
    let s = format!("    y = \"{}\"", "s".repeat(1 << 20));
    let (o, took) = guarded("a 1 MB string", move || outcome(pipeline::compile_source("s.nn", &model(&s), None)));
    assert!(o.problem.is_none(), "{:?}", o.problem);
    assert!(took < PROMPT, "a 1 MB string took {took:?}");
}

#[test]
fn pathological_nesting() {
    let deep = |open: &str, inner: &str, close: &str, n: usize| {
        model(&format!("    y = {}{inner}{}", open.repeat(n), close.repeat(n)))
    };
    expect_err("100k parentheses", deep("(", "x", ")", 100_000), &["E0102"], "nested more than");
    expect_parse_err("100k parentheses", deep("(", "x", ")", 100_000), &["E0102"], "nested more than");
    expect_err("10k nested lists", deep("[", "1", "]", 10_000), &["E0102"], "nested more than");
    expect_err("10k nested calls", deep("relu(", "x", ")", 10_000), &["E0102"], "nested more than");
    expect_err("100k unclosed `(`", model(&format!("    y = {}", "(".repeat(100_000))), &["E0102"], "");
    expect_err("100k stray `)`", model(&format!("    y = x{}", ")".repeat(100_000))), &["E0109"], "");
    let blocks = format!("model M {{\n{}\n}}", "    if training {\n".repeat(10_000) + &"}\n".repeat(10_000));
    expect_err("10k nested blocks", blocks, &["E0102"], "nested more than");
    expect_err("100k unary minus", model(&format!("    y = {}x", "-".repeat(100_000))), &["E0105"], "nested more than");
    expect_parse_err(
        "100k unary minus",
        model(&format!("    y = {}x", "-".repeat(100_000))),
        &["E0105"],
        "nested more than",
    );
    expect_err(
        "a^a^... 100k long",
        model(&format!("    y = x{}", "^x".repeat(100_000))),
        &["E0105"],
        "nested more than",
    );
    expect_err(
        "x^-x^-x... 50k long",
        model(&format!("    y = x{}", "^-x".repeat(50_000))),
        &["E0105"],
        "nested more than",
    );
    expect_err("100k `.T`", model(&format!("    y = x{}", ".T".repeat(100_000))), &["E0105"], "nested more than");
    expect_err(
        "100k calls `f()()()`",
        model(&format!("    y = x{}", "()".repeat(100_000))),
        &["E0105"],
        "nested more than",
    );
    expect_err("100k indexes", model(&format!("    y = x{}", "[0]".repeat(100_000))), &["E0105"], "nested more than");
    expect_err("1e999", model("    y = x * 1e999"), &["E0106"], "too large");
    expect_err("1e99999999999", model("    y = x * 1e99999999999"), &["E0106"], "too large");
    expect_err("a 400-digit number", model(&format!("    y = x * 1{}", "0".repeat(400))), &["E0106"], "too large");
}

/// The deepest inputs within the limits must compile, on an ordinary 8 MB stack.
#[test]
fn deepest_accepted_inputs_fit_an_8mb_stack() {
    // 99 nested parentheses (the bracket limit is 100, counting the model's `{`).
    expect_ok("98 parentheses", model(&format!("    y = {}x{}", "(".repeat(98), ")".repeat(98))));
    // Expression depth just under the limit, in each shape the parser folds.
    expect_ok("390 unary minus", model(&format!("    y = {}x", "-".repeat(390))));
    expect_ok("390 `+`", model(&format!("    y = x{}", " + x".repeat(390))));
    expect_ok("390 `^`", model(&format!("    y = x{}", " ^ 1".repeat(390))));
    expect_ok("95 nested calls", model(&format!("    y = {}x{}", "relu(".repeat(95), ")".repeat(95))));
    // A chain of 60 fns (the call limit is 64), called in a loop.
    let mut chain = String::new();
    for i in 0..60 {
        chain.push_str(&format!("fn f{i}(x: [N, 4]) -> [N, 4] {{ f{}(x) }}\n", i + 1));
    }
    chain.push_str("fn f60(x: [N, 4]) -> [N, 4] { relu(x) }\n");
    chain
        .push_str("model M {\n    input x: [B, 4]\n    h = x\n    for i in 0..16 { h = f0(h) }\n    output o = h\n}\n");
    expect_ok("60 nested fn calls", chain);
    // 60 nested layers.
    let mut layers = String::new();
    for i in 0..60 {
        layers.push_str(&format!(
            "layer L{i}() {{\n    layer inner = L{}()\n    fn forward(x: [..., 4]) -> [..., 4] {{ inner(x) }}\n}}\n",
            i + 1
        ));
    }
    layers
        .push_str("layer L60() {\n    layer fc = Dense(4, 4)\n    fn forward(x: [..., 4]) -> [..., 4] { fc(x) }\n}\n");
    layers.push_str("model M {\n    input x: [B, 4]\n    layer l = L0()\n    output o = l(x)\n}\n");
    expect_ok("60 nested layers", layers);
}

#[test]
fn pathological_limits() {
    expect_err(
        "a 10^9-iteration loop",
        model("    h = x\n    for i in 0..1000000000 { h = h + 1 }"),
        &["E0902"],
        "limit is",
    );
    expect_err(
        "a loop over all of i64",
        model("    for i in -9223372036854775807..9223372036854775807 { h = x }"),
        &["E0902", "E0408"],
        "",
    );
    expect_err(
        "a parameter with 10^14 elements",
        model("    param W: [10000000, 10000000] = zeros"),
        &["E0321"],
        "the limit is",
    );
    expect_err(
        "a parameter whose element count overflows i64",
        model("    param W: [4000000000, 4000000000, 4000000000] = zeros"),
        &["E0321"],
        "limit",
    );
    expect_err(
        "a parameter of rank 20",
        model(&format!("    param W: [{}] = zeros", vec!["1"; 20].join(", "))),
        &["E0314"],
        "rank 20",
    );
    expect_err(
        "an input with 10^14 elements per sample",
        model("    input z: [B, 10000000, 10000000]"),
        &["E0321"],
        "",
    );
    expect_err("zeros of 10^10 elements", model("    z = zeros([100000, 100000])"), &["E0321"], "limit is");
    expect_err("a 10^9-copy layer array", model("    layer ls = [Dense(4, 4); 1000000000]"), &["E0311"], "copies");
    expect_err("a layer array of 0 copies", model("    layer ls = [Dense(4, 4); 0]"), &["E0311"], "copies");
    expect_err("an embedding of 2^32 rows", model("    layer e = Embedding(2147483647, 2)"), &["E0321"], "limit is");
    expect_err(
        "a dim that overflows",
        model("    param W: [4611686018427387904 * 4] = zeros"),
        &["E0409", "E0412"],
        "",
    );
    expect_err("a dim divided by zero", model("    param W: [4 / 0] = zeros"), &["E0413"], "division by zero");
    expect_err(
        "a pooling window of 10^9",
        "model M {\n    input x: [B, 1, 28, 28]\n    output o = maxpool2d(x, 1000000000)\n}\n".into(),
        &["E0446"],
        "",
    );
    expect_err(
        "a conv with padding 10^9",
        "model M {\n    input x: [B, 1, 28, 28]\n    layer c = Conv2d(1, 8, 3, padding = 1000000000)\n    output o = c(x)\n}\n".into(),
        &["E0446"],
        "",
    );
}

#[test]
fn pathological_recursion() {
    expect_err(
        "a recursive fn",
        "fn f(x: [N, 4]) -> [N, 4] { f(x) }\nmodel M {\n    input x: [B, 4]\n    output o = f(x)\n}\n".into(),
        &["E0306"],
        "cannot recurse",
    );
    expect_err(
        "a recursive fn on compile-time ints",
        "fn f(n: int) { if n > 0 { f(n - 1) + f(n - 1) } else { 1 } }\nmodel M {\n    input x: [B, 4]\n    y = f(60)\n    output o = x\n}\n"
            .into(),
        &["E0306"],
        "cannot recurse",
    );
    expect_err(
        "two mutually recursive fns",
        "fn f(x: [N, 4]) -> [N, 4] { g(x) }\nfn g(x: [N, 4]) -> [N, 4] { f(x) }\nmodel M {\n    input x: [B, 4]\n    output o = f(x)\n}\n"
            .into(),
        &["E0306"],
        "cannot recurse",
    );
    expect_err(
        "a local fn that calls itself",
        model("    fn f(a: [N, 4]) -> [N, 4] { f(a) }\n    y = f(x)"),
        &["E0306"],
        "cannot recurse",
    );
    expect_err(
        "a layer that instantiates itself",
        "layer L(n: int) {\n    layer me = L(n)\n    fn forward(x: [..., n]) -> [..., n] { x }\n}\nmodel M {\n    input x: [B, 4]\n    layer l = L(4)\n    output o = l(x)\n}\n"
            .into(),
        &["E0306"],
        "contains itself",
    );
    expect_err(
        "two layers that instantiate each other",
        "layer A() {\n    layer b = B2()\n}\nlayer B2() {\n    layer a = A()\n}\nmodel M {\n    input x: [B, 4]\n    layer l = A()\n    output o = x\n}\n"
            .into(),
        &["E0306"],
        "contains itself",
    );
    expect_err(
        "a layer whose forward calls itself",
        "layer L() {\n    fn forward(x: [..., 4]) -> [..., 4] { forward(x) }\n}\nmodel M {\n    input x: [B, 4]\n    layer l = L()\n    output o = l(x)\n}\n"
            .into(),
        &["E0306"],
        "",
    );
    // A chain of 1000 fns: deeper than the call limit.
    let mut chain = String::new();
    for i in 0..1000 {
        chain.push_str(&format!("fn f{i}(x: [N, 4]) -> [N, 4] {{ f{}(x) }}\n", i + 1));
    }
    chain.push_str("fn f1000(x: [N, 4]) -> [N, 4] { x }\nmodel M {\n    input x: [B, 4]\n    output o = f0(x)\n}\n");
    expect_err("a chain of 1000 fn calls", chain, &["E0903", "E0905"], "nest");
    // The same chain, each link deep in an expression: the stack must still hold.
    let mut chain = String::new();
    for i in 0..1000 {
        chain.push_str(&format!(
            "fn f{i}(x: [N, 4]) -> [N, 4] {{ {}f{}(x){} }}\n",
            "relu(".repeat(90),
            i + 1,
            ")".repeat(90)
        ));
    }
    chain.push_str("fn f1000(x: [N, 4]) -> [N, 4] { x }\nmodel M {\n    input x: [B, 4]\n    output o = f0(x)\n}\n");
    expect_err("a chain of 1000 fn calls, each 90 calls deep", chain, &["E0903", "E0905"], "nest");
    // A chain of 1000 layers, each instantiating the next.
    let mut layers = String::new();
    for i in 0..1000 {
        layers.push_str(&format!("layer L{i}() {{\n    layer inner = L{}()\n}}\n", i + 1));
    }
    layers.push_str("layer L1000() {\n}\nmodel M {\n    input x: [B, 4]\n    layer l = L0()\n    output o = x\n}\n");
    expect_err("a chain of 1000 layers", layers, &["E0903", "E0905"], "nest");
}

#[test]
fn pathological_files() {
    let dir = scratch("files");
    let compile = |what: &str, path: PathBuf| guarded(what, move || outcome(pipeline::compile_file(&path)));
    // `use` of a missing file: the message names it.
    let f = dir.join("missing.nn");
    std::fs::write(&f, "use \"no_such_file.nn\"\n".to_string() + &model("")).expect("write");
    let (o, took) = compile("use of a missing file", f);
    assert_rejected("use of a missing file", &o, took, &["E0107"], "no_such_file.nn");
    // Two files that use each other (only one defines a model): the cycle is cut.
    let a = dir.join("cycle_a.nn");
    let b = dir.join("cycle_b.nn");
    std::fs::write(&a, "use \"cycle_b.nn\"\n".to_string() + &model("    y = helper(x)")).expect("write");
    std::fs::write(&b, "use \"cycle_a.nn\"\nfn helper(x: [N, 4]) -> [N, 4] { relu(x) }\n").expect("write");
    let (o, took) = compile("two files that use each other", a);
    assert!(o.problem.is_none(), "a use cycle: {:?}", o.problem);
    assert!(took < PROMPT, "a use cycle took {took:?}");
    // A file that uses itself: answered promptly, with well-formed diagnostics if any.
    let me = dir.join("self_use.nn");
    std::fs::write(&me, "use \"self_use.nn\"\n".to_string() + &model("")).expect("write");
    let (o, took) = compile("a file that uses itself", me);
    assert!(o.problem.is_none(), "a file that uses itself: {:?}", o.problem);
    assert!(took < PROMPT, "a file that uses itself took {took:?}");
    // A chain of 100 files, each using the next: more than MAX_FILES.
    for i in 0..100 {
        std::fs::write(dir.join(format!("chain{i}.nn")), format!("use \"chain{}.nn\"\n", i + 1)).expect("write");
    }
    std::fs::write(dir.join("chain100.nn"), "").expect("write");
    let top = dir.join("chain_top.nn");
    std::fs::write(&top, "use \"chain0.nn\"\n".to_string() + &model("")).expect("write");
    let (o, took) = compile("a chain of 100 `use`d files", top);
    assert_rejected("a chain of 100 `use`d files", &o, took, &["E0108"], "files are `use`d");
    // `use` of a directory, and of a file that is not UTF-8.
    let f = dir.join("use_dir.nn");
    std::fs::write(&f, "use \".\"\n".to_string() + &model("")).expect("write");
    let (o, took) = compile("use of a directory", f);
    assert_rejected("use of a directory", &o, took, &["E0107"], "directory");
    std::fs::write(dir.join("latin1.nn"), b"fn caf\xe9() { 1 }\n").expect("write");
    let f = dir.join("use_latin1.nn");
    std::fs::write(&f, "use \"latin1.nn\"\n".to_string() + &model("")).expect("write");
    let (o, took) = compile("use of a file that is not UTF-8", f);
    assert_rejected("use of a file that is not UTF-8", &o, took, &["E0107"], "not valid UTF-8");
    // A source over the size limit is refused before it is read whole.
    let big = dir.join("big.nn");
    let file = std::fs::File::create(&big).expect("create");
    file.set_len(64 << 20).expect("a sparse 64 MB file");
    let (o, took) = compile("a 64 MB file", big);
    assert_rejected("a 64 MB file", &o, took, &["E0107"], "the limit for a source file");
    // The same through the string API.
    let huge = " ".repeat(nnc::internals::limits::MAX_SOURCE_BYTES + 1);
    expect_err("a 8 MB + 1 string", huge, &["E0101"], "the limit is");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Inputs found by this suite and fixed since: each must now be rejected promptly.
#[test]
fn pathological_fixed_regressions() {
    // Deep expressions inside a long chain of fns: within each limit, too deep in all.
    let mut chain = String::new();
    let minus = "-".repeat(390);
    for i in 0..32 {
        chain.push_str(&format!("fn f{i}(x: [N, 4]) -> [N, 4] {{ {minus}f{}(x) }}\n", i + 1));
    }
    chain.push_str("fn f32(x: [N, 4]) -> [N, 4] { x }\nmodel M {\n    input x: [B, 4]\n    output o = f0(x)\n}\n");
    expect_err("deep expressions across 32 fns", chain, &["E0905"], "nest more than");
    expect_err(
        "nested loops of 10^10 iterations in all",
        model("    for i in 0..100000 { for j in 0..100000 { k = 1 } }"),
        &["E0902"],
        "iterations in all",
    );
    expect_err(
        "nested layer arrays of 10^6 instances",
        "layer Inner() { fn forward(x: [..., 4]) -> [..., 4] { x } }\nlayer Outer() { layer a = [Inner(); 1000] }\nmodel M {\n    input x: [B, 4]\n    layer b = [Outer(); 1000]\n    output o = x\n}\n".into(),
        &["E0904"],
        "layer instances",
    );
    expect_err(
        "a zero input dim",
        "model M {\n    input x: [B, 0]\n    output o = x\n}\n".into(),
        &["E0320"],
        "at least 1",
    );
    expect_err(
        "a negative input dim",
        "model M {\n    input x: [B, -4]\n    output o = x\n}\n".into(),
        &["E0320"],
        "at least 1",
    );
}

/// A file that `use`s itself is read once.
#[test]
fn use_of_itself_is_read_once() {
    let dir = scratch("self_use");
    let path = dir.join("self.nn");
    std::fs::write(&path, "use \"self.nn\"\nmodel M {\n    input x: [B, 4]\n    output o = x\n}\n").expect("write");
    assert!(nnc::internals::pipeline::compile_file(&path).is_ok(), "a self-use must not define M twice");
}
