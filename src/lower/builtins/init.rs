//! Initializers: `zeros`, `ones` and the gain-scaled ones by name, and the calls
//! `normal(std)`, `uniform(lo, hi)`, `constant(v)`, `chunks(...)` and `xavier_uniform(gain)` etc.

use super::args::{number, Bound};
use crate::diagnostic::{Diagnostic, Span};
use crate::ir::Init;
use crate::lower::context::{Lowerer, Val, R};

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

/// `normal(std)`.
pub(super) fn normal(_lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
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

/// `uniform(lo, hi)`.
pub(super) fn uniform(_lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let lo = number(b.req("lo")?, "`lo`")?;
    let hi = number(b.req("hi")?, "`hi`")?;
    if !lo.is_finite() || !hi.is_finite() {
        return Err(Diagnostic::new("E0444", span, format!("`uniform` needs finite bounds, found {lo} and {hi}")));
    }
    if lo > hi {
        return Err(Diagnostic::new("E0444", span, format!("`uniform` needs lo <= hi, found {lo} > {hi}")));
    }
    Ok(Val::Init(Init::Uniform { lo, hi }))
}

/// `chunks(init, ...)`: one initializer per equal part of the first dim.
pub(super) fn chunks(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    if b.args.is_empty() || b.args.iter().any(|a| a.name.is_some()) {
        return Err(Diagnostic::new("E0444", span, "`chunks` takes one or more initializers, positionally")
            .with_help("e.g. `chunks(zeros, ones, zeros, zeros)` splits the first dim in four"));
    }
    let mut parts = Vec::with_capacity(b.args.len());
    for a in b.args {
        parts.push(lw.as_init(&a.val, a.span)?);
    }
    Ok(Val::Init(Init::Chunks(parts)))
}

/// `constant(value)`.
pub(super) fn constant(_lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let v = number(b.req("value")?, "the value")?;
    if !v.is_finite() {
        return Err(Diagnostic::new("E0444", span, format!("`constant` needs a finite value, found {v}")));
    }
    Ok(Val::Init(Init::Constant(v)))
}

/// `xavier_uniform(gain)`, `xavier_normal(gain)`, `he_uniform(gain)` and `he_normal(gain)`.
pub(super) fn gain(_lw: &mut Lowerer, b: &Bound, _span: Span) -> R<Val> {
    let name = b.fname;
    let gain = b.get("gain").map(|a| number(a, "`gain`")).transpose()?.unwrap_or(1.0);
    Ok(Val::Init(init_by_name(name, gain).unwrap_or(Init::Zeros)))
}
