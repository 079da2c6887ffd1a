//! The one stable text format of the IR (`nnc ir --stage ir`, snapshots, logs).
//!
//! A header lists inputs, parameters and states; then one node per line,
//! `v3 = matmul v1, v2 : f32[B, 128]`, in topological order with dense numbers; then
//! outputs, the loss and state updates. Nothing is printed in hash order.

pub use super::num::num;
use super::op::Op;
use super::ty::shape_str;
use super::{Graph, Mode, Value};
use std::fmt::Write;

fn attrs(g: &Graph, op: &Op) -> String {
    let names = &g.symbols;
    let shape = |s: &[super::Dim]| shape_str(s, names);
    match op {
        Op::Input(i) => g.inputs.get(*i as usize).map(|d| d.name.clone()).unwrap_or_default(),
        Op::Param(i) => g.params.get(*i as usize).map(|d| d.name.clone()).unwrap_or_default(),
        Op::State(i) => g.states.get(*i as usize).map(|d| d.name.clone()).unwrap_or_default(),
        Op::Fill(v) => num(*v),
        Op::DimValue(d) => d.display(names).to_string(),
        Op::Iota { axis } => format!("axis={axis}"),
        Op::Rand { stream } => format!("stream={stream}"),
        Op::Unary(_) | Op::Binary(_) | Op::Select | Op::StopGradient | Op::AllReduce | Op::MatMul | Op::Gather => {
            String::new()
        }
        Op::Broadcast { shape: s } | Op::Reshape { shape: s } => shape(s),
        Op::Transpose { perm } => format!("{perm:?}"),
        Op::Slice { axis, start, end, step } => format!("axis={axis} {start}:{end}:{step}"),
        Op::Pad { axis, start, step, len } => {
            format!("axis={axis} start={start} step={step} len={}", len.display(names))
        }
        Op::Concat { axis } => format!("axis={axis}"),
        Op::Reduce { axes, .. } => format!("axes={axes:?}"),
        Op::ScatterAdd { rows } => format!("rows={}", rows.display(names)),
        Op::OneHot { n } => format!("n={n}"),
        Op::Im2col(w) => window(w),
        Op::Col2im { window: w, h, w: wd } => format!("{} out={h}x{wd}", window(w)),
    }
}

fn window(w: &super::Window) -> String {
    format!("k={}x{} stride={}x{} pad={}x{}", w.kh, w.kw, w.stride_h, w.stride_w, w.pad_h, w.pad_w)
}

/// Prints a whole graph.
pub fn print(g: &Graph) -> String {
    let mut out = String::new();
    let mode = match g.mode {
        Mode::Train => "train",
        Mode::Eval => "eval",
    };
    let v = |x: Value| format!("v{}", x.as_u32());
    let _ = writeln!(out, "graph {mode} {{");
    // Symbols still free (not bound by `--batch`), in declaration order.
    let mut free: Vec<&str> = Vec::new();
    for i in &g.inputs {
        for d in &i.ty.shape {
            for s in d.symbols() {
                let n = g.symbols.get(s.0 as usize).map(String::as_str).unwrap_or("?");
                if !free.contains(&n) {
                    free.push(n);
                }
            }
        }
    }
    if !free.is_empty() {
        let _ = writeln!(out, "  symbols {}", free.join(", "));
    }
    for i in &g.inputs {
        let _ = writeln!(out, "  input {}: {} = {}", i.name, i.ty.display(&g.symbols), v(i.value));
    }
    for p in &g.params {
        let _ = writeln!(
            out,
            "  param {}: f32{:?} = {}  init={}{}",
            p.name,
            p.shape,
            v(p.value),
            p.init.describe(),
            if p.decay { " decay" } else { "" }
        );
    }
    for s in &g.states {
        let _ = writeln!(out, "  state {}: f32{:?} = {}  init={}", s.name, s.shape, v(s.value), s.init.describe());
    }
    for (val, node) in g.nodes.iter() {
        let args: Vec<String> = node.args.iter().map(|a| v(*a)).collect();
        let a = attrs(g, &node.op);
        let mut line = format!("  {} = {}", v(val), node.op.name());
        if !a.is_empty() {
            line.push(' ');
            line.push_str(&a);
        }
        if !args.is_empty() {
            line.push(' ');
            line.push_str(&args.join(", "));
        }
        let _ = writeln!(out, "{line} : {}", node.ty.display(&g.symbols));
    }
    for (name, val) in &g.outputs {
        let _ = writeln!(out, "  output {name} = {}", v(*val));
    }
    if let Some(l) = g.loss {
        let _ = writeln!(out, "  loss = {}", v(l));
    }
    for p in &g.params {
        if let Some(u) = p.update {
            let _ = writeln!(out, "  update {} <- {}", p.name, v(u));
        }
    }
    for s in &g.states {
        if let Some(u) = s.update {
            let _ = writeln!(out, "  update {} <- {}", s.name, v(u));
        }
    }
    out.push_str("}\n");
    out
}
