//! The closed set of IR primitives and their shape rules.
//!
//! Every composite (softmax, layer norm, LSTM cells, losses) is prelude code over these.
//! Elementwise ops take operands of one identical shape: broadcasting is made explicit
//! by `Broadcast` during lowering, so autodiff (the VJP of `Broadcast` is a `Reduce`),
//! fusion and codegen never have to guess it. `infer` is the single shape rule used by
//! lowering (to build nodes) and by `verify` (to check them).

use super::ty::{numel, DType, Dim, Shape, Type};

/// Elementwise functions of one f32 operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Abs,
    /// -1, 0 or 1; its derivative is zero everywhere.
    Sign,
    /// A primitive (not `(e^x - e^-x)/(e^x + e^-x)`) for accuracy and one polynomial.
    Tanh,
    /// A primitive for the same reasons: stable on both tails.
    Sigmoid,
    /// The error function, for the exact `gelu`.
    Erf,
    /// To the nearest integer, ties to even (as NumPy and PyTorch); its derivative is zero
    /// almost everywhere (the prelude's `fake_quant` passes the gradient straight through).
    Round,
    /// The largest integer <= x; derivative zero almost everywhere.
    Floor,
    /// The smallest integer >= x; derivative zero almost everywhere.
    Ceil,
    /// Sine and cosine (radians); the JIT reduces the argument exactly over the whole
    /// f32 range (`codegen::math`).
    Sin,
    Cos,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 14] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Abs,
        UnaryOp::Sign,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Erf,
        UnaryOp::Round,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Sin,
        UnaryOp::Cos,
    ];
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Abs => "abs",
            UnaryOp::Sign => "sign",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Erf => "erf",
            UnaryOp::Round => "round",
            UnaryOp::Floor => "floor",
            UnaryOp::Ceil => "ceil",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
        }
    }
}

/// Elementwise functions of two f32 operands of the same shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `a ^ b`, defined for a > 0, or for any a when b is an integer.
    Pow,
    /// Elementwise maximum. At ties the gradient is split evenly.
    Max,
    Min,
    /// Comparisons give 1.0 or 0.0 and have zero gradient.
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
        }
    }
    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq | BinaryOp::Ne)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Max => "reduce_max",
            ReduceOp::Min => "reduce_min",
        }
    }
}

/// Window geometry shared by `Im2col` and `Col2im`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub kh: u32,
    pub kw: u32,
    pub stride_h: u32,
    pub stride_w: u32,
    pub pad_h: u32,
    pub pad_w: u32,
}

impl Window {
    /// Output extent along one axis: `(n + 2p - k) / s + 1`, None if the window does not fit.
    pub fn out_len(n: i64, k: u32, s: u32, p: u32) -> Option<i64> {
        let span = n + 2 * p as i64 - k as i64;
        if span < 0 || s == 0 {
            None
        } else {
            Some(span / s as i64 + 1)
        }
    }
}

/// An IR primitive. Operands live in `Node::args`; the variant holds only attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The model input `Graph::inputs[i]`. No operands.
    Input(u32),
    /// The trainable parameter `Graph::params[i]`. No operands.
    Param(u32),
    /// The state `Graph::states[i]` (its value at the start of the step). No operands.
    State(u32),
    /// A tensor of the node's type with every element equal to the value. No operands.
    Fill(f64),
    /// The f32 scalar value of a dim (`1/B` in a batch mean is `1 / dim B`). No operands.
    DimValue(Dim),
    /// f32 tensor of the node's shape whose elements are their index along `axis`.
    Iota { axis: u32 },
    /// Uniform [0, 1) f32 numbers of the node's shape from the counter-based generator
    /// keyed by (run seed, step, stream, element index). No operands.
    Rand { stream: u32 },
    /// `[x]`, f32 -> same shape.
    Unary(UnaryOp),
    /// `[a, b]` of one shape (f32) -> that shape.
    Binary(BinaryOp),
    /// `[cond, a, b]`, one f32 shape: `cond != 0 ? a : b`. No gradient to `cond`.
    Select,
    /// `[x]` -> same shape: the identity whose gradient is zero (`detach`).
    StopGradient,
    /// `[x]` -> `shape`: NumPy broadcasting, right-aligned; each operand dim is 1 or equal.
    Broadcast { shape: Shape },
    /// `[x]` -> `shape` with the same element count (row-major order kept).
    Reshape { shape: Shape },
    /// `[x]` -> permuted dims: result dim i is operand dim `perm[i]`.
    Transpose { perm: Vec<u32> },
    /// `[x]` -> elements `start, start+step, ..` along `axis`, below `end` when step >= 1;
    /// a negative step walks down from `start` (an element) to above `end` (>= -1):
    /// `x[::-1]` is `start = n - 1, end = -1, step = -1`.
    Slice { axis: u32, start: i64, end: i64, step: i64 },
    /// `[x]` -> the adjoint of `Slice`: a zero tensor with dim `len` along `axis` whose
    /// elements `start + i*step` are `x`'s.
    Pad { axis: u32, start: i64, step: i64, len: Dim },
    /// `[x1, x2, ...]`, equal except along `axis` -> their concatenation.
    Concat { axis: u32 },
    /// `[x]` -> `x` with `axes` (sorted, distinct) removed by the reduction.
    Reduce { op: ReduceOp, axes: Vec<u32> },
    /// `[a, b]`: `a [batch.., M, K] @ b [batch.., K, N] -> [batch.., M, N]`, batch dims equal.
    MatMul,
    /// `[table f32[V, D..], ids i32[S..]] -> [S.., D..]`: rows of `table`.
    /// Ids outside `0..V` give zeros (the data loader reports them first).
    Gather,
    /// `[ids i32[S..], src f32[S.., D..]] -> [rows, D..]`: the adjoint of `Gather`.
    ScatterAdd { rows: Dim },
    /// `[ids i32[S..]] -> f32[S.., n]`: 1.0 at the id, 0.0 elsewhere (none if out of range).
    OneHot { n: i64 },
    /// `[x f32[N, C, H, W]] -> [N, C, kh, kw, OH, OW]`: the zero-padded windows of `x`.
    Im2col(Window),
    /// `[p f32[N, C, kh, kw, OH, OW]] -> [N, C, h, w]`: the adjoint of `Im2col`
    /// (overlapping windows add up).
    Col2im { window: Window, h: i64, w: i64 },
    /// `[x]` f32 -> same shape: the element-wise sum of `x` over the ranks of a
    /// data-parallel run (`dist::comm`); the identity in one process. The
    /// gradient of a rank's input is the sum of every rank's output gradient, so the VJP
    /// is the same collective. Never folded, merged or fused: each is one collective
    /// call, and every rank runs the same ones in the same order.
    AllReduce,
}

impl Op {
    /// The name in the IR text format.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Param(_) => "param",
            Op::State(_) => "state",
            Op::Fill(_) => "fill",
            Op::DimValue(_) => "dim",
            Op::Iota { .. } => "iota",
            Op::Rand { .. } => "rand",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Select => "select",
            Op::StopGradient => "stop_gradient",
            Op::AllReduce => "allreduce",
            Op::Broadcast { .. } => "broadcast",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Slice { .. } => "slice",
            Op::Pad { .. } => "pad",
            Op::Concat { .. } => "concat",
            Op::Reduce { op, .. } => op.name(),
            Op::MatMul => "matmul",
            Op::Gather => "gather",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::OneHot { .. } => "one_hot",
            Op::Im2col(_) => "im2col",
            Op::Col2im { .. } => "col2im",
        }
    }
}

fn expect_dtype(t: &Type, d: DType, what: &str) -> Result<(), String> {
    if t.dtype == d {
        Ok(())
    } else {
        Err(format!("{what} must be {}, found {}", d.name(), t.dtype.name()))
    }
}

fn expect_args(args: &[&Type], n: usize, op: &Op) -> Result<(), String> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!("{} takes {n} operands, found {}", op.name(), args.len()))
    }
}

fn konst(d: &Dim) -> Option<i64> {
    d.as_const()
}

/// The result type of `op` applied to operands of types `args`, or why it is ill-typed.
/// For leaf ops (no operands) `declared` is the node's own type, which is trusted.
pub fn infer(op: &Op, args: &[&Type], declared: Option<&Type>) -> Result<Type, String> {
    let leaf = |op: &Op| -> Result<Type, String> {
        declared.cloned().ok_or_else(|| format!("{} needs a declared type", op.name()))
    };
    match op {
        Op::Input(_) | Op::Param(_) | Op::State(_) | Op::Fill(_) | Op::Rand { .. } => {
            expect_args(args, 0, op)?;
            leaf(op)
        }
        Op::DimValue(_) => {
            expect_args(args, 0, op)?;
            Ok(Type::scalar())
        }
        Op::Iota { axis } => {
            expect_args(args, 0, op)?;
            let t = leaf(op)?;
            if *axis as usize >= t.rank() {
                return Err(format!("iota axis {axis} out of range for rank {}", t.rank()));
            }
            Ok(t)
        }
        Op::Unary(_) | Op::StopGradient | Op::AllReduce => {
            expect_args(args, 1, op)?;
            expect_dtype(args[0], DType::F32, "the operand")?;
            Ok(args[0].clone())
        }
        Op::Binary(_) => {
            expect_args(args, 2, op)?;
            expect_dtype(args[0], DType::F32, "the left operand")?;
            expect_dtype(args[1], DType::F32, "the right operand")?;
            if args[0].shape != args[1].shape {
                return Err("operands of an elementwise op must have one shape".into());
            }
            Ok(args[0].clone())
        }
        Op::Select => {
            expect_args(args, 3, op)?;
            for a in args {
                expect_dtype(a, DType::F32, "select operands")?;
            }
            if args[0].shape != args[1].shape || args[1].shape != args[2].shape {
                return Err("select operands must have one shape".into());
            }
            Ok(args[1].clone())
        }
        Op::Broadcast { shape } => {
            expect_args(args, 1, op)?;
            let from = &args[0].shape;
            if from.len() > shape.len() {
                return Err("broadcast cannot drop dims".into());
            }
            let off = shape.len() - from.len();
            for (i, d) in from.iter().enumerate() {
                if *d != shape[off + i] && konst(d) != Some(1) {
                    return Err(format!("dim {i} cannot broadcast"));
                }
            }
            Ok(Type { dtype: args[0].dtype, shape: shape.clone() })
        }
        Op::Reshape { shape } => {
            expect_args(args, 1, op)?;
            if numel(&args[0].shape) != numel(shape) {
                return Err("reshape must keep the element count".into());
            }
            Ok(Type { dtype: args[0].dtype, shape: shape.clone() })
        }
        Op::Transpose { perm } => {
            expect_args(args, 1, op)?;
            let r = args[0].rank();
            let mut seen = vec![false; r];
            if perm.len() != r {
                return Err(format!("a permutation of rank {r} needs {r} entries"));
            }
            for &p in perm {
                let p = p as usize;
                if p >= r || seen[p] {
                    return Err("transpose needs a permutation".into());
                }
                seen[p] = true;
            }
            let shape = perm.iter().map(|&p| args[0].shape[p as usize].clone()).collect();
            Ok(Type { dtype: args[0].dtype, shape })
        }
        Op::Slice { axis, start, end, step } => {
            expect_args(args, 1, op)?;
            let a = *axis as usize;
            let n = args[0].shape.get(a).ok_or("slice axis out of range")?;
            let n = konst(n).ok_or("slices of symbolic dims are not supported")?;
            let fits = if *step > 0 {
                *start >= 0 && *end <= n && start <= end
            } else {
                *step < 0 && *start >= 0 && *start < n && *end >= -1 && end <= start
            };
            if !fits {
                return Err(format!("slice {start}:{end}:{step} out of range for a dim of {n}"));
            }
            let s = step.abs();
            let len = ((end - start).abs() + s - 1) / s;
            let mut shape = args[0].shape.clone();
            shape[a] = Dim::konst(len);
            Ok(Type { dtype: args[0].dtype, shape })
        }
        Op::Pad { axis, start, step, len } => {
            expect_args(args, 1, op)?;
            let a = *axis as usize;
            let n = args[0].shape.get(a).ok_or("pad axis out of range")?;
            let n = konst(n).ok_or("pads of symbolic dims are not supported")?;
            let l = konst(len).ok_or("pad length must be a number")?;
            // The first and the last position written (a negative step writes downwards).
            let last = start + (n - 1) * step;
            if *step == 0 || *start < 0 || (n > 0 && (*start >= l || last < 0 || last >= l)) {
                return Err("pad does not fit".into());
            }
            let mut shape = args[0].shape.clone();
            shape[a] = len.clone();
            Ok(Type { dtype: args[0].dtype, shape })
        }
        Op::Concat { axis } => {
            if args.is_empty() {
                return Err("concat needs at least one operand".into());
            }
            let a = *axis as usize;
            let first = args[0];
            if a >= first.rank() {
                return Err("concat axis out of range".into());
            }
            let mut total = Dim::konst(0);
            for t in args {
                if t.rank() != first.rank() || t.dtype != first.dtype {
                    return Err("concat operands must have one rank and dtype".into());
                }
                for (i, (x, y)) in t.shape.iter().zip(&first.shape).enumerate() {
                    if i != a && x != y {
                        return Err(format!("concat operands differ in dim {i}"));
                    }
                }
                total = total.add(&t.shape[a]).ok_or("concat size overflows")?;
            }
            let mut shape = first.shape.clone();
            shape[a] = total;
            Ok(Type { dtype: first.dtype, shape })
        }
        Op::Reduce { axes, .. } => {
            expect_args(args, 1, op)?;
            expect_dtype(args[0], DType::F32, "the operand")?;
            let r = args[0].rank();
            if axes.windows(2).any(|w| w[0] >= w[1]) || axes.iter().any(|&a| a as usize >= r) {
                return Err("reduce axes must be sorted, distinct and in range".into());
            }
            let shape = args[0]
                .shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(&(*i as u32)))
                .map(|(_, d)| d.clone())
                .collect();
            Ok(Type::f32(shape))
        }
        Op::MatMul => {
            expect_args(args, 2, op)?;
            let (a, b) = (args[0], args[1]);
            expect_dtype(a, DType::F32, "the left operand")?;
            expect_dtype(b, DType::F32, "the right operand")?;
            if a.rank() < 2 || a.rank() != b.rank() {
                return Err("matmul operands must have one rank >= 2".into());
            }
            let r = a.rank();
            if a.shape[..r - 2] != b.shape[..r - 2] {
                return Err("matmul batch dims differ".into());
            }
            if a.shape[r - 1] != b.shape[r - 2] {
                return Err("matmul inner dims differ".into());
            }
            let mut shape = a.shape[..r - 1].to_vec();
            shape.push(b.shape[r - 1].clone());
            Ok(Type::f32(shape))
        }
        Op::Gather => {
            expect_args(args, 2, op)?;
            expect_dtype(args[0], DType::F32, "the table")?;
            expect_dtype(args[1], DType::I32, "the ids")?;
            if args[0].rank() < 1 {
                return Err("gather needs a table of rank >= 1".into());
            }
            let mut shape = args[1].shape.clone();
            shape.extend(args[0].shape[1..].iter().cloned());
            Ok(Type::f32(shape))
        }
        Op::ScatterAdd { rows } => {
            expect_args(args, 2, op)?;
            expect_dtype(args[0], DType::I32, "the ids")?;
            expect_dtype(args[1], DType::F32, "the source")?;
            let k = args[0].rank();
            if args[1].rank() < k || args[1].shape[..k] != args[0].shape[..] {
                return Err("scatter_add source must start with the ids' shape".into());
            }
            let mut shape = vec![rows.clone()];
            shape.extend(args[1].shape[k..].iter().cloned());
            Ok(Type::f32(shape))
        }
        Op::OneHot { n } => {
            expect_args(args, 1, op)?;
            expect_dtype(args[0], DType::I32, "the ids")?;
            if *n < 1 {
                return Err("one_hot needs n >= 1".into());
            }
            let mut shape = args[0].shape.clone();
            shape.push(Dim::konst(*n));
            Ok(Type::f32(shape))
        }
        Op::Im2col(w) => {
            expect_args(args, 1, op)?;
            expect_dtype(args[0], DType::F32, "the operand")?;
            if args[0].rank() != 4 {
                return Err("im2col needs [N, C, H, W]".into());
            }
            let s = &args[0].shape;
            let h = konst(&s[2]).ok_or("image height must be a number")?;
            let wd = konst(&s[3]).ok_or("image width must be a number")?;
            let oh = Window::out_len(h, w.kh, w.stride_h, w.pad_h).ok_or("window larger than the image")?;
            let ow = Window::out_len(wd, w.kw, w.stride_w, w.pad_w).ok_or("window larger than the image")?;
            Ok(Type::f32(vec![
                s[0].clone(),
                s[1].clone(),
                Dim::konst(w.kh as i64),
                Dim::konst(w.kw as i64),
                Dim::konst(oh),
                Dim::konst(ow),
            ]))
        }
        Op::Col2im { window: w, h, w: wd } => {
            expect_args(args, 1, op)?;
            let s = &args[0].shape;
            if args[0].rank() != 6 {
                return Err("col2im needs [N, C, kh, kw, OH, OW]".into());
            }
            let oh = Window::out_len(*h, w.kh, w.stride_h, w.pad_h).ok_or("window larger than the image")?;
            let ow = Window::out_len(*wd, w.kw, w.stride_w, w.pad_w).ok_or("window larger than the image")?;
            let want = [Dim::konst(w.kh as i64), Dim::konst(w.kw as i64), Dim::konst(oh), Dim::konst(ow)];
            if s[2..] != want[..] {
                return Err("col2im operand does not match the window".into());
            }
            Ok(Type::f32(vec![s[0].clone(), s[1].clone(), Dim::konst(*h), Dim::konst(*wd)]))
        }
    }
}
