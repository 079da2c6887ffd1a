//! The routines JIT code calls: GEMM (`gemm.rs`, on the `gemm` crates' microkernels) and
//! the data-movement and generator kernels (transpose, slice, pad, concat, general
//! broadcast and reduction, gather, scatter-add, one-hot, im2col, col2im, iota, random
//! numbers).
//!
//! Every index computation is done once at compile time into a table of offsets
//! (`HostOp`); at run time a kernel is a loop over its table, with no allocation. The
//! callbacks are `extern "C"` and never panic: an out-of-range offset is skipped.

use crate::buffers::{Plan, Region, Slot};
use crate::fusion::Kernel;
use crate::ir::{Graph, Op, ReduceOp, Value};
use crate::rng;

use super::gemm;

/// A precomputed host kernel.
#[derive(Clone, Debug)]
pub enum HostOp {
    /// `dst[k] = src[map[k]]` (`u32::MAX`: 0). Transpose, slice, broadcast, im2col, iota.
    Gather {
        src: Slot,
        dst: Slot,
        map: Vec<u32>,
    },
    /// `Gather` as runs (dst position, src position or `u32::MAX` for zeros, length):
    /// copies instead of one lookup per element, when the map has long runs (im2col
    /// rows, slices, broadcasts over inner dims).
    GatherRuns {
        src: Slot,
        dst: Slot,
        runs: Vec<Run>,
    },
    /// `Scatter` as runs (src position, dst position, length).
    ScatterRuns {
        parts: Vec<(Slot, Vec<Run>)>,
        dst: Slot,
    },
    /// `dst = 0; dst[map[k]] += src[k]` for each source part (`u32::MAX`: skipped).
    /// Pad, concat (one part per operand), col2im.
    Scatter {
        parts: Vec<(Slot, Vec<u32>)>,
        dst: Slot,
    },
    /// `dst[map[k]] = op(dst[map[k]], src[k])` after filling dst with the identity.
    Reduce {
        src: Slot,
        dst: Slot,
        map: Vec<u32>,
        op: ReduceOp,
    },
    /// Rows of a table picked by i32 ids (out-of-range ids give zeros).
    GatherRows {
        table: Slot,
        ids: Slot,
        dst: Slot,
        rows: usize,
        row: usize,
    },
    /// Rows added into a zeroed table at i32 ids.
    ScatterRows {
        ids: Slot,
        src: Slot,
        dst: Slot,
        rows: usize,
        row: usize,
    },
    OneHot {
        ids: Slot,
        dst: Slot,
        n: usize,
    },
    Rand {
        dst: Slot,
        stream: u32,
    },
    /// `dst[b][r][c] = src[starts[b] + c * cs + r]`: a read that transposes two axes, one
    /// matrix per start (`pack::transpose`'s 16 x 16 register blocks, not an index map).
    Transpose {
        src: Slot,
        dst: Slot,
        starts: Vec<u32>,
        rows: usize,
        cols: usize,
        cs: usize,
    },
    /// `dst = src` (updates that could not be computed in place).
    Copy {
        src: Slot,
        dst: Slot,
    },
    /// `dst = values` (iota: known at compile time).
    Const {
        dst: Slot,
        values: Vec<f32>,
    },
    /// Starts summing `bufs` over the ranks of a data-parallel run, in place, as bucket
    /// `bucket` (`Kernel::Collective`), after the copies (src, dst) of operands that
    /// could not be summed in their own buffers. Without a `Collective` (one process):
    /// the copies only.
    CollectiveStart {
        bucket: u32,
        copies: Vec<(Slot, Slot)>,
        bufs: Vec<Slot>,
    },
    /// Waits until bucket `bucket`'s sums are done.
    CollectiveWait {
        bucket: u32,
    },
}

/// The buffers of one bucket of sums, in the arena of the running step.
#[derive(Clone, Copy)]
pub struct Bucket<'a> {
    ctx: &'a HostCtx,
    slots: &'a [Slot],
}

impl Bucket<'_> {
    pub fn len(&self) -> usize {
        self.slots.len()
    }
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
    /// Buffer `i`: its address and length in floats. It stays valid until the step
    /// returns, and the step neither reads nor writes it before the bucket's wait.
    pub fn buffer(&self, i: usize) -> Option<(*mut f32, usize)> {
        self.slots.get(i).map(|&s| (ptr(self.ctx, s), s.len))
    }
}

/// What a step's collectives call (`Executable::run_with`): the sums of a data-parallel
/// run's `Op::AllReduce` nodes, in buckets started and waited for in the same order on
/// every rank. Errors are kept by the implementation and read after the step.
pub trait Collective {
    /// Starts summing every buffer of `bufs` over the ranks, in place.
    fn start(&mut self, bucket: u32, bufs: Bucket<'_>);
    /// Returns when bucket `bucket`'s sums are in its buffers.
    fn wait(&mut self, bucket: u32);
}

/// A GEMM call: `out[b] = op(a[b]) @ op(b[b])`, row-major.
#[derive(Clone, Debug)]
pub struct GemmOp {
    pub a: Slot,
    pub b: Slot,
    pub out: Slot,
    pub a_t: bool,
    pub b_t: bool,
    /// Elements between consecutive batches' matrices (0: one matrix for all).
    pub a_batch_stride: usize,
    pub b_batch_stride: usize,
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// `out = scale * a @ b`, plus out's previous contents when `accumulate`.
    pub scale: f32,
    pub accumulate: bool,
    /// What each thread computes (one piece: all on the calling thread).
    pub pieces: Vec<GemmPiece>,
    /// The JIT-compiled epilogue run on each finished block (`Kernel::MatMul::epilogue`).
    pub epilogue: Option<gemm::TileFn>,
}

/// A piece of a GEMM and the workspace part it packs into.
#[derive(Clone, Debug)]
pub struct GemmPiece {
    pub piece: gemm::Piece,
    pub part: usize,
}

impl GemmOp {
    /// The first matrix's product at these addresses.
    pub fn product(&self, a: *mut f32, b: *mut f32, out: *mut f32) -> gemm::Product {
        let p = gemm::Product::row_major((self.m, self.k, self.n), a, self.a_t, b, self.b_t, out);
        gemm::Product { scale: self.scale, accumulate: self.accumulate, ..p }
    }

    /// Workspace floats the largest piece needs.
    pub fn workspace_part(&self) -> usize {
        let p = self.product(std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
        let len = |q: &GemmPiece| gemm::workspace_len(&gemm::piece_product(&p, &q.piece, 0, 0, 0));
        self.pieces.iter().map(len).max().unwrap_or(0)
    }
}

/// A run of an index map: (position, mapped position or `u32::MAX`, length).
pub type Run = (u32, u32, u32);

/// What the JIT code's callbacks see: the memory and the precomputed tables.
#[repr(C)]
pub struct HostCtx {
    pub arena: *mut f32,
    pub persistent: *mut f32,
    pub seed: u64,
    pub step: u64,
    pub tables: *const Tables,
    /// GEMM packing space: `Tables::workspace_parts` parts of `Tables::workspace_part`
    /// floats.
    pub workspace: *mut f32,
    /// The collectives of a data-parallel step: a `*mut &mut dyn Collective` for the
    /// duration of one run, or null (one process: sums are the identity).
    pub collective: *mut std::ffi::c_void,
}

pub struct Tables {
    pub host: Vec<HostOp>,
    pub gemm: Vec<GemmOp>,
    /// The GEMM workspace the executable allocates: parts of this many floats, one per
    /// piece a GEMM is split into.
    pub workspace_part: usize,
    pub workspace_parts: usize,
    /// Per kernel, the arena slots to fill with NaN after it (the debug check).
    pub poison: Vec<Vec<Slot>>,
    /// Elementwise kernels split across threads.
    pub par: Vec<ParOp>,
    /// Per kernel, accumulated nanoseconds (with `CodegenOptions::profile`).
    pub ticks: Vec<std::sync::atomic::AtomicU64>,
    pub last_tick: std::sync::atomic::AtomicU64,
}

fn now_ns() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}

/// Profiling: charges the time since the previous tick to kernel `index`
/// (`u32::MAX`: start the clock).
///
/// # Safety
/// `ctx` must be the `HostCtx` of the executable whose code makes the call.
#[no_mangle]
pub unsafe extern "C" fn nnc_tick(ctx: *const HostCtx, index: u32) {
    use std::sync::atomic::Ordering;
    let tables = &*(*ctx).tables;
    let t = now_ns();
    let prev = tables.last_tick.swap(t, Ordering::Relaxed);
    if let Some(slot) = tables.ticks.get(index as usize) {
        slot.fetch_add(t.saturating_sub(prev), Ordering::Relaxed);
    }
}

fn ptr(ctx: &HostCtx, s: Slot) -> *mut f32 {
    let base = match s.region {
        Region::Arena => ctx.arena,
        Region::Persistent => ctx.persistent,
    };
    // SAFETY: slots come from the plan and lie inside the region the executable owns.
    unsafe { base.add(s.offset) }
}

/// # Safety
/// `ctx` must point to a live `HostCtx` whose regions match the plan of its tables.
unsafe fn slice<'a>(ctx: &HostCtx, s: Slot) -> &'a mut [f32] {
    std::slice::from_raw_parts_mut(ptr(ctx, s), s.len)
}

/// Runs host kernel `index`. Called from JIT code.
/// # Safety
/// `ctx` must be the `HostCtx` of the executable whose code makes the call.
#[no_mangle]
pub unsafe extern "C" fn nnc_host(ctx: *const HostCtx, index: u32) {
    // SAFETY: the JIT code passes the context of the executable that compiled it.
    let ctx = unsafe { &*ctx };
    let tables = unsafe { &*ctx.tables };
    let Some(op) = tables.host.get(index as usize) else { return };
    unsafe { run_host(ctx, op) }
}

unsafe fn run_host(ctx: &HostCtx, op: &HostOp) {
    match op {
        HostOp::Gather { src, dst, map } => {
            let (s, d) = (slice(ctx, *src), slice(ctx, *dst));
            for (o, &m) in d.iter_mut().zip(map) {
                *o = if m == u32::MAX { 0.0 } else { s.get(m as usize).copied().unwrap_or(0.0) };
            }
        }
        HostOp::GatherRuns { src, dst, runs } => {
            let (s, d) = (slice(ctx, *src), slice(ctx, *dst));
            for &(k, m, len) in runs {
                let (k, m, len) = (k as usize, m as usize, len as usize);
                let Some(out) = d.get_mut(k..k + len) else { continue };
                match s.get(m..m + len) {
                    Some(from) => out.copy_from_slice(from),
                    None => out.fill(0.0),
                }
            }
        }
        HostOp::ScatterRuns { parts, dst } => {
            let d = slice(ctx, *dst);
            d.fill(0.0);
            for (src, runs) in parts {
                let s = slice(ctx, *src);
                for &(k, m, len) in runs {
                    let (k, m, len) = (k as usize, m as usize, len as usize);
                    if let (Some(from), Some(to)) = (s.get(k..k + len), d.get_mut(m..m + len)) {
                        for (o, x) in to.iter_mut().zip(from) {
                            *o += x;
                        }
                    }
                }
            }
        }
        HostOp::Scatter { parts, dst } => {
            let d = slice(ctx, *dst);
            d.fill(0.0);
            for (src, map) in parts {
                let s = slice(ctx, *src);
                for (&x, &m) in s.iter().zip(map) {
                    if let Some(o) = d.get_mut(m as usize) {
                        *o += x;
                    }
                }
            }
        }
        HostOp::Reduce { src, dst, map, op } => {
            let (s, d) = (slice(ctx, *src), slice(ctx, *dst));
            d.fill(match op {
                ReduceOp::Sum => 0.0,
                ReduceOp::Max => f32::NEG_INFINITY,
                ReduceOp::Min => f32::INFINITY,
            });
            for (&x, &m) in s.iter().zip(map) {
                if let Some(o) = d.get_mut(m as usize) {
                    *o = match op {
                        ReduceOp::Sum => *o + x,
                        ReduceOp::Max => {
                            if x > *o || x.is_nan() {
                                x
                            } else {
                                *o
                            }
                        }
                        ReduceOp::Min => {
                            if x < *o || x.is_nan() {
                                x
                            } else {
                                *o
                            }
                        }
                    };
                }
            }
        }
        HostOp::GatherRows { table, ids, dst, rows, row } => {
            let (t, d) = (slice(ctx, *table), slice(ctx, *dst));
            let ids = slice(ctx, *ids);
            for (k, id) in ids.iter().enumerate() {
                let id = id.to_bits() as i32;
                let out = &mut d[k * row..(k + 1) * row];
                if id >= 0 && (id as usize) < *rows {
                    out.copy_from_slice(&t[id as usize * row..(id as usize + 1) * row]);
                } else {
                    out.fill(0.0);
                }
            }
        }
        HostOp::ScatterRows { ids, src, dst, rows, row } => {
            let (s, d) = (slice(ctx, *src), slice(ctx, *dst));
            d.fill(0.0);
            for (k, id) in slice(ctx, *ids).iter().enumerate() {
                let id = id.to_bits() as i32;
                if id >= 0 && (id as usize) < *rows {
                    for j in 0..*row {
                        d[id as usize * row + j] += s[k * row + j];
                    }
                }
            }
        }
        HostOp::OneHot { ids, dst, n } => {
            let d = slice(ctx, *dst);
            d.fill(0.0);
            for (k, id) in slice(ctx, *ids).iter().enumerate() {
                let id = id.to_bits() as i32;
                if id >= 0 && (id as usize) < *n {
                    d[k * n + id as usize] = 1.0;
                }
            }
        }
        HostOp::Rand { dst, stream } => {
            let key = rng::stream_key(ctx.seed, ctx.step, *stream);
            for (i, o) in slice(ctx, *dst).iter_mut().enumerate() {
                *o = rng::uniform(key, i as u32);
            }
        }
        HostOp::Transpose { src, dst, starts, rows, cols, cs } => {
            let (s, d) = (slice(ctx, *src), slice(ctx, *dst));
            let n = rows.saturating_mul(*cols).max(1);
            for (&start, to) in starts.iter().zip(d.chunks_exact_mut(n)) {
                // (A start past the source leaves its matrix alone, as `transpose` does a
                // short source; the plan never makes one.)
                super::pack::transpose(s.get(start as usize..).unwrap_or(&[]), to, *rows, *cols, *cs);
            }
        }
        HostOp::Copy { src, dst } => {
            let (s, d) = (slice(ctx, *src), slice(ctx, *dst));
            d.copy_from_slice(&s[..d.len()]);
        }
        HostOp::Const { dst, values } => {
            slice(ctx, *dst).copy_from_slice(values);
        }
        HostOp::CollectiveStart { bucket, copies, bufs } => {
            for (src, dst) in copies {
                let (s, d) = (slice(ctx, *src), slice(ctx, *dst));
                d.copy_from_slice(&s[..d.len()]);
            }
            if !ctx.collective.is_null() {
                // SAFETY: `Executable::run_with` points it at a live `&mut dyn Collective`.
                let c = unsafe { &mut **(ctx.collective as *mut &mut dyn Collective) };
                c.start(*bucket, Bucket { ctx, slots: bufs });
            }
        }
        HostOp::CollectiveWait { bucket } => {
            if !ctx.collective.is_null() {
                // SAFETY: as above.
                let c = unsafe { &mut **(ctx.collective as *mut &mut dyn Collective) };
                c.wait(*bucket);
            }
        }
    }
}

/// GEMMs with at least this much work run on `CodegenOptions::threads` threads (the
/// three workloads' steps on two threads, 2-16 MFLOP thresholds: 2 was best or equal).
const PAR_MIN_FLOPS: usize = 2_000_000;

/// A JIT kernel: (arena, persistent, lo, hi).
pub type KernelFn = unsafe extern "C" fn(*mut f32, *mut f32, i64, i64);

/// An elementwise kernel whose index space [0, total) is split into `threads` parts,
/// each a multiple of `align` long (the last takes the rest).
pub struct ParOp {
    pub func: Option<KernelFn>,
    pub total: i64,
    pub align: i64,
    pub threads: usize,
}

/// The arena and persistent region addresses, passed to worker threads: the parts of
/// a split kernel write disjoint elements.
#[derive(Clone, Copy)]
struct Regions(usize, usize);

/// Runs parts `[lo, hi)` of a kernel in `parts` pieces on the team (`team::run`), each
/// a multiple of `align` long but the last, every thread in the caller's floating-point
/// mode (flushing denormals, say).
fn run_parts(f: KernelFn, r: Regions, lo: i64, hi: i64, parts: usize, align: i64, mode: u32) {
    let edge = |p: usize| {
        if p >= parts {
            hi
        } else {
            (lo + (hi - lo) * p as i64 / parts as i64) / align * align
        }
    };
    crate::codegen::team::run(parts.max(1), &|p| {
        let (a, b) = (edge(p).max(lo), edge(p + 1));
        if a >= b {
            return;
        }
        let saved = crate::codegen::fp::fp_mode();
        crate::codegen::fp::set_fp_mode(mode);
        // SAFETY: the kernel was compiled for these regions; [a, b) is inside its space,
        // and the parts write disjoint elements.
        unsafe { f(r.0 as *mut f32, r.1 as *mut f32, a, b) };
        crate::codegen::fp::set_fp_mode(saved);
    });
}

/// Runs the split kernel `index` across threads. Called from JIT code.
/// # Safety
/// `ctx` must be the `HostCtx` of the executable whose code makes the call.
#[no_mangle]
pub unsafe extern "C" fn nnc_par(ctx: *const HostCtx, index: u32) {
    // SAFETY: as for `nnc_host`.
    let ctx = unsafe { &*ctx };
    let tables = unsafe { &*ctx.tables };
    let Some(op) = tables.par.get(index as usize) else { return };
    let Some(f) = op.func else { return };
    let mode = crate::codegen::fp::fp_mode();
    let r = Regions(ctx.arena as usize, ctx.persistent as usize);
    run_parts(f, r, 0, op.total, op.threads, op.align, mode);
}

/// Runs GEMM `index`. Called from JIT code.
/// # Safety
/// `ctx` must be the `HostCtx` of the executable whose code makes the call.
#[no_mangle]
pub unsafe extern "C" fn nnc_gemm(ctx: *const HostCtx, index: u32) {
    // SAFETY: as for `nnc_host`.
    let ctx = unsafe { &*ctx };
    let tables = unsafe { &*ctx.tables };
    let Some(op) = tables.gemm.get(index as usize) else { return };
    let mut p = op.product(ptr(ctx, op.a), ptr(ctx, op.b), ptr(ctx, op.out));
    p.epilogue = op.epilogue.map(|f| gemm::Epilogue { f, arena: ctx.arena, persistent: ctx.persistent });
    let ws = Workspace(ctx.workspace as usize, tables.workspace_part);
    let mode = crate::codegen::fp::fp_mode();
    run_pieces(op, &p, &op.pieces, ws, mode);
}

/// The workspace address and the floats of each piece's part.
#[derive(Clone, Copy)]
struct Workspace(usize, usize);

/// Runs `pieces` of a GEMM on the team (`team::run`), each piece with its own part of
/// the workspace, every thread in the caller's floating-point mode.
fn run_pieces(op: &GemmOp, p: &gemm::Product, pieces: &[GemmPiece], ws: Workspace, mode: u32) {
    let send = SendProduct(*p);
    crate::codegen::team::run(pieces.len(), &|j| {
        let q = &pieces[j];
        let p = &{ send }.0;
        let saved = crate::codegen::fp::fp_mode();
        crate::codegen::fp::set_fp_mode(mode);
        let part = (ws.0 as *mut f32).wrapping_add(q.part * ws.1);
        for i in q.piece.mats.0..q.piece.mats.1 {
            let sub = gemm::piece_product(p, &q.piece, i, op.a_batch_stride, op.b_batch_stride);
            // SAFETY: the plan sized the slots for these matrices; the workspace has
            // a part of `ws.1` floats for each piece, and `ws.1` covers every piece.
            unsafe { gemm::run(&sub, part, ws.1) };
        }
        crate::codegen::fp::set_fp_mode(saved);
    });
}

/// A product's addresses, passed to a worker thread: pieces write disjoint outputs.
#[derive(Clone, Copy)]
struct SendProduct(gemm::Product);
// SAFETY: the pointers address the executable's regions, alive for the whole call, and
// the pieces running concurrently write disjoint parts of the output.
unsafe impl Send for SendProduct {}
unsafe impl Sync for SendProduct {}

/// Fills the buffers that died at kernel `index` with NaN (the debug check).
/// # Safety
/// `ctx` must be the `HostCtx` of the executable whose code makes the call.
#[no_mangle]
pub unsafe extern "C" fn nnc_poison(ctx: *const HostCtx, index: u32) {
    // SAFETY: as for `nnc_host`.
    let ctx = unsafe { &*ctx };
    let tables = unsafe { &*ctx.tables };
    if let Some(slots) = tables.poison.get(index as usize) {
        for s in slots {
            unsafe { slice(ctx, *s).fill(f32::NAN) };
        }
    }
}

fn dims(g: &Graph, v: Value) -> Vec<usize> {
    g.ty(v).shape.iter().map(|d| d.as_const().unwrap_or(0).max(0) as usize).collect()
}

use crate::ir::layout::strides;

/// For each element of `shape` (row-major), `base + sum(idx * strides)`, as u32.
fn offsets(shape: &[usize], src_strides: &[usize], base: usize) -> Vec<u32> {
    crate::ir::layout::gather_offsets(shape, src_strides, base).into_iter().map(|o| o as u32).collect()
}

/// `layout::strided_offsets` as a map (a slice's reads, a pad's writes).
fn strided_offsets(shape: &[usize], within: &[usize], axis: usize, start: i64, step: i64) -> Vec<u32> {
    crate::ir::layout::strided_offsets(shape, within, axis, start, step).into_iter().map(|o| o as u32).collect()
}

/// The im2col map: for each patch element, the image offset (u32::MAX for padding).
fn im2col_map(img: &[usize], w: &crate::ir::Window, patches: &[usize]) -> Vec<u32> {
    let mut map = vec![u32::MAX; patches.iter().product()];
    crate::ir::layout::im2col_map(img, w, patches, |o, i| map[o] = i as u32);
    map
}

/// The host kernel of a `Kernel::Collective`.
pub fn collective_op(g: &Graph, plan: &Plan, k: &Kernel) -> Result<HostOp, String> {
    let Kernel::Collective { values, bucket, wait } = k else {
        return Err("internal error: not a collective kernel".into());
    };
    if *wait {
        return Ok(HostOp::CollectiveWait { bucket: *bucket });
    }
    let slot = |v: Value| plan.slots[v.as_u32() as usize].ok_or_else(|| format!("internal error: {v} is not stored"));
    let mut copies = Vec::new();
    let mut bufs = Vec::new();
    for &v in values {
        let (x, dst) = (slot(g.nodes[v].args[0])?, slot(v)?);
        if x != dst {
            copies.push((x, dst));
        }
        bufs.push(dst);
    }
    Ok(HostOp::CollectiveStart { bucket: *bucket, copies, bufs })
}

/// The host kernel of a `Kernel::Host` node.
pub fn host_op(g: &Graph, plan: &Plan, out: Value) -> Result<HostOp, String> {
    host_op_maps(g, plan, out).map(compact)
}

/// Maximal runs of a map: (position, map value, length) with `map[k + i] = m + i`, or
/// `u32::MAX` throughout.
fn runs(map: &[u32]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for (k, &m) in map.iter().enumerate() {
        if let Some(last) = out.last_mut() {
            let extends = if last.1 == u32::MAX { m == u32::MAX } else { m != u32::MAX && m == last.1 + last.2 };
            if extends {
                last.2 += 1;
                continue;
            }
        }
        out.push((k as u32, m, 1));
    }
    out
}

/// A gather of `shape` from `src` read at `src_strides`: as runs when its innermost
/// contiguous block has 4 or more elements, computed block by block (what `compact`
/// makes of the full map, without building it: the CNN's pooling gradients broadcast
/// 200K to 400K elements, 1 to 2.4 ms each through the map), else as the map (`compact`
/// decides).
fn gather(src: Slot, dst: Slot, shape: &[usize], src_strides: &[usize]) -> HostOp {
    if let Some((starts, rows, cols, cs)) = batched_transpose(shape, src_strides) {
        return HostOp::Transpose { src, dst, starts, rows, cols, cs };
    }
    match block_runs(shape, src_strides) {
        Some(runs) => HostOp::GatherRuns { src, dst, runs },
        None => HostOp::Gather { src, dst, map: offsets(shape, src_strides, 0) },
    }
}

/// `(starts, rows, cols, cs)` when reading a `shape` at `strides` transposes the last two
/// axes (axes of size 1 aside): the last axis (`cols`) read `cs` apart, the one before
/// (`rows`) contiguous, at least 8 of each, and every matrix's first float at `starts`
/// (one per position of the leading axes). Smaller blocks stay index maps.
fn batched_transpose(shape: &[usize], strides: &[usize]) -> Option<(Vec<u32>, usize, usize, usize)> {
    let axes: Vec<(usize, usize)> = shape.iter().zip(strides).map(|(&d, &s)| (d, s)).filter(|&(d, _)| d != 1).collect();
    let [lead @ .., (rows, 1), (cols, cs)] = axes.as_slice() else { return None };
    if *rows < 8 || *cols < 8 || *cs < 2 || u32::try_from(shape.iter().product::<usize>()).is_err() {
        return None;
    }
    let (ls, lt): (Vec<usize>, Vec<usize>) = lead.iter().copied().unzip();
    let starts = crate::ir::layout::gather_offsets(&ls, &lt, 0).into_iter().map(|o| o as u32).collect();
    Some((starts, *rows, *cols, *cs))
}

/// `runs(offsets(shape, strides, 0))` when the map's innermost contiguous block (the
/// trailing dims read at unit stride, row-major) has at least 4 elements, computed from
/// the blocks' starts: within a block the map is contiguous, and consecutive blocks
/// merge when one continues the other, as `runs` merges them. None for shorter blocks.
fn block_runs(shape: &[usize], strides: &[usize]) -> Option<Vec<Run>> {
    let mut j = shape.len();
    let mut block = 1usize;
    while j > 0 {
        let d = shape[j - 1];
        if d != 1 && strides[j - 1] != block {
            break;
        }
        block *= d;
        j -= 1;
    }
    if block < 4 || u32::try_from(shape.iter().product::<usize>()).is_err() {
        return None;
    }
    let mut out: Vec<Run> = Vec::new();
    for (b, start) in crate::ir::layout::gather_offsets(&shape[..j], &strides[..j], 0).into_iter().enumerate() {
        let m = start as u32;
        if let Some(last) = out.last_mut() {
            if m == last.1.wrapping_add(last.2) {
                last.2 += block as u32;
                continue;
            }
        }
        out.push(((b * block) as u32, m, block as u32));
    }
    Some(out)
}

/// Index maps with runs of 4 or more on average become run lists.
fn compact(op: HostOp) -> HostOp {
    let long = |map: &[u32], r: &[Run]| r.len() * 4 <= map.len();
    match op {
        HostOp::Gather { src, dst, map } => {
            let r = runs(&map);
            if long(&map, &r) {
                HostOp::GatherRuns { src, dst, runs: r }
            } else {
                HostOp::Gather { src, dst, map }
            }
        }
        HostOp::Scatter { parts, dst } => {
            let rs: Vec<Vec<Run>> = parts.iter().map(|(_, m)| runs(m)).collect();
            if parts.iter().zip(&rs).all(|((_, m), r)| long(m, r)) {
                HostOp::ScatterRuns { parts: parts.into_iter().zip(rs).map(|((s, _), r)| (s, r)).collect(), dst }
            } else {
                HostOp::Scatter { parts, dst }
            }
        }
        op => op,
    }
}

fn host_op_maps(g: &Graph, plan: &Plan, out: Value) -> Result<HostOp, String> {
    let node = &g.nodes[out];
    let slot = |v: Value| plan.slots[v.as_u32() as usize].ok_or_else(|| format!("internal error: {v} has no buffer"));
    let dst = slot(out)?;
    let os = dims(g, out);
    Ok(match &node.op {
        Op::Transpose { perm } => {
            let x = node.args[0];
            let xs = strides(&dims(g, x));
            let src: Vec<usize> = perm.iter().map(|&p| xs[p as usize]).collect();
            match (&g.nodes[x].op, plan.slots[x.as_u32() as usize]) {
                // A folded im2col: read the image through both maps.
                (Op::Im2col(w), None) => {
                    let img = g.nodes[x].args[0];
                    let imap = im2col_map(&dims(g, img), w, &dims(g, x));
                    let tmap = offsets(&os, &src, 0);
                    let map = tmap.iter().map(|&j| imap.get(j as usize).copied().unwrap_or(u32::MAX)).collect();
                    HostOp::Gather { src: slot(img)?, dst, map }
                }
                _ => gather(slot(x)?, dst, &os, &src),
            }
        }
        Op::Slice { axis, start, step, .. } => {
            let x = node.args[0];
            let map = strided_offsets(&os, &dims(g, x), *axis as usize, *start, *step);
            HostOp::Gather { src: slot(x)?, dst, map }
        }
        Op::Broadcast { .. } => {
            let x = node.args[0];
            let xd = dims(g, x);
            let xs = strides(&xd);
            let (r, k) = (os.len(), xd.len());
            let mut src = vec![0usize; r];
            for j in 0..k {
                src[r - k + j] = if xd[j] == 1 { 0 } else { xs[j] };
            }
            gather(slot(x)?, dst, &os, &src)
        }
        Op::Pad { axis, start, step, .. } => {
            let x = node.args[0];
            let map = strided_offsets(&dims(g, x), &os, *axis as usize, *start, *step);
            HostOp::Scatter { parts: vec![(slot(x)?, map)], dst }
        }
        Op::Concat { axis } => {
            let a = *axis as usize;
            let ostr = strides(&os);
            let mut parts = Vec::new();
            let mut off = 0;
            for &x in &node.args {
                let xd = dims(g, x);
                parts.push((slot(x)?, offsets(&xd, &ostr, off * ostr[a])));
                off += xd[a];
            }
            HostOp::Scatter { parts, dst }
        }
        Op::Reduce { op, axes } => {
            let x = node.args[0];
            let xd = dims(g, x);
            let ostr = strides(&os);
            let mut d = Vec::new();
            let mut k = 0;
            for i in 0..xd.len() {
                if axes.contains(&(i as u32)) {
                    d.push(0);
                } else {
                    d.push(ostr.get(k).copied().unwrap_or(0));
                    k += 1;
                }
            }
            HostOp::Reduce { src: slot(x)?, dst, map: offsets(&xd, &d, 0), op: *op }
        }
        Op::Gather => {
            let td = dims(g, node.args[0]);
            HostOp::GatherRows {
                table: slot(node.args[0])?,
                ids: slot(node.args[1])?,
                dst,
                rows: td[0],
                row: td[1..].iter().product(),
            }
        }
        Op::ScatterAdd { .. } => HostOp::ScatterRows {
            ids: slot(node.args[0])?,
            src: slot(node.args[1])?,
            dst,
            rows: os[0],
            row: os[1..].iter().product(),
        },
        Op::OneHot { n } => HostOp::OneHot { ids: slot(node.args[0])?, dst, n: *n as usize },
        Op::Iota { axis } => {
            let st = strides(&os);
            let a = *axis as usize;
            let n: usize = os.iter().product();
            HostOp::Const { dst, values: (0..n).map(|i| ((i / st[a]) % os[a]) as f32).collect() }
        }
        Op::Rand { stream } => HostOp::Rand { dst, stream: *stream },
        Op::Im2col(w) => {
            let x = node.args[0];
            HostOp::Gather { src: slot(x)?, dst, map: im2col_map(&dims(g, x), w, &os) }
        }
        Op::Col2im { window, .. } => {
            let p = node.args[0];
            let imap = im2col_map(&os, window, &dims(g, p));
            match (&g.nodes[p].op, plan.slots[p.as_u32() as usize]) {
                // A folded transpose: scatter from its input, composing the maps.
                (Op::Transpose { perm }, None) => {
                    let y = g.nodes[p].args[0];
                    let ys = strides(&dims(g, y));
                    let src: Vec<usize> = perm.iter().map(|&q| ys[q as usize]).collect();
                    let tmap = offsets(&dims(g, p), &src, 0);
                    let mut map = vec![u32::MAX; tmap.len()];
                    for (j, &t) in tmap.iter().enumerate() {
                        if let Some(m) = map.get_mut(t as usize) {
                            *m = imap[j];
                        }
                    }
                    HostOp::Scatter { parts: vec![(slot(y)?, map)], dst }
                }
                _ => HostOp::Scatter { parts: vec![(slot(p)?, imap)], dst },
            }
        }
        other => return Err(format!("internal error: no host kernel for {}", other.name())),
    })
}

/// The tables of a schedule: host ops and GEMMs in kernel order, plus the update copies.
pub fn gemm_op(plan: &Plan, k: &Kernel, threads: usize) -> Result<GemmOp, String> {
    let Kernel::MatMul { out, a, b, a_t, b_t, a_shared, b_shared, batch, m, k: kk, n, scale, accumulate, .. } = k
    else {
        return Err("internal error: not a matmul".into());
    };
    let slot = |v: &Value| plan.slots[v.as_u32() as usize].ok_or_else(|| format!("internal error: {v} has no buffer"));
    let flops = 2 * batch * m * kk * n;
    // The team's workers spin between jobs, so posting a part costs about a microsecond:
    // the LSTM workload's 4 MFLOP recurrent products (30 us) gain from two threads. (With
    // rayon's sleeping workers a wake-up cost as much as 10 MFLOP of a small GEMM.)
    // A product of very few rows splits badly: below 16 rows it stays whole.
    let threads = if flops >= PAR_MIN_FLOPS && (*batch >= 2 || *m >= 16) { threads.max(1) } else { 1 };
    let mut op = GemmOp {
        a: slot(a)?,
        b: slot(b)?,
        out: slot(out)?,
        a_t: *a_t,
        b_t: *b_t,
        a_batch_stride: if *a_shared { 0 } else { m * kk },
        b_batch_stride: if *b_shared { 0 } else { kk * n },
        batch: *batch,
        m: *m,
        k: *kk,
        n: *n,
        scale: *scale,
        accumulate: *accumulate,
        pieces: Vec::new(),
        epilogue: None,
    };
    let p = op.product(std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
    op.pieces = gemm::pieces(&p, *batch, threads)
        .into_iter()
        .enumerate()
        .map(|(part, piece)| GemmPiece { piece, part })
        .collect();
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row-major strides of `shape`, with the dims in `zero` read at stride 0 (a broadcast).
    fn strides_of(shape: &[usize], zero: &[usize]) -> Vec<usize> {
        let mut s = vec![0; shape.len()];
        let mut acc = 1;
        for j in (0..shape.len()).rev() {
            if !zero.contains(&j) {
                s[j] = acc;
                acc *= shape[j];
            }
        }
        s
    }

    /// `block_runs` is what `compact` makes of the full map, whenever it answers.
    #[test]
    fn block_runs_equal_the_runs_of_the_map() {
        let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
            // The CNN's pooling gradient: [64, 16, 1, 1, 7, 7] broadcast over the window.
            (vec![64, 16, 2, 2, 7, 7], strides_of(&[64, 16, 2, 2, 7, 7], &[2, 3])),
            (vec![3, 4, 5], strides_of(&[3, 4, 5], &[])),
            (vec![3, 4, 5], strides_of(&[3, 4, 5], &[0])),
            (vec![3, 4, 5], strides_of(&[3, 4, 5], &[1])),
            (vec![3, 1, 4, 8], strides_of(&[3, 1, 4, 8], &[0])),
            (vec![2, 3, 2], strides_of(&[2, 3, 2], &[1])),
            (vec![5, 6], vec![1, 5]),
            (vec![4, 6], vec![6, 1]),
            (vec![7], vec![1]),
            (vec![2, 0, 4], vec![0, 4, 1]),
            (vec![], vec![]),
        ];
        let mut answered = 0;
        for (shape, strides) in cases {
            let map = offsets(&shape, &strides, 0);
            if let Some(b) = block_runs(&shape, &strides) {
                answered += 1;
                assert_eq!(b, runs(&map), "{shape:?} at {strides:?}");
                assert!(b.len() * 4 <= map.len(), "{shape:?}: runs that compact would not keep");
            }
            // (Transposes of the last two axes become `Transpose` kernels instead: tested
            // in `batched_transposes_are_recognized`.)
            let fast = compact(gather(slot0(), slot0(), &shape, &strides));
            if batched_transpose(&shape, &strides).is_some() {
                assert!(matches!(fast, HostOp::Transpose { .. }), "{shape:?} at {strides:?}");
                continue;
            }
            let full = compact(HostOp::Gather { src: slot0(), dst: slot0(), map });
            assert_eq!(format!("{full:?}"), format!("{fast:?}"), "{shape:?} at {strides:?}");
        }
        assert_eq!(answered, 7);
    }

    /// Reads that transpose the last two axes become `Transpose` kernels that move what the
    /// index map would (attention's `Kᵀ` among them); other reads do not.
    #[test]
    fn batched_transposes_are_recognized() {
        let t = |shape: &[usize], strides: &[usize]| {
            batched_transpose(shape, strides).map(|(s, r, c, cs)| (s.len(), r, c, cs))
        };
        // [2048, 512] from a [512, 2048] source: an LSTM's Whᵀ.
        assert_eq!(t(&[2048, 512], &[1, 2048]), Some((1, 2048, 512, 2048)));
        // Attention's Kᵀ: [16, 4, 32, 256] from [16, 256, 4, 32].
        assert_eq!(t(&[16, 4, 32, 256], &[32768, 32, 1, 128]), Some((64, 32, 256, 128)));
        // A batch of [8, 9] from [3, 9, 8], with an axis of size 1.
        assert_eq!(t(&[3, 1, 8, 9], &[72, 7, 1, 8]), Some((3, 8, 9, 8)));
        // Not transposes: a copy, a middle-axis swap, a broadcast, small blocks.
        assert_eq!(t(&[8, 9], &[9, 1]), None);
        assert_eq!(t(&[2, 9, 8], &[8, 16, 1]), None);
        assert_eq!(t(&[8, 9], &[1, 0]), None);
        assert_eq!(t(&[4, 5], &[1, 4]), None);
        let cases = [
            (vec![2048usize, 512], vec![1usize, 2048]),
            (vec![16, 4, 32, 256], vec![32768, 32, 1, 128]),
            (vec![3, 1, 8, 9], vec![72, 7, 1, 8]),
        ];
        for (shape, strides) in cases {
            let HostOp::Transpose { starts, rows, cols, cs, .. } = gather(slot0(), slot0(), &shape, &strides) else {
                panic!("{shape:?}: not a Transpose kernel");
            };
            // The kernel's definition against the index map of the same read.
            let map = offsets(&shape, &strides, 0);
            assert_eq!(starts.len() * rows * cols, map.len());
            for (k, &m) in map.iter().enumerate() {
                let (b, r, c) = (k / (rows * cols), k / cols % rows, k % cols);
                assert_eq!(m as usize, starts[b] as usize + c * cs + r, "{shape:?} at {k}");
            }
        }
    }

    fn slot0() -> Slot {
        Slot { region: Region::Arena, offset: 0, len: 0 }
    }
}
