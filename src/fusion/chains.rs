//! Chains: consecutive elementwise kernels of one shape merged into one loop.

use super::nodes::{flat_only, fused_nodes, strided_sources};
use super::schedule::{Kernel, Schedule};
use super::uses::replaced;
use crate::ir::{Graph, Value};

/// Most kernels merged into one loop: a longer chain (an unrolled loop of thousands of
/// steps) would make one function whose register allocation grows faster than its size.
const MAX_MERGED: usize = 64;

/// Merges consecutive elementwise kernels of one shape when a later one reads an
/// earlier one's output or an operand the earlier ones load (Adam's m, v and update),
/// so the chain is one pass over memory.
pub(super) fn merge_chains(g: &Graph, s: &mut Schedule) {
    use std::collections::HashSet;
    // The materialized values (storage roots) a kernel for `out` loads.
    let loaded = |s: &Schedule, out: Value| {
        let mut r = Vec::new();
        for v in fused_nodes(g, s, out) {
            for a in &g.nodes[v].args {
                let root = s.storage[a.as_u32() as usize];
                if s.materialized[a.as_u32() as usize] && !r.contains(&root) {
                    r.push(root);
                }
            }
        }
        r
    };
    // The parameter or state each update value overwrites in place.
    let replaces = replaced(g);
    // The open group, kept as sets so each kernel costs its own loads, not the group's:
    // its outputs, what they load, whether all are flat, their strided sources and the
    // parameters and states they replace.
    #[derive(Default)]
    struct Group {
        members: HashSet<Value>,
        loaded: HashSet<Value>,
        flat: bool,
        strided: Vec<Value>,
        updated: HashSet<Value>,
    }
    let open = |s: &Schedule, o: Value, mine: Vec<Value>| Group {
        members: HashSet::from([o]),
        loaded: mine.into_iter().collect(),
        flat: flat_only(g, s, o),
        strided: strided_sources(g, s, o),
        updated: replaces.get(&o).copied().into_iter().collect(),
    };
    let mut out: Vec<Kernel> = Vec::new();
    let mut group: Option<Group> = None;
    for k in std::mem::take(&mut s.kernels) {
        let Kernel::Elementwise { out: o, rows, cols, .. } = &k else {
            group = None;
            out.push(k);
            continue;
        };
        let (o, rows, cols) = (*o, *rows, *cols);
        let mine = loaded(s, o);
        if let (Some(Kernel::Elementwise { out: po, rows: pr, cols: pc, also: pa }), Some(grp)) =
            (out.last_mut(), group.as_mut())
        {
            let reads_group = mine.iter().any(|r| grp.members.contains(r));
            // Or loads what the group loads (Adam's m and v both read the gradient).
            let shares = mine.iter().any(|r| grp.loaded.contains(r));
            // Outputs are stored at the end of each iteration, so within the merged loop
            // a value of the group can be read only at the loop's own position. Flat
            // kernels read nothing elsewhere; a row-by-row kernel may read through a
            // slice or a row/column broadcast, so those reads must not touch the group,
            // nor a parameter or state another kernel may update in place.
            let flat_o = flat_only(g, s, o);
            // A flat kernel reads nothing strided.
            let strided_o = if flat_o { Vec::new() } else { strided_sources(g, s, o) };
            let updated_o = replaces.get(&o).copied();
            let safe = (flat_o && grp.flat) || {
                let clear = |r: &Value| !grp.members.contains(r) && !grp.updated.contains(r) && Some(*r) != updated_o;
                grp.strided.iter().all(clear) && strided_o.iter().all(clear)
            };
            if *pr == rows && *pc == cols && (reads_group || shares) && safe && pa.len() + 1 < MAX_MERGED {
                pa.push(*po);
                *po = o;
                grp.members.insert(o);
                grp.loaded.extend(mine);
                grp.flat &= flat_o;
                grp.strided.extend(strided_o);
                grp.updated.extend(updated_o);
                continue;
            }
        }
        group = Some(open(s, o, mine));
        out.push(k);
    }
    s.kernels = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::kernels::initial;
    use crate::fusion::testing::Builder;
    use crate::ir::{BinaryOp, UnaryOp};

    #[test]
    fn kernels_that_load_the_same_gradient_merge_into_one_loop() {
        let mut b = Builder::new();
        let grad = b.input("grad", &[4, 8]);
        let m = b.state("m", &[4, 8]);
        let v = b.state("v", &[4, 8]);
        let m2 = b.binary(BinaryOp::Add, m, grad);
        let sq = b.binary(BinaryOp::Mul, grad, grad);
        let v2 = b.binary(BinaryOp::Add, v, sq);
        b.update(m, m2);
        b.update(v, v2);
        let (mut s, _, _) = initial(&b.g);
        assert_eq!(s.kernels.len(), 2);
        merge_chains(&b.g, &mut s);
        assert_eq!(s.kernels, vec![Kernel::Elementwise { out: v2, rows: 4, cols: 8, also: vec![m2] }]);
    }

    #[test]
    fn unrelated_kernels_or_other_shapes_stay_apart() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let z = b.input("z", &[4, 8]);
        let w = b.input("w", &[2, 16]);
        let ex = b.unary(UnaryOp::Exp, x);
        let ez = b.unary(UnaryOp::Exp, z);
        let flat = b.reshape(x, &[2, 16]);
        let other = b.binary(BinaryOp::Add, flat, w);
        for (i, o) in [ex, ez, other].into_iter().enumerate() {
            b.output(&format!("o{i}"), o);
        }
        let (mut s, _, _) = initial(&b.g);
        let before = s.kernels.clone();
        merge_chains(&b.g, &mut s);
        assert_eq!(s.kernels, before);
        assert_eq!(s.kernels.len(), 3);
    }
}
