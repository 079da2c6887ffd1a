//! Lowering: `ast::File` (the user's items plus the prelude's) to `ir::Program`.
//!
//! Lowering is a partial evaluator: statements run at compile time over an environment
//! of compile-time values (ints, which may be symbolic dims like `B`; floats; layers;
//! fns) and tensors (IR values). Layers are instantiated into dotted parameter names,
//! fns are inlined, `for` loops are unrolled and `if` picks a branch, once for the train
//! graph and once for the eval graph. Every tensor op goes through `ir::Graph::push`, so
//! each node is shape-checked by the IR's own rule; user-facing checks come first so the
//! messages speak the user's language.
//!
//! Errors: statements of a model body are independent, so a failing statement records
//! its diagnostic, poisons the name it binds, and lowering goes on. Values derived from a
//! poisoned one are poisoned silently, so one mistake gives one message.

mod builtins;
mod context;
mod stmt;
mod tensor;

use context::{
    all_names, lookup, lookup_callable, new_scope, set, AugmentSpans, Body, CallArg, Closure, Ctx, Env, Instance,
    LayerCtor, Lowerer, Val, R,
};

use crate::diagnostic::{Diagnostic, FileId, Span};
use crate::ir::{self, DType, Dim, Graph, Init, Mode, Op, Program, Type, Value};
use crate::limits;
use crate::settings::{self, TrainSettings};
use crate::syntax::ast::{self, ArgType, BinOp, Expr, ExprKind, Kind, TensorType};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

/// Ranges of prelude arguments that no model can use: (fn, argument, position, the rule).
/// A rate outside them gives NaN or a silent no-op, so it is a compile error at the call.
/// (fn, argument, position, whether a value is allowed, the rule in words).
type ArgRule = (&'static str, &'static str, usize, fn(f64) -> bool, &'static str);

const RATE: &str = "in [0, 1) (1 would drop everything and divide by 0)";
const PRELUDE_ARG_RULES: [ArgRule; 8] = [
    ("dropout", "p", 1, |p| (0.0..1.0).contains(&p), RATE),
    ("kl_div", "temperature", 2, |t| t > 0.0 && t.is_finite(), "above 0"),
    ("RNN", "dropout", 2, |p| (0.0..1.0).contains(&p), RATE),
    ("RNN", "recurrent_dropout", 3, |p| (0.0..1.0).contains(&p), RATE),
    ("LSTM", "dropout", 2, |p| (0.0..1.0).contains(&p), RATE),
    ("LSTM", "recurrent_dropout", 3, |p| (0.0..1.0).contains(&p), RATE),
    ("GRU", "dropout", 2, |p| (0.0..1.0).contains(&p), RATE),
    ("GRU", "recurrent_dropout", 3, |p| (0.0..1.0).contains(&p), RATE),
];

/// Checks the arguments of a call of the prelude's fn or layer `name`.
fn check_prelude_args(name: &str, args: &[CallArg]) -> R<()> {
    for (f, arg, pos, ok, rule) in PRELUDE_ARG_RULES {
        if name != f {
            continue;
        }
        let named = args.iter().find(|a| a.name.as_ref().is_some_and(|n| n.name == arg));
        let a = named.or_else(|| args.iter().filter(|a| a.name.is_none()).nth(pos));
        let Some(a) = a else { continue };
        let v = match &a.val {
            Val::Float(v) => *v,
            Val::Int(d) => match d.as_const() {
                Some(v) => v as f64,
                None => continue,
            },
            _ => continue,
        };
        if !ok(v) {
            return Err(Diagnostic::new("E0444", a.span, format!("`{f}`: `{arg}` must be {rule}, found {v}")));
        }
    }
    Ok(())
}

/// The prelude's losses whose first argument is the prediction they score.
const SCORED_LOSSES: [&str; 4] = ["cross_entropy", "hinge", "bce_logits", "mse"];

/// The items visible to every model: the prelude's, then the user's files' (which may
/// shadow the prelude's, but not each other).
pub struct Items {
    pub files: Vec<(FileId, ast::File)>,
    pub prelude: FileId,
    /// The folder of each file read from disk (relative paths in it are joined to it).
    pub dirs: HashMap<FileId, PathBuf>,
    /// The names of the prelude's items left out of its file (no source names them):
    /// in scope only for suggestions.
    pub prelude_unparsed: Vec<String>,
}

/// Lowers every model in `main` (a file id among `items.files`). Returns one program per
/// model, or every diagnostic found.
/// A value for a model argument from outside the source (`--set hidden=256`).
#[derive(Clone, Debug, PartialEq)]
pub enum ArgValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl ArgValue {
    /// The value of a `--set` expression: a number, `true`/`false`, a string or a name.
    pub fn of_expr(e: &Expr) -> Option<ArgValue> {
        match &e.kind {
            ExprKind::Number(v, true) if v.fract() == 0.0 && v.abs() < 9.0e15 => Some(ArgValue::Int(*v as i64)),
            ExprKind::Number(v, _) => Some(ArgValue::Float(*v)),
            ExprKind::Neg(inner) => match ArgValue::of_expr(inner)? {
                ArgValue::Int(i) => Some(ArgValue::Int(-i)),
                ArgValue::Float(f) => Some(ArgValue::Float(-f)),
                _ => None,
            },
            ExprKind::Bool(b) => Some(ArgValue::Bool(*b)),
            ExprKind::Str(s) | ExprKind::Name(s) => Some(ArgValue::Str(s.clone())),
            _ => None,
        }
    }
}

/// Lowers every model in `main` (a file id among `items.files`), its arguments bound to
/// their defaults. Returns one program per model, or every diagnostic found.
pub fn lower(items: &Items, main: FileId) -> Result<Vec<Program>, Vec<Diagnostic>> {
    lower_with(items, main, &[])
}

/// `lower` with model arguments bound from outside: each `(name, value)` binds the
/// argument of that name in every model that declares it.
pub fn lower_with(
    items: &Items,
    main: FileId,
    overrides: &[(String, ArgValue)],
) -> Result<Vec<Program>, Vec<Diagnostic>> {
    let (global, mut errors) = global_scope(items);
    let world = World {
        models: Rc::new(
            items
                .files
                .iter()
                .filter(|(f, _)| *f != items.prelude)
                .flat_map(|(_, file)| file.items.iter())
                .filter_map(|i| match i {
                    ast::Item::Model(m) => Some((m.name.name.clone(), Rc::new(m.clone()))),
                    _ => None,
                })
                .collect(),
        ),
        dirs: Rc::new(items.dirs.clone()),
        prelude_unparsed: Rc::new(items.prelude_unparsed.clone()),
    };
    let mut programs = Vec::new();
    let models: Vec<&ast::ModelDef> = items
        .files
        .iter()
        .filter(|(f, _)| *f == main)
        .flat_map(|(_, file)| file.items.iter())
        .filter_map(|i| match i {
            ast::Item::Model(m) => Some(m),
            _ => None,
        })
        .collect();
    if models.is_empty() && errors.is_empty() {
        let span = Span::new(main, 0, 0);
        errors.push(
            Diagnostic::new("E0200", span, "no `model` in this file")
                .with_help("a file that nnc compiles declares `model Name { ... }`"),
        );
    }
    for m in models {
        let train = lower_model(m, &global, items.prelude, Mode::Train, overrides, &world);
        let eval = lower_model(m, &global, items.prelude, Mode::Eval, overrides, &world);
        match (train, eval) {
            (Ok((train, settings, args)), Ok((eval, _, _))) => {
                if let Err(d) = crate::settings::fits_outputs(&settings, &train, &m.name.name, m.name.span) {
                    errors.push(d);
                    continue;
                }
                programs.push(Program { name: m.name.name.clone(), train, eval, settings, args, qat: false })
            }
            (t, e) => {
                for r in [t, e] {
                    if let Err(es) = r {
                        errors.extend(es);
                    }
                }
            }
        }
    }
    global.vars.borrow_mut().clear();
    if errors.is_empty() {
        Ok(programs)
    } else {
        Err(dedup(errors))
    }
}

fn dedup(errors: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = Vec::new();
    for e in errors {
        if !out.iter().any(|o| o.code == e.code && o.span == e.span && o.message == e.message) {
            out.push(e);
        }
    }
    out.sort_by_key(|a| a.span);
    out
}

fn global_scope(items: &Items) -> (Env, Vec<Diagnostic>) {
    let root = new_scope(None);
    builtins::register(&root);
    let global = new_scope(Some(&root));
    let mut errors = Vec::new();
    let mut seen: HashMap<String, Span> = HashMap::new();
    // The prelude first, so user items shadow it.
    let mut order: Vec<&(FileId, ast::File)> = items.files.iter().filter(|(f, _)| *f == items.prelude).collect();
    order.extend(items.files.iter().filter(|(f, _)| *f != items.prelude));
    for (file, f) in order {
        let from_prelude = *file == items.prelude;
        for it in &f.items {
            let (name, val) = match it {
                ast::Item::Fn(d) => {
                    (&d.name, Val::Fn(Rc::new(Closure { def: Rc::new(d.clone()), env: global.clone(), from_prelude })))
                }
                ast::Item::Layer(d) => {
                    (&d.name, Val::LayerCtor(Rc::new(LayerCtor { def: Rc::new(d.clone()), from_prelude })))
                }
                ast::Item::Model(m) => (&m.name, Val::Poison),
                ast::Item::Use { .. } => continue,
            };
            if !from_prelude {
                if let Some(first) = seen.get(&name.name) {
                    errors.push(
                        Diagnostic::new("E0202", name.span, format!("`{}` is defined twice", name.name))
                            .with_label("second definition")
                            .with_note(*first, "first defined here"),
                    );
                    continue;
                }
                seen.insert(name.name.clone(), name.span);
            }
            if !matches!(val, Val::Poison) {
                set(&global, &name.name, val);
            }
        }
    }
    (global, errors)
}

/// One mode of a lowered model: its graph, its settings and its bound arguments.
type Lowered = (Graph, TrainSettings, Vec<(String, String)>);

/// What every model of a compilation can see besides the scope: the models by name (for
/// teachers) and the files' folders.
struct World {
    models: Rc<HashMap<String, Rc<ast::ModelDef>>>,
    dirs: Rc<HashMap<FileId, PathBuf>>,
    prelude_unparsed: Rc<Vec<String>>,
}

fn lower_model(
    m: &ast::ModelDef,
    global: &Env,
    prelude: FileId,
    mode: Mode,
    overrides: &[(String, ArgValue)],
    world: &World,
) -> Result<Lowered, Vec<Diagnostic>> {
    let mut lw = Lowerer {
        g: Graph::new(mode),
        global: global.clone(),
        mode,
        errors: Vec::new(),
        fatal: false,
        prelude,
        stack: Vec::new(),
        state_of: HashMap::new(),
        declared: HashMap::new(),
        rand_streams: 0,
        depth: 0,
        iterations: 0,
        list_work: 0,
        calls: 0,
        instances: 0,
        scopes: Vec::new(),
        settings: None,
        train_span: None,
        loss_span: None,
        tune: None,
        tune_span: None,
        metrics_span: None,
        augment_spans: AugmentSpans::default(),
        model_args: m
            .args
            .iter()
            .map(|d| {
                let kind = match &d.ty {
                    ast::ArgType::Kind(k, _) => Some(*k),
                    ast::ArgType::Tensor(_) => None,
                };
                (d.name.name.clone(), kind)
            })
            .collect(),
        model_name: m.name.name.clone(),
        models: world.models.clone(),
        dirs: world.dirs.clone(),
        prelude_unparsed: world.prelude_unparsed.clone(),
        teacher: None,
    };
    let ctx = Ctx { env: new_scope(Some(global)), body: Body::Model, path: String::new() };
    lw.scopes.push(ctx.env.clone());
    // Model arguments: overrides by name, then defaults, checked like a layer's.
    let given: Vec<CallArg> = overrides
        .iter()
        .filter(|(n, _)| m.args.iter().any(|d| d.name.name == *n))
        .map(|(n, v)| CallArg {
            name: Some(ast::Ident { name: n.clone(), span: m.name.span }),
            val: match v {
                ArgValue::Int(i) => Val::Int(Dim::konst(*i)),
                ArgValue::Float(f) => Val::Float(*f),
                ArgValue::Bool(b) => Val::Bool(*b),
                ArgValue::Str(s) => Val::Str(s.clone()),
            },
            span: m.name.span,
        })
        .collect();
    let what = format!("model `{}`", m.name.name);
    if let Err(d) = lw.bind_args(&what, &m.args, given, &ctx.env, m.name.span) {
        return Err(vec![d]);
    }
    let bound: Vec<(String, String)> = m
        .args
        .iter()
        .map(|d| {
            let shown = match lookup(&ctx.env, &d.name.name) {
                Some(Val::Int(v)) => v.as_const().map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
                Some(Val::Float(f)) => crate::ir::print::num(f),
                Some(Val::Bool(b)) => b.to_string(),
                Some(Val::Str(s)) => format!("{s:?}"),
                _ => "?".into(),
            };
            (d.name.name.clone(), shown)
        })
        .collect();
    let _ = lw.exec_block(&m.body.stmts, &ctx);
    if !lw.fatal {
        let settings_present = lw.settings.as_ref().is_some_and(|s| s.present);
        if settings_present && lw.g.loss.is_none() && lw.loss_span.is_none() {
            lw.errors.push(
                Diagnostic::new(
                    "E0332",
                    m.name.span,
                    format!("model `{}` has a `train` block but no `loss`", m.name.name),
                )
                .with_help("add `loss = cross_entropy(logits, y)` or another scalar objective"),
            );
        }
        // Classification metrics asked of a model whose loss scores a regression.
        if let (Some(span), Some(s), Mode::Train, true) =
            (lw.metrics_span, lw.settings.as_ref(), mode, lw.errors.is_empty())
        {
            let regression = !lw.g.scored.is_empty() && lw.g.scored.iter().all(|x| x.loss_fn == "mse");
            let classification = ["accuracy", "precision", "recall", "f1", "confusion", "auc"];
            let asked: Vec<&str> =
                s.metrics.iter().map(String::as_str).filter(|m| classification.contains(m)).collect();
            if regression && s.metrics_on.is_none() && !asked.is_empty() {
                lw.errors.push(
                    Diagnostic::new(
                        "E0614",
                        span,
                        format!(
                            "`{}` {} a classifier's, but the loss of model `{}` is `mse`: a regression",
                            asked.join("`, `"),
                            if asked.len() == 1 { "is" } else { "are" },
                            m.name.name
                        ),
                    )
                    .with_help("a regression is measured by `mse` and `mae` (rmse and r2 are reported beside them)"),
                );
            }
        }
        // Augmentations that do not fit the input they augment.
        if let (Some(s), Mode::Train, true) = (lw.settings.as_ref(), mode, lw.errors.is_empty()) {
            if let Err(p) = settings::augment::plan(s, &settings::augment::inputs_of(&lw.g)) {
                let span = lw.augment_spans.at(p.at);
                lw.errors.push(Diagnostic::new(p.code, span, p.message).with_help(p.help));
            }
        }
        if lw.errors.is_empty() {
            let problems = ir::verify::verify(&lw.g);
            if let Some(p) = problems.first() {
                lw.errors.push(Diagnostic::new(
                    "E0999",
                    m.name.span,
                    format!("internal compiler error: the IR verifier rejected model `{}`: {p}", m.name.name),
                ));
            }
        }
    }
    // Closures keep their scope alive and scopes keep closures: break the cycles.
    for sc in lw.scopes.drain(..) {
        sc.vars.borrow_mut().clear();
    }
    if lw.errors.is_empty() {
        let mut settings = lw.settings.unwrap_or_default();
        settings.tune = lw.tune;
        Ok((lw.g, settings, bound))
    } else {
        Err(lw.errors)
    }
}

impl Lowerer {
    // ---- layer instances ------------------------------------------------------------

    /// A layer instance at `path`: its body run in a fresh scope below the items'.
    fn instantiate(&mut self, ctor: &Rc<LayerCtor>, args: Vec<CallArg>, path: &str, span: Span) -> R<Val> {
        let def = ctor.def.clone();
        if ctor.from_prelude {
            check_prelude_args(&def.name.name, &args)?;
        }
        if self.stack.len() >= limits::MAX_CALL_DEPTH {
            return Err(self.too_deep(span));
        }
        let key = Rc::as_ptr(&def) as *const ast::FnDef;
        if self.stack.contains(&key) {
            return Err(Diagnostic::new("E0306", span, format!("layer `{}` contains itself", def.name.name)));
        }
        if self.instances >= limits::MAX_LAYER_INSTANCES {
            self.fatal = true;
            return Err(Diagnostic::new(
                "E0904",
                span,
                format!("the model has more than {} layer instances", limits::MAX_LAYER_INSTANCES),
            ));
        }
        self.instances += 1;
        let scope = new_scope(Some(&self.global));
        self.scopes.push(scope.clone());
        self.bind_args(&format!("`{}`", def.name.name), &def.args, args, &scope, span)?;
        let ctx = Ctx { env: scope.clone(), body: Body::Layer, path: format!("{path}.") };
        self.stack.push(key);
        let r = self.exec_block(&def.body.stmts, &ctx);
        self.stack.pop();
        r.map_err(|d| self.at_call_site(d, ctor.from_prelude, span, &def.name.name))?;
        Ok(Val::Layer(Rc::new(Instance { kind: def.name.name.clone(), path: path.to_string(), env: scope })))
    }

    /// Errors inside prelude code are reported at the user's call site.
    fn at_call_site(&self, d: Diagnostic, from_prelude: bool, call: Span, name: &str) -> Diagnostic {
        if from_prelude && d.span.file == self.prelude && call.file != self.prelude {
            let mut nd = Diagnostic::new(d.code, call, format!("in `{name}`: {}", d.message));
            nd.label = d.label.clone();
            nd.help = d.help.clone();
            nd
        } else {
            d
        }
    }

    fn too_deep(&mut self, span: Span) -> Diagnostic {
        self.fatal = true;
        Diagnostic::new("E0903", span, format!("calls nested more than {} deep", limits::MAX_CALL_DEPTH))
    }

    pub(crate) fn as_init(&self, v: &Val, span: Span) -> R<Init> {
        match v {
            Val::Init(i) => Ok(i.clone()),
            Val::Builtin(name) => builtins::init_by_name(name, 1.0).ok_or_else(|| {
                Diagnostic::new("E0316", span, format!("`{name}` is not an initializer"))
                    .with_help("initializers: zeros, ones, constant(v), normal(std), uniform(lo, hi), xavier_uniform, xavier_normal, he_uniform, he_normal, chunks(init, ...)")
            }),
            Val::Float(f) => Ok(Init::Constant(*f)),
            Val::Int(d) if d.as_const().is_some() => Ok(Init::Constant(d.as_const().unwrap_or(0) as f64)),
            other => Err(Diagnostic::new("E0316", span, format!("expected an initializer, found {}", other.describe()))
                .with_help("initializers: zeros, ones, constant(v), normal(std), uniform(lo, hi), xavier_uniform, xavier_normal, he_uniform, he_normal, chunks(init, ...)")),
        }
    }

    // ---- expressions -----------------------------------------------------------------

    fn unknown_name(&self, name: &str, span: Span, env: &Env) -> Diagnostic {
        let mut d = Diagnostic::new("E0201", span, format!("unknown name `{name}`")).with_label("not defined here");
        if self.errors.len() >= limits::MAX_RENDERED_DIAGNOSTICS {
            return d; // not shown: no suggestion to look for
        }
        let mut names = all_names(env);
        names.extend(self.prelude_unparsed.iter().cloned());
        names.sort();
        names.dedup();
        if let Some(c) = crate::diagnostic::closest(name, names.iter().map(String::as_str)) {
            d = d.with_help(format!("did you mean `{c}`?"));
        }
        d
    }

    pub(crate) fn eval(&mut self, e: &Expr, env: &Env) -> R<Val> {
        if self.depth >= limits::MAX_EVAL_DEPTH {
            self.fatal = true;
            return Err(Diagnostic::new(
                "E0905",
                e.span,
                format!("expressions and calls nest more than {} levels deep", limits::MAX_EVAL_DEPTH),
            )
            .with_help("split deep expressions into named steps"));
        }
        self.depth += 1;
        let r = self.eval_inner(e, env);
        self.depth -= 1;
        r
    }

    fn eval_inner(&mut self, e: &Expr, env: &Env) -> R<Val> {
        Ok(match &e.kind {
            ExprKind::Number(v, is_int) => {
                if *is_int && v.abs() < 9.0e15 {
                    Val::Int(Dim::konst(*v as i64))
                } else {
                    Val::Float(*v)
                }
            }
            ExprKind::Str(s) => Val::Str(s.clone()),
            ExprKind::Bool(b) => Val::Bool(*b),
            ExprKind::Training => Val::Bool(self.mode == Mode::Train),
            ExprKind::Ellipsis => {
                return Err(Diagnostic::new("E0405", e.span, "`...` is only allowed in shapes and indexing"))
            }
            ExprKind::Name(n) => lookup(env, n).ok_or_else(|| self.unknown_name(n, e.span, env))?,
            ExprKind::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for it in items {
                    out.push(self.eval(it, env)?);
                }
                Val::List(out)
            }
            ExprKind::Repeat(..) => {
                return Err(Diagnostic::new(
                    "E0312",
                    e.span,
                    "`[Layer(..); n]` only declares layers: `layer blocks = [Block(64); 16]`",
                ))
            }
            ExprKind::Neg(inner) => {
                let v = self.eval(inner, env)?;
                self.negate(v, e.span)?
            }
            ExprKind::Binary { op, op_span, lhs: a, rhs: b } => {
                let x = self.eval(a, env)?;
                let y = self.eval(b, env)?;
                self.binary(*op, x, y, a.span, b.span, *op_span)?
            }
            ExprKind::Call { callee, args } => {
                let f = self.eval_callee(callee, env)?;
                let args = self.eval_args(args, env)?;
                self.call(f, args, e.span, callee.span)?
            }
            ExprKind::Index { base, items } => {
                let b = self.eval(base, env)?;
                self.index(b, items, env, e.span)?
            }
            ExprKind::Field { base, name } => {
                let b = self.eval(base, env)?;
                self.field(b, name, e.span)?
            }
        })
    }

    fn eval_callee(&mut self, callee: &Expr, env: &Env) -> R<Val> {
        if let ExprKind::Name(n) = &callee.kind {
            return lookup_callable(env, n).ok_or_else(|| {
                let mut d = self.unknown_name(n, callee.span, env);
                d.message = format!("unknown function `{n}`");
                d
            });
        }
        self.eval(callee, env)
    }

    fn eval_args(&mut self, args: &[ast::Arg], env: &Env) -> R<Vec<CallArg>> {
        let mut out = Vec::with_capacity(args.len());
        let mut seen_named = false;
        for a in args {
            if a.name.is_some() {
                seen_named = true;
            } else if seen_named {
                return Err(Diagnostic::new("E0407", a.span, "positional arguments must come before named ones"));
            }
            let val = self.eval(&a.value, env)?;
            out.push(CallArg { name: a.name.clone(), val, span: a.value.span });
        }
        Ok(out)
    }

    fn eval_const_int(&mut self, e: &Expr, env: &Env, what: &str) -> R<i64> {
        let v = self.eval(e, env)?;
        match &v {
            Val::Int(d) => d.as_const().ok_or_else(|| {
                Diagnostic::new(
                    "E0408",
                    e.span,
                    format!("{what} must be a known integer, found `{}`", d.display(&self.g.symbols)),
                )
            }),
            other => {
                Err(Diagnostic::new("E0408", e.span, format!("{what} must be an integer, found {}", other.describe())))
            }
        }
    }

    pub(crate) fn as_dim(&self, v: &Val, span: Span) -> R<Dim> {
        match v {
            Val::Int(d) => Ok(d.clone()),
            Val::Float(f) if f.fract() == 0.0 && f.is_finite() => {
                Err(Diagnostic::new("E0409", span, format!("a dimension must be an integer, found the number {f:?}"))
                    .with_help(format!("write `{f}` without a decimal point")))
            }
            Val::Float(f) => Err(Diagnostic::new("E0409", span, format!("a dimension must be an integer, found {f}"))),
            other => Err(Diagnostic::new(
                "E0409",
                span,
                format!("a dimension must be an integer, found {}", other.describe()),
            )),
        }
    }

    pub(crate) fn ty_str(&self, t: &Type) -> String {
        t.display(&self.g.symbols).to_string()
    }
    pub(crate) fn shape_str(&self, s: &[Dim]) -> String {
        ir::ty::shape_str(s, &self.g.symbols)
    }

    /// Appends a node; shape-rule failures become diagnostics at `span`.
    pub(crate) fn push(&mut self, op: Op, args: Vec<Value>, declared: Option<Type>, span: Span) -> R<Value> {
        if self.g.len() >= limits::MAX_NODES {
            self.fatal = true;
            return Err(Diagnostic::new(
                "E0901",
                span,
                format!("the model unrolls to more than {} operations", limits::MAX_NODES),
            ));
        }
        if let Some(t) = &declared {
            if t.shape.len() > limits::MAX_RANK {
                return Err(Diagnostic::new(
                    "E0314",
                    span,
                    format!("rank {} is above the limit of {}", t.shape.len(), limits::MAX_RANK),
                ));
            }
        }
        let name = op.name();
        let v = self.g.push(op, args, declared).map_err(|m| Diagnostic::new("E0400", span, format!("{name}: {m}")))?;
        let ty = self.g.ty(v);
        if ty.shape.len() > limits::MAX_RANK {
            return Err(Diagnostic::new(
                "E0314",
                span,
                format!("rank {} is above the limit of {}", ty.shape.len(), limits::MAX_RANK),
            ));
        }
        // Checked arithmetic: a product that overflows is over the limit, not skipped; a
        // shape with symbols is checked at batch size 1 (it only grows from there).
        let n = ir::ty::min_numel(&ty.shape);
        if n.is_none_or(|n| n > limits::MAX_TENSOR_ELEMENTS) {
            let what = match n {
                Some(n) if ty.shape.iter().all(Dim::is_const) => format!("{n} elements"),
                Some(n) => format!("{n} elements even at batch size 1"),
                None => "more than 2^63 elements".to_string(),
            };
            return Err(Diagnostic::new(
                "E0321",
                span,
                format!("this tensor would have {what}; the limit is {}", limits::MAX_TENSOR_ELEMENTS),
            ));
        }
        Ok(v)
    }

    fn negate(&mut self, v: Val, span: Span) -> R<Val> {
        Ok(match v {
            Val::Int(d) => Val::Int(d.neg()),
            Val::Float(f) => Val::Float(-f),
            Val::Tensor(t) => {
                self.require_f32(t, span, "negation")?;
                Val::Tensor(self.push(Op::Unary(ir::UnaryOp::Neg), vec![t], None, span)?)
            }
            Val::Poison => Val::Poison,
            other => return Err(Diagnostic::new("E0410", span, format!("cannot negate {}", other.describe()))),
        })
    }

    pub(crate) fn require_f32(&self, t: Value, span: Span, what: &str) -> R<()> {
        if self.g.ty(t).dtype == DType::I32 {
            return Err(Diagnostic::new("E0401", span, format!("{what} of an i32 tensor"))
                .with_label("i32 values are labels or ids")
                .with_help("i32 tensors may only go to one_hot, gather, Embedding and the losses' label arguments"));
        }
        Ok(())
    }

    fn binary(&mut self, op: BinOp, x: Val, y: Val, xs: Span, ys: Span, span: Span) -> R<Val> {
        use Val::*;
        if matches!(x, Poison) || matches!(y, Poison) {
            return Ok(Poison);
        }
        match (&x, &y) {
            (Int(a), Int(b)) => return self.int_binary(op, a, b, span),
            (Int(_) | Float(_), Int(_) | Float(_)) if x_const(&x).is_some() && x_const(&y).is_some() => {
                let (a, b) = (x_const(&x).unwrap_or(0.0), x_const(&y).unwrap_or(0.0));
                let r = float_binary(op, a, b);
                // Finite numbers in, an infinity or NaN out: an overflow, not a value.
                if let Float(f) = r {
                    if !f.is_finite() && a.is_finite() && b.is_finite() {
                        return Err(Diagnostic::new(
                            "E0412",
                            span,
                            format!("this compile-time number is {f} (from the finite {a} and {b}); numbers must stay finite"),
                        ));
                    }
                }
                return Ok(r);
            }
            (List(a), List(b)) if op == BinOp::Add => {
                let n = a.len() + b.len();
                if n > limits::MAX_LIST_ELEMENTS {
                    self.fatal = true;
                    return Err(Diagnostic::new(
                        "E0906",
                        span,
                        format!("this list would have {n} elements; the limit is {}", limits::MAX_LIST_ELEMENTS),
                    ));
                }
                self.list_work += n as u64;
                if self.list_work > limits::MAX_LIST_WORK {
                    self.fatal = true;
                    return Err(Diagnostic::new(
                        "E0906",
                        span,
                        format!(
                            "building lists with `+` copies more than {} elements in all (each `l + [x]` copies `l`)",
                            limits::MAX_LIST_WORK
                        ),
                    )
                    .with_help("build long lists in fewer, larger pieces"));
                }
                let mut out = a.clone();
                out.extend(b.iter().cloned());
                return Ok(List(out));
            }
            (Bool(a), Bool(b)) if matches!(op, BinOp::Eq | BinOp::Ne) => {
                return Ok(Bool((a == b) == (op == BinOp::Eq)))
            }
            _ => {}
        }
        let tensorish = |v: &Val| matches!(v, Tensor(_) | Int(_) | Float(_) | Bool(_));
        if !(tensorish(&x) && tensorish(&y)) {
            return Err(Diagnostic::new(
                "E0411",
                span,
                format!("cannot apply `{}` to {} and {}", op.symbol(), x.describe(), y.describe()),
            ));
        }
        if op == BinOp::MatMul {
            let (Tensor(a), Tensor(b)) = (&x, &y) else {
                return Err(Diagnostic::new("E0411", span, "`@` needs two tensors; use `*` to scale"));
            };
            return Ok(Tensor(self.matmul(*a, *b, xs, ys, span)?));
        }
        let bop = match op {
            BinOp::Add => ir::BinaryOp::Add,
            BinOp::Sub => ir::BinaryOp::Sub,
            BinOp::Mul => ir::BinaryOp::Mul,
            BinOp::Div => ir::BinaryOp::Div,
            BinOp::Pow => ir::BinaryOp::Pow,
            BinOp::Lt => ir::BinaryOp::Lt,
            BinOp::Le => ir::BinaryOp::Le,
            BinOp::Gt => ir::BinaryOp::Gt,
            BinOp::Ge => ir::BinaryOp::Ge,
            BinOp::Eq => ir::BinaryOp::Eq,
            BinOp::Ne => ir::BinaryOp::Ne,
            BinOp::MatMul => ir::BinaryOp::Mul,
        };
        Ok(Tensor(self.elementwise(bop, &x, &y, xs, ys, span)?))
    }

    fn int_binary(&mut self, op: BinOp, a: &Dim, b: &Dim, span: Span) -> R<Val> {
        let overflow = || Diagnostic::new("E0412", span, "integer overflow");
        Ok(match op {
            BinOp::Add => Val::Int(a.add(b).ok_or_else(overflow)?),
            BinOp::Sub => Val::Int(a.sub(b).ok_or_else(overflow)?),
            BinOp::Mul => Val::Int(a.mul(b).ok_or_else(overflow)?),
            BinOp::Div => match a.div_exact(b) {
                Some(d) => Val::Int(d),
                None => match (a.as_const(), b.as_const()) {
                    (Some(_), Some(0)) => return Err(Diagnostic::new("E0413", span, "division by zero")),
                    (Some(x), Some(y)) => Val::Float(x as f64 / y as f64),
                    _ => {
                        return Err(Diagnostic::new(
                            "E0413",
                            span,
                            format!(
                                "`{}` is not divisible by `{}`",
                                a.display(&self.g.symbols),
                                b.display(&self.g.symbols)
                            ),
                        ))
                    }
                },
            },
            BinOp::Pow => match (a.as_const(), b.as_const()) {
                (Some(x), Some(y)) if (0..64).contains(&y) => {
                    Val::Int(Dim::konst(x.checked_pow(y as u32).ok_or_else(overflow)?))
                }
                // Large exponents: exact for 0 and ±1, an overflow for anything else
                // (as 2^63 is), never a silent infinity.
                (Some(x), Some(y)) if y >= 64 => match x {
                    0 | 1 => Val::Int(Dim::konst(x)),
                    -1 => Val::Int(Dim::konst(if y % 2 == 0 { 1 } else { -1 })),
                    _ => return Err(overflow()),
                },
                (Some(x), Some(y)) => Val::Float((x as f64).powf(y as f64)),
                _ => return Err(Diagnostic::new("E0413", span, "powers of symbolic sizes are not supported")),
            },
            BinOp::MatMul => return Err(Diagnostic::new("E0411", span, "`@` needs two tensors")),
            cmp => match (a.as_const(), b.as_const()) {
                (Some(x), Some(y)) => Val::Bool(match cmp {
                    BinOp::Lt => x < y,
                    BinOp::Le => x <= y,
                    BinOp::Gt => x > y,
                    BinOp::Ge => x >= y,
                    BinOp::Eq => x == y,
                    _ => x != y,
                }),
                _ if matches!(cmp, BinOp::Eq | BinOp::Ne) => Val::Bool((a == b) == (cmp == BinOp::Eq)),
                _ => return Err(Diagnostic::new("E0413", span, "cannot order symbolic sizes")),
            },
        })
    }

    fn index(&mut self, b: Val, items: &[ast::IndexItem], env: &Env, span: Span) -> R<Val> {
        match b {
            Val::Poison => Ok(Val::Poison),
            Val::List(list) => {
                let [ast::IndexItem::Expr(e)] = items else {
                    return Err(Diagnostic::new("E0414", span, "a list takes one index: `blocks[i]`"));
                };
                let i = self.eval_const_int(e, env, "a list index")?;
                let n = list.len() as i64;
                let j = if i < 0 { i + n } else { i };
                if j < 0 || j >= n {
                    return Err(Diagnostic::new("E0415", e.span, format!("index {i} out of range for a list of {n}")));
                }
                Ok(list[j as usize].clone())
            }
            Val::Tensor(t) => Ok(Val::Tensor(self.tensor_index(t, items, env, span)?)),
            other => Err(Diagnostic::new("E0414", span, format!("cannot index {}", other.describe()))),
        }
    }

    fn field(&mut self, b: Val, name: &ast::Ident, span: Span) -> R<Val> {
        match b {
            Val::Poison => Ok(Val::Poison),
            Val::Tensor(t) if name.name == "T" => {
                let r = self.g.ty(t).rank();
                if r < 2 {
                    return Err(Diagnostic::new(
                        "E0416",
                        span,
                        format!("`.T` needs a rank >= 2 tensor, found {}", self.ty_str(self.g.ty(t))),
                    ));
                }
                let mut perm: Vec<u32> = (0..r as u32).collect();
                perm.swap(r - 2, r - 1);
                Ok(Val::Tensor(self.push(Op::Transpose { perm }, vec![t], None, span)?))
            }
            Val::Layer(inst) => {
                let v = inst.env.vars.borrow().get(&name.name).cloned();
                v.ok_or_else(|| {
                    let names: Vec<String> = inst.env.vars.borrow().keys().cloned().collect();
                    let mut d = Diagnostic::new(
                        "E0417",
                        name.span,
                        format!("layer `{}` ({}) has no member `{}`", inst.path, inst.kind, name.name),
                    );
                    if let Some(c) = crate::diagnostic::closest(&name.name, names.iter().map(String::as_str)) {
                        d = d.with_help(format!("did you mean `{c}`?"));
                    }
                    d
                })
            }
            other => {
                Err(Diagnostic::new("E0417", name.span, format!("{} has no member `{}`", other.describe(), name.name)))
            }
        }
    }

    // ---- calls -----------------------------------------------------------------------

    fn call(&mut self, f: Val, args: Vec<CallArg>, span: Span, callee_span: Span) -> R<Val> {
        if args.iter().any(|a| matches!(a.val, Val::Poison)) {
            return Ok(Val::Poison);
        }
        match f {
            Val::Poison => Ok(Val::Poison),
            Val::Builtin(name) => builtins::call(self, name, args, span),
            Val::Fn(c) => self.call_fn(&c, args, span, None),
            Val::Layer(inst) => {
                let fwd = inst.env.vars.borrow().get("forward").cloned();
                match fwd {
                    Some(Val::Fn(c)) => self.call_fn(&c, args, span, Some(&inst.path)),
                    _ => Err(Diagnostic::new(
                        "E0418",
                        callee_span,
                        format!("layer `{}` ({}) has no `fn forward`, so it cannot be called", inst.path, inst.kind),
                    )),
                }
            }
            Val::LayerCtor(ctor) => Err(Diagnostic::new(
                "E0305",
                callee_span,
                format!("layer `{}` must be declared before use", ctor.def.name.name),
            )
            .with_help(format!("write `layer name = {}(...)`, then call `name(x)`", ctor.def.name.name))),
            Val::List(_) => {
                Err(Diagnostic::new("E0418", callee_span, "a layer array is called through an index: `blocks[i](h)`"))
            }
            other => Err(Diagnostic::new("E0418", callee_span, format!("{} is not callable", other.describe()))),
        }
    }

    fn call_fn(&mut self, c: &Rc<Closure>, args: Vec<CallArg>, span: Span, layer: Option<&str>) -> R<Val> {
        let def = c.def.clone();
        let key = Rc::as_ptr(&def);
        if self.stack.contains(&key) {
            return Err(Diagnostic::new(
                "E0306",
                span,
                format!("`{}` calls itself; fns are inlined at compile time and cannot recurse", def.name.name),
            ));
        }
        if self.stack.len() >= limits::MAX_CALL_DEPTH {
            return Err(self.too_deep(span));
        }
        self.calls += 1;
        if self.calls > limits::MAX_TOTAL_CALLS {
            self.fatal = true;
            return Err(Diagnostic::new(
                "E0907",
                span,
                format!(
                    "more than {} calls are inlined in all; fns are inlined at compile time",
                    limits::MAX_TOTAL_CALLS
                ),
            )
            .with_help("a fn that calls another twice per level doubles the work with each level"));
        }
        let what = match layer {
            Some(p) => format!("`{p}`"),
            None => format!("`{}`", def.name.name),
        };
        if c.from_prelude {
            check_prelude_args(&def.name.name, &args)?;
        }
        // A prelude loss records the prediction it scores (its first argument): the
        // trainer computes metrics on it (`Graph::scored`).
        if c.from_prelude && SCORED_LOSSES.contains(&def.name.name.as_str()) {
            let first = def.args.first().map(|a| a.name.name.as_str());
            let arg = args
                .iter()
                .find(|a| a.name.as_ref().map(|n| n.name.as_str()) == first)
                .or_else(|| args.iter().find(|a| a.name.is_none()));
            if let Some(CallArg { val: Val::Tensor(t), .. }) = arg {
                self.g.scored.push(crate::ir::Scored { loss_fn: def.name.name.clone(), value: *t });
            }
        }
        let scope = new_scope(Some(&c.env));
        self.scopes.push(scope.clone());
        self.bind_args(&what, &def.args, args, &scope, span)?;
        self.stack.push(key);
        let ctx = Ctx { env: scope.clone(), body: Body::Fn, path: String::new() };
        let r = self.exec_block(&def.body.stmts, &ctx);
        self.stack.pop();
        let shown = what.trim_matches('`').to_string();
        let result = r.map_err(|d| self.at_call_site(d, c.from_prelude, span, &shown))?;
        let Some(v) = result else {
            return Err(Diagnostic::new(
                "E0419",
                def.body.span,
                format!("fn `{}` does not end with a value", def.name.name),
            )
            .with_help("the last line of a fn body is its result"));
        };
        if let (Some(ret), Val::Tensor(t)) = (&def.ret, &v) {
            let ty = self.g.ty(*t).clone();
            if let Err(msg) = self.match_pattern(ret, &ty, &scope)? {
                let d = Diagnostic::new(
                    "E0303",
                    if c.from_prelude { span } else { ret.span },
                    format!("{what} returns {} but declares {msg}", self.ty_str(&ty)),
                );
                return Err(d);
            }
        }
        Ok(v)
    }

    /// Binds call arguments to declarations: positional, then named, then defaults.
    /// Tensor declarations are shape patterns whose free names bind to the actual dims.
    fn bind_args(&mut self, what: &str, decls: &[ast::ArgDecl], args: Vec<CallArg>, scope: &Env, span: Span) -> R<()> {
        let mut slots: Vec<Option<CallArg>> = vec![None; decls.len()];
        let mut pos = 0;
        for a in args {
            let idx = match &a.name {
                Some(n) => decls.iter().position(|d| d.name.name == n.name).ok_or_else(|| {
                    let names: Vec<&str> = decls.iter().map(|d| d.name.name.as_str()).collect();
                    let mut d = Diagnostic::new("E0420", n.span, format!("{what} has no argument named `{}`", n.name));
                    d = d.with_help(match crate::diagnostic::closest(&n.name, names.iter().copied()) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None if names.is_empty() => "it takes no arguments".to_string(),
                        None => format!("its arguments are: {}", names.join(", ")),
                    });
                    d
                })?,
                None => {
                    pos += 1;
                    if pos > decls.len() {
                        return Err(Diagnostic::new(
                            "E0421",
                            a.span,
                            format!("{what} takes {} argument(s), found more", decls.len()),
                        )
                        .with_label("extra argument"));
                    }
                    pos - 1
                }
            };
            if slots[idx].is_some() {
                return Err(Diagnostic::new(
                    "E0422",
                    a.span,
                    format!("argument `{}` given twice", decls[idx].name.name),
                ));
            }
            slots[idx] = Some(a);
        }
        for (decl, slot) in decls.iter().zip(slots) {
            let (val, aspan) = match slot {
                Some(a) => (a.val, a.span),
                None => match &decl.default {
                    Some(e) => (self.eval(e, scope)?, span),
                    None => {
                        return Err(Diagnostic::new(
                            "E0423",
                            span,
                            format!("{what} needs the argument `{}`", decl.name.name),
                        )
                        .with_label(format!("`{}` missing", decl.name.name)))
                    }
                },
            };
            let val = self.check_arg(what, decl, val, aspan, scope)?;
            set(scope, &decl.name.name, val);
        }
        Ok(())
    }

    fn check_arg(&mut self, what: &str, decl: &ast::ArgDecl, val: Val, span: Span, scope: &Env) -> R<Val> {
        let name = &decl.name.name;
        let mismatch = |want: &str, val: &Val| {
            let found = match val {
                Val::Float(f) => format!("{f}"),
                other => other.describe().to_string(),
            };
            Diagnostic::new("E0424", span, format!("argument `{name}` of {what} must be {want}, found {found}"))
                .with_label(format!("expected {want}"))
        };
        match &decl.ty {
            ArgType::Kind(k, _) => {
                let ok = match (k, &val) {
                    (Kind::Int, Val::Int(_)) => true,
                    (Kind::Float, Val::Float(_)) => true,
                    (Kind::Float, Val::Int(d)) if d.is_const() => {
                        return Ok(Val::Float(d.as_const().unwrap_or(0) as f64));
                    }
                    (Kind::Bool, Val::Bool(_)) => true,
                    (Kind::Fn, Val::Fn(_) | Val::Builtin(_) | Val::Layer(_)) => true,
                    (Kind::Init, _) => return Ok(Val::Init(self.as_init(&val, span)?)),
                    (Kind::Str, Val::Str(_)) => true,
                    (Kind::List, Val::List(_)) => true,
                    (_, Val::Poison) => true,
                    _ => false,
                };
                if ok {
                    Ok(val)
                } else {
                    let want = match k {
                        Kind::Int => "an integer",
                        Kind::Float => "a number",
                        Kind::Bool => "true or false",
                        Kind::Fn => "a function",
                        Kind::Init => "an initializer",
                        Kind::Str => "a string",
                        Kind::List => "a list",
                    };
                    Err(mismatch(want, &val))
                }
            }
            ArgType::Tensor(pat) => {
                let t = match val {
                    Val::Tensor(t) => t,
                    Val::Poison => return Ok(Val::Poison),
                    Val::Int(_) | Val::Float(_) | Val::Bool(_)
                        if pat.dims.iter().all(|d| matches!(d, ast::DimExpr::Ellipsis(_))) =>
                    {
                        self.tensor_of(&val, &[], span)?
                    }
                    other => return Err(mismatch("a tensor", &other)),
                };
                let ty = self.g.ty(t).clone();
                match self.match_pattern(pat, &ty, scope)? {
                    Ok(()) => Ok(Val::Tensor(t)),
                    Err(expected) => Err(Diagnostic::new(
                        "E0302",
                        span,
                        format!("{what} expects `{name}` of shape {expected}, found {}", self.ty_str(&ty)),
                    )
                    .with_label(format!("this is {}", self.ty_str(&ty)))),
                }
            }
        }
    }

    /// Matches a type against a pattern like `i32[..., n]`, binding free names in
    /// `scope`. Ok(Err(text)) is a mismatch, with the expected shape rendered.
    fn match_pattern(&mut self, pat: &TensorType, ty: &Type, scope: &Env) -> R<Result<(), String>> {
        let want_dtype = pat.dtype.unwrap_or(DType::F32);
        let ell = pat.dims.iter().position(|d| matches!(d, ast::DimExpr::Ellipsis(_)));
        let fixed = pat.dims.len() - usize::from(ell.is_some());
        let rank_ok = match ell {
            Some(_) => ty.rank() >= fixed,
            None => ty.rank() == fixed,
        };
        let mut ok = want_dtype == ty.dtype && rank_ok;
        let mut rendered = Vec::new();
        let mut actual_i = 0usize;
        for (i, d) in pat.dims.iter().enumerate() {
            match d {
                ast::DimExpr::Ellipsis(_) => {
                    let n = ty.rank().saturating_sub(fixed);
                    let dims: Vec<Val> = if rank_ok {
                        ty.shape[actual_i..actual_i + n].iter().cloned().map(Val::Int).collect()
                    } else {
                        vec![]
                    };
                    match scope.vars.borrow().get(".ellipsis") {
                        Some(Val::List(prev)) => {
                            let same = prev.len() == dims.len()
                                && prev
                                    .iter()
                                    .zip(&dims)
                                    .all(|(a, b)| matches!((a, b), (Val::Int(x), Val::Int(y)) if x == y));
                            ok &= same;
                            let shown: Vec<String> = prev
                                .iter()
                                .map(|v| match v {
                                    Val::Int(d) => d.display(&self.g.symbols).to_string(),
                                    _ => "?".into(),
                                })
                                .collect();
                            rendered.extend(shown);
                        }
                        _ => rendered.push("...".into()),
                    }
                    if rank_ok && !scope.vars.borrow().contains_key(".ellipsis") {
                        set(scope, ".ellipsis", Val::List(dims));
                    }
                    actual_i += n;
                }
                ast::DimExpr::Expr(e) => {
                    let actual = if rank_ok { ty.shape.get(actual_i).cloned() } else { None };
                    actual_i += 1;
                    let _ = i;
                    // A bare name that is not bound yet binds to the actual dim.
                    if let ExprKind::Name(n) = &e.kind {
                        if lookup(scope, n).is_none() {
                            if let Some(a) = &actual {
                                set(scope, n, Val::Int(a.clone()));
                            }
                            rendered.push(n.clone());
                            continue;
                        }
                    }
                    let v = self.eval(e, scope)?;
                    let want = self.as_dim(&v, e.span)?;
                    rendered.push(want.display(&self.g.symbols).to_string());
                    if actual.as_ref() != Some(&want) {
                        ok = false;
                    }
                }
            }
        }
        if ok {
            Ok(Ok(()))
        } else {
            let dt = if want_dtype == DType::I32 { "i32" } else { "f32" };
            Ok(Err(format!("{dt}[{}]", rendered.join(", "))))
        }
    }
}

fn x_const(v: &Val) -> Option<f64> {
    match v {
        Val::Int(d) => d.as_const().map(|c| c as f64),
        Val::Float(f) => Some(*f),
        _ => None,
    }
}

fn float_binary(op: BinOp, a: f64, b: f64) -> Val {
    match op {
        BinOp::Add => Val::Float(a + b),
        BinOp::Sub => Val::Float(a - b),
        BinOp::Mul | BinOp::MatMul => Val::Float(a * b),
        BinOp::Div => Val::Float(a / b),
        BinOp::Pow => Val::Float(a.powf(b)),
        BinOp::Lt => Val::Bool(a < b),
        BinOp::Le => Val::Bool(a <= b),
        BinOp::Gt => Val::Bool(a > b),
        BinOp::Ge => Val::Bool(a >= b),
        BinOp::Eq => Val::Bool(a == b),
        BinOp::Ne => Val::Bool(a != b),
    }
}
