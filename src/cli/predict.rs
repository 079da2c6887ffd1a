//! `nnc predict`.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    pub file: PathBuf,
    /// Parameters and states (an `nnc init` file or a checkpoint).
    #[arg(long, required_unless_present = "checkpoint")]
    pub params: Option<PathBuf>,
    /// A training checkpoint: its parameters, and its preprocessing applied to the
    /// features input first.
    #[arg(long, conflicts_with = "params")]
    pub checkpoint: Option<PathBuf>,
    #[arg(long)]
    pub inputs: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    #[arg(long)]
    pub model: Option<String>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, params, checkpoint, inputs, out, backend, model } = a;
    let Some(c) = compile(&file, opts) else { return 1 };
    let p = match pick(&c, model.as_deref()) {
        Ok(p) => p,
        Err(m) => return fail(&m),
    };
    let mut g = p.eval.clone();
    // predict returns outputs only: a loss may need labels the caller lacks.
    g.loss = None;
    let g = crate::simplify::drop_unused_inputs(&crate::simplify::dead_code(&g));
    let run = crate::runtime::exec::ExecOptions { jit: backend == Backend::Jit, ..Default::default() };
    let Some(ck) = checkpoint else {
        return run_and_write(&g, params.as_deref().unwrap_or(std::path::Path::new("")), &inputs, &out, run);
    };
    // Apply the checkpoint's preprocessing to the features input, then run.
    let mut ins = match crate::tensors::read(&inputs) {
        Ok(t) => t,
        Err(m) => return fail(&m),
    };
    let specs = match crate::train::trainer::input_specs(&p.train) {
        Ok(s) => s,
        Err(m) => return fail(&m),
    };
    if let Some(spec) = crate::data::preprocess_input(&specs) {
        let pre = match crate::train::trainer::checkpoint_preprocessor(&ck, &spec.name) {
            Ok(pp) => pp,
            Err(m) => return fail(&m),
        };
        if let Some(t) = ins.get_mut(&spec.name) {
            if let crate::tensors::HostData::F32(v) | crate::tensors::HostData::F64(v) = &mut t.data {
                let mut f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                if let Err(m) = pre.apply_values(&mut f) {
                    return fail(&m);
                }
                *v = f.into_iter().map(f64::from).collect();
            }
        }
    }
    let ps = match crate::tensors::read(&ck) {
        Ok(t) => t,
        Err(m) => return fail(&m),
    };
    match crate::runtime::exec::run_named(&g, &ps, &ins, run)
        .and_then(|r| crate::tensors::write(&out, &r, None).map(|_| r.len()))
    {
        Ok(n) => {
            errln!("wrote {n} tensors to {}", out.display());
            0
        }
        Err(m) => fail(&m),
    }
}
