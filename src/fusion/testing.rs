//! Test graphs for the fusion steps' unit tests: a small builder over `ir::Graph`, and
//! schedules written by hand. (`kernels::initial` is the schedule `fuse` starts its
//! sub-passes from; `describe::lines` its text.)

use super::schedule::{Kernel, Schedule};
use crate::ir::{BinaryOp, Dim, Graph, InputDecl, Mode, Op, ParamDecl, ReduceOp, StateDecl, Type, UnaryOp, Value};

/// A graph under construction, every dim constant.
pub(super) struct Builder {
    pub g: Graph,
}

fn ty(shape: &[i64]) -> Type {
    Type::f32(shape.iter().map(|&d| Dim::konst(d)).collect())
}

impl Builder {
    pub fn new() -> Builder {
        Builder { g: Graph::new(Mode::Train) }
    }
    pub fn input(&mut self, name: &str, shape: &[i64]) -> Value {
        let v = self.g.push(Op::Input(self.g.inputs.len() as u32), vec![], Some(ty(shape))).expect("leaf");
        self.g.inputs.push(InputDecl { name: name.into(), ty: ty(shape), value: v, span: Default::default() });
        v
    }
    pub fn param(&mut self, name: &str, shape: &[i64]) -> Value {
        let v = self.g.push(Op::Param(self.g.params.len() as u32), vec![], Some(ty(shape))).expect("leaf");
        self.g.params.push(ParamDecl {
            name: name.into(),
            shape: shape.to_vec(),
            init: crate::ir::Init::Zeros,
            decay: false,
            value: v,
            update: None,
            span: Default::default(),
        });
        v
    }
    pub fn state(&mut self, name: &str, shape: &[i64]) -> Value {
        let v = self.g.push(Op::State(self.g.states.len() as u32), vec![], Some(ty(shape))).expect("leaf");
        self.g.states.push(StateDecl {
            name: name.into(),
            shape: shape.to_vec(),
            init: crate::ir::Init::Zeros,
            value: v,
            update: None,
            span: Default::default(),
        });
        v
    }
    /// `u` becomes the update of the parameter (or, failing that, the state) `p`.
    pub fn update(&mut self, p: Value, u: Value) {
        if let Some(d) = self.g.params.iter_mut().find(|d| d.value == p) {
            d.update = Some(u);
        } else if let Some(d) = self.g.states.iter_mut().find(|d| d.value == p) {
            d.update = Some(u);
        } else {
            panic!("{p} is neither a parameter nor a state");
        }
    }
    pub fn op(&mut self, op: Op, args: &[Value]) -> Value {
        self.g.push(op, args.to_vec(), None).expect("operand types")
    }
    pub fn fill(&mut self, x: f64, shape: &[i64]) -> Value {
        self.g.push(Op::Fill(x), vec![], Some(ty(shape))).expect("leaf")
    }
    pub fn unary(&mut self, u: UnaryOp, x: Value) -> Value {
        self.op(Op::Unary(u), &[x])
    }
    pub fn binary(&mut self, b: BinaryOp, x: Value, y: Value) -> Value {
        self.op(Op::Binary(b), &[x, y])
    }
    pub fn matmul(&mut self, a: Value, b: Value) -> Value {
        self.op(Op::MatMul, &[a, b])
    }
    pub fn broadcast(&mut self, x: Value, shape: &[i64]) -> Value {
        self.op(Op::Broadcast { shape: ty(shape).shape }, &[x])
    }
    pub fn reshape(&mut self, x: Value, shape: &[i64]) -> Value {
        self.op(Op::Reshape { shape: ty(shape).shape }, &[x])
    }
    pub fn transpose(&mut self, x: Value, perm: &[u32]) -> Value {
        self.op(Op::Transpose { perm: perm.to_vec() }, &[x])
    }
    pub fn reduce(&mut self, op: ReduceOp, x: Value, axes: &[u32]) -> Value {
        self.op(Op::Reduce { op, axes: axes.to_vec() }, &[x])
    }
    pub fn output(&mut self, name: &str, v: Value) {
        self.g.outputs.push((name.into(), v));
    }
}

/// A schedule of `kernels` in which exactly the values `stored` are materialized, each in
/// a buffer of its own.
pub(super) fn schedule_of(g: &Graph, stored: &[Value], kernels: Vec<Kernel>) -> Schedule {
    let n = g.len();
    let materialized = (0..n as u32).map(|i| stored.contains(&Value::from_u32(i))).collect();
    let storage = (0..n as u32).map(Value::from_u32).collect();
    Schedule { kernels, materialized, storage, view_offset: vec![0; n], row_stride: vec![0; n] }
}
