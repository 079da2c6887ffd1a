//! What a kernel computes and loads: the nodes fused into an elementwise loop, whether
//! it can run flat, and the materialized values (storage roots) a kernel reads.

use super::access::{broadcast_access, Access};
use super::schedule::{Kernel, Schedule};
use crate::ir::{Graph, Op, Value};

/// The nodes computed inside an elementwise kernel for `out`, in topological order:
/// `out` and its unmaterialized elementwise ancestors (broadcasts read as patterns).
pub fn fused_nodes(g: &Graph, s: &Schedule, out: Value) -> Vec<Value> {
    fused_nodes_in(g, &s.materialized, out)
}

/// `fused_nodes` under a materialization decision.
pub(super) fn fused_nodes_in(g: &Graph, materialized: &[bool], out: Value) -> Vec<Value> {
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = vec![out];
    while let Some(v) = stack.pop() {
        if !seen.insert(v) {
            continue;
        }
        let node = &g.nodes[v];
        if matches!(node.op, Op::Broadcast { .. }) {
            // A fused broadcast reads its operand through an access pattern; a scalar
            // constant operand is computed inline.
            let x = node.args[0];
            if !materialized[x.as_u32() as usize] {
                stack.push(x);
            }
            continue;
        }
        for &a in &node.args {
            if !materialized[a.as_u32() as usize] {
                stack.push(a);
            }
        }
    }
    seen.into_iter().collect()
}

/// Whether every operand an elementwise kernel for `out` loads is read element for
/// element or is a scalar (the loop can run flat, and outputs can be stored late).
pub fn flat_only(g: &Graph, s: &Schedule, out: Value) -> bool {
    flat_only_in(g, &s.materialized, out)
}

/// `flat_only` under a materialization decision.
pub(super) fn flat_only_in(g: &Graph, materialized: &[bool], out: Value) -> bool {
    fused_nodes_in(g, materialized, out).iter().all(|&v| {
        let node = &g.nodes[v];
        if matches!(node.op, Op::Slice { .. }) {
            return false;
        }
        !matches!(node.op, Op::Broadcast { .. })
            || !materialized[node.args[0].as_u32() as usize]
            || matches!(broadcast_access(g, node.args[0], v), Some(Access::Full | Access::Scalar))
    })
}

/// The buffers (storage roots) a kernel for `out` reads away from its loop position:
/// through fused slices and row or column broadcasts.
pub(super) fn strided_sources(g: &Graph, s: &Schedule, out: Value) -> Vec<Value> {
    let mut r = Vec::new();
    for v in fused_nodes(g, s, out) {
        let node = &g.nodes[v];
        let x = match node.op {
            Op::Slice { .. } => node.args[0],
            Op::Broadcast { .. }
                if s.materialized[node.args[0].as_u32() as usize]
                    && !matches!(broadcast_access(g, node.args[0], v), Some(Access::Full | Access::Scalar)) =>
            {
                node.args[0]
            }
            _ => continue,
        };
        r.push(s.storage[x.as_u32() as usize]);
    }
    r
}

/// The materialized values a kernel reads.
pub fn reads(g: &Graph, s: &Schedule, k: &Kernel) -> Vec<Value> {
    if let Kernel::Rows { parts, .. } = k {
        let mut out: Vec<Value> = Vec::new();
        for r in parts.iter().flat_map(|p| reads(g, s, p)) {
            if !out.contains(&r) {
                out.push(r);
            }
        }
        return out;
    }
    let mut out = Vec::new();
    // A kernel of a long fused chain reads many values: a set keeps this linear.
    let mut seen = std::collections::HashSet::new();
    let mut add = |v: Value| {
        let r = s.storage[v.as_u32() as usize];
        if seen.insert(r) {
            out.push(r);
        }
    };
    let computed = match k {
        Kernel::Elementwise { .. } => k.outs(),
        // A reduction of a fused producer reads what the producer's loop reads.
        Kernel::Reduce { x, .. } if !s.materialized[x.as_u32() as usize] => vec![*x],
        _ => Vec::new(),
    };
    for o in computed {
        for v in fused_nodes(g, s, o) {
            for &a in &g.nodes[v].args {
                if s.materialized[a.as_u32() as usize] {
                    add(a);
                }
            }
        }
    }
    match k {
        Kernel::Elementwise { .. } => {}
        Kernel::Reduce { x, .. } if !s.materialized[x.as_u32() as usize] => {}
        Kernel::Reduce { x, .. }
        | Kernel::Transpose { x, .. }
        | Kernel::Permute { x, .. }
        | Kernel::Window { x, .. }
        | Kernel::Pool { x, .. } => add(*x),
        Kernel::MatMul { a, b, epilogue, .. } => {
            add(*a);
            add(*b);
            for r in epilogue.iter().flat_map(|e| reads(g, s, e)) {
                add(r);
            }
        }
        Kernel::Rows { .. } => {}
        Kernel::Collective { values, wait, .. } => {
            for &v in values {
                if *wait {
                    add(v);
                } else {
                    add(g.nodes[v].args[0]);
                }
            }
        }
        Kernel::Host { out: o } => {
            for &a in &g.nodes[*o].args {
                if s.materialized[a.as_u32() as usize] {
                    add(a);
                } else {
                    // An operand folded into this kernel (im2col, transpose): its
                    // own operands are what is read.
                    for &b in &g.nodes[a].args {
                        add(b);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::testing::{schedule_of, Builder};
    use crate::ir::{BinaryOp, ReduceOp, UnaryOp};

    #[test]
    fn a_loop_computes_its_unmaterialized_ancestors_and_reads_the_rest() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let bias = b.param("bias", &[8]);
        let e = b.unary(UnaryOp::Exp, x);
        let bb = b.broadcast(bias, &[4, 8]);
        let y = b.binary(BinaryOp::Add, e, bb);
        let k = Kernel::Elementwise { out: y, rows: 4, cols: 8, also: vec![] };
        let s = schedule_of(&b.g, &[x, bias, y], vec![k.clone()]);
        assert_eq!(fused_nodes(&b.g, &s, y), vec![e, bb, y]);
        assert_eq!(reads(&b.g, &s, &k), vec![x, bias]);
        // The bias is read as a row vector: not flat, and strided.
        assert!(!flat_only(&b.g, &s, y));
        assert_eq!(strided_sources(&b.g, &s, y), vec![bias]);
        assert!(flat_only(&b.g, &s, e));
        // With `e` stored, the loop reads it instead of `x`.
        let s = schedule_of(&b.g, &[x, bias, e, y], vec![k.clone()]);
        assert_eq!(fused_nodes(&b.g, &s, y), vec![bb, y]);
        assert_eq!(reads(&b.g, &s, &k), vec![bias, e]);
    }

    #[test]
    fn a_reduction_reads_what_its_fused_producer_reads() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let sq = b.binary(BinaryOp::Mul, x, x);
        let r = b.reduce(ReduceOp::Sum, sq, &[1]);
        let k = Kernel::Reduce { out: r, x: sq, op: ReduceOp::Sum, outer: 4, red: 8, inner: 1 };
        let s = schedule_of(&b.g, &[x, r], vec![k.clone()]);
        assert_eq!(reads(&b.g, &s, &k), vec![x]);
        let s = schedule_of(&b.g, &[x, sq, r], vec![k.clone()]);
        assert_eq!(reads(&b.g, &s, &k), vec![sq]);
        // A sum in place reads its operand when it starts and itself when it is waited for.
        let sum = b.op(Op::AllReduce, &[x]);
        let s = schedule_of(&b.g, &[x, sum], vec![]);
        let start = Kernel::Collective { values: vec![sum], bucket: 0, wait: false };
        let wait = Kernel::Collective { values: vec![sum], bucket: 0, wait: true };
        assert_eq!((reads(&b.g, &s, &start), reads(&b.g, &s, &wait)), (vec![x], vec![sum]));
    }
}
