//! Graph simplification. For now: dead-code elimination (`dead_code`), which keeps the
//! nodes that outputs, the loss and state updates need, plus every declared leaf.
//! (CSE, constant folding and algebraic rewrites come with the fusion work.)

use crate::ir::{Graph, Op, Value};
use cranelift_entity::PrimaryMap;

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

/// A copy of `g` without the inputs nothing uses (`predict` needs no labels).
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
    let mut new_index = vec![0u32; g.inputs.len()];
    let mut k = 0;
    for (i, &kp) in keep.iter().enumerate() {
        new_index[i] = k;
        if kp {
            k += 1;
        }
    }
    let mut out = g.clone();
    out.inputs = g.inputs.iter().zip(&keep).filter(|(_, k)| **k).map(|(i, _)| i.clone()).collect();
    for (_, node) in out.nodes.iter_mut() {
        if let Op::Input(i) = &mut node.op {
            *i = new_index[*i as usize];
        }
    }
    // Unused input leaves are no longer declared; remove their nodes.
    let mut keep_node = vec![true; out.len()];
    for (i, k) in g.inputs.iter().zip(&keep) {
        if !k {
            keep_node[i.value.as_u32() as usize] = false;
        }
    }
    rebuild(&out, &keep_node)
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
    let m = |v: Value| map[idx(v)].unwrap_or(v);
    let mut out = g.clone();
    out.nodes = nodes;
    for i in out.inputs.iter_mut() {
        i.value = m(i.value);
    }
    for p in out.params.iter_mut() {
        p.value = m(p.value);
        p.update = p.update.map(m);
    }
    for s in out.states.iter_mut() {
        s.value = m(s.value);
        s.update = s.update.map(m);
    }
    for (_, v) in out.outputs.iter_mut() {
        *v = m(*v);
    }
    out.loss = out.loss.map(m);
    out
}
