//! The model blob a built library embeds: a small little-endian encoding of the steps'
//! tables (`codegen::host::Tables`: host kernels, GEMMs, split kernels), their buffers,
//! the inputs and outputs, and the preprocessing. Function pointers are written as
//! indices into the library's table of function addresses (a data object the linker
//! relocates), and read back as the addresses found there.
//!
//! Layout: `MAGIC`, then `Model` field by field (`Writer`/`Reader` below: u8 tags, u32,
//! u64 for sizes, f32 bit patterns, length-prefixed lists and strings).

use crate::buffers::{Region, Slot};
use crate::codegen::gemm::{Piece, TileFn};
use crate::codegen::host::{GemmOp, GemmPiece, HostOp, KernelFn, ParOp, Run, Tables};
use crate::codegen::StepFn;
use crate::data::{PreprocessKind, Preprocessor};
use crate::ir::ReduceOp;

/// The first bytes of a blob (format version 1).
pub const MAGIC: &[u8; 8] = b"NNCAOT01";

/// No function (an `Option` of a function index).
const NONE: u32 = u32::MAX;

/// An input or output of the model: its element type and elements per sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Io {
    pub i32: bool,
    pub per_sample: usize,
    /// ids must lie in 0..bound (an i32 input that indexes a table or a one-hot).
    pub bound: Option<i64>,
}

/// One compiled batch size.
pub struct Step<F> {
    pub batch: usize,
    pub arena_len: usize,
    /// The step function (an index when encoded).
    pub step: F,
    pub tables: Tables,
    pub inputs: Vec<Slot>,
    pub outputs: Vec<Slot>,
}

/// Everything a library needs at load time but its code and weights.
pub struct Model<F> {
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
    /// The preprocessing of one f32 input: (its index, the transform).
    pub preprocess: Option<(usize, Preprocessor)>,
    pub persistent_len: usize,
    /// Ascending batch sizes.
    pub steps: Vec<Step<F>>,
}

pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, x: u8) {
        self.buf.push(x);
    }
    fn u32(&mut self, x: u32) {
        self.buf.extend_from_slice(&x.to_le_bytes());
    }
    fn u64(&mut self, x: u64) {
        self.buf.extend_from_slice(&x.to_le_bytes());
    }
    fn usize(&mut self, x: usize) {
        self.u64(x as u64);
    }
    fn i64(&mut self, x: i64) {
        self.buf.extend_from_slice(&x.to_le_bytes());
    }
    fn f32(&mut self, x: f32) {
        self.u32(x.to_bits());
    }
    fn bool(&mut self, x: bool) {
        self.u8(u8::from(x));
    }
    fn str(&mut self, s: &str) {
        self.usize(s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }
    fn f32s(&mut self, v: &[f32]) {
        self.usize(v.len());
        v.iter().for_each(|&x| self.f32(x));
    }
    fn u32s(&mut self, v: &[u32]) {
        self.usize(v.len());
        v.iter().for_each(|&x| self.u32(x));
    }
    fn runs(&mut self, v: &[Run]) {
        self.usize(v.len());
        for &(a, b, c) in v {
            self.u32(a);
            self.u32(b);
            self.u32(c);
        }
    }
    fn slot(&mut self, s: Slot) {
        self.u8(match s.region {
            Region::Arena => 0,
            Region::Persistent => 1,
        });
        self.usize(s.offset);
        self.usize(s.len);
    }
    fn reduce_op(&mut self, op: ReduceOp) {
        self.u8(match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
            ReduceOp::Min => 2,
        });
    }

    fn host(&mut self, op: &HostOp) {
        match op {
            HostOp::Gather { src, dst, map } => {
                self.u8(0);
                self.slot(*src);
                self.slot(*dst);
                self.u32s(map);
            }
            HostOp::GatherRuns { src, dst, runs } => {
                self.u8(1);
                self.slot(*src);
                self.slot(*dst);
                self.runs(runs);
            }
            HostOp::ScatterRuns { parts, dst } => {
                self.u8(2);
                self.usize(parts.len());
                for (s, r) in parts {
                    self.slot(*s);
                    self.runs(r);
                }
                self.slot(*dst);
            }
            HostOp::Scatter { parts, dst } => {
                self.u8(3);
                self.usize(parts.len());
                for (s, m) in parts {
                    self.slot(*s);
                    self.u32s(m);
                }
                self.slot(*dst);
            }
            HostOp::Reduce { src, dst, map, op } => {
                self.u8(4);
                self.slot(*src);
                self.slot(*dst);
                self.u32s(map);
                self.reduce_op(*op);
            }
            HostOp::GatherRows { table, ids, dst, rows, row } => {
                self.u8(5);
                self.slot(*table);
                self.slot(*ids);
                self.slot(*dst);
                self.usize(*rows);
                self.usize(*row);
            }
            HostOp::ScatterRows { ids, src, dst, rows, row } => {
                self.u8(6);
                self.slot(*ids);
                self.slot(*src);
                self.slot(*dst);
                self.usize(*rows);
                self.usize(*row);
            }
            HostOp::OneHot { ids, dst, n } => {
                self.u8(7);
                self.slot(*ids);
                self.slot(*dst);
                self.usize(*n);
            }
            HostOp::Rand { dst, stream } => {
                self.u8(8);
                self.slot(*dst);
                self.u32(*stream);
            }
            HostOp::Transpose { src, dst, starts, rows, cols, cs } => {
                self.u8(13);
                self.slot(*src);
                self.slot(*dst);
                self.u32s(starts);
                self.usize(*rows);
                self.usize(*cols);
                self.usize(*cs);
            }
            HostOp::Copy { src, dst } => {
                self.u8(9);
                self.slot(*src);
                self.slot(*dst);
            }
            HostOp::Const { dst, values } => {
                self.u8(10);
                self.slot(*dst);
                self.f32s(values);
            }
            // (Built libraries run eval graphs, which sum over no ranks; the copies keep
            // the step's meaning in one process all the same.)
            HostOp::CollectiveStart { bucket, copies, bufs } => {
                self.u8(11);
                self.u32(*bucket);
                self.usize(copies.len());
                for (a, b) in copies {
                    self.slot(*a);
                    self.slot(*b);
                }
                self.usize(bufs.len());
                for b in bufs {
                    self.slot(*b);
                }
            }
            HostOp::CollectiveWait { bucket } => {
                self.u8(12);
                self.u32(*bucket);
            }
        }
    }

    /// A GEMM, its epilogue as the function index `epilogue` (or none).
    fn gemm(&mut self, op: &GemmOp, epilogue: Option<u32>) {
        self.slot(op.a);
        self.slot(op.b);
        self.slot(op.out);
        self.bool(op.a_t);
        self.bool(op.b_t);
        self.usize(op.a_batch_stride);
        self.usize(op.b_batch_stride);
        self.usize(op.batch);
        self.usize(op.m);
        self.usize(op.k);
        self.usize(op.n);
        self.f32(op.scale);
        self.bool(op.accumulate);
        self.usize(op.pieces.len());
        for p in &op.pieces {
            let q = &p.piece;
            for x in [q.mats.0, q.mats.1, q.rows.0, q.rows.1, q.cols.0, q.cols.1, p.part] {
                self.usize(x);
            }
        }
        self.u32(epilogue.unwrap_or(NONE));
    }

    fn preprocessor(&mut self, p: &Preprocessor) {
        self.u8(match p.kind {
            PreprocessKind::None => 0,
            PreprocessKind::Center => 1,
            PreprocessKind::Standardize => 2,
            PreprocessKind::WhitenPca => 3,
            PreprocessKind::WhitenZca => 4,
        });
        self.str(&p.input);
        self.usize(p.dim);
        self.f32s(&p.mean);
        self.f32s(&p.scale);
        self.f32s(&p.matrix);
    }

    fn io(&mut self, io: &Io) {
        self.bool(io.i32);
        self.usize(io.per_sample);
        self.i64(io.bound.unwrap_or(-1));
    }
}

/// Encodes a model whose functions are indices into the function table: each step's
/// function, and per step the kernel of each `par` entry and the epilogue of each GEMM
/// (`par_fns`, `epilogue_fns`: one list per step, `None` for a GEMM without one).
pub fn encode(m: &Model<u32>, par_fns: &[Vec<u32>], epilogue_fns: &[Vec<Option<u32>>]) -> Vec<u8> {
    let mut w = Writer { buf: MAGIC.to_vec() };
    w.usize(m.inputs.len());
    m.inputs.iter().for_each(|io| w.io(io));
    w.usize(m.outputs.len());
    m.outputs.iter().for_each(|io| w.io(io));
    match &m.preprocess {
        None => w.u8(0),
        Some((i, p)) => {
            w.u8(1);
            w.usize(*i);
            w.preprocessor(p);
        }
    }
    w.usize(m.persistent_len);
    w.usize(m.steps.len());
    for (si, s) in m.steps.iter().enumerate() {
        w.usize(s.batch);
        w.usize(s.arena_len);
        w.u32(s.step);
        w.usize(s.inputs.len());
        s.inputs.iter().for_each(|&x| w.slot(x));
        w.usize(s.outputs.len());
        s.outputs.iter().for_each(|&x| w.slot(x));
        let t = &s.tables;
        w.usize(t.workspace_part);
        w.usize(t.workspace_parts);
        w.usize(t.host.len());
        t.host.iter().for_each(|op| w.host(op));
        w.usize(t.gemm.len());
        for (gi, op) in t.gemm.iter().enumerate() {
            let e = epilogue_fns.get(si).and_then(|v| v.get(gi)).copied().flatten();
            w.gemm(op, e);
        }
        w.usize(t.par.len());
        for (pi, op) in t.par.iter().enumerate() {
            w.u32(par_fns.get(si).and_then(|v| v.get(pi)).copied().unwrap_or(NONE));
            w.i64(op.total);
            w.i64(op.align);
            w.usize(op.threads);
        }
    }
    w.buf
}

/// Reads a blob; every read is checked against its end.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The function table.
    fns: &'a [*const u8],
}

type R<T> = Result<T, String>;

/// A list length no larger than the bytes left (each element takes at least one byte).
const TRUNCATED: &str = "the model blob is truncated";

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(TRUNCATED)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> R<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> R<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn usize(&mut self) -> R<usize> {
        usize::try_from(self.u64()?).map_err(|_| "the model blob holds a size too large for this machine".into())
    }
    fn len(&mut self) -> R<usize> {
        let n = self.usize()?;
        if n > self.buf.len() - self.pos {
            return Err(TRUNCATED.into());
        }
        Ok(n)
    }
    fn i64(&mut self) -> R<i64> {
        Ok(self.u64()? as i64)
    }
    fn f32(&mut self) -> R<f32> {
        Ok(f32::from_bits(self.u32()?))
    }
    fn bool(&mut self) -> R<bool> {
        Ok(self.u8()? != 0)
    }
    fn str(&mut self) -> R<String> {
        let n = self.len()?;
        String::from_utf8(self.bytes(n)?.to_vec()).map_err(|_| "the model blob holds a name that is not UTF-8".into())
    }
    fn list<T>(&mut self, mut f: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        let n = self.len()?;
        (0..n).map(|_| f(self)).collect()
    }
    fn f32s(&mut self) -> R<Vec<f32>> {
        self.list(Self::f32)
    }
    fn u32s(&mut self) -> R<Vec<u32>> {
        self.list(Self::u32)
    }
    fn runs(&mut self) -> R<Vec<Run>> {
        self.list(|r| Ok((r.u32()?, r.u32()?, r.u32()?)))
    }
    fn slot(&mut self) -> R<Slot> {
        let region = match self.u8()? {
            0 => Region::Arena,
            1 => Region::Persistent,
            t => return Err(format!("the model blob holds an unknown region {t}")),
        };
        Ok(Slot { region, offset: self.usize()?, len: self.usize()? })
    }
    fn reduce_op(&mut self) -> R<ReduceOp> {
        Ok(match self.u8()? {
            0 => ReduceOp::Sum,
            1 => ReduceOp::Max,
            2 => ReduceOp::Min,
            t => return Err(format!("the model blob holds an unknown reduction {t}")),
        })
    }
    fn func(&mut self) -> R<Option<*const u8>> {
        let i = self.u32()?;
        if i == NONE {
            return Ok(None);
        }
        let f = self.fns.get(i as usize).copied().ok_or("the model blob names a function outside the table")?;
        if f.is_null() {
            return Err("the function table holds a null address".into());
        }
        Ok(Some(f))
    }

    fn host(&mut self) -> R<HostOp> {
        Ok(match self.u8()? {
            0 => HostOp::Gather { src: self.slot()?, dst: self.slot()?, map: self.u32s()? },
            1 => HostOp::GatherRuns { src: self.slot()?, dst: self.slot()?, runs: self.runs()? },
            2 => HostOp::ScatterRuns { parts: self.list(|r| Ok((r.slot()?, r.runs()?)))?, dst: self.slot()? },
            3 => HostOp::Scatter { parts: self.list(|r| Ok((r.slot()?, r.u32s()?)))?, dst: self.slot()? },
            4 => HostOp::Reduce { src: self.slot()?, dst: self.slot()?, map: self.u32s()?, op: self.reduce_op()? },
            5 => HostOp::GatherRows {
                table: self.slot()?,
                ids: self.slot()?,
                dst: self.slot()?,
                rows: self.usize()?,
                row: self.usize()?,
            },
            6 => HostOp::ScatterRows {
                ids: self.slot()?,
                src: self.slot()?,
                dst: self.slot()?,
                rows: self.usize()?,
                row: self.usize()?,
            },
            7 => HostOp::OneHot { ids: self.slot()?, dst: self.slot()?, n: self.usize()? },
            8 => HostOp::Rand { dst: self.slot()?, stream: self.u32()? },
            9 => HostOp::Copy { src: self.slot()?, dst: self.slot()? },
            10 => HostOp::Const { dst: self.slot()?, values: self.f32s()? },
            11 => HostOp::CollectiveStart {
                bucket: self.u32()?,
                copies: self.list(|r| Ok((r.slot()?, r.slot()?)))?,
                bufs: self.list(|r| r.slot())?,
            },
            12 => HostOp::CollectiveWait { bucket: self.u32()? },
            13 => HostOp::Transpose {
                src: self.slot()?,
                dst: self.slot()?,
                starts: self.u32s()?,
                rows: self.usize()?,
                cols: self.usize()?,
                cs: self.usize()?,
            },
            t => return Err(format!("the model blob holds an unknown host kernel {t}")),
        })
    }

    fn gemm(&mut self) -> R<GemmOp> {
        let (a, b, out) = (self.slot()?, self.slot()?, self.slot()?);
        let (a_t, b_t) = (self.bool()?, self.bool()?);
        let (a_batch_stride, b_batch_stride) = (self.usize()?, self.usize()?);
        let (batch, m, k, n) = (self.usize()?, self.usize()?, self.usize()?, self.usize()?);
        let (scale, accumulate) = (self.f32()?, self.bool()?);
        let mut pieces = self.list(|r| {
            let mut x = [0usize; 7];
            for v in &mut x {
                *v = r.usize()?;
            }
            let piece = Piece { mats: (x[0], x[1]), rows: (x[2], x[3]), cols: (x[4], x[5]), concurrent: false };
            Ok(GemmPiece { piece, part: x[6] })
        })?;
        // Pieces run beside each other when there are several (as `gemm::pieces` sets it).
        let concurrent = pieces.len() > 1;
        for p in &mut pieces {
            p.piece.concurrent = concurrent;
        }
        // SAFETY: the table's entry for an epilogue is the address of a function
        // compiled with the `TileFn` signature (`aot::build` writes both).
        let epilogue = self.func()?.map(|f| unsafe { std::mem::transmute::<*const u8, TileFn>(f) });
        Ok(GemmOp {
            a,
            b,
            out,
            a_t,
            b_t,
            a_batch_stride,
            b_batch_stride,
            batch,
            m,
            k,
            n,
            scale,
            accumulate,
            pieces,
            epilogue,
        })
    }

    fn preprocessor(&mut self) -> R<Preprocessor> {
        let kind = match self.u8()? {
            0 => PreprocessKind::None,
            1 => PreprocessKind::Center,
            2 => PreprocessKind::Standardize,
            3 => PreprocessKind::WhitenPca,
            4 => PreprocessKind::WhitenZca,
            t => return Err(format!("the model blob holds an unknown preprocessing {t}")),
        };
        Ok(Preprocessor {
            kind,
            input: self.str()?,
            dim: self.usize()?,
            mean: self.f32s()?,
            scale: self.f32s()?,
            matrix: self.f32s()?,
        })
    }

    fn io(&mut self) -> R<Io> {
        let i32 = self.bool()?;
        let per_sample = self.usize()?;
        let b = self.i64()?;
        Ok(Io { i32, per_sample, bound: (b >= 0).then_some(b) })
    }
}

/// Decodes a blob, resolving function indices through `fns`.
pub fn decode(buf: &[u8], fns: &[*const u8]) -> Result<Model<StepFn>, String> {
    if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
        return Err("not an nnc model blob (or one of another version)".into());
    }
    let mut r = Reader { buf, pos: MAGIC.len(), fns };
    let inputs = r.list(Reader::io)?;
    let outputs = r.list(Reader::io)?;
    let preprocess = match r.u8()? {
        0 => None,
        _ => Some((r.usize()?, r.preprocessor()?)),
    };
    let persistent_len = r.usize()?;
    let steps = r.list(|r| {
        let batch = r.usize()?;
        let arena_len = r.usize()?;
        let step = r.func()?.ok_or("a step without a function")?;
        // SAFETY: the table's entry for a step is the address of a function compiled with
        // the `StepFn` signature.
        let step = unsafe { std::mem::transmute::<*const u8, StepFn>(step) };
        let inputs = r.list(Reader::slot)?;
        let outputs = r.list(Reader::slot)?;
        let workspace_part = r.usize()?;
        let workspace_parts = r.usize()?;
        let host = r.list(Reader::host)?;
        let gemm = r.list(Reader::gemm)?;
        let par = r.list(|r| {
            // SAFETY: as for steps: a kernel compiled with the `KernelFn` signature.
            let func = r.func()?.map(|f| unsafe { std::mem::transmute::<*const u8, KernelFn>(f) });
            Ok(ParOp { func, total: r.i64()?, align: r.i64()?, threads: r.usize()? })
        })?;
        let tables = Tables {
            host,
            gemm,
            workspace_part,
            workspace_parts,
            poison: Vec::new(),
            par,
            ticks: Vec::new(),
            last_tick: std::sync::atomic::AtomicU64::new(0),
        };
        Ok(Step { batch, arena_len, step, tables, inputs, outputs })
    })?;
    Ok(Model { inputs, outputs, preprocess, persistent_len, steps })
}
