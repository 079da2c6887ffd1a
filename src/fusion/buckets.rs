//! The collectives of a data-parallel step: allreduce sums in place or copied, grouped
//! into buckets that start as their gradients are written.

use super::nodes::reads;
use super::schedule::{Kernel, Schedule};
use super::uses::{pinned, users};
use crate::ir::{Graph, Op, Value};

/// Gradient bytes per allreduce bucket: a bucket's sum starts when its last gradient
/// is written. Smaller buckets start earlier and overlap more of the backward pass, but
/// cost one collective call (and its latency) each.
pub const BUCKET_BYTES: usize = 256 * 1024;

/// Places the collectives of `Op::AllReduce` nodes (a data-parallel step's gradient
/// sums, `dist::comm`). Each sum runs in place in its operand's buffer when the
/// operand (and every value sharing its buffer) is read only by sums; else it gets a
/// buffer of its own that the operand is copied into. The *late* sums (those no other
/// sum depends on: the gradients) are grouped into buckets of about `BUCKET_BYTES` in the
/// order their operands are written; every kernel that depends on a late sum (the
/// optimizer update, clipping) moves after every kernel that does not (the backward
/// pass), keeping its order. A bucket's start runs right after its last operand is
/// written, its wait right before the first kernel that reads one of its sums, so the
/// communication of early buckets overlaps the rest of the backward pass. Other sums
/// (synchronized batch statistics inside the forward and backward pass) are buckets of
/// their own, started after their operand and waited for before their first reader.
pub(super) fn buckets(g: &Graph, s: &mut Schedule) {
    let is_ar = |k: &Kernel| matches!(k, Kernel::Host { out } if g.nodes[*out].op == Op::AllReduce);
    if !s.kernels.iter().any(is_ar) {
        return;
    }
    let users = users(g);
    let sums: Vec<Value> = s.kernels.iter().filter(|k| is_ar(k)).map(|k| k.out()).collect();
    s.kernels.retain(|k| !is_ar(k));
    place_sums(g, s, &sums, &users);
    let feeds_sum = feeds_sum(g, &users);
    let kernels = std::mem::take(&mut s.kernels);
    let kernels = move_late_dependents(g, s, kernels, &feeds_sum);
    let groups = group(g, s, &kernels, &sums, &feeds_sum);
    s.kernels = with_collectives(g, s, kernels, groups);
}

fn idx(v: Value) -> usize {
    v.as_u32() as usize
}

/// Each sum in place in its operand's buffer, or copied into its own.
fn place_sums(g: &Graph, s: &mut Schedule, sums: &[Value], users: &[Vec<Value>]) {
    let n = g.len();
    let pinned = pinned(g);
    for &v in sums {
        let x = g.nodes[v].args[0];
        let root = s.storage[idx(x)];
        let sharing: Vec<usize> =
            (0..n).filter(|&w| s.materialized[w] && s.storage[w] == root && w != idx(v)).collect();
        let only_sums = sharing.iter().all(|&w| {
            !pinned[w]
                && !matches!(g.nodes[Value::from_u32(w as u32)].op, Op::Input(_) | Op::Param(_) | Op::State(_))
                && s.row_stride[w] == 0
                && users[w].iter().all(|&u| g.nodes[u].op == Op::AllReduce || s.storage[idx(u)] == root)
        });
        if only_sums && s.materialized[idx(x)] && s.row_stride[idx(x)] == 0 {
            // The sum and its views (a reshape of it) now live in the operand's buffer.
            let off = s.view_offset[idx(x)];
            for w in 0..n {
                if s.storage[w] == v {
                    s.storage[w] = root;
                    s.view_offset[w] += off;
                }
            }
        } else {
            s.storage[idx(v)] = v;
            s.view_offset[idx(v)] = 0;
        }
    }
}

/// Per value: whether a sum depends on it (a late sum is one that does not).
fn feeds_sum(g: &Graph, users: &[Vec<Value>]) -> Vec<bool> {
    let mut feeds_sum = vec![false; g.len()];
    for (v, _) in g.nodes.iter().rev() {
        feeds_sum[idx(v)] = users[idx(v)].iter().any(|&u| g.nodes[u].op == Op::AllReduce || feeds_sum[idx(u)]);
    }
    feeds_sum
}

/// The kernels with every kernel that depends on a late sum moved after the others.
///
/// A kernel moves when it computes something that depends on a late sum, or when it
/// reads what a moved kernel writes, or writes what a moved kernel reads (a
/// multi-output kernel computes values of both kinds: whatever reads its other
/// outputs moves with it).
fn move_late_dependents(g: &Graph, s: &Schedule, kernels: Vec<Kernel>, feeds_sum: &[bool]) -> Vec<Kernel> {
    let mut dep = vec![false; g.len()];
    for (v, node) in g.nodes.iter() {
        dep[idx(v)] = (node.op == Op::AllReduce && !feeds_sum[idx(v)]) || node.args.iter().any(|a| dep[idx(*a)]);
    }
    let mut moved_writes = std::collections::HashSet::new();
    let mut moved_reads = std::collections::HashSet::new();
    let mut moves = Vec::with_capacity(kernels.len());
    for k in &kernels {
        let outs: Vec<Value> = k.outs().iter().map(|o| s.storage[idx(*o)]).collect();
        let read = reads(g, s, k);
        let m = k.outs().iter().any(|o| dep[idx(*o)])
            || read.iter().any(|r| moved_writes.contains(r))
            || outs.iter().any(|o| moved_reads.contains(o) || moved_writes.contains(o));
        if m {
            moved_writes.extend(outs);
            moved_reads.extend(read);
        }
        moves.push(m);
    }
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for (k, m) in kernels.into_iter().zip(moves) {
        if m {
            after.push(k);
        } else {
            before.push(k);
        }
    }
    before.into_iter().chain(after).collect()
}

/// The buckets, each with the kernel position it starts after (-1: before every kernel).
///
/// Buckets follow the sums' order in the graph (the order their gradients are
/// computed in), not the schedule, so that ranks whose shards differ in size (and whose
/// schedules may differ) start the same buckets in the same order; a bucket starts
/// after its last operand is written and never before the previous bucket.
fn group(g: &Graph, s: &Schedule, kernels: &[Kernel], sums: &[Value], feeds_sum: &[bool]) -> Vec<(i64, Vec<Value>)> {
    // Where each sum's operand is last written (-1: before every kernel).
    let written_at = |x: Value| -> i64 {
        let root = s.storage[idx(x)];
        kernels.iter().rposition(|k| k.outs().iter().any(|o| s.storage[idx(*o)] == root)).map_or(-1, |p| p as i64)
    };
    let mut in_order = sums.to_vec();
    in_order.sort_by_key(|v| v.as_u32());
    let mut groups: Vec<(i64, Vec<Value>)> = Vec::new();
    let mut open: Option<(i64, Vec<Value>, usize)> = None;
    let mut at = -1i64;
    for &v in &in_order {
        let p = written_at(g.nodes[v].args[0]);
        if feeds_sum[idx(v)] {
            at = at.max(p);
            groups.push((at, vec![v]));
            continue;
        }
        let bytes = 4 * g.ty(v).shape.iter().map(|d| d.as_const().unwrap_or(0).max(0) as usize).product::<usize>();
        let (q, mut vals, mut size) = open.take().unwrap_or((at, Vec::new(), 0));
        let q = q.max(p);
        vals.push(v);
        size += bytes;
        if size >= BUCKET_BYTES {
            at = q;
            groups.push((q, vals));
        } else {
            open = Some((q, vals, size));
        }
    }
    if let Some((q, vals, _)) = open {
        groups.push((q, vals));
    }
    groups
}

/// The kernels with each bucket's start after its position and its wait before the
/// first kernel after its start that reads one of its sums.
fn with_collectives(g: &Graph, s: &Schedule, kernels: Vec<Kernel>, groups: Vec<(i64, Vec<Value>)>) -> Vec<Kernel> {
    let mut starts: Vec<Vec<Kernel>> = vec![Vec::new(); kernels.len() + 1];
    let mut waits: Vec<Vec<Kernel>> = vec![Vec::new(); kernels.len() + 1];
    for (b, (p, values)) in groups.into_iter().enumerate() {
        let roots: Vec<Value> = values.iter().map(|&v| s.storage[idx(v)]).collect();
        let from = (p + 1) as usize;
        let reader = (from..kernels.len())
            .find(|&k| reads(g, s, &kernels[k]).iter().any(|r| roots.contains(r)))
            .unwrap_or(kernels.len());
        starts[from].push(Kernel::Collective { values: values.clone(), bucket: b as u32, wait: false });
        waits[reader].push(Kernel::Collective { values, bucket: b as u32, wait: true });
    }
    let mut out = Vec::with_capacity(kernels.len() + 2 * starts.len());
    for (i, k) in kernels.into_iter().enumerate() {
        out.append(&mut starts[i]);
        out.append(&mut waits[i]);
        out.push(k);
    }
    let last = starts.len() - 1;
    out.append(&mut starts[last]);
    out.append(&mut waits[last]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::describe::lines;
    use crate::fusion::kernels::initial;
    use crate::fusion::testing::Builder;
    use crate::ir::BinaryOp;

    /// A gradient `x @ d` of [8, 16], its allreduce, and the SGD update of a parameter.
    fn layer(b: &mut Builder, name: &str) -> (Value, Value, Value) {
        let x = b.input(&format!("x_{name}"), &[8, 4]);
        let d = b.input(&format!("d_{name}"), &[4, 16]);
        let grad = b.matmul(x, d);
        let sum = b.op(Op::AllReduce, &[grad]);
        let w = b.param(name, &[8, 16]);
        let lr = b.fill(0.1, &[8, 16]);
        let step = b.binary(BinaryOp::Mul, sum, lr);
        let w2 = b.binary(BinaryOp::Sub, w, step);
        b.update(w, w2);
        (grad, sum, w2)
    }

    #[test]
    fn a_sum_runs_in_place_between_its_gradient_and_its_update() {
        let mut b = Builder::new();
        let (grad, sum, w2) = layer(&mut b, "w");
        let (mut s, _, _) = initial(&b.g);
        buckets(&b.g, &mut s);
        assert_eq!(s.storage[sum.as_u32() as usize], grad);
        assert_eq!(
            lines(&b.g, &s)[1..3],
            [
                format!("start allreduce bucket 0: {sum} <- {grad} (in place)"),
                format!("wait for allreduce bucket 0: {sum} <- {grad} (in place)"),
            ]
        );
        assert_eq!(s.kernels[0].out(), grad);
        assert_eq!(s.kernels[3].out(), w2);
    }

    #[test]
    fn updates_move_after_the_backward_pass_and_small_sums_share_a_bucket() {
        let mut b = Builder::new();
        let (g1, s1, w1) = layer(&mut b, "w1");
        let (g2, s2, w2) = layer(&mut b, "w2");
        let (mut s, _, _) = initial(&b.g);
        let order = |s: &Schedule| s.kernels.iter().map(Kernel::out).collect::<Vec<_>>();
        assert_eq!(order(&s), vec![g1, s1, w1, g2, s2, w2]);
        buckets(&b.g, &mut s);
        assert!(matches!(
            &s.kernels[..],
            [_, _, Kernel::Collective { values: a, wait: false, .. }, Kernel::Collective { values: b, wait: true, .. }, _, _]
                if *a == [s1, s2] && *b == [s1, s2]
        ));
        assert_eq!(order(&s), vec![g1, g2, s1, s1, w1, w2]);
    }

    #[test]
    fn the_sum_of_an_output_is_copied() {
        let mut b = Builder::new();
        let (grad, sum, _) = layer(&mut b, "w");
        b.output("grad", grad);
        let (mut s, _, _) = initial(&b.g);
        buckets(&b.g, &mut s);
        assert_eq!(s.storage[sum.as_u32() as usize], sum);
        assert!(lines(&b.g, &s)[1].ends_with("(copied)"));
    }
}
