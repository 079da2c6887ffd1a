//! Built-in functions (docs/language.md) that are not written in the prelude:
//! each checks its arguments and emits primitives. The prelude (`src/prelude.nn`) builds
//! the rest (activations, softmax, losses, layers) from these.

//!
//! `TABLE` lists every built-in with its parameters and its lowering; `call` binds the
//! arguments to the parameters and runs the lowering. The lowerings live by kind in
//! `math.rs`, `shape.rs`, `create.rs`, `conv.rs` and `init.rs`, above `args.rs`.

mod args;
mod conv;
mod create;
mod init;
mod math;
mod shape;

use crate::diagnostic::{Diagnostic, Span};
use crate::ir::UnaryOp;
use crate::lower::context::{set, CallArg, Env, Lowerer, Val, R};
use args::{bind, Bound};

pub(crate) use init::init_by_name;

/// How a built-in is lowered.
enum Lower {
    /// A unary primitive, folded on a constant when it has an f64 form (none for `erf`:
    /// std has no f64 erf, so a constant goes the tensor path).
    Unary(UnaryOp, Option<fn(f64) -> f64>),
    /// A function of the bound arguments and the call's span.
    Fn(fn(&mut Lowerer, &Bound, Span) -> R<Val>),
}

/// A built-in function: its name, its parameters (bound positionally first, then by name;
/// `None` for `chunks`, which takes any number of initializers positionally) and its
/// lowering.
struct Builtin {
    name: &'static str,
    params: Option<&'static [&'static str]>,
    lower: Lower,
}

const fn unary(name: &'static str, op: UnaryOp, fold: Option<fn(f64) -> f64>) -> Builtin {
    Builtin { name, params: Some(&["x"]), lower: Lower::Unary(op, fold) }
}

const fn func(
    name: &'static str,
    params: &'static [&'static str],
    f: fn(&mut Lowerer, &Bound, Span) -> R<Val>,
) -> Builtin {
    Builtin { name, params: Some(params), lower: Lower::Fn(f) }
}

fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Every built-in, in the root scope below the prelude.
static TABLE: &[Builtin] = &[
    unary("exp", UnaryOp::Exp, Some(f64::exp)),
    unary("log", UnaryOp::Log, Some(f64::ln)),
    unary("sqrt", UnaryOp::Sqrt, Some(f64::sqrt)),
    unary("abs", UnaryOp::Abs, Some(f64::abs)),
    unary("sign", UnaryOp::Sign, Some(sign)),
    unary("sigmoid", UnaryOp::Sigmoid, Some(sigmoid)),
    unary("tanh", UnaryOp::Tanh, Some(f64::tanh)),
    unary("erf", UnaryOp::Erf, None),
    unary("round", UnaryOp::Round, Some(f64::round_ties_even)),
    unary("floor", UnaryOp::Floor, Some(f64::floor)),
    unary("ceil", UnaryOp::Ceil, Some(f64::ceil)),
    unary("sin", UnaryOp::Sin, Some(f64::sin)),
    unary("cos", UnaryOp::Cos, Some(f64::cos)),
    func("maximum", &["a", "b"], math::maximum),
    func("minimum", &["a", "b"], math::maximum),
    func("max", &["x", "axis", "keep"], math::max),
    func("min", &["x", "axis", "keep"], math::max),
    func("sum", &["x", "axis", "keep"], math::sum),
    func("mean", &["x", "axis", "keep"], math::mean),
    func("var", &["x", "axis", "keep"], math::var),
    func("clamp", &["x", "lo", "hi"], math::clamp),
    func("where", &["cond", "a", "b"], math::select),
    func("stop_gradient", &["x"], math::stop_gradient),
    func("sum_over_ranks", &["x"], math::sum_over_ranks),
    func("reshape", &["x", "shape"], shape::reshape),
    func("transpose", &["x", "perm"], shape::transpose),
    func("flatten", &["x"], shape::flatten),
    func("concat", &["xs", "axis"], shape::concat),
    func("stack", &["xs", "axis"], shape::concat),
    func("one_hot", &["ids", "n"], create::one_hot),
    func("zeros", &["shape"], create::fill),
    func("ones", &["shape"], create::fill),
    func("full", &["shape", "value"], create::fill),
    func("arange", &["n"], create::arange),
    func("uniform_like", &["x"], create::uniform_like),
    func("gather", &["table", "ids"], create::gather),
    func("conv2d", &["x", "w", "stride", "padding"], conv::conv2d),
    func("maxpool2d", &["x", "k", "stride"], conv::pool),
    func("avgpool2d", &["x", "k", "stride"], conv::pool),
    func("shape", &["x"], shape::shape),
    func("size", &["x", "axis"], shape::size),
    func("normal", &["std"], init::normal),
    func("uniform", &["lo", "hi"], init::uniform),
    func("constant", &["value"], init::constant),
    Builtin { name: "chunks", params: None, lower: Lower::Fn(init::chunks) },
    func("xavier_uniform", &["gain"], init::gain),
    func("xavier_normal", &["gain"], init::gain),
    func("he_uniform", &["gain"], init::gain),
    func("he_normal", &["gain"], init::gain),
];

pub(crate) fn register(root: &Env) {
    for b in TABLE {
        set(root, b.name, Val::Builtin(b.name));
    }
}

/// Calls the built-in `name`: binds its arguments to its parameters, then lowers it.
pub(crate) fn call(lw: &mut Lowerer, name: &'static str, args: Vec<CallArg>, span: Span) -> R<Val> {
    let Some(builtin) = TABLE.iter().find(|b| b.name == name) else {
        return Err(Diagnostic::new("E0999", span, format!("internal error: built-in `{name}` has no lowering")));
    };
    let b = match builtin.params {
        Some(params) => bind(name, &args, params, span)?,
        None => Bound::positional(name, &args, span),
    };
    match builtin.lower {
        Lower::Unary(op, fold) => math::unary(lw, &b, op, fold, span),
        Lower::Fn(f) => f(lw, &b, span),
    }
}
