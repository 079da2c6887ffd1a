//! Fusion: a concrete graph (every dim bound) to an ordered list of kernels.
//!
//! Every value either gets a buffer (it is *materialized*) or is computed inside the
//! loop of the kernel that needs it (*fused*). Elementwise ops, constants and the
//! broadcasts whose access pattern a loop can express (scalar, a row vector repeated
//! over rows, a column repeated over columns) are fused into their consumers when those
//! are elementwise too; a value with several users, an output, an update, or the input
//! of a matmul, reduction, reshape or data-movement op is materialized. A slice of the
//! last dim (step 1) read only by elementwise ops is fused too: the loop reads its
//! source through a row stride (an LSTM's gate slices). Reshapes and
//! `stop_gradient` are views: they share their input's buffer. A transpose of the last
//! two dims feeding a matmul costs nothing: the GEMM reads it through strides.

use crate::ir::{BinaryOp, Graph, Op, ReduceOp, UnaryOp, Value};

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

fn is_elementwise(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Fill(_) | Op::DimValue(_))
}

fn numel(g: &Graph, v: Value) -> usize {
    g.ty(v).shape.iter().map(|d| d.as_const().unwrap_or(0).max(0) as usize).product()
}

fn dims(g: &Graph, v: Value) -> Vec<usize> {
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
fn reduce_dims(g: &Graph, x: Value, axes: &[u32]) -> Option<(usize, usize, usize)> {
    let xs = dims(g, x);
    let (&first, &last) = (axes.first()?, axes.last()?);
    let (a, b) = (first as usize, last as usize + 1);
    if !axes.windows(2).all(|w| w[1] == w[0] + 1) || b > xs.len() {
        return None;
    }
    Some((xs[..a].iter().product(), xs[a..b].iter().product(), xs[b..].iter().product()))
}

/// Whether `t` transposes exactly the last two dims.
fn swaps_last_two(perm: &[u32]) -> bool {
    let r = perm.len();
    r >= 2
        && perm[r - 2] as usize == r - 1
        && perm[r - 1] as usize == r - 2
        && perm[..r - 2].iter().enumerate().all(|(i, &p)| p as usize == i)
}

/// Groups a concrete graph into kernels.
/// Choices of `fuse_with` that are off by default.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Run each optimizer update as the epilogue of its weight gradient's GEMM
    /// (`tile_epilogues`). Off by default: on the MLP workload (one thread, AVX-512
    /// machine) the fused GEMM and update took about 10% longer than the two kernels
    /// apart (Adam's update is bound by its square roots and divisions in 4-lane
    /// vectors, which fusion does not hide, and runs once per micro-tile). Also computes
    /// a gradient modified before its update (weight decay, clipping by value) inside
    /// the update (`sink_into_updates`), so that the update reads the product itself.
    pub updates_in_epilogues: bool,
}

/// `fuse_with` at the default options.
pub fn fuse(g: &Graph) -> Result<Schedule, String> {
    fuse_with(g, &Options::default())
}

/// Fuses a concrete graph into its kernels.
pub fn fuse_with(g: &Graph, opts: &Options) -> Result<Schedule, String> {
    let n = g.len();
    let idx = |v: Value| v.as_u32() as usize;
    let mut users: Vec<Vec<Value>> = vec![Vec::new(); n];
    for (v, node) in g.nodes.iter() {
        for a in &node.args {
            if !users[idx(*a)].contains(&v) {
                users[idx(*a)].push(v);
            }
        }
    }
    let mut pinned = vec![false; n];
    for (_, v) in &g.outputs {
        pinned[idx(*v)] = true;
    }
    if let Some(l) = g.loss {
        pinned[idx(l)] = true;
    }
    for u in g.params.iter().filter_map(|p| p.update).chain(g.states.iter().filter_map(|s| s.update)) {
        pinned[idx(u)] = true;
    }
    // Decide from the last node backwards, so a node's users are decided first;
    // `force` marks values a decided user needs in a buffer.
    let mut mat = vec![false; n];
    let mut force = vec![false; n];
    let is_const = |v: Value| matches!(g.nodes[v].op, Op::Fill(_) | Op::DimValue(_));
    // An im2col read only by a transpose, and a transpose read only by a col2im, are
    // folded into that user: its host kernel composes the two index maps. An im2col
    // without padding read only by a reduction over its window axes (max or average
    // pooling) is folded into a window reduction that reads the image (`Kernel::Pool`).
    let folds_into_user = |v: Value| {
        let sole =
            |want: fn(&Op) -> bool| users[idx(v)].len() == 1 && want(&g.nodes[users[idx(v)][0]].op) && !pinned[idx(v)];
        match g.nodes[v].op {
            Op::Im2col(w)
                if w.pad_h == 0
                    && w.pad_w == 0
                    && sole(|o| matches!(o, Op::Reduce { axes, .. } if axes[..] == [2, 3])) =>
            {
                true
            }
            Op::Im2col(_) => sole(|o| matches!(o, Op::Transpose { .. })),
            Op::Transpose { .. } => sole(|o| matches!(o, Op::Col2im { .. })),
            _ => false,
        }
    };
    for (v, node) in g.nodes.iter().rev() {
        let i = idx(v);
        let same_shape_ew = |u: Value| is_elementwise(&g.nodes[u].op) && g.ty(u).shape == g.ty(v).shape;
        let m = match &node.op {
            Op::Input(_) | Op::Param(_) | Op::State(_) => true,
            Op::Fill(_) | Op::DimValue(_) | Op::Unary(_) | Op::Binary(_) | Op::Select => {
                let u_ok = |u: Value| {
                    same_shape_ew(u) || (is_const(v) && matches!(g.nodes[u].op, Op::Broadcast { .. }) && !mat[idx(u)])
                };
                // Constants are recomputed in every loop that uses them (they cost
                // nothing); other values with several users are stored once.
                let users_ok = if is_const(v) { !users[i].is_empty() } else { users[i].len() == 1 };
                pinned[i] || force[i] || !users_ok || !users[i].iter().all(|&u| u_ok(u))
            }
            Op::Broadcast { .. } => {
                pinned[i]
                    || force[i]
                    || users[i].is_empty()
                    || !users[i].iter().all(|&u| same_shape_ew(u))
                    || broadcast_access(g, node.args[0], v).is_none()
            }
            Op::Im2col(_) | Op::Transpose { .. } if folds_into_user(v) => false,
            Op::Slice { .. } if fusible_slice(g, v) => {
                pinned[i] || force[i] || users[i].is_empty() || !users[i].iter().all(|&u| same_shape_ew(u))
            }
            _ => true,
        };
        mat[i] = m;
        match &node.op {
            Op::Fill(_) | Op::DimValue(_) | Op::Unary(_) | Op::Binary(_) | Op::Select => {}
            Op::Broadcast { .. } => {
                let x = node.args[0];
                if !is_const(x) {
                    force[idx(x)] = true;
                }
            }
            _ => {
                for &a in &node.args {
                    let folded = folds_into_user(a)
                        && matches!(
                            (&node.op, &g.nodes[a].op),
                            (Op::Transpose { .. } | Op::Reduce { .. }, Op::Im2col(_))
                                | (Op::Col2im { .. }, Op::Transpose { .. })
                        );
                    if !folded {
                        force[idx(a)] = true;
                    }
                }
            }
        }
    }
    // A value that costs one arithmetic op on stored values (or constants) and that only
    // same-shape elementwise ops read is recomputed in each of their loops instead of
    // stored: GELU's x/2 and x/√2, and a dense layer's pre-activation x W + b, which its
    // ReLU's gradient reads again in the backward pass, are not written out. Latest
    // first, and never a value that such a recomputed value reads.
    let mut recomputed = vec![false; n];
    for (v, node) in g.nodes.iter().rev() {
        let i = idx(v);
        let cheap = match &node.op {
            Op::Unary(u) => matches!(u, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign),
            Op::Binary(b) => !matches!(b, BinaryOp::Pow),
            Op::Select => true,
            _ => false,
        };
        let stored_or_constant = |a: Value| match g.nodes[a].op {
            Op::Broadcast { .. } => !mat[idx(a)] && (mat[idx(g.nodes[a].args[0])] || is_const(g.nodes[a].args[0])),
            _ => mat[idx(a)] || is_const(a),
        };
        if cheap
            && mat[i]
            && !pinned[i]
            && users[i].len() >= 2
            && users[i].iter().all(|&u| {
                matches!(g.nodes[u].op, Op::Unary(_) | Op::Binary(_) | Op::Select) && g.ty(u).shape == g.ty(v).shape
            })
            && node.args.iter().all(|&a| stored_or_constant(a))
            && !users[i].iter().any(|&u| recomputed[idx(u)])
        {
            mat[i] = false;
            recomputed[i] = true;
        }
    }
    // A reduction computes a producer that only it reads inside its own loop: softmax's
    // exp, a squared deviation, a loss's per-element terms are not stored.
    for (v, node) in g.nodes.iter() {
        if let Op::Reduce { axes, .. } = &node.op {
            let x = node.args[0];
            if mat[idx(v)]
                && matches!(g.nodes[x].op, Op::Unary(_) | Op::Binary(_) | Op::Select)
                && users[idx(x)] == [v]
                && !pinned[idx(x)]
                && reduce_dims(g, x, axes).is_some_and(|(_, red, inner)| {
                    let cols = loop_shape(g, x).1;
                    let mut m = mat.clone();
                    m[idx(x)] = false;
                    flat_only_in(g, &m, x) || (inner == 1 && red == cols) || inner == cols
                })
            {
                mat[idx(x)] = false;
            }
        }
    }
    // Views share storage; transposes feeding only matmuls are folded into strides.
    let mut storage: Vec<Value> = (0..n as u32).map(Value::from_u32).collect();
    let mut view_offset = vec![0; n];
    let mut kernels = Vec::new();
    let mut folded_t = vec![false; n];
    // A matrix read transposed as the right operand of products with a long
    // contraction is copied once instead: the gemm crate reads a k-contiguous right
    // operand without packing it, about 3x slower at the LSTM's 32x512x128 (51 against
    // 139 GFLOP/s) and 1.5x at the MLP's 128x256x512 (106 against 154). The copy is one
    // pass over the matrix, but often from L3 (the MLP's 512x256 W2ᵀ: 35 us in L2, 89 us
    // inside a step, where the product saves 36 us), so `copy_pays` asks for k >= 64
    // and, over all the products that read the copy, at least 256 rows of results per
    // matrix (the LSTM's 20 steps of 32 rows; not a convolution's per-image products).
    let copy_pays = |v: Value| {
        let d = dims(g, v);
        let k = d[d.len() - 2];
        let rows: usize = users[idx(v)]
            .iter()
            .filter(|&&u| matches!(g.nodes[u].op, Op::MatMul) && g.nodes[u].args[1] == v)
            .map(|&u| {
                // Rows of one product: a batch of products reads a different matrix each.
                let du = dims(g, u);
                du[du.len() - 2]
            })
            .sum();
        k >= 64 && rows >= 256
    };
    for (v, node) in g.nodes.iter() {
        if let Op::Transpose { perm } = &node.op {
            if swaps_last_two(perm)
                && !copy_pays(v)
                && !pinned[idx(v)]
                && !users[idx(v)].is_empty()
                && users[idx(v)].iter().all(|&u| matches!(g.nodes[u].op, Op::MatMul))
            {
                folded_t[idx(v)] = true;
            }
        }
    }
    // A matrix broadcast over leading batch dims and read only by matmuls is read in
    // place, with a zero batch stride.
    let mut folded_b = vec![false; n];
    for (v, node) in g.nodes.iter() {
        if let Op::Broadcast { shape } = &node.op {
            let x = node.args[0];
            let xs = &g.ty(x).shape;
            if xs.len() == 2
                && shape.len() > 2
                && shape[shape.len() - 2..] == xs[..]
                && mat[idx(x)]
                && !pinned[idx(v)]
                && !users[idx(v)].is_empty()
                && users[idx(v)].iter().all(|&u| matches!(g.nodes[u].op, Op::MatMul))
            {
                folded_b[idx(v)] = true;
            }
        }
    }
    for (v, node) in g.nodes.iter() {
        let i = idx(v);
        if !mat[i] || folded_t[i] || folded_b[i] {
            continue;
        }
        match &node.op {
            Op::Input(_) | Op::Param(_) | Op::State(_) => {}
            Op::Reshape { .. } | Op::StopGradient => {
                storage[i] = storage[idx(node.args[0])];
                view_offset[i] = view_offset[idx(node.args[0])];
            }
            // A slice that is one contiguous block of its source is a view of it (an
            // RNN's time step of the time-major input projection).
            Op::Slice { axis, start, step: 1, .. } if dims(g, v)[..*axis as usize].iter().all(|&d| d == 1) => {
                let x = node.args[0];
                let inner: usize = dims(g, x)[*axis as usize + 1..].iter().product();
                storage[i] = storage[idx(x)];
                view_offset[i] = view_offset[idx(x)] + *start as usize * inner;
            }
            Op::Fill(_) | Op::DimValue(_) | Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Broadcast { .. }
                if !matches!(node.op, Op::Broadcast { .. }) || broadcast_access(g, node.args[0], v).is_some() =>
            {
                let (rows, cols) = loop_shape(g, v);
                kernels.push(Kernel::Elementwise { out: v, rows, cols, also: Vec::new() });
            }
            // The reduction of a folded im2col: a window reduction over the image.
            Op::Reduce { op, .. } if matches!(g.nodes[node.args[0]].op, Op::Im2col(_)) && !mat[idx(node.args[0])] => {
                let Op::Im2col(window) = g.nodes[node.args[0]].op else { continue };
                let x = g.nodes[node.args[0]].args[0];
                let d = dims(g, x);
                kernels.push(Kernel::Pool { out: v, x, window, op: *op, nc: d[0] * d[1], h: d[2], w: d[3] });
            }
            Op::Reduce { op, axes } => match reduce_dims(g, node.args[0], axes) {
                Some((outer, red, inner)) => {
                    kernels.push(Kernel::Reduce { out: v, x: node.args[0], op: *op, outer, red, inner })
                }
                None => kernels.push(Kernel::Host { out: v }),
            },
            Op::MatMul => {
                let (mut a, mut b) = (node.args[0], node.args[1]);
                let (mut a_t, mut b_t) = (false, false);
                let (a_shared, b_shared) = (folded_b[idx(a)], folded_b[idx(b)]);
                if a_shared {
                    a = g.nodes[a].args[0];
                }
                if b_shared {
                    b = g.nodes[b].args[0];
                }
                if folded_t[idx(a)] {
                    a = g.nodes[a].args[0];
                    a_t = true;
                }
                if folded_t[idx(b)] {
                    b = g.nodes[b].args[0];
                    b_t = true;
                }
                let s = dims(g, v);
                let r = s.len();
                let k = dims(g, node.args[0])[r - 1];
                kernels.push(Kernel::MatMul {
                    out: v,
                    a,
                    b,
                    a_t,
                    b_t,
                    a_shared,
                    b_shared,
                    batch: s[..r - 2].iter().product(),
                    m: s[r - 2],
                    k,
                    n: s[r - 1],
                    scale: 1.0,
                    accumulate: false,
                    epilogue: None,
                });
            }
            // (A transpose of a folded im2col stays a host gather that composes the maps.)
            Op::Transpose { perm } if swaps_last_two(perm) && mat[idx(node.args[0])] => {
                let d = dims(g, node.args[0]);
                let r = d.len();
                kernels.push(Kernel::Transpose {
                    out: v,
                    x: node.args[0],
                    batch: d[..r - 2].iter().product(),
                    rows: d[r - 2],
                    cols: d[r - 1],
                });
            }
            // A transpose that keeps the last dim (attention's head split and merge): whole
            // rows are copied. (Others stay host gathers: element by element, nested JIT
            // loops ran 1.7x slower than the gather's precomputed map.)
            Op::Transpose { perm }
                if perm.last().map(|&p| p as usize + 1) == Some(perm.len()) && mat[idx(node.args[0])] =>
            {
                let xd = dims(g, node.args[0]);
                let mut xs = vec![1usize; xd.len()];
                for k in (0..xd.len().saturating_sub(1)).rev() {
                    xs[k] = xs[k + 1] * xd[k + 1];
                }
                let od = dims(g, v);
                let r = od.len();
                kernels.push(Kernel::Permute {
                    out: v,
                    x: node.args[0],
                    dims: od[..r - 1].to_vec(),
                    src_strides: perm[..r - 1].iter().map(|&p| xs[p as usize]).collect(),
                    row: od[r - 1],
                });
            }
            // Windows of images, or their sum back into the images (the adjoint); a
            // col2im of a folded transpose stays a host scatter that composes the maps.
            Op::Im2col(window) | Op::Col2im { window, .. } if mat[idx(node.args[0])] => {
                let adjoint = matches!(node.op, Op::Col2im { .. });
                let d = dims(g, if adjoint { v } else { node.args[0] });
                kernels.push(Kernel::Window {
                    out: v,
                    x: node.args[0],
                    window: *window,
                    adjoint,
                    nc: d[0] * d[1],
                    h: d[2],
                    w: d[3],
                });
            }
            _ => kernels.push(Kernel::Host { out: v }),
        }
    }
    // Folded transposes read their source: it must be materialized.
    for (v, node) in g.nodes.iter() {
        if folded_t[idx(v)] && !mat[idx(node.args[0])] {
            return Err(format!("internal error: {v} folds a transpose of an unmaterialized value"));
        }
    }
    let mut sched = Schedule { kernels, materialized: mat, storage, view_offset, row_stride: vec![0; n] };
    gemm_epilogues(g, &mut sched, &users, &pinned);
    merge_chains(g, &mut sched);
    elide_concats(g, &mut sched, &pinned);
    if opts.updates_in_epilogues {
        sink_into_updates(g, &mut sched, &users, &pinned);
    }
    tile_epilogues(g, &mut sched, opts.updates_in_epilogues);
    row_groups(g, &mut sched);
    early_updates(g, &mut sched);
    buckets(g, &mut sched);
    Ok(sched)
}

/// Folds into a GEMM the one elementwise op that reads its product, when the gemm crate
/// can apply it as it stores the result (`dst = alpha * dst + beta * a @ b`):
/// - a scale, `p * c`, `c * p` or `p / c` for a constant c (attention's 1/√d): beta;
/// - an addend, `p + c`, `c + p` or `c - p` (beta = -1) for a materialized c of the same
///   shape that nothing else reads and whose buffer region no other value shares with a
///   later reader (an RNN step's `x W + h U`: the input projection of step t is
///   read only here): the product is added into c's buffer, alpha = 1, and the sum
///   becomes a view of c.
///
/// The fused kernel runs where the elementwise one ran, after the addend is computed.
fn gemm_epilogues(g: &Graph, s: &mut Schedule, users: &[Vec<Value>], pinned: &[bool]) {
    let idx = |v: Value| v.as_u32() as usize;
    let range = |s: &Schedule, v: Value| (s.view_offset[idx(v)], s.view_offset[idx(v)] + numel(g, v));
    // Every (reader, operand) pair by the operand's buffer, kept up to date as folds
    // move sums into their addends' buffers, so that `exclusive` looks at the readers of
    // one buffer rather than at the whole graph (which made this quadratic in the
    // length of an unrolled loop).
    let mut by_root: Vec<Vec<(Value, Value)>> = vec![Vec::new(); g.nodes.len()];
    for (n, node) in g.nodes.iter() {
        for &a in &node.args {
            by_root[idx(s.storage[idx(a)])].push((n, a));
        }
    }
    // Whether the product may be added into `c`'s region: `user` is its only reader, and
    // no other value in the same buffer that overlaps it is read by anything.
    let exclusive = |s: &Schedule, by_root: &[Vec<(Value, Value)>], c: Value, user: Value| {
        let root = s.storage[idx(c)];
        if pinned[idx(c)]
            || pinned[idx(root)]
            || matches!(g.nodes[root].op, Op::Input(_) | Op::Param(_) | Op::State(_))
            || !s.materialized[idx(c)]
        {
            return false;
        }
        let (lo, hi) = range(s, c);
        by_root[idx(root)].iter().all(|&(n, a)| {
            // A view of its operand reads nothing itself.
            let is_view = s.materialized[idx(n)] && s.storage[idx(n)] != n;
            if is_view || s.storage[idx(a)] != root {
                return true;
            }
            if a == c {
                return n == user;
            }
            let (alo, ahi) = range(s, a);
            ahi <= lo || hi <= alo
        })
    };
    let mut i = 0;
    while i < s.kernels.len() {
        let Kernel::MatMul { out: p, .. } = s.kernels[i] else {
            i += 1;
            continue;
        };
        let fold = (|| {
            let &[v] = users[idx(p)].as_slice() else { return None };
            if pinned[idx(p)] || !s.materialized[idx(v)] || g.ty(v).shape != g.ty(p).shape {
                return None;
            }
            let node = &g.nodes[v];
            let other = |k: usize| node.args[1 - k];
            let at = node.args.iter().position(|&a| a == p)?;
            let constant = |c: Value| match g.nodes[c].op {
                Op::Fill(x) if !s.materialized[idx(c)] => Some(x as f32),
                _ => None,
            };
            let (scale, addend) = match node.op {
                Op::Binary(BinaryOp::Mul) => (constant(other(at))?, None),
                Op::Binary(BinaryOp::Div) if at == 0 => (1.0 / constant(other(at))?, None),
                Op::Binary(BinaryOp::Add) => (1.0, Some(other(at))),
                Op::Binary(BinaryOp::Sub) if at == 1 => (-1.0, Some(other(at))),
                _ => return None,
            };
            if let Some(c) = addend {
                if pinned[idx(v)] || g.ty(c).shape != g.ty(v).shape || c == p || !exclusive(s, &by_root, c, v) {
                    return None;
                }
            }
            // The elementwise kernel that computes exactly v.
            let j = s
                .kernels
                .iter()
                .position(|k| matches!(k, Kernel::Elementwise { out, also, .. } if *out == v && also.is_empty()))?;
            Some((v, j, scale, addend))
        })();
        let Some((v, j, sc, addend)) = fold else {
            i += 1;
            continue;
        };
        let Kernel::MatMul { out, scale, accumulate, .. } = &mut s.kernels[i] else { unreachable!() };
        *out = v;
        *scale = sc;
        *accumulate = addend.is_some();
        if let Some(c) = addend {
            let (from, to) = (idx(s.storage[idx(v)]), idx(s.storage[idx(c)]));
            if from != to {
                let (moved, kept) = by_root[from].iter().partition(|&&(_, a)| a == v);
                by_root[from] = kept;
                by_root[to].extend::<Vec<_>>(moved);
            }
            s.storage[idx(v)] = s.storage[idx(c)];
            s.view_offset[idx(v)] = s.view_offset[idx(c)];
        }
        s.materialized[idx(p)] = false;
        let k = s.kernels.remove(i);
        s.kernels[j - 1] = k;
    }
}

/// The materialized values a kernel reads.
pub fn reads(g: &Graph, s: &Schedule, k: &Kernel) -> Vec<Value> {
    if let Kernel::Rows { parts, .. } = k {
        let mut out: Vec<Value> = Vec::new();
        for r in parts.iter().flat_map(|p| reads(g, s, p)) {
            if !out.contains(&r) {
                out.push(r);
            }
        }
        return out;
    }
    let mut out = Vec::new();
    // A kernel of a long fused chain reads many values: a set keeps this linear.
    let mut seen = std::collections::HashSet::new();
    let mut add = |v: Value| {
        let r = s.storage[v.as_u32() as usize];
        if seen.insert(r) {
            out.push(r);
        }
    };
    let computed = match k {
        Kernel::Elementwise { .. } => k.outs(),
        // A reduction of a fused producer reads what the producer's loop reads.
        Kernel::Reduce { x, .. } if !s.materialized[x.as_u32() as usize] => vec![*x],
        _ => Vec::new(),
    };
    for o in computed {
        for v in fused_nodes(g, s, o) {
            for &a in &g.nodes[v].args {
                if s.materialized[a.as_u32() as usize] {
                    add(a);
                }
            }
        }
    }
    match k {
        Kernel::Elementwise { .. } => {}
        Kernel::Reduce { x, .. } if !s.materialized[x.as_u32() as usize] => {}
        Kernel::Reduce { x, .. }
        | Kernel::Transpose { x, .. }
        | Kernel::Permute { x, .. }
        | Kernel::Window { x, .. }
        | Kernel::Pool { x, .. } => add(*x),
        Kernel::MatMul { a, b, epilogue, .. } => {
            add(*a);
            add(*b);
            for r in epilogue.iter().flat_map(|e| reads(g, s, e)) {
                add(r);
            }
        }
        Kernel::Rows { .. } => {}
        Kernel::Collective { values, wait, .. } => {
            for &v in values {
                if *wait {
                    add(v);
                } else {
                    add(g.nodes[v].args[0]);
                }
            }
        }
        Kernel::Host { out: o } => {
            for &a in &g.nodes[*o].args {
                if s.materialized[a.as_u32() as usize] {
                    add(a);
                } else {
                    // An operand folded into this kernel (im2col, transpose): its
                    // own operands are what is read.
                    for &b in &g.nodes[a].args {
                        add(b);
                    }
                }
            }
        }
    }
    out
}

/// An elementwise kernel over a product's [batch x m, n] (or over a view of it whose
/// loop regroups to it: `regrouped_access`) that reads the product only at its own
/// position becomes the product's epilogue: the GEMM runs it on each block of the result
/// it finishes, while the block is in L1 (a dense layer's bias and ReLU, the ReLU's
/// derivative times the incoming gradient). The kernel moves up to the product, so
/// everything else it reads must be computed before it. Products that accumulate into
/// an addend stay apart.
///
/// With `updates` (`Options::updates_in_epilogues`), a kernel that updates parameters
/// or states (the optimizer's update, with its momentum and variance states) becomes
/// the epilogue of the product of its gradient
/// (a weight gradient `xᵀ dy`): each block of the gradient updates the parameter while
/// it is in L1. The product then moves down to the update instead (every reader of the
/// old parameter, such as the backward's `dy Wᵀ`, stays before it; `early_updates`
/// moves the pair back up to just after the last of those), so this needs a product of
/// one matrix that no kernel in between reads or overwrites, and operands that are not
/// what the update replaces (later blocks still read them while the planner writes the
/// update in place). An update that reads a value computed after every gradient
/// (clipping by the global norm) is never fused: that value's kernel reads this
/// gradient in between.
fn tile_epilogues(g: &Graph, s: &mut Schedule, updates: bool) {
    use std::collections::HashMap;
    let idx = |v: Value| v.as_u32() as usize;
    // The parameter or state each update value replaces.
    let replaces: HashMap<Value, Value> = g
        .params
        .iter()
        .filter_map(|p| p.update.map(|u| (u, p.value)))
        .chain(g.states.iter().filter_map(|st| st.update.map(|u| (u, st.value))))
        .collect();
    // Per kernel, what it reads (roots), computed once; and per root, how many kernels
    // from the current one on write into it (a buffer is ready for kernel i when none
    // does), kept as `i` advances, so each check is a lookup rather than a scan.
    let mut read_of: Vec<Vec<Value>> = s.kernels.iter().map(|k| reads(g, s, k)).collect();
    let mut writers: HashMap<Value, usize> = HashMap::new();
    for k in &s.kernels {
        for o in k.outs() {
            *writers.entry(s.storage[idx(o)]).or_default() += 1;
        }
    }
    let mut i = 0;
    while i < s.kernels.len() {
        let step_past = |s: &Schedule, writers: &mut HashMap<Value, usize>, i: usize| {
            for o in s.kernels[i].outs() {
                if let Some(n) = writers.get_mut(&s.storage[idx(o)]) {
                    *n = n.saturating_sub(1);
                }
            }
        };
        let Kernel::MatMul { out: p, a, b, batch, m, n, accumulate: false, epilogue: None, .. } = s.kernels[i] else {
            step_past(s, &mut writers, i);
            i += 1;
            continue;
        };
        if s.storage[idx(p)] != p || s.row_stride[idx(p)] != 0 {
            step_past(s, &mut writers, i);
            i += 1;
            continue;
        }
        // Whether every kernel that writes into buffer `r` (a value, or the pieces of an
        // elided concat computed in place) runs before the product.
        let ready = |r: Value| writers.get(&r).is_none_or(|&n| n == 0);
        let candidate = (i + 1..s.kernels.len()).find(|&j| {
            let k = &s.kernels[j];
            let Kernel::Elementwise { rows, cols, .. } = k else { return false };
            let read = &read_of[j];
            // The kernel's loop, or its loop regrouped to the product's rows (a bias over
            // a convolution's [N, O, OH, OW] view of its [N·O, OH·OW] product): every
            // read must then have a regrouped form.
            let regroup = (*rows, *cols) != (batch * m, n);
            if rows * cols != batch * m * n || n % cols.max(&1) != 0 || !read.contains(&p) {
                return false;
            }
            let olds: Vec<Value> =
                k.outs().iter().filter_map(|o| replaces.get(o)).map(|&v| s.storage[idx(v)]).collect();
            if !olds.is_empty() {
                // An update: the product moves down to it (see above).
                let operands = [s.storage[idx(a)], s.storage[idx(b)]];
                if !updates
                    || batch != 1
                    || operands.iter().any(|r| olds.contains(r))
                    || (i + 1..j).any(|q| {
                        read_of[q].contains(&p)
                            || s.kernels[q].outs().iter().any(|&o| {
                                let r = s.storage[idx(o)];
                                r == p || operands.contains(&r)
                            })
                    })
                {
                    return false;
                }
            }
            if regroup
                && !k.outs().into_iter().all(|o| {
                    s.row_stride[idx(o)] == 0
                        && fused_nodes(g, s, o).into_iter().all(|v| {
                            let node = &g.nodes[v];
                            match node.op {
                                Op::Slice { .. } => false,
                                Op::Broadcast { .. } if s.materialized[idx(node.args[0])] => {
                                    regrouped_access(g, node.args[0], v, n).is_some()
                                }
                                _ => true,
                            }
                        })
                })
            {
                return false;
            }
            // The product (or a view of all of it) is read only element for element, at
            // the loop's position.
            let in_place = k.outs().into_iter().all(|o| {
                fused_nodes(g, s, o).into_iter().all(|v| {
                    let node = &g.nodes[v];
                    node.args.iter().all(|&a| {
                        s.storage[idx(a)] != p
                            || (matches!(node.op, Op::Unary(_) | Op::Binary(_) | Op::Select)
                                && reshapes_of(g, a, p)
                                && s.row_stride[idx(a)] == 0)
                    })
                })
            });
            // What else it reads (but its own outputs) exists before the product runs
            // (before the update, where an update takes the product).
            let own: Vec<Value> = k.outs();
            in_place && (!olds.is_empty() || read.iter().all(|&r| r == p || own.contains(&r) || ready(r)))
        });
        let Some(j) = candidate else {
            step_past(s, &mut writers, i);
            i += 1;
            continue;
        };
        let mut e = s.kernels.remove(j);
        let update = e.outs().iter().any(|o| replaces.contains_key(o));
        if let Kernel::Elementwise { rows, cols, .. } = &mut e {
            (*rows, *cols) = (batch * m, n);
        }
        let e_read = read_of.remove(j);
        if let Kernel::MatMul { epilogue, .. } = &mut s.kernels[i] {
            *epilogue = Some(Box::new(e));
        }
        if update {
            // The product with its update runs where the update ran: the kernels in
            // between come first (the product is read again at its new place).
            let k = s.kernels.remove(i);
            let r = read_of.remove(i);
            s.kernels.insert(j - 1, k);
            read_of.insert(j - 1, r.into_iter().chain(e_read).collect());
            // (Kernel i is now the one after the product: not yet stepped past.)
        } else {
            step_past(s, &mut writers, i);
            i += 1;
        }
    }
}

/// A value computed by an elementwise kernel of its own whose every user is computed
/// in one later update kernel of the same loop (a gradient with weight decay or clipped
/// by value, which Adam's m and v, or Nesterov's buffer and step, both read) is computed
/// inside that kernel instead of stored and read back: the update then reads the
/// gradient's product itself, and can become its epilogue (`tile_epilogues`). It needs
/// every operand read element for element, and nothing in between writing them.
fn sink_into_updates(g: &Graph, s: &mut Schedule, users: &[Vec<Value>], pinned: &[bool]) {
    use std::collections::{HashMap, HashSet};
    let idx = |v: Value| v.as_u32() as usize;
    let updates: HashSet<Value> =
        g.params.iter().filter_map(|p| p.update).chain(g.states.iter().filter_map(|st| st.update)).collect();
    // The kernels that compute each node (their loops', and reductions' fused producers).
    let mut computed_in: HashMap<Value, Vec<usize>> = HashMap::new();
    for (ki, k) in s.kernels.iter().enumerate() {
        let outs = match k {
            Kernel::Elementwise { .. } => k.outs(),
            Kernel::Reduce { x, .. } if !s.materialized[idx(*x)] => vec![*x],
            _ => continue,
        };
        for o in outs {
            for v in fused_nodes(g, s, o) {
                computed_in.entry(v).or_default().push(ki);
            }
        }
    }
    let mut removed = vec![false; s.kernels.len()];
    for e in 0..s.kernels.len() {
        let Kernel::Elementwise { out: o, rows, cols, ref also } = s.kernels[e] else { continue };
        let us = &users[idx(o)];
        if !also.is_empty()
            || pinned[idx(o)]
            || s.storage[idx(o)] != o
            || s.row_stride[idx(o)] != 0
            || us.is_empty()
            || !flat_only(g, s, o)
        {
            continue;
        }
        let Some(&[k]) = computed_in.get(&us[0]).map(|v| v.as_slice()) else { continue };
        let same = |u: &Value| {
            matches!(g.nodes[*u].op, Op::Unary(_) | Op::Binary(_) | Op::Select)
                && g.ty(*u).shape == g.ty(o).shape
                && computed_in.get(u).is_some_and(|ks| ks[..] == [k])
        };
        let into = match &s.kernels[k] {
            Kernel::Elementwise { rows: r, cols: c, .. } => {
                k > e && (*r, *c) == (rows, cols) && s.kernels[k].outs().iter().any(|x| updates.contains(x))
            }
            _ => false,
        };
        if !into || !us.iter().all(same) {
            continue;
        }
        let read: Vec<Value> = reads(g, s, &s.kernels[e]);
        let clobbered = (e + 1..k)
            .filter(|&q| !removed[q])
            .any(|q| s.kernels[q].outs().iter().any(|&x| read.contains(&s.storage[idx(x)])));
        if clobbered {
            continue;
        }
        let nodes = fused_nodes(g, s, o);
        s.materialized[idx(o)] = false;
        removed[e] = true;
        for v in nodes {
            let ks = computed_in.entry(v).or_default();
            ks.retain(|&q| q != e);
            if !ks.contains(&k) {
                ks.push(k);
            }
        }
    }
    let mut i = 0;
    s.kernels.retain(|_| {
        i += 1;
        !removed[i - 1]
    });
}

/// Whether `a` is `p` or reshapes of it (the same elements in the same order; not a
/// value that shares p's buffer, such as a sum accumulated into it).
fn reshapes_of(g: &Graph, mut a: Value, p: Value) -> bool {
    while a != p {
        match g.nodes[a].op {
            Op::Reshape { .. } | Op::StopGradient => a = g.nodes[a].args[0],
            _ => return false,
        }
    }
    true
}

/// Moves each kernel that computes parameter or state updates (an elementwise kernel,
/// or a product whose epilogue is the update) up to just after the last kernel it
/// depends on: the last writer of anything it reads, and the last reader of
/// the values it replaces (so the planner can still update them in place). The update
/// then frees its gradient before later gradients are computed: the MLP's W2 update runs
/// before W1's gradient exists (0.5 MB less arena).
fn early_updates(g: &Graph, s: &mut Schedule) {
    use std::collections::HashMap;
    let idx = |v: Value| v.as_u32() as usize;
    let updated: HashMap<Value, Value> = g
        .params
        .iter()
        .filter_map(|p| p.update.map(|u| (u, p.value)))
        .chain(g.states.iter().filter_map(|st| st.update.map(|u| (u, st.value))))
        .collect();
    // Kernels are placed one by one in their order; an update goes right after the last
    // placed kernel that writes what it reads, or reads what it replaces or writes, and
    // any other kernel at the end. "Last" compares positions in a list that grows in the
    // middle, so each kernel has an order label (gaps of 2^64, halved by an insertion,
    // relabelled when a gap runs out), and each buffer root remembers its last writer
    // and last reader: a kernel costs its own reads and writes, not the list's length.
    let n = s.kernels.len();
    let info: Vec<(Vec<Value>, Vec<Value>)> =
        s.kernels.iter().map(|k| (reads(g, s, k), k.outs().iter().map(|&o| s.storage[idx(o)]).collect())).collect();
    const GAP: u128 = 1 << 64;
    let mut label = vec![0u128; n];
    let mut next: Vec<Option<usize>> = vec![None; n];
    let (mut head, mut tail): (Option<usize>, Option<usize>) = (None, None);
    let mut last_writer: HashMap<Value, usize> = HashMap::new();
    let mut last_reader: HashMap<Value, usize> = HashMap::new();
    let relabel = |label: &mut [u128], next: &[Option<usize>], head: Option<usize>| {
        let mut at = head;
        let mut l = 1u128 << 126;
        while let Some(k) = at {
            label[k] = l;
            l += GAP;
            at = next[k];
        }
    };
    for j in 0..n {
        let k = &s.kernels[j];
        let (read, mine) = &info[j];
        let olds: Vec<Value> = k.outs().iter().filter_map(|u| updated.get(u).copied()).collect();
        // (A product whose epilogue is the update moves with it.)
        let is_update = !olds.is_empty() && matches!(k, Kernel::Elementwise { .. } | Kernel::MatMul { .. });
        let after = if is_update {
            let writers = read.iter().chain(mine).filter_map(|r| last_writer.get(r));
            let readers = olds.iter().chain(mine).filter_map(|r| last_reader.get(r));
            Some(writers.chain(readers).copied().max_by_key(|&q| label[q]))
        } else {
            None
        };
        match after {
            // Not an update: at the end.
            None => {
                label[j] = tail.map_or(1u128 << 126, |t| label[t] + GAP);
                match tail {
                    Some(t) => next[t] = Some(j),
                    None => head = Some(j),
                }
                tail = Some(j);
            }
            // Nothing to wait for: first.
            Some(None) => {
                let front = head.map_or(Some(1u128 << 126), |h| label[h].checked_sub(GAP));
                next[j] = head;
                head = Some(j);
                if tail.is_none() {
                    tail = Some(j);
                }
                match front {
                    Some(l) if l >= GAP => label[j] = l,
                    _ => relabel(&mut label, &next, head),
                }
            }
            Some(Some(a)) => {
                next[j] = next[a];
                next[a] = Some(j);
                if tail == Some(a) {
                    tail = Some(j);
                }
                match next[j] {
                    None => label[j] = label[a] + GAP,
                    Some(b) if label[b] - label[a] >= 2 => label[j] = label[a] + (label[b] - label[a]) / 2,
                    Some(_) => relabel(&mut label, &next, head),
                }
            }
        }
        for &r in mine {
            last_writer.insert(r, j);
        }
        for &r in read {
            let e = last_reader.entry(r).or_insert(j);
            if label[j] > label[*e] {
                *e = j;
            }
        }
    }
    let mut order = Vec::with_capacity(n);
    let mut at = head;
    while let Some(k) = at {
        order.push(k);
        at = next[k];
    }
    let mut slots: Vec<Option<Kernel>> = std::mem::take(&mut s.kernels).into_iter().map(Some).collect();
    s.kernels = order.into_iter().filter_map(|k| slots[k].take()).collect();
}

/// Gradient bytes per allreduce bucket: a bucket's sum starts when its last gradient
/// is written. Smaller buckets start earlier and overlap more of the backward pass, but
/// cost one collective call (and its latency) each.
pub const BUCKET_BYTES: usize = 256 * 1024;

/// Places the collectives of `Op::AllReduce` nodes (a data-parallel step's gradient
/// sums, `dist::comm`). Each sum runs in place in its operand's buffer when the
/// operand (and every value sharing its buffer) is read only by sums; else it gets a
/// buffer of its own that the operand is copied into. The *late* sums (those no other
/// sum depends on: the gradients) are grouped into buckets of about `BUCKET_BYTES` in the
/// order their operands are written; every kernel that depends on a late sum (the
/// optimizer update, clipping) moves after every kernel that does not (the backward
/// pass), keeping its order. A bucket's start runs right after its last operand is
/// written, its wait right before the first kernel that reads one of its sums, so the
/// communication of early buckets overlaps the rest of the backward pass. Other sums
/// (synchronized batch statistics inside the forward and backward pass) are buckets of
/// their own, started after their operand and waited for before their first reader.
fn buckets(g: &Graph, s: &mut Schedule) {
    let idx = |v: Value| v.as_u32() as usize;
    let is_ar = |k: &Kernel| matches!(k, Kernel::Host { out } if g.nodes[*out].op == Op::AllReduce);
    if !s.kernels.iter().any(is_ar) {
        return;
    }
    let n = g.len();
    let mut users: Vec<Vec<Value>> = vec![Vec::new(); n];
    for (v, node) in g.nodes.iter() {
        for a in &node.args {
            users[idx(*a)].push(v);
        }
    }
    let mut pinned = vec![false; n];
    for v in g
        .outputs
        .iter()
        .map(|(_, v)| *v)
        .chain(g.loss)
        .chain(g.params.iter().filter_map(|p| p.update))
        .chain(g.states.iter().filter_map(|st| st.update))
    {
        pinned[idx(v)] = true;
    }
    let sums: Vec<Value> = s.kernels.iter().filter(|k| is_ar(k)).map(|k| k.out()).collect();
    s.kernels.retain(|k| !is_ar(k));
    // In place or copied.
    for &v in &sums {
        let x = g.nodes[v].args[0];
        let root = s.storage[idx(x)];
        let sharing: Vec<usize> =
            (0..n).filter(|&w| s.materialized[w] && s.storage[w] == root && w != idx(v)).collect();
        let only_sums = sharing.iter().all(|&w| {
            !pinned[w]
                && !matches!(g.nodes[Value::from_u32(w as u32)].op, Op::Input(_) | Op::Param(_) | Op::State(_))
                && s.row_stride[w] == 0
                && users[w].iter().all(|&u| g.nodes[u].op == Op::AllReduce || s.storage[idx(u)] == root)
        });
        if only_sums && s.materialized[idx(x)] && s.row_stride[idx(x)] == 0 {
            // The sum and its views (a reshape of it) now live in the operand's buffer.
            let off = s.view_offset[idx(x)];
            for w in 0..n {
                if s.storage[w] == v {
                    s.storage[w] = root;
                    s.view_offset[w] += off;
                }
            }
        } else {
            s.storage[idx(v)] = v;
            s.view_offset[idx(v)] = 0;
        }
    }
    // Late sums, and what depends on them.
    let mut feeds_sum = vec![false; n];
    for (v, _) in g.nodes.iter().rev() {
        feeds_sum[idx(v)] = users[idx(v)].iter().any(|&u| g.nodes[u].op == Op::AllReduce || feeds_sum[idx(u)]);
    }
    let late = |v: Value| !feeds_sum[idx(v)];
    let mut dep = vec![false; n];
    for (v, node) in g.nodes.iter() {
        dep[idx(v)] = (node.op == Op::AllReduce && late(v)) || node.args.iter().any(|a| dep[idx(*a)]);
    }
    // A kernel moves when it computes something that depends on a late sum, or when it
    // reads what a moved kernel writes, or writes what a moved kernel reads (a
    // multi-output kernel computes values of both kinds: whatever reads its other
    // outputs moves with it).
    let mut moved_writes = std::collections::HashSet::new();
    let mut moved_reads = std::collections::HashSet::new();
    let mut moves = Vec::with_capacity(s.kernels.len());
    for k in &s.kernels {
        let outs: Vec<Value> = k.outs().iter().map(|o| s.storage[idx(*o)]).collect();
        let read = reads(g, s, k);
        let m = k.outs().iter().any(|o| dep[idx(*o)])
            || read.iter().any(|r| moved_writes.contains(r))
            || outs.iter().any(|o| moved_reads.contains(o) || moved_writes.contains(o));
        if m {
            moved_writes.extend(outs);
            moved_reads.extend(read);
        }
        moves.push(m);
    }
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for (k, m) in std::mem::take(&mut s.kernels).into_iter().zip(moves) {
        if m {
            after.push(k);
        } else {
            before.push(k);
        }
    }
    let kernels: Vec<Kernel> = before.into_iter().chain(after).collect();
    // Where each sum's operand is last written (-1: before every kernel).
    let written_at = |x: Value| -> i64 {
        let root = s.storage[idx(x)];
        kernels.iter().rposition(|k| k.outs().iter().any(|o| s.storage[idx(*o)] == root)).map_or(-1, |p| p as i64)
    };
    // Buckets follow the sums' order in the graph (the order their gradients are
    // computed in), not the schedule, so that ranks whose shards differ in size (and whose
    // schedules may differ) start the same buckets in the same order; a bucket starts
    // after its last operand is written and never before the previous bucket.
    let mut in_order = sums.clone();
    in_order.sort_by_key(|v| v.as_u32());
    let mut groups: Vec<(i64, Vec<Value>)> = Vec::new();
    let mut open: Option<(i64, Vec<Value>, usize)> = None;
    let mut at = -1i64;
    for &v in &in_order {
        let p = written_at(g.nodes[v].args[0]);
        if !late(v) {
            at = at.max(p);
            groups.push((at, vec![v]));
            continue;
        }
        let bytes = 4 * g.ty(v).shape.iter().map(|d| d.as_const().unwrap_or(0).max(0) as usize).product::<usize>();
        let (q, mut vals, mut size) = open.take().unwrap_or((at, Vec::new(), 0));
        let q = q.max(p);
        vals.push(v);
        size += bytes;
        if size >= BUCKET_BYTES {
            at = q;
            groups.push((q, vals));
        } else {
            open = Some((q, vals, size));
        }
    }
    if let Some((q, vals, _)) = open {
        groups.push((q, vals));
    }
    // Each wait goes before the first kernel after its start that reads one of its sums.
    let mut starts: Vec<Vec<Kernel>> = vec![Vec::new(); kernels.len() + 1];
    let mut waits: Vec<Vec<Kernel>> = vec![Vec::new(); kernels.len() + 1];
    for (b, (p, values)) in groups.into_iter().enumerate() {
        let roots: Vec<Value> = values.iter().map(|&v| s.storage[idx(v)]).collect();
        let from = (p + 1) as usize;
        let reader = (from..kernels.len())
            .find(|&k| reads(g, s, &kernels[k]).iter().any(|r| roots.contains(r)))
            .unwrap_or(kernels.len());
        starts[from].push(Kernel::Collective { values: values.clone(), bucket: b as u32, wait: false });
        waits[reader].push(Kernel::Collective { values, bucket: b as u32, wait: true });
    }
    let mut out = Vec::with_capacity(kernels.len() + 2 * starts.len());
    for (i, k) in kernels.into_iter().enumerate() {
        out.append(&mut starts[i]);
        out.append(&mut waits[i]);
        out.push(k);
    }
    let last = starts.len() - 1;
    out.append(&mut starts[last]);
    out.append(&mut waits[last]);
    s.kernels = out;
}

/// The rows of a kernel that can be a part of a row group: an elementwise kernel's loop
/// rows, or a reduction of whole rows' outer count.
fn row_part(k: &Kernel) -> Option<usize> {
    match k {
        Kernel::Elementwise { rows, .. } => Some(*rows),
        Kernel::Reduce { outer, inner: 1, .. } => Some(*outer),
        _ => None,
    }
}

/// Groups runs of consecutive row-wise kernels over the same rows (at least 2) into
/// `Kernel::Rows` when a run has a reduction in it and each part reads the storage
/// written by earlier parts only in its own row: element for element (a value with the
/// part's rows, from its start), as a per-row scalar (a column broadcast), through a
/// slice of the last dim, or as the rows a reduction reduces. Parts that update a
/// parameter or state are left alone (the planner updates those in place only from an
/// elementwise kernel).
fn row_groups(g: &Graph, s: &mut Schedule) {
    use std::collections::HashSet;
    let idx = |v: Value| v.as_u32() as usize;
    let updates: HashSet<Value> =
        g.params.iter().filter_map(|p| p.update).chain(g.states.iter().filter_map(|st| st.update)).collect();
    // Whether kernel `k` (over `rows`) reads the roots in `written` only row by row.
    let row_local = |s: &Schedule, k: &Kernel, rows: usize, written: &HashSet<Value>| {
        let local = |a: Value| loop_shape(g, a).0 == rows && s.view_offset[idx(a)] == 0;
        let ok_loads = |out: Value| {
            fused_nodes(g, s, out).iter().all(|&v| {
                let node = &g.nodes[v];
                node.args.iter().all(|&a| {
                    if !s.materialized[idx(a)] || !written.contains(&s.storage[idx(a)]) {
                        return true;
                    }
                    match node.op {
                        Op::Broadcast { .. } => {
                            local(a) && matches!(broadcast_access(g, a, v), Some(Access::Full | Access::Col))
                        }
                        Op::Slice { .. } => local(a),
                        _ => local(a) && loop_shape(g, v).0 == rows,
                    }
                })
            })
        };
        match k {
            Kernel::Elementwise { .. } => k.outs().into_iter().all(ok_loads),
            Kernel::Reduce { x, .. } if s.materialized[idx(*x)] => !written.contains(&s.storage[idx(*x)]) || local(*x),
            Kernel::Reduce { x, .. } => ok_loads(*x),
            _ => false,
        }
    };
    // While a group is open, a kernel that cannot join it moves before it when it reads
    // nothing the group or the kernels held back write (the one-hot of the labels), and
    // is held back until the group closes otherwise (the batch mean of a loss), so the
    // loss rows and their gradient's rows make one group.
    // The roots the open group and the held kernels write are kept as sets, so each
    // kernel costs its own reads, not the group's size.
    let mut out: Vec<Kernel> = Vec::new();
    let mut group: Vec<Kernel> = Vec::new();
    let mut held: Vec<Kernel> = Vec::new();
    let mut group_roots: HashSet<Value> = HashSet::new();
    let mut held_roots: HashSet<Value> = HashSet::new();
    let mut group_rows = 0;
    let roots = |s: &Schedule, k: &Kernel| -> Vec<Value> { k.outs().into_iter().map(|o| s.storage[idx(o)]).collect() };
    let close = |group: &mut Vec<Kernel>, held: &mut Vec<Kernel>, out: &mut Vec<Kernel>, rows: usize| {
        if group.len() >= 2 && group.iter().any(|k| matches!(k, Kernel::Reduce { .. })) {
            out.push(Kernel::Rows { rows, parts: std::mem::take(group) });
        } else {
            out.append(group);
        }
        out.append(held);
    };
    for k in std::mem::take(&mut s.kernels) {
        let rows = row_part(&k).filter(|&r| r >= 2 && !k.outs().iter().any(|o| updates.contains(o)));
        let reads_k = reads(g, s, &k);
        let reads_held = reads_k.iter().any(|r| held_roots.contains(r));
        match rows {
            Some(r) => {
                if r != group_rows || reads_held || !row_local(s, &k, r, &group_roots) {
                    close(&mut group, &mut held, &mut out, group_rows);
                    group_roots.clear();
                    held_roots.clear();
                }
                group_rows = r;
                group_roots.extend(roots(s, &k));
                group.push(k);
            }
            None if group.is_empty() => out.push(k),
            None => {
                if reads_held || reads_k.iter().any(|r| group_roots.contains(r)) {
                    held_roots.extend(roots(s, &k));
                    held.push(k);
                } else {
                    out.push(k);
                }
            }
        }
    }
    close(&mut group, &mut held, &mut out, group_rows);
    s.kernels = out;
}

/// A concat whose pieces are contiguous blocks of its result (every dim before the
/// axis is 1) is not copied: each piece is computed straight into its place in the
/// concat's buffer (the LSTM's backward gathers 20 steps of gate gradients and hidden
/// states into [640, 512] and [640, 128] operands for one weight-gradient GEMM). A piece
/// qualifies when a kernel (or an elided concat) writes it, or the buffer it reshapes,
/// into a buffer of its own, it is not a step output, and it is not already placed in
/// another concat; the concat is elided only when every piece qualifies.
fn elide_concats(g: &Graph, s: &mut Schedule, pinned: &[bool]) {
    let idx = |v: Value| v.as_u32() as usize;
    let written: std::collections::HashSet<Value> = s.kernels.iter().flat_map(|k| k.outs()).collect();
    // Buffer roots placed inside a concat: (concat, offset in elements).
    let mut home: std::collections::HashMap<Value, (Value, usize)> = std::collections::HashMap::new();
    let mut elided = std::collections::HashSet::new();
    let mut readers = vec![0usize; g.len()];
    for (_, node) in g.nodes.iter() {
        for a in &node.args {
            readers[idx(*a)] += 1;
        }
    }
    let ew_cols: std::collections::HashMap<Value, usize> = s
        .kernels
        .iter()
        .filter_map(|k| if let Kernel::Elementwise { cols, .. } = k { Some((k, *cols)) } else { None })
        .flat_map(|(k, cols)| k.outs().into_iter().map(move |o| (o, cols)))
        .collect();
    for k in &s.kernels {
        let Kernel::Host { out: c } = *k else { continue };
        let Op::Concat { axis } = g.nodes[c].op else { continue };
        let shape = dims(g, c);
        let args = &g.nodes[c].args;
        // Column blocks of a concat along the last dim (the LSTM's four gate gradients):
        // pieces that an elementwise kernel writes row by row, read by nothing else, are
        // stored straight into their columns, `row_stride` apart.
        let r = shape.len();
        let columns = r >= 2
            && axis as usize == r - 1
            && s.storage[idx(c)] == c
            && args.iter().enumerate().all(|(i, &p)| {
                s.storage[idx(p)] == p
                    && readers[idx(p)] == 1
                    && !pinned[idx(p)]
                    && !home.contains_key(&p)
                    && !elided.contains(&p)
                    && !args[..i].contains(&p)
                    && ew_cols.get(&p) == dims(g, p).last()
            });
        if columns {
            let mut at = 0;
            for &p in args {
                home.insert(p, (c, at));
                s.row_stride[idx(p)] = shape[r - 1];
                at += dims(g, p)[r - 1];
            }
            elided.insert(c);
            continue;
        }
        let ok = s.storage[idx(c)] == c
            && shape[..axis as usize].iter().all(|&d| d == 1)
            && args.iter().enumerate().all(|(i, &p)| {
                // The piece, or the buffer it is a reshape of.
                let r = s.storage[idx(p)];
                s.materialized[idx(p)]
                    && numel(g, r) == numel(g, p)
                    && written.contains(&r)
                    && !pinned[idx(p)]
                    && !pinned[idx(r)]
                    && !home.contains_key(&r)
                    && !args[..i].iter().any(|&q| s.storage[idx(q)] == r)
            });
        if !ok {
            continue;
        }
        let mut at = 0;
        for &p in args {
            home.insert(s.storage[idx(p)], (c, at));
            at += numel(g, p);
        }
        elided.insert(c);
    }
    if elided.is_empty() {
        return;
    }
    // Pieces (and views of pieces) now live in the concat's buffer, which may itself be
    // a piece of another (a concat of elided concats).
    for i in 0..g.len() {
        let mut root = s.storage[i];
        let mut off = s.view_offset[i];
        while let Some(&(c, at)) = home.get(&root) {
            off += at;
            root = c;
        }
        s.storage[i] = root;
        s.view_offset[i] = off;
    }
    s.kernels.retain(|k| !matches!(k, Kernel::Host { out } if elided.contains(out)));
}

/// Whether every operand an elementwise kernel for `out` loads is read element for
/// element or is a scalar (the loop can run flat, and outputs can be stored late).
pub fn flat_only(g: &Graph, s: &Schedule, out: Value) -> bool {
    flat_only_in(g, &s.materialized, out)
}

/// `flat_only` under a materialization decision.
fn flat_only_in(g: &Graph, materialized: &[bool], out: Value) -> bool {
    fused_nodes_in(g, materialized, out).iter().all(|&v| {
        let node = &g.nodes[v];
        if matches!(node.op, Op::Slice { .. }) {
            return false;
        }
        !matches!(node.op, Op::Broadcast { .. })
            || !materialized[node.args[0].as_u32() as usize]
            || matches!(broadcast_access(g, node.args[0], v), Some(Access::Full | Access::Scalar))
    })
}

/// The buffers (storage roots) a kernel for `out` reads away from its loop position:
/// through fused slices and row or column broadcasts.
fn strided_sources(g: &Graph, s: &Schedule, out: Value) -> Vec<Value> {
    let mut r = Vec::new();
    for v in fused_nodes(g, s, out) {
        let node = &g.nodes[v];
        let x = match node.op {
            Op::Slice { .. } => node.args[0],
            Op::Broadcast { .. }
                if s.materialized[node.args[0].as_u32() as usize]
                    && !matches!(broadcast_access(g, node.args[0], v), Some(Access::Full | Access::Scalar)) =>
            {
                node.args[0]
            }
            _ => continue,
        };
        r.push(s.storage[x.as_u32() as usize]);
    }
    r
}

/// Merges consecutive elementwise kernels of one shape when a later one reads an
/// earlier one's output or an operand the earlier ones load (Adam's m, v and update),
/// so the chain is one pass over memory.
/// Most kernels merged into one loop: a longer chain (an unrolled loop of thousands of
/// steps) would make one function whose register allocation grows faster than its size.
const MAX_MERGED: usize = 64;

fn merge_chains(g: &Graph, s: &mut Schedule) {
    use std::collections::{HashMap, HashSet};
    // The materialized values (storage roots) a kernel for `out` loads.
    let loaded = |s: &Schedule, out: Value| {
        let mut r = Vec::new();
        for v in fused_nodes(g, s, out) {
            for a in &g.nodes[v].args {
                let root = s.storage[a.as_u32() as usize];
                if s.materialized[a.as_u32() as usize] && !r.contains(&root) {
                    r.push(root);
                }
            }
        }
        r
    };
    // The parameter or state each update value overwrites in place.
    let replaces: HashMap<Value, Value> = g
        .params
        .iter()
        .map(|p| (p.value, p.update))
        .chain(g.states.iter().map(|s| (s.value, s.update)))
        .filter_map(|(v, u)| u.map(|u| (u, v)))
        .collect();
    // The open group, kept as sets so each kernel costs its own loads, not the group's:
    // its outputs, what they load, whether all are flat, their strided sources and the
    // parameters and states they replace.
    #[derive(Default)]
    struct Group {
        members: HashSet<Value>,
        loaded: HashSet<Value>,
        flat: bool,
        strided: Vec<Value>,
        updated: HashSet<Value>,
    }
    let open = |s: &Schedule, o: Value, mine: Vec<Value>| Group {
        members: HashSet::from([o]),
        loaded: mine.into_iter().collect(),
        flat: flat_only(g, s, o),
        strided: strided_sources(g, s, o),
        updated: replaces.get(&o).copied().into_iter().collect(),
    };
    let mut out: Vec<Kernel> = Vec::new();
    let mut group: Option<Group> = None;
    for k in std::mem::take(&mut s.kernels) {
        let Kernel::Elementwise { out: o, rows, cols, .. } = &k else {
            group = None;
            out.push(k);
            continue;
        };
        let (o, rows, cols) = (*o, *rows, *cols);
        let mine = loaded(s, o);
        if let (Some(Kernel::Elementwise { out: po, rows: pr, cols: pc, also: pa }), Some(grp)) =
            (out.last_mut(), group.as_mut())
        {
            let reads_group = mine.iter().any(|r| grp.members.contains(r));
            // Or loads what the group loads (Adam's m and v both read the gradient).
            let shares = mine.iter().any(|r| grp.loaded.contains(r));
            // Outputs are stored at the end of each iteration, so within the merged loop
            // a value of the group can be read only at the loop's own position. Flat
            // kernels read nothing elsewhere; a row-by-row kernel may read through a
            // slice or a row/column broadcast, so those reads must not touch the group,
            // nor a parameter or state another kernel may update in place.
            let flat_o = flat_only(g, s, o);
            // A flat kernel reads nothing strided.
            let strided_o = if flat_o { Vec::new() } else { strided_sources(g, s, o) };
            let updated_o = replaces.get(&o).copied();
            let safe = (flat_o && grp.flat) || {
                let clear = |r: &Value| !grp.members.contains(r) && !grp.updated.contains(r) && Some(*r) != updated_o;
                grp.strided.iter().all(clear) && strided_o.iter().all(clear)
            };
            if *pr == rows && *pc == cols && (reads_group || shares) && safe && pa.len() + 1 < MAX_MERGED {
                pa.push(*po);
                *po = o;
                grp.members.insert(o);
                grp.loaded.extend(mine);
                grp.flat &= flat_o;
                grp.strided.extend(strided_o);
                grp.updated.extend(updated_o);
                continue;
            }
        }
        group = Some(open(s, o, mine));
        out.push(k);
    }
    s.kernels = out;
}

/// The nodes computed inside an elementwise kernel for `out`, in topological order:
/// `out` and its unmaterialized elementwise ancestors (broadcasts read as patterns).
pub fn fused_nodes(g: &Graph, s: &Schedule, out: Value) -> Vec<Value> {
    fused_nodes_in(g, &s.materialized, out)
}

/// `fused_nodes` under a materialization decision.
fn fused_nodes_in(g: &Graph, materialized: &[bool], out: Value) -> Vec<Value> {
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = vec![out];
    while let Some(v) = stack.pop() {
        if !seen.insert(v) {
            continue;
        }
        let node = &g.nodes[v];
        if matches!(node.op, Op::Broadcast { .. }) {
            // A fused broadcast reads its operand through an access pattern; a scalar
            // constant operand is computed inline.
            let x = node.args[0];
            if !materialized[x.as_u32() as usize] {
                stack.push(x);
            }
            continue;
        }
        for &a in &node.args {
            if !materialized[a.as_u32() as usize] {
                stack.push(a);
            }
        }
    }
    seen.into_iter().collect()
}

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
