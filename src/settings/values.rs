//! The value types and checkers of `train { }` settings and their arguments, shared by
//! the key table (`mod.rs`), augmentations (`augment.rs`) and `tune { }` (`tune.rs`): a
//! leaf below all three.

use crate::diagnostic::{Diagnostic, Span};
use crate::ir::recipe::{Choice, Lit};
use crate::syntax::ast::{Expr, ExprKind};

/// The type an argument or key accepts.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ty {
    /// A number in [min, max].
    Num(f64, f64),
    /// A number above 0.
    Pos,
    /// An integer in [min, max].
    Int(i64, i64),
    Str,
    Bool,
}

pub(super) const INF: f64 = f64::INFINITY;
pub(super) const POS: Ty = Ty::Num(0.0, INF);
pub(super) const UNIT: Ty = Ty::Num(0.0, 1.0);
pub(super) const COUNT: Ty = Ty::Int(1, 1 << 40);
pub(super) const SEED: Ty = Ty::Int(0, i64::MAX);

/// (argument name, type, default; None = required).
pub(super) type ArgSpec = (&'static str, Ty, Option<Lit>);

pub(super) fn num(v: f64) -> Option<Lit> {
    Some(Lit::Num(v))
}

pub(super) fn err(span: Span, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::new("E0601", span, msg)
}

pub(super) fn lit_of(ty: Ty, e: &Expr, what: &str) -> Result<Lit, Diagnostic> {
    let (value, negated) = match &e.kind {
        ExprKind::Neg(inner) => (&inner.kind, true),
        k => (k, false),
    };
    match (ty, value) {
        (Ty::Num(lo, hi), ExprKind::Number(v, _)) => {
            let v = if negated { -v } else { *v };
            if v < lo || v > hi {
                let range = if hi.is_infinite() { format!("at least {lo}") } else { format!("between {lo} and {hi}") };
                return Err(Diagnostic::new("E0602", e.span, format!("{what} must be {range}, found {v}")));
            }
            Ok(Lit::Num(v))
        }
        (Ty::Pos, ExprKind::Number(v, _)) => {
            let v = if negated { -v } else { *v };
            if v <= 0.0 || !v.is_finite() {
                return Err(Diagnostic::new("E0602", e.span, format!("{what} must be above 0, found {v}")));
            }
            Ok(Lit::Num(v))
        }
        (Ty::Int(lo, hi), ExprKind::Number(v, is_int)) => {
            let v = if negated { -v } else { *v };
            if !is_int || v.fract() != 0.0 {
                return Err(Diagnostic::new("E0603", e.span, format!("{what} must be an integer, found {v}")));
            }
            if v < lo as f64 || v > hi as f64 {
                return Err(Diagnostic::new("E0602", e.span, format!("{what} must be in [{lo}, {hi}], found {v}")));
            }
            Ok(Lit::Num(v))
        }
        (Ty::Str, ExprKind::Str(s)) if !negated => Ok(Lit::Str(s.clone())),
        (Ty::Str, ExprKind::Name(s)) if !negated => Ok(Lit::Str(s.clone())),
        (Ty::Bool, ExprKind::Bool(b)) if !negated => Ok(Lit::Bool(*b)),
        (ty, _) => {
            let want = match ty {
                Ty::Num(..) | Ty::Pos => "a number",
                Ty::Int(..) => "an integer",
                Ty::Str => "a string",
                Ty::Bool => "true or false",
            };
            Err(Diagnostic::new("E0603", e.span, format!("{what} must be {want}"))
                .with_label(format!("expected {want}")))
        }
    }
}

/// Checks `name` or `name(args)` against a table of choices.
pub(super) fn choice(
    e: &Expr,
    key: &str,
    spec: fn(&str) -> Option<Vec<ArgSpec>>,
    names: &str,
) -> Result<Choice, Diagnostic> {
    let (name, name_span, args) = match &e.kind {
        ExprKind::Name(n) => (n.clone(), e.span, &[][..]),
        ExprKind::Call { callee, args } => match &callee.kind {
            ExprKind::Name(n) => (n.clone(), callee.span, &args[..]),
            _ => return Err(err(e.span, format!("`{key}` must be one of: {names}"))),
        },
        _ => return Err(err(e.span, format!("`{key}` must be one of: {names}"))),
    };
    let Some(specs) = spec(&name) else {
        let help = match crate::diagnostic::closest(&name, names.split(", ")) {
            Some(c) => format!("did you mean `{c}`? Expected one of: {names}"),
            None => format!("expected one of: {names}"),
        };
        return Err(Diagnostic::new("E0604", name_span, format!("unknown {key} `{name}`"))
            .with_label(format!("not a known {key}"))
            .with_help(help));
    };
    let mut values: Vec<Option<Lit>> = vec![None; specs.len()];
    let mut positional = 0;
    for a in args {
        let idx = match &a.name {
            Some(n) => specs.iter().position(|s| s.0 == n.name).ok_or_else(|| {
                let known: Vec<&str> = specs.iter().map(|s| s.0).collect();
                let close = crate::diagnostic::closest(&n.name, known.iter().copied());
                Diagnostic::new("E0605", n.span, format!("`{name}` has no argument `{}`", n.name)).with_help(
                    match (known.is_empty(), close) {
                        (true, _) => format!("`{name}` takes no arguments"),
                        (false, Some(c)) => format!("did you mean `{c}`? Its arguments are: {}", known.join(", ")),
                        (false, None) => format!("its arguments are: {}", known.join(", ")),
                    },
                )
            })?,
            None => {
                positional += 1;
                if positional > specs.len() {
                    return Err(Diagnostic::new(
                        "E0606",
                        a.span,
                        format!("`{name}` takes {} argument(s), found more", specs.len()),
                    ));
                }
                positional - 1
            }
        };
        if values[idx].is_some() {
            return Err(Diagnostic::new("E0607", a.span, format!("argument `{}` given twice", specs[idx].0)));
        }
        values[idx] = Some(lit_of(specs[idx].1, &a.value, &format!("`{}`", specs[idx].0))?);
    }
    if let Some(Lit::Str(m)) =
        values.iter().zip(&specs).find_map(|(v, s)| (s.0 == "method").then_some(v.as_ref()).flatten())
    {
        {
            if m != "pca" && m != "zca" {
                return Err(Diagnostic::new(
                    "E0602",
                    e.span,
                    format!("`method` must be \"pca\" or \"zca\", found \"{m}\""),
                ));
            }
        }
    }
    let mut out = Vec::new();
    for (i, (arg, _, default)) in specs.iter().enumerate() {
        match values[i].take().or_else(|| default.clone()) {
            Some(v) => out.push((arg.to_string(), v)),
            None => {
                return Err(Diagnostic::new("E0608", e.span, format!("`{name}` needs the argument `{arg}`"))
                    .with_help(format!("write `{name}({arg} = ...)`")))
            }
        }
    }
    Ok(Choice { name, args: out })
}

pub(super) fn int(v: &Expr, what: &str, lo: i64, hi: i64) -> Result<i64, Diagnostic> {
    Ok(lit_of(Ty::Int(lo, hi), v, what)?.as_f64().unwrap_or(0.0) as i64)
}
pub(super) fn number(v: &Expr, what: &str) -> Result<f64, Diagnostic> {
    Ok(lit_of(POS, v, what)?.as_f64().unwrap_or(0.0))
}
pub(super) fn positive(v: &Expr, what: &str) -> Result<f64, Diagnostic> {
    let x = number(v, what)?;
    if x <= 0.0 {
        return Err(Diagnostic::new("E0602", v.span, format!("{what} must be above 0")));
    }
    Ok(x)
}
