//! Graph simplification, run on the graphs that are executed (after autodiff):
//! - `simplify`: one pass in topological order that folds constants, applies algebraic
//!   identities that never make code worse, merges common subexpressions, and rewrites
//!   a few shapes of computation into cheaper ones (a sum of matrix products into one
//!   product, a reduction over scattered axes into two strided ones); then `dead_code`.
//!   `nnc ir --stage opt` prints its result.
//! - `dead_code`: keeps the nodes that outputs, the loss and updates need, plus every
//!   declared leaf.
//!
//! Most rewrites give the same f32 result bit for bit. The exceptions reassociate or
//! round differently, as XLA's algebraic simplifier does: a sum of matrix products
//! becomes one product over concatenated operands; a reduction over non-contiguous axes
//! runs in two steps; a sum of a constant folds to one rounded product; and `x + 0` is
//! `x`, so `-0 + 0` stays `-0`. Constants fold in f32 with the interpreter's own
//! functions. `StopGradient` is dropped: it is the identity, and simplified graphs are
//! not differentiated again. `tests/simplify.rs` checks results against f64.

use crate::ir::scalar::{binary, unary};
use crate::ir::{BinaryOp, DType, Graph, Node, Op, ReduceOp, Type, UnaryOp, Value};
use cranelift_entity::PrimaryMap;
use std::collections::HashMap;

/// What a node becomes: an existing value of the new graph, or a node to add.
enum Rewrite {
    Same(Value),
    New(Op, Vec<Value>),
}

/// The new graph being built, with CSE on every node added.
struct Builder {
    nodes: PrimaryMap<Value, Node>,
    seen: HashMap<String, Value>,
}

impl Builder {
    fn add(&mut self, op: Op, args: Vec<Value>, ty: &Type) -> Value {
        let leaf = matches!(op, Op::Input(_) | Op::Param(_) | Op::State(_));
        let key = (!leaf).then(|| cse_key(&op, &args, ty));
        match key.as_ref().and_then(|k| self.seen.get(k)) {
            Some(&v) => v,
            None => {
                let v = self.nodes.push(Node { op, args, ty: ty.clone() });
                if let Some(k) = key {
                    self.seen.insert(k, v);
                }
                v
            }
        }
    }
    /// Adds a node with operands, its type from the shape rule.
    fn infer(&mut self, op: Op, args: Vec<Value>) -> Option<Value> {
        let tys: Vec<&Type> = args.iter().map(|a| &self.nodes[*a].ty).collect();
        let ty = crate::ir::op::infer(&op, &tys, None).ok()?;
        Some(self.add(op, args, &ty))
    }
}

/// Constant folding, algebraic identities and CSE, then dead-code elimination.
pub fn simplify(g: &Graph) -> Graph {
    let mut b = Builder { nodes: PrimaryMap::new(), seen: HashMap::new() };
    let mut map: Vec<Value> = Vec::with_capacity(g.len());
    // Uses of each value, and whether its only use is an addition (an inner node of an
    // addition tree, which `merge_products` handles at the tree's root).
    let mut users = vec![0usize; g.len()];
    let mut add_users = vec![0usize; g.len()];
    for (_, node) in g.nodes.iter() {
        for a in &node.args {
            users[a.as_u32() as usize] += 1;
            if node.op == Op::Binary(BinaryOp::Add) {
                add_users[a.as_u32() as usize] += 1;
            }
        }
    }
    for (_, v) in &g.outputs {
        users[v.as_u32() as usize] += 1;
    }
    for v in g.loss.iter().chain(g.params.iter().filter_map(|p| p.update.as_ref())) {
        users[v.as_u32() as usize] += 1;
    }
    for v in g.states.iter().filter_map(|s| s.update.as_ref()) {
        users[v.as_u32() as usize] += 1;
    }
    for (old, node) in g.nodes.iter() {
        let mut args: Vec<Value> = node.args.iter().map(|a| map[a.as_u32() as usize]).collect();
        let mut op = node.op.clone();
        let inner_add = users[old.as_u32() as usize] == 1 && add_users[old.as_u32() as usize] == 1;
        if !inner_add {
            if let Some(v) = merge_products(g, &users, &map, &mut b, old) {
                map.push(v);
                continue;
            }
        }
        // A reduction over axes that are not contiguous (BatchNorm's and a convolution
        // bias's [0, 2, 3]) becomes one over the last run of axes, then one over the
        // rest: each is a strided loop instead of a gather.
        if let Op::Reduce { op: r, axes } = &node.op {
            if let Some(split) = axes.windows(2).position(|w| w[1] != w[0] + 1) {
                let (rest, last) = (axes[..=split].to_vec(), axes[split + 1..].to_vec());
                if let Some(v) = b.infer(Op::Reduce { op: *r, axes: last }, args.clone()) {
                    args = vec![v];
                    op = Op::Reduce { op: *r, axes: rest };
                }
            }
        }
        let v = match rewrite(&mut b, &op, args, &node.ty) {
            Rewrite::Same(v) => v,
            Rewrite::New(op, args) => b.add(op, args, &node.ty),
        };
        map.push(v);
    }
    let out = with_nodes(g, b.nodes, |v| map[v.as_u32() as usize]);
    dead_code(&out)
}

/// Identical op, operands and type: the same value. `add` and `mul` commute exactly.
fn cse_key(op: &Op, args: &[Value], ty: &Type) -> String {
    let mut a = args.to_vec();
    if matches!(op, Op::Binary(BinaryOp::Add | BinaryOp::Mul)) {
        a.sort_unstable();
    }
    format!("{op:?}|{a:?}|{ty:?}")
}

/// The constant of an f32 `fill` node.
fn fill_of(nodes: &PrimaryMap<Value, Node>, v: Value) -> Option<f64> {
    match nodes[v].op {
        Op::Fill(c) if nodes[v].ty.dtype == DType::F32 => Some(c),
        _ => None,
    }
}

fn rewrite(b: &mut Builder, op: &Op, args: Vec<Value>, ty: &Type) -> Rewrite {
    use Rewrite::{New, Same};
    if let Some(v) = concat_of_transposes(b, op, &args) {
        return Same(v);
    }
    let nodes = &b.nodes;
    let fill = |i: usize| args.get(i).and_then(|&a| fill_of(nodes, a));
    let arg_ty = |i: usize| &nodes[args[i]].ty;
    let inner = |i: usize| &nodes[args[i]];
    let folded = |c: f32| New(Op::Fill(f64::from(c)), vec![]);
    // A view or broadcast of a constant is the constant at the node's type.
    let moves_data = matches!(op, Op::Broadcast { .. } | Op::Reshape { .. } | Op::Transpose { .. } | Op::Slice { .. });
    if moves_data && ty.dtype == DType::F32 {
        if let Some(c) = fill(0) {
            return New(Op::Fill(c), vec![]);
        }
    }
    match op {
        Op::DimValue(d) => match d.as_const() {
            Some(k) => folded(k as f32),
            None => New(op.clone(), args),
        },
        Op::StopGradient => Same(args[0]),
        Op::Unary(u) => {
            if let Some(c) = fill(0) {
                return folded(unary::<f32>(*u, c as f32));
            }
            if *u == UnaryOp::Neg && inner(0).op == Op::Unary(UnaryOp::Neg) {
                return Same(inner(0).args[0]);
            }
            New(op.clone(), args)
        }
        Op::Binary(b) => {
            let (ca, cb) = (fill(0), fill(1));
            if let (Some(x), Some(y)) = (ca, cb) {
                return folded(binary::<f32>(*b, x as f32, y as f32));
            }
            let is = |c: Option<f64>, k: f64| c == Some(k);
            match b {
                BinaryOp::Add if is(cb, 0.0) => Same(args[0]),
                BinaryOp::Add if is(ca, 0.0) => Same(args[1]),
                BinaryOp::Sub if is(cb, 0.0) => Same(args[0]),
                BinaryOp::Mul | BinaryOp::Div if is(cb, 1.0) => Same(args[0]),
                BinaryOp::Mul if is(ca, 1.0) => Same(args[1]),
                _ => New(op.clone(), args),
            }
        }
        Op::Select => match fill(0) {
            Some(c) => Same(if c != 0.0 { args[1] } else { args[2] }),
            None if args[1] == args[2] => Same(args[1]),
            None => New(op.clone(), args),
        },
        Op::Broadcast { shape } => {
            if arg_ty(0).shape == *shape {
                return Same(args[0]);
            }
            if matches!(inner(0).op, Op::Broadcast { .. }) {
                // NumPy broadcasts compose: x's dims are 1 or the inner shape's, whose
                // dims are 1 or the outer shape's.
                return New(op.clone(), vec![inner(0).args[0]]);
            }
            New(op.clone(), args)
        }
        Op::Reshape { shape } => {
            if arg_ty(0).shape == *shape {
                return Same(args[0]);
            }
            if matches!(inner(0).op, Op::Reshape { .. }) {
                let x = inner(0).args[0];
                if nodes[x].ty.shape == *shape {
                    return Same(x);
                }
                return New(op.clone(), vec![x]);
            }
            New(op.clone(), args)
        }
        Op::Transpose { perm } => {
            let identity = |p: &[u32]| p.iter().enumerate().all(|(i, &d)| d as usize == i);
            if identity(perm) {
                return Same(args[0]);
            }
            // A transpose of trailing dims of a broadcast that only adds leading dims is
            // the broadcast of the (smaller) transposed operand (a conv weight's).
            if let Op::Broadcast { shape } = &inner(0).op {
                let x = inner(0).args[0];
                let xr = nodes[x].ty.rank();
                let lead = shape.len() - xr.min(shape.len());
                let only_leading = nodes[x].ty.shape[..] == shape[lead..];
                let keeps_leading = perm[..lead].iter().enumerate().all(|(i, &d)| d as usize == i)
                    && perm[lead..].iter().all(|&d| d as usize >= lead);
                if only_leading && keeps_leading && xr >= 2 {
                    let inner_perm: Vec<u32> = perm[lead..].iter().map(|&d| d - lead as u32).collect();
                    let xt = &nodes[x].ty;
                    let first_ty = Type {
                        dtype: xt.dtype,
                        shape: inner_perm.iter().map(|&d| xt.shape[d as usize].clone()).collect(),
                    };
                    let t = b.add(Op::Transpose { perm: inner_perm }, vec![x], &first_ty);
                    return New(Op::Broadcast { shape: ty.shape.clone() }, vec![t]);
                }
            }
            if let Op::Transpose { perm: p1 } = &inner(0).op {
                // Result dim i is the inner result's dim perm[i], which is x's p1[perm[i]].
                let composed: Vec<u32> = perm.iter().map(|&d| p1[d as usize]).collect();
                let x = inner(0).args[0];
                if identity(&composed) {
                    return Same(x);
                }
                return New(Op::Transpose { perm: composed }, vec![x]);
            }
            New(op.clone(), args)
        }
        Op::Slice { axis, start, end, step } => {
            let whole = arg_ty(0).shape.get(*axis as usize).and_then(|d| d.as_const()) == Some(*end);
            if *start == 0 && *step == 1 && whole {
                return Same(args[0]);
            }
            New(op.clone(), args)
        }
        Op::Reduce { op: r, axes } => {
            if axes.is_empty() {
                return Same(args[0]);
            }
            if let Some(c) = fill(0) {
                let count: Option<i64> = axes.iter().map(|&a| arg_ty(0).shape[a as usize].as_const()).product();
                match (r, count) {
                    (ReduceOp::Sum, Some(n)) => return folded(c as f32 * n as f32),
                    (ReduceOp::Max | ReduceOp::Min, _) => return New(Op::Fill(c), vec![]),
                    _ => {}
                }
            }
            New(op.clone(), args)
        }
        Op::Concat { .. } if args.len() == 1 => Same(args[0]),
        Op::Concat { axis: 0 } => match concat_of_unit_reshapes(b, &args) {
            Some(c) => New(Op::Reshape { shape: ty.shape.clone() }, vec![c]),
            None => New(op.clone(), args),
        },
        _ => New(op.clone(), args),
    }
}

/// Stacking `[1, ...]` reshapes of equally shaped tensors along axis 0 is a reshape of
/// their concatenation along their own axis 0 (the same bytes): the inner concat, which
/// the weight-gradient product of an RNN also builds, is then shared.
fn concat_of_unit_reshapes(b: &mut Builder, args: &[Value]) -> Option<Value> {
    let mut xs = Vec::with_capacity(args.len());
    for &a in args {
        let node = &b.nodes[a];
        let x = *node.args.first()?;
        let xt = &b.nodes[x].ty;
        let adds_unit = matches!(node.op, Op::Reshape { .. })
            && xt.rank() >= 1
            && node.ty.shape.first().and_then(|d| d.as_const()) == Some(1)
            && node.ty.shape[1..] == xt.shape[..];
        if !adds_unit || xt.shape != b.nodes[*xs.first().unwrap_or(&x)].ty.shape {
            return None;
        }
        xs.push(x);
    }
    b.infer(Op::Concat { axis: 0 }, xs)
}

/// A copy of `g` without the nodes nothing needs, renumbered densely in the same order.
pub fn dead_code(g: &Graph) -> Graph {
    let n = g.len();
    let mut live = vec![false; n];
    let idx = |v: Value| v.as_u32() as usize;
    for (_, v) in &g.outputs {
        live[idx(*v)] = true;
    }
    if let Some(l) = g.loss {
        live[idx(l)] = true;
    }
    for u in g.params.iter().filter_map(|p| p.update).chain(g.states.iter().filter_map(|s| s.update)) {
        live[idx(u)] = true;
    }
    for (v, node) in g.nodes.iter() {
        if matches!(node.op, Op::Input(_) | Op::Param(_) | Op::State(_)) {
            live[idx(v)] = true;
        }
    }
    for (v, node) in g.nodes.iter().rev() {
        if live[idx(v)] {
            for a in &node.args {
                live[idx(*a)] = true;
            }
        }
    }
    rebuild(g, &live)
}

/// A copy of `g` without the inputs nothing uses (`predict` needs no labels), nor the
/// tensors read from a teacher's checkpoint (`Init::Load` states) that nothing uses: a
/// distilled model's predictions do not need its teacher.
pub fn drop_unused_inputs(g: &Graph) -> Graph {
    let mut used = vec![false; g.len()];
    for (_, node) in g.nodes.iter() {
        for a in &node.args {
            used[a.as_u32() as usize] = true;
        }
    }
    for (_, v) in &g.outputs {
        used[v.as_u32() as usize] = true;
    }
    let keep: Vec<bool> = g.inputs.iter().map(|i| used[i.value.as_u32() as usize]).collect();
    let new_index = dense_index(&keep);
    let keep_state: Vec<bool> = g
        .states
        .iter()
        .map(|s| {
            used[s.value.as_u32() as usize] || s.update.is_some() || !matches!(s.init, crate::ir::Init::Load { .. })
        })
        .collect();
    let new_state = dense_index(&keep_state);
    let mut out = g.clone();
    out.inputs = g.inputs.iter().zip(&keep).filter(|(_, k)| **k).map(|(i, _)| i.clone()).collect();
    out.states = g.states.iter().zip(&keep_state).filter(|(_, k)| **k).map(|(s, _)| s.clone()).collect();
    for (_, node) in out.nodes.iter_mut() {
        match &mut node.op {
            Op::Input(i) => *i = new_index[*i as usize],
            Op::State(i) => *i = new_state[*i as usize],
            _ => {}
        }
    }
    // Unused input and frozen-state leaves are no longer declared; remove their nodes.
    let mut keep_node = vec![true; out.len()];
    for (i, k) in g.inputs.iter().zip(&keep) {
        if !k {
            keep_node[i.value.as_u32() as usize] = false;
        }
    }
    for (s, k) in g.states.iter().zip(&keep_state) {
        if !k {
            keep_node[s.value.as_u32() as usize] = false;
        }
    }
    rebuild(&out, &keep_node)
}

/// The new index of each kept entry when the others are removed (kept entries in order).
fn dense_index(keep: &[bool]) -> Vec<u32> {
    let mut k = 0;
    keep.iter()
        .map(|&kp| {
            let i = k;
            k += u32::from(kp);
            i
        })
        .collect()
}

/// A copy of `g` with only the nodes marked in `keep`, renumbered densely in order, and
/// every reference (operands, declarations, outputs, loss, updates) mapped.
fn rebuild(g: &Graph, keep: &[bool]) -> Graph {
    let idx = |v: Value| v.as_u32() as usize;
    let mut map: Vec<Option<Value>> = vec![None; g.len()];
    let mut nodes = PrimaryMap::new();
    for (v, node) in g.nodes.iter() {
        if keep[idx(v)] {
            let mut nn = node.clone();
            for a in nn.args.iter_mut() {
                *a = map[idx(*a)].unwrap_or(*a);
            }
            map[idx(v)] = Some(nodes.push(nn));
        }
    }
    with_nodes(g, nodes, |v| map[idx(v)].unwrap_or(v))
}

/// `g` with new nodes, every reference (declarations, outputs, loss, updates) mapped by
/// `m`. An update that maps to its own parameter or state (it changes nothing) is dropped.
pub fn with_nodes(g: &Graph, nodes: PrimaryMap<Value, Node>, m: impl Fn(Value) -> Value) -> Graph {
    let mut out = g.clone();
    out.nodes = nodes;
    for i in out.inputs.iter_mut() {
        i.value = m(i.value);
    }
    for p in out.params.iter_mut() {
        p.value = m(p.value);
        p.update = p.update.map(&m).filter(|&u| u != p.value);
    }
    for s in out.states.iter_mut() {
        s.value = m(s.value);
        s.update = s.update.map(&m).filter(|&u| u != s.value);
    }
    for (_, v) in out.outputs.iter_mut() {
        *v = m(*v);
    }
    out.loss = out.loss.map(&m);
    out
}

/// A sum of three or more matrix products, Σ Pᵢ Bᵢ (a recurrent weight's gradient over
/// time steps), as one product [P₁ … Pₙ] [B₁; …; Bₙ]: one large GEMM instead of n small
/// ones and n − 1 additions. `v` is the root of a tree of additions whose inner nodes
/// have no other user; the leaves are the products (already rebuilt). Reassociates the sum.
fn merge_products(g: &Graph, users: &[usize], map: &[Value], b: &mut Builder, v: Value) -> Option<Value> {
    let is_add = |x: Value| g.nodes[x].op == Op::Binary(BinaryOp::Add);
    if !is_add(v) {
        return None;
    }
    let mut leaves = Vec::new();
    let mut stack = vec![v];
    while let Some(x) = stack.pop() {
        if x == v || (is_add(x) && users[x.as_u32() as usize] == 1) {
            // Right operand first, so leaves come out left to right.
            stack.extend(g.nodes[x].args.iter().rev());
        } else {
            leaves.push(map[x.as_u32() as usize]);
        }
    }
    if leaves.len() < 3 {
        return None;
    }
    let mut pairs = Vec::new();
    for &l in &leaves {
        let node = &b.nodes[l];
        if node.op != Op::MatMul || node.ty.rank() != 2 || node.ty.shape != b.nodes[leaves[0]].ty.shape {
            return None;
        }
        pairs.push((node.args[0], node.args[1]));
    }
    // In the order the left operands were computed (an RNN's steps in time order), so
    // the concatenated right operand matches other gathers of the same values (the
    // input weight's gradient gathers the same gate gradients in time order).
    // Constants (an RNN's initial state) are there from the start.
    let source = |a: Value| {
        let x = match b.nodes[a].op {
            Op::Transpose { .. } => b.nodes[a].args[0],
            _ => a,
        };
        (!matches!(b.nodes[x].op, Op::Fill(_)), x)
    };
    pairs.sort_by_key(|&(a, _)| source(a));
    let (ps, bs): (Vec<Value>, Vec<Value>) = pairs.into_iter().unzip();
    let p = b.infer(Op::Concat { axis: 1 }, ps)?;
    let p = concat_of_transposes(b, &b.nodes[p].op.clone(), &b.nodes[p].args.clone()).unwrap_or(p);
    let q = b.infer(Op::Concat { axis: 0 }, bs)?;
    b.infer(Op::MatMul, vec![p, q])
}

/// A concatenation of 2-D transposes (or constants) is the transpose of the
/// concatenation along the other axis: the GEMM reads it through strides.
fn concat_of_transposes(b: &mut Builder, op: &Op, args: &[Value]) -> Option<Value> {
    let Op::Concat { axis } = op else { return None };
    if args.len() < 2 || b.nodes[args[0]].ty.rank() != 2 {
        return None;
    }
    let mut xs = Vec::with_capacity(args.len());
    for &a in args {
        let node = &b.nodes[a];
        match &node.op {
            Op::Transpose { perm } if perm[..] == [1, 0] => xs.push(node.args[0]),
            Op::Fill(c) => {
                let ty = Type { dtype: node.ty.dtype, shape: vec![node.ty.shape[1].clone(), node.ty.shape[0].clone()] };
                let c = *c;
                xs.push(b.add(Op::Fill(c), vec![], &ty));
            }
            _ => return None,
        }
    }
    let c = b.infer(Op::Concat { axis: 1 - axis }, xs)?;
    b.infer(Op::Transpose { perm: vec![1, 0] }, vec![c])
}
