//! The front end as a straight list of stages, and the step graph: read and parse the
//! file and the files it `use`s, add the prelude, lower every model (`lower`), verify the
//! IR (`ir::verify`): `compile_file` / `compile_source` return one `Program` per model.
//! `step_graph` continues the line for one batch size: the backward pass
//! (`autodiff`) and the optimizer update (`optim::update`); `Executable::new` then
//! simplifies, fuses, plans and compiles it (`simplify`, `fusion`, `buffers`, `codegen`).

use crate::diagnostic::{Diagnostic, FileId, SourceMap, Span};
use crate::ir::{Graph, Program};
use crate::lower::{self, Items};
use crate::syntax::{self, ast};
use std::path::{Path, PathBuf};

/// The prelude's source, compiled into the binary.
pub const PRELUDE: &str = include_str!("prelude.nn");
/// Most files one compilation may `use` (transitively).
pub const MAX_FILES: usize = 64;

/// A successful compilation: the sources (for later diagnostics) and one program per model.
pub struct Compiled {
    pub sources: SourceMap,
    pub programs: Vec<Program>,
}

/// A failed compilation: every diagnostic, and the sources to render them against.
pub type CompileError = crate::error::CompileErrors;

impl From<CompileError> for crate::Error {
    fn from(e: CompileError) -> crate::Error {
        crate::Error::Compile(Box::new(e))
    }
}

/// Parses one source text (no `use` resolution, no prelude): the `--stage ast` view.
pub fn parse_source(name: &str, text: &str) -> Result<(SourceMap, ast::File), CompileError> {
    let mut sources = SourceMap::default();
    let id = sources.add(name, text);
    match syntax::parse(text, id) {
        Ok(f) => Ok((sources, f)),
        Err(d) => Err(CompileError { sources, diagnostics: vec![d] }),
    }
}

/// Compiles source text. `use` paths are resolved against `dir`, when given.
pub fn compile_source(name: &str, text: &str, dir: Option<&Path>) -> Result<Compiled, CompileError> {
    finish(compile_source_at(name, text, dir, None, &[])?)
}

/// The front end's last pass, once per program, after its settings are final: the
/// quantization-aware rewrite of a `quantize = qat` recipe (`compress::quantize`).
fn finish(mut c: Compiled) -> Result<Compiled, CompileError> {
    for p in &mut c.programs {
        match crate::compress::quantize::with_qat(p) {
            Ok(q) => *p = q,
            Err(m) => {
                let span = p.train.inputs.first().map(|i| i.span).unwrap_or_default();
                return Err(CompileError { sources: c.sources, diagnostics: vec![Diagnostic::new("E0999", span, m)] });
            }
        }
    }
    Ok(c)
}

/// `compile_source` for a file on disk (`path`), so that a `use` of itself is a no-op.
fn compile_source_at(
    name: &str,
    text: &str,
    dir: Option<&Path>,
    path: Option<&Path>,
    args: &[(String, lower::ArgValue)],
) -> Result<Compiled, CompileError> {
    let mut sources = SourceMap::default();
    let prelude = sources.add("<prelude>", PRELUDE);
    let main = sources.add(name, text);
    let mut files: Vec<(FileId, ast::File)> = Vec::new();
    let mut diagnostics = Vec::new();
    let mut queue: Vec<(FileId, Option<PathBuf>)> = vec![(main, dir.map(Path::to_path_buf))];
    let mut dirs = std::collections::HashMap::new();
    let mut seen: Vec<PathBuf> = path.and_then(|p| p.canonicalize().ok()).into_iter().collect();
    while let Some((id, dir)) = queue.pop() {
        if let Some(d) = &dir {
            dirs.insert(id, d.clone());
        }
        let text = sources.text(id).to_string();
        let file = match syntax::parse(&text, id) {
            Ok(f) => f,
            Err(d) => {
                diagnostics.push(d);
                continue;
            }
        };
        for item in &file.items {
            let ast::Item::Use { path, span } = item else { continue };
            match load_use(path, *span, dir.as_deref(), &mut seen, &mut sources) {
                Ok(Some((nid, ndir))) => queue.push((nid, Some(ndir))),
                Ok(None) => {}
                Err(d) => diagnostics.push(d),
            }
        }
        files.push((id, file));
    }
    // The prelude's items the sources may name (`prelude_ast`).
    let mut words: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for &(id, _) in &files {
        words.extend(identifier_words(sources.text(id)));
    }
    for (_, v) in args {
        if let lower::ArgValue::Str(s) = v {
            words.extend(identifier_words(s));
        }
    }
    let (prelude_file, prelude_unparsed) = match prelude_ast(prelude, &words) {
        Ok(p) => p,
        Err(d) => {
            diagnostics.push(d);
            (ast::File { items: Vec::new() }, Vec::new())
        }
    };
    files.insert(0, (prelude, prelude_file));
    if !diagnostics.is_empty() {
        return Err(CompileError { sources, diagnostics });
    }
    let items = Items { files, prelude, dirs, prelude_unparsed };
    match lower::lower_with(&items, main, args) {
        Ok(programs) => Ok(Compiled { sources, programs }),
        Err(diagnostics) => Err(CompileError { sources, diagnostics }),
    }
}

/// One top-level item of the prelude: its name, where its text is (from its `fn` or
/// `layer` line to the next item's, comments included), the identifiers that text
/// mentions, and its AST once parsed (once per process).
struct PreludeItem {
    name: &'static str,
    start: usize,
    end: usize,
    words: Vec<&'static str>,
    parsed: std::sync::OnceLock<Result<ast::Item, Diagnostic>>,
}

/// The prelude cut into items by a scan of its lines (an item starts at a line that
/// begins with `fn ` or `layer `), without parsing it.
fn prelude_items() -> &'static [PreludeItem] {
    static ITEMS: std::sync::OnceLock<Vec<PreludeItem>> = std::sync::OnceLock::new();
    ITEMS.get_or_init(|| {
        let mut starts = Vec::new();
        let mut at = 0;
        for line in PRELUDE.split_inclusive('\n') {
            if line.starts_with("fn ") || line.starts_with("layer ") {
                starts.push(at);
            }
            at += line.len();
        }
        let ends = starts.iter().skip(1).copied().chain([PRELUDE.len()]).collect::<Vec<_>>();
        starts
            .into_iter()
            .zip(ends)
            .map(|(start, end)| {
                let text = &PRELUDE[start..end];
                let name = identifier_words(text).nth(1).unwrap_or("");
                PreludeItem { name, start, end, words: identifier_words(text).collect(), parsed: Default::default() }
            })
            .collect()
    })
}

/// The identifiers (and keywords, and the digits of numbers) in `text`: its maximal runs
/// of ASCII letters, digits and `_`. Comments and strings are not skipped: a name they
/// mention only costs parsing an item that is not used.
fn identifier_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty())
}

/// The prelude's items that sources mentioning `words` can reach (by name, and through
/// the items they reach), parsed (each once per process; spans carry file id 0, which
/// `compile_source` always gives the prelude, and positions in the whole prelude), in
/// the prelude's order; and the names of the other items (for suggestions). Parsing only
/// these saves most of the 2.7 ms pest took to parse the whole prelude in every process.
/// An item named nowhere cannot be looked up: a lookup is by an identifier of some
/// source, and every identifier is among `words`.
fn prelude_ast(id: FileId, words: &std::collections::HashSet<&str>) -> Result<(ast::File, Vec<String>), Diagnostic> {
    debug_assert_eq!(id, FileId(0));
    let all = prelude_items();
    let mut used = vec![false; all.len()];
    let mut todo: Vec<usize> = (0..all.len()).filter(|&i| words.contains(all[i].name)).collect();
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut used[i], true) {
            continue;
        }
        todo.extend((0..all.len()).filter(|&j| !used[j] && all[i].words.contains(&all[j].name)));
    }
    let mut items = Vec::new();
    let mut unparsed = Vec::new();
    for (it, used) in all.iter().zip(used) {
        if !used {
            unparsed.push(it.name.to_string());
            continue;
        }
        let parsed = it.parsed.get_or_init(|| {
            let f = syntax::parse_at(&PRELUDE[it.start..it.end], FileId(0), it.start)?;
            f.items.into_iter().next().ok_or_else(|| {
                Diagnostic::new(
                    "E0100",
                    Span::new(FileId(0), it.start, it.end),
                    "internal error: an empty prelude item",
                )
            })
        });
        items.push(parsed.clone()?);
    }
    Ok((ast::File { items }, unparsed))
}

fn load_use(
    path: &str,
    span: Span,
    dir: Option<&Path>,
    seen: &mut Vec<PathBuf>,
    sources: &mut SourceMap,
) -> Result<Option<(FileId, PathBuf)>, Diagnostic> {
    let full = match dir {
        Some(d) => d.join(path),
        None => PathBuf::from(path),
    };
    let canon = full.canonicalize().map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        Diagnostic::new("E0107", span, format!("cannot read `{path}`: {why}"))
            .with_help("`use` paths are relative to the file that says them")
    })?;
    if seen.contains(&canon) {
        return Ok(None);
    }
    if seen.len() >= MAX_FILES {
        return Err(Diagnostic::new("E0108", span, format!("more than {MAX_FILES} files are `use`d")));
    }
    seen.push(canon.clone());
    let text = read_source(&canon).map_err(|m| Diagnostic::new("E0107", span, m))?;
    let id = sources.add(full.display().to_string(), text);
    let ndir = canon.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Some((id, ndir)))
}

/// Reads a source file: a clear message for a missing file, a huge one or bad UTF-8.
pub fn read_source(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if meta.is_dir() {
        return Err(format!("`{}` is a directory, not a .nn file", path.display()));
    }
    if !meta.is_file() {
        return Err(format!("`{}` is not a regular file (a FIFO or a device), not a .nn file", path.display()));
    }
    if meta.len() > crate::limits::MAX_SOURCE_BYTES as u64 {
        return Err(format!(
            "`{}` is {} bytes; the limit for a source file is {} bytes",
            path.display(),
            meta.len(),
            crate::limits::MAX_SOURCE_BYTES
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        format!("`{}` is not valid UTF-8 (line {line}, byte {at})", path.display())
    })?;
    Ok(normalize_source(text))
}

/// The source as nnc reads it: a leading UTF-8 byte-order mark dropped and a lone CR
/// (old Mac line endings) read as a line feed. Diagnostics render against this text, so
/// lines and columns are those an editor shows.
pub fn normalize_source(text: String) -> String {
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    };
    if !text.contains('\r') {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' && chars.peek() != Some(&'\n') {
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    out
}

/// Compiles a file from disk.
pub fn compile_file(path: &Path) -> Result<Compiled, CompileError> {
    compile_file_with(path, &[])
}

/// Compiles a file from disk with model arguments bound from outside (`--set hidden=256`).
pub fn compile_file_with(path: &Path, args: &[(String, lower::ArgValue)]) -> Result<Compiled, CompileError> {
    finish(compile_file_at(path, args)?)
}

/// `compile_file_with` before the front end's last pass (`configure` runs it after the
/// `--set` settings).
fn compile_file_at(path: &Path, args: &[(String, lower::ArgValue)]) -> Result<Compiled, CompileError> {
    let text = match read_source(path) {
        Ok(t) => t,
        Err(m) => {
            let mut sources = SourceMap::default();
            let id = sources.add(path.display().to_string(), "");
            return Err(CompileError { sources, diagnostics: vec![Diagnostic::new("E0107", Span::new(id, 0, 0), m)] });
        }
    };
    let dir = path.parent().map(Path::to_path_buf);
    compile_source_at(&path.display().to_string(), &text, dir.as_deref(), Some(path), args)
}

/// The batch symbol of a graph: `B` if declared, else the first input's leading symbol.
pub fn batch_symbol(g: &Graph) -> Option<String> {
    if g.symbol("B").is_some() {
        return Some("B".into());
    }
    let first = g.inputs.first()?.ty.shape.first()?;
    let s = first.symbols().next()?;
    g.symbols.get(s.0 as usize).cloned()
}

/// The training step of a program as a concrete graph: forward, backward and the
/// `train` block's optimizer update (hyper-parameters as `hyper.*` inputs), at `batch`.
pub fn step_graph(p: &Program, batch: usize) -> Result<Graph, String> {
    step_graph_timed(p, batch).map(|(g, _)| g)
}

/// `step_graph`, with the seconds spent in `autodiff::grad` (`nnc bench`'s breakdown).
/// For a host-loop optimizer the step graph is plain gradient descent standing in for
/// it (what `plan`, `bench` and `ir` show; training runs the host loop around the
/// compiled objective instead): `host_stand_in` says so, and each of them prints it.
pub fn step_graph_timed(p: &Program, batch: usize) -> Result<(Graph, crate::passes::Timings), String> {
    let mut settings = p.settings.clone();
    if settings.host_optimizer() {
        settings.optimizer =
            crate::settings::Choice { name: "sgd".into(), args: vec![("lr".into(), crate::settings::Lit::Num(1.0))] };
    }
    let t = std::time::Instant::now();
    let (g, t_grad) = crate::optim::update::step_graph_timed(&p.train, &settings)?;
    let g = crate::runtime::executable::concrete(&g, batch)?;
    let mut timings = crate::passes::Timings::default();
    timings.add("autodiff", t_grad);
    timings.add("update", t.elapsed().as_secs_f64() - t_grad);
    Ok((crate::passes::checked(g, "autodiff and the update")?, timings))
}

/// Why `step_graph` is not the step a program trains with: a host-loop optimizer
/// (L-BFGS, BFGS, Newton, Newton-CG) has none, and plain gradient descent stands in.
pub fn host_stand_in(p: &Program) -> Option<String> {
    p.settings.host_optimizer().then(|| {
        format!(
            "`{}` runs on the host around the compiled objective and gradient; the step graph here is plain \
             gradient descent standing in for it",
            p.settings.optimizer.name
        )
    })
}

/// The eval graph as `nnc predict` runs it: outputs only (no loss, so no labels), dead
/// code and unread inputs dropped, at `batch`.
pub fn predict_graph(p: &Program, batch: usize) -> Result<Graph, String> {
    let mut g = p.eval.clone();
    g.loss = None;
    let g = crate::simplify::drop_unused_inputs(&crate::simplify::dead_code(&g));
    crate::runtime::executable::concrete(&g, batch)
}

/// The batch size a command uses: the one asked for, else the `train` block's.
pub fn batch_of(p: &Program, asked: Option<i64>) -> Result<usize, String> {
    match asked {
        Some(b) if b >= 1 => Ok(b as usize),
        Some(b) => Err(format!("--batch must be at least 1, found {b}")),
        None => Ok(p.settings.batch.max(1) as usize),
    }
}

/// The model named `name`, or the only model of the file.
pub fn pick<'a>(c: &'a Compiled, name: Option<&str>) -> Result<&'a Program, String> {
    let names = || c.programs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
    match name {
        Some(n) => c
            .programs
            .iter()
            .find(|p| p.name == n)
            .ok_or_else(|| format!("no model named `{n}`; the file has: {}", names())),
        None if c.programs.len() == 1 => Ok(&c.programs[0]),
        None => Err(format!("the file has several models ({}); choose one with --model", names())),
    }
}

/// Why `configure` failed.
#[derive(Debug)]
pub enum ConfigureError {
    /// The model does not compile (with these arguments).
    Compile(CompileError),
    /// No such model in the file.
    Model(String),
    /// A bad `key=value` pair.
    Set(String),
}

impl From<ConfigureError> for crate::Error {
    fn from(e: ConfigureError) -> crate::Error {
        match e {
            ConfigureError::Compile(c) => c.into(),
            ConfigureError::Model(m) | ConfigureError::Set(m) => crate::Error::Usage(m),
        }
    }
}

/// Compiles a model file with `key=value` pairs, as `--set` gives them: keys of the train
/// block go to its settings (`settings::apply`, the same checks as in the file), any other
/// key binds the model argument of that name. A key given twice, or one that is neither,
/// is a `Set` error that names the known keys.
pub fn configure(file: &Path, sets: &[String], model: Option<&str>) -> Result<Program, ConfigureError> {
    configure_with(&|args| compile_file_at(file, args), sets, model)
}

/// `configure` for source text (`name` is shown in diagnostics; `use` paths resolve
/// against `dir`, when given).
pub fn configure_source(
    name: &str,
    text: &str,
    dir: Option<&Path>,
    sets: &[String],
    model: Option<&str>,
) -> Result<Program, ConfigureError> {
    configure_with(&|args| compile_source_at(name, text, dir, None, args), sets, model)
}

/// A compilation given model arguments bound from outside.
type CompileWith<'a> = dyn Fn(&[(String, lower::ArgValue)]) -> Result<Compiled, CompileError> + 'a;

/// Compiles with `compile` (given the model arguments of `sets`), then applies the train
/// settings of `sets`: `configure`'s work for any source.
fn configure_with(compile: &CompileWith, sets: &[String], model: Option<&str>) -> Result<Program, ConfigureError> {
    use crate::settings::KEYS;
    let usage = ConfigureError::Set;
    let (mut train_sets, mut args) = (Vec::new(), Vec::new());
    // A set: n distinct keys are checked in linear time (issue 30: 100,000 took 30 s).
    let mut seen = std::collections::HashSet::new();
    for s in sets {
        let (k, v) = s.split_once('=').ok_or_else(|| usage(format!("--set expects key=value, found `{s}`")))?;
        let k = k.trim().to_string();
        if !seen.insert(k.clone()) {
            return Err(usage(format!("--set {k}: given twice")));
        }
        let expr = syntax::parse_expr(v.trim(), FileId(0)).map_err(|d| usage(format!("--set {s}: {}", d.message)))?;
        if KEYS.contains(&k.as_str()) {
            train_sets.push((k, expr, s));
            continue;
        }
        let val = lower::ArgValue::of_expr(&expr)
            .ok_or_else(|| usage(format!("--set {s}: a model argument takes a number, true or false, or a string")))?;
        args.push((k, val));
    }
    let c = compile(&args).map_err(ConfigureError::Compile)?;
    let mut p = pick(&c, model).map_err(ConfigureError::Model)?.clone();
    for (k, _) in &args {
        if !p.args.iter().any(|(n, _)| n == k) {
            let have: Vec<&str> = p.args.iter().map(|(n, _)| n.as_str()).collect();
            let its = if have.is_empty() {
                "it takes none".to_string()
            } else {
                format!("its arguments are: {}", have.join(", "))
            };
            let close = crate::diagnostic::closest(k, KEYS.iter().copied().chain(have.iter().copied()));
            let hint = close.map(|c| format!("; did you mean `{c}`?")).unwrap_or_default();
            return Err(usage(format!(
                "--set {k}: not a train setting ({}) nor an argument of model `{}` ({its}){hint}",
                KEYS.join(", "),
                p.name
            )));
        }
    }
    for (k, expr, s) in &train_sets {
        let key = ast::Ident { name: k.clone(), span: Span::default() };
        crate::settings::apply(&mut p.settings, &key, expr).map_err(|d| {
            let help = d.help.map(|h| format!(" ({h})")).unwrap_or_default();
            usage(format!("--set {s}: {}{help}", d.message))
        })?;
        p.settings.present = true;
    }
    crate::settings::cross_check(&p.settings, Span::default()).map_err(|d| usage(d.message))?;
    crate::settings::fits_outputs(&p.settings, &p.train, &p.name, Span::default()).map_err(|d| {
        let help = d.help.map(|h| format!(" ({h})")).unwrap_or_default();
        usage(format!("{}{help}", d.message))
    })?;
    crate::settings::augment::plan(&p.settings, &crate::settings::augment::inputs_of(&p.train))
        .map_err(|d| usage(format!("{} ({})", d.message, d.help)))?;
    // Quantization-aware graphs, so that every command runs the model as it trains.
    crate::compress::quantize::with_qat(&p).map_err(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prelude parsed item by item is the prelude parsed whole: the same items, in
    /// the same order, with the same spans.
    #[test]
    fn prelude_items_parse_as_the_whole_prelude() {
        let whole = syntax::parse(PRELUDE, FileId(0)).expect("the prelude parses");
        let names: std::collections::HashSet<&str> = prelude_items().iter().map(|i| i.name).collect();
        let (file, unparsed) = prelude_ast(FileId(0), &names).expect("every item parses");
        assert!(unparsed.is_empty(), "{unparsed:?}");
        assert_eq!(whole.items.len(), file.items.len());
        assert!(whole.items == file.items, "the items differ");
    }

    /// Only what the source names, and what that names in turn, is parsed; the rest is
    /// still suggested for a misspelled name.
    #[test]
    fn prelude_items_reached_from_the_source() {
        let words: std::collections::HashSet<&str> = identifier_words("l = LSTM(4, 8)").collect();
        let (file, unparsed) = prelude_ast(FileId(0), &words).expect("parses");
        let parsed: Vec<String> = file
            .items
            .iter()
            .map(|i| match i {
                ast::Item::Fn(d) => d.name.name.clone(),
                ast::Item::Layer(d) => d.name.name.clone(),
                _ => String::new(),
            })
            .collect();
        assert!(parsed.contains(&"LSTM".to_string()) && parsed.contains(&"seq_dropout".to_string()), "{parsed:?}");
        assert!(unparsed.contains(&"softmax".to_string()) && !parsed.contains(&"softmax".to_string()));
        let src = "model M {\n input x: [B, 4]\n output y = sofmax(x)\n}\n";
        let Err(e) = compile_source("m.nn", src, None) else { panic!("compiled") };
        let help: Vec<String> = e.diagnostics.iter().filter_map(|d| d.help.clone()).collect();
        assert!(help.iter().any(|h| h.contains("`softmax`")), "{help:?}");
    }
}
