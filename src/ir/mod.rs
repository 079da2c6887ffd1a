//! The IR: a graph of primitive ops over typed values, one graph per mode.
//!
//! Lowering produces a `Program` (a train graph, an eval graph and the checked training
//! settings); every later stage consumes and produces `Graph`s. Nodes are appended in
//! topological order and never mutated, so a value id is also a schedule position.
//! Analyses (liveness, buffer plans) are side tables keyed by `Value`.
//!
//! Architecture invariant: every node's type equals `op::infer` of its operands' types;
//! `verify` checks that, and every stage keeps it.

pub mod layout;
pub mod num;
pub mod op;
pub mod print;
pub mod recipe;
pub mod scalar;
pub mod ty;
pub mod verify;

use crate::diagnostic::Span;
use cranelift_entity::{entity_impl, PrimaryMap};
pub use op::{BinaryOp, Op, ReduceOp, UnaryOp, Window};
pub use ty::{DType, Dim, Shape, Sym, Type};

/// A value id: `v3` in the text format.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(u32);
entity_impl!(Value, "v");

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub args: Vec<Value>,
    pub ty: Type,
}

/// How a parameter or state is initialized (docs/language.md).
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Constant(f64),
    Normal {
        std: f64,
    },
    Uniform {
        lo: f64,
        hi: f64,
    },
    XavierUniform {
        gain: f64,
    },
    XavierNormal {
        gain: f64,
    },
    HeUniform {
        gain: f64,
    },
    HeNormal {
        gain: f64,
    },
    /// The first dim split into equal chunks, each initialized by its own initializer
    /// with its own fans (`chunks(zeros, ones, zeros, zeros)`: the LSTM bias with the
    /// forget gate's part at 1).
    Chunks(Vec<Init>),
    /// Read from a checkpoint: the tensor `tensor` of the file `path` (a teacher's frozen
    /// parameters and states). Not an initializer of random values: the run layer reads
    /// the file (`train::teacher`); checkpoints of the model do not store these tensors.
    Load {
        /// The file as read (joined to the folder of the `.nn` file that names it).
        path: String,
        /// The file as the source writes it (what the IR text shows).
        written: String,
        tensor: String,
    },
}

impl Init {
    pub fn describe(&self) -> String {
        let g = |name: &str, gain: f64| {
            if gain == 1.0 {
                name.to_string()
            } else {
                format!("{name}({})", num::num(gain))
            }
        };
        match self {
            Init::Zeros => "zeros".into(),
            Init::Ones => "ones".into(),
            Init::Constant(v) => format!("constant({})", num::num(*v)),
            Init::Normal { std } => format!("normal({})", num::num(*std)),
            Init::Uniform { lo, hi } => format!("uniform({}, {})", num::num(*lo), num::num(*hi)),
            Init::XavierUniform { gain } => g("xavier_uniform", *gain),
            Init::XavierNormal { gain } => g("xavier_normal", *gain),
            Init::HeUniform { gain } => g("he_uniform", *gain),
            Init::HeNormal { gain } => g("he_normal", *gain),
            Init::Chunks(parts) => {
                format!("chunks({})", parts.iter().map(Init::describe).collect::<Vec<_>>().join(", "))
            }
            Init::Load { written, tensor, .. } => format!("load({written:?}, {tensor:?})"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct InputDecl {
    pub name: String,
    pub ty: Type,
    pub value: Value,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    /// Dotted path: `fc1.W`, `blocks.3.fc.b`.
    pub name: String,
    /// Parameters and states have constant shapes.
    pub shape: Vec<i64>,
    pub init: Init,
    /// Whether `l1`/`l2`/`adamw` decay applies: weights (rank >= 2) only.
    pub decay: bool,
    pub value: Value,
    /// The new value written by the optimizer update (step graphs only).
    pub update: Option<Value>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StateDecl {
    pub name: String,
    pub shape: Vec<i64>,
    pub init: Init,
    pub value: Value,
    /// The new value written by `<-` in this graph (train graphs only).
    pub update: Option<Value>,
    pub span: Span,
}

impl ParamDecl {
    /// Whether the parameter is a weight (rank >= 2): what pruning may zero and int8
    /// quantization stores per output channel (biases and scales stay dense f32).
    pub fn is_weight(&self) -> bool {
        self.shape.len() >= 2
    }
}

impl StateDecl {
    /// The checkpoint file and tensor a frozen state is read from (a distilled model's
    /// teacher, `Init::Load`), if it is one.
    pub fn teacher_source(&self) -> Option<(&str, &str)> {
        match &self.init {
            Init::Load { path, tensor, .. } => Some((path.as_str(), tensor.as_str())),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub mode: Mode,
    /// Symbol names (`B`), indexed by `Sym`.
    pub symbols: Vec<String>,
    pub nodes: PrimaryMap<Value, Node>,
    pub inputs: Vec<InputDecl>,
    pub params: Vec<ParamDecl>,
    pub states: Vec<StateDecl>,
    pub outputs: Vec<(String, Value)>,
    pub loss: Option<Value>,
    /// The predictions that prelude losses score, in call order (set by lowering; passes
    /// that rebuild a graph leave it empty): what metrics are computed on.
    pub scored: Vec<Scored>,
}

/// A prediction scored by a loss: `cross_entropy(logits, y)` records `logits`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// The prelude loss: `cross_entropy`, `hinge`, `bce_logits` or `mse`.
    pub loss_fn: String,
    pub value: Value,
}

impl Graph {
    /// Whether the graph holds a teacher's frozen states.
    pub fn has_teacher(&self) -> bool {
        self.states.iter().any(|s| s.teacher_source().is_some())
    }

    /// The distinct teacher checkpoints of the graph, in declaration order.
    pub fn teacher_files(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (p, _) in self.states.iter().filter_map(StateDecl::teacher_source) {
            if !out.iter().any(|q| q == p) {
                out.push(p.to_string());
            }
        }
        out
    }

    pub fn new(mode: Mode) -> Graph {
        Graph {
            mode,
            symbols: Vec::new(),
            nodes: PrimaryMap::new(),
            inputs: Vec::new(),
            params: Vec::new(),
            states: Vec::new(),
            outputs: Vec::new(),
            loss: None,
            scored: Vec::new(),
        }
    }

    pub fn ty(&self, v: Value) -> &Type {
        &self.nodes[v].ty
    }

    /// Appends a node after checking it with the shape rule. `declared` is the type of a
    /// leaf (an op without operands); it is ignored otherwise.
    pub fn push(&mut self, op: Op, args: Vec<Value>, declared: Option<Type>) -> Result<Value, String> {
        for a in &args {
            if !self.nodes.is_valid(*a) {
                return Err(format!("operand {a} does not exist"));
            }
        }
        let tys: Vec<&Type> = args.iter().map(|a| &self.nodes[*a].ty).collect();
        let ty = op::infer(&op, &tys, declared.as_ref())?;
        Ok(self.nodes.push(Node { op, args, ty }))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Total element count of all parameters.
    pub fn param_count(&self) -> i64 {
        self.params.iter().map(|p| p.shape.iter().product::<i64>()).sum()
    }

    /// The graph's symbol named `name`, if any.
    pub fn symbol(&self, name: &str) -> Option<Sym> {
        self.symbols.iter().position(|s| s == name).map(|i| Sym(i as u32))
    }
}

/// A lowered model: the graphs of both modes and its training settings.
#[derive(Clone, Debug)]
pub struct Program {
    pub name: String,
    pub train: Graph,
    pub eval: Graph,
    pub settings: recipe::TrainSettings,
    /// The model's arguments as bound (defaults or overrides), rendered: `hidden = 256`.
    pub args: Vec<(String, String)>,
    /// The graphs are quantization-aware: the `quantize = qat` rewrite has run on them
    /// (once: `compress::quantize::with_qat` checks this, not the graphs).
    pub qat: bool,
}

/// A copy of `g` with the symbol `name` replaced by `value` in every type and attribute
/// (`--batch 32`). Errors when the symbol is unknown or the value is not positive.
pub fn bind_symbol(g: &Graph, name: &str, value: i64) -> Result<Graph, String> {
    let sym = g.symbol(name).ok_or_else(|| format!("the model has no symbol `{name}`"))?;
    if value < 1 {
        return Err(format!("`{name}` must be at least 1, found {value}"));
    }
    let bind = |s: Sym| if s == sym { Some(value) } else { None };
    let sub = |d: &Dim| d.substitute(&bind).ok_or_else(|| format!("`{name} = {value}` makes a size overflow"));
    let sub_shape = |s: &Shape| s.iter().map(sub).collect::<Result<Shape, String>>();
    let mut out = g.clone();
    for (_, node) in out.nodes.iter_mut() {
        node.ty.shape = sub_shape(&node.ty.shape)?;
        match &mut node.op {
            Op::DimValue(d) => *d = sub(d)?,
            Op::Broadcast { shape } | Op::Reshape { shape } => *shape = sub_shape(shape)?,
            Op::Pad { len, .. } => *len = sub(len)?,
            Op::ScatterAdd { rows } => *rows = sub(rows)?,
            _ => {}
        }
        match ty::numel(&node.ty.shape).map(|d| d.as_const()) {
            Some(Some(n)) if n <= crate::limits::MAX_TENSOR_ELEMENTS => {}
            Some(None) => {}
            other => {
                let n = other.flatten().map(|n| n.to_string()).unwrap_or_else(|| "more than 2^63".into());
                return Err(format!(
                    "with `{name} = {value}` a tensor has {n} elements; the limit is {}",
                    crate::limits::MAX_TENSOR_ELEMENTS
                ));
            }
        }
    }
    for i in out.inputs.iter_mut() {
        i.ty.shape = sub_shape(&i.ty.shape)?;
    }
    Ok(out)
}

/// For each input, the bound its integer values must stay below (`0..bound`), from the
/// ops that read it as ids: `one_hot n` (n classes) and `gather` (the table's rows),
/// through reshapes; the smallest when several read it. `None`: no such reader.
pub fn id_bounds(g: &Graph) -> Vec<Option<(i64, &'static str)>> {
    let source = |mut v: Value| -> Value {
        while let Op::Reshape { .. } = g.nodes[v].op {
            v = g.nodes[v].args[0];
        }
        v
    };
    let mut out = vec![None; g.inputs.len()];
    for (_, n) in g.nodes.iter() {
        let (ids, bound, what) = match &n.op {
            Op::OneHot { n: k } => (n.args[0], Some(*k), "classes of its one_hot"),
            Op::Gather => {
                (n.args[1], g.ty(n.args[0]).shape.first().and_then(Dim::as_const), "rows of the table it indexes")
            }
            _ => continue,
        };
        let Some(bound) = bound else { continue };
        let src = source(ids);
        if let Some(i) = g.inputs.iter().position(|inp| inp.value == src) {
            if out[i].is_none_or(|(b, _)| bound < b) {
                out[i] = Some((bound, what));
            }
        }
    }
    out
}
