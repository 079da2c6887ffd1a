//! The IR verifier: runs between stages and reports broken invariants as compiler bugs.
//!
//! Checks: operands precede their users; every node's type equals the shape rule's;
//! leaves point at existing declarations with matching types; outputs, loss and state
//! updates exist, the loss is an f32 scalar, and updates match their state's shape.

use super::op::{infer, Op};
use super::{Dim, Graph, Type};

/// Every broken invariant found, as text (empty when the graph is well formed).
pub fn verify(g: &Graph) -> Vec<String> {
    let mut errs = Vec::new();
    let fixed = |shape: &[i64]| Type::f32(shape.iter().map(|&d| Dim::konst(d)).collect());
    for (v, node) in g.nodes.iter() {
        for a in &node.args {
            if a.as_u32() >= v.as_u32() {
                errs.push(format!("{v}: operand {a} does not precede it"));
            }
        }
        if node.args.iter().any(|a| a.as_u32() >= v.as_u32()) {
            continue;
        }
        let tys: Vec<&Type> = node.args.iter().map(|a| &g.nodes[*a].ty).collect();
        match infer(&node.op, &tys, Some(&node.ty)) {
            Ok(t) if t == node.ty => {}
            Ok(t) => errs.push(format!(
                "{v}: type {} but the shape rule gives {}",
                node.ty.display(&g.symbols),
                t.display(&g.symbols)
            )),
            Err(e) => errs.push(format!("{v}: {e}")),
        }
        let leaf_ok = match &node.op {
            Op::Input(i) => g.inputs.get(*i as usize).is_some_and(|d| d.value == v && d.ty == node.ty),
            Op::Param(i) => g.params.get(*i as usize).is_some_and(|d| d.value == v && fixed(&d.shape) == node.ty),
            Op::State(i) => g.states.get(*i as usize).is_some_and(|d| d.value == v && fixed(&d.shape) == node.ty),
            _ => true,
        };
        if !leaf_ok {
            errs.push(format!("{v}: leaf does not match its declaration"));
        }
    }
    let exists = |v: super::Value| g.nodes.is_valid(v);
    for (name, v) in &g.outputs {
        if !exists(*v) {
            errs.push(format!("output {name}: {v} does not exist"));
        }
    }
    if let Some(l) = g.loss {
        if !exists(l) {
            errs.push(format!("loss: {l} does not exist"));
        } else if g.ty(l) != &Type::scalar() {
            errs.push("loss is not an f32 scalar".to_string());
        }
    }
    for p in &g.params {
        if let Some(u) = p.update {
            if !exists(u) || g.ty(u) != &fixed(&p.shape) {
                errs.push(format!("update of parameter {}: bad value {u}", p.name));
            }
        }
    }
    for s in &g.states {
        if let Some(u) = s.update {
            if !exists(u) || g.ty(u) != &fixed(&s.shape) {
                errs.push(format!("update of state {}: bad value {u}", s.name));
            }
        }
    }
    errs
}
