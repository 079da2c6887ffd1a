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

/// One line per kernel of a schedule: what unit tests compare.
#[cfg(test)]
pub(super) fn lines(g: &Graph, s: &Schedule) -> Vec<String> {
    s.kernels.iter().map(|k| describe(g, s, k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::testing::{schedule_of, Builder};
    use crate::ir::{BinaryOp, ReduceOp, UnaryOp, Value};

    #[test]
    fn loops_list_the_nodes_they_compute() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let e = b.unary(UnaryOp::Exp, x);
        let h = b.binary(BinaryOp::Mul, e, x);
        let t = b.unary(UnaryOp::Tanh, h);
        let r = b.reduce(ReduceOp::Max, t, &[1]);
        let kernels = vec![
            Kernel::Elementwise { out: t, rows: 4, cols: 8, also: vec![h] },
            Kernel::Reduce { out: r, x: t, op: ReduceOp::Max, outer: 4, red: 8, inner: 1 },
        ];
        let s = schedule_of(&b.g, &[x, h, t, r], kernels);
        assert_eq!(
            lines(&b.g, &s),
            vec![
                format!("elementwise {h},{t} [4 x 8]: {e}=exp {h}=mul {t}=tanh"),
                format!("reduce_max {r} <- {t} [4 x 8 x 1]")
            ]
        );
        // A reduction of a fused producer lists it.
        let s = schedule_of(&b.g, &[x, h, r], vec![s.kernels[1].clone()]);
        assert_eq!(lines(&b.g, &s), vec![format!("reduce_max {r} <- {t} [4 x 8 x 1]: {t}=tanh")]);
    }

    #[test]
    fn a_product_shows_its_scale_operands_addend_and_epilogue() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let w = b.param("w", &[16, 8]);
        let c = b.input("c", &[4, 16]);
        let y = b.input("y", &[4, 16]);
        let z = b.unary(UnaryOp::Tanh, y);
        let e = Kernel::Elementwise { out: z, rows: 4, cols: 16, also: vec![] };
        let k = Kernel::MatMul {
            out: y,
            a: x,
            b: w,
            a_t: false,
            b_t: true,
            a_shared: false,
            b_shared: true,
            batch: 1,
            m: 4,
            k: 8,
            n: 16,
            scale: 0.5,
            accumulate: true,
            epilogue: Some(Box::new(e)),
        };
        let mut s = schedule_of(&b.g, &[x, w, c, y, z], vec![k]);
        s.storage[y.as_u32() as usize] = c;
        assert_eq!(
            lines(&b.g, &s),
            vec![format!(
                "gemm {y} <- 0.5 * {x} @ {w}^T (shared) + {y} (into {c}) [1 x 4x8 @ 8x16], then per block: \
                 elementwise {z} [4 x 16]: {z}=tanh"
            )]
        );
    }

    #[test]
    fn collectives_say_whether_they_run_in_place() {
        let mut b = Builder::new();
        let g1 = b.input("g1", &[4]);
        let g2 = b.input("g2", &[4]);
        let s1 = b.op(crate::ir::Op::AllReduce, &[g1]);
        let s2 = b.op(crate::ir::Op::AllReduce, &[g2]);
        let kernels = vec![
            Kernel::Collective { values: vec![s1, s2], bucket: 3, wait: false },
            Kernel::Collective { values: vec![s1], bucket: 3, wait: true },
        ];
        let mut s = schedule_of(&b.g, &[g1, g2, s1, s2], kernels);
        s.storage[s1.as_u32() as usize] = g1;
        assert_eq!(
            lines(&b.g, &s),
            vec![
                format!("start allreduce bucket 3: {s1} <- {g1} (in place), {s2} <- {g2} (copied)"),
                format!("wait for allreduce bucket 3: {s1} <- {g1} (in place)"),
            ]
        );
        let _: Value = s2;
    }
}
