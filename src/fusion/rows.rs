//! Row groups: consecutive row-wise kernels over the same rows run row by row
//! (`Kernel::Rows`: a softmax's or a layer norm's row stays in L1).

use super::access::{broadcast_access, loop_shape, Access};
use super::nodes::{fused_nodes, reads};
use super::schedule::{Kernel, Schedule};
use super::uses::updates;
use crate::ir::{Graph, Op, Value};

/// The rows of a kernel that can be a part of a row group: an elementwise kernel's loop
/// rows, or a reduction of whole rows' outer count.
pub(super) fn row_part(k: &Kernel) -> Option<usize> {
    match k {
        Kernel::Elementwise { rows, .. } => Some(*rows),
        Kernel::Reduce { outer, inner: 1, .. } => Some(*outer),
        _ => None,
    }
}

/// Groups runs of consecutive row-wise kernels over the same rows (at least 2) into
/// `Kernel::Rows` when a run has a reduction in it and each part reads the storage
/// written by earlier parts only in its own row: element for element (a value with the
/// part's rows, from its start), as a per-row scalar (a column broadcast), through a
/// slice of the last dim, or as the rows a reduction reduces. Parts that update a
/// parameter or state are left alone (the planner updates those in place only from an
/// elementwise kernel).
pub(super) fn row_groups(g: &Graph, s: &mut Schedule) {
    use std::collections::HashSet;
    let idx = |v: Value| v.as_u32() as usize;
    let updates = updates(g);
    // Whether kernel `k` (over `rows`) reads the roots in `written` only row by row.
    let row_local = |s: &Schedule, k: &Kernel, rows: usize, written: &HashSet<Value>| {
        let local = |a: Value| loop_shape(g, a).0 == rows && s.view_offset[idx(a)] == 0;
        let ok_loads = |out: Value| {
            fused_nodes(g, s, out).iter().all(|&v| {
                let node = &g.nodes[v];
                node.args.iter().all(|&a| {
                    if !s.materialized[idx(a)] || !written.contains(&s.storage[idx(a)]) {
                        return true;
                    }
                    match node.op {
                        Op::Broadcast { .. } => {
                            local(a) && matches!(broadcast_access(g, a, v), Some(Access::Full | Access::Col))
                        }
                        Op::Slice { .. } => local(a),
                        _ => local(a) && loop_shape(g, v).0 == rows,
                    }
                })
            })
        };
        match k {
            Kernel::Elementwise { .. } => k.outs().into_iter().all(ok_loads),
            Kernel::Reduce { x, .. } if s.materialized[idx(*x)] => !written.contains(&s.storage[idx(*x)]) || local(*x),
            Kernel::Reduce { x, .. } => ok_loads(*x),
            _ => false,
        }
    };
    // While a group is open, a kernel that cannot join it moves before it when it reads
    // nothing the group or the kernels held back write (the one-hot of the labels), and
    // is held back until the group closes otherwise (the batch mean of a loss), so the
    // loss rows and their gradient's rows make one group.
    // The roots the open group and the held kernels write are kept as sets, so each
    // kernel costs its own reads, not the group's size.
    let mut out: Vec<Kernel> = Vec::new();
    let mut group: Vec<Kernel> = Vec::new();
    let mut held: Vec<Kernel> = Vec::new();
    let mut group_roots: HashSet<Value> = HashSet::new();
    let mut held_roots: HashSet<Value> = HashSet::new();
    let mut group_rows = 0;
    let roots = |s: &Schedule, k: &Kernel| -> Vec<Value> { k.outs().into_iter().map(|o| s.storage[idx(o)]).collect() };
    let close = |group: &mut Vec<Kernel>, held: &mut Vec<Kernel>, out: &mut Vec<Kernel>, rows: usize| {
        if group.len() >= 2 && group.iter().any(|k| matches!(k, Kernel::Reduce { .. })) {
            out.push(Kernel::Rows { rows, parts: std::mem::take(group) });
        } else {
            out.append(group);
        }
        out.append(held);
    };
    for k in std::mem::take(&mut s.kernels) {
        let rows = row_part(&k).filter(|&r| r >= 2 && !k.outs().iter().any(|o| updates.contains(o)));
        let reads_k = reads(g, s, &k);
        let reads_held = reads_k.iter().any(|r| held_roots.contains(r));
        match rows {
            Some(r) => {
                if r != group_rows || reads_held || !row_local(s, &k, r, &group_roots) {
                    close(&mut group, &mut held, &mut out, group_rows);
                    group_roots.clear();
                    held_roots.clear();
                }
                group_rows = r;
                group_roots.extend(roots(s, &k));
                group.push(k);
            }
            None if group.is_empty() => out.push(k),
            None => {
                if reads_held || reads_k.iter().any(|r| group_roots.contains(r)) {
                    held_roots.extend(roots(s, &k));
                    held.push(k);
                } else {
                    out.push(k);
                }
            }
        }
    }
    close(&mut group, &mut held, &mut out, group_rows);
    s.kernels = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::kernels::initial;
    use crate::fusion::testing::Builder;
    use crate::ir::{BinaryOp, ReduceOp, UnaryOp};

    /// softmax(x) over rows of 8.
    fn softmax(b: &mut Builder, x: Value) -> Value {
        let mx = b.reduce(ReduceOp::Max, x, &[1]);
        let mr = b.reshape(mx, &[4, 1]);
        let mb = b.broadcast(mr, &[4, 8]);
        let d = b.binary(BinaryOp::Sub, x, mb);
        let e = b.unary(UnaryOp::Exp, d);
        let s = b.reduce(ReduceOp::Sum, e, &[1]);
        let sr = b.reshape(s, &[4, 1]);
        let sb = b.broadcast(sr, &[4, 8]);
        b.binary(BinaryOp::Div, e, sb)
    }

    #[test]
    fn a_softmax_runs_row_by_row() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let y = softmax(&mut b, x);
        b.output("y", y);
        let (mut s, _, _) = initial(&b.g);
        let parts = s.kernels.clone();
        assert_eq!(parts.len(), 4);
        row_groups(&b.g, &mut s);
        assert_eq!(s.kernels, vec![Kernel::Rows { rows: 4, parts }]);
    }

    #[test]
    fn rows_without_a_reduction_or_over_other_rows_are_not_grouped() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let e = b.unary(UnaryOp::Exp, x);
        let t = b.unary(UnaryOp::Tanh, x);
        b.output("e", e);
        b.output("t", t);
        // A sum over the rows (a column total) reads every row of e.
        let total = b.reduce(ReduceOp::Sum, e, &[0]);
        b.output("total", total);
        let (mut s, _, _) = initial(&b.g);
        let before = s.kernels.clone();
        row_groups(&b.g, &mut s);
        assert_eq!(s.kernels, before);
        assert_eq!(row_part(&s.kernels[0]), Some(4));
        assert_eq!(row_part(&s.kernels[2]), None);
    }
}
