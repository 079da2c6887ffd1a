//! Built-ins that make tensors: `one_hot`, `zeros`, `ones`, `full`, `arange`,
//! `uniform_like` and `gather`.

use super::args::{number, Bound};
use crate::diagnostic::{Diagnostic, Span};
use crate::ir::{DType, Dim, Op, Type};
use crate::lower::context::{Lowerer, Val, R};

/// `one_hot(ids, n)`: i32 ids to f32 rows of `n`.
pub(super) fn one_hot(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
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

/// `zeros(shape)`, `ones(shape)` and `full(shape, value)`.
pub(super) fn fill(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let name = b.fname;
    let shape = lw.fixed_dims(b.req("shape")?, "the shape")?;
    let v = match name {
        "zeros" => 0.0,
        "ones" => 1.0,
        _ => number(b.req("value")?, "the fill value")?,
    };
    Ok(Val::Tensor(lw.push(Op::Fill(v), vec![], Some(Type::f32(shape)), span)?))
}

/// `arange(n)`: 0, 1, ..., n - 1.
pub(super) fn arange(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let n = lw.int_arg(b.req("n")?, "the length", 1)?;
    Ok(Val::Tensor(lw.push(Op::Iota { axis: 0 }, vec![], Some(Type::f32(vec![Dim::konst(n)])), span)?))
}

/// `uniform_like(x)`: uniform noise in [0, 1) of `x`'s shape, one stream per call.
pub(super) fn uniform_like(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let t = lw.tensor_arg(b.req("x")?, "the template")?;
    let shape = lw.g.ty(t).shape.clone();
    let stream = lw.rand_streams;
    lw.rand_streams += 1;
    Ok(Val::Tensor(lw.push(Op::Rand { stream }, vec![], Some(Type::f32(shape)), span)?))
}

/// `gather(table, ids)`: the rows of `table` at i32 `ids`.
pub(super) fn gather(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
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
