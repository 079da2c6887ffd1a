//! `nnc grad`.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    pub file: PathBuf,
    #[arg(long)]
    pub params: PathBuf,
    #[arg(long)]
    pub inputs: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "train")]
    pub mode: RunMode,
    /// Compute in f64 and write f64 tensors.
    #[arg(long)]
    pub f64: bool,
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    /// Seed of the dropout masks (with step 0).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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
    if f64 && backend == Backend::Jit {
        return fail("--f64 runs in the interpreter: add --backend interp");
    }
    let run = crate::runtime::exec::ExecOptions { f64, seed, step: 0, jit: backend == Backend::Jit };
    run_and_write(&graph, &params, &inputs, &out, run)
}
