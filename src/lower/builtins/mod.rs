//! Built-in functions (docs/language.md) that are not written in the prelude:
//! each checks its arguments and emits primitives. The prelude (`src/prelude.nn`) builds
//! the rest (activations, softmax, losses, layers) from these.

use super::context::{ArgVal, Env, Lowerer, Val, R};
use crate::diagnostic::{Diagnostic, Span};
use crate::ir::{BinaryOp, DType, Dim, Init, Op, ReduceOp, Type, UnaryOp, Value, Window};
use crate::limits;

/// Every built-in name, in the root scope below the prelude.
pub const BUILTINS: &[&str] = &[
    "exp",
    "log",
    "sqrt",
    "abs",
    "sign",
    "sigmoid",
    "tanh",
    "erf",
    "round",
    "floor",
    "ceil",
    "sin",
    "cos",
    "maximum",
    "minimum",
    "max",
    "min",
    "sum",
    "mean",
    "var",
    "clamp",
    "where",
    "stop_gradient",
    "sum_over_ranks",
    "reshape",
    "transpose",
    "flatten",
    "concat",
    "stack",
    "one_hot",
    "zeros",
    "ones",
    "full",
    "arange",
    "uniform_like",
    "gather",
    "conv2d",
    "maxpool2d",
    "avgpool2d",
    "shape",
    "size",
    "normal",
    "uniform",
    "constant",
    "chunks",
    "xavier_uniform",
    "xavier_normal",
    "he_uniform",
    "he_normal",
];

pub(crate) fn register(root: &Env) {
    for name in BUILTINS {
        super::context::set(root, name, Val::Builtin(name));
    }
}

/// An initializer named without arguments (`= zeros`, `= xavier_uniform`).
pub(crate) fn init_by_name(name: &str, gain: f64) -> Option<Init> {
    Some(match name {
        "zeros" => Init::Zeros,
        "ones" => Init::Ones,
        "xavier_uniform" => Init::XavierUniform { gain },
        "xavier_normal" => Init::XavierNormal { gain },
        "he_uniform" => Init::HeUniform { gain },
        "he_normal" => Init::HeNormal { gain },
        "normal" => Init::Normal { std: 1.0 },
        _ => return None,
    })
}

/// Arguments matched to parameter names: positional first, then by name.
struct Bound<'a> {
    fname: &'static str,
    slots: Vec<Option<&'a ArgVal>>,
    params: &'static [&'static str],
    span: Span,
}

impl<'a> Bound<'a> {
    fn get(&self, name: &str) -> Option<&'a ArgVal> {
        let i = self.params.iter().position(|p| *p == name)?;
        self.slots[i]
    }
    fn req(&self, name: &str) -> R<&'a ArgVal> {
        self.get(name).ok_or_else(|| {
            Diagnostic::new("E0423", self.span, format!("`{}` needs the argument `{name}`", self.fname))
                .with_help(format!("`{}({})`", self.fname, self.params.join(", ")))
        })
    }
}

fn bind<'a>(fname: &'static str, args: &'a [ArgVal], params: &'static [&'static str], span: Span) -> R<Bound<'a>> {
    let mut slots = vec![None; params.len()];
    let mut pos = 0;
    for a in args {
        let i = match &a.name {
            Some(n) => params.iter().position(|p| *p == n.name).ok_or_else(|| {
                Diagnostic::new("E0420", n.span, format!("`{fname}` has no argument named `{}`", n.name))
                    .with_help(format!("its arguments are: {}", params.join(", ")))
            })?,
            None => {
                pos += 1;
                if pos > params.len() {
                    return Err(Diagnostic::new(
                        "E0421",
                        a.span,
                        format!("`{fname}` takes {} argument(s), found more", params.len()),
                    )
                    .with_label("extra argument"));
                }
                pos - 1
            }
        };
        if slots[i].is_some() {
            return Err(Diagnostic::new("E0422", a.span, format!("argument `{}` given twice", params[i])));
        }
        slots[i] = Some(a);
    }
    Ok(Bound { fname, slots, params, span })
}

fn number(a: &ArgVal, what: &str) -> R<f64> {
    match &a.val {
        Val::Float(f) => Ok(*f),
        Val::Int(d) if d.is_const() => Ok(d.as_const().unwrap_or(0) as f64),
        other => Err(Diagnostic::new("E0424", a.span, format!("{what} must be a number, found {}", other.describe()))),
    }
}

fn boolean(a: Option<&ArgVal>, default: bool) -> R<bool> {
    match a {
        None => Ok(default),
        Some(ArgVal { val: Val::Bool(b), .. }) => Ok(*b),
        Some(a) => Err(Diagnostic::new("E0424", a.span, format!("expected true or false, found {}", a.val.describe()))),
    }
}

impl Lowerer {
    fn tensor_arg(&mut self, a: &ArgVal, what: &str) -> R<Value> {
        match &a.val {
            Val::Tensor(t) => Ok(*t),
            Val::Float(_) | Val::Int(_) | Val::Bool(_) => self.tensor_of(&a.val, &[], a.span),
            other => {
                Err(Diagnostic::new("E0424", a.span, format!("{what} must be a tensor, found {}", other.describe())))
            }
        }
    }

    fn f32_arg(&mut self, a: &ArgVal, what: &str) -> R<Value> {
        let t = self.tensor_arg(a, what)?;
        self.require_f32(t, a.span, what)?;
        Ok(t)
    }

    fn int_arg(&self, a: &ArgVal, what: &str, min: i64) -> R<i64> {
        let v = match &a.val {
            Val::Int(d) => d.as_const(),
            _ => None,
        };
        match v {
            Some(v) if v >= min && v <= i64::from(u32::MAX) => Ok(v),
            Some(v) => Err(Diagnostic::new("E0436", a.span, format!("{what} must be at least {min}, found {v}"))),
            None => Err(Diagnostic::new(
                "E0436",
                a.span,
                format!("{what} must be a known integer, found {}", a.val.describe()),
            )),
        }
    }

    /// A list of dims (`[B, 2, 5]`), as written or from `shape(x)`.
    fn dims_arg(&self, a: &ArgVal, what: &str) -> R<Vec<Dim>> {
        let Val::List(items) = &a.val else {
            return Err(Diagnostic::new(
                "E0437",
                a.span,
                format!("{what} must be a list like [B, 64], found {}", a.val.describe()),
            ));
        };
        items.iter().map(|v| self.as_dim(v, a.span)).collect()
    }

    fn fixed_dims(&self, a: &ArgVal, what: &str) -> R<Vec<Dim>> {
        let dims = self.dims_arg(a, what)?;
        if dims.len() > limits::MAX_RANK {
            return Err(Diagnostic::new(
                "E0314",
                a.span,
                format!("rank {} is above the limit of {}", dims.len(), limits::MAX_RANK),
            ));
        }
        for d in &dims {
            if let Some(c) = d.as_const() {
                if c < 1 {
                    return Err(Diagnostic::new(
                        "E0437",
                        a.span,
                        format!("{what}: a dimension is {c}; it must be at least 1"),
                    ));
                }
            }
        }
        Ok(dims)
    }
}

/// A unary built-in: its primitive and, when it has one, its f64 constant folding.
type UnaryBuiltin = (UnaryOp, Option<fn(f64) -> f64>);

fn fold_unary(name: &str) -> Option<UnaryBuiltin> {
    Some(match name {
        "exp" => (UnaryOp::Exp, Some(f64::exp as fn(f64) -> f64)),
        "log" => (UnaryOp::Log, Some(f64::ln as fn(f64) -> f64)),
        "sqrt" => (UnaryOp::Sqrt, Some(f64::sqrt as fn(f64) -> f64)),
        "abs" => (UnaryOp::Abs, Some(f64::abs as fn(f64) -> f64)),
        "sign" => (
            UnaryOp::Sign,
            Some(
                (|x: f64| {
                    if x > 0.0 {
                        1.0
                    } else if x < 0.0 {
                        -1.0
                    } else {
                        0.0
                    }
                }) as fn(f64) -> f64,
            ),
        ),
        "sigmoid" => (UnaryOp::Sigmoid, Some((|x: f64| 1.0 / (1.0 + (-x).exp())) as fn(f64) -> f64)),
        "tanh" => (UnaryOp::Tanh, Some(f64::tanh as fn(f64) -> f64)),
        // erf of a constant is left to the tensor path (no f64 erf in std).
        "erf" => (UnaryOp::Erf, None),
        "round" => (UnaryOp::Round, Some(f64::round_ties_even as fn(f64) -> f64)),
        "floor" => (UnaryOp::Floor, Some(f64::floor as fn(f64) -> f64)),
        "ceil" => (UnaryOp::Ceil, Some(f64::ceil as fn(f64) -> f64)),
        "sin" => (UnaryOp::Sin, Some(f64::sin as fn(f64) -> f64)),
        "cos" => (UnaryOp::Cos, Some(f64::cos as fn(f64) -> f64)),
        _ => return None,
    })
}

/// Calls the built-in `name`.
pub(crate) fn call(lw: &mut Lowerer, name: &'static str, args: Vec<ArgVal>, span: Span) -> R<Val> {
    if let Some((op, fold)) = fold_unary(name) {
        let b = bind(name, &args, &["x"], span)?;
        let x = b.req("x")?;
        if let (Some(f), Val::Float(_) | Val::Int(_)) = (fold, &x.val) {
            if let Ok(v) = number(x, "x") {
                return Ok(Val::Float(f(v)));
            }
        }
        let t = lw.f32_arg(x, &format!("the argument of `{name}`"))?;
        return Ok(Val::Tensor(lw.push(Op::Unary(op), vec![t], None, span)?));
    }
    match name {
        "maximum" | "minimum" => {
            let b = bind(name, &args, &["a", "b"], span)?;
            let (x, y) = (b.req("a")?, b.req("b")?);
            let op = if name == "maximum" { BinaryOp::Max } else { BinaryOp::Min };
            elementwise_or_fold(lw, op, x, y, span)
        }
        "max" | "min" => {
            let op = if name == "max" { BinaryOp::Max } else { BinaryOp::Min };
            let positional = args.iter().filter(|a| a.name.is_none()).count();
            if positional == 2 && args.len() == 2 {
                return elementwise_or_fold(lw, op, &args[0], &args[1], span);
            }
            let b = bind(name, &args, &["x", "axis", "keep"], span)?;
            let rop = if name == "max" { ReduceOp::Max } else { ReduceOp::Min };
            reduction(lw, &b, span, |lw, x, axes, keep| lw.reduce(x, rop, axes, keep, span))
        }
        "sum" => {
            let b = bind(name, &args, &["x", "axis", "keep"], span)?;
            reduction(lw, &b, span, |lw, x, axes, keep| lw.reduce(x, ReduceOp::Sum, axes, keep, span))
        }
        "mean" => {
            let b = bind(name, &args, &["x", "axis", "keep"], span)?;
            reduction(lw, &b, span, |lw, x, axes, keep| lw.mean(x, axes, keep, span))
        }
        "var" => {
            // The biased variance (divide by n), as in the course notes.
            let b = bind(name, &args, &["x", "axis", "keep"], span)?;
            reduction(lw, &b, span, |lw, x, axes, keep| {
                let shape = lw.g.ty(x).shape.clone();
                let m = lw.mean(x, axes.clone(), true, span)?;
                let m = lw.broadcast_to(m, &shape, span)?;
                let d = lw.push(Op::Binary(BinaryOp::Sub), vec![x, m], None, span)?;
                let sq = lw.push(Op::Binary(BinaryOp::Mul), vec![d, d], None, span)?;
                lw.mean(sq, axes, keep, span)
            })
        }
        "clamp" => {
            let b = bind(name, &args, &["x", "lo", "hi"], span)?;
            let (x, lo, hi) = (b.req("x")?, b.req("lo")?, b.req("hi")?);
            let m = elementwise_or_fold(lw, BinaryOp::Max, x, lo, span)?;
            let m = ArgVal { name: None, val: m, span: x.span };
            elementwise_or_fold(lw, BinaryOp::Min, &m, hi, span)
        }
        "where" => {
            let b = bind(name, &args, &["cond", "a", "b"], span)?;
            let (c, x, y) = (b.req("cond")?, b.req("a")?, b.req("b")?);
            let mut shape = Vec::new();
            for a in [c, x, y] {
                if let Val::Tensor(t) = &a.val {
                    lw.require_f32(*t, a.span, "`where`")?;
                    let s = lw.g.ty(*t).shape.clone();
                    shape = lw.broadcast_shapes(&shape, &s).map_err(|why| {
                        Diagnostic::new("E0402", a.span, format!("the arguments of `where` do not broadcast: {why}"))
                    })?;
                }
            }
            let mut vals = Vec::new();
            for a in [c, x, y] {
                let t = match &a.val {
                    Val::Tensor(t) => lw.broadcast_to(*t, &shape, a.span)?,
                    other => lw.tensor_of(other, &shape, a.span)?,
                };
                vals.push(t);
            }
            Ok(Val::Tensor(lw.push(Op::Select, vals, None, span)?))
        }
        "sum_over_ranks" => {
            let b = bind(name, &args, &["x"], span)?;
            let t = lw.f32_arg(b.req("x")?, "the argument of `sum_over_ranks`")?;
            Ok(Val::Tensor(lw.push(Op::AllReduce, vec![t], None, span)?))
        }
        "stop_gradient" => {
            let b = bind(name, &args, &["x"], span)?;
            let t = lw.f32_arg(b.req("x")?, "the argument of `stop_gradient`")?;
            Ok(Val::Tensor(lw.push(Op::StopGradient, vec![t], None, span)?))
        }
        "reshape" => {
            let b = bind(name, &args, &["x", "shape"], span)?;
            let x = b.req("x")?;
            let t = lw.tensor_arg(x, "the tensor to reshape")?;
            let sa = b.req("shape")?;
            let Val::List(items) = &sa.val else {
                return Err(Diagnostic::new("E0437", sa.span, "the new shape must be a list like [B, 2, 5]"));
            };
            let from = lw.g.ty(t).shape.clone();
            let total = crate::ir::ty::numel(&from).ok_or_else(|| Diagnostic::new("E0412", span, "size overflow"))?;
            let mut dims: Vec<Option<Dim>> = Vec::new();
            for it in items {
                let d = lw.as_dim(it, sa.span)?;
                if d.as_const() == Some(-1) {
                    if dims.iter().any(Option::is_none) {
                        return Err(Diagnostic::new("E0438", sa.span, "only one dim of a reshape may be -1"));
                    }
                    dims.push(None);
                } else {
                    if let Some(c) = d.as_const() {
                        if c < 1 {
                            return Err(Diagnostic::new(
                                "E0438",
                                sa.span,
                                format!("a reshape dim is {c}; it must be at least 1 (or -1)"),
                            ));
                        }
                    }
                    dims.push(Some(d));
                }
            }
            let known: Vec<Dim> = dims.iter().flatten().cloned().collect();
            let known_n =
                crate::ir::ty::numel(&known).ok_or_else(|| Diagnostic::new("E0412", span, "size overflow"))?;
            let shape: Vec<Dim> = if dims.iter().any(Option::is_none) {
                let Some(rest) = total.div_exact(&known_n) else {
                    return Err(Diagnostic::new(
                        "E0438",
                        span,
                        format!(
                            "cannot reshape {} to {}: {} elements do not divide by {}",
                            lw.shape_str(&from),
                            render_dims(lw, &dims),
                            total.display(&lw.g.symbols),
                            known_n.display(&lw.g.symbols)
                        ),
                    ));
                };
                dims.into_iter().map(|d| d.unwrap_or_else(|| rest.clone())).collect()
            } else {
                known
            };
            let n2 = crate::ir::ty::numel(&shape).ok_or_else(|| Diagnostic::new("E0412", span, "size overflow"))?;
            if n2 != total {
                return Err(Diagnostic::new(
                    "E0438",
                    span,
                    format!(
                        "cannot reshape {} ({} elements) to {} ({} elements)",
                        lw.shape_str(&from),
                        total.display(&lw.g.symbols),
                        lw.shape_str(&shape),
                        n2.display(&lw.g.symbols)
                    ),
                )
                .with_help("a reshape keeps the number of elements"));
            }
            Ok(Val::Tensor(lw.reshape(t, shape, span)?))
        }
        "transpose" => {
            let b = bind(name, &args, &["x", "perm"], span)?;
            let t = lw.tensor_arg(b.req("x")?, "the tensor to transpose")?;
            let r = lw.g.ty(t).rank();
            let perm: Vec<u32> = match b.get("perm") {
                None => (0..r as u32).rev().collect(),
                Some(p) => {
                    let dims = lw.dims_arg(p, "the permutation")?;
                    let mut out = Vec::new();
                    for d in dims {
                        let Some(c) = d.as_const() else {
                            return Err(Diagnostic::new("E0439", p.span, "a permutation lists axes"));
                        };
                        let a = if c < 0 { c + r as i64 } else { c };
                        if a < 0 || a >= r as i64 || out.contains(&(a as u32)) {
                            return Err(Diagnostic::new(
                                "E0439",
                                p.span,
                                format!("not a permutation of the {r} axes of {}", lw.ty_str(&lw.g.ty(t).clone())),
                            ));
                        }
                        out.push(a as u32);
                    }
                    if out.len() != r {
                        return Err(Diagnostic::new(
                            "E0439",
                            p.span,
                            format!("a permutation of a rank-{r} tensor lists {r} axes, found {}", out.len()),
                        ));
                    }
                    out
                }
            };
            if perm.iter().enumerate().all(|(i, &p)| i as u32 == p) {
                return Ok(Val::Tensor(t));
            }
            Ok(Val::Tensor(lw.push(Op::Transpose { perm }, vec![t], None, span)?))
        }
        "flatten" => {
            let b = bind(name, &args, &["x"], span)?;
            let t = lw.tensor_arg(b.req("x")?, "the tensor to flatten")?;
            let shape = lw.g.ty(t).shape.clone();
            if shape.is_empty() {
                return Err(Diagnostic::new("E0439", span, "`flatten` needs a tensor of rank >= 1"));
            }
            let rest =
                crate::ir::ty::numel(&shape[1..]).ok_or_else(|| Diagnostic::new("E0412", span, "size overflow"))?;
            Ok(Val::Tensor(lw.reshape(t, vec![shape[0].clone(), rest], span)?))
        }
        "concat" | "stack" => {
            let b = bind(name, &args, &["xs", "axis"], span)?;
            let xs = b.req("xs")?;
            let Val::List(items) = &xs.val else {
                return Err(Diagnostic::new(
                    "E0437",
                    xs.span,
                    format!("`{name}` takes a list of tensors: `{name}([a, b], axis)`"),
                ));
            };
            if items.is_empty() {
                return Err(Diagnostic::new("E0437", xs.span, format!("`{name}` needs at least one tensor")));
            }
            let mut ts = Vec::new();
            for it in items {
                let a = ArgVal { name: None, val: it.clone(), span: xs.span };
                ts.push(lw.tensor_arg(&a, &format!("each element of `{name}`"))?);
            }
            let first = lw.g.ty(ts[0]).clone();
            let rank = first.rank() + usize::from(name == "stack");
            let axis = match b.get("axis") {
                None => 0u32,
                Some(a) => lw.axes(Some((&a.val, a.span)), rank, &first)?.first().copied().unwrap_or(0),
            };
            if name == "stack" {
                for t in ts.iter_mut() {
                    let mut s = lw.g.ty(*t).shape.clone();
                    if lw.g.ty(*t) != &first {
                        return Err(Diagnostic::new(
                            "E0441",
                            xs.span,
                            format!(
                                "`stack` needs tensors of one type; found {} and {}",
                                lw.ty_str(&first),
                                lw.ty_str(&lw.g.ty(*t).clone())
                            ),
                        ));
                    }
                    s.insert(axis as usize, Dim::konst(1));
                    *t = lw.reshape(*t, s, span)?;
                }
            } else {
                for t in &ts {
                    let ty = lw.g.ty(*t).clone();
                    let same = ty.rank() == first.rank()
                        && ty.dtype == first.dtype
                        && ty
                            .shape
                            .iter()
                            .zip(&first.shape)
                            .enumerate()
                            .all(|(i, (a, b))| i == axis as usize || a == b);
                    if !same {
                        return Err(Diagnostic::new(
                            "E0441",
                            xs.span,
                            format!(
                                "`concat` along axis {axis} needs equal other dims; found {} and {}",
                                lw.ty_str(&first),
                                lw.ty_str(&ty)
                            ),
                        ));
                    }
                }
            }
            if ts.len() == 1 {
                return Ok(Val::Tensor(ts[0]));
            }
            Ok(Val::Tensor(lw.push(Op::Concat { axis }, ts, None, span)?))
        }
        "one_hot" => {
            let b = bind(name, &args, &["ids", "n"], span)?;
            let ids = b.req("ids")?;
            let t = lw.tensor_arg(ids, "the ids")?;
            if lw.g.ty(t).dtype != DType::I32 {
                return Err(Diagnostic::new(
                    "E0442",
                    ids.span,
                    format!("`one_hot` needs i32 ids, found {}", lw.ty_str(&lw.g.ty(t).clone())),
                )
                .with_help("declare labels as `input y: i32[B]`"));
            }
            let n = lw.int_arg(b.req("n")?, "the number of classes", 1)?;
            Ok(Val::Tensor(lw.push(Op::OneHot { n }, vec![t], None, span)?))
        }
        "zeros" | "ones" | "full" => {
            let params: &'static [&'static str] = if name == "full" { &["shape", "value"] } else { &["shape"] };
            let b = bind(name, &args, params, span)?;
            let shape = lw.fixed_dims(b.req("shape")?, "the shape")?;
            let v = match name {
                "zeros" => 0.0,
                "ones" => 1.0,
                _ => number(b.req("value")?, "the fill value")?,
            };
            Ok(Val::Tensor(lw.push(Op::Fill(v), vec![], Some(Type::f32(shape)), span)?))
        }
        "arange" => {
            let b = bind(name, &args, &["n"], span)?;
            let n = lw.int_arg(b.req("n")?, "the length", 1)?;
            Ok(Val::Tensor(lw.push(Op::Iota { axis: 0 }, vec![], Some(Type::f32(vec![Dim::konst(n)])), span)?))
        }
        "uniform_like" => {
            let b = bind(name, &args, &["x"], span)?;
            let t = lw.tensor_arg(b.req("x")?, "the template")?;
            let shape = lw.g.ty(t).shape.clone();
            let stream = lw.rand_streams;
            lw.rand_streams += 1;
            Ok(Val::Tensor(lw.push(Op::Rand { stream }, vec![], Some(Type::f32(shape)), span)?))
        }
        "gather" => {
            let b = bind(name, &args, &["table", "ids"], span)?;
            let table = lw.f32_arg(b.req("table")?, "the table")?;
            let ids_a = b.req("ids")?;
            let ids = lw.tensor_arg(ids_a, "the ids")?;
            if lw.g.ty(ids).dtype != DType::I32 {
                return Err(Diagnostic::new("E0442", ids_a.span, "`gather` needs i32 ids")
                    .with_help("declare ids as `input tokens: i32[B, T]`"));
            }
            if lw.g.ty(table).rank() < 1 {
                return Err(Diagnostic::new("E0443", span, "`gather` needs a table of rank >= 1"));
            }
            Ok(Val::Tensor(lw.push(Op::Gather, vec![table, ids], None, span)?))
        }
        "conv2d" => {
            let b = bind(name, &args, &["x", "w", "stride", "padding"], span)?;
            let xa = b.req("x")?;
            let wa = b.req("w")?;
            let x = lw.f32_arg(xa, "the input")?;
            let w = lw.f32_arg(wa, "the weight")?;
            let stride = b.get("stride").map(|a| lw.int_arg(a, "the stride", 1)).transpose()?.unwrap_or(1);
            let pad = b.get("padding").map(|a| lw.int_arg(a, "the padding", 0)).transpose()?.unwrap_or(0);
            conv2d(lw, x, w, stride, pad, xa.span, wa.span, span).map(Val::Tensor)
        }
        "maxpool2d" | "avgpool2d" => {
            let b = bind(name, &args, &["x", "k", "stride"], span)?;
            let xa = b.req("x")?;
            let x = lw.f32_arg(xa, "the input")?;
            let k = lw.int_arg(b.req("k")?, "the window size", 1)?;
            let s = b.get("stride").map(|a| lw.int_arg(a, "the stride", 1)).transpose()?.unwrap_or(k);
            let p = windows(lw, x, k, k, s, 0, xa.span, span)?;
            let r = if name == "maxpool2d" {
                lw.reduce(p, ReduceOp::Max, vec![2, 3], false, span)?
            } else {
                lw.mean(p, vec![2, 3], false, span)?
            };
            Ok(Val::Tensor(r))
        }
        "shape" => {
            let b = bind(name, &args, &["x"], span)?;
            let t = lw.tensor_arg(b.req("x")?, "the tensor")?;
            Ok(Val::List(lw.g.ty(t).shape.iter().cloned().map(Val::Int).collect()))
        }
        "size" => {
            let b = bind(name, &args, &["x", "axis"], span)?;
            let t = lw.tensor_arg(b.req("x")?, "the tensor")?;
            let ty = lw.g.ty(t).clone();
            let axes = lw.axes(b.get("axis").map(|a| (&a.val, a.span)), ty.rank(), &ty)?;
            let mut n = Dim::konst(1);
            for a in axes {
                n = n.mul(&ty.shape[a as usize]).ok_or_else(|| Diagnostic::new("E0412", span, "size overflow"))?;
            }
            Ok(Val::Int(n))
        }
        "normal" => {
            let b = bind(name, &args, &["std"], span)?;
            let std = b.get("std").map(|a| number(a, "`std`")).transpose()?.unwrap_or(1.0);
            if !(std > 0.0 && std.is_finite()) {
                return Err(Diagnostic::new(
                    "E0444",
                    span,
                    format!("`normal` needs a standard deviation above 0, found {std}"),
                ));
            }
            Ok(Val::Init(Init::Normal { std }))
        }
        "uniform" => {
            let b = bind(name, &args, &["lo", "hi"], span)?;
            let lo = number(b.req("lo")?, "`lo`")?;
            let hi = number(b.req("hi")?, "`hi`")?;
            if !lo.is_finite() || !hi.is_finite() {
                return Err(Diagnostic::new(
                    "E0444",
                    span,
                    format!("`uniform` needs finite bounds, found {lo} and {hi}"),
                ));
            }
            if lo > hi {
                return Err(Diagnostic::new("E0444", span, format!("`uniform` needs lo <= hi, found {lo} > {hi}")));
            }
            Ok(Val::Init(Init::Uniform { lo, hi }))
        }
        "chunks" => {
            if args.is_empty() || args.iter().any(|a| a.name.is_some()) {
                return Err(Diagnostic::new("E0444", span, "`chunks` takes one or more initializers, positionally")
                    .with_help("e.g. `chunks(zeros, ones, zeros, zeros)` splits the first dim in four"));
            }
            let mut parts = Vec::with_capacity(args.len());
            for a in &args {
                parts.push(lw.as_init(&a.val, a.span)?);
            }
            Ok(Val::Init(Init::Chunks(parts)))
        }
        "constant" => {
            let b = bind(name, &args, &["value"], span)?;
            let v = number(b.req("value")?, "the value")?;
            if !v.is_finite() {
                return Err(Diagnostic::new("E0444", span, format!("`constant` needs a finite value, found {v}")));
            }
            Ok(Val::Init(Init::Constant(v)))
        }
        "xavier_uniform" | "xavier_normal" | "he_uniform" | "he_normal" => {
            let b = bind(name, &args, &["gain"], span)?;
            let gain = b.get("gain").map(|a| number(a, "`gain`")).transpose()?.unwrap_or(1.0);
            Ok(Val::Init(init_by_name(name, gain).unwrap_or(Init::Zeros)))
        }
        _ => Err(Diagnostic::new("E0999", span, format!("internal error: built-in `{name}` has no lowering"))),
    }
}

fn render_dims(lw: &Lowerer, dims: &[Option<Dim>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Some(d) => d.display(&lw.g.symbols).to_string(),
            None => "-1".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn elementwise_or_fold(lw: &mut Lowerer, op: BinaryOp, x: &ArgVal, y: &ArgVal, span: Span) -> R<Val> {
    if let (Ok(a), Ok(b)) = (number(x, "a"), number(y, "b")) {
        if !matches!(x.val, Val::Tensor(_)) && !matches!(y.val, Val::Tensor(_)) {
            return Ok(Val::Float(if op == BinaryOp::Max { a.max(b) } else { a.min(b) }));
        }
    }
    Ok(Val::Tensor(lw.elementwise(op, &x.val, &y.val, x.span, y.span, span)?))
}

fn reduction(
    lw: &mut Lowerer,
    b: &Bound,
    span: Span,
    f: impl FnOnce(&mut Lowerer, Value, Vec<u32>, bool) -> R<Value>,
) -> R<Val> {
    let xa = b.req("x")?;
    let x = lw.f32_arg(xa, &format!("the argument of `{}`", b.fname))?;
    let ty = lw.g.ty(x).clone();
    let axes = lw.axes(b.get("axis").map(|a| (&a.val, a.span)), ty.rank(), &ty)?;
    let keep = boolean(b.get("keep"), false)?;
    let _ = span;
    Ok(Val::Tensor(f(lw, x, axes, keep)?))
}

/// The windows of an NCHW image: `[N, C, kh, kw, OH, OW]`.
#[allow(clippy::too_many_arguments)]
fn windows(lw: &mut Lowerer, x: Value, kh: i64, kw: i64, stride: i64, pad: i64, xspan: Span, span: Span) -> R<Value> {
    let ty = lw.g.ty(x).clone();
    if ty.rank() != 4 {
        return Err(Diagnostic::new(
            "E0445",
            xspan,
            format!("expected an NCHW image [N, C, H, W], found {}", lw.ty_str(&ty)),
        )
        .with_help("reshape the input to [B, channels, height, width]"));
    }
    let (Some(h), Some(w)) = (ty.shape[2].as_const(), ty.shape[3].as_const()) else {
        return Err(Diagnostic::new("E0445", xspan, "the image height and width must be known numbers"));
    };
    let big = |v: i64| v > 1 << 20;
    if big(kh) || big(kw) || big(stride) || big(pad) {
        return Err(Diagnostic::new("E0446", span, "window sizes, strides and padding must be below 2^20"));
    }
    if Window::out_len(h, kh as u32, stride as u32, pad as u32).is_none()
        || Window::out_len(w, kw as u32, stride as u32, pad as u32).is_none()
    {
        return Err(Diagnostic::new(
            "E0446",
            span,
            format!("a {kh}x{kw} window does not fit in a {h}x{w} image with padding {pad}"),
        ));
    }
    let win = Window {
        kh: kh as u32,
        kw: kw as u32,
        stride_h: stride as u32,
        stride_w: stride as u32,
        pad_h: pad as u32,
        pad_w: pad as u32,
    };
    lw.push(Op::Im2col(win), vec![x], None, span)
}

/// `conv2d(x [N, C, H, W], w [O, C, kh, kw])` as im2col + one GEMM (cross-correlation,
/// as in PyTorch).
#[allow(clippy::too_many_arguments)]
fn conv2d(
    lw: &mut Lowerer,
    x: Value,
    w: Value,
    stride: i64,
    pad: i64,
    xspan: Span,
    wspan: Span,
    span: Span,
) -> R<Value> {
    let tx = lw.g.ty(x).clone();
    let tw = lw.g.ty(w).clone();
    if tw.rank() != 4 {
        return Err(Diagnostic::new(
            "E0445",
            wspan,
            format!("a conv2d weight is [c_out, c_in, k, k], found {}", lw.ty_str(&tw)),
        ));
    }
    if tx.rank() == 4 && tx.shape[1] != tw.shape[1] {
        let _ = span;
        return Err(Diagnostic::new(
            "E0447",
            xspan,
            format!(
                "conv2d channels differ: the input has {} channels but the weight expects {}",
                tx.shape[1].display(&lw.g.symbols),
                tw.shape[1].display(&lw.g.symbols)
            ),
        )
        .with_label(format!("this is {}", lw.ty_str(&tx)))
        .with_note(wspan, format!("this is {}", lw.ty_str(&tw)))
        .with_help("the weight of conv2d is [c_out, c_in, k, k] and the input [N, c_in, H, W]"));
    }
    let (Some(kh), Some(kw)) = (tw.shape[2].as_const(), tw.shape[3].as_const()) else {
        return Err(Diagnostic::new("E0445", wspan, "the kernel size must be known"));
    };
    let p = windows(lw, x, kh, kw, stride, pad, xspan, span)?;
    let ps = lw.g.ty(p).shape.clone(); // [N, C, kh, kw, OH, OW]
    let (n, c, oh, ow) = (ps[0].clone(), ps[1].clone(), ps[4].clone(), ps[5].clone());
    let o = tw.shape[0].clone();
    let overflow = || Diagnostic::new("E0412", span, "size overflow");
    // Per image, W [O, C·kh·kw] @ patches [C·kh·kw, OH·OW] is the NCHW output directly:
    // the patches' layout [N, C, kh, kw, OH, OW] is already [N, C·kh·kw, OH·OW], and the
    // GEMM reads the broadcast weight with a zero batch stride (no transposes).
    let ohw = oh.mul(&ow).ok_or_else(overflow)?;
    let ckk = c.mul(&Dim::konst(kh * kw)).ok_or_else(overflow)?;
    let pm = lw.reshape(p, vec![n.clone(), ckk.clone(), ohw], span)?;
    let wm = lw.reshape(w, vec![o.clone(), ckk.clone()], span)?;
    let wb = lw.broadcast_to(wm, &[n.clone(), o.clone(), ckk], span)?;
    let y = lw.push(Op::MatMul, vec![wb, pm], None, span)?;
    lw.reshape(y, vec![n, o, oh, ow], span)
}
