//! `nnc grad`.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// Parameters and states (an `nnc init` file or a checkpoint).
    #[arg(long)]
    pub params: PathBuf,
    /// Inputs by name (safetensors).
    #[arg(long)]
    pub inputs: PathBuf,
    /// Where to write `loss`, the outputs and `grad.<param>` (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Which graph: the training graph (dropout on) or the eval graph.
    #[arg(long, value_enum, default_value = "train")]
    pub mode: RunMode,
    /// Compute in f64 and write f64 tensors (in the reference interpreter).
    #[arg(long)]
    pub f64: bool,
    /// Native code (`jit`) or the reference interpreter (`interp`).
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    /// Seed of the dropout masks (with step 0).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, params, inputs, out, mode, f64, backend, seed, model } = a;
    let Some(c) = compile(&file, opts) else { return 1 };
    let p = match pick(&c, model.as_deref()) {
        Ok(p) => p,
        Err(m) => return fail(&m),
    };
    let g = if mode == RunMode::Train { &p.train } else { &p.eval };
    if g.loss.is_none() {
        return fail(&format!("model `{}` has no `loss` to differentiate", p.name));
    }
    let graph = match crate::autodiff::grad_program(g) {
        Ok(gr) => gr.graph,
        Err(m) => return fail(&format!("internal compiler error: {m}")),
    };
    // Native code is f32: f64 runs in the reference interpreter.
    let run = crate::runtime::exec::ExecOptions {
        f64,
        seed,
        step: 0,
        backend: if f64 { crate::runtime::backend::Backend::Interpreter } else { backend.run() },
    };
    run_and_write(&graph, &params, &inputs, &out, run)
}
