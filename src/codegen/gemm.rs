//! Matrix products on the `gemm` crate's microkernels and packing routines, driven here so
//! that the packing buffers come from a workspace sized once per executable: nothing is
//! allocated inside a step. (`gemm::gemm` allocates its packing buffers, and a flag
//! vector, on every call, and takes no workspace.) Owning the loops also lets a product
//! pick its orientation and run an epilogue on each block as soon as it is final.
//!
//! The loops are the usual three-level blocking (columns by `nc`, depth by `kc`, rows by
//! `mc`, then micro-tiles of `mr` x `nr`) in the crate's frame (`Frame`): a row-major
//! product `out = a @ b` is computed as `outᵀ = bᵀ aᵀ`, so the microkernels' vector
//! dimension runs along `out`'s contiguous rows, except for a narrow result (fewer
//! columns than a vector), which runs with its vectors down its columns when `a` runs
//! that way, or else as dot products (`dots`). Block sizes come from the crate's
//! `kernel_params` (its cache model), and the packing decisions are mostly the crate's: an
//! operand is packed when the microkernel cannot read it in place or when reuse pays for
//! the copy. Two cases of few rows (a recurrent step's batch of 32) are nnc's own: a
//! left operand whose rows lie a page or more apart is packed one panel at a time, the
//! panel used by every column tile before the next (`PANEL_NN`), and a right operand
//! stored down its columns is read in place with the vectors down the output's columns
//! (`few_rows_b_down`). And a left operand contiguous along the vectors, its rows under a
//! page apart, is read in place however many column tiles reuse it, unless other threads
//! run other pieces of the product beside it (`packs_chunk`); one stored with its depth
//! contiguous is packed by register transposes (`pack_left`, `super::pack`).
//!
//! A product is split across threads into pieces, each with its own part of the
//! workspace: the matrices of a batch, or else the output's rows or columns, whichever
//! leaves less packing done twice (each thread packs its part of the split operand and
//! all of the other).

use gemm_common::microkernel::{HMicroKernelFn, MicroKernelFn};

/// A packing routine: (width, depth, dst, src, src_cs, src_rs, dst_stride).
type PackFn = unsafe fn(usize, usize, *mut f32, *const f32, isize, isize, usize);

/// One microkernel family of the `gemm-f32` crate, with the packing routines that match it.
#[derive(Clone, Copy)]
pub struct Isa {
    pub name: &'static str,
    /// f32 lanes of a vector.
    pub lanes: usize,
    /// Micro-tile rows (a multiple of `lanes`) and columns.
    mr: usize,
    nr: usize,
    /// The microkernel for `(vectors - 1, columns - 1)` of a micro-tile.
    ukr: fn(usize, usize) -> MicroKernelFn<f32>,
    /// The dot-product kernel for `(rows - 1, columns - 1)` of an `h_m` x `h_n` block of
    /// outputs, each a dot product of a left row and a right column, both contiguous.
    hukr: fn(usize, usize) -> HMicroKernelFn<f32>,
    h_m: usize,
    h_n: usize,
    pack_lhs: PackFn,
    pack_rhs: PackFn,
}

macro_rules! isa {
    ($name:expr, $module:ident, $simd:ident, $lanes:expr) => {{
        use gemm_f32::microkernel::$module::f32 as uk;
        const MR: usize = uk::MR_DIV_N * $lanes;
        unsafe fn pack_lhs(m: usize, k: usize, dst: *mut f32, src: *const f32, cs: isize, rs: isize, stride: usize) {
            let (dst, src) = (gemm_common::Ptr(dst), gemm_common::Ptr(src as *mut f32));
            // SAFETY: the caller passes a destination of `stride` floats per `MR` rows.
            unsafe {
                gemm_common::pack_operands::pack_lhs::<f32, $lanes, MR, _>(
                    gemm_common::simd::$simd,
                    m,
                    k,
                    dst,
                    src,
                    cs,
                    rs,
                    stride,
                )
            }
        }
        unsafe fn pack_rhs(n: usize, k: usize, dst: *mut f32, src: *const f32, cs: isize, rs: isize, stride: usize) {
            let (dst, src) = (gemm_common::Ptr(dst), gemm_common::Ptr(src as *mut f32));
            // SAFETY: the caller passes a destination of `stride` floats per `NR` columns.
            unsafe {
                gemm_common::pack_operands::pack_rhs::<f32, 1, { uk::NR }, _>(
                    gemm_common::simd::$simd,
                    n,
                    k,
                    dst,
                    src,
                    cs,
                    rs,
                    stride,
                )
            }
        }
        Isa {
            name: $name,
            lanes: $lanes,
            mr: MR,
            nr: uk::NR,
            ukr: |i, j| uk::UKR[i][j],
            hukr: |i, j| uk::H_UKR[i][j],
            h_m: uk::H_M,
            h_n: uk::H_N,
            pack_lhs,
            pack_rhs,
        }
    }};
}

/// The microkernel families this CPU runs, best first (empty: use `gemm::gemm`).
pub fn isas() -> Vec<Isa> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            out.push(isa!("avx512f", avx512f, Avx512f, 16));
        }
        if std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("avx2") {
            out.push(isa!("fma", fma, Fma, 8));
        }
    }
    out
}

/// The family products use on this CPU.
pub fn isa() -> Option<Isa> {
    static ISA: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| isas().first().copied())
}

/// Packs `m` rows by `k` depth steps of a left operand (strides `(cs, rs)`: depth, rows) into
/// panels `stride` floats apart: the crate's routine, or, for an operand contiguous along
/// the depth on AVX-512, `pack::pack_lhs_t`, which transposes 16 x 16 blocks in registers
/// where the crate's gathers a float at a time (the MLP's `128x256 @ (512x256)ᵀ`).
/// # Safety
/// As for the crate's routine: `src` addresses the rows and depths, `dst` the panels.
unsafe fn pack_left(
    isa: &Isa,
    m: usize,
    k: usize,
    dst: *mut f32,
    src: *const f32,
    (cs, rs): (isize, isize),
    stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if cs == 1 && rs != 1 && isa.lanes == 16 && isa.mr == super::pack::MR {
        // SAFETY: a 16-lane family is AVX-512F; the layout is the crate's (as for this
        // function).
        return unsafe { super::pack::pack_lhs_t(m, k, dst, src, rs, stride) };
    }
    // SAFETY: as for this function.
    unsafe { (isa.pack_lhs)(m, k, dst, src, cs, rs, stride) }
}

/// A JIT-compiled epilogue over a block of a product's result: (arena, persistent, first
/// row, end row, first column, end column).
pub type TileFn = unsafe extern "C" fn(*mut f32, *mut f32, i64, i64, i64, i64);

/// An epilogue and the regions it runs over.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue {
    pub f: TileFn,
    pub arena: *mut f32,
    pub persistent: *mut f32,
}

/// A row-major product `out[m, n] (row stride n) = scale * a @ b`, plus `out`'s previous
/// contents when `accumulate`; `a` is read at `a_rs`/`a_cs` (row and column strides), `b`
/// likewise. `epilogue` runs on each block of `out` once it is final, with the block's
/// rows and columns offset by `row0` and `col0` (where this product sits in the whole).
#[derive(Clone, Copy, Debug)]
pub struct Product {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const f32,
    pub a_rs: isize,
    pub a_cs: isize,
    pub b: *const f32,
    pub b_rs: isize,
    pub b_cs: isize,
    pub out: *mut f32,
    pub out_rs: isize,
    pub scale: f32,
    pub accumulate: bool,
    pub epilogue: Option<Epilogue>,
    pub row0: usize,
    pub col0: usize,
    /// Other threads compute other pieces of the same product at the same time (they
    /// share the memory system: `packs_chunk`).
    pub concurrent: bool,
}

impl Product {
    /// `out = op(a) @ op(b)` over dense row-major matrices: `a` stored [m, k] (or [k, m]
    /// when `a_t`), `b` stored [k, n] (or [n, k] when `b_t`), `out` [m, n]; scale 1, no
    /// accumulation, no epilogue.
    pub fn row_major(
        (m, k, n): (usize, usize, usize),
        a: *const f32,
        a_t: bool,
        b: *const f32,
        b_t: bool,
        out: *mut f32,
    ) -> Product {
        let (a_rs, a_cs) = if a_t { (1, m as isize) } else { (k as isize, 1) };
        let (b_rs, b_cs) = if b_t { (1, k as isize) } else { (n as isize, 1) };
        Product {
            m,
            n,
            k,
            a,
            a_rs,
            a_cs,
            b,
            b_rs,
            b_cs,
            out,
            out_rs: n as isize,
            scale: 1.0,
            accumulate: false,
            epilogue: None,
            row0: 0,
            col0: 0,
            concurrent: false,
        }
    }
}

/// Runs `p`'s epilogue, if any, on rows `r` and columns `c` of its result.
fn finish(p: &Product, r: (usize, usize), c: (usize, usize)) {
    if let Some(e) = p.epilogue {
        let (r0, c0) = (p.row0 as i64, p.col0 as i64);
        // SAFETY: the epilogue was compiled for these regions; the block lies inside the
        // product, whose rows and columns are the epilogue's loop.
        unsafe { (e.f)(e.arena, e.persistent, r0 + r.0 as i64, r0 + r.1 as i64, c0 + c.0 as i64, c0 + c.1 as i64) };
    }
}

/// The blocking of a product in the crate's frame (`mm` rows along the vectors, `nn`
/// columns, depth `k`).
struct Blocking {
    kc: usize,
    mc: usize,
    nc: usize,
    pack_rhs: bool,
    prepack_lhs: bool,
    /// Left panels packed one at a time, each used by all the block's column tiles
    /// before the next (few columns: `nn` small).
    panel_outer: bool,
    /// Workspace floats for the packed right operand (one `nc` x `kc` block) and the
    /// packed left operand (all rows when prepacked, one `mc` block otherwise).
    rhs_len: usize,
    lhs_len: usize,
}

/// A column-block wider than this many micro-tiles reuses each packed left panel enough
/// to pack it even when it could be read in place (the crate's single-thread threshold),
/// if its rows lie a page (`PANEL_STRIDE`) or more apart (`packs_chunk`).
const LHS_PACK_TILES: usize = 8;

/// Whether a block of `mb` rows and `nb` columns (crate's frame) packs its left operand,
/// read at strides `lhs` (rows, columns), chunk by chunk: when the microkernels cannot
/// read it in place (not contiguous along the vectors, or a partial vector), or when many
/// column tiles reuse its panels and either their rows lie a page or more apart or other
/// threads run beside this one (`concurrent`). On a thread of its own, rows closer
/// together are read in place whatever the reuse: the MLP's forward `x @ W1` (W1's rows
/// 2 KB apart, 22 column tiles) took 0.78-0.80 ms a step packing W1, just updated and out
/// of L2, and 0.68-0.70 ms reading it in place, where the first column tile's reads
/// overlap the arithmetic (level with the operand hot in L2: 0.79 ms both ways). With
/// two threads each reading half of W1 at once, in place was the slower (0.51-0.52 ms
/// against 0.45-0.51 packed).
fn packs_chunk(mb: usize, nb: usize, (lhs_rs, lhs_cs): (isize, isize), concurrent: bool, isa: &Isa) -> bool {
    lhs_rs != 1
        || !mb.is_multiple_of(isa.lanes)
        || (nb > LHS_PACK_TILES * isa.nr && (concurrent || lhs_cs.unsigned_abs() >= PANEL_STRIDE))
}

/// The right operand, when contiguous along the depth, is packed only for more than this
/// many micro-tile rows (the crate's x86 threshold).
const RHS_PACK_TILES: usize = 128;

/// A block of at most this many columns in the crate's frame (a product of few rows, such
/// as a recurrent step's `h @ W` over a batch of 32) whose left operand's rows lie at
/// least `PANEL_STRIDE` floats (a page) apart along the depth packs its left panels one
/// at a time, each used by all the block's column tiles while in cache. Read in place,
/// such a panel (a few lines of each of hundreds of rows a page or more apart: a TLB
/// entry per row, every row in the same cache sets) was fetched again for each column
/// tile: 32x512x2048 (`W` rows 8 KB apart) ran at 57 GFLOP/s in place and 93-96 packed
/// panel by panel (hot, `examples`-style loop), 1.8-2.0 -> 1.3-1.5 ms in the scaling
/// LSTM's step. Rows closer together stay in place: 2 KB apart (32x128x512 in the LSTM
/// workload's step) packing cost more than it saved (20 calls: 0.78 -> 0.86-1.0 ms).
const PANEL_NN: usize = 64;
const PANEL_STRIDE: usize = 1024;

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

fn blocking(isa: &Isa, f: &Frame, k: usize, concurrent: bool) -> Blocking {
    let (mm, nn, rhs_rs) = (f.mm, f.nn, f.rhs_rs);
    let lhs @ (lhs_rs, lhs_cs) = (f.lhs_rs, f.lhs_cs);
    let (mr, nr) = (isa.mr, isa.nr);
    let p = if mm <= 64 && nn <= 64 {
        let kc = k.clamp(1, 512);
        let mc = (gemm_common::cache::CACHE_INFO[1].cache_bytes / 4 / kc) / mr * mr;
        gemm_common::cache::KernelParams { kc, mc, nc: round_up(nn, nr) }
    } else {
        gemm_common::cache::kernel_params(mm, nn, k, mr, nr, 4)
    };
    let kc = p.kc.clamp(1, k.max(1));
    let mc = p.mc.max(mr);
    let nc = if p.nc > 0 { round_up(p.nc, nr) } else { 128 * nr };
    let pack_rhs = if rhs_rs.unsigned_abs() == 1 { mm > RHS_PACK_TILES * mr } else { mm > 2 * mr };
    let prepack_lhs = mm <= 2 * mc && (!mm.is_multiple_of(isa.lanes) || lhs_rs != 1);
    let chunk_packs = packs_chunk(mm, nc.min(nn), lhs, concurrent, isa);
    let panel_outer = !prepack_lhs && nn <= PANEL_NN && mm >= 2 * mr && lhs_cs.unsigned_abs() >= PANEL_STRIDE;
    Blocking {
        kc,
        mc,
        nc,
        pack_rhs,
        prepack_lhs,
        panel_outer,
        rhs_len: if pack_rhs { kc * round_up(nc.min(nn), nr) } else { 0 },
        lhs_len: if prepack_lhs {
            kc * round_up(mm, mr)
        } else if panel_outer {
            kc * mr
        } else if chunk_packs {
            kc * round_up(mc.min(mm), mr)
        } else {
            0
        },
    }
}

/// Workspace alignment, in floats (a cache line).
const ALIGN: usize = 16;

/// A product in the crate's frame: `dst[mm, nn] = lhs[mm, k] @ rhs[k, nn]`, the
/// microkernels' vectors running along `mm`.
struct Frame {
    mm: usize,
    nn: usize,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
    rhs_cs: isize,
    dst_rs: isize,
    dst_cs: isize,
    /// `mm` runs along the output's rows (`m`), not its columns.
    along_m: bool,
}

/// Whether `p` runs as dot products (the crate's horizontal kernels): a narrow result
/// whose left operand runs along its rows, not down its columns (a last layer's
/// forward product `h W`, 10 classes). Vectors along the 10 columns leave 6 of 16 lanes
/// idle and 6 accumulator chains for 8 FMAs in flight (43 GFLOP/s at 128x256x10); dot
/// products keep every lane busy along the depth (90 GFLOP/s), the right operand copied
/// down its columns first when it is not already (a 10 x 256 copy).
fn dots(isa: &Isa, p: &Product) -> bool {
    p.n < isa.lanes && p.a_rs != 1 && p.a_cs == 1 && p.k >= 2 * isa.lanes && p.m >= isa.h_m
}

/// Whether `p` has few rows and a right operand stored down its columns (`dz @ Wᵀ`, a
/// recurrent step's backward product): vectors then run down the output's columns (the
/// left operand, small, packed) and the microkernels read `b` in place, each of its
/// columns contiguous along the depth, every element once. In the usual frame `b` is
/// the left operand and is not contiguous along the vectors, so all of it was packed on
/// every call (32x2048x512: 52 -> 103 GFLOP/s; 32x512x128: 57 -> 109). A short depth
/// (a classifier's 10) stays in the usual frame, where an epilogue runs over 64-wide
/// row pieces rather than 6-wide column pieces (32x10x128 with its epilogue: 7 -> 20 us
/// in the other frame).
fn few_rows_b_down(p: &Product) -> bool {
    p.m <= SMALL_M && p.b_rs == 1 && p.b_cs != 1 && p.n >= 2 * p.m && p.k >= 2 * SMALL_M
}

/// At most this many rows make a product "few rows" (`few_rows_b_down`).
const SMALL_M: usize = 64;

/// The crate's frame for `p`. Vectors run along the output's contiguous rows (`outᵀ =
/// bᵀ aᵀ`), unless the output is narrower than a vector while `a` is contiguous down its
/// columns (a weight gradient `hᵀ dy` of a 10-class layer): then along its columns, with
/// `a` read in place and every lane useful.
fn frame(isa: &Isa, p: &Product) -> Frame {
    if (p.n < isa.lanes && p.a_rs == 1 && p.m >= isa.lanes) || few_rows_b_down(p) {
        Frame {
            mm: p.m,
            nn: p.n,
            lhs: p.a,
            lhs_rs: p.a_rs,
            lhs_cs: p.a_cs,
            rhs: p.b,
            rhs_rs: p.b_rs,
            rhs_cs: p.b_cs,
            dst_rs: p.out_rs,
            dst_cs: 1,
            along_m: true,
        }
    } else {
        Frame {
            mm: p.n,
            nn: p.m,
            lhs: p.b,
            lhs_rs: p.b_cs,
            lhs_cs: p.b_rs,
            rhs: p.a,
            rhs_rs: p.a_cs,
            rhs_cs: p.a_rs,
            dst_rs: 1,
            dst_cs: p.out_rs,
            along_m: false,
        }
    }
}

/// Workspace floats one thread needs for `p` (0 without a microkernel family).
pub fn workspace_len(p: &Product) -> usize {
    isa().map_or(0, |isa| workspace_len_with(&isa, p))
}

/// Workspace floats `drive` needs for `p` with family `isa`.
pub fn workspace_len_with(isa: &Isa, p: &Product) -> usize {
    if dots(isa, p) {
        return dots_len(p);
    }
    let f = frame(isa, p);
    blocked_len(&blocking(isa, &f, p.k, p.concurrent))
}

/// Workspace floats of a blocked product: both packed operands, aligned.
fn blocked_len(b: &Blocking) -> usize {
    round_up(b.rhs_len, ALIGN) + b.lhs_len + ALIGN
}

/// Workspace floats of a product as dot products: its right operand copied down its
/// columns, unless it runs that way already.
fn dots_len(p: &Product) -> usize {
    if p.b_rs == 1 {
        0
    } else {
        p.n * p.k
    }
}

/// Computes `p` on this thread with `ws` (at least `workspace_len(p)` floats) as packing
/// space.
/// # Safety
/// The pointers and strides of `p` must address valid matrices, `out` not overlapping
/// `a` or `b`, and `ws` must hold `ws_len` floats.
pub unsafe fn run(p: &Product, ws: *mut f32, ws_len: usize) {
    match isa() {
        // SAFETY: as for this function.
        Some(isa) => unsafe { drive(&isa, p, ws, ws_len) },
        // SAFETY: as for this function.
        None => unsafe { crate_gemm(p) },
    }
}

/// `p` through `gemm::gemm` (which allocates): for CPUs without a family here.
unsafe fn crate_gemm(p: &Product) {
    // SAFETY: as for `run`.
    unsafe {
        gemm::gemm(
            p.m,
            p.n,
            p.k,
            p.out,
            1,
            p.out_rs,
            p.accumulate,
            p.a,
            p.a_cs,
            p.a_rs,
            p.b,
            p.b_cs,
            p.b_rs,
            1.0f32,
            p.scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
    finish(p, (0, p.m), (0, p.n));
}

/// The blocked loops of one product with one family; through `gemm::gemm` instead when
/// `ws_len` is short of `workspace_len_with(isa, p)` (which a plan never leaves it).
/// # Safety
/// As for `run`.
pub unsafe fn drive(isa: &Isa, p: &Product, ws: *mut f32, ws_len: usize) {
    if dots(isa, p) {
        // SAFETY: as for this function.
        return unsafe {
            if dots_len(p) <= ws_len {
                drive_dots(isa, p, ws)
            } else {
                crate_gemm(p)
            }
        };
    }
    let f = frame(isa, p);
    let Frame { mm, nn, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, dst_rs, dst_cs, along_m } = f;
    let (k, dst) = (p.k, p.out);
    if mm == 0 || nn == 0 {
        return;
    }
    if k == 0 {
        if !p.accumulate {
            for j in 0..nn as isize {
                for i in 0..mm as isize {
                    // SAFETY: inside the output.
                    unsafe { *dst.offset(i * dst_rs + j * dst_cs) = 0.0 };
                }
            }
        }
        finish(p, (0, p.m), (0, p.n));
        return;
    }
    let (lanes, mr, nr) = (isa.lanes, isa.mr, isa.nr);
    let b = blocking(isa, &f, k, p.concurrent);
    if blocked_len(&b) > ws_len {
        // SAFETY: as for this function.
        return unsafe { crate_gemm(p) };
    }
    let ws = ws.wrapping_add((ALIGN - (ws as usize / 4) % ALIGN) % ALIGN);
    let (ws_rhs, ws_lhs) = (ws, ws.wrapping_add(round_up(b.rhs_len, ALIGN)));
    // Strides of the right operand as the microkernels read it.
    let (r_rs, r_cs) = if b.pack_rhs { (nr as isize, 1) } else { (rhs_rs, rhs_cs) };
    let mut col = 0;
    while col < nn {
        let nb = b.nc.min(nn - col);
        let mut depth = 0;
        while depth < k {
            let kb = b.kc.min(k - depth);
            // The first depth block stores (or adds to the previous contents); later ones add.
            let status = if depth == 0 && !p.accumulate { 0 } else { 1 };
            let rhs_block = rhs.wrapping_offset(depth as isize * rhs_rs + col as isize * rhs_cs);
            if b.pack_rhs {
                // SAFETY: ws_rhs holds kc x round_up(nb, nr) floats.
                unsafe { (isa.pack_rhs)(nb, kb, ws_rhs, rhs_block, rhs_cs, rhs_rs, b.kc * nr) };
            }
            if b.prepack_lhs {
                let src = lhs.wrapping_offset(depth as isize * lhs_cs);
                // SAFETY: ws_lhs holds kc x round_up(mm, mr) floats.
                unsafe { pack_left(isa, mm, kb, ws_lhs, src, (lhs_cs, lhs_rs), b.kc * mr) };
            }
            let mut row = 0;
            while row < mm {
                let mut mb = b.mc.min(mm - row);
                if mb > lanes && !b.prepack_lhs {
                    mb = mb / lanes * lanes;
                }
                let pack_chunk = !b.prepack_lhs && packs_chunk(mb, nb, (lhs_rs, lhs_cs), p.concurrent, isa);
                // One micro-tile: rows `i` and columns `j` of this block, the left
                // operand's panel at `lhs_tile` read with column stride `l_cs`.
                let tile = |i: usize, j: usize, lhs_tile: *const f32, l_cs: isize| {
                    let nbi = nr.min(nb - j * nr);
                    let rhs_tile = if b.pack_rhs {
                        ws_rhs.wrapping_add(j * b.kc * nr) as *const f32
                    } else {
                        rhs_block.wrapping_offset((j * nr) as isize * rhs_cs)
                    };
                    let mbi = mr.min(mb - i * mr);
                    let r = row + i * mr;
                    let c = col + j * nr;
                    let out = dst.wrapping_offset(r as isize * dst_rs + c as isize * dst_cs);
                    let ukr = (isa.ukr)(mbi.div_ceil(lanes) - 1, nbi - 1);
                    // SAFETY: the tile lies inside the output; the operands are either
                    // packed with zero padding or read in place with whole vectors
                    // (`mb` a multiple of the lanes).
                    unsafe {
                        ukr(
                            mbi,
                            nbi,
                            kb,
                            out,
                            lhs_tile,
                            rhs_tile,
                            dst_cs,
                            dst_rs,
                            l_cs,
                            r_rs,
                            r_cs,
                            1.0,
                            p.scale,
                            status,
                            false,
                            false,
                            false,
                            std::ptr::null(),
                        )
                    };
                };
                // The epilogue runs once per column of micro-tiles (per left panel when
                // panel by panel) once the last depth block has made them final, rather
                // than per micro-tile: (r.., c..) in the crate's frame.
                let last = depth + kb == k;
                let done = |tr: (usize, usize), tc: (usize, usize)| {
                    if along_m {
                        finish(p, tr, tc);
                    } else {
                        finish(p, tc, tr);
                    }
                };
                let src = |i: usize| lhs.wrapping_offset((row + i * mr) as isize * lhs_rs + depth as isize * lhs_cs);
                if b.panel_outer {
                    // Each left panel packed once into one buffer, then used by every
                    // column tile while it is in cache.
                    for i in 0..mb.div_ceil(mr) {
                        let mbi = mr.min(mb - i * mr);
                        // SAFETY: ws_lhs holds kc x mr floats.
                        unsafe { pack_left(isa, mbi, kb, ws_lhs, src(i), (lhs_cs, lhs_rs), b.kc * mr) };
                        for j in 0..nb.div_ceil(nr) {
                            tile(i, j, ws_lhs, mr as isize);
                        }
                        if last {
                            // The panel's tiles are final: all of the block's columns.
                            done((row + i * mr, row + i * mr + mbi), (col, col + nb));
                        }
                    }
                } else {
                    for j in 0..nb.div_ceil(nr) {
                        for i in 0..mb.div_ceil(mr) {
                            if b.prepack_lhs {
                                tile(i, j, ws_lhs.wrapping_add((row / mr + i) * b.kc * mr), mr as isize);
                            } else if pack_chunk {
                                let panel = ws_lhs.wrapping_add(i * b.kc * mr);
                                if j == 0 {
                                    let mbi = mr.min(mb - i * mr);
                                    // SAFETY: the slab holds kc x round_up(mb, mr) floats.
                                    unsafe { pack_left(isa, mbi, kb, panel, src(i), (lhs_cs, lhs_rs), b.kc * mr) };
                                }
                                tile(i, j, panel, mr as isize);
                            } else {
                                tile(i, j, src(i), lhs_cs);
                            }
                        }
                        if last {
                            // The column of tiles is final: all of the block's rows.
                            let c = col + j * nr;
                            done((row, row + mb), (c, c + nr.min(nb - j * nr)));
                        }
                    }
                }
                row += mb;
            }
            depth += kb;
        }
        col += nb;
    }
}

/// `p` as blocks of dot products; `ws` holds `b` copied down its columns unless it runs
/// along them already.
/// # Safety
/// As for `drive`.
unsafe fn drive_dots(isa: &Isa, p: &Product, ws: *mut f32) {
    let (m, n, k) = (p.m, p.n, p.k);
    let (b, b_cs) = if p.b_rs == 1 {
        (p.b, p.b_cs)
    } else {
        for j in 0..n {
            for d in 0..k {
                // SAFETY: ws holds n x k floats; (d, j) lies inside b.
                unsafe { *ws.add(j * k + d) = *p.b.offset(d as isize * p.b_rs + j as isize * p.b_cs) };
            }
        }
        (ws as *const f32, k as isize)
    };
    let status = if p.accumulate { 1 } else { 0 };
    for i in (0..m).step_by(isa.h_m) {
        let mb = isa.h_m.min(m - i);
        for j in (0..n).step_by(isa.h_n) {
            let nb = isa.h_n.min(n - j);
            let f = (isa.hukr)(mb - 1, nb - 1);
            let out = p.out.wrapping_offset(i as isize * p.out_rs + j as isize);
            let lhs = p.a.wrapping_offset(i as isize * p.a_rs);
            let rhs = b.wrapping_offset(j as isize * b_cs);
            // SAFETY: the block lies inside the output; rows of a and columns of b are
            // contiguous along the depth.
            unsafe { f(k, out, lhs, rhs, 1, p.out_rs, p.a_rs, b_cs, 1.0, p.scale, status, false, false, false) };
        }
        finish(p, (i, i + mb), (0, n));
    }
}

/// A piece of a (batched) product one thread computes: matrices `mats` of the batch, and
/// of each the output rows `rows` and columns `cols`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Piece {
    pub mats: (usize, usize),
    pub rows: (usize, usize),
    pub cols: (usize, usize),
    /// Other pieces run beside this one (`Product::concurrent`).
    pub concurrent: bool,
}

/// How to split a batch of `batch` products of shape `p` (pointers unused) across
/// `threads`: by matrices when there are several, else along the dimension of the crate's
/// frame that leaves less packing done twice. Piece edges fall on micro-tile edges.
pub fn pieces(p: &Product, batch: usize, threads: usize) -> Vec<Piece> {
    let t = threads.max(1);
    let whole = Piece { mats: (0, batch), rows: (0, p.m), cols: (0, p.n), concurrent: false };
    if t == 1 {
        return vec![whole];
    }
    if batch >= 2 {
        let t = t.min(batch);
        return (0..t)
            .map(|i| Piece { mats: (batch * i / t, batch * (i + 1) / t), concurrent: t > 1, ..whole })
            .collect();
    }
    let Some(isa) = isa() else { return vec![whole] };
    let (by_cols, unit) = if dots(&isa, p) {
        // Blocks of dot products by rows.
        (false, isa.h_m)
    } else {
        let f = frame(&isa, p);
        let b = blocking(&isa, &f, p.k, t > 1);
        // Each thread packs (or reads in place, across many column tiles) all of the
        // operand it does not split: split along the dimension whose other operand is
        // cheaper to handle twice (the MLP's forward 128x784x512 splits its 512 columns,
        // each thread reading half of W1: split the other way, both read all of it and
        // the forward product took 0.45 ms instead of 0.38 on two threads).
        let twice_if_mm = if b.pack_rhs { f.nn * p.k } else { 0 };
        let twice_if_nn = if b.lhs_len > 0 || f.nn > LHS_PACK_TILES * isa.nr { f.mm * p.k } else { 0 };
        // A dimension with fewer micro-tiles than threads cannot be split among them
        // all (a recurrent step's 32 rows); split the other.
        let (units_mm, units_nn) = (f.mm.div_ceil(isa.mr), f.nn.div_ceil(isa.nr));
        let along_mm = if units_mm < t || units_nn < t { units_mm >= units_nn } else { twice_if_mm < twice_if_nn };
        (along_mm != f.along_m, if along_mm { isa.mr } else { isa.nr })
    };
    let len = if by_cols { p.n } else { p.m };
    let units = len.div_ceil(unit);
    let t = t.min(units);
    let edge = |i: usize| (units * i / t * unit).min(len);
    (0..t)
        .map(|i| {
            let r = (edge(i), edge(i + 1));
            if by_cols {
                Piece { cols: r, concurrent: t > 1, ..whole }
            } else {
                Piece { rows: r, concurrent: t > 1, ..whole }
            }
        })
        .filter(|q| q.rows.0 < q.rows.1 && q.cols.0 < q.cols.1)
        .collect()
}

/// The part of matrix `i` of a batch that a piece covers (`a_stride`, `b_stride`: floats
/// between matrices; outputs are `m * n` apart, so matrix `i`'s rows are rows `i * m ..`
/// of the whole result, as its epilogue counts them).
pub fn piece_product(p: &Product, q: &Piece, i: usize, a_stride: usize, b_stride: usize) -> Product {
    let (r0, r1) = q.rows;
    let (c0, c1) = q.cols;
    Product {
        m: r1 - r0,
        n: c1 - c0,
        a: p.a.wrapping_add(i * a_stride).wrapping_offset(r0 as isize * p.a_rs),
        b: p.b.wrapping_add(i * b_stride).wrapping_offset(c0 as isize * p.b_cs),
        out: p.out.wrapping_add(i * p.m * p.n).wrapping_offset(r0 as isize * p.out_rs + c0 as isize),
        row0: p.row0 + i * p.m + r0,
        col0: p.col0 + c0,
        concurrent: q.concurrent,
        ..*p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator of test values.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every family against an f64 reference, over shapes that cross every blocking edge
    /// (partial vectors and tiles, several depth, row and column blocks), both operand
    /// orientations, scale and accumulation, on split pieces as on whole products.
    #[test]
    fn products_match_f64_reference() {
        let shapes = [
            (1, 1, 3),
            (3, 5, 7),
            (6, 16, 4),
            (17, 33, 9),
            (64, 64, 64),
            (7, 100, 600),
            (130, 10, 256),
            (32, 300, 520),
            (20, 1100, 160),
            (33, 700, 1040),
            (100, 3, 50),
            (9, 5, 40),
            (64, 15, 33),
            (128, 784, 30),
            (70, 520, 1100),
            (300, 257, 40),
        ];
        for isa in isas() {
            for (si, &(m, n, k)) in shapes.iter().enumerate() {
                for combo in 0..8 {
                    let (a_t, b_t, acc) = (combo & 1 != 0, combo & 2 != 0, combo & 4 != 0);
                    let a = values(m * k, si as u64 * 7 + 1);
                    let b = values(k * n, si as u64 * 7 + 2);
                    let init = values(m * n, si as u64 * 7 + 3);
                    let scale = if acc { -0.5 } else { 1.0 };
                    let dense = Product::row_major((m, k, n), a.as_ptr(), a_t, b.as_ptr(), b_t, std::ptr::null_mut());
                    let (a_rs, a_cs, b_rs, b_cs) = (dense.a_rs, dense.a_cs, dense.b_rs, dense.b_cs);
                    let mut want = vec![0f64; m * n];
                    for i in 0..m {
                        for j in 0..n {
                            let mut s = 0f64;
                            for p in 0..k {
                                let x = a[(i as isize * a_rs + p as isize * a_cs) as usize] as f64;
                                let y = b[(p as isize * b_rs + j as isize * b_cs) as usize] as f64;
                                s += x * y;
                            }
                            want[i * n + j] = scale as f64 * s + if acc { init[i * n + j] as f64 } else { 0.0 };
                        }
                    }
                    for threads in [1, 3] {
                        let mut out = init.clone();
                        let p = Product { out: out.as_mut_ptr(), scale, accumulate: acc, ..dense };
                        for q in pieces(&p, 1, threads) {
                            let part = piece_product(&p, &q, 0, 0, 0);
                            let len = workspace_len_with(&isa, &part);
                            let mut ws = vec![f32::NAN; len];
                            // SAFETY: the vectors above hold these matrices.
                            unsafe { drive(&isa, &part, ws.as_mut_ptr(), len) };
                        }
                        for (idx, (&o, &w)) in out.iter().zip(&want).enumerate() {
                            let tol = 1e-5 * (k as f64).sqrt() * 4.0;
                            assert!(
                                (o as f64 - w).abs() <= tol,
                                "{}: {m}x{k}x{n} a_t {a_t} b_t {b_t} acc {acc} threads {threads}: [{idx}] {o} vs {w}",
                                isa.name
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn pieces_cover_the_output_once() {
        let p = Product {
            m: 128,
            n: 784,
            k: 512,
            a: std::ptr::null(),
            a_rs: 512,
            a_cs: 1,
            b: std::ptr::null(),
            b_rs: 1,
            b_cs: 512,
            out: std::ptr::null_mut(),
            out_rs: 784,
            scale: 1.0,
            accumulate: false,
            epilogue: None,
            row0: 0,
            col0: 0,
            concurrent: false,
        };
        for (batch, threads) in [(1, 1), (1, 2), (1, 3), (5, 2), (2, 4)] {
            let ps = pieces(&p, batch, threads);
            let area: usize =
                ps.iter().map(|q| (q.mats.1 - q.mats.0) * (q.rows.1 - q.rows.0) * (q.cols.1 - q.cols.0)).sum();
            assert_eq!(area, batch * p.m * p.n, "{batch} x {threads}: {ps:?}");
        }
    }
}
