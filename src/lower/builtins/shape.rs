//! Built-ins that reshape or read shapes: `reshape`, `transpose`, `flatten`, `concat`,
//! `stack`, `shape` and `size`.

use super::args::Bound;
use crate::diagnostic::{Diagnostic, Span};
use crate::ir::{Dim, Op};
use crate::lower::context::{CallArg, Lowerer, Val, R};

/// `reshape(x, shape)`: one dim may be -1.
pub(super) fn reshape(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
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
    let known_n = crate::ir::ty::numel(&known).ok_or_else(|| Diagnostic::new("E0412", span, "size overflow"))?;
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

/// `transpose(x, perm)`: the axes reversed when `perm` is not given.
pub(super) fn transpose(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
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

/// `flatten(x)`: `[N, ...]` to `[N, rest]`.
pub(super) fn flatten(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let t = lw.tensor_arg(b.req("x")?, "the tensor to flatten")?;
    let shape = lw.g.ty(t).shape.clone();
    if shape.is_empty() {
        return Err(Diagnostic::new("E0439", span, "`flatten` needs a tensor of rank >= 1"));
    }
    let rest = crate::ir::ty::numel(&shape[1..]).ok_or_else(|| Diagnostic::new("E0412", span, "size overflow"))?;
    Ok(Val::Tensor(lw.reshape(t, vec![shape[0].clone(), rest], span)?))
}

/// `concat(xs, axis)` and `stack(xs, axis)`.
pub(super) fn concat(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let name = b.fname;
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
        let a = CallArg { name: None, val: it.clone(), span: xs.span };
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
                && ty.shape.iter().zip(&first.shape).enumerate().all(|(i, (a, b))| i == axis as usize || a == b);
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

/// `shape(x)`: its dims, as a list of integers.
pub(super) fn shape(lw: &mut Lowerer, b: &Bound, _span: Span) -> R<Val> {
    let t = lw.tensor_arg(b.req("x")?, "the tensor")?;
    Ok(Val::List(lw.g.ty(t).shape.iter().cloned().map(Val::Int).collect()))
}

/// `size(x, axis)`: the number of elements (along `axis`).
pub(super) fn size(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let t = lw.tensor_arg(b.req("x")?, "the tensor")?;
    let ty = lw.g.ty(t).clone();
    let axes = lw.axes(b.get("axis").map(|a| (&a.val, a.span)), ty.rank(), &ty)?;
    let mut n = Dim::konst(1);
    for a in axes {
        n = n.mul(&ty.shape[a as usize]).ok_or_else(|| Diagnostic::new("E0412", span, "size overflow"))?;
    }
    Ok(Val::Int(n))
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
