//! A compiled step ready to run: the concrete graph, its schedule and buffer plan, the
//! native code, and the memory it runs on (one arena for the step, one persistent region
//! for parameters and states). `run` is a single call into native code; nothing is
//! allocated inside it.

use crate::buffers::{self, Plan, Region, Slot};
use crate::codegen::{self, host::HostCtx, CodegenOptions, CompiledStep};
use crate::fusion::{self, Schedule};
use crate::ir::{self, DType, Graph, Value};

/// Memory aligned to 64 bytes, of f32 elements, zeroed.
pub(crate) struct Aligned {
    /// The allocation: 16 floats more than `len`, for the alignment.
    buf: *mut f32,
    layout: std::alloc::Layout,
    start: usize,
    len: usize,
}

// SAFETY: `Aligned` owns its allocation as a `Vec<f32>` would; access goes through
// `&self`/`&mut self` (or the raw pointer a step is given, under the same borrow).
unsafe impl Send for Aligned {}
unsafe impl Sync for Aligned {}

impl Aligned {
    /// Zeroed memory, allocated fallibly: a size the allocator refuses is an error. The
    /// allocation has the allocator's own alignment, so it is `calloc`'s: a large block
    /// comes as fresh pages the kernel zeroes when they are first touched, and nothing
    /// here writes them (a 10 MB arena cost milliseconds of `memset` and page faults at
    /// compile time). The start is then moved to a 64-byte boundary.
    pub(crate) fn new(len: usize, what: &str) -> Result<Aligned, String> {
        let refused = || format!("cannot allocate {:.2} GB for {what}", (len + 16) as f64 * 4e-9);
        let bytes = (len + 16).checked_mul(4).ok_or_else(refused)?;
        let layout = std::alloc::Layout::from_size_align(bytes, 4).map_err(|_| refused())?;
        // SAFETY: the layout has a non-zero size.
        let buf = unsafe { std::alloc::alloc_zeroed(layout) } as *mut f32;
        if buf.is_null() {
            return Err(refused());
        }
        let addr = buf as usize;
        let start = ((64 - addr % 64) % 64) / 4;
        Ok(Aligned { buf, layout, start, len })
    }
    pub(crate) fn ptr(&mut self) -> *mut f32 {
        // SAFETY: start + len <= len + 16 floats allocated, by construction.
        unsafe { self.buf.add(self.start) }
    }
    fn slice(&self) -> &[f32] {
        // SAFETY: the allocation holds start + len initialized (zeroed) floats.
        unsafe { std::slice::from_raw_parts(self.buf.add(self.start), self.len) }
    }
    pub(crate) fn slice_mut(&mut self) -> &mut [f32] {
        // SAFETY: as for `slice`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.buf.add(self.start), self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.buf as *mut u8, self.layout) }
    }
}

pub struct Executable {
    pub graph: Graph,
    pub schedule: Schedule,
    pub plan: Plan,
    compiled: CompiledStep,
    arena: Aligned,
    persistent: Aligned,
    /// GEMM packing space (`Tables::workspace_part` floats per thread).
    workspace: Aligned,
    ctx: Box<HostCtx>,
    /// Seconds spent in fusion, planning and code generation.
    pub compile_seconds: f64,
    /// Of which, stage by stage: `simplify`, `fusion`, `plan`, `cranelift` (code
    /// generation) and `alloc` (the arena, parameters and GEMM workspace).
    pub timings: crate::passes::Timings,
    flush_denormals: bool,
}

// SAFETY: the raw pointers of `ctx` point into memory this executable owns (its arena,
// persistent region and GEMM workspace, and the tables of its compiled code), which
// moves with it; nothing in it belongs to the thread that made it. A step runs through
// `&mut self`, so one thread at a time uses it.
unsafe impl Send for Executable {}

/// Binds every symbol of `g` to the batch size (the graph must then be concrete).
pub fn concrete(g: &Graph, batch: usize) -> Result<Graph, String> {
    // `bind_symbol` returns a new graph: `g` is cloned only when nothing is bound.
    let mut out: Option<Graph> = None;
    for name in &g.symbols {
        let cur = out.as_ref().unwrap_or(g);
        if cur.inputs.iter().any(|i| i.ty.shape.iter().any(|d| d.symbols().any(|s| g.symbols[s.0 as usize] == *name))) {
            out = Some(ir::bind_symbol(cur, name, batch as i64)?);
        }
    }
    Ok(out.unwrap_or_else(|| g.clone()))
}

/// The stages before code generation, for a concrete graph: simplified, fused, planned,
/// and the planned bytes checked against the machine's memory.
pub fn prepare(g: &Graph) -> Result<(Graph, Schedule, Plan), String> {
    prepare_timed(g, &fusion::Options::default(), &mut Default::default())
}

/// `prepare` with fusion options, each stage timed into `t` (`simplify`, `fusion`,
/// `plan`), the simplified graph verified between passes (`passes::checked`).
pub fn prepare_timed(
    g: &Graph,
    opts: &fusion::Options,
    t: &mut crate::passes::Timings,
) -> Result<(Graph, Schedule, Plan), String> {
    let g = crate::passes::checked(t.run("simplify", || crate::simplify::simplify(g)), "simplify")?;
    let schedule = t.run("fusion", || fusion::fuse_with(&g, opts))?;
    let plan = t.run("plan", || buffers::plan(&g, &schedule));
    // The planned bytes first: refuse what cannot fit before compiling anything.
    let planned = (plan.arena_len as u64 + plan.persistent_len as u64).saturating_mul(4);
    crate::limits::check_alloc(planned, "the step's arena, parameters and states")?;
    Ok((g, schedule, plan))
}

impl Executable {
    /// Compiles a concrete graph (every dim a number).
    pub fn new(g: &Graph, opts: &CodegenOptions) -> Result<Executable, String> {
        let t0 = std::time::Instant::now();
        for (v, node) in g.nodes.iter() {
            if node.ty.shape.iter().any(|d| !d.is_const()) {
                return Err(format!("internal error: {v} has a symbolic shape; bind the batch size first"));
            }
        }
        let mut timings = crate::passes::Timings::default();
        let (g, schedule, plan) =
            prepare_timed(g, &fusion::Options { updates_in_epilogues: opts.fuse_updates }, &mut timings)?;
        let compiled = timings.run("cranelift", || codegen::compile(&g, &schedule, &plan, opts))?;
        let t = std::time::Instant::now();
        let mut arena = Aligned::new(plan.arena_len, "the step's arena")?;
        let mut persistent = Aligned::new(plan.persistent_len, "the parameters and states")?;
        let mut workspace =
            Aligned::new(compiled.tables.workspace_part * compiled.tables.workspace_parts, "the GEMM workspace")?;
        let ctx = Box::new(HostCtx {
            arena: arena.ptr(),
            persistent: persistent.ptr(),
            seed: 0,
            step: 0,
            tables: &*compiled.tables,
            workspace: workspace.ptr(),
            collective: std::ptr::null_mut(),
        });
        timings.add("alloc", t.elapsed().as_secs_f64());
        Ok(Executable {
            graph: g,
            schedule,
            plan,
            compiled,
            arena,
            persistent,
            workspace,
            ctx,
            compile_seconds: t0.elapsed().as_secs_f64(),
            timings,
            flush_denormals: !opts.keep_denormals,
        })
    }

    fn slot(&self, v: Value) -> Result<Slot, String> {
        self.plan.slots[v.as_u32() as usize].ok_or_else(|| format!("internal error: {v} is not stored"))
    }

    fn region(&self, s: Slot) -> &[f32] {
        let r = match s.region {
            Region::Arena => self.arena.slice(),
            Region::Persistent => self.persistent.slice(),
        };
        &r[s.offset..s.offset + s.len]
    }

    fn region_mut(&mut self, s: Slot) -> &mut [f32] {
        let r = match s.region {
            Region::Arena => self.arena.slice_mut(),
            Region::Persistent => self.persistent.slice_mut(),
        };
        &mut r[s.offset..s.offset + s.len]
    }

    pub fn param(&self, i: usize) -> &[f32] {
        self.region(self.plan.param_slots[i])
    }
    pub fn set_param(&mut self, i: usize, data: &[f32]) -> Result<(), String> {
        let s = self.plan.param_slots[i];
        if data.len() != s.len {
            return Err(format!(
                "parameter `{}` has {} values, expected {}",
                self.graph.params[i].name,
                data.len(),
                s.len
            ));
        }
        self.region_mut(s).copy_from_slice(data);
        Ok(())
    }
    pub fn state(&self, i: usize) -> &[f32] {
        self.region(self.plan.state_slots[i])
    }
    pub fn set_state(&mut self, i: usize, data: &[f32]) -> Result<(), String> {
        let s = self.plan.state_slots[i];
        if data.len() != s.len {
            return Err(format!("state `{}` has {} values, expected {}", self.graph.states[i].name, data.len(), s.len));
        }
        self.region_mut(s).copy_from_slice(data);
        Ok(())
    }
    /// The slot of input `i`, after checking its element type and length.
    fn input_slot(&self, i: usize, dtype: DType, len: usize) -> Result<Slot, String> {
        let decl = &self.graph.inputs[i];
        if decl.ty.dtype != dtype {
            return Err(format!("input `{}` is {}, not {}", decl.name, decl.ty.dtype.name(), dtype.name()));
        }
        let s = self.slot(decl.value)?;
        if len != s.len {
            return Err(format!("input `{}` has {len} values, expected {}", decl.name, s.len));
        }
        Ok(s)
    }
    /// Sets the f32 input `i`.
    pub fn set_input_f32(&mut self, i: usize, data: &[f32]) -> Result<(), String> {
        let s = self.input_slot(i, DType::F32, data.len())?;
        self.region_mut(s).copy_from_slice(data);
        Ok(())
    }
    /// Sets the i32 input `i` (ids are stored bit for bit in the f32 arena).
    pub fn set_input_i32(&mut self, i: usize, data: &[i32]) -> Result<(), String> {
        let s = self.input_slot(i, DType::I32, data.len())?;
        for (o, &x) in self.region_mut(s).iter_mut().zip(data) {
            *o = f32::from_bits(x as u32);
        }
        Ok(())
    }
    /// Runs one step: a single call into native code, which allocates nothing. With
    /// `CodegenOptions::threads` > 1, large kernels and products are split across the
    /// process's team of worker threads (`codegen::team`), from whichever thread calls;
    /// while another thread's step holds the team, this one runs its parts itself.
    pub fn run(&mut self, seed: u64, step: u64) {
        self.ctx.collective = std::ptr::null_mut();
        self.run_inner(seed, step)
    }

    /// `run`, with the step's collectives (`Op::AllReduce`: a data-parallel step's
    /// gradient sums) going through `collective`.
    pub fn run_with(&mut self, seed: u64, step: u64, collective: &mut dyn codegen::host::Collective) {
        let mut c: &mut dyn codegen::host::Collective = collective;
        self.ctx.collective = &mut c as *mut &mut dyn codegen::host::Collective as *mut std::ffi::c_void;
        self.run_inner(seed, step);
        self.ctx.collective = std::ptr::null_mut();
    }

    fn run_inner(&mut self, seed: u64, step: u64) {
        self.ctx.seed = seed;
        self.ctx.step = step;
        self.ctx.arena = self.arena.ptr();
        self.ctx.persistent = self.persistent.ptr();
        self.ctx.workspace = self.workspace.ptr();
        let (a, p) = (self.arena.ptr(), self.persistent.ptr());
        let _ftz = self.flush_denormals.then(crate::codegen::fp::FlushDenormals::new);
        // SAFETY: the code was compiled for this plan and these regions.
        unsafe { (self.compiled.step)(a, p, &*self.ctx) }
    }
    /// The data of a stored value after `run` (outputs, the loss, updates).
    pub fn value(&self, v: Value) -> Result<&[f32], String> {
        Ok(self.region(self.slot(v)?))
    }
    pub fn output(&self, name: &str) -> Result<&[f32], String> {
        let v = self
            .graph
            .outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("no output `{name}`"))?;
        self.value(v)
    }
    pub fn loss(&self) -> Result<f32, String> {
        let l = self.graph.loss.ok_or("the graph has no loss")?;
        Ok(self.value(l)?[0])
    }
    /// Floating-point operations of the step's matrix products (2 m k n each).
    pub fn matmul_flops(&self) -> usize {
        self.schedule
            .kernels
            .iter()
            .map(|k| match k {
                fusion::Kernel::MatMul { batch, m, k, n, .. } => 2 * batch * m * k * n,
                _ => 0,
            })
            .sum()
    }
    /// Nanoseconds spent in each kernel so far (with `CodegenOptions::profile`).
    pub fn kernel_times(&self) -> Vec<u64> {
        self.compiled.tables.ticks.iter().map(|t| t.load(std::sync::atomic::Ordering::Relaxed)).collect()
    }

    /// Kernel and epilogue functions compiled, and kernels and epilogues that run one of
    /// them compiled for another (the same code over other buffers).
    pub fn functions(&self) -> (usize, usize) {
        (self.compiled.functions, self.compiled.shared)
    }

    /// A hash of the step's machine code (`codegen::CompiledStep::code_hash`).
    pub fn code_hash(&self) -> u64 {
        self.compiled.code_hash
    }

    /// The Cranelift IR of every kernel and of the step (with `keep_clif`).
    pub fn clif(&self) -> &str {
        &self.compiled.clif
    }
}
