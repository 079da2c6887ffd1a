//! Ahead-of-time builds (`nnc build`): an eval graph as a native library.
//!
//! Each compiled batch size goes through the JIT's stages (`runtime::executable::prepare`)
//! and the same emitter (`codegen::emit`), into one object file (cranelift-object) with
//! three data objects beside the code: the function table (`nnc_<name>_fns`, the
//! addresses of every step, split kernel and GEMM epilogue, relocated by the linker), the
//! model blob (`nnc_<name>_blob`, `blob.rs`: the tables the host callbacks read, buffer
//! slots, inputs and outputs, preprocessing) and the weights (`nnc_<name>_weights`, the
//! persistent region's image). `c.rs` writes the header and the per-model C functions;
//! the system C compiler links them with the runtime (`rt.rs` and the host kernels, from
//! nnc's own staticlib `libnnc.a`) into `lib<name>.so` and `lib<name>.a`.

pub mod blob;
mod c;
pub mod rt;

use crate::buffers::Region;
use crate::codegen::{self, CodegenOptions};
use crate::data::Preprocessor;
use crate::ir::{DType, Graph, Op};
use crate::tensors::TensorMap;
use cranelift_module::{DataDescription, FuncId, Linkage, Module};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What to build.
pub struct Request<'a> {
    /// The model's name (`Digits`); the library's is it lower-cased.
    pub model: &'a str,
    /// The eval graph (batch dim symbolic), without a loss.
    pub graph: &'a Graph,
    /// Parameters and states by name (checked against the graph).
    pub tensors: &'a TensorMap,
    pub preprocess: Option<Preprocessor>,
    /// Ascending batch sizes to compile.
    pub batches: Vec<usize>,
    /// `--batch N`: exactly one size.
    pub exact: bool,
    /// Threads a step may split large products and kernels across.
    pub threads: usize,
    /// The output folder.
    pub out: &'a Path,
    /// The runtime archive (`libnnc.a`).
    pub runtime: PathBuf,
}

/// What was built.
pub struct Report {
    pub name: String,
    /// Files written, with their sizes in bytes.
    pub files: Vec<(PathBuf, u64)>,
    pub compile_seconds: f64,
    pub link_seconds: f64,
}

/// The batch sizes of `--max-batch n`: 1, 2, 4, ... below n, and n.
pub fn batch_sizes(max: usize) -> Vec<usize> {
    let mut v: Vec<usize> =
        std::iter::successors(Some(1usize), |&b| b.checked_mul(2)).take_while(|&b| b < max).collect();
    v.push(max.max(1));
    v
}

/// The runtime archive: `$NNC_RUNTIME`, else the newest of `libnnc.a` beside the running
/// executable (`target/release/` after `cargo build --release`) and the archives in
/// `deps/` beside it (where `cargo test` leaves the one built with the binary).
pub fn find_runtime() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NNC_RUNTIME") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("NNC_RUNTIME is `{}`, which is not a file (it should name nnc's libnnc.a)", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the running executable: {e}"))?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let beside = dir.join("libnnc.a");
    let mut found: Vec<PathBuf> = vec![beside.clone()];
    if let Ok(rd) = std::fs::read_dir(dir.join("deps")) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with("libnnc-") && n.ends_with(".a") {
                found.push(e.path());
            }
        }
    }
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    found
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| modified(&p).map(|t| (t, p)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p)
        .ok_or_else(|| {
            format!(
                "the runtime library `{}` is missing: `cargo build --release` writes it beside the nnc binary; \
                 or set NNC_RUNTIME to its path",
                beside.display()
            )
        })
}

/// The C functions every library defines, after `<name>_`.
const API_FUNCTIONS: [&str; 17] = [
    "run",
    "run_v",
    "max_batch",
    "batch_sizes",
    "num_inputs",
    "num_outputs",
    "input_name",
    "output_name",
    "input_dtype",
    "output_dtype",
    "input_shape",
    "output_shape",
    "input_size",
    "output_size",
    "input_bound",
    "strerror",
    "release_thread",
];

/// The dims of a concrete value.
fn dims(g: &Graph, v: crate::ir::Value) -> Vec<usize> {
    g.ty(v).shape.iter().map(|d| d.as_const().unwrap_or(0).max(0) as usize).collect()
}

/// One sample's dims, per input or output.
type Shapes = Vec<Vec<usize>>;

/// One sample's dims of every input and output: the graph at batch 1 and 2 must have
/// the batch as the first dim of each, and nothing else that depends on it.
fn sample_shapes(g: &Graph) -> Result<(Shapes, Shapes), String> {
    let g1 = crate::runtime::executable::concrete(g, 1)?;
    let g2 = crate::runtime::executable::concrete(g, 2)?;
    let per = |what: &str, name: &str, a: Vec<usize>, b: Vec<usize>| -> Result<Vec<usize>, String> {
        match (a.split_first(), b.split_first()) {
            (Some((&1, ra)), Some((&2, rb))) if ra == rb => Ok(ra.to_vec()),
            _ => Err(format!(
                "{what} `{name}` does not have the batch as its first dim and a fixed shape after it \
                 ({a:?} at batch 1, {b:?} at batch 2): nnc build compiles models whose inputs and outputs are \
                 [batch, ...]"
            )),
        }
    };
    let mut ins = Vec::new();
    for (i1, i2) in g1.inputs.iter().zip(&g2.inputs) {
        ins.push(per("input", &i1.name, dims(&g1, i1.value), dims(&g2, i2.value))?);
    }
    let mut outs = Vec::new();
    for ((n, o1), (_, o2)) in g1.outputs.iter().zip(&g2.outputs) {
        outs.push(per("output", n, dims(&g1, *o1), dims(&g2, *o2))?);
    }
    Ok((ins, outs))
}

/// A step compiled into the object module.
struct Emitted {
    batch: usize,
    arena_len: usize,
    e: codegen::Emitted,
    inputs: Vec<crate::buffers::Slot>,
    outputs: Vec<crate::buffers::Slot>,
}

/// Runs a command; its output on failure.
fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("{what}: cannot run `{shown}`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): `{shown}`\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A temporary folder, removed when dropped.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds the library. Nothing is written to `req.out` until every file is built.
pub fn build(req: &Request) -> Result<Report, String> {
    let name = req.model.to_lowercase();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("the model name `{}` is not a C identifier", req.model));
    }
    let t0 = std::time::Instant::now();
    let (object, api) = emit(req, &name)?;
    let compile_seconds = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let (tmp, out_abs) = link(req, &name, &object, &api)?;
    let link_seconds = t1.elapsed().as_secs_f64();
    let files = install(req, &name, &tmp, &out_abs)?;
    Ok(Report { name, files, compile_seconds, link_seconds })
}

/// The eval graph of a request (no loss, no updates: batch-norm statistics are only
/// read), its inputs and outputs as the blob describes them, their per-sample shapes,
/// and the preprocessing bound to its input.
fn ports(req: &Request) -> Result<Ports, String> {
    let mut g = req.graph.clone();
    g.loss = None;
    g.params.iter_mut().for_each(|p| p.update = None);
    g.states.iter_mut().for_each(|s| s.update = None);
    let g = crate::simplify::drop_unused_inputs(&crate::simplify::dead_code(&g));
    let (in_shapes, out_shapes) = sample_shapes(&g)?;
    let bounds = crate::ir::id_bounds(&g);
    let inputs: Vec<blob::Io> = g
        .inputs
        .iter()
        .zip(&in_shapes)
        .zip(&bounds)
        .map(|((i, s), b)| blob::Io {
            i32: i.ty.dtype == DType::I32,
            per_sample: s.iter().product(),
            bound: b.map(|(n, _)| n),
        })
        .collect();
    let outputs: Vec<blob::Io> = g
        .outputs
        .iter()
        .zip(&out_shapes)
        .map(|((_, v), s)| blob::Io { i32: g.ty(*v).dtype == DType::I32, per_sample: s.iter().product(), bound: None })
        .collect();
    let preprocess = match &req.preprocess {
        Some(p) if p.kind() != "none" => {
            let i = g.inputs.iter().position(|x| x.name == p.input);
            match i {
                Some(i) if inputs[i].i32 => {
                    return Err(format!("the preprocessing applies to `{}`, an i32 input", p.input));
                }
                Some(i) if p.dim != inputs[i].per_sample => {
                    return Err(format!(
                        "the preprocessing of `{}` holds {} values per sample, the input has {}",
                        p.input, p.dim, inputs[i].per_sample
                    ));
                }
                Some(i) => Some((i, p.clone())),
                None => None,
            }
        }
        _ => None,
    };
    Ok(Ports { g, inputs, outputs, in_shapes, out_shapes, preprocess })
}

/// What `ports` finds.
struct Ports {
    g: Graph,
    inputs: Vec<blob::Io>,
    outputs: Vec<blob::Io>,
    in_shapes: Shapes,
    out_shapes: Shapes,
    preprocess: Option<(usize, Preprocessor)>,
}

/// Compiles every batch size's step into one object file (Cranelift's object backend)
/// with the function table, the model blob and the weights as data: the object's bytes
/// and the C API that goes with it.
fn emit(req: &Request, name: &str) -> Result<(Vec<u8>, c::Api), String> {
    let Ports { g, inputs, outputs, in_shapes, out_shapes, preprocess } = ports(req)?;
    // Narrow math: an object file cannot hold the addresses of the 16-lane host functions.
    let opts = CodegenOptions { threads: req.threads.max(1), narrow_math: true, ..Default::default() };
    let isa = codegen::isa(&opts, true)?;
    let builder =
        cranelift_object::ObjectBuilder::new(isa, format!("{name}.o"), cranelift_module::default_libcall_names())
            .map_err(|e| format!("cranelift: {e}"))?;
    let mut module = cranelift_object::ObjectModule::new(builder);
    let mut steps: Vec<Emitted> = Vec::new();
    let mut persistent: Option<(usize, Vec<f32>)> = None;
    for &batch in &req.batches {
        let cg = crate::runtime::executable::concrete(&g, batch)?;
        let (pg, schedule, plan) = crate::runtime::executable::prepare(&cg)?;
        if !plan.copies.is_empty() {
            return Err("internal error: an eval step with updates".into());
        }
        // The weights are shared by every call: no kernel may write them.
        for k in &schedule.kernels {
            for v in k.outs() {
                if plan.slots[v.as_u32() as usize].is_some_and(|s| s.region == Region::Persistent) {
                    return Err(format!("internal error: kernel output {v} is in the persistent region"));
                }
            }
        }
        // The persistent image: every parameter and state at its slot.
        let mut image = vec![0.0f32; plan.persistent_len];
        let decls = pg
            .params
            .iter()
            .map(|p| (&p.name, p.value))
            .zip(&plan.param_slots)
            .chain(pg.states.iter().map(|s| (&s.name, s.value)).zip(&plan.state_slots));
        for ((n, v), slot) in decls {
            if matches!(pg.nodes[v].op, Op::Param(_) | Op::State(_)) {
                let t = req.tensors.get(n).and_then(|t| t.floats()).ok_or_else(|| format!("`{n}` is missing"))?;
                if t.len() != slot.len || slot.offset + slot.len > image.len() {
                    return Err(format!("`{n}` has {} values, the model needs {}", t.len(), slot.len));
                }
                for (o, &x) in image[slot.offset..slot.offset + slot.len].iter_mut().zip(t) {
                    *o = x as f32;
                }
            }
        }
        match &persistent {
            None => persistent = Some((plan.persistent_len, image)),
            Some((_, first)) if *first != image => {
                return Err("internal error: the persistent region differs between batch sizes".into());
            }
            _ => {}
        }
        let slot = |v: crate::ir::Value| {
            plan.slots[v.as_u32() as usize].ok_or_else(|| format!("internal error: {v} is not stored"))
        };
        let ins = pg.inputs.iter().map(|i| slot(i.value)).collect::<Result<Vec<_>, _>>()?;
        let outs = pg.outputs.iter().map(|(_, v)| slot(*v)).collect::<Result<Vec<_>, _>>()?;
        for (s, io) in ins.iter().zip(&inputs) {
            if s.region != Region::Arena || s.len != batch * io.per_sample {
                return Err("internal error: an input slot does not hold the batch".into());
            }
        }
        let e = codegen::emit(&mut module, &format!("nnc_{name}_b{batch}_"), &pg, &schedule, &plan, &opts)?;
        steps.push(Emitted { batch, arena_len: plan.arena_len, e, inputs: ins, outputs: outs });
    }
    let (persistent_len, image) = persistent.ok_or("no batch size to compile")?;

    // The function table and the blob's indices into it.
    let mut fns: Vec<FuncId> = Vec::new();
    let mut index = |id: FuncId| -> u32 {
        fns.push(id);
        fns.len() as u32 - 1
    };
    let mut par_fns = Vec::new();
    let mut epilogue_fns = Vec::new();
    let mut model = blob::Model::<u32> { inputs, outputs, preprocess, persistent_len, steps: Vec::new() };
    for s in steps {
        let step = index(s.e.step);
        par_fns.push(s.e.par.iter().map(|&id| index(id)).collect::<Vec<u32>>());
        let mut ep: Vec<Option<u32>> = vec![None; s.e.tables.gemm.len()];
        for &(gi, id) in &s.e.epilogues {
            if let Some(slot) = ep.get_mut(gi) {
                *slot = Some(index(id));
            }
        }
        epilogue_fns.push(ep);
        model.steps.push(blob::Step {
            batch: s.batch,
            arena_len: s.arena_len,
            step,
            tables: s.e.tables,
            inputs: s.inputs,
            outputs: s.outputs,
        });
    }
    let bytes = blob::encode(&model, &par_fns, &epilogue_fns);
    let err = |e: cranelift_module::ModuleError| format!("cranelift: {e}");
    let data = |module: &mut cranelift_object::ObjectModule, sym: &str, d: &DataDescription| -> Result<(), String> {
        let id = module.declare_data(sym, Linkage::Export, false, false).map_err(err)?;
        module.define_data(id, d).map_err(err)
    };
    let mut d = DataDescription::new();
    d.define(vec![0u8; 8 * fns.len().max(1)].into_boxed_slice());
    d.set_align(8);
    for (i, &id) in fns.iter().enumerate() {
        let f = module.declare_func_in_data(id, &mut d);
        d.write_function_addr((8 * i) as u32, f);
    }
    data(&mut module, &format!("nnc_{name}_fns"), &d)?;
    let mut d = DataDescription::new();
    d.define(bytes.clone().into_boxed_slice());
    d.set_align(8);
    data(&mut module, &format!("nnc_{name}_blob"), &d)?;
    let mut w: Vec<u8> = image.iter().flat_map(|x| x.to_le_bytes()).collect();
    w.resize(w.len().max(64), 0);
    let mut d = DataDescription::new();
    d.define(w.into_boxed_slice());
    d.set_align(64);
    data(&mut module, &format!("nnc_{name}_weights"), &d)?;
    let object = module.finish().emit().map_err(|e| format!("cannot write the object file: {e}"))?;
    let api = c::Api {
        name: name.to_string(),
        model: req.model.to_string(),
        inputs: g
            .inputs
            .iter()
            .zip(&model.inputs)
            .zip(in_shapes)
            .map(|((i, io), sample)| c::Port { name: i.name.clone(), io: io.clone(), sample })
            .collect(),
        outputs: g
            .outputs
            .iter()
            .zip(&model.outputs)
            .zip(out_shapes)
            .map(|(((n, _), io), sample)| c::Port { name: n.clone(), io: io.clone(), sample })
            .collect(),
        batches: req.batches.clone(),
        exact: req.exact,
        preprocess: model.preprocess.as_ref().map(|(_, p)| (p.input.clone(), p.kind().to_string())),
        threads: opts.threads,
        blob_len: bytes.len(),
        fns_len: fns.len(),
        weights_count: image.len(),
    };
    Ok((object, api))
}

/// Compiles the C API and links the shared and the static library in a temporary folder
/// beside the output (removed when dropped), with the system's `cc`, `objcopy` and `ar`.
fn link(req: &Request, name: &str, object: &[u8], api: &c::Api) -> Result<(TempDir, PathBuf), String> {
    let out_abs = if req.out.is_absolute() {
        req.out.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| format!("cannot read the current folder: {e}"))?.join(req.out)
    };
    let parent = out_abs.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).map_err(|e| format!("cannot create `{}`: {e}", parent.display()))?;
    let leaf = out_abs.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "build".into());
    let tmp = TempDir(parent.join(format!(".{leaf}.nnc-build-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&tmp.0);
    std::fs::create_dir_all(&tmp.0).map_err(|e| format!("cannot create `{}`: {e}", tmp.0.display()))?;
    let t = |f: &str| tmp.0.join(f);
    let write =
        |f: &str, b: &[u8]| std::fs::write(t(f), b).map_err(|e| format!("cannot write `{}`: {e}", t(f).display()));
    write("model.o", object)?;
    write(&format!("{name}.h"), api.header().as_bytes())?;
    write("api.c", api.source().as_bytes())?;
    let syms: Vec<String> = API_FUNCTIONS.iter().map(|f| format!("{name}_{f}")).collect();
    write("exports.map", format!("{{\n  global:\n    {};\n  local: *;\n}};\n", syms.join(";\n    ")).as_bytes())?;
    write("keep.txt", syms.join("\n").as_bytes())?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    run(
        Command::new(&cc).current_dir(&tmp.0).args([
            "-c",
            "-O2",
            "-fPIC",
            "-fvisibility=hidden",
            "-o",
            "api.o",
            "api.c",
        ]),
        "compiling the C API",
    )?;
    let so = format!("lib{name}.so");
    run(
        Command::new(&cc).current_dir(&tmp.0).args(["-shared", "-o", &so, "model.o", "api.o"]).arg(&req.runtime).args(
            [
                "-Wl,--gc-sections",
                // The runtime's debug info (Rust's standard library ships with it) is most
                // of the size; symbols stay.
                "-Wl,--strip-debug",
                "-Wl,--version-script=exports.map",
                &format!("-Wl,-soname,{so}"),
                "-lm",
                "-lpthread",
                "-ldl",
            ],
        ),
        "linking the shared library",
    )?;
    // The static library: one relocatable object holding the model, the API and the
    // parts of the runtime they use, every symbol but the API local to it (two models'
    // libraries link into one program).
    let obj = format!("{name}.o");
    let mut partial = Command::new(&cc);
    partial.current_dir(&tmp.0).args(["-r", "-nostdlib", "-o", &obj, "-Wl,--gc-sections"]);
    for s in &syms {
        partial.arg(format!("-Wl,-u,{s}"));
    }
    run(partial.args(["model.o", "api.o"]).arg(&req.runtime), "linking the static library's object")?;
    run(
        // Rust's objects carry their LLVM bitcode (`.llvmbc`), which a linker plugin of
        // another LLVM version would try to read: not needed, removed.
        Command::new("objcopy").current_dir(&tmp.0).args([
            "--keep-global-symbols=keep.txt",
            "--strip-debug",
            "--remove-section=.llvmbc",
            "--remove-section=.llvmcmd",
            &obj,
        ]),
        "localizing the static library's symbols",
    )?;
    let a = format!("lib{name}.a");
    run(Command::new("ar").current_dir(&tmp.0).args(["rcs", &a, &obj]), "archiving the static library")?;
    Ok((tmp, out_abs))
}

/// Copies the header and the two libraries into the output folder, each atomically.
fn install(req: &Request, name: &str, tmp: &TempDir, out_abs: &Path) -> Result<Vec<(PathBuf, u64)>, String> {
    let t = |f: &str| tmp.0.join(f);
    // Every file built: now into the output folder, each written atomically.
    std::fs::create_dir_all(out_abs).map_err(|e| format!("cannot create `{}`: {e}", req.out.display()))?;
    let mut files = Vec::new();
    for f in [format!("{name}.h"), format!("lib{name}.a"), format!("lib{name}.so")] {
        let bytes = std::fs::read(t(&f)).map_err(|e| format!("cannot read `{}`: {e}", t(&f).display()))?;
        let dst = req.out.join(&f);
        crate::tensors::write_atomic(&dst, &bytes)?;
        files.push((dst, bytes.len() as u64));
    }
    Ok(files)
}
