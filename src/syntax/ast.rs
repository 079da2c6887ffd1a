//! The abstract syntax tree that `syntax::parse` produces and `lower` consumes.
//!
//! Every node carries the byte span of its source text. Nothing here knows about pest.

use crate::diagnostic::Span;

/// A parsed `.nn` file: its items in source order.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Model(ModelDef),
    Layer(LayerDef),
    Fn(FnDef),
    Use { path: String, span: Span },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelDef {
    pub name: Ident,
    /// Model arguments (`model M(hidden: int = 128)`), bound by defaults or `--set`.
    pub args: Vec<ArgDecl>,
    pub body: Block,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LayerDef {
    pub name: Ident,
    pub args: Vec<ArgDecl>,
    pub body: Block,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FnDef {
    pub name: Ident,
    pub args: Vec<ArgDecl>,
    pub ret: Option<TensorType>,
    pub body: Block,
    pub span: Span,
}

/// One declared argument of a `layer` or `fn`: `x: [N, n]`, `n: int`, `eps: float = 1e-5`.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgDecl {
    pub name: Ident,
    pub ty: ArgType,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ArgType {
    Kind(Kind, Span),
    Tensor(TensorType),
}

/// The compile-time kinds an argument may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    Float,
    Bool,
    Fn,
    Init,
    Str,
    List,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Bool => "bool",
            Kind::Fn => "fn",
            Kind::Init => "init",
            Kind::Str => "str",
            Kind::List => "list",
        }
    }
}

/// An element type as written (`i32[B]`; f32 when none is): the IR's.
pub use crate::ir::DType;

/// `i32[B]`, `[N, 5, 50]`, `[..., n]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorType {
    pub dtype: Option<DType>,
    pub dims: Vec<DimExpr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DimExpr {
    Ellipsis(Span),
    Expr(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    Input {
        name: Ident,
        ty: TensorType,
        span: Span,
    },
    /// `options`: `decay = false` after the initializer.
    Param {
        name: Ident,
        ty: TensorType,
        init: Option<Expr>,
        options: Vec<Setting>,
        span: Span,
    },
    State {
        name: Ident,
        ty: TensorType,
        init: Option<Expr>,
        options: Vec<Setting>,
        span: Span,
    },
    Layer {
        name: Ident,
        value: Expr,
        span: Span,
    },
    Output {
        name: Ident,
        value: Option<Expr>,
        span: Span,
    },
    Loss {
        value: Expr,
        span: Span,
    },
    Fn(FnDef),
    For {
        var: Ident,
        start: Expr,
        end: Expr,
        body: Block,
        span: Span,
    },
    If {
        negated: bool,
        cond: Expr,
        then: Block,
        otherwise: Option<Block>,
        span: Span,
    },
    Train {
        settings: Vec<Setting>,
        span: Span,
    },
    /// `tune { }`: a hyperparameter search over the train recipe.
    Tune {
        settings: Vec<Setting>,
        span: Span,
    },
    Update {
        name: Ident,
        value: Expr,
        span: Span,
    },
    Assign {
        name: Ident,
        value: Expr,
        span: Span,
    },
    /// `teacher = Big(hidden = 512) from "runs/big/best.safetensors"`: a frozen model whose
    /// eval-mode outputs are values of this one (`teacher.logits`). `model` is a name or a
    /// call of one; `path` a string.
    Teacher {
        name: Ident,
        model: Expr,
        path: Expr,
        span: Span,
    },
    Expr(Expr),
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Input { span, .. }
            | Stmt::Param { span, .. }
            | Stmt::State { span, .. }
            | Stmt::Layer { span, .. }
            | Stmt::Output { span, .. }
            | Stmt::Loss { span, .. }
            | Stmt::For { span, .. }
            | Stmt::If { span, .. }
            | Stmt::Train { span, .. }
            | Stmt::Tune { span, .. }
            | Stmt::Update { span, .. }
            | Stmt::Assign { span, .. }
            | Stmt::Teacher { span, .. } => *span,
            Stmt::Fn(f) => f.span,
            Stmt::Expr(e) => e.span,
        }
    }
}

/// `key = value` inside a `train { }` block.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    MatMul,
    Pow,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::MatMul => "@",
            BinOp::Pow => "^",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Number(f64, /* written as an integer */ bool),
    Str(String),
    Bool(bool),
    Training,
    Ellipsis,
    Name(String),
    List(Vec<Expr>),
    /// `[Block(64); 16]`: the first expression evaluated once per copy.
    Repeat(Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    /// A binary operation; `op_span` covers the operator symbol alone.
    Binary {
        op: BinOp,
        op_span: Span,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Call {
        callee: Box<Expr>,
        args: Vec<Arg>,
    },
    Index {
        base: Box<Expr>,
        items: Vec<IndexItem>,
    },
    Field {
        base: Box<Expr>,
        name: Ident,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum IndexItem {
    Expr(Expr),
    Slice { start: Option<Expr>, end: Option<Expr>, step: Option<Expr>, span: Span },
}
