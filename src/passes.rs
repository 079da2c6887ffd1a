//! What the pass driver keeps while it runs the stages: one `Timings` record (the seconds
//! of each stage in the order they ran, which `nnc bench` prints), and the verifier run
//! on the graph between passes (`checked`): always in debug builds and wherever
//! `NNC_VERIFY` is set (CI's test run sets it), not otherwise, so that a release compile
//! stays in milliseconds. The stages themselves are in `pipeline` (front end and step
//! graph) and `runtime::executable` (simplify, fusion, plan, code generation).

use crate::ir::Graph;

/// The seconds each stage took, in the order they ran.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    stages: Vec<(&'static str, f64)>,
}

impl Timings {
    /// Runs `f` as stage `name`, adding its seconds to the record.
    pub fn run<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let t = std::time::Instant::now();
        let out = f();
        self.add(name, t.elapsed().as_secs_f64());
        out
    }

    /// Adds `seconds` to stage `name` (a new stage at the end, or one seen before).
    pub fn add(&mut self, name: &'static str, seconds: f64) {
        match self.stages.iter_mut().find(|(n, _)| *n == name) {
            Some((_, s)) => *s += seconds,
            None => self.stages.push((name, seconds)),
        }
    }

    /// The stages after `self`'s, as one record.
    pub fn then(mut self, other: &Timings) -> Timings {
        for (n, s) in &other.stages {
            self.add(n, *s);
        }
        self
    }

    /// The seconds of stage `name` (0 when it did not run).
    pub fn get(&self, name: &str) -> f64 {
        self.stages.iter().find(|(n, _)| *n == name).map_or(0.0, |(_, s)| *s)
    }

    /// Every stage with its seconds, in order.
    pub fn stages(&self) -> &[(&'static str, f64)] {
        &self.stages
    }
}

/// Whether graphs are verified between passes.
pub fn verifying() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| cfg!(debug_assertions) || std::env::var_os("NNC_VERIFY").is_some_and(|v| v != "0"))
}

/// The graph a pass produced, verified when `verifying` (every node's type re-derived
/// by its shape rule): an error names the pass.
pub fn checked(g: Graph, after: &str) -> Result<Graph, String> {
    checked_if(verifying(), g, after)
}

fn checked_if(verify: bool, g: Graph, after: &str) -> Result<Graph, String> {
    if verify {
        let problems = crate::ir::verify::verify(&g);
        if !problems.is_empty() {
            return Err(format!("internal error: the graph after {after} does not verify: {}", problems.join("; ")));
        }
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_keep_their_order_and_add_up() {
        let mut t = Timings::default();
        t.add("simplify", 0.5);
        let x = t.run("fusion", || 3);
        t.add("simplify", 0.25);
        assert_eq!(x, 3);
        let names: Vec<&str> = t.stages().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["simplify", "fusion"]);
        assert_eq!(t.get("simplify"), 0.75);
        let mut front = Timings::default();
        front.add("parse+lower", 1.0);
        let all = front.then(&t);
        assert_eq!(all.stages().len(), 3);
        assert_eq!(all.stages()[0].0, "parse+lower");
    }

    /// A graph that does not verify is refused with the pass's name, when verifying.
    #[test]
    fn a_broken_graph_is_caught_between_passes() {
        use crate::ir::{Dim, InputDecl, Mode, Op, Type, UnaryOp};
        let ty = Type::f32(vec![Dim::konst(2), Dim::konst(4)]);
        let mut g = Graph::new(Mode::Eval);
        let x = g.push(Op::Input(0), vec![], Some(ty.clone())).expect("input");
        g.inputs.push(InputDecl { name: "x".into(), ty, value: x, span: Default::default() });
        let y = g.push(Op::Unary(UnaryOp::Exp), vec![x], None).expect("exp");
        g.outputs.push(("y".into(), y));
        assert!(checked_if(true, g.clone(), "simplify").is_ok());
        // Break a node's type: the shape rule disagrees.
        let v = g.outputs[0].1;
        g.nodes[v].ty.shape.push(crate::ir::Dim::konst(3));
        assert!(checked_if(false, g.clone(), "simplify").is_ok());
        let e = checked_if(true, g, "simplify").expect_err("caught");
        assert!(e.contains("after simplify"), "{e}");
    }
}
