//! Tensor-building helpers of lowering: constants, NumPy broadcasting, elementwise ops,
//! matmul with NumPy semantics, reductions and indexing. Each checks the user-level rule
//! first, so errors say "inner dimensions differ: 64 vs 128", then emits primitives.

use super::context::{Env, Lowerer, Val, R};
use crate::diagnostic::{Diagnostic, Span};
use crate::ir::{self, BinaryOp, Dim, Op, ReduceOp, Type, Value};
use crate::syntax::ast::{self, ExprKind};

impl Lowerer {
    /// A compile-time number or symbolic size as an f32 tensor of `shape`.
    pub(crate) fn tensor_of(&mut self, v: &Val, shape: &[Dim], span: Span) -> R<Value> {
        match v {
            Val::Tensor(t) => Ok(*t),
            Val::Float(f) => self.push(Op::Fill(*f), vec![], Some(Type::f32(shape.to_vec())), span),
            Val::Bool(b) => self.push(Op::Fill(f64::from(u8::from(*b))), vec![], Some(Type::f32(shape.to_vec())), span),
            Val::Int(d) => match d.as_const() {
                Some(c) => self.push(Op::Fill(c as f64), vec![], Some(Type::f32(shape.to_vec())), span),
                None => {
                    let s = self.push(Op::DimValue(d.clone()), vec![], None, span)?;
                    self.broadcast_to(s, shape, span)
                }
            },
            other => Err(Diagnostic::new(
                "E0411",
                span,
                format!("expected a tensor or a number, found {}", other.describe()),
            )),
        }
    }

    /// NumPy broadcasting of two shapes, or the first dim (from the right) that clashes.
    pub(crate) fn broadcast_shapes(&self, a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, String> {
        let n = a.len().max(b.len());
        let one = Dim::konst(1);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let da = if i + a.len() >= n { &a[i + a.len() - n] } else { &one };
            let db = if i + b.len() >= n { &b[i + b.len() - n] } else { &one };
            if da == db || *db == one {
                out.push(da.clone());
            } else if *da == one {
                out.push(db.clone());
            } else {
                return Err(format!(
                    "dim {} is {} vs {}",
                    i as i64 - n as i64,
                    da.display(&self.g.symbols),
                    db.display(&self.g.symbols)
                ));
            }
        }
        Ok(out)
    }

    pub(crate) fn broadcast_to(&mut self, v: Value, shape: &[Dim], span: Span) -> R<Value> {
        let from = self.g.ty(v).shape.clone();
        if from == shape {
            return Ok(v);
        }
        match self.broadcast_shapes(&from, shape) {
            Ok(s) if s == shape => self.push(Op::Broadcast { shape: shape.to_vec() }, vec![v], None, span),
            _ => Err(Diagnostic::new(
                "E0402",
                span,
                format!("cannot broadcast {} to {}", self.shape_str(&from), self.shape_str(shape)),
            )),
        }
    }

    /// An elementwise binary op with broadcasting; numbers become fills of the right shape.
    pub(crate) fn elementwise(&mut self, op: BinaryOp, x: &Val, y: &Val, xs: Span, ys: Span, span: Span) -> R<Value> {
        for (v, s) in [(x, xs), (y, ys)] {
            if let Val::Tensor(t) = v {
                self.require_f32(*t, s, &format!("`{}`", op.name()))?;
            }
        }
        let sx = match x {
            Val::Tensor(t) => self.g.ty(*t).shape.clone(),
            _ => vec![],
        };
        let sy = match y {
            Val::Tensor(t) => self.g.ty(*t).shape.clone(),
            _ => vec![],
        };
        let shape = self.broadcast_shapes(&sx, &sy).map_err(|why| {
            Diagnostic::new(
                "E0402",
                span,
                format!("shapes {} and {} do not broadcast", self.shape_str(&sx), self.shape_str(&sy)),
            )
            .with_label(why)
            .with_note(xs, format!("this is {}", self.shape_str(&sx)))
            .with_note(ys, format!("this is {}", self.shape_str(&sy)))
            .with_help("broadcasting matches dims from the right; each pair must be equal or 1")
        })?;
        let a = match x {
            Val::Tensor(t) => self.broadcast_to(*t, &shape, span)?,
            other => self.tensor_of(other, &shape, xs)?,
        };
        let b = match y {
            Val::Tensor(t) => self.broadcast_to(*t, &shape, span)?,
            other => self.tensor_of(other, &shape, ys)?,
        };
        self.push(Op::Binary(op), vec![a, b], None, span)
    }

    pub(crate) fn reshape(&mut self, v: Value, shape: Vec<Dim>, span: Span) -> R<Value> {
        if self.g.ty(v).shape == shape {
            return Ok(v);
        }
        self.push(Op::Reshape { shape }, vec![v], None, span)
    }

    /// `@` with NumPy semantics: 1-D operands are promoted and the added dim removed;
    /// batch dims broadcast; a rank-2 right side is shared by flattening the left side.
    pub(crate) fn matmul(&mut self, a: Value, b: Value, aspan: Span, bspan: Span, span: Span) -> R<Value> {
        self.require_f32(a, aspan, "matmul")?;
        self.require_f32(b, bspan, "matmul")?;
        let ta = self.g.ty(a).shape.clone();
        let tb = self.g.ty(b).shape.clone();
        if ta.is_empty() || tb.is_empty() {
            return Err(Diagnostic::new("E0430", span, "`@` needs tensors of rank >= 1; use `*` to scale by a scalar"));
        }
        let k_a = ta[ta.len() - 1].clone();
        let k_b = if tb.len() == 1 { tb[0].clone() } else { tb[tb.len() - 2].clone() };
        if k_a != k_b {
            return Err(Diagnostic::new(
                "E0431",
                span,
                format!(
                    "inner dimensions differ: {} vs {}",
                    k_a.display(&self.g.symbols),
                    k_b.display(&self.g.symbols)
                ),
            )
            .with_label(format!("{} @ {}", self.shape_str(&ta), self.shape_str(&tb)))
            .with_note(aspan, format!("this is {}", self.shape_str(&ta)))
            .with_note(bspan, format!("this is {}", self.shape_str(&tb)))
            .with_help("`a @ b` needs the last dim of a to equal the second-to-last dim of b"));
        }
        let one = Dim::konst(1);
        let a2 = if ta.len() == 1 { self.reshape(a, vec![one.clone(), k_a.clone()], aspan)? } else { a };
        let b2 = if tb.len() == 1 { self.reshape(b, vec![k_b.clone(), one.clone()], bspan)? } else { b };
        let sa = self.g.ty(a2).shape.clone();
        let sb = self.g.ty(b2).shape.clone();
        let (m, n) = (sa[sa.len() - 2].clone(), sb[sb.len() - 1].clone());
        let batch_a = &sa[..sa.len() - 2];
        let batch_b = &sb[..sb.len() - 2];
        let out = if batch_b.is_empty() && !batch_a.is_empty() {
            // [.., M, K] @ [K, N]: one GEMM over the flattened rows.
            let rows =
                ir::ty::numel(&sa[..sa.len() - 1]).ok_or_else(|| Diagnostic::new("E0412", span, "size overflow"))?;
            let flat = self.reshape(a2, vec![rows, k_a.clone()], aspan)?;
            let r = self.push(Op::MatMul, vec![flat, b2], None, span)?;
            let mut shape = sa[..sa.len() - 1].to_vec();
            shape.push(n.clone());
            self.reshape(r, shape, span)?
        } else {
            let batch = self.broadcast_shapes(batch_a, batch_b).map_err(|_| {
                Diagnostic::new(
                    "E0402",
                    span,
                    format!(
                        "the batch dims of `@` do not broadcast: {} vs {}",
                        self.shape_str(batch_a),
                        self.shape_str(batch_b)
                    ),
                )
                .with_note(aspan, format!("this is {}", self.shape_str(&ta)))
                .with_note(bspan, format!("this is {}", self.shape_str(&tb)))
                .with_help("`@` multiplies the last two dims; the dims before them broadcast like `+`")
            })?;
            let mut fa = batch.clone();
            fa.extend([m.clone(), k_a.clone()]);
            let mut fb = batch.clone();
            fb.extend([k_b.clone(), n.clone()]);
            let a3 = self.broadcast_to(a2, &fa, aspan)?;
            let b3 = self.broadcast_to(b2, &fb, bspan)?;
            self.push(Op::MatMul, vec![a3, b3], None, span)?
        };
        // Drop the dims that 1-D operands added.
        let full = self.g.ty(out).shape.clone();
        let r = full.len();
        let shape: Vec<Dim> = full
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !(ta.len() == 1 && *i == r - 2 || tb.len() == 1 && *i == r - 1))
            .map(|(_, d)| d)
            .collect();
        self.reshape(out, shape, span)
    }

    /// Normalizes `axis =` (int, list, or absent = all) to sorted, distinct axes.
    pub(crate) fn axes(&self, axis: Option<(&Val, Span)>, rank: usize, ty: &Type) -> R<Vec<u32>> {
        let Some((v, span)) = axis else { return Ok((0..rank as u32).collect()) };
        let items: Vec<Val> = match v {
            Val::List(items) => items.clone(),
            other => vec![other.clone()],
        };
        let mut out = Vec::new();
        for it in &items {
            let Val::Int(d) = it else {
                return Err(Diagnostic::new(
                    "E0432",
                    span,
                    format!("an axis must be an integer, found {}", it.describe()),
                ));
            };
            let Some(a) = d.as_const() else {
                return Err(Diagnostic::new("E0432", span, "an axis must be a known integer"));
            };
            let r = rank as i64;
            let n = if a < 0 { a + r } else { a };
            if n < 0 || n >= r {
                return Err(Diagnostic::new(
                    "E0433",
                    span,
                    format!("axis {a} is out of range for {} (rank {rank})", self.ty_str(ty)),
                )
                .with_help(format!("axes go from {} to {}", -r, r - 1)));
            }
            if out.contains(&(n as u32)) {
                return Err(Diagnostic::new("E0433", span, format!("axis {a} is given twice")));
            }
            out.push(n as u32);
        }
        out.sort_unstable();
        Ok(out)
    }

    /// A reduction; with `keep` the reduced dims stay as 1s.
    pub(crate) fn reduce(&mut self, x: Value, op: ReduceOp, axes: Vec<u32>, keep: bool, span: Span) -> R<Value> {
        let shape = self.g.ty(x).shape.clone();
        if axes.is_empty() {
            return Ok(x);
        }
        let r = self.push(Op::Reduce { op, axes: axes.clone() }, vec![x], None, span)?;
        if keep {
            let kept: Vec<Dim> = shape
                .iter()
                .enumerate()
                .map(|(i, d)| if axes.contains(&(i as u32)) { Dim::konst(1) } else { d.clone() })
                .collect();
            return self.reshape(r, kept, span);
        }
        Ok(r)
    }

    /// The mean over `axes`: a sum times 1/count (count may be symbolic, like `B`).
    pub(crate) fn mean(&mut self, x: Value, axes: Vec<u32>, keep: bool, span: Span) -> R<Value> {
        let shape = self.g.ty(x).shape.clone();
        let mut count = Dim::konst(1);
        for &a in &axes {
            count = count.mul(&shape[a as usize]).ok_or_else(|| Diagnostic::new("E0412", span, "size overflow"))?;
        }
        let s = self.reduce(x, ReduceOp::Sum, axes, keep, span)?;
        let out_shape = self.g.ty(s).shape.clone();
        match count.as_const() {
            Some(c) => {
                let k = self.push(Op::Fill(1.0 / c as f64), vec![], Some(Type::f32(out_shape)), span)?;
                self.push(Op::Binary(BinaryOp::Mul), vec![s, k], None, span)
            }
            None => {
                let d = self.tensor_of(&Val::Int(count), &out_shape, span)?;
                self.push(Op::Binary(BinaryOp::Div), vec![s, d], None, span)
            }
        }
    }

    /// `x[...]`: integers pick (and drop the dim), slices cut, `...` skips leading dims.
    pub(crate) fn tensor_index(&mut self, t: Value, items: &[ast::IndexItem], env: &Env, span: Span) -> R<Value> {
        let ty = self.g.ty(t).clone();
        let rank = ty.rank();
        let ell = items.iter().position(|i| matches!(i, ast::IndexItem::Expr(e) if e.kind == ExprKind::Ellipsis));
        let used = items.len() - usize::from(ell.is_some());
        if used > rank {
            return Err(Diagnostic::new(
                "E0434",
                span,
                format!("{} indices for {} (rank {rank})", used, self.ty_str(&ty)),
            ));
        }
        let mut cur = t;
        let mut axis = 0usize;
        let mut drop = Vec::new();
        for (k, item) in items.iter().enumerate() {
            if Some(k) == ell {
                axis += rank - used;
                continue;
            }
            let dim = ty.shape[axis].clone();
            match item {
                ast::IndexItem::Expr(e) => {
                    let i = self.eval_const_int(e, env, "an index")?;
                    let Some(n) = dim.as_const() else {
                        return Err(Diagnostic::new("E0435", e.span, "cannot index a symbolic dim such as the batch"));
                    };
                    let j = if i < 0 { i + n } else { i };
                    if j < 0 || j >= n {
                        return Err(Diagnostic::new(
                            "E0435",
                            e.span,
                            format!("index {i} is out of range for dim {axis} of size {n}"),
                        )
                        .with_label(format!("must be in {}..{}", -n, n)));
                    }
                    cur = self.push(
                        Op::Slice { axis: axis as u32, start: j, end: j + 1, step: 1 },
                        vec![cur],
                        None,
                        e.span,
                    )?;
                    drop.push(axis);
                }
                ast::IndexItem::Slice { start, end, step, span: sspan } => {
                    let full = start.is_none() && end.is_none() && step.is_none();
                    if full {
                        axis += 1;
                        continue;
                    }
                    let Some(n) = dim.as_const() else {
                        return Err(Diagnostic::new("E0435", *sspan, "cannot slice a symbolic dim such as the batch"));
                    };
                    let bound = |lw: &mut Lowerer, e: &Option<ast::Expr>, default: i64| -> R<i64> {
                        match e {
                            None => Ok(default),
                            Some(e) => {
                                let i = lw.eval_const_int(e, env, "a slice bound")?;
                                let j = if i < 0 { i + n } else { i };
                                if j < 0 || j > n {
                                    return Err(Diagnostic::new(
                                        "E0435",
                                        e.span,
                                        format!("slice bound {i} is out of range for dim {axis} of size {n}"),
                                    ));
                                }
                                Ok(j)
                            }
                        }
                    };
                    let s = match step {
                        None => 1,
                        Some(e) => self.eval_const_int(e, env, "a slice step")?,
                    };
                    if s == 0 {
                        return Err(Diagnostic::new("E0435", *sspan, "a slice step cannot be 0"));
                    }
                    // Python's defaults: a negative step runs from the last element down
                    // through the first (end -1 stands for "past the first").
                    let (a, b) = if s > 0 {
                        (bound(self, start, 0)?, bound(self, end, n)?)
                    } else {
                        (bound(self, start, n - 1)?, bound(self, end, -1)?)
                    };
                    if s < 0 && a == n {
                        return Err(Diagnostic::new(
                            "E0435",
                            *sspan,
                            format!(
                                "a reversed slice starts at an element: {a} is past the end of dim {axis} of size {n}"
                            ),
                        )
                        .with_help("leave the start out (`::-1`) to start at the last element"));
                    }
                    if (s > 0 && a >= b) || (s < 0 && a <= b) {
                        let shown = |v: i64| if v < 0 { String::new() } else { v.to_string() };
                        return Err(Diagnostic::new(
                            "E0435",
                            *sspan,
                            format!("the slice {}:{}:{s} is empty", a, shown(b)),
                        ));
                    }
                    cur =
                        self.push(Op::Slice { axis: axis as u32, start: a, end: b, step: s }, vec![cur], None, *sspan)?;
                }
            }
            axis += 1;
        }
        if !drop.is_empty() {
            let shape: Vec<Dim> = self
                .g
                .ty(cur)
                .shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !drop.contains(i))
                .map(|(_, d)| d.clone())
                .collect();
            cur = self.reshape(cur, shape, span)?;
        }
        Ok(cur)
    }
}
