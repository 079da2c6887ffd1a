//! Shapes and access patterns: the loop shape of a value, and how an elementwise loop
//! reads a materialized operand (broadcasts, regrouped loops, slices of the last dim).

use crate::ir::{Graph, Op, Value};

/// How an elementwise loop of shape [rows, cols] reads a materialized operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Element (r, c): the operand has the loop's element count.
    Full,
    /// Element c: a row vector repeated over rows.
    Row,
    /// Element r: a column vector repeated over columns.
    Col,
    /// Element 0.
    Scalar,
    /// Element (r / div) % modulo: a vector along middle dims, repeated over the rest (a
    /// channel bias [C, 1, 1] over [N, C, H, W] reads element (r / H) % C).
    Chan { div: usize, modulo: usize },
    /// Row (r / div) * modulo + r % modulo, element c: rows repeated over a run of
    /// middle dims (a pooling window's max [N, C, 1, 1, OH, OW] over [N, C, 2, 2, OH, OW]).
    Rows { div: usize, modulo: usize },
}

pub(super) fn is_elementwise(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Fill(_) | Op::DimValue(_))
}

pub(super) fn numel(g: &Graph, v: Value) -> usize {
    g.ty(v).shape.iter().map(|d| d.as_const().unwrap_or(0).max(0) as usize).product()
}

pub(super) fn dims(g: &Graph, v: Value) -> Vec<usize> {
    g.ty(v).shape.iter().map(|d| d.as_const().unwrap_or(0).max(0) as usize).collect()
}

/// The loop shape of a value: [all but the last dim, the last dim].
pub fn loop_shape(g: &Graph, v: Value) -> (usize, usize) {
    let d = dims(g, v);
    match d.split_last() {
        None => (1, 1),
        Some((last, rest)) => (rest.iter().product(), *last),
    }
}

/// How a loop over `out`'s shape can read `x` broadcast to it, if it can.
pub fn broadcast_access(g: &Graph, x: Value, out: Value) -> Option<Access> {
    let (rows, cols) = loop_shape(g, out);
    let xs = dims(g, x);
    let n = numel(g, x);
    let os = dims(g, out);
    if n == 1 {
        return Some(Access::Scalar);
    }
    if n == rows * cols && strip_ones(&xs) == strip_ones(&os) {
        return Some(Access::Full);
    }
    // A row vector: x is [..1.., cols] aligned with the last dim.
    if n == cols && xs.last() == Some(&cols) {
        return Some(Access::Row);
    }
    // A column vector: x is out's shape with the last dim 1.
    if n == rows && xs.len() == os.len() && xs.last() == Some(&1) && xs[..xs.len() - 1] == os[..os.len() - 1] {
        return Some(Access::Col);
    }
    // A run of middle dims [p, q) equal to out's, 1 elsewhere (the last dim included).
    let r = os.len();
    if xs.len() <= r && r >= 2 {
        let xa: Vec<usize> = std::iter::repeat_n(1, r - xs.len()).chain(xs.iter().copied()).collect();
        let p = xa.iter().position(|&d| d != 1)?;
        let q = xa.iter().rposition(|&d| d != 1)? + 1;
        if q < r && (p..q).all(|i| xa[i] == os[i]) {
            return Some(Access::Chan { div: os[q..r - 1].iter().product(), modulo: os[p..q].iter().product() });
        }
        // Out's shape but for one run of dims [p, q) before the last, which x repeats.
        // Only for rows of 32 or more: the row-by-row loop costs a division per row and
        // a scalar tail, which on the CNN's 7- and 14-wide pooled rows made the kernels
        // 3x slower than copying the broadcast first.
        let bcast: Vec<usize> = (0..r).filter(|&i| xa[i] != os[i]).collect();
        if let (Some(&p), Some(&last), true) = (bcast.first(), bcast.last(), cols >= 32) {
            let q = last + 1;
            if q < r && bcast.len() == q - p && bcast.iter().all(|&i| xa[i] == 1) {
                return Some(Access::Rows {
                    div: os[p..r - 1].iter().product(),
                    modulo: os[q..r - 1].iter().product(),
                });
            }
        }
    }
    None
}

/// How a loop of `cols` columns reads `x` broadcast to `v` (`broadcast_access`) when the
/// loop is `v`'s loop regrouped: `cols` is a multiple f of `v`'s last dim, so a loop row
/// is f of `v`'s rows (an epilogue over a GEMM's [O, OH·OW] result for a value of
/// [N, O, OH, OW]). Element-for-element and scalar reads stay; a channel read stays
/// per row when its divisor is a multiple of f; other patterns have no such form.
pub fn regrouped_access(g: &Graph, x: Value, v: Value, cols: usize) -> Option<Access> {
    let a = broadcast_access(g, x, v)?;
    let own = loop_shape(g, v).1;
    if own == cols {
        return Some(a);
    }
    if own == 0 || !cols.is_multiple_of(own) {
        return None;
    }
    let f = cols / own;
    match a {
        Access::Full | Access::Scalar => Some(a),
        Access::Chan { div, modulo } if div % f == 0 => Some(Access::Chan { div: div / f, modulo }),
        _ => None,
    }
}

fn strip_ones(s: &[usize]) -> Vec<usize> {
    s.iter().copied().filter(|&d| d != 1).collect()
}

/// Whether `v` is a slice of the last dim with step 1 of an f32 tensor, which a loop can
/// read in place (element (r, c) is the source's (r, start + c)).
pub fn fusible_slice(g: &Graph, v: Value) -> bool {
    match g.nodes[v].op {
        Op::Slice { axis, step: 1, .. } => {
            let rank = g.ty(v).rank();
            rank >= 1 && axis as usize == rank - 1 && g.ty(v).dtype == crate::ir::DType::F32
        }
        _ => false,
    }
}

/// A reduction of `x` over `axes` as [outer, red, inner] (x's dims before, over and after
/// the reduced ones), when the axes are one contiguous run.
pub(super) fn reduce_dims(g: &Graph, x: Value, axes: &[u32]) -> Option<(usize, usize, usize)> {
    let xs = dims(g, x);
    let (&first, &last) = (axes.first()?, axes.last()?);
    let (a, b) = (first as usize, last as usize + 1);
    if !axes.windows(2).all(|w| w[1] == w[0] + 1) || b > xs.len() {
        return None;
    }
    Some((xs[..a].iter().product(), xs[a..b].iter().product(), xs[b..].iter().product()))
}

/// Whether `t` transposes exactly the last two dims.
pub(super) fn swaps_last_two(perm: &[u32]) -> bool {
    let r = perm.len();
    r >= 2
        && perm[r - 2] as usize == r - 1
        && perm[r - 1] as usize == r - 2
        && perm[..r - 2].iter().enumerate().all(|(i, &p)| p as usize == i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::testing::Builder;
    use crate::ir::ReduceOp;

    #[test]
    fn loop_shapes_are_all_but_the_last_dim_by_the_last() {
        let mut b = Builder::new();
        let x = b.input("x", &[2, 3, 4]);
        let s = b.input("s", &[]);
        assert_eq!(loop_shape(&b.g, x), (6, 4));
        assert_eq!(loop_shape(&b.g, s), (1, 1));
        assert_eq!((numel(&b.g, x), dims(&b.g, x)), (24, vec![2, 3, 4]));
    }

    #[test]
    fn broadcasts_read_as_scalars_rows_columns_and_channels() {
        let mut b = Builder::new();
        let out = b.input("out", &[4, 8]);
        let cases = [
            (b.input("one", &[1]), Some(Access::Scalar)),
            (b.input("full", &[1, 4, 8]), Some(Access::Full)),
            (b.input("row", &[8]), Some(Access::Row)),
            (b.input("col", &[4, 1]), Some(Access::Col)),
        ];
        for (x, want) in cases {
            assert_eq!(broadcast_access(&b.g, x, out), want, "{}", b.g.inputs[x.as_u32() as usize].name);
        }
        // A channel bias [3, 1, 1] over [2, 3, 4, 5]: row r reads element (r / 4) % 3.
        let image = b.input("image", &[2, 3, 4, 5]);
        let bias = b.input("bias", &[3, 1, 1]);
        assert_eq!(broadcast_access(&b.g, bias, image), Some(Access::Chan { div: 4, modulo: 3 }));
    }

    #[test]
    fn rows_repeated_over_middle_dims_need_rows_of_32() {
        let mut b = Builder::new();
        let wide = b.input("wide", &[2, 3, 32]);
        let wide_max = b.input("wide_max", &[2, 1, 32]);
        assert_eq!(broadcast_access(&b.g, wide_max, wide), Some(Access::Rows { div: 3, modulo: 1 }));
        let narrow = b.input("narrow", &[2, 3, 8]);
        let narrow_max = b.input("narrow_max", &[2, 1, 8]);
        assert_eq!(broadcast_access(&b.g, narrow_max, narrow), None);
    }

    #[test]
    fn regrouped_loops_keep_full_scalar_and_divisible_channel_reads() {
        let mut b = Builder::new();
        let v = b.input("v", &[2, 3, 4, 5]);
        let bias = b.input("bias", &[3, 1, 1]);
        let full = b.input("full", &[2, 3, 4, 5]);
        let row = b.input("row", &[5]);
        // Rows of 20 (4 of v's rows of 5): the channel changes every row.
        assert_eq!(regrouped_access(&b.g, bias, v, 20), Some(Access::Chan { div: 1, modulo: 3 }));
        assert_eq!(regrouped_access(&b.g, full, v, 20), Some(Access::Full));
        assert_eq!(regrouped_access(&b.g, row, v, 20), None);
        assert_eq!(regrouped_access(&b.g, bias, v, 5), Some(Access::Chan { div: 4, modulo: 3 }));
        assert_eq!(regrouped_access(&b.g, bias, v, 7), None);
    }

    #[test]
    fn slices_of_the_last_dim_are_fusible() {
        let mut b = Builder::new();
        let x = b.input("x", &[4, 8]);
        let last = b.op(Op::Slice { axis: 1, start: 2, end: 6, step: 1 }, &[x]);
        let first = b.op(Op::Slice { axis: 0, start: 0, end: 2, step: 1 }, &[x]);
        let strided = b.op(Op::Slice { axis: 1, start: 0, end: 8, step: 2 }, &[x]);
        assert!(fusible_slice(&b.g, last));
        assert!(!fusible_slice(&b.g, first));
        assert!(!fusible_slice(&b.g, strided));
        let r = b.reduce(ReduceOp::Sum, x, &[1]);
        assert!(!fusible_slice(&b.g, r));
    }

    #[test]
    fn reductions_of_one_run_of_axes_and_last_two_swaps() {
        let mut b = Builder::new();
        let x = b.input("x", &[2, 3, 4]);
        assert_eq!(reduce_dims(&b.g, x, &[1]), Some((2, 3, 4)));
        assert_eq!(reduce_dims(&b.g, x, &[1, 2]), Some((2, 12, 1)));
        assert_eq!(reduce_dims(&b.g, x, &[0, 2]), None);
        assert!(swaps_last_two(&[0, 2, 1]));
        assert!(swaps_last_two(&[1, 0]));
        assert!(!swaps_last_two(&[1, 0, 2]));
        assert!(!swaps_last_two(&[0]));
        assert!(is_elementwise(&Op::Select) && !is_elementwise(&Op::MatMul));
    }
}
