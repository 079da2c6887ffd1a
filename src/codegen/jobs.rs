//! Cranelift's compile of the step's functions on several threads.
//!
//! `emit` builds each function's IR on the calling thread and hands it here (`submit`);
//! worker threads (scoped, started by `codegen::compile`) take functions in submission
//! order and compile them (`Context::compile` needs only the function and the target),
//! while the calling thread goes on building the next ones, then joins the workers once
//! everything is submitted (`finish`). The machine code and relocations come back by
//! submission index, and the caller defines them in the module in that order
//! (`Module::define_function_bytes`), so the module holds the same code at the same
//! offsets as a sequential compile.

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::Function;
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::Context;
use cranelift_module::{FuncId, ModuleReloc};
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// A compiled function, ready for `Module::define_function_bytes`.
pub struct Done {
    pub id: FuncId,
    pub alignment: u64,
    pub bytes: Vec<u8>,
    pub relocs: Vec<ModuleReloc>,
}

/// Functions waiting for a thread, and what the threads made of them.
#[derive(Default)]
pub struct Jobs {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// (submission index, the function's id, its name, its IR).
    queue: VecDeque<(usize, FuncId, String, Function)>,
    submitted: usize,
    /// No more submissions.
    closed: bool,
    done: Vec<Option<Result<Done, String>>>,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked poisons the lock; its panic reaches the caller when the
        // thread scope ends, so the state is still used as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `func` (the definition of `id`) for a worker.
    pub fn submit(&self, id: FuncId, name: &str, func: Function) {
        let mut s = self.lock();
        let i = s.submitted;
        s.submitted += 1;
        s.done.push(None);
        s.queue.push_back((i, id, name.to_string(), func));
        drop(s);
        self.wake.notify_one();
    }

    /// No more submissions: workers return once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Compiles queued functions until the queue is closed and empty (a worker's loop;
    /// the submitting thread runs it too once it has closed the queue).
    pub fn work(&self, isa: &dyn TargetIsa) {
        let mut ctx = Context::new();
        loop {
            let job = {
                let mut s = self.lock();
                loop {
                    if let Some(j) = s.queue.pop_front() {
                        break Some(j);
                    }
                    if s.closed {
                        break None;
                    }
                    s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
                }
            };
            let Some((i, id, name, func)) = job else { return };
            ctx.clear();
            ctx.func = func;
            let r = compile_one(&mut ctx, isa, id).map_err(|e| format!("cranelift: {name}: {e}"));
            if let Some(slot) = self.lock().done.get_mut(i) {
                *slot = Some(r);
            }
        }
    }

    /// The compiled functions in submission order (after `close` and every worker's
    /// return); the first error if any failed.
    pub fn results(&self) -> Result<Vec<Done>, String> {
        let done = std::mem::take(&mut self.lock().done);
        done.into_iter()
            .map(|d| d.unwrap_or_else(|| Err("internal error: a function was not compiled".into())))
            .collect()
    }
}

/// `ctx.func` compiled: what `Module::define_function` would define for `id`.
fn compile_one(ctx: &mut Context, isa: &dyn TargetIsa, id: FuncId) -> Result<Done, String> {
    ctx.compile(isa, &mut ControlPlane::default()).map_err(|e| format!("{:?}", e.inner))?;
    let code = ctx.compiled_code().ok_or("internal error: no compiled code")?;
    let alignment = u64::from(code.buffer.alignment);
    let bytes = code.code_buffer().to_vec();
    let relocs = code.buffer.relocs().iter().map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, id)).collect();
    Ok(Done { id, alignment, bytes, relocs })
}
