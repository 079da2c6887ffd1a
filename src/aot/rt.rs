//! The runtime a built library calls (linked in from `libnnc.a`): `nnc_rt_load` decodes
//! the embedded model blob once, `nnc_rt_run` runs one call. Each call runs on buffers of
//! its own thread (an arena and a GEMM workspace per compiled batch size, allocated on
//! the thread's first call at that size and kept until `nnc_rt_release` or the thread
//! ends); the weights are only read. So calls from several threads may run at once.

use super::blob::{self, Io, Model};
use crate::buffers::{Region, Slot};
use crate::codegen::host::HostCtx;
use crate::codegen::StepFn;
use crate::runtime::executable::Aligned;
use std::cell::RefCell;
use std::ffi::c_void;

/// The return codes of `nnc_rt_run` (and of the library's `<name>_run`).
pub const OK: i32 = 0;
/// `batch` is outside 1..=max batch.
pub const ERR_BATCH: i32 = 1;
/// The arena or workspace for this batch size could not be allocated.
pub const ERR_MEMORY: i32 = 2;
/// An i32 input holds an id outside its range (the rows of a table, the classes of a
/// one-hot).
pub const ERR_ID: i32 = 3;
/// A null pointer among the arguments.
pub const ERR_NULL: i32 = 4;
/// The embedded model could not be loaded (a corrupted library).
pub const ERR_LOAD: i32 = 5;
/// An internal error (a bug in nnc).
pub const ERR_INTERNAL: i32 = 6;

/// A loaded model: the decoded blob and the weights it runs on.
pub struct Loaded {
    model: Model<StepFn>,
    weights: *mut f32,
}

// SAFETY: the weights are only read by steps (`aot::build` checks that no kernel writes
// the persistent region), and the tables are read-only at run time.
unsafe impl Send for Loaded {}
unsafe impl Sync for Loaded {}

/// One thread's buffers for one step of one model.
struct Buffers {
    model: usize,
    step: usize,
    arena: Aligned,
    workspace: Aligned,
}

thread_local! {
    static BUFFERS: RefCell<Vec<Buffers>> = const { RefCell::new(Vec::new()) };
}

/// Decodes a model blob; null when it is not valid. The function table `fns` holds
/// `nfns` addresses, the weights `nweights` floats (64-byte aligned, never written).
///
/// # Safety
/// The pointers must address readable memory of the given lengths, and `fns` must hold
/// the functions the blob was encoded against (the library's own table).
#[no_mangle]
pub unsafe extern "C" fn nnc_rt_load(
    blob: *const u8,
    len: u64,
    fns: *const *const u8,
    nfns: u64,
    weights: *const f32,
    nweights: u64,
) -> *mut c_void {
    if blob.is_null() || fns.is_null() || weights.is_null() {
        return std::ptr::null_mut();
    }
    let r = std::panic::catch_unwind(|| {
        // SAFETY: the caller passes the lengths of these arrays.
        let (b, f) =
            unsafe { (std::slice::from_raw_parts(blob, len as usize), std::slice::from_raw_parts(fns, nfns as usize)) };
        let model = blob::decode(b, f).ok()?;
        if model.persistent_len as u64 > nweights {
            return None;
        }
        let loaded = Loaded { model, weights: weights as *mut f32 };
        Some(Box::into_raw(Box::new(loaded)) as *mut c_void)
    });
    r.ok().flatten().unwrap_or(std::ptr::null_mut())
}

/// Copies `n` elements of a caller's array into a buffer (f32, or i32 as its bits).
///
/// # Safety
/// `src` must hold `n` elements.
unsafe fn copy_in(dst: &mut [f32], src: *const c_void, n: usize) {
    // i32 ids are stored bit for bit in the f32 arena: the same 4 bytes either way.
    let s = unsafe { std::slice::from_raw_parts(src as *const f32, n) };
    dst[..n].copy_from_slice(s);
    dst[n..].fill(0.0);
}

/// Whether every id of an i32 input lies in 0..bound.
///
/// # Safety
/// `src` must hold `n` elements.
unsafe fn ids_ok(io: &Io, src: *const c_void, n: usize) -> bool {
    let Some(bound) = io.bound.filter(|_| io.i32) else { return true };
    let s = unsafe { std::slice::from_raw_parts(src as *const i32, n) };
    s.iter().all(|&x| x >= 0 && i64::from(x) < bound)
}

/// Runs the model on `batch` rows: `inputs[i]` holds `batch` samples of input `i`
/// (row-major, f32 or i32), `outputs[j]` receives `batch` samples of output `j`. Runs the
/// smallest compiled batch size that holds `batch` rows, the rows past `batch` zeroed.
/// Returns `OK` or an `ERR_*` code.
///
/// # Safety
/// `model` must come from `nnc_rt_load`; the arrays must hold as many pointers as the
/// model has inputs and outputs, each to `batch` samples.
#[no_mangle]
pub unsafe extern "C" fn nnc_rt_run(
    model: *const c_void,
    inputs: *const *const c_void,
    batch: i64,
    outputs: *const *mut c_void,
) -> i32 {
    if model.is_null() {
        return ERR_LOAD;
    }
    // SAFETY: `model` came from `nnc_rt_load`, which leaks it for the program's life.
    let m = unsafe { &*(model as *const Loaded) };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { run(m, model as usize, inputs, batch, outputs) }))
        .unwrap_or(ERR_INTERNAL)
}

/// # Safety
/// As for `nnc_rt_run`.
unsafe fn run(m: &Loaded, key: usize, inputs: *const *const c_void, batch: i64, outputs: *const *mut c_void) -> i32 {
    let model = &m.model;
    let Some(max) = model.steps.last().map(|s| s.batch) else { return ERR_LOAD };
    if batch < 1 || batch as u64 > max as u64 {
        return ERR_BATCH;
    }
    let b = batch as usize;
    if (!model.inputs.is_empty() && inputs.is_null()) || (!model.outputs.is_empty() && outputs.is_null()) {
        return ERR_NULL;
    }
    // SAFETY: the caller passes one pointer per input and output.
    let ins = unsafe { std::slice::from_raw_parts(inputs, model.inputs.len()) };
    let outs = unsafe { std::slice::from_raw_parts(outputs, model.outputs.len()) };
    if ins.iter().any(|p| p.is_null()) || outs.iter().any(|p| p.is_null()) {
        return ERR_NULL;
    }
    for (io, &p) in model.inputs.iter().zip(ins) {
        if !unsafe { ids_ok(io, p, b * io.per_sample) } {
            return ERR_ID;
        }
    }
    let Some(si) = model.steps.iter().position(|s| s.batch >= b) else { return ERR_BATCH };
    let step = &model.steps[si];
    BUFFERS.with(|cell| {
        let Ok(mut all) = cell.try_borrow_mut() else { return ERR_INTERNAL };
        let at = match all.iter().position(|x| x.model == key && x.step == si) {
            Some(i) => i,
            None => {
                let ws = step.tables.workspace_part.saturating_mul(step.tables.workspace_parts);
                let (Ok(arena), Ok(workspace)) = (Aligned::new(step.arena_len, "arena"), Aligned::new(ws, "workspace"))
                else {
                    return ERR_MEMORY;
                };
                if all.try_reserve(1).is_err() {
                    return ERR_MEMORY;
                }
                all.push(Buffers { model: key, step: si, arena, workspace });
                all.len() - 1
            }
        };
        let bufs = &mut all[at];
        let arena = bufs.arena.slice_mut();
        let slice = |arena: &mut [f32], s: Slot| -> Option<std::ops::Range<usize>> {
            (s.region == Region::Arena && s.offset + s.len <= arena.len()).then_some(s.offset..s.offset + s.len)
        };
        for (i, (io, &p)) in model.inputs.iter().zip(ins).enumerate() {
            let Some(r) = step.inputs.get(i).and_then(|&s| slice(arena, s)) else { return ERR_INTERNAL };
            let n = b * io.per_sample;
            if n > r.len() {
                return ERR_INTERNAL;
            }
            unsafe { copy_in(&mut arena[r.clone()], p, n) };
            if let Some((pi, pre)) = &model.preprocess {
                if *pi == i && pre.apply_values(&mut arena[r.start..r.start + n]).is_err() {
                    return ERR_INTERNAL;
                }
            }
        }
        let ctx = HostCtx {
            arena: bufs.arena.ptr(),
            persistent: m.weights,
            seed: 0,
            step: 0,
            tables: &step.tables,
            workspace: bufs.workspace.ptr(),
            collective: std::ptr::null_mut(),
        };
        {
            let _ftz = crate::codegen::fp::FlushDenormals::new();
            // SAFETY: the step was compiled for this plan: an arena of `arena_len` floats,
            // the weights' persistent region, and these tables.
            unsafe { (step.step)(ctx.arena, ctx.persistent, &ctx) };
        }
        let arena = bufs.arena.slice_mut();
        for (j, (io, &p)) in model.outputs.iter().zip(outs).enumerate() {
            let Some(&s) = step.outputs.get(j) else { return ERR_INTERNAL };
            let n = b * io.per_sample;
            if n > s.len {
                return ERR_INTERNAL;
            }
            let src: &[f32] = match s.region {
                Region::Arena => match arena.get(s.offset..s.offset + n) {
                    Some(x) => x,
                    None => return ERR_INTERNAL,
                },
                Region::Persistent => {
                    if s.offset + n > model.persistent_len {
                        return ERR_INTERNAL;
                    }
                    // SAFETY: inside the weights (checked at load and just above).
                    unsafe { std::slice::from_raw_parts(m.weights.add(s.offset), n) }
                }
            };
            // SAFETY: the caller's output array holds `batch` samples.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p as *mut f32, n) };
        }
        OK
    })
}

/// Frees the calling thread's buffers for `model` (they are allocated again by its next
/// call).
///
/// # Safety
/// `model` must come from `nnc_rt_load` (or be null: then nothing happens).
#[no_mangle]
pub unsafe extern "C" fn nnc_rt_release(model: *const c_void) {
    let key = model as usize;
    let _ = std::panic::catch_unwind(|| {
        BUFFERS.with(|cell| {
            if let Ok(mut all) = cell.try_borrow_mut() {
                all.retain(|x| x.model != key);
            }
        })
    });
}
