//! The kernels of a fused graph and the schedule that orders them (`fuse`'s result).

use crate::ir::{ReduceOp, Value};

#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    /// Computes `out` (and the fused nodes it needs) in one loop over [rows, cols];
    /// `also` are earlier outputs computed in the same loop (a chain such as Adam's
    /// m, v and parameter updates): later outputs use them from registers, and every
    /// output is stored at the end of an iteration.
    Elementwise { out: Value, rows: usize, cols: usize, also: Vec<Value> },
    /// `out[o, i] = op over r of x[o, r, i]` for a materialized `x`.
    Reduce { out: Value, x: Value, op: ReduceOp, outer: usize, red: usize, inner: usize },
    /// `out[b] = a[b] @ b[b]` for `batch` matrices; operands may be read transposed, and
    /// an operand marked `*_shared` is one matrix read for every batch (a broadcast).
    MatMul {
        out: Value,
        a: Value,
        b: Value,
        a_t: bool,
        b_t: bool,
        a_shared: bool,
        b_shared: bool,
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
        /// The epilogue the gemm crate runs as it stores: `out = scale * (a @ b)`, plus
        /// out's previous contents when `accumulate` (out is then a view of the addend,
        /// whose buffer the product is added into).
        scale: f32,
        accumulate: bool,
        /// An elementwise kernel over the product's [batch x m, n] that reads it only at
        /// its own position (a bias and an activation, an activation's derivative, the
        /// optimizer's update of the parameter whose gradient it is), run on each
        /// block of the result as soon as the GEMM has finished it (`tile_epilogues`).
        epilogue: Option<Box<Kernel>>,
    },
    /// `out[b] = x[b]ᵀ` for `batch` matrices `x[b]` of [rows, cols]: a transpose of the
    /// last two dims, copied in 4x4 blocks.
    Transpose { out: Value, x: Value, batch: usize, rows: usize, cols: usize },
    /// A transpose that keeps the last dim: `out` is `x`'s rows of `row` elements in
    /// another order. `dims` are out's dims but the last; a step along dim k moves
    /// `src_strides[k]` elements in `x`.
    Permute { out: Value, x: Value, dims: Vec<usize>, src_strides: Vec<usize>, row: usize },
    /// The windows of `nc` images of [h, w] (`Op::Im2col`) or, with `adjoint`, their
    /// sum back into the images (`Op::Col2im`): `out` and `x` are the patches
    /// [nc, kh, kw, oh, ow] and the images in one order or the other.
    Window { out: Value, x: Value, window: crate::ir::Window, adjoint: bool, nc: usize, h: usize, w: usize },
    /// A window reduction (pooling): `out[i, y, x] = op over (a, b) of
    /// x[i, y*stride_h + a, x*stride_w + b]` for `nc` images of [h, w], the reduction over
    /// the window axes of an `Op::Im2col` (without padding) that nothing else reads, which
    /// is never materialized. The window offsets are folded in row-major order, as the
    /// reduction of the materialized windows does.
    Pool { out: Value, x: Value, window: crate::ir::Window, op: ReduceOp, nc: usize, h: usize, w: usize },
    /// Row-wise kernels (elementwise ones and reductions of whole rows) over the same
    /// `rows`, run row by row: each part reads what earlier parts wrote only in the row at
    /// hand, so a softmax's or a layer norm's row stays in L1 from its max to its
    /// normalization.
    Rows { rows: usize, parts: Vec<Kernel> },
    /// A data-movement or generator op run by a host routine over the arena.
    Host { out: Value },
    /// A collective over the ranks of a data-parallel run, for the `Op::AllReduce` nodes
    /// `values` (bucket `bucket`, `buckets`). The start (`wait` false) begins summing the
    /// values in place: each is a view of its operand's buffer, or has its own buffer
    /// that the operand is copied into first. The wait returns when the bucket's sums
    /// are done; nothing reads or writes the buffers in between.
    Collective { values: Vec<Value>, bucket: u32, wait: bool },
}

impl Kernel {
    /// Every value the kernel stores.
    pub fn outs(&self) -> Vec<Value> {
        match self {
            Kernel::Elementwise { out, also, .. } => also.iter().copied().chain([*out]).collect(),
            Kernel::Rows { parts, .. } => parts.iter().flat_map(|p| p.outs()).collect(),
            Kernel::MatMul { out, epilogue, .. } => {
                [*out].into_iter().chain(epilogue.iter().flat_map(|e| e.outs())).collect()
            }
            Kernel::Collective { values, .. } => values.clone(),
            k => vec![k.out()],
        }
    }
    pub fn out(&self) -> Value {
        match self {
            Kernel::Elementwise { out, .. }
            | Kernel::Reduce { out, .. }
            | Kernel::MatMul { out, .. }
            | Kernel::Transpose { out, .. }
            | Kernel::Window { out, .. }
            | Kernel::Pool { out, .. }
            | Kernel::Permute { out, .. }
            | Kernel::Host { out } => *out,
            Kernel::Rows { parts, .. } => parts.last().map_or(Value::from_u32(0), |p| p.out()),
            Kernel::Collective { values, .. } => values.first().copied().unwrap_or(Value::from_u32(0)),
        }
    }
}

/// The kernels of a graph in execution order, and which values own buffers.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub kernels: Vec<Kernel>,
    /// Per value: materialized (has a buffer or is a view of one).
    pub materialized: Vec<bool>,
    /// Per value: the value whose buffer it shares (views), or itself.
    pub storage: Vec<Value>,
    /// Per value: where it starts in its storage root's buffer, in elements (0 but for
    /// contiguous slices and the pieces of an elided concat).
    pub view_offset: Vec<usize>,
    /// Per value: the distance between its rows in elements when it is a column block
    /// of an elided concat (0: dense).
    pub row_stride: Vec<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(i: u32) -> Value {
        Value::from_u32(i)
    }

    #[test]
    fn a_chain_stores_its_earlier_outputs_then_its_own() {
        let k = Kernel::Elementwise { out: v(5), rows: 2, cols: 3, also: vec![v(1), v(3)] };
        assert_eq!(k.outs(), vec![v(1), v(3), v(5)]);
        assert_eq!(k.out(), v(5));
    }

    #[test]
    fn a_product_stores_its_epilogue_outputs_too() {
        let e = Kernel::Elementwise { out: v(7), rows: 4, cols: 4, also: vec![v(6)] };
        let k = Kernel::MatMul {
            out: v(2),
            a: v(0),
            b: v(1),
            a_t: false,
            b_t: false,
            a_shared: false,
            b_shared: false,
            batch: 1,
            m: 4,
            k: 4,
            n: 4,
            scale: 1.0,
            accumulate: false,
            epilogue: Some(Box::new(e)),
        };
        assert_eq!(k.outs(), vec![v(2), v(6), v(7)]);
        assert_eq!(k.out(), v(2));
    }

    #[test]
    fn rows_and_collectives_list_every_value() {
        let rows = Kernel::Rows {
            rows: 4,
            parts: vec![
                Kernel::Reduce { out: v(2), x: v(1), op: ReduceOp::Max, outer: 4, red: 8, inner: 1 },
                Kernel::Elementwise { out: v(4), rows: 4, cols: 8, also: vec![] },
            ],
        };
        assert_eq!(rows.outs(), vec![v(2), v(4)]);
        assert_eq!(rows.out(), v(4));
        let c = Kernel::Collective { values: vec![v(8), v(9)], bucket: 0, wait: true };
        assert_eq!((c.outs(), c.out()), (vec![v(8), v(9)], v(8)));
        assert_eq!(Kernel::Host { out: v(3) }.outs(), vec![v(3)]);
    }
}
