//! The state that every part of lowering shares: compile-time values (`Val`), lexical
//! scopes, the body a statement runs in (`Ctx`) and the lowering context (`Lowerer`).
//! The statement, builtin and tensor files and `lower/mod.rs` all build on this file;
//! it imports none of them.

use crate::diagnostic::{Diagnostic, FileId, Span};
use crate::ir::{Dim, Graph, Init, Mode, Value};
use crate::settings::{self, TrainSettings};
use crate::syntax::ast::{self, ExprKind};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

/// A lexical scope. Closures and layer instances keep their scope alive (late binding,
/// as in Python).
pub(crate) struct Scope {
    pub(super) vars: RefCell<HashMap<String, Val>>,
    pub(super) parent: Option<Rc<Scope>>,
}

pub(crate) type Env = Rc<Scope>;

pub(super) fn new_scope(parent: Option<&Env>) -> Env {
    Rc::new(Scope { vars: RefCell::new(HashMap::new()), parent: parent.cloned() })
}

pub(super) fn lookup(env: &Env, name: &str) -> Option<Val> {
    let mut s = Some(env);
    while let Some(sc) = s {
        if let Some(v) = sc.vars.borrow().get(name) {
            return Some(v.clone());
        }
        s = sc.parent.as_ref();
    }
    None
}

/// Like `lookup`, but skips tensors: in call position `mean(x)` means the function even
/// inside a layer with a state named `mean`.
pub(super) fn lookup_callable(env: &Env, name: &str) -> Option<Val> {
    let mut s = Some(env);
    while let Some(sc) = s {
        if let Some(v) = sc.vars.borrow().get(name) {
            if !matches!(v, Val::Tensor(_)) {
                return Some(v.clone());
            }
        }
        s = sc.parent.as_ref();
    }
    None
}

pub(super) fn set(env: &Env, name: &str, v: Val) {
    env.vars.borrow_mut().insert(name.to_string(), v);
}

pub(super) fn all_names(env: &Env) -> Vec<String> {
    let mut out = Vec::new();
    let mut s = Some(env);
    while let Some(sc) = s {
        out.extend(sc.vars.borrow().keys().filter(|k| !k.starts_with('.')).cloned());
        s = sc.parent.as_ref();
    }
    out.sort();
    out.dedup();
    out
}

pub(crate) struct Closure {
    pub(super) def: Rc<ast::FnDef>,
    pub(super) env: Env,
    /// Fns of the prelude report their errors at the user's call site.
    pub(super) from_prelude: bool,
}

pub(crate) struct LayerCtor {
    pub(super) def: Rc<ast::LayerDef>,
    pub(super) from_prelude: bool,
}

pub(crate) struct Instance {
    /// The layer definition's name, `Dense`.
    pub(super) kind: String,
    /// The dotted path of the instance, `blocks.3`.
    pub(super) path: String,
    pub(super) env: Env,
}

/// A compile-time value.
#[derive(Clone)]
pub(crate) enum Val {
    Tensor(Value),
    /// An integer, possibly symbolic (`B`, `B*T`).
    Int(Dim),
    Float(f64),
    Bool(bool),
    /// A string (file paths in settings; `str` arguments).
    #[allow(dead_code)]
    Str(String),
    List(Vec<Val>),
    Init(Init),
    Builtin(&'static str),
    Fn(Rc<Closure>),
    LayerCtor(Rc<LayerCtor>),
    Layer(Rc<Instance>),
    /// The result of a failed statement: uses of it are silently poisoned too.
    Poison,
}

impl Val {
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Val::Tensor(_) => "a tensor",
            Val::Int(_) => "an integer",
            Val::Float(_) => "a number",
            Val::Bool(_) => "a boolean",
            Val::Str(_) => "a string",
            Val::List(_) => "a list",
            Val::Init(_) => "an initializer",
            Val::Builtin(_) | Val::Fn(_) => "a function",
            Val::LayerCtor(_) => "a layer definition",
            Val::Layer(_) => "a layer",
            Val::Poison => "an invalid value",
        }
    }
}

/// What kind of body a statement runs in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    Model,
    Layer,
    Fn,
}

#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) env: Env,
    pub(super) body: Body,
    /// Prefix of parameter names declared here: "" in the model, "blocks.3." in a layer.
    pub(super) path: String,
}

/// A call argument after evaluation.
#[derive(Clone)]
pub(crate) struct CallArg {
    pub(crate) name: Option<ast::Ident>,
    pub(crate) val: Val,
    pub(crate) span: Span,
}

/// Lowers one model into the graph of one mode.
pub(crate) struct Lowerer {
    pub(super) g: Graph,
    /// The scope of the items: layer bodies are evaluated in it.
    pub(super) global: Env,
    pub(super) mode: Mode,
    pub(super) errors: Vec<Diagnostic>,
    /// Set by a limit error: lowering stops at once.
    pub(super) fatal: bool,
    pub(super) prelude: FileId,
    /// Fn definitions currently being inlined (by address), to reject recursion.
    pub(super) stack: Vec<*const ast::FnDef>,
    /// Which state a state leaf is.
    pub(super) state_of: HashMap<Value, usize>,
    /// Names declared in the model (params, states, layers, inputs, outputs), for duplicates.
    pub(super) declared: HashMap<String, Span>,
    pub(super) rand_streams: u32,
    /// Current depth of `eval` recursion, all calls included.
    pub(super) depth: usize,
    /// Loop iterations run so far, all loops together.
    pub(super) iterations: u64,
    /// List elements copied by `+` so far (against `limits::MAX_LIST_WORK`).
    pub(super) list_work: u64,
    /// Fn and layer calls inlined so far (against `limits::MAX_TOTAL_CALLS`).
    pub(super) calls: u64,
    /// Layer instances created so far.
    pub(super) instances: usize,
    /// Every scope created, cleared at the end to break closure/scope cycles.
    pub(super) scopes: Vec<Env>,
    pub(super) settings: Option<TrainSettings>,
    pub(super) train_span: Option<Span>,
    pub(super) loss_span: Option<Span>,
    pub(super) tune: Option<crate::ir::recipe::TuneSettings>,
    pub(super) tune_span: Option<Span>,
    /// Where the train block says `metrics = ...`.
    pub(super) metrics_span: Option<Span>,
    /// Where the train block says `augment = ...` and its other `augment_*` keys.
    pub(super) augment_spans: AugmentSpans,
    /// The model's arguments and their kinds (for the `tune` block's space).
    pub(super) model_args: Vec<(String, Option<ast::Kind>)>,
    /// The model being lowered, and every model of the files (a teacher names one).
    pub(super) model_name: String,
    pub(super) models: Rc<HashMap<String, Rc<ast::ModelDef>>>,
    /// The folder of each source file, for paths relative to the file that says them.
    pub(super) dirs: Rc<HashMap<FileId, PathBuf>>,
    /// Prelude items not parsed (`Items::prelude_unparsed`): suggested for unknown names.
    pub(super) prelude_unparsed: Rc<Vec<String>>,
    /// Set while a teacher's body is lowered inside this model.
    pub(super) teacher: Option<TeacherMode>,
}

/// A teacher being lowered: its tensors become states `<name>.<tensor>` read from `path`;
/// its inputs are this model's inputs of the same names; its outputs are collected.
pub(super) struct TeacherMode {
    pub(super) prefix: String,
    pub(super) path: String,
    pub(super) written: String,
    pub(super) model: String,
    pub(super) outputs: Vec<(String, Val)>,
}

pub(super) type R<T> = Result<T, Diagnostic>;

/// The spans of the `augment` settings of a train block, for E0615 and E0616.
#[derive(Clone, Debug, Default)]
pub(super) struct AugmentSpans {
    pub(super) block: Span,
    pub(super) list: Option<Span>,
    pub(super) items: Vec<Span>,
    pub(super) input: Option<Span>,
    pub(super) shape: Option<Span>,
}

impl AugmentSpans {
    pub(super) fn of(st: &[ast::Setting], block: Span) -> AugmentSpans {
        let value = |k: &str| st.iter().find(|x| x.key.name == k).map(|x| &x.value);
        let list = value("augment");
        let items = match list.map(|v| &v.kind) {
            Some(ExprKind::List(items)) => items.iter().map(|e| e.span).collect(),
            _ => list.map(|v| vec![v.span]).unwrap_or_default(),
        };
        AugmentSpans {
            block,
            list: list.map(|v| v.span),
            items,
            input: value("augment_input").map(|v| v.span),
            shape: value("augment_shape").map(|v| v.span),
        }
    }
    pub(super) fn at(&self, at: settings::augment::At) -> Span {
        use settings::augment::At;
        let span = match at {
            At::Item(k) => self.items.get(k).copied(),
            At::Input => self.input,
            At::Shape => self.shape,
            At::List => None,
        };
        span.or(self.list).unwrap_or(self.block)
    }
}
