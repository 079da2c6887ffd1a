//! Epilogues: an elementwise op folded into the GEMM's own store (`gemm_epilogues`), and
//! elementwise kernels run on each block of a product as the GEMM finishes it
//! (`tile_epilogues`).

use super::access::{numel, regrouped_access};
use super::nodes::{fused_nodes, reads};
use super::schedule::{Kernel, Schedule};
use super::uses::replaced;
use crate::ir::{BinaryOp, Graph, Op, Value};

/// Folds into a GEMM the one elementwise op that reads its product, when the gemm crate
/// can apply it as it stores the result (`dst = alpha * dst + beta * a @ b`):
/// - a scale, `p * c`, `c * p` or `p / c` for a constant c (attention's 1/√d): beta;
/// - an addend, `p + c`, `c + p` or `c - p` (beta = -1) for a materialized c of the same
///   shape that nothing else reads and whose buffer region no other value shares with a
///   later reader (an RNN step's `x W + h U`: the input projection of step t is
///   read only here): the product is added into c's buffer, alpha = 1, and the sum
///   becomes a view of c.
///
/// The fused kernel runs where the elementwise one ran, after the addend is computed.
pub(super) fn gemm_epilogues(g: &Graph, s: &mut Schedule, users: &[Vec<Value>], pinned: &[bool]) {
    let idx = |v: Value| v.as_u32() as usize;
    let range = |s: &Schedule, v: Value| (s.view_offset[idx(v)], s.view_offset[idx(v)] + numel(g, v));
    // Every (reader, operand) pair by the operand's buffer, kept up to date as folds
    // move sums into their addends' buffers, so that `exclusive` looks at the readers of
    // one buffer rather than at the whole graph (which made this quadratic in the
    // length of an unrolled loop).
    let mut by_root: Vec<Vec<(Value, Value)>> = vec![Vec::new(); g.nodes.len()];
    for (n, node) in g.nodes.iter() {
        for &a in &node.args {
            by_root[idx(s.storage[idx(a)])].push((n, a));
        }
    }
    // Whether the product may be added into `c`'s region: `user` is its only reader, and
    // no other value in the same buffer that overlaps it is read by anything.
    let exclusive = |s: &Schedule, by_root: &[Vec<(Value, Value)>], c: Value, user: Value| {
        let root = s.storage[idx(c)];
        if pinned[idx(c)]
            || pinned[idx(root)]
            || matches!(g.nodes[root].op, Op::Input(_) | Op::Param(_) | Op::State(_))
            || !s.materialized[idx(c)]
        {
            return false;
        }
        let (lo, hi) = range(s, c);
        by_root[idx(root)].iter().all(|&(n, a)| {
            // A view of its operand reads nothing itself.
            let is_view = s.materialized[idx(n)] && s.storage[idx(n)] != n;
            if is_view || s.storage[idx(a)] != root {
                return true;
            }
            if a == c {
                return n == user;
            }
            let (alo, ahi) = range(s, a);
            ahi <= lo || hi <= alo
        })
    };
    let mut i = 0;
    while i < s.kernels.len() {
        let Kernel::MatMul { out: p, .. } = s.kernels[i] else {
            i += 1;
            continue;
        };
        let fold = (|| {
            let &[v] = users[idx(p)].as_slice() else { return None };
            if pinned[idx(p)] || !s.materialized[idx(v)] || g.ty(v).shape != g.ty(p).shape {
                return None;
            }
            let node = &g.nodes[v];
            let other = |k: usize| node.args[1 - k];
            let at = node.args.iter().position(|&a| a == p)?;
            let constant = |c: Value| match g.nodes[c].op {
                Op::Fill(x) if !s.materialized[idx(c)] => Some(x as f32),
                _ => None,
            };
            let (scale, addend) = match node.op {
                Op::Binary(BinaryOp::Mul) => (constant(other(at))?, None),
                Op::Binary(BinaryOp::Div) if at == 0 => (1.0 / constant(other(at))?, None),
                Op::Binary(BinaryOp::Add) => (1.0, Some(other(at))),
                Op::Binary(BinaryOp::Sub) if at == 1 => (-1.0, Some(other(at))),
                _ => return None,
            };
            if let Some(c) = addend {
                if pinned[idx(v)] || g.ty(c).shape != g.ty(v).shape || c == p || !exclusive(s, &by_root, c, v) {
                    return None;
                }
            }
            // The elementwise kernel that computes exactly v.
            let j = s
                .kernels
                .iter()
                .position(|k| matches!(k, Kernel::Elementwise { out, also, .. } if *out == v && also.is_empty()))?;
            Some((v, j, scale, addend))
        })();
        let Some((v, j, sc, addend)) = fold else {
            i += 1;
            continue;
        };
        let Kernel::MatMul { out, scale, accumulate, .. } = &mut s.kernels[i] else { unreachable!() };
        *out = v;
        *scale = sc;
        *accumulate = addend.is_some();
        if let Some(c) = addend {
            let (from, to) = (idx(s.storage[idx(v)]), idx(s.storage[idx(c)]));
            if from != to {
                let (moved, kept) = by_root[from].iter().partition(|&&(_, a)| a == v);
                by_root[from] = kept;
                by_root[to].extend::<Vec<_>>(moved);
            }
            s.storage[idx(v)] = s.storage[idx(c)];
            s.view_offset[idx(v)] = s.view_offset[idx(c)];
        }
        s.materialized[idx(p)] = false;
        let k = s.kernels.remove(i);
        s.kernels[j - 1] = k;
    }
}

/// An elementwise kernel over a product's [batch x m, n] (or over a view of it whose
/// loop regroups to it: `regrouped_access`) that reads the product only at its own
/// position becomes the product's epilogue: the GEMM runs it on each block of the result
/// it finishes, while the block is in L1 (a dense layer's bias and ReLU, the ReLU's
/// derivative times the incoming gradient). The kernel moves up to the product, so
/// everything else it reads must be computed before it. Products that accumulate into
/// an addend stay apart.
///
/// With `updates` (`Options::updates_in_epilogues`), a kernel that updates parameters
/// or states (the optimizer's update, with its momentum and variance states) becomes
/// the epilogue of the product of its gradient
/// (a weight gradient `xᵀ dy`): each block of the gradient updates the parameter while
/// it is in L1. The product then moves down to the update instead (every reader of the
/// old parameter, such as the backward's `dy Wᵀ`, stays before it; `early_updates`
/// moves the pair back up to just after the last of those), so this needs a product of
/// one matrix that no kernel in between reads or overwrites, and operands that are not
/// what the update replaces (later blocks still read them while the planner writes the
/// update in place). An update that reads a value computed after every gradient
/// (clipping by the global norm) is never fused: that value's kernel reads this
/// gradient in between.
pub(super) fn tile_epilogues(g: &Graph, s: &mut Schedule, updates: bool) {
    use std::collections::HashMap;
    let idx = |v: Value| v.as_u32() as usize;
    // The parameter or state each update value replaces.
    let replaces = replaced(g);
    // Per kernel, what it reads (roots), computed once; and per root, how many kernels
    // from the current one on write into it (a buffer is ready for kernel i when none
    // does), kept as `i` advances, so each check is a lookup rather than a scan.
    let mut read_of: Vec<Vec<Value>> = s.kernels.iter().map(|k| reads(g, s, k)).collect();
    let mut writers: HashMap<Value, usize> = HashMap::new();
    for k in &s.kernels {
        for o in k.outs() {
            *writers.entry(s.storage[idx(o)]).or_default() += 1;
        }
    }
    let mut i = 0;
    while i < s.kernels.len() {
        let step_past = |s: &Schedule, writers: &mut HashMap<Value, usize>, i: usize| {
            for o in s.kernels[i].outs() {
                if let Some(n) = writers.get_mut(&s.storage[idx(o)]) {
                    *n = n.saturating_sub(1);
                }
            }
        };
        let Kernel::MatMul { out: p, batch, m, n, accumulate: false, epilogue: None, .. } = s.kernels[i] else {
            step_past(s, &mut writers, i);
            i += 1;
            continue;
        };
        if s.storage[idx(p)] != p || s.row_stride[idx(p)] != 0 {
            step_past(s, &mut writers, i);
            i += 1;
            continue;
        }
        // Whether every kernel that writes into buffer `r` (a value, or the pieces of an
        // elided concat computed in place) runs before the product.
        let ready = |r: Value| writers.get(&r).is_none_or(|&n| n == 0);
        let candidate = (i + 1..s.kernels.len()).find(|&j| {
            let k = &s.kernels[j];
            let Kernel::Elementwise { rows, cols, .. } = k else { return false };
            let read = &read_of[j];
            // The kernel's loop, or its loop regrouped to the product's rows (a bias over
            // a convolution's [N, O, OH, OW] view of its [N·O, OH·OW] product): every
            // read must then have a regrouped form.
            let regroup = (*rows, *cols) != (batch * m, n);
            if rows * cols != batch * m * n || n % cols.max(&1) != 0 || !read.contains(&p) {
                return false;
            }
            let olds: Vec<Value> =
                k.outs().iter().filter_map(|o| replaces.get(o)).map(|&v| s.storage[idx(v)]).collect();
            if !olds.is_empty() {
                // An update: the product moves down to it (see above).
                if !updates || batch != 1 || !update_may_take(s, &read_of, i, j, &olds) {
                    return false;
                }
            }
            if regroup && !regroups(g, s, k, n) {
                return false;
            }
            let in_place = reads_in_place(g, s, k, p);
            // What else it reads (but its own outputs) exists before the product runs
            // (before the update, where an update takes the product).
            let own: Vec<Value> = k.outs();
            in_place && (!olds.is_empty() || read.iter().all(|&r| r == p || own.contains(&r) || ready(r)))
        });
        let Some(j) = candidate else {
            step_past(s, &mut writers, i);
            i += 1;
            continue;
        };
        let mut e = s.kernels.remove(j);
        let update = e.outs().iter().any(|o| replaces.contains_key(o));
        if let Kernel::Elementwise { rows, cols, .. } = &mut e {
            (*rows, *cols) = (batch * m, n);
        }
        let e_read = read_of.remove(j);
        if let Kernel::MatMul { epilogue, .. } = &mut s.kernels[i] {
            *epilogue = Some(Box::new(e));
        }
        if update {
            // The product with its update runs where the update ran: the kernels in
            // between come first (the product is read again at its new place).
            let k = s.kernels.remove(i);
            let r = read_of.remove(i);
            s.kernels.insert(j - 1, k);
            read_of.insert(j - 1, r.into_iter().chain(e_read).collect());
            // (Kernel i is now the one after the product: not yet stepped past.)
        } else {
            step_past(s, &mut writers, i);
            i += 1;
        }
    }
}

/// Whether the product at `i` may move down to the update at `j` (replacing the buffers
/// `olds`) to take it as its epilogue: its operands are not what the update replaces,
/// and no kernel in between reads the product or writes it or its operands.
fn update_may_take(s: &Schedule, read_of: &[Vec<Value>], i: usize, j: usize, olds: &[Value]) -> bool {
    let idx = |v: Value| v.as_u32() as usize;
    let Kernel::MatMul { out: p, a, b, .. } = s.kernels[i] else { return false };
    let operands = [s.storage[idx(a)], s.storage[idx(b)]];
    !(operands.iter().any(|r| olds.contains(r))
        || (i + 1..j).any(|q| {
            read_of[q].contains(&p)
                || s.kernels[q].outs().iter().any(|&o| {
                    let r = s.storage[idx(o)];
                    r == p || operands.contains(&r)
                })
        }))
}

/// Whether every read of the elementwise kernel `k` has a form in its loop regrouped to
/// rows of `n` (`regrouped_access`): no slices, broadcasts that regroup, dense outputs.
fn regroups(g: &Graph, s: &Schedule, k: &Kernel, n: usize) -> bool {
    let idx = |v: Value| v.as_u32() as usize;
    k.outs().into_iter().all(|o| {
        s.row_stride[idx(o)] == 0
            && fused_nodes(g, s, o).into_iter().all(|v| {
                let node = &g.nodes[v];
                match node.op {
                    Op::Slice { .. } => false,
                    Op::Broadcast { .. } if s.materialized[idx(node.args[0])] => {
                        regrouped_access(g, node.args[0], v, n).is_some()
                    }
                    _ => true,
                }
            })
    })
}

/// Whether the elementwise kernel `k` reads the product `p` (or a view of all of it)
/// only element for element, at the loop's position.
fn reads_in_place(g: &Graph, s: &Schedule, k: &Kernel, p: Value) -> bool {
    let idx = |v: Value| v.as_u32() as usize;
    k.outs().into_iter().all(|o| {
        fused_nodes(g, s, o).into_iter().all(|v| {
            let node = &g.nodes[v];
            node.args.iter().all(|&a| {
                s.storage[idx(a)] != p
                    || (matches!(node.op, Op::Unary(_) | Op::Binary(_) | Op::Select)
                        && reshapes_of(g, a, p)
                        && s.row_stride[idx(a)] == 0)
            })
        })
    })
}

/// Whether `a` is `p` or reshapes of it (the same elements in the same order; not a
/// value that shares p's buffer, such as a sum accumulated into it).
fn reshapes_of(g: &Graph, mut a: Value, p: Value) -> bool {
    while a != p {
        match g.nodes[a].op {
            Op::Reshape { .. } | Op::StopGradient => a = g.nodes[a].args[0],
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::describe::lines;
    use crate::fusion::kernels::initial;
    use crate::fusion::testing::Builder;

    #[test]
    fn a_constant_scale_becomes_the_gemm_s_beta() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let w = b.param("w", &[8, 16]);
        let p = b.matmul(x, w);
        let half = b.fill(0.5, &[4, 16]);
        let y = b.binary(BinaryOp::Mul, p, half);
        b.output("y", y);
        let (mut s, users, pinned) = initial(&b.g);
        assert_eq!(s.kernels.len(), 2);
        gemm_epilogues(&b.g, &mut s, &users, &pinned);
        assert_eq!(lines(&b.g, &s), vec![format!("gemm {y} <- 0.5 * {x} @ {w} [1 x 4x8 @ 8x16]")]);
        assert!(!s.materialized[p.as_u32() as usize]);
    }

    #[test]
    fn a_product_is_added_into_an_addend_only_it_reads() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let w = b.param("w", &[8, 16]);
        let p = b.matmul(x, w);
        let x2 = b.input("x2", &[4, 8]);
        let w2 = b.param("w2", &[8, 16]);
        let c = b.matmul(x2, w2);
        let y = b.binary(BinaryOp::Add, p, c);
        // (Read by a product, the sum is stored, and not as an output.)
        let w3 = b.param("w3", &[16, 4]);
        let q = b.matmul(y, w3);
        b.output("q", q);
        let (mut s, users, pinned) = initial(&b.g);
        gemm_epilogues(&b.g, &mut s, &users, &pinned);
        assert_eq!(
            lines(&b.g, &s),
            vec![
                format!("gemm {c} <- {x2} @ {w2} [1 x 4x8 @ 8x16]"),
                format!("gemm {y} <- {x} @ {w} + {y} (into {c}) [1 x 4x8 @ 8x16]"),
                format!("gemm {q} <- {y} @ {w3} [1 x 4x16 @ 16x4]"),
            ]
        );
        assert_eq!(s.storage[y.as_u32() as usize], c);
    }

    #[test]
    fn an_addend_read_twice_stays_apart() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let w = b.param("w", &[8, 16]);
        let p = b.matmul(x, w);
        let w2 = b.param("w2", &[8, 16]);
        let c = b.matmul(x, w2);
        let y = b.binary(BinaryOp::Add, p, c);
        let z = b.unary(crate::ir::UnaryOp::Exp, c);
        let w3 = b.param("w3", &[16, 4]);
        let q = b.matmul(y, w3);
        b.output("q", q);
        b.output("z", z);
        let (mut s, users, pinned) = initial(&b.g);
        let before = s.kernels.clone();
        gemm_epilogues(&b.g, &mut s, &users, &pinned);
        assert_eq!(s.kernels, before);
    }

    /// x @ w, then max(p + bias, 0).
    fn dense_relu(b: &mut Builder) -> (Value, Value) {
        let x = b.input("x", &[4, 8]);
        let w = b.param("w", &[8, 16]);
        let p = b.matmul(x, w);
        let bias = b.param("bias", &[16]);
        let bb = b.broadcast(bias, &[4, 16]);
        let s = b.binary(BinaryOp::Add, p, bb);
        let zero = b.fill(0.0, &[4, 16]);
        let y = b.binary(BinaryOp::Max, s, zero);
        b.output("y", y);
        (p, y)
    }

    #[test]
    fn a_bias_and_activation_run_per_block_of_the_product() {
        let mut b = Builder::new();
        let (p, y) = dense_relu(&mut b);
        let (mut s, _, _) = initial(&b.g);
        tile_epilogues(&b.g, &mut s, false);
        let [Kernel::MatMul { out, epilogue: Some(e), .. }] = &s.kernels[..] else { panic!("{:?}", s.kernels) };
        assert_eq!(*out, p);
        assert_eq!(**e, Kernel::Elementwise { out: y, rows: 4, cols: 16, also: vec![] });
    }

    #[test]
    fn an_update_takes_its_gradient_s_product_only_with_the_option() {
        let build = || {
            let mut b = Builder::new();
            let x = b.input("x", &[8, 4]);
            let d = b.input("d", &[4, 16]);
            let grad = b.matmul(x, d);
            let w = b.param("w", &[8, 16]);
            let lr = b.fill(0.1, &[8, 16]);
            let step = b.binary(BinaryOp::Mul, grad, lr);
            let w2 = b.binary(BinaryOp::Sub, w, step);
            b.update(w, w2);
            (b, grad, w2)
        };
        let (b, _, _) = build();
        let (mut s, _, _) = initial(&b.g);
        let before = s.kernels.clone();
        tile_epilogues(&b.g, &mut s, false);
        assert_eq!(s.kernels, before);
        let (b, grad, w2) = build();
        let (mut s, _, _) = initial(&b.g);
        tile_epilogues(&b.g, &mut s, true);
        let [Kernel::MatMul { out, epilogue: Some(e), .. }] = &s.kernels[..] else { panic!("{:?}", s.kernels) };
        assert_eq!((*out, e.outs()), (grad, vec![w2]));
    }

    #[test]
    fn only_reshapes_of_the_product_count_as_the_product() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 4]);
        let r = b.reshape(x, &[16]);
        let rr = b.reshape(r, &[2, 8]);
        let e = b.unary(crate::ir::UnaryOp::Exp, x);
        assert!(reshapes_of(&b.g, rr, x));
        assert!(reshapes_of(&b.g, x, x));
        assert!(!reshapes_of(&b.g, e, x));
    }
}
