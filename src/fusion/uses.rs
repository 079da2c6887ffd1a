//! Who reads what, and what must stay: each value's users, the values pinned to a buffer
//! of their own (outputs, the loss, updates), and the parameters and states updates
//! replace.

use crate::ir::{Graph, Value};
use std::collections::{HashMap, HashSet};

/// Per value: the nodes that read it, each once, in graph order.
pub(super) fn users(g: &Graph) -> Vec<Vec<Value>> {
    let mut users: Vec<Vec<Value>> = vec![Vec::new(); g.len()];
    for (v, node) in g.nodes.iter() {
        for a in &node.args {
            let us = &mut users[a.as_u32() as usize];
            if !us.contains(&v) {
                us.push(v);
            }
        }
    }
    users
}

/// Per value: whether it must be stored as itself (an output, the loss, or a parameter's
/// or state's update).
pub(super) fn pinned(g: &Graph) -> Vec<bool> {
    let mut pinned = vec![false; g.len()];
    for v in g.outputs.iter().map(|(_, v)| *v).chain(g.loss).chain(updates_in_order(g)) {
        pinned[v.as_u32() as usize] = true;
    }
    pinned
}

/// The parameters' updates, then the states'.
fn updates_in_order(g: &Graph) -> impl Iterator<Item = Value> + '_ {
    g.params.iter().filter_map(|p| p.update).chain(g.states.iter().filter_map(|st| st.update))
}

/// The values that update a parameter or a state.
pub(super) fn updates(g: &Graph) -> HashSet<Value> {
    updates_in_order(g).collect()
}

/// Per update value: the parameter or state it replaces (and the planner overwrites in
/// place).
pub(super) fn replaced(g: &Graph) -> HashMap<Value, Value> {
    g.params
        .iter()
        .filter_map(|p| p.update.map(|u| (u, p.value)))
        .chain(g.states.iter().filter_map(|st| st.update.map(|u| (u, st.value))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::testing::Builder;
    use crate::ir::{BinaryOp, UnaryOp};

    #[test]
    fn users_are_listed_once_each_in_graph_order() {
        let mut b = Builder::new();
        let x = b.input("x", &[4]);
        let sq = b.binary(BinaryOp::Mul, x, x);
        let e = b.unary(UnaryOp::Exp, x);
        let u = users(&b.g);
        assert_eq!(u[x.as_u32() as usize], vec![sq, e]);
        assert!(u[e.as_u32() as usize].is_empty());
    }

    #[test]
    fn outputs_the_loss_and_updates_are_pinned() {
        let mut b = Builder::new();
        let w = b.param("w", &[4]);
        let s = b.state("s", &[4]);
        let x = b.input("x", &[4]);
        let out = b.unary(UnaryOp::Tanh, x);
        let loss = b.unary(UnaryOp::Abs, x);
        let w2 = b.binary(BinaryOp::Sub, w, x);
        let s2 = b.binary(BinaryOp::Add, s, x);
        let free = b.unary(UnaryOp::Exp, x);
        b.output("y", out);
        b.g.loss = Some(loss);
        b.update(w, w2);
        b.update(s, s2);
        let p = pinned(&b.g);
        let pinned_values: Vec<Value> = b.g.nodes.keys().filter(|v| p[v.as_u32() as usize]).collect();
        assert_eq!(pinned_values, vec![out, loss, w2, s2]);
        assert!(!p[free.as_u32() as usize]);
        assert_eq!(updates(&b.g), HashSet::from([w2, s2]));
        assert_eq!(replaced(&b.g), HashMap::from([(w2, w), (s2, s)]));
    }
}
