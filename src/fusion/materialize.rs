//! Which values get a buffer (*materialized*) and which are computed inside the loop of
//! the kernel that needs them (*fused*): the first decision of `fuse`, before any kernel
//! exists.

use super::access::{broadcast_access, fusible_slice, is_elementwise, loop_shape, reduce_dims};
use super::nodes::flat_only_in;
use crate::ir::{BinaryOp, Graph, Op, UnaryOp, Value};

fn idx(v: Value) -> usize {
    v.as_u32() as usize
}

/// Per value: whether it is materialized. Decided from the last node backwards
/// (`stored`), then cheap values are recomputed in their users' loops
/// (`recompute_cheap`) and reductions compute the producer only they read
/// (`into_reductions`).
pub(super) fn materialized(g: &Graph, users: &[Vec<Value>], pinned: &[bool]) -> Vec<bool> {
    let mut mat = decide(g, users, pinned);
    recompute_cheap(g, users, pinned, &mut mat);
    into_reductions(g, users, pinned, &mut mat);
    mat
}

/// Decides from the last node backwards, so a node's users are decided first; `force`
/// marks values a decided user needs in a buffer.
fn decide(g: &Graph, users: &[Vec<Value>], pinned: &[bool]) -> Vec<bool> {
    let n = g.len();
    let mut mat = vec![false; n];
    let mut force = vec![false; n];
    for (v, _) in g.nodes.iter().rev() {
        mat[idx(v)] = stored(g, users, pinned, &mat, &force, v);
        force_operands(g, users, pinned, v, &mut force);
    }
    mat
}

fn is_const(g: &Graph, v: Value) -> bool {
    matches!(g.nodes[v].op, Op::Fill(_) | Op::DimValue(_))
}

/// An im2col read only by a transpose, and a transpose read only by a col2im, are
/// folded into that user: its host kernel composes the two index maps. An im2col
/// without padding read only by a reduction over its window axes (max or average
/// pooling) is folded into a window reduction that reads the image (`Kernel::Pool`).
pub(super) fn folds_into_user(g: &Graph, users: &[Vec<Value>], pinned: &[bool], v: Value) -> bool {
    let sole =
        |want: fn(&Op) -> bool| users[idx(v)].len() == 1 && want(&g.nodes[users[idx(v)][0]].op) && !pinned[idx(v)];
    match g.nodes[v].op {
        Op::Im2col(w)
            if w.pad_h == 0 && w.pad_w == 0 && sole(|o| matches!(o, Op::Reduce { axes, .. } if axes[..] == [2, 3])) =>
        {
            true
        }
        Op::Im2col(_) => sole(|o| matches!(o, Op::Transpose { .. })),
        Op::Transpose { .. } => sole(|o| matches!(o, Op::Col2im { .. })),
        _ => false,
    }
}

/// Whether `v` gets a buffer, given the decisions for its users (`mat`) and what they
/// force into buffers.
fn stored(g: &Graph, users: &[Vec<Value>], pinned: &[bool], mat: &[bool], force: &[bool], v: Value) -> bool {
    let i = idx(v);
    let node = &g.nodes[v];
    let same_shape_ew = |u: Value| is_elementwise(&g.nodes[u].op) && g.ty(u).shape == g.ty(v).shape;
    match &node.op {
        Op::Input(_) | Op::Param(_) | Op::State(_) => true,
        Op::Fill(_) | Op::DimValue(_) | Op::Unary(_) | Op::Binary(_) | Op::Select => {
            let u_ok = |u: Value| {
                same_shape_ew(u) || (is_const(g, v) && matches!(g.nodes[u].op, Op::Broadcast { .. }) && !mat[idx(u)])
            };
            // Constants are recomputed in every loop that uses them (they cost
            // nothing); other values with several users are stored once.
            let users_ok = if is_const(g, v) { !users[i].is_empty() } else { users[i].len() == 1 };
            pinned[i] || force[i] || !users_ok || !users[i].iter().all(|&u| u_ok(u))
        }
        Op::Broadcast { .. } => {
            pinned[i]
                || force[i]
                || users[i].is_empty()
                || !users[i].iter().all(|&u| same_shape_ew(u))
                || broadcast_access(g, node.args[0], v).is_none()
        }
        Op::Im2col(_) | Op::Transpose { .. } if folds_into_user(g, users, pinned, v) => false,
        Op::Slice { .. } if fusible_slice(g, v) => {
            pinned[i] || force[i] || users[i].is_empty() || !users[i].iter().all(|&u| same_shape_ew(u))
        }
        _ => true,
    }
}

/// Marks the operands `v` needs in a buffer: a broadcast's non-constant operand, and
/// every operand of a node that is not elementwise (but the im2col or transpose folded
/// into it).
fn force_operands(g: &Graph, users: &[Vec<Value>], pinned: &[bool], v: Value, force: &mut [bool]) {
    let node = &g.nodes[v];
    match &node.op {
        Op::Fill(_) | Op::DimValue(_) | Op::Unary(_) | Op::Binary(_) | Op::Select => {}
        Op::Broadcast { .. } => {
            let x = node.args[0];
            if !is_const(g, x) {
                force[idx(x)] = true;
            }
        }
        _ => {
            for &a in &node.args {
                let folded = folds_into_user(g, users, pinned, a)
                    && matches!(
                        (&node.op, &g.nodes[a].op),
                        (Op::Transpose { .. } | Op::Reduce { .. }, Op::Im2col(_))
                            | (Op::Col2im { .. }, Op::Transpose { .. })
                    );
                if !folded {
                    force[idx(a)] = true;
                }
            }
        }
    }
}

/// A value that costs one arithmetic op on stored values (or constants) and that only
/// same-shape elementwise ops read is recomputed in each of their loops instead of
/// stored: GELU's x/2 and x/√2, and a dense layer's pre-activation x W + b, which its
/// ReLU's gradient reads again in the backward pass, are not written out. Latest
/// first, and never a value that such a recomputed value reads.
fn recompute_cheap(g: &Graph, users: &[Vec<Value>], pinned: &[bool], mat: &mut [bool]) {
    let mut recomputed = vec![false; g.len()];
    for (v, node) in g.nodes.iter().rev() {
        let i = idx(v);
        let cheap = match &node.op {
            Op::Unary(u) => matches!(u, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign),
            Op::Binary(b) => !matches!(b, BinaryOp::Pow),
            Op::Select => true,
            _ => false,
        };
        let stored_or_constant = |a: Value| match g.nodes[a].op {
            Op::Broadcast { .. } => !mat[idx(a)] && (mat[idx(g.nodes[a].args[0])] || is_const(g, g.nodes[a].args[0])),
            _ => mat[idx(a)] || is_const(g, a),
        };
        if cheap
            && mat[i]
            && !pinned[i]
            && users[i].len() >= 2
            && users[i].iter().all(|&u| {
                matches!(g.nodes[u].op, Op::Unary(_) | Op::Binary(_) | Op::Select) && g.ty(u).shape == g.ty(v).shape
            })
            && node.args.iter().all(|&a| stored_or_constant(a))
            && !users[i].iter().any(|&u| recomputed[idx(u)])
        {
            mat[i] = false;
            recomputed[i] = true;
        }
    }
}

/// A reduction computes a producer that only it reads inside its own loop: softmax's
/// exp, a squared deviation, a loss's per-element terms are not stored.
fn into_reductions(g: &Graph, users: &[Vec<Value>], pinned: &[bool], mat: &mut [bool]) {
    for (v, node) in g.nodes.iter() {
        if let Op::Reduce { axes, .. } = &node.op {
            let x = node.args[0];
            if mat[idx(v)]
                && matches!(g.nodes[x].op, Op::Unary(_) | Op::Binary(_) | Op::Select)
                && users[idx(x)] == [v]
                && !pinned[idx(x)]
                && reduce_dims(g, x, axes).is_some_and(|(_, red, inner)| {
                    let cols = loop_shape(g, x).1;
                    let mut m = mat.to_vec();
                    m[idx(x)] = false;
                    flat_only_in(g, &m, x) || (inner == 1 && red == cols) || inner == cols
                })
            {
                mat[idx(x)] = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::testing::Builder;
    use crate::fusion::uses::{pinned, users};
    use crate::ir::ReduceOp;

    fn stored(g: &Graph) -> Vec<Value> {
        let m = materialized(g, &users(g), &pinned(g));
        g.nodes.keys().filter(|v| m[idx(*v)]).collect()
    }

    #[test]
    fn a_chain_of_one_user_each_is_fused_into_its_end() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let one = b.fill(1.0, &[4, 8]);
        let a = b.binary(BinaryOp::Add, x, one);
        let e = b.unary(UnaryOp::Exp, a);
        let y = b.unary(UnaryOp::Neg, e);
        b.output("y", y);
        assert_eq!(stored(&b.g), vec![x, y]);
    }

    #[test]
    fn a_value_with_two_users_is_stored_unless_it_is_cheap() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let z = b.input("z", &[4, 8]);
        let dear = b.unary(UnaryOp::Exp, x);
        let cheap = b.binary(BinaryOp::Mul, x, z);
        let outs = [
            b.unary(UnaryOp::Tanh, dear),
            b.unary(UnaryOp::Sigmoid, dear),
            b.unary(UnaryOp::Tanh, cheap),
            b.unary(UnaryOp::Sigmoid, cheap),
        ];
        for (i, o) in outs.iter().enumerate() {
            b.output(&format!("o{i}"), *o);
        }
        // The product of two stored values is recomputed in both loops.
        assert_eq!(stored(&b.g), [vec![x, z, dear], outs.to_vec()].concat());
    }

    #[test]
    fn operands_of_products_are_stored_and_reductions_compute_their_producer() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let w = b.param("w", &[8, 8]);
        let h = b.unary(UnaryOp::Tanh, x);
        let p = b.matmul(h, w);
        let e = b.unary(UnaryOp::Exp, p);
        let r = b.reduce(ReduceOp::Sum, e, &[1]);
        b.output("r", r);
        // `h` is forced into a buffer by the product; `e` is computed inside the sum.
        assert_eq!(stored(&b.g), vec![x, w, h, p, r]);
    }

    #[test]
    fn a_row_broadcast_is_read_in_place_and_an_unreadable_one_is_stored() {
        let mut b = Builder::new();
        let bias = b.param("bias", &[8]);
        let x = b.input("x", &[4, 8]);
        let bb = b.broadcast(bias, &[4, 8]);
        let y = b.binary(BinaryOp::Add, x, bb);
        b.output("y", y);
        // [4, 1, 8] over [4, 3, 8] has no loop form (rows shorter than 32).
        let m = b.param("m", &[4, 1, 8]);
        let z = b.input("z", &[4, 3, 8]);
        let mb = b.broadcast(m, &[4, 3, 8]);
        let zy = b.binary(BinaryOp::Mul, z, mb);
        b.output("zy", zy);
        assert_eq!(stored(&b.g), vec![bias, x, y, m, z, mb, zy]);
    }
}
