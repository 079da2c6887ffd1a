//! Elided concats: pieces computed straight into their place in the concat's buffer.

use super::access::{dims, numel};
use super::schedule::{Kernel, Schedule};
use crate::ir::{Graph, Op, Value};

/// A concat whose pieces are contiguous blocks of its result (every dim before the
/// axis is 1) is not copied: each piece is computed straight into its place in the
/// concat's buffer (the LSTM's backward gathers 20 steps of gate gradients and hidden
/// states into [640, 512] and [640, 128] operands for one weight-gradient GEMM). A piece
/// qualifies when a kernel (or an elided concat) writes it, or the buffer it reshapes,
/// into a buffer of its own, it is not a step output, and it is not already placed in
/// another concat; the concat is elided only when every piece qualifies.
pub(super) fn elide_concats(g: &Graph, s: &mut Schedule, pinned: &[bool]) {
    let idx = |v: Value| v.as_u32() as usize;
    let written: std::collections::HashSet<Value> = s.kernels.iter().flat_map(|k| k.outs()).collect();
    // Buffer roots placed inside a concat: (concat, offset in elements).
    let mut home: std::collections::HashMap<Value, (Value, usize)> = std::collections::HashMap::new();
    let mut elided = std::collections::HashSet::new();
    let mut readers = vec![0usize; g.len()];
    for (_, node) in g.nodes.iter() {
        for a in &node.args {
            readers[idx(*a)] += 1;
        }
    }
    let ew_cols: std::collections::HashMap<Value, usize> = s
        .kernels
        .iter()
        .filter_map(|k| if let Kernel::Elementwise { cols, .. } = k { Some((k, *cols)) } else { None })
        .flat_map(|(k, cols)| k.outs().into_iter().map(move |o| (o, cols)))
        .collect();
    for k in &s.kernels {
        let Kernel::Host { out: c } = *k else { continue };
        let Op::Concat { axis } = g.nodes[c].op else { continue };
        let shape = dims(g, c);
        let args = &g.nodes[c].args;
        // Column blocks of a concat along the last dim (the LSTM's four gate gradients):
        // pieces that an elementwise kernel writes row by row, read by nothing else, are
        // stored straight into their columns, `row_stride` apart.
        let r = shape.len();
        let columns = r >= 2
            && axis as usize == r - 1
            && s.storage[idx(c)] == c
            && args.iter().enumerate().all(|(i, &p)| {
                s.storage[idx(p)] == p
                    && readers[idx(p)] == 1
                    && !pinned[idx(p)]
                    && !home.contains_key(&p)
                    && !elided.contains(&p)
                    && !args[..i].contains(&p)
                    && ew_cols.get(&p) == dims(g, p).last()
            });
        if columns {
            let mut at = 0;
            for &p in args {
                home.insert(p, (c, at));
                s.row_stride[idx(p)] = shape[r - 1];
                at += dims(g, p)[r - 1];
            }
            elided.insert(c);
            continue;
        }
        let ok = s.storage[idx(c)] == c
            && shape[..axis as usize].iter().all(|&d| d == 1)
            && args.iter().enumerate().all(|(i, &p)| {
                // The piece, or the buffer it is a reshape of.
                let r = s.storage[idx(p)];
                s.materialized[idx(p)]
                    && numel(g, r) == numel(g, p)
                    && written.contains(&r)
                    && !pinned[idx(p)]
                    && !pinned[idx(r)]
                    && !home.contains_key(&r)
                    && !args[..i].iter().any(|&q| s.storage[idx(q)] == r)
            });
        if !ok {
            continue;
        }
        let mut at = 0;
        for &p in args {
            home.insert(s.storage[idx(p)], (c, at));
            at += numel(g, p);
        }
        elided.insert(c);
    }
    if elided.is_empty() {
        return;
    }
    // Pieces (and views of pieces) now live in the concat's buffer, which may itself be
    // a piece of another (a concat of elided concats).
    for i in 0..g.len() {
        let mut root = s.storage[i];
        let mut off = s.view_offset[i];
        while let Some(&(c, at)) = home.get(&root) {
            off += at;
            root = c;
        }
        s.storage[i] = root;
        s.view_offset[i] = off;
    }
    s.kernels.retain(|k| !matches!(k, Kernel::Host { out } if elided.contains(out)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::kernels::initial;
    use crate::fusion::testing::Builder;
    use crate::ir::UnaryOp;

    fn at(s: &Schedule, v: Value) -> (Value, usize, usize) {
        let i = v.as_u32() as usize;
        (s.storage[i], s.view_offset[i], s.row_stride[i])
    }

    #[test]
    fn products_are_computed_into_their_blocks_of_a_concat() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let w1 = b.param("w1", &[8, 16]);
        let w2 = b.param("w2", &[8, 16]);
        let p1 = b.matmul(x, w1);
        let p2 = b.matmul(x, w2);
        let c = b.op(Op::Concat { axis: 0 }, &[p1, p2]);
        b.output("c", c);
        let (mut s, _, pinned) = initial(&b.g);
        assert_eq!(s.kernels.len(), 3);
        elide_concats(&b.g, &mut s, &pinned);
        assert_eq!(s.kernels.iter().map(Kernel::out).collect::<Vec<_>>(), vec![p1, p2]);
        assert_eq!((at(&s, p1), at(&s, p2)), ((c, 0, 0), (c, 64, 0)));
    }

    #[test]
    fn elementwise_pieces_are_stored_into_their_columns() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let e = b.unary(UnaryOp::Exp, x);
        let t = b.unary(UnaryOp::Tanh, x);
        let c = b.op(Op::Concat { axis: 1 }, &[e, t]);
        b.output("c", c);
        let (mut s, _, pinned) = initial(&b.g);
        elide_concats(&b.g, &mut s, &pinned);
        assert_eq!(s.kernels.iter().map(Kernel::out).collect::<Vec<_>>(), vec![e, t]);
        assert_eq!((at(&s, e), at(&s, t)), ((c, 0, 16), (c, 8, 16)));
    }

    #[test]
    fn a_concat_of_an_output_is_copied() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let w1 = b.param("w1", &[8, 16]);
        let p1 = b.matmul(x, w1);
        let p2 = b.matmul(x, w1);
        let c = b.op(Op::Concat { axis: 0 }, &[p1, p2]);
        b.output("c", c);
        b.output("p2", p2);
        let (mut s, _, pinned) = initial(&b.g);
        elide_concats(&b.g, &mut s, &pinned);
        assert!(matches!(s.kernels[..], [_, _, Kernel::Host { out }] if out == c));
        assert_eq!(at(&s, p1), (p1, 0, 0));
    }
}
