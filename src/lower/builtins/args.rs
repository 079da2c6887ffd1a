//! The arguments of a built-in call: bound to its parameter names, and read as the
//! tensors, numbers, integers and dim lists that built-ins take.

use crate::diagnostic::{Diagnostic, Span};
use crate::ir::{Dim, Value};
use crate::limits;
use crate::lower::context::{CallArg, Lowerer, Val, R};

/// Arguments matched to parameter names: positional first, then by name.
pub(super) struct Bound<'a> {
    /// The built-in's name.
    pub(super) fname: &'static str,
    /// Every argument as given (`max(a, b)` and `chunks(...)` read them positionally).
    pub(super) args: &'a [CallArg],
    slots: Vec<Option<&'a CallArg>>,
    params: &'static [&'static str],
    span: Span,
}

impl<'a> Bound<'a> {
    /// The arguments of a built-in that binds none by name (`chunks`).
    pub(super) fn positional(fname: &'static str, args: &'a [CallArg], span: Span) -> Bound<'a> {
        Bound { fname, args, slots: Vec::new(), params: &[], span }
    }
    pub(super) fn get(&self, name: &str) -> Option<&'a CallArg> {
        let i = self.params.iter().position(|p| *p == name)?;
        self.slots[i]
    }
    pub(super) fn req(&self, name: &str) -> R<&'a CallArg> {
        self.get(name).ok_or_else(|| {
            Diagnostic::new("E0423", self.span, format!("`{}` needs the argument `{name}`", self.fname))
                .with_help(format!("`{}({})`", self.fname, self.params.join(", ")))
        })
    }
}

pub(super) fn bind<'a>(
    fname: &'static str,
    args: &'a [CallArg],
    params: &'static [&'static str],
    span: Span,
) -> R<Bound<'a>> {
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
    Ok(Bound { fname, args, slots, params, span })
}

pub(super) fn number(a: &CallArg, what: &str) -> R<f64> {
    match &a.val {
        Val::Float(f) => Ok(*f),
        Val::Int(d) if d.is_const() => Ok(d.as_const().unwrap_or(0) as f64),
        other => Err(Diagnostic::new("E0424", a.span, format!("{what} must be a number, found {}", other.describe()))),
    }
}

pub(super) fn boolean(a: Option<&CallArg>, default: bool) -> R<bool> {
    match a {
        None => Ok(default),
        Some(CallArg { val: Val::Bool(b), .. }) => Ok(*b),
        Some(a) => Err(Diagnostic::new("E0424", a.span, format!("expected true or false, found {}", a.val.describe()))),
    }
}

impl Lowerer {
    pub(super) fn tensor_arg(&mut self, a: &CallArg, what: &str) -> R<Value> {
        match &a.val {
            Val::Tensor(t) => Ok(*t),
            Val::Float(_) | Val::Int(_) | Val::Bool(_) => self.tensor_of(&a.val, &[], a.span),
            other => {
                Err(Diagnostic::new("E0424", a.span, format!("{what} must be a tensor, found {}", other.describe())))
            }
        }
    }

    pub(super) fn f32_arg(&mut self, a: &CallArg, what: &str) -> R<Value> {
        let t = self.tensor_arg(a, what)?;
        self.require_f32(t, a.span, what)?;
        Ok(t)
    }

    pub(super) fn int_arg(&self, a: &CallArg, what: &str, min: i64) -> R<i64> {
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
    pub(super) fn dims_arg(&self, a: &CallArg, what: &str) -> R<Vec<Dim>> {
        let Val::List(items) = &a.val else {
            return Err(Diagnostic::new(
                "E0437",
                a.span,
                format!("{what} must be a list like [B, 64], found {}", a.val.describe()),
            ));
        };
        items.iter().map(|v| self.as_dim(v, a.span)).collect()
    }

    pub(super) fn fixed_dims(&self, a: &CallArg, what: &str) -> R<Vec<Dim>> {
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
