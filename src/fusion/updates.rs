//! Parameter and state updates: a modified gradient computed inside its update
//! (`sink_into_updates`), and updates moved up to run as early as they can
//! (`early_updates`).

use super::nodes::{flat_only, fused_nodes, reads};
use super::schedule::{Kernel, Schedule};
use super::uses::{replaced, updates};
use crate::ir::{Graph, Op, Value};

/// A value computed by an elementwise kernel of its own whose every user is computed
/// in one later update kernel of the same loop (a gradient with weight decay or clipped
/// by value, which Adam's m and v, or Nesterov's buffer and step, both read) is computed
/// inside that kernel instead of stored and read back: the update then reads the
/// gradient's product itself, and can become its epilogue (`tile_epilogues`). It needs
/// every operand read element for element, and nothing in between writing them.
pub(super) fn sink_into_updates(g: &Graph, s: &mut Schedule, users: &[Vec<Value>], pinned: &[bool]) {
    use std::collections::HashMap;
    let idx = |v: Value| v.as_u32() as usize;
    let updates = updates(g);
    // The kernels that compute each node (their loops', and reductions' fused producers).
    let mut computed_in: HashMap<Value, Vec<usize>> = HashMap::new();
    for (ki, k) in s.kernels.iter().enumerate() {
        let outs = match k {
            Kernel::Elementwise { .. } => k.outs(),
            Kernel::Reduce { x, .. } if !s.materialized[idx(*x)] => vec![*x],
            _ => continue,
        };
        for o in outs {
            for v in fused_nodes(g, s, o) {
                computed_in.entry(v).or_default().push(ki);
            }
        }
    }
    let mut removed = vec![false; s.kernels.len()];
    for e in 0..s.kernels.len() {
        let Kernel::Elementwise { out: o, rows, cols, ref also } = s.kernels[e] else { continue };
        let us = &users[idx(o)];
        if !also.is_empty()
            || pinned[idx(o)]
            || s.storage[idx(o)] != o
            || s.row_stride[idx(o)] != 0
            || us.is_empty()
            || !flat_only(g, s, o)
        {
            continue;
        }
        let Some(&[k]) = computed_in.get(&us[0]).map(|v| v.as_slice()) else { continue };
        let same = |u: &Value| {
            matches!(g.nodes[*u].op, Op::Unary(_) | Op::Binary(_) | Op::Select)
                && g.ty(*u).shape == g.ty(o).shape
                && computed_in.get(u).is_some_and(|ks| ks[..] == [k])
        };
        let into = match &s.kernels[k] {
            Kernel::Elementwise { rows: r, cols: c, .. } => {
                k > e && (*r, *c) == (rows, cols) && s.kernels[k].outs().iter().any(|x| updates.contains(x))
            }
            _ => false,
        };
        if !into || !us.iter().all(same) {
            continue;
        }
        let read: Vec<Value> = reads(g, s, &s.kernels[e]);
        let clobbered = (e + 1..k)
            .filter(|&q| !removed[q])
            .any(|q| s.kernels[q].outs().iter().any(|&x| read.contains(&s.storage[idx(x)])));
        if clobbered {
            continue;
        }
        let nodes = fused_nodes(g, s, o);
        s.materialized[idx(o)] = false;
        removed[e] = true;
        for v in nodes {
            let ks = computed_in.entry(v).or_default();
            ks.retain(|&q| q != e);
            if !ks.contains(&k) {
                ks.push(k);
            }
        }
    }
    let mut i = 0;
    s.kernels.retain(|_| {
        i += 1;
        !removed[i - 1]
    });
}

/// Moves each kernel that computes parameter or state updates (an elementwise kernel,
/// or a product whose epilogue is the update) up to just after the last kernel it
/// depends on: the last writer of anything it reads, and the last reader of
/// the values it replaces (so the planner can still update them in place). The update
/// then frees its gradient before later gradients are computed: the MLP's W2 update runs
/// before W1's gradient exists (0.5 MB less arena).
pub(super) fn early_updates(g: &Graph, s: &mut Schedule) {
    use std::collections::HashMap;
    let idx = |v: Value| v.as_u32() as usize;
    let updated = replaced(g);
    // Kernels are placed one by one in their order; an update goes right after the last
    // placed kernel that writes what it reads, or reads what it replaces or writes, and
    // any other kernel at the end. "Last" compares positions in a list that grows in the
    // middle, so each kernel has an order label (gaps of 2^64, halved by an insertion,
    // relabelled when a gap runs out), and each buffer root remembers its last writer
    // and last reader: a kernel costs its own reads and writes, not the list's length.
    let n = s.kernels.len();
    let info: Vec<(Vec<Value>, Vec<Value>)> =
        s.kernels.iter().map(|k| (reads(g, s, k), k.outs().iter().map(|&o| s.storage[idx(o)]).collect())).collect();
    const GAP: u128 = 1 << 64;
    let mut label = vec![0u128; n];
    let mut next: Vec<Option<usize>> = vec![None; n];
    let (mut head, mut tail): (Option<usize>, Option<usize>) = (None, None);
    let mut last_writer: HashMap<Value, usize> = HashMap::new();
    let mut last_reader: HashMap<Value, usize> = HashMap::new();
    let relabel = |label: &mut [u128], next: &[Option<usize>], head: Option<usize>| {
        let mut at = head;
        let mut l = 1u128 << 126;
        while let Some(k) = at {
            label[k] = l;
            l += GAP;
            at = next[k];
        }
    };
    for j in 0..n {
        let k = &s.kernels[j];
        let (read, mine) = &info[j];
        let olds: Vec<Value> = k.outs().iter().filter_map(|u| updated.get(u).copied()).collect();
        // (A product whose epilogue is the update moves with it.)
        let is_update = !olds.is_empty() && matches!(k, Kernel::Elementwise { .. } | Kernel::MatMul { .. });
        let after = if is_update {
            let writers = read.iter().chain(mine).filter_map(|r| last_writer.get(r));
            let readers = olds.iter().chain(mine).filter_map(|r| last_reader.get(r));
            Some(writers.chain(readers).copied().max_by_key(|&q| label[q]))
        } else {
            None
        };
        match after {
            // Not an update: at the end.
            None => {
                label[j] = tail.map_or(1u128 << 126, |t| label[t] + GAP);
                match tail {
                    Some(t) => next[t] = Some(j),
                    None => head = Some(j),
                }
                tail = Some(j);
            }
            // Nothing to wait for: first.
            Some(None) => {
                let front = head.map_or(Some(1u128 << 126), |h| label[h].checked_sub(GAP));
                next[j] = head;
                head = Some(j);
                if tail.is_none() {
                    tail = Some(j);
                }
                match front {
                    Some(l) if l >= GAP => label[j] = l,
                    _ => relabel(&mut label, &next, head),
                }
            }
            Some(Some(a)) => {
                next[j] = next[a];
                next[a] = Some(j);
                if tail == Some(a) {
                    tail = Some(j);
                }
                match next[j] {
                    None => label[j] = label[a] + GAP,
                    Some(b) if label[b] - label[a] >= 2 => label[j] = label[a] + (label[b] - label[a]) / 2,
                    Some(_) => relabel(&mut label, &next, head),
                }
            }
        }
        for &r in mine {
            last_writer.insert(r, j);
        }
        for &r in read {
            let e = last_reader.entry(r).or_insert(j);
            if label[j] > label[*e] {
                *e = j;
            }
        }
    }
    let mut order = Vec::with_capacity(n);
    let mut at = head;
    while let Some(k) = at {
        order.push(k);
        at = next[k];
    }
    let mut slots: Vec<Option<Kernel>> = std::mem::take(&mut s.kernels).into_iter().map(Some).collect();
    s.kernels = order.into_iter().filter_map(|k| slots[k].take()).collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::chains::merge_chains;
    use crate::fusion::kernels::initial;
    use crate::fusion::testing::Builder;
    use crate::ir::BinaryOp;

    #[test]
    fn a_decayed_gradient_is_computed_inside_the_update_that_reads_it() {
        let mut b = Builder::new();
        let x = b.input("x", &[8, 4]);
        let d = b.input("d", &[4, 16]);
        let grad = b.matmul(x, d);
        let w = b.param("w", &[8, 16]);
        let m = b.state("m", &[8, 16]);
        let wd = b.fill(0.01, &[8, 16]);
        let decay = b.binary(BinaryOp::Mul, w, wd);
        let decayed = b.binary(BinaryOp::Add, grad, decay);
        // Another product in between keeps the chains of `decayed` and the updates apart.
        let x2 = b.input("x2", &[8, 4]);
        let other = b.matmul(x2, d);
        b.output("other", other);
        let beta = b.fill(0.9, &[8, 16]);
        let mb = b.binary(BinaryOp::Mul, m, beta);
        let m2 = b.binary(BinaryOp::Add, mb, decayed);
        let lr = b.fill(0.1, &[8, 16]);
        let step = b.binary(BinaryOp::Mul, decayed, lr);
        let w2 = b.binary(BinaryOp::Sub, w, step);
        b.update(m, m2);
        b.update(w, w2);
        let (mut s, users, pinned) = initial(&b.g);
        merge_chains(&b.g, &mut s);
        let outs = |s: &Schedule| s.kernels.iter().map(|k| k.outs()).collect::<Vec<_>>();
        assert_eq!(outs(&s), vec![vec![grad], vec![decayed], vec![other], vec![m2, w2]]);
        sink_into_updates(&b.g, &mut s, &users, &pinned);
        assert_eq!(outs(&s), vec![vec![grad], vec![other], vec![m2, w2]]);
        assert!(!s.materialized[decayed.as_u32() as usize]);
        assert!(fused_nodes(&b.g, &s, w2).contains(&decayed));
    }

    #[test]
    fn an_update_moves_up_to_just_after_its_gradient() {
        let mut b = Builder::new();
        let x = b.input("x", &[8, 4]);
        let d = b.input("d", &[4, 16]);
        let grad = b.matmul(x, d);
        let x2 = b.input("x2", &[8, 4]);
        let other = b.matmul(x2, d);
        b.output("other", other);
        let w = b.param("w", &[8, 16]);
        let lr = b.fill(0.1, &[8, 16]);
        let step = b.binary(BinaryOp::Mul, grad, lr);
        let w2 = b.binary(BinaryOp::Sub, w, step);
        b.update(w, w2);
        let (mut s, _, _) = initial(&b.g);
        let order = |s: &Schedule| s.kernels.iter().map(Kernel::out).collect::<Vec<_>>();
        assert_eq!(order(&s), vec![grad, other, w2]);
        early_updates(&b.g, &mut s);
        assert_eq!(order(&s), vec![grad, w2, other]);
    }

    #[test]
    fn an_update_waits_for_the_last_reader_of_what_it_replaces() {
        let mut b = Builder::new();
        let x = b.input("x", &[8, 4]);
        let d = b.input("d", &[4, 16]);
        let grad = b.matmul(x, d);
        let w = b.param("w", &[8, 16]);
        let y = b.input("y", &[2, 8]);
        let uses_w = b.matmul(y, w);
        b.output("uses_w", uses_w);
        let lr = b.fill(0.1, &[8, 16]);
        let step = b.binary(BinaryOp::Mul, grad, lr);
        let w2 = b.binary(BinaryOp::Sub, w, step);
        b.update(w, w2);
        let (mut s, _, _) = initial(&b.g);
        early_updates(&b.g, &mut s);
        assert_eq!(s.kernels.iter().map(Kernel::out).collect::<Vec<_>>(), vec![grad, uses_w, w2]);
    }
}
