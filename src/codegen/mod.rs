//! Code generation: a scheduled, planned graph to one native step function (Cranelift).
//!
//! Elementwise kernels become f32x4 loops (a flat loop when every operand is read
//! element for element, else rows x columns with row/column/scalar broadcasts), with a
//! scalar tail; reductions become vector loops with a horizontal combine at the end.
//! On AVX-512, elementwise kernels run their transcendentals in strips through the
//! 16-lane host functions of `wide` (bit-identical to `math`'s 4-lane code).
//! GEMMs call `gemm` (the `gemm` crates' microkernels, packing into a workspace planned
//! here), and data-movement kernels call precomputed host routines (`host`). The step function calls every kernel in schedule order, then
//! copies the updates that were not computed in place. Takes `(&Schedule, &Plan)`:
//! codegen cannot run without a plan.

pub mod fp;
pub mod gemm;
pub mod host;
pub mod jobs;
pub mod math;
pub mod pack;
pub mod team;
pub mod wide;

use crate::buffers::{Plan, Region, Slot};
use crate::fusion::{broadcast_access, fused_nodes, regrouped_access, Access, Kernel, Schedule};
use crate::ir::{BinaryOp, Graph, Op, ReduceOp, UnaryOp, Value};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, AbiParam, BlockArg, InstBuilder, MemFlagsData, UserFuncName};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};
use host::{HostCtx, HostOp, Tables};
use math::E;
use std::collections::HashMap;

type ClValue = cranelift_codegen::ir::Value;

/// `step(arena, persistent, ctx)`.
pub type StepFn = unsafe extern "C" fn(*mut f32, *mut f32, *const HostCtx);

/// Elementwise kernels with at least this many elements are split across threads.
const PAR_MIN_ELEMENTS: usize = 1 << 12;

#[derive(Clone, Debug, Default)]
pub struct CodegenOptions {
    /// Fill dead arena buffers with NaN after each kernel (the planner's check).
    pub poison: bool,
    /// Threads for large GEMMs.
    pub threads: usize,
    /// Keep the Cranelift IR text (`nnc ir --stage clif`).
    pub keep_clif: bool,
    /// Run Cranelift's verifier (tests).
    pub verify: bool,
    /// Time every kernel (`nnc bench --profile`).
    pub profile: bool,
    /// Compute with denormals as IEEE says. By default a step runs with denormal results
    /// flushed to zero and denormal operands read as zero (MXCSR FTZ and DAZ), as XLA's
    /// CPU client and TensorFlow do: a denormal costs about 100 cycles per operation on
    /// this CPU, and Adam's second moment of tiny gradients, or the softmax of a confident
    /// classifier, lands there (the MLP step's Adam kernel ran 4x slower).
    pub keep_denormals: bool,
    /// Run each optimizer update as the epilogue of its weight gradient's GEMM
    /// (`fusion::Options::updates_in_epilogues`; off by default, slower here).
    pub fuse_updates: bool,
    /// Keep every transcendental in the JIT's own 4-lane code. Off by default: on a CPU
    /// with AVX-512 (`wide::available`), elementwise kernels with exp, log, tanh, sigmoid
    /// or erf run them in strips through the 16-lane host functions of `wide` (the same
    /// results bit for bit). Object files (`aot`) always get the 4-lane code.
    pub narrow_math: bool,
    /// Threads that run Cranelift's compile of the step's functions (`jobs`); 0: one per
    /// core this process may run on. Independent of `threads`: compiling is done before
    /// the step runs.
    pub compile_threads: usize,
}

/// The threads `compile` uses: `opts.compile_threads`, or one per core this process may
/// run on (its CPU affinity: a run pinned to one core compiles on one thread).
pub fn compile_threads(opts: &CodegenOptions) -> usize {
    match opts.compile_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Native code for one step, and the tables its callbacks read.
pub struct CompiledStep {
    /// Kept alive: dropping the module would free the code.
    _module: JITModule,
    pub step: StepFn,
    pub tables: Box<Tables>,
    pub clif: String,
    /// Kernel and epilogue functions compiled, and kernels and epilogues that share one
    /// compiled before (`define`).
    pub functions: usize,
    pub shared: usize,
    /// A hash of the machine code of every function, in the order they were defined
    /// (the same whether Cranelift ran on one thread or several: tests compare them).
    pub code_hash: u64,
}

/// What `emit` added to a module: the step function, the functions the tables point to
/// (filled in once the code has addresses: by the JIT, or by relocations of an object
/// file), and the tables.
pub struct Emitted {
    /// `step(arena, persistent, ctx)`.
    pub step: FuncId,
    /// The kernel of each `Tables::par` entry.
    pub par: Vec<FuncId>,
    /// GEMMs with an epilogue: (index in `Tables::gemm`, the epilogue's function).
    pub epilogues: Vec<(usize, FuncId)>,
    pub tables: Tables,
    pub clif: String,
    /// As in `CompiledStep`.
    pub functions: usize,
    pub shared: usize,
    /// The machine code defined here (`CompiledStep::code_hash`; without the functions
    /// handed to `jobs`).
    pub code: CodeHash,
}

/// `CompiledStep::code_hash`: each function's id and machine code, in definition order.
#[derive(Default)]
pub struct CodeHash(std::collections::hash_map::DefaultHasher);

impl CodeHash {
    fn add(&mut self, id: FuncId, bytes: &[u8]) {
        use std::hash::Hash;
        id.as_u32().hash(&mut self.0);
        bytes.hash(&mut self.0);
    }

    fn finish(&self) -> u64 {
        std::hash::Hasher::finish(&self.0)
    }
}

/// The target: this CPU's features; position-independent code for an object file that
/// goes into a shared library (`pic`).
pub fn isa(opts: &CodegenOptions, pic: bool) -> Result<std::sync::Arc<dyn cranelift_codegen::isa::TargetIsa>, String> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| f.set(k, v).map_err(|e| format!("cranelift flag {k}: {e}"));
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "enable_verifier", if opts.verify { "true" } else { "false" })?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
    let builder = cranelift_native::builder().map_err(|e| format!("this CPU is not supported by Cranelift: {e}"))?;
    builder.finish(settings::Flags::new(flags)).map_err(|e| format!("cannot configure Cranelift: {e}"))
}

/// The host callbacks the step imports, by symbol name (`host.rs` defines them
/// `#[no_mangle]`, so an object file links against them too).
pub const CALLBACKS: [&str; 5] = ["nnc_host", "nnc_gemm", "nnc_poison", "nnc_tick", "nnc_par"];

/// Compiles the step of a concrete graph (JIT).
pub fn compile(g: &Graph, s: &Schedule, plan: &Plan, opts: &CodegenOptions) -> Result<CompiledStep, String> {
    let isa = isa(opts, false)?;
    let mut jb = JITBuilder::with_isa(isa.clone(), default_libcall_names());
    jb.symbol("nnc_host", host::nnc_host as *const u8);
    jb.symbol("nnc_gemm", host::nnc_gemm as *const u8);
    jb.symbol("nnc_poison", host::nnc_poison as *const u8);
    jb.symbol("nnc_tick", host::nnc_tick as *const u8);
    jb.symbol("nnc_par", host::nnc_par as *const u8);
    let mut module = JITModule::new(jb);
    let err = |e: cranelift_module::ModuleError| format!("cranelift: {e}");
    let threads = compile_threads(opts);
    let (e, code_hash) = if threads > 1 && !opts.keep_clif {
        // Workers compile functions as `emit` submits them; this thread joins them once
        // it has built the last one. The code is defined in submission order: the same
        // module as a sequential compile.
        let jobs = jobs::Jobs::default();
        let e = std::thread::scope(|scope| {
            let (jobs, isa) = (&jobs, &*isa);
            for _ in 1..threads {
                scope.spawn(move || jobs.work(isa));
            }
            let e = emit_with(&mut module, "", g, s, plan, opts, Some(jobs));
            jobs.close();
            jobs.work(isa);
            e
        })?;
        let mut code = CodeHash::default();
        for d in jobs.results()? {
            module.define_function_bytes(d.id, d.alignment, &d.bytes, &d.relocs).map_err(err)?;
            code.add(d.id, &d.bytes);
        }
        (e, code.finish())
    } else {
        let e = emit(&mut module, "", g, s, plan, opts)?;
        let code = e.code.finish();
        (e, code)
    };
    module.finalize_definitions().map_err(err)?;
    let mut tables = e.tables;
    for (op, id) in tables.par.iter_mut().zip(&e.par) {
        let code = module.get_finalized_function(*id);
        // SAFETY: kernels were declared with exactly this signature.
        op.func = Some(unsafe { std::mem::transmute::<*const u8, host::KernelFn>(code) });
    }
    for &(i, id) in &e.epilogues {
        let code = module.get_finalized_function(id);
        if let Some(op) = tables.gemm.get_mut(i) {
            // SAFETY: epilogues were declared with exactly this signature.
            op.epilogue = Some(unsafe { std::mem::transmute::<*const u8, gemm::TileFn>(code) });
        }
    }
    let code = module.get_finalized_function(e.step);
    // SAFETY: the function was declared with exactly this signature.
    let step: StepFn = unsafe { std::mem::transmute::<*const u8, StepFn>(code) };
    Ok(CompiledStep {
        _module: module,
        step,
        tables: Box::new(tables),
        clif: e.clif,
        functions: e.functions,
        shared: e.shared,
        code_hash,
    })
}

/// Emits the kernels, epilogues and step function of a concrete graph into `module`
/// (the JIT's, or an object file's: `aot`), their names prefixed with `prefix`. Function
/// pointers in the tables are left `None`: the caller resolves them.
pub fn emit<M: Module>(
    module: &mut M,
    prefix: &str,
    g: &Graph,
    s: &Schedule,
    plan: &Plan,
    opts: &CodegenOptions,
) -> Result<Emitted, String> {
    emit_with(module, prefix, g, s, plan, opts, None)
}

/// `emit`; with `jobs`, each function's IR is handed to `jobs` instead of being compiled
/// and defined here (the caller defines the results, in submission order).
fn emit_with<M: Module>(
    module: &mut M,
    prefix: &str,
    g: &Graph,
    s: &Schedule,
    plan: &Plan,
    opts: &CodegenOptions,
    jobs: Option<&jobs::Jobs>,
) -> Result<Emitted, String> {
    let frontend_config = module.target_config();
    let ptr = frontend_config.pointer_type();
    let mut cb_sig = module.make_signature();
    cb_sig.params.push(AbiParam::new(ptr));
    cb_sig.params.push(AbiParam::new(types::I32));
    let err = |e: cranelift_module::ModuleError| format!("cranelift: {e}");
    let f_host = module.declare_function("nnc_host", Linkage::Import, &cb_sig).map_err(err)?;
    let f_gemm = module.declare_function("nnc_gemm", Linkage::Import, &cb_sig).map_err(err)?;
    let f_poison = module.declare_function("nnc_poison", Linkage::Import, &cb_sig).map_err(err)?;
    let f_tick = module.declare_function("nnc_tick", Linkage::Import, &cb_sig).map_err(err)?;
    let f_par = module.declare_function("nnc_par", Linkage::Import, &cb_sig).map_err(err)?;
    // Kernels take (lo, hi, buffers...): elementwise kernels run the part [lo, hi) of
    // their index space (elements when flat, rows otherwise), so a step can split a
    // large one across threads (`nnc_par`); reductions ignore lo and hi. The buffers are
    // one pointer per distinct slot (`Bases`), so kernels that differ only in where their
    // buffers are share one function. The host calls a split kernel through a wrapper of
    // signature (arena, persistent, lo, hi) (`host::KernelFn`).
    let mut body_sig = module.make_signature();
    body_sig.params.push(AbiParam::new(types::I64));
    body_sig.params.push(AbiParam::new(types::I64));
    let mut kern_sig = module.make_signature();
    kern_sig.params.push(AbiParam::new(ptr));
    kern_sig.params.push(AbiParam::new(ptr));
    kern_sig.params.extend(body_sig.params.iter().copied());

    // Epilogues take (r0, r1, c0, c1, buffers...): a block of a GEMM's result; the GEMM
    // driver calls a wrapper of signature (arena, persistent, r0, r1, c0, c1)
    // (`gemm::TileFn`).
    let mut tile_body_sig = body_sig.clone();
    tile_body_sig.params.push(AbiParam::new(types::I64));
    tile_body_sig.params.push(AbiParam::new(types::I64));
    let mut tile_sig = kern_sig.clone();
    tile_sig.params.push(AbiParam::new(types::I64));
    tile_sig.params.push(AbiParam::new(types::I64));
    let mut tables = Tables {
        host: Vec::new(),
        gemm: Vec::new(),
        workspace_part: 0,
        workspace_parts: 0,
        poison: Vec::new(),
        par: Vec::new(),
        ticks: (0..s.kernels.len()).map(|_| std::sync::atomic::AtomicU64::new(0)).collect(),
        last_tick: std::sync::atomic::AtomicU64::new(0),
    };
    let mut fctx = FunctionBuilderContext::new();
    let mut ctx = module.make_context();
    let mut clif = String::new();
    let mut code = CodeHash::default();
    // What the step does, in order.
    enum Call {
        /// A kernel over its whole index space [0, n).
        Kernel(Defined, i64),
        /// A kernel split across threads: `Tables::par[i]`.
        Par(u32),
        Host(u32),
        Gemm(u32),
        Poison(u32),
        Tick(u32),
    }
    let mut calls = Vec::new();
    let mut par_ids: Vec<FuncId> = Vec::new();
    // GEMMs with an epilogue: (index in `Tables::gemm`, the epilogue's function).
    let mut epilogue_ids: Vec<(usize, FuncId)> = Vec::new();
    if opts.profile {
        calls.push(Call::Tick(u32::MAX));
    }
    // Transcendentals through the 16-lane host functions (`wide`), in strips.
    let wide = !opts.narrow_math && wide::available();
    // Kernels and epilogues are added through `define`; the step function after the loop.
    let mut fc = FnCtx {
        module: &mut *module,
        ctx: &mut ctx,
        fctx: &mut fctx,
        clif: &mut clif,
        keep_clif: opts.keep_clif,
        jobs: jobs.filter(|_| !opts.keep_clif),
        code: &mut code,
        done: HashMap::new(),
        shared: 0,
    };
    for (ki, k) in s.kernels.iter().enumerate() {
        match k {
            Kernel::Elementwise { .. }
            | Kernel::Reduce { .. }
            | Kernel::Transpose { .. }
            | Kernel::Permute { .. }
            | Kernel::Window { .. }
            | Kernel::Pool { .. }
            | Kernel::Rows { .. } => {
                let mut space: (i64, i64) = (0, 1);
                let mut par = false;
                let label = format!("kernel {ki}: {}", crate::fusion::describe(g, s, k));
                let d = define(&mut fc, &body_sig, &format!("{prefix}k{ki}"), &label, |b, params, bases| {
                    match k {
                        Kernel::Elementwise { out, rows, cols, also } => {
                            let outs: Vec<Value> = also.iter().copied().chain([*out]).collect();
                            let range = Span::Range(params[0], params[1]);
                            let wide_rows = wide.then_some(*rows);
                            let flat = elementwise(b, Kcx { g, s, plan, bases }, range, &outs, *cols, wide_rows)?;
                            space = if flat { ((rows * cols) as i64, 4) } else { (*rows as i64, 1) };
                            // One part per thread when the kernel is large enough to pay
                            // for posting a part to the team's spinning workers (about a
                            // microsecond): the LSTM cell's 4K elements with five
                            // transcendentals (40 us) split well; 2K-element kernels did
                            // not gain (the three workloads, 2K/4K/8K/32K thresholds).
                            let elems = rows * cols;
                            if opts.threads > 1 && elems >= PAR_MIN_ELEMENTS && space.0 >= 2 * space.1 {
                                par = true;
                            }
                        }
                        Kernel::Reduce { out, x, op, outer, red, inner } => {
                            reduce(b, Kcx { g, s, plan, bases }, *out, *x, *op, (*outer, *red, *inner), None)?
                        }
                        Kernel::Rows { rows, parts } => {
                            dyn_loop(b, params[0], params[1], 1, |b, o| {
                                for p in parts {
                                    match p {
                                        Kernel::Elementwise { out, rows, cols, also } => {
                                            let outs: Vec<Value> = also.iter().copied().chain([*out]).collect();
                                            let (row, wide_rows) = (Span::Row(o), wide.then_some(*rows));
                                            elementwise(b, Kcx { g, s, plan, bases }, row, &outs, *cols, wide_rows)?;
                                        }
                                        Kernel::Reduce { out, x, op, outer, red, inner } => {
                                            let dims = (*outer, *red, *inner);
                                            reduce(b, Kcx { g, s, plan, bases }, *out, *x, *op, dims, Some(o))?
                                        }
                                        _ => return Err("internal error: a row group part".into()),
                                    }
                                }
                                Ok(())
                            })?;
                            space = (*rows as i64, 1);
                            let elems: usize = parts
                                .iter()
                                .map(|p| match p {
                                    Kernel::Elementwise { rows, cols, .. } => rows * cols,
                                    Kernel::Reduce { outer, red, .. } => outer * red,
                                    _ => 0,
                                })
                                .max()
                                .unwrap_or(0);
                            par = opts.threads > 1 && elems >= PAR_MIN_ELEMENTS && *rows >= 2;
                        }
                        Kernel::Transpose { out, x, batch, rows, cols } => {
                            transpose(b, Kcx { g, s, plan, bases }, *out, *x, *batch, *rows, *cols)?
                        }
                        Kernel::Permute { out, x, dims, src_strides, row } => {
                            let src = base(b, bases, slot_of(plan, *x)?);
                            let dst = base(b, bases, slot_of(plan, *out)?);
                            let mut dst_strides = vec![*row; dims.len()];
                            for k in (0..dims.len().saturating_sub(1)).rev() {
                                dst_strides[k] = dst_strides[k + 1] * dims[k + 1];
                            }
                            permute_rows(b, src, dst, dims, src_strides, &dst_strides, *row)?
                        }
                        Kernel::Window { out, x, window, adjoint, nc, h, w } => {
                            let (img, pat) = if *adjoint { (*out, *x) } else { (*x, *out) };
                            let range = (params[0], params[1]);
                            windows(b, Kcx { g, s, plan, bases }, img, pat, window, *adjoint, ((*nc, *h, *w), range))?;
                            // Each image (and its patches) is one part: parts write
                            // disjoint images (col2im) or patches (im2col).
                            space = (*nc as i64, 1);
                            let moved = nc * (window.kh * window.kw) as usize * h * w;
                            par = opts.threads > 1 && moved >= PAR_MIN_ELEMENTS && *nc >= 2;
                        }
                        Kernel::Pool { out, x, window, op, nc, h, w } => {
                            let range = (params[0], params[1]);
                            pool(b, Kcx { g, s, plan, bases }, *out, *x, window, *op, ((*nc, *h, *w), range))?;
                            space = (*nc as i64, 1);
                            par = opts.threads > 1 && nc * h * w >= PAR_MIN_ELEMENTS && *nc >= 2;
                        }
                        _ => {}
                    }
                    Ok(())
                })?;
                if par {
                    let id = wrapper(&mut fc, &kern_sig, &format!("{prefix}k{ki}_par"), &d)?;
                    tables.par.push(host::ParOp { func: None, total: space.0, align: space.1, threads: opts.threads });
                    par_ids.push(id);
                    calls.push(Call::Par(tables.par.len() as u32 - 1));
                } else {
                    calls.push(Call::Kernel(d, space.0));
                }
            }
            Kernel::MatMul { epilogue, .. } => {
                if let Some(e) = epilogue.as_deref() {
                    let Kernel::Elementwise { out, rows, cols, also } = e else {
                        return Err("internal error: a GEMM epilogue that is not elementwise".into());
                    };
                    let label = format!("kernel {ki} epilogue: {}", crate::fusion::describe(g, s, e));
                    let d = define(&mut fc, &tile_body_sig, &format!("{prefix}k{ki}_tile"), &label, |b, p, bases| {
                        let outs: Vec<Value> = also.iter().copied().chain([*out]).collect();
                        let tile = Span::Tile(p[0], p[1], p[2], p[3]);
                        elementwise(b, Kcx { g, s, plan, bases }, tile, &outs, *cols, wide.then_some(*rows)).map(drop)
                    })?;
                    let id = wrapper(&mut fc, &tile_sig, &format!("{prefix}k{ki}_epilogue"), &d)?;
                    epilogue_ids.push((tables.gemm.len(), id));
                }
                let op = host::gemm_op(plan, k, opts.threads)?;
                tables.workspace_part = tables.workspace_part.max(op.workspace_part());
                tables.workspace_parts = tables.workspace_parts.max(op.pieces.len());
                tables.gemm.push(op);
                calls.push(Call::Gemm(tables.gemm.len() as u32 - 1));
            }
            Kernel::Host { out } => {
                tables.host.push(host::host_op(g, plan, *out)?);
                calls.push(Call::Host(tables.host.len() as u32 - 1));
            }
            Kernel::Collective { .. } => {
                tables.host.push(host::collective_op(g, plan, k)?);
                calls.push(Call::Host(tables.host.len() as u32 - 1));
            }
        }
        if opts.profile {
            calls.push(Call::Tick(ki as u32));
        }
        if opts.poison {
            let slots: Vec<Slot> = plan.dead_after[ki].iter().filter_map(|v| plan.slots[v.as_u32() as usize]).collect();
            tables.poison.push(slots);
            calls.push(Call::Poison(ki as u32));
        }
    }
    let (functions, shared) = (fc.done.values().map(Vec::len).sum::<usize>(), fc.shared);
    for &(u, dst) in &plan.copies {
        let src = plan.slots[u.as_u32() as usize].ok_or_else(|| format!("internal error: update {u} has no buffer"))?;
        tables.host.push(HostOp::Copy { src, dst });
        calls.push(Call::Host(tables.host.len() as u32 - 1));
    }
    // The step function.
    let mut step_sig = module.make_signature();
    for _ in 0..3 {
        step_sig.params.push(AbiParam::new(ptr));
    }
    let step_id = module.declare_function(&format!("{prefix}nnc_step"), Linkage::Export, &step_sig).map_err(err)?;
    ctx.func.signature = step_sig;
    ctx.func.name = UserFuncName::user(0, step_id.as_u32());
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let (arena, pers, hctx) = (b.block_params(entry)[0], b.block_params(entry)[1], b.block_params(entry)[2]);
        let mut refs: HashMap<FuncId, cranelift_codegen::ir::FuncRef> = HashMap::new();
        for c in &calls {
            let (fid, args): (FuncId, Vec<ClValue>) = match c {
                Call::Kernel(d, n) => {
                    let lo = b.ins().iconst(types::I64, 0);
                    let hi = b.ins().iconst(types::I64, *n);
                    let mut args = vec![lo, hi];
                    args.extend(slot_args(&mut b, d, arena, pers));
                    (d.id, args)
                }
                Call::Host(i) | Call::Gemm(i) | Call::Poison(i) | Call::Tick(i) | Call::Par(i) => {
                    let f = match c {
                        Call::Host(_) => f_host,
                        Call::Gemm(_) => f_gemm,
                        Call::Tick(_) => f_tick,
                        Call::Par(_) => f_par,
                        _ => f_poison,
                    };
                    let iv = b.ins().iconst(types::I32, i64::from(*i as i32));
                    (f, vec![hctx, iv])
                }
            };
            let fr = *refs.entry(fid).or_insert_with(|| module.declare_func_in_func(fid, b.func));
            b.ins().call(fr, &args);
        }
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(frontend_config);
    }
    if opts.keep_clif {
        clif.push_str(&format!("; step\n{}\n", ctx.func.display()));
    }
    match jobs.filter(|_| !opts.keep_clif) {
        Some(jobs) => {
            jobs.submit(step_id, "step", std::mem::replace(&mut ctx.func, cranelift_codegen::ir::Function::new()))
        }
        None => {
            module.define_function(step_id, &mut ctx).map_err(|e| format!("cranelift: step: {e:?}"))?;
            if let Some(c) = ctx.compiled_code() {
                code.add(step_id, c.code_buffer());
            }
        }
    }
    module.clear_context(&mut ctx);
    Ok(Emitted { step: step_id, par: par_ids, epilogues: epilogue_ids, tables, clif, functions, shared, code })
}

/// What `define` needs to add a function to the module (and its text to `clif`).
struct FnCtx<'a, M: Module> {
    module: &'a mut M,
    ctx: &'a mut cranelift_codegen::Context,
    fctx: &'a mut FunctionBuilderContext,
    clif: &'a mut String,
    keep_clif: bool,
    /// Where functions go to be compiled (on other threads), if not compiled here.
    jobs: Option<&'a jobs::Jobs>,
    /// The machine code defined here.
    code: &'a mut CodeHash,
    /// The functions compiled so far, by a hash of their body: the body, the function
    /// and its name.
    done: HashMap<u64, Vec<(Stencil, FuncId, String)>>,
    /// Bodies found among `done`.
    shared: usize,
}

type Stencil = cranelift_codegen::ir::function::FunctionStencil;

/// The hash `define` files function bodies under: a multiply-rotate hash of the words
/// written (as rustc's FxHasher), not SipHash, which took a quarter of the time `emit`
/// spent outside Cranelift's compile on the LSTM step (`perf`); equal hashes are
/// compared as stencils.
struct StencilHasher(u64);

impl StencilHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for StencilHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.add(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 56));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A kernel's function and the slots of its pointer parameters (after `sig`'s), in order:
/// what a call passes.
struct Defined {
    id: FuncId,
    slots: Vec<(Region, usize)>,
}

/// Defines a local function whose leading parameters are `sig`'s, followed by one
/// pointer per buffer its body `body` addresses (`base`), the body emitted from the
/// entry block (given the leading parameters). A body equal to one defined before (the
/// same instructions, constants and parameters: kernels that differ only in where their
/// buffers are) is not compiled again: its function is returned, with this kernel's
/// slots. With `keep_clif`, appends the IR and machine code to the text under `label`.
fn define<M: Module>(
    fc: &mut FnCtx<M>,
    sig: &cranelift_codegen::ir::Signature,
    name: &str,
    label: &str,
    body: impl FnOnce(&mut FunctionBuilder, &[ClValue], &Bases) -> Result<(), String>,
) -> Result<Defined, String> {
    let config = fc.module.target_config();
    fc.ctx.func.signature = sig.clone();
    let bases = {
        let mut b = FunctionBuilder::new(&mut fc.ctx.func, fc.fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        let bases = Bases { entry, ptr: config.pointer_type(), slots: Default::default() };
        body(&mut b, &params, &bases)?;
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(config);
        bases
    };
    let slots = bases.slots();
    let hash = {
        use std::hash::{Hash, Hasher};
        let mut h = StencilHasher(0);
        fc.ctx.func.stencil.hash(&mut h);
        h.finish()
    };
    let same = fc.done.get(&hash).and_then(|fs| fs.iter().find(|(st, _, _)| *st == fc.ctx.func.stencil));
    if let Some((_, id, first)) = same {
        if fc.keep_clif {
            fc.clif.push_str(&format!("; {label}: the function {first}\n\n"));
        }
        let id = *id;
        fc.shared += 1;
        fc.module.clear_context(fc.ctx);
        return Ok(Defined { id, slots });
    }
    let id = fc
        .module
        .declare_function(name, Linkage::Local, &fc.ctx.func.signature)
        .map_err(|e| format!("cranelift: {e}"))?;
    fc.ctx.func.name = UserFuncName::user(0, id.as_u32());
    let stencil = fc.ctx.func.stencil.clone();
    if let Some(jobs) = fc.jobs {
        jobs.submit(id, name, std::mem::replace(&mut fc.ctx.func, cranelift_codegen::ir::Function::new()));
        fc.module.clear_context(fc.ctx);
        fc.done.entry(hash).or_default().push((stencil, id, name.to_string()));
        return Ok(Defined { id, slots });
    }
    if fc.keep_clif {
        fc.clif.push_str(&format!("; {label}\n{}\n", fc.ctx.func.display()));
        fc.ctx.set_disasm(true);
    }
    fc.module.define_function(id, fc.ctx).map_err(|e| format!("cranelift: {name}: {e:?}"))?;
    if let Some(c) = fc.ctx.compiled_code() {
        fc.code.add(id, c.code_buffer());
    }
    if let Some(asm) = fc.ctx.compiled_code().and_then(|c| c.vcode.as_ref()) {
        fc.clif.push_str(&format!("; {name}: machine code\n{asm}\n"));
    }
    fc.module.clear_context(fc.ctx);
    fc.done.entry(hash).or_default().push((stencil, id, name.to_string()));
    Ok(Defined { id, slots })
}

/// The arguments a call of `d` passes after its leading ones: the address of each slot.
fn slot_args(b: &mut FunctionBuilder, d: &Defined, arena: ClValue, persistent: ClValue) -> Vec<ClValue> {
    d.slots
        .iter()
        .map(|&(r, o)| {
            let root = if r == Region::Arena { arena } else { persistent };
            b.ins().iadd_imm_s(root, (o * 4) as i64)
        })
        .collect()
}

/// A function of signature `sig` (arena, persistent, then the leading parameters of
/// `d`'s function) that calls `d`'s function with its slots: what the host calls (a
/// split kernel, a GEMM epilogue) through a function pointer of a fixed signature.
fn wrapper<M: Module>(
    fc: &mut FnCtx<M>,
    sig: &cranelift_codegen::ir::Signature,
    name: &str,
    d: &Defined,
) -> Result<FuncId, String> {
    let config = fc.module.target_config();
    let id = fc.module.declare_function(name, Linkage::Local, sig).map_err(|e| format!("cranelift: {e}"))?;
    fc.ctx.func.signature = sig.clone();
    fc.ctx.func.name = UserFuncName::user(0, id.as_u32());
    {
        let mut b = FunctionBuilder::new(&mut fc.ctx.func, fc.fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        let mut args = params[2..].to_vec();
        args.extend(slot_args(&mut b, d, params[0], params[1]));
        let callee = fc.module.declare_func_in_func(d.id, b.func);
        b.ins().call(callee, &args);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(config);
    }
    if fc.keep_clif {
        fc.clif.push_str(&format!("; {name}\n{}\n", fc.ctx.func.display()));
    }
    if let Some(jobs) = fc.jobs {
        jobs.submit(id, name, std::mem::replace(&mut fc.ctx.func, cranelift_codegen::ir::Function::new()));
        fc.module.clear_context(fc.ctx);
        return Ok(id);
    }
    fc.module.define_function(id, fc.ctx).map_err(|e| format!("cranelift: {name}: {e:?}"))?;
    if let Some(c) = fc.ctx.compiled_code() {
        fc.code.add(id, c.code_buffer());
    }
    fc.module.clear_context(fc.ctx);
    Ok(id)
}

/// Flat elementwise kernels of at most this many fused nodes are unrolled 4x.
const UNROLL_MAX_NODES: usize = 16;

fn flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// The buffer of a materialized value.
fn slot_of(plan: &Plan, v: Value) -> Result<Slot, String> {
    plan.slots[v.as_u32() as usize].ok_or_else(|| format!("internal error: {v} has no buffer"))
}

/// The buffers a kernel addresses: one pointer parameter per distinct slot (region and
/// offset), appended to the function's parameters as the body first asks for it. The
/// code of a kernel thus depends on which of its buffers are the same but not on where
/// they are, and kernels that differ only in their buffers share one function (`define`).
struct Bases {
    entry: cranelift_codegen::ir::Block,
    ptr: types::Type,
    slots: std::cell::RefCell<Vec<(Region, usize, ClValue)>>,
}

impl Bases {
    /// The slots of the parameters, in order.
    fn slots(&self) -> Vec<(Region, usize)> {
        self.slots.borrow().iter().map(|&(r, o, _)| (r, o)).collect()
    }
}

/// The byte address of a slot: its parameter.
fn base(b: &mut FunctionBuilder, bases: &Bases, s: Slot) -> ClValue {
    let mut slots = bases.slots.borrow_mut();
    if let Some(&(_, _, v)) = slots.iter().find(|&&(r, o, _)| r == s.region && o == s.offset) {
        return v;
    }
    let v = b.func.dfg.append_block_param(bases.entry, bases.ptr);
    b.func.signature.params.push(AbiParam::new(bases.ptr));
    slots.push((s.region, s.offset, v));
    v
}

/// A counted loop `for i in (start..end).step_by(step)` over constant bounds (nothing
/// when start >= end), rotated like `dyn_loop`.
fn counted_loop(
    b: &mut FunctionBuilder,
    start: i64,
    end: i64,
    step: i64,
    body: impl FnMut(&mut FunctionBuilder, ClValue) -> Result<(), String>,
) -> Result<(), String> {
    if start >= end {
        return Ok(());
    }
    let (s0, e0) = (b.ins().iconst(types::I64, start), b.ins().iconst(types::I64, end));
    dyn_loop(b, s0, e0, step, body)
}

/// A loop `for i in (start..end).step_by(step)` over run-time bounds (`end - start` a
/// multiple of `step`), guarded for an empty range, then rotated: the body is its own
/// header with a conditional branch back, so Cranelift keeps invariants out of it.
fn dyn_loop(
    b: &mut FunctionBuilder,
    start: ClValue,
    end: ClValue,
    step: i64,
    mut body: impl FnMut(&mut FunctionBuilder, ClValue) -> Result<(), String>,
) -> Result<(), String> {
    let header = b.create_block();
    let exit = b.create_block();
    b.append_block_param(header, types::I64);
    let any = b.ins().icmp(IntCC::SignedLessThan, start, end);
    b.ins().brif(any, header, &[BlockArg::Value(start)], exit, &[]);
    b.switch_to_block(header);
    let i = b.block_params(header)[0];
    body(b, i)?;
    let next = b.ins().iadd_imm_s(i, step);
    let more = b.ins().icmp(IntCC::SignedLessThan, next, end);
    b.ins().brif(more, header, &[BlockArg::Value(next)], exit, &[]);
    b.switch_to_block(exit);
    Ok(())
}

/// Where the loop is: a flat index, or a row and a column.
#[derive(Clone, Copy)]
enum Pos {
    Flat(ClValue),
    Grid(ClValue, ClValue),
}

struct Loads<'p> {
    plan: &'p Plan,
    bases: &'p Bases,
    cols: usize,
}

impl Loads<'_> {
    fn load(&self, e: &mut E, x: Value, access: Access, pos: Pos) -> Result<ClValue, String> {
        let slot = slot_of(self.plan, x)?;
        let addr0 = base(e.b, self.bases, slot);
        let ty = e.fty();
        let scalar = |e: &mut E, addr: ClValue| {
            let v = e.b.ins().load(types::F32, flags(), addr, 0);
            e.spread(v)
        };
        Ok(match (access, pos) {
            (Access::Scalar, _) => scalar(e, addr0),
            (Access::Full, Pos::Flat(i)) => {
                let off = e.b.ins().ishl_imm_u(i, 2);
                let a = e.b.ins().iadd(addr0, off);
                e.b.ins().load(ty, flags(), a, 0)
            }
            (Access::Full, Pos::Grid(r, c)) => {
                let row = e.b.ins().imul_imm_s(r, (self.cols * 4) as i64);
                let col = e.b.ins().ishl_imm_u(c, 2);
                let a = e.b.ins().iadd(addr0, row);
                let a = e.b.ins().iadd(a, col);
                e.b.ins().load(ty, flags(), a, 0)
            }
            (Access::Row, Pos::Grid(_, c)) => {
                let col = e.b.ins().ishl_imm_u(c, 2);
                let a = e.b.ins().iadd(addr0, col);
                e.b.ins().load(ty, flags(), a, 0)
            }
            (Access::Col, Pos::Grid(r, _)) => {
                let row = e.b.ins().ishl_imm_u(r, 2);
                let a = e.b.ins().iadd(addr0, row);
                scalar(e, a)
            }
            (Access::Rows { div, modulo }, Pos::Grid(r, c)) => {
                let hi = e.b.ins().udiv_imm_u(r, div.max(1) as i64);
                let hi = e.b.ins().imul_imm_s(hi, modulo as i64);
                let lo = e.b.ins().urem_imm_u(r, modulo.max(1) as i64);
                let row = e.b.ins().iadd(hi, lo);
                let row = e.b.ins().imul_imm_s(row, (self.cols * 4) as i64);
                let col = e.b.ins().ishl_imm_u(c, 2);
                let a = e.b.ins().iadd(addr0, row);
                let a = e.b.ins().iadd(a, col);
                e.b.ins().load(ty, flags(), a, 0)
            }
            (Access::Chan { div, modulo }, Pos::Grid(r, _)) => {
                let mut i = r;
                if div > 1 {
                    i = e.b.ins().udiv_imm_u(i, div as i64);
                }
                i = e.b.ins().urem_imm_u(i, modulo.max(1) as i64);
                let off = e.b.ins().ishl_imm_u(i, 2);
                let a = e.b.ins().iadd(addr0, off);
                scalar(e, a)
            }
            _ => return Err("internal error: a row or column broadcast in a flat loop".into()),
        })
    }
}

/// What a kernel body's code reads besides its builder: the graph, its schedule and
/// plan, and the kernel's buffer bases.
#[derive(Clone, Copy)]
struct Kcx<'a> {
    g: &'a Graph,
    s: &'a Schedule,
    plan: &'a Plan,
    bases: &'a Bases,
}

/// What emitting a fused node's value reads: the graph and schedule, how the loop loads
/// stored values, and the reciprocals hoisted out of the loop.
#[derive(Clone, Copy)]
struct Ncx<'a> {
    g: &'a Graph,
    s: &'a Schedule,
    loads: &'a Loads<'a>,
    recip: &'a HashMap<Value, ClValue>,
}

/// Emits the value of `v` (a fused node) at `pos`.
fn emit_node(e: &mut E, n: Ncx, memo: &mut HashMap<Value, ClValue>, v: Value, pos: Pos) -> Result<ClValue, String> {
    let Ncx { g, s, loads, recip } = n;
    if let Some(&c) = memo.get(&v) {
        return Ok(c);
    }
    let node = &g.nodes[v];
    let arg = |e: &mut E, memo: &mut HashMap<Value, ClValue>, i: usize| -> Result<ClValue, String> {
        emit_arg(e, Ncx { g, s, loads, recip }, memo, node.args[i], pos)
    };
    let out = match &node.op {
        Op::Fill(x) => e.c(*x as f32),
        Op::DimValue(d) => e.c(d.as_const().ok_or("internal error: unbound dim in codegen")? as f32),
        Op::Broadcast { .. } => {
            let x = node.args[0];
            let root = s.storage[x.as_u32() as usize];
            if let Some(&c) = memo.get(&x).or_else(|| memo.get(&root)) {
                c
            } else if s.materialized[x.as_u32() as usize] {
                let acc = regrouped_access(g, x, v, loads.cols).ok_or("internal error: unsupported fused broadcast")?;
                loads.load(e, x, acc, pos)?
            } else {
                emit_node(e, Ncx { g, s, loads, recip }, memo, x, pos)?
            }
        }
        // A fused slice of the last dim: the source's element (r, start + c).
        Op::Slice { start, .. } => {
            let x = node.args[0];
            let Pos::Grid(r, c) = pos else {
                return Err("internal error: a fused slice in a flat loop".into());
            };
            let src_cols = g.ty(x).shape.last().and_then(|d| d.as_const()).unwrap_or(1);
            let slot = slot_of(loads.plan, x)?;
            let addr0 = base(e.b, loads.bases, slot);
            let row = e.b.ins().imul_imm_s(r, src_cols * 4);
            let col = e.b.ins().ishl_imm_u(c, 2);
            let a = e.b.ins().iadd(addr0, row);
            let a = e.b.ins().iadd(a, col);
            let a = e.b.ins().iadd_imm_s(a, *start * 4);
            let ty = e.fty();
            e.b.ins().load(ty, flags(), a, 0)
        }
        Op::Unary(u) => {
            let x = arg(e, memo, 0)?;
            match u {
                UnaryOp::Neg => e.neg(x),
                UnaryOp::Abs => e.abs(x),
                UnaryOp::Sqrt => e.sqrt(x),
                UnaryOp::Sign => e.sign(x),
                UnaryOp::Exp => e.exp(x),
                UnaryOp::Log => e.log(x),
                UnaryOp::Tanh => e.tanh(x),
                UnaryOp::Sigmoid => e.sigmoid(x),
                UnaryOp::Erf => e.erf(x),
                UnaryOp::Round => e.b.ins().nearest(x),
                UnaryOp::Floor => e.b.ins().floor(x),
                UnaryOp::Ceil => e.b.ins().ceil(x),
                UnaryOp::Sin => e.sin_cos(x, false),
                UnaryOp::Cos => e.sin_cos(x, true),
            }
        }
        // Division by a loop invariant: a multiplication by its reciprocal.
        Op::Binary(BinaryOp::Div) if recip.contains_key(&v) => {
            let a = arg(e, memo, 0)?;
            e.mul(a, recip[&v])
        }
        Op::Binary(op) => {
            let a = arg(e, memo, 0)?;
            let b = arg(e, memo, 1)?;
            match op {
                BinaryOp::Add => e.add(a, b),
                BinaryOp::Sub => e.sub(a, b),
                BinaryOp::Mul => e.mul(a, b),
                BinaryOp::Div => e.div(a, b),
                BinaryOp::Pow => e.pow(a, b),
                BinaryOp::Max => e.max(a, b),
                BinaryOp::Min => e.min(a, b),
                BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq | BinaryOp::Ne => {
                    let cc = match op {
                        BinaryOp::Lt => FloatCC::LessThan,
                        BinaryOp::Le => FloatCC::LessThanOrEqual,
                        BinaryOp::Gt => FloatCC::GreaterThan,
                        BinaryOp::Ge => FloatCC::GreaterThanOrEqual,
                        BinaryOp::Eq => FloatCC::Equal,
                        _ => FloatCC::NotEqual,
                    };
                    let m = e.cmp(cc, a, b);
                    e.mask_to_f(m)
                }
            }
        }
        Op::Select => {
            let c = arg(e, memo, 0)?;
            let a = arg(e, memo, 1)?;
            let b = arg(e, memo, 2)?;
            let zero = e.c(0.0);
            let m = e.cmp(FloatCC::NotEqual, c, zero);
            e.sel(m, a, b)
        }
        other => return Err(format!("internal error: {} cannot be fused", other.name())),
    };
    memo.insert(v, out);
    Ok(out)
}

/// Values of fused nodes per width: [scalar, vector].
type Memo = [HashMap<Value, ClValue>; 2];

/// Per width: the loop-invariant nodes among `nodes` (constants, scalar operands and what
/// depends only on them), computed once before the loops, and the reciprocals of
/// invariant divisors (a division by one is a multiplication).
fn invariants(
    b: &mut FunctionBuilder,
    g: &Graph,
    s: &Schedule,
    loads: &Loads,
    nodes: &[Value],
) -> Result<(Memo, Memo), String> {
    let mut recips: Memo = [HashMap::new(), HashMap::new()];
    let mut invariant: Vec<Value> = Vec::new();
    for &v in nodes {
        let node = &g.nodes[v];
        let inv = match &node.op {
            Op::Fill(_) | Op::DimValue(_) => true,
            Op::Broadcast { .. } => {
                let x = node.args[0];
                if s.materialized[x.as_u32() as usize] {
                    broadcast_access(g, x, v) == Some(Access::Scalar)
                } else {
                    invariant.contains(&x)
                }
            }
            Op::Unary(_) | Op::Binary(_) | Op::Select => {
                node.args.iter().all(|a| !s.materialized[a.as_u32() as usize] && invariant.contains(a))
            }
            _ => false,
        };
        if inv {
            invariant.push(v);
        }
    }
    let mut pre: Memo = [HashMap::new(), HashMap::new()];
    {
        let zero = b.ins().iconst(types::I64, 0);
        for (k, vec) in [(0usize, false), (1, true)] {
            let mut e = E { b: &mut *b, vec };
            for &v in &invariant {
                emit_node(&mut e, Ncx { g, s, loads, recip: &HashMap::new() }, &mut pre[k], v, Pos::Flat(zero))?;
            }
            reciprocals(&mut e, g, nodes, &invariant, &pre[k], &mut recips[k]);
        }
    }
    Ok((pre, recips))
}

/// Division by a value computed outside the loop at hand (`hoisted`, its values in
/// `memo`) is a multiplication by its reciprocal, computed there too.
fn reciprocals(
    e: &mut E,
    g: &Graph,
    nodes: &[Value],
    hoisted: &[Value],
    memo: &HashMap<Value, ClValue>,
    recips: &mut HashMap<Value, ClValue>,
) {
    for &v in nodes {
        let node = &g.nodes[v];
        if node.op == Op::Binary(BinaryOp::Div) && hoisted.contains(&node.args[1]) && !hoisted.contains(&v) {
            if let Some(&d) = memo.get(&node.args[1]) {
                let one = e.c(1.0);
                let r = e.div(one, d);
                recips.insert(v, r);
            }
        }
    }
}

/// The nodes among `nodes` that vary with the row only: column broadcasts of stored
/// values and what depends only on them and on loop invariants (`pre`).
fn row_invariants(g: &Graph, s: &Schedule, nodes: &[Value], pre: &Memo) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let fixed = |out: &[Value], a: &Value| out.contains(a) || pre[0].contains_key(a);
    for &v in nodes {
        if pre[0].contains_key(&v) {
            continue;
        }
        let node = &g.nodes[v];
        let mat = |a: &Value| s.materialized[a.as_u32() as usize];
        let inv = match &node.op {
            Op::Broadcast { .. } => {
                let x = node.args[0];
                if mat(&x) {
                    broadcast_access(g, x, v) == Some(Access::Col)
                } else {
                    fixed(&out, &x)
                }
            }
            Op::Unary(_) | Op::Binary(_) | Op::Select => node.args.iter().all(|a| !mat(a) && fixed(&out, a)),
            _ => false,
        };
        if inv {
            out.push(v);
        }
    }
    out
}

fn elementwise(
    b: &mut FunctionBuilder,
    k: Kcx,
    span: Span,
    outs: &[Value],
    cols: usize,
    wide_rows: Option<usize>,
) -> Result<bool, String> {
    let Kcx { g, s, plan, bases } = k;
    let mut nodes: Vec<Value> = Vec::new();
    for &o in outs {
        for v in fused_nodes(g, s, o) {
            if !nodes.contains(&v) {
                nodes.push(v);
            }
        }
    }
    nodes.sort();
    // Flat when every operand is read element for element (or is a scalar).
    let mut flat = true;
    for &v in &nodes {
        let node = &g.nodes[v];
        if let Op::Slice { .. } = node.op {
            flat = false;
        }
        if let Op::Broadcast { .. } = node.op {
            let x = node.args[0];
            if s.materialized[x.as_u32() as usize]
                && !matches!(broadcast_access(g, x, v), Some(Access::Full | Access::Scalar))
            {
                flat = false;
            }
        }
    }
    let mut out_slots = Vec::new();
    for &o in outs {
        out_slots.push(slot_of(plan, o)?);
    }
    let loads = Loads { plan, bases, cols };
    // Outputs that are column blocks of a wider buffer (an elided concat) are stored
    // `row_stride` apart, so such a kernel runs row by row.
    let strides: Vec<usize> = outs
        .iter()
        .map(|o| match s.row_stride[o.as_u32() as usize] {
            0 => cols,
            st => st,
        })
        .collect();
    if strides.iter().any(|&st| st != cols) || matches!(span, Span::Row(_) | Span::Tile(..)) {
        flat = false;
    }
    let store = |e: &mut E, out_slot: Slot, stride: usize, val: ClValue, pos: Pos| {
        let addr0 = base(e.b, bases, out_slot);
        let a = match pos {
            Pos::Flat(i) => {
                let off = e.b.ins().ishl_imm_u(i, 2);
                e.b.ins().iadd(addr0, off)
            }
            Pos::Grid(r, c) => {
                let row = e.b.ins().imul_imm_s(r, (stride * 4) as i64);
                let col = e.b.ins().ishl_imm_u(c, 2);
                let a = e.b.ins().iadd(addr0, row);
                e.b.ins().iadd(a, col)
            }
        };
        e.b.ins().store(flags(), val, a, 0);
    };
    let (pre, recips) = invariants(b, g, s, &loads, &nodes)?;
    // Computes every output, then stores them all: an update written in place is read
    // (at this index) before it is overwritten.
    let outputs = |e: &mut E,
                   memo: &mut HashMap<Value, ClValue>,
                   recips: &HashMap<Value, ClValue>,
                   pos: Pos|
     -> Result<(), String> {
        let mut vals = Vec::with_capacity(outs.len());
        for &o in outs {
            vals.push(emit_node(e, Ncx { g, s, loads: &loads, recip: recips }, memo, o, pos)?);
        }
        for ((slot, stride), v) in out_slots.iter().zip(&strides).zip(vals) {
            store(e, *slot, *stride, v, pos);
        }
        Ok(())
    };
    let body = |b: &mut FunctionBuilder, vec: bool, pos: Pos, (pre, recips): (&Memo, &Memo)| -> Result<(), String> {
        let mut e = E { b, vec };
        let k = usize::from(vec);
        let mut memo = pre[k].clone();
        outputs(&mut e, &mut memo, &recips[k], pos)
    };
    let c4 = (cols / 4 * 4) as i64;
    // What depends only on the row (per-row scalars read through column broadcasts, a
    // layer norm's 1/σ) is computed once per row, before the loop over its columns.
    let row_inv = row_invariants(g, s, &nodes, &pre);
    let row_memos = |b: &mut FunctionBuilder, r: ClValue| -> Result<(Memo, Memo), String> {
        let (mut row_pre, mut row_recips) = (pre.clone(), recips.clone());
        if !row_inv.is_empty() {
            let zero = b.ins().iconst(types::I64, 0);
            for (k, vec) in [(0usize, false), (1, true)] {
                let mut e = E { b: &mut *b, vec };
                for &v in &row_inv {
                    emit_node(
                        &mut e,
                        Ncx { g, s, loads: &loads, recip: &recips[k] },
                        &mut row_pre[k],
                        v,
                        Pos::Grid(r, zero),
                    )?;
                }
                reciprocals(&mut e, g, &nodes, &row_inv, &row_pre[k], &mut row_recips[k]);
            }
        }
        Ok((row_pre, row_recips))
    };
    // Transcendentals in strips through the 16-lane host functions, when the kernel has
    // any and its rows (the whole kernel when flat) are long enough.
    let long = wide_rows.is_some_and(|rows| if flat { rows * cols >= WIDE_MIN } else { cols >= WIDE_MIN });
    let staged = if long { stages(g, s, &nodes, outs, &pre, &row_inv) } else { None };
    let scratch: Vec<cranelift_codegen::ir::StackSlot> = match &staged {
        Some(st) => st
            .trans
            .iter()
            .map(|_| {
                let kind = cranelift_codegen::ir::StackSlotKind::ExplicitSlot;
                let data = cranelift_codegen::ir::StackSlotData::new(kind, (WIDE_STRIP * 4) as u32, 6);
                b.create_sized_stack_slot(data)
            })
            .collect(),
        None => Vec::new(),
    };
    let wide_sig = {
        let mut sig = cranelift_codegen::ir::Signature::new(b.func.signature.call_conv);
        sig.params.push(AbiParam::new(bases.ptr));
        sig.params.push(AbiParam::new(types::I64));
        b.import_signature(sig)
    };
    // Positions [start, end) of one row (`row`) or of the flat loop, strip by strip:
    // stage k computes the arguments of the transcendentals of level k + 1 into their
    // scratch, calls their function on it, and the last stage computes and stores the
    // outputs; a stage reads earlier transcendentals from their scratch and recomputes
    // whatever else it needs.
    let strips = |b: &mut FunctionBuilder,
                  start: ClValue,
                  end: ClValue,
                  row: Option<ClValue>,
                  (pre, recips): (&Memo, &Memo)|
     -> Result<(), String> {
        let Some(st) = &staged else { return Err("internal error: strips without stages".into()) };
        dyn_loop(b, start, end, WIDE_STRIP, |b, c0| {
            let rest = b.ins().isub(end, c0);
            let cap = b.ins().iconst(types::I64, WIDE_STRIP);
            let len = b.ins().smin(rest, cap);
            let cend = b.ins().iadd(c0, len);
            let len4 = b.ins().band_imm_s(len, !3);
            let mid = b.ins().iadd(c0, len4);
            for k in 0..=st.levels {
                let stage = |b: &mut FunctionBuilder, vec: bool, c: ClValue| -> Result<(), String> {
                    let pos = match row {
                        Some(r) => Pos::Grid(r, c),
                        None => Pos::Flat(c),
                    };
                    let mut e = E { b, vec };
                    let kk = usize::from(vec);
                    let mut memo = pre[kk].clone();
                    let off = e.b.ins().isub(c, c0);
                    let off = e.b.ins().ishl_imm_u(off, 2);
                    let ty = e.fty();
                    let at = |e: &mut E, i: usize| {
                        let a = e.b.ins().stack_addr(bases.ptr, scratch[i], 0);
                        e.b.ins().iadd(a, off)
                    };
                    for &i in &st.reads[k] {
                        let a = at(&mut e, i);
                        let x = e.b.ins().load(ty, flags(), a, 0);
                        memo.insert(st.trans[i].0, x);
                    }
                    if k < st.levels {
                        for &o in &st.outs_first[k] {
                            emit_node(&mut e, Ncx { g, s, loads: &loads, recip: &recips[kk] }, &mut memo, o, pos)?;
                        }
                        for (i, &(t, level, _)) in st.trans.iter().enumerate() {
                            if level == k + 1 {
                                let x = emit_arg(
                                    &mut e,
                                    Ncx { g, s, loads: &loads, recip: &recips[kk] },
                                    &mut memo,
                                    g.nodes[t].args[0],
                                    pos,
                                )?;
                                let a = at(&mut e, i);
                                e.b.ins().store(flags(), x, a, 0);
                            }
                        }
                    } else {
                        outputs(&mut e, &mut memo, &recips[kk], pos)?;
                    }
                    Ok(())
                };
                dyn_loop(b, c0, mid, 4, |b, c| stage(b, true, c))?;
                dyn_loop(b, mid, cend, 1, |b, c| stage(b, false, c))?;
                if k < st.levels {
                    for (i, &(_, level, f)) in st.trans.iter().enumerate() {
                        if level == k + 1 {
                            let p = b.ins().stack_addr(bases.ptr, scratch[i], 0);
                            let callee = b.ins().iconst(types::I64, f.address() as usize as i64);
                            b.ins().call_indirect(wide_sig, callee, &[p, len]);
                        }
                    }
                }
            }
            Ok(())
        })
    };
    // Positions [lo, hi) (lo a multiple of 4) as `at` places them: small bodies unrolled
    // 4x (they are bound by loads and stores, and one vector per iteration leaves the
    // loop's own overhead on the critical path; an epilogue's rows run up to a row
    // block's 512 columns), then vectors, then the scalar tail.
    let vector_loops = |b: &mut FunctionBuilder,
                        (lo, hi): (ClValue, ClValue),
                        at: &dyn Fn(ClValue) -> Pos,
                        memos: (&Memo, &Memo)|
     -> Result<(), String> {
        let len = b.ins().isub(hi, lo);
        let mut start = lo;
        if nodes.len() <= UNROLL_MAX_NODES {
            let len16 = b.ins().band_imm_s(len, !15);
            let mid16 = b.ins().iadd(lo, len16);
            dyn_loop(b, lo, mid16, 16, |b, i| {
                for k in 0..4 {
                    let ik = if k == 0 { i } else { b.ins().iadd_imm_s(i, 4 * k) };
                    body(b, true, at(ik), memos)?;
                }
                Ok(())
            })?;
            start = mid16;
        }
        let len4 = b.ins().band_imm_s(len, !3);
        let mid = b.ins().iadd(lo, len4);
        dyn_loop(b, start, mid, 4, |b, i| body(b, true, at(i), memos))?;
        dyn_loop(b, mid, hi, 1, |b, i| body(b, false, at(i), memos))
    };
    let row = |b: &mut FunctionBuilder, r: ClValue| {
        let (row_pre, row_recips) = row_memos(b, r)?;
        let memos = (&row_pre, &row_recips);
        if staged.is_some() {
            let (c0, c1) = (b.ins().iconst(types::I64, 0), b.ins().iconst(types::I64, cols as i64));
            return strips(b, c0, c1, Some(r), memos);
        }
        counted_loop(b, 0, c4, 4, |b, c| body(b, true, Pos::Grid(r, c), memos))?;
        counted_loop(b, c4, cols as i64, 1, |b, c| body(b, false, Pos::Grid(r, c), memos))
    };
    let (lo, hi) = match span {
        Span::Row(r) => {
            row(b, r)?;
            return Ok(false);
        }
        Span::Tile(r0, r1, c0, c1) => {
            dyn_loop(b, r0, r1, 1, |b, r| {
                let (row_pre, row_recips) = row_memos(b, r)?;
                let memos = (&row_pre, &row_recips);
                if staged.is_some() {
                    return strips(b, c0, c1, Some(r), memos);
                }
                // The driver runs an epilogue over a column of micro-tiles at once.
                vector_loops(b, (c0, c1), &|c| Pos::Grid(r, c), memos)
            })?;
            return Ok(false);
        }
        Span::Range(lo, hi) => (lo, hi),
    };
    if flat && staged.is_some() {
        strips(b, lo, hi, None, (&pre, &recips))?;
    } else if flat {
        vector_loops(b, (lo, hi), &Pos::Flat, (&pre, &recips))?;
    } else {
        dyn_loop(b, lo, hi, 1, row)?;
    }
    Ok(flat)
}

/// Strips of at most this many elements (positions of a flat loop, columns of a row) go
/// through the 16-lane transcendentals (`wide`).
const WIDE_STRIP: i64 = 256;
/// Kernels with shorter rows than this (fewer elements when flat) keep 4-lane code: a
/// strip costs about 35 ns beyond its work (the call, scratch, registers spilled around
/// it). Measured on rows of `sigmoid(x * z)` (one transcendental; 2048 rows): 0.077 ms
/// in 4 lanes against 0.090 ms in strips at 32 columns, 0.099 against 0.097 at 40, 0.150
/// against 0.107 at 64.
const WIDE_MIN: usize = 40;

/// The staging of an elementwise kernel's transcendentals (`stages`).
struct Stages {
    /// The transcendental nodes computed in the loop (not loop or row invariants), each with
    /// its level (1 + the most levels among the transcendentals it depends on) and function.
    trans: Vec<(Value, usize, wide::Func)>,
    /// The highest level: stages 0..levels compute arguments, stage `levels` the outputs.
    levels: usize,
    /// Per stage: the transcendentals (indices in `trans`) it reads from their scratch.
    reads: Vec<Vec<usize>>,
    /// Per stage before the last: the outputs it computes first (in order), because what
    /// it computes reads them (a stored output feeding another node of the kernel).
    outs_first: Vec<Vec<Value>>,
}

/// The 16-lane function of a unary op, if it has one.
fn wide_func(op: &Op) -> Option<wide::Func> {
    match op {
        Op::Unary(UnaryOp::Exp) => Some(wide::Func::Exp),
        Op::Unary(UnaryOp::Log) => Some(wide::Func::Log),
        Op::Unary(UnaryOp::Tanh) => Some(wide::Func::Tanh),
        Op::Unary(UnaryOp::Sigmoid) => Some(wide::Func::Sigmoid),
        Op::Unary(UnaryOp::Erf) => Some(wide::Func::Erf),
        _ => None,
    }
}

/// At most this many transcendentals per kernel go through scratch (1 KiB of stack each).
const WIDE_MAX_TRANS: usize = 32;

/// How an elementwise kernel with transcendentals runs in strips (`None` without any, or
/// with too many). The values a node reads inside the loop follow `emit_node`'s rules: a
/// value already in the memo (`pre`, `row_inv`) is not computed, a stored one is loaded
/// unless it is an output of this kernel (or a view of one), which is computed.
fn stages(g: &Graph, s: &Schedule, nodes: &[Value], outs: &[Value], pre: &Memo, row_inv: &[Value]) -> Option<Stages> {
    let fixed = |v: Value| pre[0].contains_key(&v) || row_inv.contains(&v);
    let inner = |a: Value| -> Option<Value> {
        if fixed(a) {
            return None;
        }
        if !s.materialized[a.as_u32() as usize] || outs.contains(&a) {
            return Some(a);
        }
        let root = s.storage[a.as_u32() as usize];
        outs.contains(&root).then_some(root)
    };
    let args = |v: Value| -> Vec<Value> {
        let node = &g.nodes[v];
        match &node.op {
            Op::Broadcast { .. } | Op::Unary(_) | Op::Binary(_) | Op::Select => {
                node.args.iter().filter_map(|&a| inner(a)).collect()
            }
            _ => Vec::new(),
        }
    };
    let trans_of = |v: Value| if fixed(v) { None } else { wide_func(&g.nodes[v].op) };
    // Levels, children first (iteratively: kernels can be long chains).
    let mut level: HashMap<Value, usize> = HashMap::new();
    let mut todo: Vec<(Value, bool)> = outs.iter().map(|&o| (o, false)).collect();
    while let Some((v, expanded)) = todo.pop() {
        if level.contains_key(&v) {
            continue;
        }
        let a = args(v);
        if expanded {
            let below = a.iter().map(|x| level.get(x).copied().unwrap_or(0)).max().unwrap_or(0);
            level.insert(v, below + usize::from(trans_of(v).is_some()));
        } else {
            todo.push((v, true));
            todo.extend(a.into_iter().filter(|x| !level.contains_key(x)).map(|x| (x, false)));
        }
    }
    let mut trans: Vec<(Value, usize, wide::Func)> = Vec::new();
    for &v in nodes {
        if let (Some(f), Some(&l)) = (trans_of(v), level.get(&v)) {
            trans.push((v, l, f));
        }
    }
    if trans.is_empty() || trans.len() > WIDE_MAX_TRANS {
        return None;
    }
    let levels = trans.iter().map(|t| t.1).max().unwrap_or(0);
    let mut reads = Vec::new();
    let mut outs_first = Vec::new();
    for k in 0..=levels {
        // What stage k reaches from its roots, stopping at transcendentals it reads.
        let roots: Vec<Value> = if k < levels {
            trans.iter().filter(|t| t.1 == k + 1).filter_map(|t| inner(g.nodes[t.0].args[0])).collect()
        } else {
            outs.to_vec()
        };
        let mut seen: Vec<Value> = Vec::new();
        let mut read: Vec<usize> = Vec::new();
        let mut stack = roots;
        while let Some(v) = stack.pop() {
            if seen.contains(&v) {
                continue;
            }
            seen.push(v);
            if let Some(i) = trans.iter().position(|t| t.0 == v && t.1 <= k) {
                read.push(i);
                continue;
            }
            stack.extend(args(v));
        }
        read.sort_unstable();
        reads.push(read);
        outs_first.push(outs.iter().copied().filter(|o| k < levels && seen.contains(o)).collect());
    }
    Some(Stages { trans, levels, reads, outs_first })
}

/// The value of `a`, an operand read at `pos`, as `emit_node` reads its operands.
fn emit_arg(e: &mut E, n: Ncx, memo: &mut HashMap<Value, ClValue>, a: Value, pos: Pos) -> Result<ClValue, String> {
    let Ncx { g, s, loads, recip } = n;
    // An output computed earlier in the same loop (or a view of one) comes from a
    // register: its store happens at the end of the iteration.
    if let Some(&c) = memo.get(&a).or_else(|| memo.get(&s.storage[a.as_u32() as usize])) {
        return Ok(c);
    }
    if s.materialized[a.as_u32() as usize] {
        loads.load(e, a, Access::Full, pos)
    } else {
        emit_node(e, Ncx { g, s, loads, recip }, memo, a, pos)
    }
}

/// What part of its index space a kernel's code covers.
#[derive(Clone, Copy)]
enum Span {
    /// Elements [lo, hi) of a flat loop, or rows [lo, hi).
    Range(ClValue, ClValue),
    /// One row (a part of a row group).
    Row(ClValue),
    /// Rows [r0, r1) by columns [c0, c1): a block of a GEMM's result (an epilogue).
    Tile(ClValue, ClValue, ClValue, ClValue),
}

fn combine(e: &mut E, op: ReduceOp, acc: ClValue, x: ClValue) -> ClValue {
    match op {
        ReduceOp::Sum => e.add(acc, x),
        // Keep NaN: x wins when it is larger or NaN.
        ReduceOp::Max => {
            let gt = e.cmp(FloatCC::GreaterThan, x, acc);
            let un = e.cmp(FloatCC::Unordered, x, x);
            let m = e.or(gt, un);
            e.sel(m, x, acc)
        }
        ReduceOp::Min => {
            let lt = e.cmp(FloatCC::LessThan, x, acc);
            let un = e.cmp(FloatCC::Unordered, x, x);
            let m = e.or(lt, un);
            e.sel(m, x, acc)
        }
    }
}

fn identity(op: ReduceOp) -> f32 {
    match op {
        ReduceOp::Sum => 0.0,
        ReduceOp::Max => f32::NEG_INFINITY,
        ReduceOp::Min => f32::INFINITY,
    }
}

/// A rotated loop `for i in (0..end).step_by(step)` folding `op` over `value(i, j)` into
/// accumulator j, starting from `inits`; the accumulators travel as block parameters.
fn accumulate(
    b: &mut FunctionBuilder,
    vec: bool,
    op: ReduceOp,
    inits: &[ClValue],
    end: i64,
    step: i64,
    mut value: impl FnMut(&mut FunctionBuilder, ClValue, usize) -> Result<ClValue, String>,
) -> Result<Vec<ClValue>, String> {
    let ty = if vec { types::F32X4 } else { types::F32 };
    let header = b.create_block();
    let exit = b.create_block();
    b.append_block_param(header, types::I64);
    for _ in inits {
        b.append_block_param(header, ty);
        b.append_block_param(exit, ty);
    }
    let z = b.ins().iconst(types::I64, 0);
    let args: Vec<BlockArg> = std::iter::once(z).chain(inits.iter().copied()).map(BlockArg::Value).collect();
    b.ins().jump(header, &args);
    b.switch_to_block(header);
    let params = b.block_params(header).to_vec();
    let i = params[0];
    let mut next_acc = Vec::with_capacity(inits.len());
    for (j, &acc) in params[1..].iter().enumerate() {
        let v = value(b, i, j)?;
        let mut e = E { b: &mut *b, vec };
        next_acc.push(combine(&mut e, op, acc, v));
    }
    let next = b.ins().iadd_imm_s(i, step);
    let more = b.ins().icmp_imm_s(IntCC::SignedLessThan, next, end);
    let back: Vec<BlockArg> = std::iter::once(next).chain(next_acc.iter().copied()).map(BlockArg::Value).collect();
    let done: Vec<BlockArg> = next_acc.iter().copied().map(BlockArg::Value).collect();
    b.ins().brif(more, header, &back, exit, &done);
    b.switch_to_block(exit);
    Ok(b.block_params(exit).to_vec())
}

/// Vectors summed side by side in a column reduction: independent accumulators hide the
/// latency of the add (a [640, 512] bias gradient ran at one add per 4 cycles with one).
const REDUCE_COLUMN_VECTORS: usize = 4;

/// `out[o, i] = op over r of x[o, r, i]`. A materialized `x` is loaded; otherwise its
/// fused producer is computed in the loop (`fusion` fuses only producers that the loop
/// can address: flat ones, or by row and column when a row is what is reduced
/// (`inner` = 1, `red` = the row) or what is kept (`inner` = the row)).
fn reduce(
    b: &mut FunctionBuilder,
    k: Kcx,
    out: Value,
    x: Value,
    op: ReduceOp,
    (outer, red, inner): (usize, usize, usize),
    row: Option<ClValue>,
) -> Result<(), String> {
    let Kcx { g, s, plan, bases } = k;
    let ob = base(b, bases, slot_of(plan, out)?);
    let cols = crate::fusion::loop_shape(g, x).1;
    let loads = Loads { plan, bases, cols };
    let fused = !s.materialized[x.as_u32() as usize];
    let nodes = if fused { fused_nodes(g, s, x) } else { Vec::new() };
    let flat = !fused || crate::fusion::flat_only(g, s, x);
    let (pre, recips) = invariants(b, g, s, &loads, &nodes)?;
    let xb = if fused { None } else { Some(base(b, bases, slot_of(plan, x)?)) };
    // x at flat element index `at` (row `row`, column `col` of its loop shape).
    let fetch = |b: &mut FunctionBuilder, vec: bool, at: ClValue, row: ClValue, col: ClValue| {
        if let Some(xb) = xb {
            let off = b.ins().ishl_imm_u(at, 2);
            let a = b.ins().iadd(xb, off);
            let ty = if vec { types::F32X4 } else { types::F32 };
            return Ok(b.ins().load(ty, flags(), a, 0));
        }
        let k = usize::from(vec);
        let mut memo = pre[k].clone();
        let pos = if flat { Pos::Flat(at) } else { Pos::Grid(row, col) };
        emit_node(&mut E { b, vec }, Ncx { g, s, loads: &loads, recip: &recips[k] }, &mut memo, x, pos)
    };
    let ident = |b: &mut FunctionBuilder, vec: bool| E { b, vec }.c(identity(op));
    let red_i = red as i64;
    if inner == 1 {
        // Rows: vector accumulators over the row (two for long rows), combined across
        // accumulators and lanes at the end, then the scalar tail.
        let row_body = |b: &mut FunctionBuilder, o: ClValue| {
            let row0 = b.ins().imul_imm_s(o, red_i);
            let n_acc: usize = if red >= 64 { 2 } else { 1 };
            let span = 4 * n_acc as i64;
            let r_blk = red_i / span * span;
            let inits: Vec<ClValue> = (0..n_acc).map(|_| ident(b, true)).collect();
            let accs = if r_blk > 0 {
                accumulate(b, true, op, &inits, r_blk, span, |b, t, j| {
                    let t = b.ins().iadd_imm_s(t, 4 * j as i64);
                    let at = b.ins().iadd(row0, t);
                    fetch(b, true, at, o, t)
                })?
            } else {
                inits
            };
            let mut acc = accs[0];
            for &a in &accs[1..] {
                acc = combine(&mut E { b: &mut *b, vec: true }, op, acc, a);
            }
            for t in (r_blk..red_i / 4 * 4).step_by(4) {
                let t = b.ins().iconst(types::I64, t);
                let at = b.ins().iadd(row0, t);
                let v = fetch(b, true, at, o, t)?;
                acc = combine(&mut E { b: &mut *b, vec: true }, op, acc, v);
            }
            // Across lanes in vector registers: lanes 2-3 onto 0-1, then lane 1 onto 0.
            for lanes in [[2, 3, 2, 3], [1, 1, 1, 1]] {
                let hi = shuffle4(b, acc, acc, lanes);
                acc = combine(&mut E { b: &mut *b, vec: true }, op, acc, hi);
            }
            let mut sum = b.ins().extractlane(acc, 0);
            for t in red_i / 4 * 4..red_i {
                let t = b.ins().iconst(types::I64, t);
                let at = b.ins().iadd(row0, t);
                let v = fetch(b, false, at, o, t)?;
                sum = combine(&mut E { b: &mut *b, vec: false }, op, sum, v);
            }
            let oo = b.ins().ishl_imm_u(o, 2);
            let oa = b.ins().iadd(ob, oo);
            b.ins().store(flags(), sum, oa, 0);
            Ok(())
        };
        match row {
            Some(o) => row_body(b, o),
            None => counted_loop(b, 0, outer as i64, 1, row_body),
        }
    } else if row.is_some() {
        Err("internal error: a column reduction in a row group".into())
    } else {
        // Columns: `inner`-wide slices accumulated over `red` rows, several vectors side
        // by side, then single vectors, then single columns.
        let in_i = inner as i64;
        let blk = 4 * REDUCE_COLUMN_VECTORS as i64;
        let (c_blk, c4) = (in_i / blk * blk, in_i / 4 * 4);
        counted_loop(b, 0, outer as i64, 1, |b, o| {
            let row0 = b.ins().imul_imm_s(o, red_i);
            let oo = b.ins().imul_imm_s(o, in_i * 4);
            let oo = b.ins().iadd(ob, oo);
            for (vec, from, to, width) in [(true, 0, c_blk, blk), (true, c_blk, c4, 4), (false, c4, in_i, 1)] {
                let n_acc = if vec { (width / 4) as usize } else { 1 };
                counted_loop(b, from, to, width, |b, c| {
                    let inits: Vec<ClValue> = (0..n_acc).map(|_| ident(b, vec)).collect();
                    let res = accumulate(b, vec, op, &inits, red_i, 1, |b, r, j| {
                        let col = b.ins().iadd_imm_s(c, 4 * j as i64);
                        let row = b.ins().iadd(row0, r);
                        let at = b.ins().imul_imm_s(row, in_i);
                        let at = b.ins().iadd(at, col);
                        fetch(b, vec, at, row, col)
                    })?;
                    for (j, v) in res.into_iter().enumerate() {
                        let coff = b.ins().ishl_imm_u(c, 2);
                        let oa = b.ins().iadd(oo, coff);
                        b.ins().store(flags(), v, oa, 16 * j as i32);
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })
    }
}

/// Four lanes picked from the concatenation of two f32x4 vectors (lanes 0-3 of `x`,
/// then 4-7 of `y`).
fn shuffle4(b: &mut FunctionBuilder, x: ClValue, y: ClValue, lanes: [u8; 4]) -> ClValue {
    math::shuffle_f32x4(b, x, y, lanes)
}

/// `out[t] = x[t]ᵀ` for `batch` matrices of [rows, cols]: 4x4 blocks are loaded as four
/// row vectors, transposed in registers (unpcklps / unpckhps / movlhps / movhlps) and
/// stored as four columns; the edges that do not fill a block are copied one by one.
fn transpose(
    b: &mut FunctionBuilder,
    k: Kcx,
    out: Value,
    x: Value,
    batch: usize,
    rows: usize,
    cols: usize,
) -> Result<(), String> {
    let Kcx { plan, bases, .. } = k;
    let xs = slot_of(plan, x)?;
    let os = slot_of(plan, out)?;
    let xb0 = base(b, bases, xs);
    let ob0 = base(b, bases, os);
    let (r_i, c_i) = (rows as i64, cols as i64);
    let (r4, c4) = (r_i / 4 * 4, c_i / 4 * 4);
    let scalar = |b: &mut FunctionBuilder, xb: ClValue, ob: ClValue, r: ClValue, c: ClValue| {
        let xo = b.ins().imul_imm_s(r, c_i * 4);
        let xc = b.ins().ishl_imm_u(c, 2);
        let xa = b.ins().iadd(xb, xo);
        let xa = b.ins().iadd(xa, xc);
        let v = b.ins().load(types::F32, flags(), xa, 0);
        let oo = b.ins().imul_imm_s(c, r_i * 4);
        let or = b.ins().ishl_imm_u(r, 2);
        let oa = b.ins().iadd(ob, oo);
        let oa = b.ins().iadd(oa, or);
        b.ins().store(flags(), v, oa, 0);
    };
    counted_loop(b, 0, batch as i64, 1, |b, t| {
        let toff = b.ins().imul_imm_s(t, r_i * c_i * 4);
        let xb = b.ins().iadd(xb0, toff);
        let ob = b.ins().iadd(ob0, toff);
        // Four blocks down at a time, so each store of a group fills a whole line of
        // `out` (16 floats): with power-of-two strides, partial lines revisited later
        // would fight over a couple of L1 sets. Then single blocks, then scalars.
        let r16 = r_i / 16 * 16;
        for (from, to, group) in [(0, r16, 4i64), (r16, r4, 1)] {
            counted_loop(b, from, to, 4 * group, |b, r| {
                let xo = b.ins().imul_imm_s(r, c_i * 4);
                let xrow = b.ins().iadd(xb, xo);
                let or = b.ins().ishl_imm_u(r, 2);
                let ocol = b.ins().iadd(ob, or);
                counted_loop(b, 0, c4, 4, |b, c| {
                    let xc = b.ins().ishl_imm_u(c, 2);
                    let oo = b.ins().imul_imm_s(c, r_i * 4);
                    let oa = b.ins().iadd(ocol, oo);
                    for gi in 0..group {
                        let xa = b.ins().iadd(xrow, xc);
                        let mut v = [xa; 4];
                        for (i, vi) in v.iter_mut().enumerate() {
                            let a = b.ins().iadd_imm_s(xa, (4 * gi + i as i64) * c_i * 4);
                            *vi = b.ins().load(types::F32X4, flags(), a, 0);
                        }
                        let t0 = shuffle4(b, v[0], v[1], [0, 4, 1, 5]);
                        let t1 = shuffle4(b, v[0], v[1], [2, 6, 3, 7]);
                        let t2 = shuffle4(b, v[2], v[3], [0, 4, 1, 5]);
                        let t3 = shuffle4(b, v[2], v[3], [2, 6, 3, 7]);
                        let o = [
                            shuffle4(b, t0, t2, [0, 1, 4, 5]),
                            shuffle4(b, t0, t2, [2, 3, 6, 7]),
                            shuffle4(b, t1, t3, [0, 1, 4, 5]),
                            shuffle4(b, t1, t3, [2, 3, 6, 7]),
                        ];
                        for (j, oj) in o.into_iter().enumerate() {
                            let a = b.ins().iadd_imm_s(oa, j as i64 * r_i * 4 + 16 * gi);
                            b.ins().store(flags(), oj, a, 0);
                        }
                    }
                    Ok(())
                })?;
                // The columns right of the last block, for these rows.
                if c4 == c_i {
                    return Ok(());
                }
                counted_loop(b, 0, 4 * group, 1, |b, i| {
                    let ri = b.ins().iadd(r, i);
                    counted_loop(b, c4, c_i, 1, |b, c| {
                        scalar(b, xb, ob, ri, c);
                        Ok(())
                    })
                })
            })?;
        }
        // The rows below the last block.
        counted_loop(b, r4, r_i, 1, |b, r| {
            counted_loop(b, 0, c_i, 1, |b, c| {
                scalar(b, xb, ob, r, c);
                Ok(())
            })
        })
    })
}

/// The range of output positions `o` in [0, n_out) whose input position
/// `o * stride + k - pad` falls in [0, n_in).
fn valid_range(n_in: usize, n_out: usize, k: u32, stride: u32, pad: u32) -> (i64, i64) {
    let (k, s, p, n_in, n_out) = (k as i64, stride as i64, pad as i64, n_in as i64, n_out as i64);
    // o * s >= p - k and o * s <= n_in - 1 + p - k.
    let lo = if p - k > 0 { (p - k + s - 1) / s } else { 0 };
    let top = n_in - 1 + p - k;
    let hi = if top < 0 { 0 } else { (top / s + 1).min(n_out) };
    (lo.min(n_out), hi.max(lo.min(n_out)))
}

/// A window reduction over images [lo, hi) of `nc` images of [h, w] (`Kernel::Pool`,
/// windows without padding): `out[c, y, x] = op over (i, j) of img[c, y*sh + i, x*sw + j]`,
/// the offsets folded in row-major order from the reduction's identity. Four outputs of a
/// row at a time: with stride 1 each offset is one vector load; with stride 2 two loads
/// and a shuffle of their even (or odd) lanes; the row's tail as one more block over its
/// last four outputs when that fits, else (and with other strides) one output at a time
/// in lane 0. A vector never reads past its image row.
fn pool(
    b: &mut FunctionBuilder,
    k: Kcx,
    out: Value,
    img: Value,
    w: &crate::ir::Window,
    op: ReduceOp,
    // The images [lo, hi) of the batch's nc, each h x wd.
    ((nc, h, wd), (lo, hi)): ((usize, usize, usize), (ClValue, ClValue)),
) -> Result<(), String> {
    let Kcx { plan, bases, .. } = k;
    let _ = nc; // the images are [lo, hi)
    let oh = crate::ir::Window::out_len(h as i64, w.kh, w.stride_h, 0).ok_or("internal error: window")?;
    let ow = crate::ir::Window::out_len(wd as i64, w.kw, w.stride_w, 0).ok_or("internal error: window")?;
    let ib0 = base(b, bases, slot_of(plan, img)?);
    let ob0 = base(b, bases, slot_of(plan, out)?);
    let (kh, kw, sh, sw) = (w.kh as i64, w.kw as i64, w.stride_h as i64, w.stride_w as i64);
    let wd = wd as i64;
    // Vector blocks of four outputs: x + 3 < ow, and with stride 2 the two loads at
    // 2x + (j rounded down to even) stay in the row for every offset j.
    let fits = |x: i64| x + 3 < ow && (sw == 1 || (sw == 2 && 2 * x + ((kw - 1) & !1) + 7 < wd));
    let x4 = if sw <= 2 { (0..).step_by(4).take_while(|&x| fits(x)).count() as i64 * 4 } else { 0 };
    dyn_loop(b, lo, hi, 1, |b, c| {
        let ib = b.ins().imul_imm_s(c, h as i64 * wd * 4);
        let ib = b.ins().iadd(ib0, ib);
        let ob = b.ins().imul_imm_s(c, oh * ow * 4);
        let ob = b.ins().iadd(ob0, ob);
        counted_loop(b, 0, oh, 1, |b, y| {
            let irow = b.ins().imul_imm_s(y, sh * wd * 4);
            let irow = b.ins().iadd(ib, irow);
            let orow = b.ins().imul_imm_s(y, ow * 4);
            let orow = b.ins().iadd(ob, orow);
            let at = |b: &mut FunctionBuilder, x: ClValue, step: i64| {
                let a = b.ins().imul_imm_s(x, step * 4);
                b.ins().iadd(irow, a)
            };
            // Four outputs from x.
            let block = |b: &mut FunctionBuilder, x: ClValue| {
                let px = at(b, x, sw);
                let mut acc = E { b: &mut *b, vec: true }.c(identity(op));
                for i in 0..kh {
                    for j in 0..kw {
                        let v = if sw == 1 {
                            b.ins().load(types::F32X4, flags(), px, ((i * wd + j) * 4) as i32)
                        } else {
                            let j0 = j & !1;
                            let off0 = ((i * wd + j0) * 4) as i32;
                            let v0 = b.ins().load(types::F32X4, flags(), px, off0);
                            let v1 = b.ins().load(types::F32X4, flags(), px, off0 + 16);
                            let l = (j & 1) as u8;
                            shuffle4(b, v0, v1, [l, l + 2, l + 4, l + 6])
                        };
                        acc = combine(&mut E { b: &mut *b, vec: true }, op, acc, v);
                    }
                }
                let oa = b.ins().ishl_imm_u(x, 2);
                let oa = b.ins().iadd(orow, oa);
                b.ins().store(flags(), acc, oa, 0);
                Ok(())
            };
            counted_loop(b, 0, x4, 4, block)?;
            if x4 < ow && x4 > 0 && fits(ow - 4) {
                // The tail as one more block over the last four outputs (some computed
                // twice, to the same values).
                let x = b.ins().iconst(types::I64, ow - 4);
                return block(b, x);
            }
            // One output at a time, in vector registers (lane 0): a scalar select is a
            // branch.
            counted_loop(b, x4, ow, 1, |b, x| {
                let px = at(b, x, sw);
                let mut acc = E { b: &mut *b, vec: true }.c(identity(op));
                for i in 0..kh {
                    for j in 0..kw {
                        let v = b.ins().load(types::F32, flags(), px, ((i * wd + j) * 4) as i32);
                        let v = b.ins().splat(types::F32X4, v);
                        acc = combine(&mut E { b: &mut *b, vec: true }, op, acc, v);
                    }
                }
                let acc = b.ins().extractlane(acc, 0);
                let oa = b.ins().ishl_imm_u(x, 2);
                let oa = b.ins().iadd(orow, oa);
                b.ins().store(flags(), acc, oa, 0);
                Ok(())
            })
        })
    })
}

/// Im2col (`adjoint` false): patches[c, i, j, y, x] = img[c, y*sh + i - ph, x*sw + j - pw]
/// or 0 outside the image; col2im (`adjoint`): the images are zeroed, then every patch
/// element is added back at that position. For each of the kh*kw window offsets the
/// rows and columns that fall inside the image are known at compile time, so each row
/// is one straight copy (or add), 4 lanes at a time when the stride is 1.
fn windows(
    b: &mut FunctionBuilder,
    k: Kcx,
    img: Value,
    pat: Value,
    w: &crate::ir::Window,
    adjoint: bool,
    // The images [lo, hi) of the batch's nc, each h x wd.
    ((nc, h, wd), (lo, hi)): ((usize, usize, usize), (ClValue, ClValue)),
) -> Result<(), String> {
    let Kcx { plan, bases, .. } = k;
    let _ = nc; // the images are [lo, hi)
    let (is, ps) = (slot_of(plan, img)?, slot_of(plan, pat)?);
    let oh = crate::ir::Window::out_len(h as i64, w.kh, w.stride_h, w.pad_h).ok_or("internal error: window")? as usize;
    let ow = crate::ir::Window::out_len(wd as i64, w.kw, w.stride_w, w.pad_w).ok_or("internal error: window")? as usize;
    let ib0 = base(b, bases, is);
    let pb0 = base(b, bases, ps);
    let (kh, kw) = (w.kh as usize, w.kw as usize);
    let img_len = (h * wd) as i64;
    let pat_len = (kh * kw * oh * ow) as i64;
    let zero4 = {
        let mut e = E { b: &mut *b, vec: true };
        e.c(0.0)
    };
    let zero1 = b.ins().f32const(0.0);
    // Zeroes `n` floats from `at` (a constant count).
    let fill = |b: &mut FunctionBuilder, at: ClValue, n: i64| -> Result<(), String> {
        let n4 = n / 4 * 4;
        counted_loop(b, 0, n4, 4, |b, k| {
            let off = b.ins().ishl_imm_u(k, 2);
            let a = b.ins().iadd(at, off);
            b.ins().store(flags(), zero4, a, 0);
            Ok(())
        })?;
        for t in n4..n {
            b.ins().store(flags(), zero1, at, (t * 4) as i32);
        }
        Ok(())
    };
    dyn_loop(b, lo, hi, 1, |b, c| {
        let io = b.ins().imul_imm_s(c, img_len * 4);
        let ib = b.ins().iadd(ib0, io);
        let po = b.ins().imul_imm_s(c, pat_len * 4);
        let pb = b.ins().iadd(pb0, po);
        if adjoint {
            fill(b, ib, img_len)?;
        }
        for i in 0..kh {
            let (y_lo, y_hi) = valid_range(h, oh, i as u32, w.stride_h, w.pad_h);
            for j in 0..kw {
                let (x_lo, x_hi) = valid_range(wd, ow, j as u32, w.stride_w, w.pad_w);
                let block = b.ins().iadd_imm_s(pb, (((i * kw + j) * oh * ow) * 4) as i64);
                if y_lo >= y_hi || x_lo >= x_hi {
                    if !adjoint {
                        fill(b, block, (oh * ow) as i64)?;
                    }
                    continue;
                }
                if !adjoint {
                    fill(b, block, y_lo * ow as i64)?;
                    let tail = b.ins().iadd_imm_s(block, y_hi * ow as i64 * 4);
                    fill(b, tail, (oh as i64 - y_hi) * ow as i64)?;
                }
                let len = x_hi - x_lo;
                let sw = i64::from(w.stride_w);
                counted_loop(b, y_lo, y_hi, 1, |b, y| {
                    // Image row y*sh + i - ph, from column x_lo*sw + j - pw.
                    let iy = b.ins().imul_imm_s(y, i64::from(w.stride_h) * wd as i64 * 4);
                    let src = b.ins().iadd(ib, iy);
                    let src = b.ins().iadd_imm_s(
                        src,
                        ((i as i64 - i64::from(w.pad_h)) * wd as i64 + x_lo * sw + j as i64 - i64::from(w.pad_w)) * 4,
                    );
                    let py = b.ins().imul_imm_s(y, ow as i64 * 4);
                    let row = b.ins().iadd(block, py);
                    if !adjoint {
                        fill(b, row, x_lo)?;
                        let after = b.ins().iadd_imm_s(row, x_hi * 4);
                        fill(b, after, ow as i64 - x_hi)?;
                    }
                    let dst = b.ins().iadd_imm_s(row, x_lo * 4);
                    let step = |b: &mut FunctionBuilder, vec: bool, s_addr: ClValue, d_addr: ClValue| {
                        let ty = if vec { types::F32X4 } else { types::F32 };
                        let v = b.ins().load(ty, flags(), s_addr, 0);
                        if adjoint {
                            // The image element gets the patch element added.
                            let acc = b.ins().load(ty, flags(), d_addr, 0);
                            let sum = b.ins().fadd(acc, v);
                            b.ins().store(flags(), sum, d_addr, 0);
                        } else {
                            b.ins().store(flags(), v, d_addr, 0);
                        }
                    };
                    // (from, to) = (image, patches), or the reverse for the adjoint.
                    let (from, to) = if adjoint { (dst, src) } else { (src, dst) };
                    let (f_step, t_step) = if adjoint { (1, sw) } else { (sw, 1) };
                    let n4 = if sw == 1 { len / 4 * 4 } else { 0 };
                    counted_loop(b, 0, n4, 4, |b, k| {
                        let off = b.ins().ishl_imm_u(k, 2);
                        let fa = b.ins().iadd(from, off);
                        let ta = b.ins().iadd(to, off);
                        step(b, true, fa, ta);
                        Ok(())
                    })?;
                    counted_loop(b, n4, len, 1, |b, k| {
                        let fo = b.ins().imul_imm_s(k, f_step * 4);
                        let to_ = b.ins().imul_imm_s(k, t_step * 4);
                        let fa = b.ins().iadd(from, fo);
                        let ta = b.ins().iadd(to, to_);
                        step(b, false, fa, ta);
                        Ok(())
                    })
                })?;
            }
        }
        Ok(())
    })
}

/// Copies rows of `row` elements from `src` to `dst` in nested loops over `dims`: a step
/// along dim k moves `src_strides[k]` elements in the source and `dst_strides[k]` in the
/// destination. Dims of size 1 are skipped.
fn permute_rows(
    b: &mut FunctionBuilder,
    src: ClValue,
    dst: ClValue,
    dims: &[usize],
    src_strides: &[usize],
    dst_strides: &[usize],
    row: usize,
) -> Result<(), String> {
    let Some((&d, rest)) = dims.split_first() else {
        let r4 = (row / 4 * 4) as i64;
        counted_loop(b, 0, r4, 4, |b, k| {
            let off = b.ins().ishl_imm_u(k, 2);
            let s = b.ins().iadd(src, off);
            let v = b.ins().load(types::F32X4, flags(), s, 0);
            let t = b.ins().iadd(dst, off);
            b.ins().store(flags(), v, t, 0);
            Ok(())
        })?;
        for k in r4..row as i64 {
            let v = b.ins().load(types::F32, flags(), src, (k * 4) as i32);
            b.ins().store(flags(), v, dst, (k * 4) as i32);
        }
        return Ok(());
    };
    if d == 1 {
        return permute_rows(b, src, dst, rest, &src_strides[1..], &dst_strides[1..], row);
    }
    let (ss, ds) = ((src_strides[0] * 4) as i64, (dst_strides[0] * 4) as i64);
    counted_loop(b, 0, d as i64, 1, |b, i| {
        let so = b.ins().imul_imm_s(i, ss);
        let s = b.ins().iadd(src, so);
        let dof = b.ins().imul_imm_s(i, ds);
        let t = b.ins().iadd(dst, dof);
        permute_rows(b, s, t, rest, &src_strides[1..], &dst_strides[1..], row)
    })
}
