//! `nnc predict`: run the eval graph on inputs and write every output.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    pub file: PathBuf,
    /// Parameters and states (an `nnc init` file or a checkpoint; a checkpoint's
    /// preprocessing is applied either way).
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
    // `--params` and `--checkpoint` are read the same way: a file that carries a
    // preprocessing (a training checkpoint) has it applied to the features input first.
    let Some(ck) = checkpoint.or(params) else {
        return fail("give the parameters with --params or --checkpoint");
    };
    let (ps, meta) = match crate::train::checkpoint::read(&ck) {
        Ok(t) => t,
        Err(m) => return fail(&m),
    };
    if let Err(m) = crate::train::checkpoint::validate(&p.eval, &ps, &ck, true) {
        return fail(&m);
    }
    let source = std::fs::read_to_string(&file).unwrap_or_default();
    if meta.get("nnc.source_hash").is_some_and(|h| *h != crate::train::trainer::source_hash(&source)) {
        errln!(
            "warning: `{}` was trained from a different version of this model file; its parameters fit the shapes, \
             but their meaning may have changed",
            ck.display()
        );
    }
    let mut ins = match crate::tensors::read(&inputs) {
        Ok(t) => t,
        Err(m) => return fail(&m),
    };
    let specs = match crate::train::trainer::input_specs(&p.train) {
        Ok(s) => s,
        Err(m) => return fail(&m),
    };
    if let Some(spec) = crate::data::preprocess_input(&specs) {
        let pre = match crate::train::trainer::checked_preprocessor(&ps, &meta, &spec.name, &ck) {
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
