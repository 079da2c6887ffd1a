//! One line per kernel (`nnc ir --stage fused`, `nnc plan`).

use super::nodes::fused_nodes;
use super::schedule::{Kernel, Schedule};
use crate::ir::Graph;

/// A short description of a kernel (`nnc ir --stage fused`, `nnc plan`).
pub fn describe(g: &Graph, s: &Schedule, k: &Kernel) -> String {
    match k {
        Kernel::Elementwise { out, rows, cols, also } => {
            let mut ops: Vec<String> = Vec::new();
            for o in also.iter().chain([out]) {
                ops.extend(fused_nodes(g, s, *o).iter().map(|v| format!("{v}={}", g.nodes[*v].op.name())));
            }
            let outs: Vec<String> = also.iter().chain([out]).map(|v| v.to_string()).collect();
            format!("elementwise {} [{rows} x {cols}]: {}", outs.join(","), ops.join(" "))
        }
        Kernel::Reduce { out, x, op, outer, red, inner } => {
            let mut d = format!("{} {out} <- {x} [{outer} x {red} x {inner}]", op.name());
            if !s.materialized[x.as_u32() as usize] {
                let ops: Vec<String> =
                    fused_nodes(g, s, *x).iter().map(|v| format!("{v}={}", g.nodes[*v].op.name())).collect();
                d.push_str(&format!(": {}", ops.join(" ")));
            }
            d
        }
        Kernel::MatMul { out, a, b, a_t, b_t, a_shared, b_shared, batch, m, k, n, scale, accumulate, epilogue } => {
            format!(
                "gemm {out} <- {}{a}{}{} @ {b}{}{}{} [{batch} x {m}x{k} @ {k}x{n}]{}",
                if *scale != 1.0 { format!("{scale} * ") } else { String::new() },
                if *a_t { "^T" } else { "" },
                if *a_shared { " (shared)" } else { "" },
                if *b_t { "^T" } else { "" },
                if *b_shared { " (shared)" } else { "" },
                if *accumulate {
                    format!(" + {out} (into {})", s.storage[out.as_u32() as usize])
                } else {
                    String::new()
                },
                epilogue.as_ref().map_or(String::new(), |e| format!(", then per block: {}", describe(g, s, e)))
            )
        }
        Kernel::Transpose { out, x, batch, rows, cols } => format!("transpose {out} <- {x} [{batch} x {rows}x{cols}]"),
        Kernel::Permute { out, x, dims, row, .. } => format!("permute {out} <- {x} [{dims:?} rows of {row}]"),
        Kernel::Window { out, x, adjoint, nc, h, w, .. } => {
            format!("{} {out} <- {x} [{nc} x {h}x{w}]", if *adjoint { "col2im" } else { "im2col" })
        }
        Kernel::Pool { out, x, window: wn, op, nc, h, w } => format!(
            "pool {} {out} <- {x} [{nc} x {h}x{w}, {}x{} window, stride {}x{}]",
            op.name().trim_start_matches("reduce_"),
            wn.kh,
            wn.kw,
            wn.stride_h,
            wn.stride_w
        ),
        Kernel::Rows { rows, parts } => {
            let parts: Vec<String> = parts.iter().map(|p| format!("\n      {}", describe(g, s, p))).collect();
            format!("rows [{rows}], row by row:{}", parts.concat())
        }
        Kernel::Host { out } => format!("host {} {out} <- {:?}", g.nodes[*out].op.name(), g.nodes[*out].args),
        Kernel::Collective { values, bucket, wait } => {
            let vs: Vec<String> = values
                .iter()
                .map(|&v| {
                    let x = g.nodes[v].args[0];
                    let how = if s.storage[v.as_u32() as usize] == v { "copied" } else { "in place" };
                    format!("{v} <- {x} ({how})")
                })
                .collect();
            if *wait {
                format!("wait for allreduce bucket {bucket}: {}", vs.join(", "))
            } else {
                format!("start allreduce bucket {bucket}: {}", vs.join(", "))
            }
        }
    }
}
