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
