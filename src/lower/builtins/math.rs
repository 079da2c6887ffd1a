//! Elementwise and reducing built-ins: the unary primitives, `maximum`/`minimum`, the
//! reductions (`max`, `min`, `sum`, `mean`, `var`), `clamp`, `where`, `sum_over_ranks` and
//! `stop_gradient`.

use super::args::{boolean, number, Bound};
use crate::diagnostic::{Diagnostic, Span};
use crate::ir::{BinaryOp, Op, ReduceOp, UnaryOp, Value};
use crate::lower::context::{CallArg, Lowerer, Val, R};

/// A unary built-in: folded on a constant when it has an f64 form, else its primitive.
pub(super) fn unary(lw: &mut Lowerer, b: &Bound, op: UnaryOp, fold: Option<fn(f64) -> f64>, span: Span) -> R<Val> {
    let x = b.req("x")?;
    if let (Some(f), Val::Float(_) | Val::Int(_)) = (fold, &x.val) {
        if let Ok(v) = number(x, "x") {
            return Ok(Val::Float(f(v)));
        }
    }
    let t = lw.f32_arg(x, &format!("the argument of `{}`", b.fname))?;
    Ok(Val::Tensor(lw.push(Op::Unary(op), vec![t], None, span)?))
}

/// `maximum(a, b)` and `minimum(a, b)`: elementwise, folded on numbers.
pub(super) fn maximum(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let name = b.fname;
    let (x, y) = (b.req("a")?, b.req("b")?);
    let op = if name == "maximum" { BinaryOp::Max } else { BinaryOp::Min };
    elementwise_or_fold(lw, op, x, y, span)
}

/// `max`/`min`: of two values elementwise (`max(a, b)`), else a reduction (`max(x, axis, keep)`).
pub(super) fn max(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let name = b.fname;
    let op = if name == "max" { BinaryOp::Max } else { BinaryOp::Min };
    let positional = b.args.iter().filter(|a| a.name.is_none()).count();
    if positional == 2 && b.args.len() == 2 {
        return elementwise_or_fold(lw, op, &b.args[0], &b.args[1], span);
    }
    let rop = if name == "max" { ReduceOp::Max } else { ReduceOp::Min };
    reduction(lw, b, span, |lw, x, axes, keep| lw.reduce(x, rop, axes, keep, span))
}

/// `sum(x, axis, keep)`.
pub(super) fn sum(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    reduction(lw, b, span, |lw, x, axes, keep| lw.reduce(x, ReduceOp::Sum, axes, keep, span))
}

/// `mean(x, axis, keep)`.
pub(super) fn mean(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    reduction(lw, b, span, |lw, x, axes, keep| lw.mean(x, axes, keep, span))
}

/// `var(x, axis, keep)`.
pub(super) fn var(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    // The biased variance (divide by n), as in the course notes.
    reduction(lw, b, span, |lw, x, axes, keep| {
        let shape = lw.g.ty(x).shape.clone();
        let m = lw.mean(x, axes.clone(), true, span)?;
        let m = lw.broadcast_to(m, &shape, span)?;
        let d = lw.push(Op::Binary(BinaryOp::Sub), vec![x, m], None, span)?;
        let sq = lw.push(Op::Binary(BinaryOp::Mul), vec![d, d], None, span)?;
        lw.mean(sq, axes, keep, span)
    })
}

/// `clamp(x, lo, hi)`.
pub(super) fn clamp(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let (x, lo, hi) = (b.req("x")?, b.req("lo")?, b.req("hi")?);
    let m = elementwise_or_fold(lw, BinaryOp::Max, x, lo, span)?;
    let m = CallArg { name: None, val: m, span: x.span };
    elementwise_or_fold(lw, BinaryOp::Min, &m, hi, span)
}

/// `where(cond, a, b)`: the three broadcast to one shape.
pub(super) fn select(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
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

/// `sum_over_ranks(x)`: an all-reduce over the data-parallel ranks.
pub(super) fn sum_over_ranks(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let t = lw.f32_arg(b.req("x")?, "the argument of `sum_over_ranks`")?;
    Ok(Val::Tensor(lw.push(Op::AllReduce, vec![t], None, span)?))
}

/// `stop_gradient(x)`.
pub(super) fn stop_gradient(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let t = lw.f32_arg(b.req("x")?, "the argument of `stop_gradient`")?;
    Ok(Val::Tensor(lw.push(Op::StopGradient, vec![t], None, span)?))
}

fn elementwise_or_fold(lw: &mut Lowerer, op: BinaryOp, x: &CallArg, y: &CallArg, span: Span) -> R<Val> {
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
