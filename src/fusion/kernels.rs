//! The first schedule: one kernel per materialized value, in graph order, with views
//! sharing their operand's buffer and the transposes and broadcasts a GEMM reads
//! through strides folded into it. The sub-passes then rewrite this list.

use super::access::{broadcast_access, dims, loop_shape, reduce_dims, swaps_last_two};
use super::schedule::{Kernel, Schedule};
use crate::ir::{Graph, Op, Value};

fn idx(v: Value) -> usize {
    v.as_u32() as usize
}

/// The schedule of a materialization decision `mat` (`materialize::materialized`):
/// storage and offsets of views, and a kernel for every other materialized value.
pub(super) fn schedule(g: &Graph, mat: Vec<bool>, users: &[Vec<Value>], pinned: &[bool]) -> Result<Schedule, String> {
    let n = g.len();
    // Views share storage; transposes feeding only matmuls are folded into strides.
    let mut storage: Vec<Value> = (0..n as u32).map(Value::from_u32).collect();
    let mut view_offset = vec![0; n];
    let mut kernels = Vec::new();
    let folded_t = folded_transposes(g, users, pinned);
    let folded_b = folded_broadcasts(g, users, pinned, &mat);
    for (v, node) in g.nodes.iter() {
        let i = idx(v);
        if !mat[i] || folded_t[i] || folded_b[i] {
            continue;
        }
        match &node.op {
            Op::Input(_) | Op::Param(_) | Op::State(_) => {}
            Op::Reshape { .. } | Op::StopGradient => {
                storage[i] = storage[idx(node.args[0])];
                view_offset[i] = view_offset[idx(node.args[0])];
            }
            // A slice that is one contiguous block of its source is a view of it (an
            // RNN's time step of the time-major input projection).
            Op::Slice { axis, start, step: 1, .. } if dims(g, v)[..*axis as usize].iter().all(|&d| d == 1) => {
                let x = node.args[0];
                let inner: usize = dims(g, x)[*axis as usize + 1..].iter().product();
                storage[i] = storage[idx(x)];
                view_offset[i] = view_offset[idx(x)] + *start as usize * inner;
            }
            _ => kernels.extend(kernel_of(g, v, &mat, &folded_t, &folded_b)),
        }
    }
    // Folded transposes read their source: it must be materialized.
    for (v, node) in g.nodes.iter() {
        if folded_t[idx(v)] && !mat[idx(node.args[0])] {
            return Err(format!("internal error: {v} folds a transpose of an unmaterialized value"));
        }
    }
    Ok(Schedule { kernels, materialized: mat, storage, view_offset, row_stride: vec![0; n] })
}

/// The schedule the sub-passes start from (materialization and one kernel per
/// materialized value), with each value's users and the pinned values: what their unit
/// tests run on.
#[cfg(test)]
pub(super) fn initial(g: &Graph) -> (Schedule, Vec<Vec<Value>>, Vec<bool>) {
    let (users, pinned) = (super::uses::users(g), super::uses::pinned(g));
    let mat = super::materialize::materialized(g, &users, &pinned);
    (schedule(g, mat, &users, &pinned).expect("schedule"), users, pinned)
}

/// Per value: a transpose of the last two dims that only matmuls read, which they read
/// through strides (unless a copy pays).
///
/// A matrix read transposed as the right operand of products with a long
/// contraction is copied once instead: the gemm crate reads a k-contiguous right
/// operand without packing it, about 3x slower at the LSTM's 32x512x128 (51 against
/// 139 GFLOP/s) and 1.5x at the MLP's 128x256x512 (106 against 154). The copy is one
/// pass over the matrix, but often from L3 (the MLP's 512x256 W2ᵀ: 35 us in L2, 89 us
/// inside a step, where the product saves 36 us), so `copy_pays` asks for k >= 64
/// and, over all the products that read the copy, at least 256 rows of results per
/// matrix (the LSTM's 20 steps of 32 rows; not a convolution's per-image products).
pub(super) fn folded_transposes(g: &Graph, users: &[Vec<Value>], pinned: &[bool]) -> Vec<bool> {
    let copy_pays = |v: Value| {
        let d = dims(g, v);
        let k = d[d.len() - 2];
        let rows: usize = users[idx(v)]
            .iter()
            .filter(|&&u| matches!(g.nodes[u].op, Op::MatMul) && g.nodes[u].args[1] == v)
            .map(|&u| {
                // Rows of one product: a batch of products reads a different matrix each.
                let du = dims(g, u);
                du[du.len() - 2]
            })
            .sum();
        k >= 64 && rows >= 256
    };
    let mut folded_t = vec![false; g.len()];
    for (v, node) in g.nodes.iter() {
        if let Op::Transpose { perm } = &node.op {
            if swaps_last_two(perm)
                && !copy_pays(v)
                && !pinned[idx(v)]
                && !users[idx(v)].is_empty()
                && users[idx(v)].iter().all(|&u| matches!(g.nodes[u].op, Op::MatMul))
            {
                folded_t[idx(v)] = true;
            }
        }
    }
    folded_t
}

/// Per value: a matrix broadcast over leading batch dims and read only by matmuls,
/// which they read in place, with a zero batch stride.
pub(super) fn folded_broadcasts(g: &Graph, users: &[Vec<Value>], pinned: &[bool], mat: &[bool]) -> Vec<bool> {
    let mut folded_b = vec![false; g.len()];
    for (v, node) in g.nodes.iter() {
        if let Op::Broadcast { shape } = &node.op {
            let x = node.args[0];
            let xs = &g.ty(x).shape;
            if xs.len() == 2
                && shape.len() > 2
                && shape[shape.len() - 2..] == xs[..]
                && mat[idx(x)]
                && !pinned[idx(v)]
                && !users[idx(v)].is_empty()
                && users[idx(v)].iter().all(|&u| matches!(g.nodes[u].op, Op::MatMul))
            {
                folded_b[idx(v)] = true;
            }
        }
    }
    folded_b
}

/// The kernel that computes the materialized value `v` (not a view).
fn kernel_of(g: &Graph, v: Value, mat: &[bool], folded_t: &[bool], folded_b: &[bool]) -> Option<Kernel> {
    let node = &g.nodes[v];
    let k = match &node.op {
        Op::Fill(_) | Op::DimValue(_) | Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Broadcast { .. }
            if !matches!(node.op, Op::Broadcast { .. }) || broadcast_access(g, node.args[0], v).is_some() =>
        {
            let (rows, cols) = loop_shape(g, v);
            Kernel::Elementwise { out: v, rows, cols, also: Vec::new() }
        }
        // The reduction of a folded im2col: a window reduction over the image.
        Op::Reduce { op, .. } if matches!(g.nodes[node.args[0]].op, Op::Im2col(_)) && !mat[idx(node.args[0])] => {
            let Op::Im2col(window) = g.nodes[node.args[0]].op else { return None };
            let x = g.nodes[node.args[0]].args[0];
            let d = dims(g, x);
            Kernel::Pool { out: v, x, window, op: *op, nc: d[0] * d[1], h: d[2], w: d[3] }
        }
        Op::Reduce { op, axes } => match reduce_dims(g, node.args[0], axes) {
            Some((outer, red, inner)) => Kernel::Reduce { out: v, x: node.args[0], op: *op, outer, red, inner },
            None => Kernel::Host { out: v },
        },
        Op::MatMul => matmul(g, v, folded_t, folded_b),
        // (A transpose of a folded im2col stays a host gather that composes the maps.)
        Op::Transpose { perm } if swaps_last_two(perm) && mat[idx(node.args[0])] => {
            let d = dims(g, node.args[0]);
            let r = d.len();
            Kernel::Transpose {
                out: v,
                x: node.args[0],
                batch: d[..r - 2].iter().product(),
                rows: d[r - 2],
                cols: d[r - 1],
            }
        }
        // A transpose that keeps the last dim (attention's head split and merge): whole
        // rows are copied. (Others stay host gathers: element by element, nested JIT
        // loops ran 1.7x slower than the gather's precomputed map.)
        Op::Transpose { perm }
            if perm.last().map(|&p| p as usize + 1) == Some(perm.len()) && mat[idx(node.args[0])] =>
        {
            permute(g, v, perm)
        }
        // Windows of images, or their sum back into the images (the adjoint); a
        // col2im of a folded transpose stays a host scatter that composes the maps.
        Op::Im2col(window) | Op::Col2im { window, .. } if mat[idx(node.args[0])] => {
            let adjoint = matches!(node.op, Op::Col2im { .. });
            let d = dims(g, if adjoint { v } else { node.args[0] });
            Kernel::Window { out: v, x: node.args[0], window: *window, adjoint, nc: d[0] * d[1], h: d[2], w: d[3] }
        }
        _ => Kernel::Host { out: v },
    };
    Some(k)
}

/// The GEMM of the matmul `v`, reading folded transposes and broadcasts in place.
fn matmul(g: &Graph, v: Value, folded_t: &[bool], folded_b: &[bool]) -> Kernel {
    let node = &g.nodes[v];
    let (mut a, mut b) = (node.args[0], node.args[1]);
    let (mut a_t, mut b_t) = (false, false);
    let (a_shared, b_shared) = (folded_b[idx(a)], folded_b[idx(b)]);
    if a_shared {
        a = g.nodes[a].args[0];
    }
    if b_shared {
        b = g.nodes[b].args[0];
    }
    if folded_t[idx(a)] {
        a = g.nodes[a].args[0];
        a_t = true;
    }
    if folded_t[idx(b)] {
        b = g.nodes[b].args[0];
        b_t = true;
    }
    let s = dims(g, v);
    let r = s.len();
    let k = dims(g, node.args[0])[r - 1];
    Kernel::MatMul {
        out: v,
        a,
        b,
        a_t,
        b_t,
        a_shared,
        b_shared,
        batch: s[..r - 2].iter().product(),
        m: s[r - 2],
        k,
        n: s[r - 1],
        scale: 1.0,
        accumulate: false,
        epilogue: None,
    }
}

/// The row copy of a transpose `v` that keeps the last dim.
fn permute(g: &Graph, v: Value, perm: &[u32]) -> Kernel {
    let x = g.nodes[v].args[0];
    let xd = dims(g, x);
    let mut xs = vec![1usize; xd.len()];
    for k in (0..xd.len().saturating_sub(1)).rev() {
        xs[k] = xs[k + 1] * xd[k + 1];
    }
    let od = dims(g, v);
    let r = od.len();
    Kernel::Permute {
        out: v,
        x,
        dims: od[..r - 1].to_vec(),
        src_strides: perm[..r - 1].iter().map(|&p| xs[p as usize]).collect(),
        row: od[r - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::describe::lines;
    use crate::fusion::testing::Builder;
    use crate::ir::{ReduceOp, UnaryOp};

    #[test]
    fn a_transposed_weight_is_read_through_strides_unless_a_copy_pays() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let w = b.param("w", &[16, 8]);
        let wt = b.transpose(w, &[1, 0]);
        let y = b.matmul(x, wt);
        b.output("y", y);
        // k = 64 and 256 rows of results: the transpose is copied once.
        let x2 = b.input("x2", &[256, 64]);
        let w2 = b.param("w2", &[128, 64]);
        let w2t = b.transpose(w2, &[1, 0]);
        let y2 = b.matmul(x2, w2t);
        b.output("y2", y2);
        let (s, _, _) = initial(&b.g);
        assert_eq!(
            lines(&b.g, &s),
            vec![
                format!("gemm {y} <- {x} @ {w}^T [1 x 4x8 @ 8x16]"),
                format!("transpose {w2t} <- {w2} [1 x 128x64]"),
                format!("gemm {y2} <- {x2} @ {w2t} [1 x 256x64 @ 64x128]"),
            ]
        );
    }

    #[test]
    fn a_matrix_broadcast_over_a_batch_is_shared() {
        let mut b = Builder::new();
        let x = b.input("x", &[2, 4, 8]);
        let w = b.param("w", &[8, 16]);
        let wb = b.broadcast(w, &[2, 8, 16]);
        let y = b.matmul(x, wb);
        b.output("y", y);
        let (s, _, _) = initial(&b.g);
        assert_eq!(lines(&b.g, &s), vec![format!("gemm {y} <- {x} @ {w} (shared) [2 x 4x8 @ 8x16]")]);
    }

    #[test]
    fn reshapes_and_contiguous_slices_are_views() {
        let mut b = Builder::new();
        let x = b.input("x", &[3, 4, 8]);
        let e = b.unary(UnaryOp::Exp, x);
        let flat = b.reshape(e, &[96]);
        let step = b.op(Op::Slice { axis: 0, start: 1, end: 2, step: 1 }, &[e]);
        let r1 = b.reduce(ReduceOp::Sum, flat, &[0]);
        let r2 = b.reduce(ReduceOp::Sum, step, &[2]);
        b.output("r1", r1);
        b.output("r2", r2);
        let (s, _, _) = initial(&b.g);
        let at = |v: Value| (s.storage[idx(v)], s.view_offset[idx(v)]);
        assert_eq!((at(flat), at(step)), ((e, 0), (e, 32)));
        assert_eq!(s.kernels.iter().map(Kernel::out).collect::<Vec<_>>(), vec![e, r1, r2]);
    }

    #[test]
    fn a_transpose_that_keeps_rows_copies_them() {
        let mut b = Builder::new();
        let x = b.input("x", &[2, 3, 4]);
        let t = b.transpose(x, &[1, 0, 2]);
        b.output("t", t);
        let (s, _, _) = initial(&b.g);
        assert_eq!(s.kernels, vec![Kernel::Permute { out: t, x, dims: vec![3, 2], src_strides: vec![4, 12], row: 4 }]);
    }
}
