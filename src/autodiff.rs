//! Reverse-mode automatic differentiation as an IR-to-IR pass.
//!
//! `grad` appends to a copy of the graph the nodes that compute the gradient of a scalar
//! with respect to chosen values. It visits only nodes on a path from those values to
//! the scalar, in reverse order, applies one vector-Jacobian product (VJP) rule per
//! primitive (the table in `vjp`), and sums contributions where a value fans out.
//! The backward nodes are ordinary primitives whose own VJPs exist, so the pass can be
//! applied to its own output: Hessian-vector products are `grad` of `grad`.
//!
//! Conventions at kinks: at a tie, `max`/`min` (elementwise and reductions) split the
//! gradient evenly between the tied operands (as JAX does); `abs` has gradient
//! `sign(x)`, so 0 at 0; comparisons, `sign`, `one_hot`, `rand`, `iota` and
//! `stop_gradient` pass no gradient; integer inputs and states get none.

use crate::ir::{BinaryOp, DType, Dim, Graph, Op, ReduceOp, Type, UnaryOp, Value};
use std::collections::HashMap;

/// The result of `grad_program`: the graph with `grad.<param>` outputs appended.
pub struct Gradients {
    pub graph: Graph,
    /// The gradient value of each parameter, in declaration order.
    pub grads: Vec<Value>,
}

/// Differentiates the graph's loss with respect to every parameter and records each
/// gradient as an output named `grad.<param>`.
pub fn grad_program(g: &Graph) -> Result<Gradients, String> {
    let loss = g.loss.ok_or("the graph has no loss to differentiate")?;
    let wrt: Vec<Value> = g.params.iter().map(|p| p.value).collect();
    let (mut graph, grads) = grad(g, loss, &wrt)?;
    for (p, v) in g.params.iter().zip(&grads) {
        graph.outputs.push((format!("grad.{}", p.name), *v));
    }
    Ok(Gradients { graph, grads })
}

/// Appends d`of`/d`wrt[i]` to a copy of `g`; `of` must be an f32 scalar. Values without
/// a path to `of` get a zero gradient.
pub fn grad(g: &Graph, of: Value, wrt: &[Value]) -> Result<(Graph, Vec<Value>), String> {
    if g.ty(of) != &Type::scalar() {
        return Err(format!("can only differentiate an f32 scalar, {of} is not"));
    }
    let n = g.len();
    let idx = |v: Value| v.as_u32() as usize;
    // Forward: which values depend (differentiably) on a `wrt` value.
    let mut depends = vec![false; n];
    for &w in wrt {
        depends[idx(w)] = true;
    }
    for (v, node) in g.nodes.iter() {
        if passes_gradient(&node.op) && node.args.iter().any(|a| depends[idx(*a)]) {
            depends[idx(v)] = true;
        }
    }
    // Backward: which values the output depends on.
    let mut needed = vec![false; n];
    needed[idx(of)] = true;
    for (v, node) in g.nodes.iter().rev() {
        if needed[idx(v)] {
            for a in &node.args {
                needed[idx(*a)] = true;
            }
        }
    }
    let mut b = Builder { g: g.clone() };
    // Contributions are collected per value and combined when the value is reached,
    // so that disjoint slices' gradients become one concat instead of a sum of pads.
    let mut cot: HashMap<Value, Vec<Value>> = HashMap::new();
    let seed = b.fill(1.0, vec![])?;
    cot.insert(of, vec![seed]);
    for i in (0..=idx(of)).rev() {
        let v = Value::from_u32(i as u32);
        if !(depends[i] && needed[i]) {
            continue;
        }
        let Some(parts) = cot.remove(&v) else { continue };
        let gv = combine(&mut b, parts)?;
        cot.insert(v, vec![gv]);
        for (k, &a) in g.nodes[v].args.iter().enumerate() {
            if !depends[idx(a)] || g.ty(a).dtype != DType::F32 {
                continue;
            }
            let Some(contrib) = vjp(&mut b, g, v, k, gv)? else { continue };
            cot.entry(a).or_default().push(contrib);
        }
    }
    let mut grads = Vec::with_capacity(wrt.len());
    for &w in wrt {
        grads.push(match cot.remove(&w) {
            Some(parts) => {
                let gw = combine(&mut b, parts)?;
                cot.insert(w, vec![gw]);
                gw
            }
            None => b.fill(0.0, g.ty(w).shape.clone())?,
        });
    }
    Ok((b.g, grads))
}

/// The sum of a value's gradient contributions. When they are all pads (the VJPs of
/// slices) of disjoint ranges along one axis, the sum is the concatenation of the
/// slices' gradients with zeros in the gaps: one op instead of a pad and an add each
/// (an unrolled RNN slices every time step).
fn combine(b: &mut Builder, parts: Vec<Value>) -> Result<Value, String> {
    if parts.len() > 1 {
        if let Some(v) = concat_of_pads(b, &parts)? {
            return Ok(v);
        }
    }
    let mut it = parts.into_iter();
    let mut total = it.next().ok_or("internal error: no gradient contribution")?;
    for p in it {
        total = b.bin(BinaryOp::Add, total, p)?;
    }
    Ok(total)
}

fn concat_of_pads(b: &mut Builder, parts: &[Value]) -> Result<Option<Value>, String> {
    let mut pieces: Vec<(i64, i64, Value)> = Vec::new(); // start, end, gradient of the slice
    let mut axis0 = None;
    for &p in parts {
        let Op::Pad { axis, start, step: 1, len } = &b.g.nodes[p].op else { return Ok(None) };
        if axis0.is_some_and(|a| a != *axis) || len.as_const().is_none() {
            return Ok(None);
        }
        axis0 = Some(*axis);
        let x = b.g.nodes[p].args[0];
        let n = b.g.ty(x).shape[*axis as usize].as_const().ok_or("symbolic pad")?;
        pieces.push((*start, start + n, x));
    }
    let Some(axis) = axis0 else { return Ok(None) };
    pieces.sort_by_key(|p| p.0);
    if pieces.windows(2).any(|w| w[0].1 > w[1].0) {
        return Ok(None);
    }
    let full = b.g.ty(parts[0]).shape.clone();
    let total = full[axis as usize].as_const().ok_or("symbolic pad")?;
    let mut seq = Vec::new();
    let mut at = 0;
    let zeros = |b: &mut Builder, n: i64| {
        let mut s = full.clone();
        s[axis as usize] = Dim::konst(n);
        b.fill(0.0, s)
    };
    for (start, end, x) in pieces {
        if start > at {
            seq.push(zeros(b, start - at)?);
        }
        seq.push(x);
        at = end;
    }
    if at < total {
        seq.push(zeros(b, total - at)?);
    }
    Ok(Some(b.push(Op::Concat { axis }, seq, None)?))
}

/// Whether an op can carry a nonzero gradient from its operands to its result.
fn passes_gradient(op: &Op) -> bool {
    !matches!(
        op,
        Op::StopGradient
            | Op::OneHot { .. }
            | Op::Unary(UnaryOp::Sign)
            | Op::Binary(BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq | BinaryOp::Ne)
    )
}

/// Appends nodes to the graph being differentiated.
struct Builder {
    g: Graph,
}

impl Builder {
    fn push(&mut self, op: Op, args: Vec<Value>, declared: Option<Type>) -> Result<Value, String> {
        let name = op.name();
        self.g.push(op, args, declared).map_err(|e| format!("autodiff built an ill-typed {name}: {e}"))
    }
    fn shape(&self, v: Value) -> Vec<Dim> {
        self.g.ty(v).shape.clone()
    }
    fn fill(&mut self, x: f64, shape: Vec<Dim>) -> Result<Value, String> {
        self.push(Op::Fill(x), vec![], Some(Type::f32(shape)))
    }
    fn fill_like(&mut self, x: f64, like: Value) -> Result<Value, String> {
        let s = self.shape(like);
        self.fill(x, s)
    }
    fn un(&mut self, op: UnaryOp, x: Value) -> Result<Value, String> {
        self.push(Op::Unary(op), vec![x], None)
    }
    fn bin(&mut self, op: BinaryOp, a: Value, b: Value) -> Result<Value, String> {
        self.push(Op::Binary(op), vec![a, b], None)
    }
    fn mul(&mut self, a: Value, b: Value) -> Result<Value, String> {
        self.bin(BinaryOp::Mul, a, b)
    }
    fn scale(&mut self, a: Value, k: f64) -> Result<Value, String> {
        let c = self.fill_like(k, a)?;
        self.mul(a, c)
    }
    fn select(&mut self, c: Value, a: Value, b: Value) -> Result<Value, String> {
        self.push(Op::Select, vec![c, a, b], None)
    }
    fn reshape(&mut self, x: Value, shape: Vec<Dim>) -> Result<Value, String> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.push(Op::Reshape { shape }, vec![x], None)
    }
    fn broadcast(&mut self, x: Value, shape: Vec<Dim>) -> Result<Value, String> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.push(Op::Broadcast { shape }, vec![x], None)
    }
    fn transpose_last2(&mut self, x: Value) -> Result<Value, String> {
        let r = self.g.ty(x).rank();
        let mut perm: Vec<u32> = (0..r as u32).collect();
        perm.swap(r - 2, r - 1);
        self.push(Op::Transpose { perm }, vec![x], None)
    }
    /// `g` (a reduction result without `axes`) broadcast back to `shape`.
    fn unreduce(&mut self, g: Value, axes: &[u32], shape: &[Dim]) -> Result<Value, String> {
        let kept: Vec<Dim> = shape
            .iter()
            .enumerate()
            .map(|(i, d)| if axes.contains(&(i as u32)) { Dim::konst(1) } else { d.clone() })
            .collect();
        let r = self.reshape(g, kept)?;
        self.broadcast(r, shape.to_vec())
    }
}

/// The contribution of result `v`'s cotangent `gv` to its operand `k`, or None when
/// that operand gets no gradient.
fn vjp(b: &mut Builder, g: &Graph, v: Value, k: usize, gv: Value) -> Result<Option<Value>, String> {
    let node = &g.nodes[v];
    let x = node.args[k];
    let arg = |i: usize| node.args[i];
    let out = match &node.op {
        Op::Input(_)
        | Op::Param(_)
        | Op::State(_)
        | Op::Fill(_)
        | Op::DimValue(_)
        | Op::Iota { .. }
        | Op::Rand { .. } => return Ok(None),
        Op::StopGradient | Op::OneHot { .. } => return Ok(None),
        Op::Unary(u) => match u {
            // d(-x) = -g
            UnaryOp::Neg => b.un(UnaryOp::Neg, gv)?,
            // d(e^x) = g e^x = g y
            UnaryOp::Exp => b.mul(gv, v)?,
            // d(log x) = g / x
            UnaryOp::Log => b.bin(BinaryOp::Div, gv, x)?,
            // d(sqrt x) = g / (2 sqrt x) = 0.5 g / y
            UnaryOp::Sqrt => {
                let q = b.bin(BinaryOp::Div, gv, v)?;
                b.scale(q, 0.5)?
            }
            // d|x| = g sign(x)  (0 at 0)
            UnaryOp::Abs => {
                let s = b.un(UnaryOp::Sign, x)?;
                b.mul(gv, s)?
            }
            // sign, round, floor and ceil are piecewise constant.
            UnaryOp::Sign | UnaryOp::Round | UnaryOp::Floor | UnaryOp::Ceil => return Ok(None),
            // d(tanh x) = g (1 - y^2)
            UnaryOp::Tanh => {
                let y2 = b.mul(v, v)?;
                let one = b.fill_like(1.0, v)?;
                let d = b.bin(BinaryOp::Sub, one, y2)?;
                b.mul(gv, d)?
            }
            // d(sigmoid x) = g y (1 - y)
            UnaryOp::Sigmoid => {
                let one = b.fill_like(1.0, v)?;
                let om = b.bin(BinaryOp::Sub, one, v)?;
                let d = b.mul(v, om)?;
                b.mul(gv, d)?
            }
            // d(sin x) = g cos x
            UnaryOp::Sin => {
                let c = b.un(UnaryOp::Cos, x)?;
                b.mul(gv, c)?
            }
            // d(cos x) = -g sin x
            UnaryOp::Cos => {
                let s = b.un(UnaryOp::Sin, x)?;
                let d = b.mul(gv, s)?;
                b.un(UnaryOp::Neg, d)?
            }
            // d(erf x) = g 2/sqrt(pi) e^(-x^2)
            UnaryOp::Erf => {
                let x2 = b.mul(x, x)?;
                let nx2 = b.un(UnaryOp::Neg, x2)?;
                let e = b.un(UnaryOp::Exp, nx2)?;
                let d = b.scale(e, std::f64::consts::FRAC_2_SQRT_PI)?;
                b.mul(gv, d)?
            }
        },
        Op::Binary(op) => {
            let (a, c) = (arg(0), arg(1));
            match (op, k) {
                // d(a + b) = (g, g)
                (BinaryOp::Add, _) => gv,
                // d(a - b) = (g, -g)
                (BinaryOp::Sub, 0) => gv,
                (BinaryOp::Sub, _) => b.un(UnaryOp::Neg, gv)?,
                // d(a b) = (g b, g a)
                (BinaryOp::Mul, 0) => b.mul(gv, c)?,
                (BinaryOp::Mul, _) => b.mul(gv, a)?,
                // d(a / b) = (g / b, -g a / b^2 = -g y / b)
                (BinaryOp::Div, 0) => b.bin(BinaryOp::Div, gv, c)?,
                (BinaryOp::Div, _) => {
                    let q = b.bin(BinaryOp::Div, v, c)?;
                    let t = b.mul(gv, q)?;
                    b.un(UnaryOp::Neg, t)?
                }
                // d(a^b)/da = g b a^(b-1)
                (BinaryOp::Pow, 0) => {
                    let one = b.fill_like(1.0, c)?;
                    let bm1 = b.bin(BinaryOp::Sub, c, one)?;
                    let p = b.bin(BinaryOp::Pow, a, bm1)?;
                    let t = b.mul(c, p)?;
                    b.mul(gv, t)?
                }
                // d(a^b)/db = g y log(a), taken as 0 where a <= 0 (b real needs a > 0).
                (BinaryOp::Pow, _) => {
                    let zero = b.fill_like(0.0, a)?;
                    let one = b.fill_like(1.0, a)?;
                    let pos = b.bin(BinaryOp::Gt, a, zero)?;
                    let safe = b.select(pos, a, one)?;
                    let l = b.un(UnaryOp::Log, safe)?;
                    let t = b.mul(v, l)?;
                    let t = b.select(pos, t, zero)?;
                    b.mul(gv, t)?
                }
                // max: the larger operand takes g; a tie splits it evenly.
                (BinaryOp::Max | BinaryOp::Min, _) => {
                    let wins = if *op == BinaryOp::Max { BinaryOp::Gt } else { BinaryOp::Lt };
                    let w = b.bin(wins, a, c)?;
                    let tie = b.bin(BinaryOp::Eq, a, c)?;
                    let half = b.scale(tie, 0.5)?;
                    let mask_a = b.bin(BinaryOp::Add, w, half)?;
                    let ga = b.mul(gv, mask_a)?;
                    if k == 0 {
                        ga
                    } else {
                        b.bin(BinaryOp::Sub, gv, ga)?
                    }
                }
                // Comparisons are piecewise constant.
                _ => return Ok(None),
            }
        }
        // select(c, a, b): a gets g where c, b gets g elsewhere; c gets nothing.
        Op::Select => {
            if k == 0 {
                return Ok(None);
            }
            let zero = b.fill_like(0.0, gv)?;
            if k == 1 {
                b.select(arg(0), gv, zero)?
            } else {
                b.select(arg(0), zero, gv)?
            }
        }
        // broadcast: sum g over the broadcast axes, then drop them.
        Op::Broadcast { shape } => {
            let from = g.ty(x).shape.clone();
            let (r, kk) = (shape.len(), from.len());
            let mut axes: Vec<u32> = (0..(r - kk) as u32).collect();
            for (j, d) in from.iter().enumerate() {
                if d.as_const() == Some(1) && shape[r - kk + j].as_const() != Some(1) {
                    axes.push((r - kk + j) as u32);
                }
            }
            let s = if axes.is_empty() { gv } else { b.push(Op::Reduce { op: ReduceOp::Sum, axes }, vec![gv], None)? };
            b.reshape(s, from)?
        }
        // reshape: reshape g back.
        Op::Reshape { .. } => b.reshape(gv, g.ty(x).shape.clone())?,
        // y_r = sum over ranks s of x_s: dL/dx_r = sum over s of dL/dy_s, the same
        // collective on the output gradient (each rank's loss is its share of the total).
        Op::AllReduce => b.push(Op::AllReduce, vec![gv], None)?,
        // transpose: transpose g by the inverse permutation.
        Op::Transpose { perm } => {
            let mut inv = vec![0u32; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p as usize] = i as u32;
            }
            b.push(Op::Transpose { perm: inv }, vec![gv], None)?
        }
        // slice: put g back in place, zeros elsewhere.
        Op::Slice { axis, start, step, .. } => {
            let len = g.ty(x).shape[*axis as usize].clone();
            b.push(Op::Pad { axis: *axis, start: *start, step: *step, len }, vec![gv], None)?
        }
        // pad: take g's elements at the padded positions.
        Op::Pad { axis, start, step, .. } => {
            let n = g.ty(x).shape[*axis as usize].as_const().ok_or("pad of a symbolic dim")?;
            let end = start + (n - 1) * step + step.signum();
            b.push(Op::Slice { axis: *axis, start: *start, end, step: *step }, vec![gv], None)?
        }
        // concat: the slice of g that operand k filled.
        Op::Concat { axis } => {
            let a = *axis as usize;
            let mut off = 0i64;
            for i in 0..k {
                off += g.ty(arg(i)).shape[a].as_const().ok_or("concat of a symbolic dim")?;
            }
            let len = g.ty(x).shape[a].as_const().ok_or("concat of a symbolic dim")?;
            b.push(Op::Slice { axis: *axis, start: off, end: off + len, step: 1 }, vec![gv], None)?
        }
        // sum: every element gets g of its row.
        Op::Reduce { op: ReduceOp::Sum, axes } => {
            let shape = g.ty(x).shape.clone();
            b.unreduce(gv, axes, &shape)?
        }
        // max/min: g goes to the elements equal to the result, split evenly among ties.
        Op::Reduce { axes, .. } => {
            let shape = g.ty(x).shape.clone();
            let yb = b.unreduce(v, axes, &shape)?;
            let mask = b.bin(BinaryOp::Eq, x, yb)?;
            let count = b.push(Op::Reduce { op: ReduceOp::Sum, axes: axes.clone() }, vec![mask], None)?;
            let share = b.bin(BinaryOp::Div, gv, count)?;
            let sb = b.unreduce(share, axes, &shape)?;
            b.mul(sb, mask)?
        }
        // a @ b: (g @ b^T, a^T @ g).
        Op::MatMul => {
            if k == 0 {
                let bt = b.transpose_last2(arg(1))?;
                b.push(Op::MatMul, vec![gv, bt], None)?
            } else {
                let at = b.transpose_last2(arg(0))?;
                b.push(Op::MatMul, vec![at, gv], None)?
            }
        }
        // gather: scatter g's rows back into the table (ids get nothing).
        Op::Gather => {
            if k == 1 {
                return Ok(None);
            }
            let rows = g.ty(x).shape[0].clone();
            b.push(Op::ScatterAdd { rows }, vec![arg(1), gv], None)?
        }
        // scatter_add: gather g's rows.
        Op::ScatterAdd { .. } => {
            if k == 0 {
                return Ok(None);
            }
            b.push(Op::Gather, vec![gv, arg(0)], None)?
        }
        // im2col and col2im are each other's adjoints.
        Op::Im2col(w) => {
            let s = &g.ty(x).shape;
            let h = s[2].as_const().ok_or("im2col of a symbolic height")?;
            let wd = s[3].as_const().ok_or("im2col of a symbolic width")?;
            b.push(Op::Col2im { window: *w, h, w: wd }, vec![gv], None)?
        }
        Op::Col2im { window, .. } => b.push(Op::Im2col(*window), vec![gv], None)?,
    };
    Ok(Some(out))
}

/// A graph whose loss is `s = sum_p <grad_p, v_p>` for new inputs `v.<param>` (one per
/// parameter, of its shape). The gradient of `s` with respect to the parameters is the
/// Hessian-vector product `H v`: differentiating this graph again gives second
/// derivatives, and gradient-checking it checks every VJP rule's own VJP.
pub fn directional_graph(g: &Graph) -> Result<Graph, String> {
    let loss = g.loss.ok_or("the graph has no loss")?;
    let wrt: Vec<Value> = g.params.iter().map(|p| p.value).collect();
    let (graph, grads) = grad(g, loss, &wrt)?;
    let mut b = Builder { g: graph };
    let mut total: Option<Value> = None;
    for (p, &gp) in g.params.iter().zip(&grads) {
        let ty = Type::f32(p.shape.iter().map(|&d| Dim::konst(d)).collect());
        let idx = b.g.inputs.len() as u32;
        let v = b.push(Op::Input(idx), vec![], Some(ty.clone()))?;
        b.g.inputs.push(crate::ir::InputDecl { name: format!("v.{}", p.name), ty, value: v, span: p.span });
        let prod = b.mul(gp, v)?;
        let rank = p.shape.len() as u32;
        let s = if rank == 0 {
            prod
        } else {
            b.push(Op::Reduce { op: ReduceOp::Sum, axes: (0..rank).collect() }, vec![prod], None)?
        };
        total = Some(match total {
            Some(t) => b.bin(BinaryOp::Add, t, s)?,
            None => s,
        });
    }
    let mut out = b.g;
    out.outputs.clear();
    out.loss = Some(match total {
        Some(t) => t,
        None => {
            let mut bb = Builder { g: out.clone() };
            let z = bb.fill(0.0, vec![])?;
            out = bb.g;
            z
        }
    });
    Ok(out)
}
