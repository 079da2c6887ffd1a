//! `nnc predict`: run the eval graph on inputs and write every output.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// Parameters and states (an `nnc init` file or a checkpoint; a checkpoint's
    /// preprocessing is applied either way).
    #[arg(long, required_unless_present = "checkpoint")]
    pub params: Option<PathBuf>,
    /// A training checkpoint (as --params). Give it several times for an ensemble: each
    /// member's outputs as `member<i>.<name>`, and the members' mean probabilities as
    /// `ensemble.probabilities` (a classifier) or their mean prediction.
    #[arg(long, conflicts_with = "params")]
    pub checkpoint: Vec<PathBuf>,
    /// Inputs by name (safetensors).
    #[arg(long)]
    pub inputs: PathBuf,
    /// Where to write the outputs (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Native code (`jit`) or the reference interpreter (`interp`).
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
}

/// The outputs of one checkpoint on the inputs, its preprocessing applied first.
fn predict_one(
    p: &crate::ir::Program,
    g: &crate::ir::Graph,
    ck: &std::path::Path,
    inputs: &crate::tensors::TensorMap,
    source: &str,
    run: crate::runtime::exec::ExecOptions,
) -> Result<crate::tensors::TensorMap, String> {
    let (ps, meta) = crate::train::checkpoint::read(ck)?;
    crate::train::checkpoint::validate(&p.eval, &ps, ck, true)?;
    if meta.get("nnc.source_hash").is_some_and(|h| *h != crate::train::trainer::source_hash(source)) {
        errln!(
            "warning: `{}` was trained from a different version of this model file; its parameters fit the shapes, \
             but their meaning may have changed",
            ck.display()
        );
    }
    let mut ins = inputs.clone();
    let specs = crate::train::trainer::input_specs(&p.train)?;
    if let Some(spec) = crate::data::preprocess_input(&specs) {
        let n = spec.per_sample_shape.iter().product();
        let pre = crate::train::trainer::checked_preprocessor(&ps, &meta, &spec.name, Some(n), ck)?;
        if let Some(t) = ins.get_mut(&spec.name) {
            if let crate::tensors::HostData::F32(v) | crate::tensors::HostData::F64(v) = &mut t.data {
                let mut f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                pre.apply_values(&mut f)?;
                *v = f.into_iter().map(f64::from).collect();
            }
        }
    }
    crate::runtime::exec::run_named(g, &ps, &ins, run)
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, params, checkpoint, inputs, out, backend, model } = a;
    let first = checkpoint.first().or(params.as_ref()).cloned().unwrap_or_default();
    let p = match compile_with_sets(&file, &checkpoint_args(&first), model.as_deref(), opts) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let p = &p;
    // The metrics target (the prediction the loss scores) is what an ensemble averages.
    let target = crate::train::target::target(p);
    let mut g = match (&target, checkpoint.len() > 1) {
        (Ok(t), true) => match crate::train::target::with_target_output(&p.eval, t) {
            Ok(g) => g,
            Err(m) => return fail(&m),
        },
        _ => p.eval.clone(),
    };
    // predict returns outputs only: a loss may need labels the caller lacks.
    g.loss = None;
    let g = crate::simplify::drop_unused_inputs(&crate::simplify::dead_code(&g));
    let run = crate::runtime::exec::ExecOptions { jit: backend == Backend::Jit, ..Default::default() };
    // `--params` and `--checkpoint` are read the same way: a file that carries a
    // preprocessing (a training checkpoint) has it applied to the features input first.
    let cks: Vec<PathBuf> = if checkpoint.is_empty() { params.into_iter().collect() } else { checkpoint };
    let ins = match crate::tensors::read(&inputs) {
        Ok(t) => t,
        Err(m) => return fail(&m),
    };
    let source = std::fs::read_to_string(&file).unwrap_or_default();
    let mut result = crate::tensors::TensorMap::new();
    if cks.len() == 1 {
        match predict_one(p, &g, &cks[0], &ins, &source, run) {
            Ok(r) => result = r,
            Err(m) => return fail(&m),
        }
    } else {
        let t = match &target {
            Ok(t) => t,
            Err(why) => return fail(&format!("an ensemble averages the prediction the loss scores, but {why}")),
        };
        let mut sum: Option<(Vec<usize>, Vec<f64>)> = None;
        for (i, ck) in cks.iter().enumerate() {
            let r = match predict_one(p, &g, ck, &ins, &source, run) {
                Ok(r) => r,
                Err(m) => return fail(&m),
            };
            let Some(v) = r.get(&t.output).and_then(crate::tensors::HostTensor::floats) else {
                return fail(&format!("`{}` gave no output `{}`", ck.display(), t.output));
            };
            let k = r[&t.output].shape.last().copied().unwrap_or(1);
            let v = if t.kind.is_some() { crate::metrics::probabilities(v, k) } else { v.to_vec() };
            match &mut sum {
                None => sum = Some((r[&t.output].shape.clone(), v)),
                Some((_, s)) => s.iter_mut().zip(&v).for_each(|(a, b)| *a += b),
            }
            for (name, tensor) in r {
                if name != crate::train::target::SCORED_OUTPUT {
                    result.insert(format!("member{}.{name}", i + 1), tensor);
                }
            }
        }
        if let Some((shape, s)) = sum {
            let n = cks.len() as f64;
            let name = if t.kind.is_some() {
                "ensemble.probabilities".to_string()
            } else {
                format!("ensemble.mean.{}", t.output)
            };
            result.insert(name, crate::tensors::HostTensor::f32(shape, s.into_iter().map(|x| x / n).collect()));
        }
    }
    match crate::tensors::write(&out, &result, None) {
        Ok(()) => {
            errln!("wrote {} tensors to {}", result.len(), out.display());
            0
        }
        Err(m) => fail(&m),
    }
}
