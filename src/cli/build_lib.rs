//! `nnc build`: the eval graph of a checkpoint as a native library (`lib<name>.so`,
//! `lib<name>.a`, `<name>.h`), compiled ahead of time (`crate::aot`).

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// The weights: a training checkpoint (its preprocessing is embedded and applied to
    /// the raw features, as `nnc predict --checkpoint` does) or an `nnc init` file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Compile one step for exactly N rows (a call takes 1 to N rows, padded to N).
    #[arg(long, value_parser = count, conflicts_with = "max_batch")]
    pub batch: Option<usize>,
    /// Compile steps for 1, 2, 4, ... up to N rows (powers of two, and N); a call runs
    /// the smallest that holds its rows.
    #[arg(long, value_parser = count, default_value_t = 256)]
    pub max_batch: usize,
    /// The output folder (created if missing; the three files are replaced atomically).
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
    /// Threads a call may split its large products and kernels across (the library's worker threads).
    #[arg(long, value_parser = thread_count, default_value_t = 1)]
    pub threads: usize,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, checkpoint, batch, max_batch, out, model, threads } = a;
    let p = match compile_with_sets(&file, &checkpoint_args(&checkpoint), model.as_deref(), opts) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (tensors, meta) = match crate::train::checkpoint::read(&checkpoint) {
        Ok(t) => t,
        Err(m) => return fail(&m),
    };
    if let Err(m) = crate::train::checkpoint::validate(&p.eval, &tensors, &checkpoint, true) {
        return fail(&m);
    }
    // A quantized checkpoint is built with its int8 activations, as `predict` runs it.
    let mut p = p;
    match crate::compress::quantize::eval_graph(&p.eval, &tensors, &meta, &checkpoint.display().to_string()) {
        Ok(g) => p.eval = g,
        Err(m) => return fail(&m),
    }
    // A teacher's tensors only when the outputs read them (a distilled model's do not).
    let mut tensors = tensors;
    let mut used = p.eval.clone();
    used.loss = None;
    let used = crate::simplify::drop_unused_inputs(&crate::simplify::dead_code(&used));
    if let Err(m) = crate::train::teacher::fill(&used, &mut tensors) {
        return fail(&m);
    }
    let source = std::fs::read_to_string(&file).unwrap_or_default();
    if let Some(w) = crate::train::trainer::source_warning(&meta, &source, &checkpoint) {
        errln!("{w}");
    }
    // The checkpoint's preprocessing, as `nnc predict` applies it.
    let preprocess = match crate::train::trainer::input_specs(&p.train) {
        Ok(specs) => match crate::data::preprocess_input(&specs) {
            Some(spec) => {
                let n = spec.per_sample_shape.iter().product();
                match crate::train::trainer::checked_preprocessor(&tensors, &meta, &spec.name, Some(n), &checkpoint) {
                    Ok(pre) => Some(pre),
                    Err(m) => return fail(&m),
                }
            }
            None => None,
        },
        Err(m) => return fail(&m),
    };
    let runtime = match crate::aot::find_runtime() {
        Ok(r) => r,
        Err(m) => return fail(&m),
    };
    let (batches, exact) = match batch {
        Some(n) => (vec![n], true),
        None => (crate::aot::batch_sizes(max_batch), false),
    };
    let req = crate::aot::Request {
        model: &p.name,
        graph: &p.eval,
        tensors: &tensors,
        preprocess,
        batches,
        exact,
        threads,
        out: &out,
        runtime,
    };
    match crate::aot::build(&req) {
        Ok(r) => {
            for (f, size) in &r.files {
                errln!("wrote {} ({:.1} KB)", f.display(), *size as f64 / 1024.0);
            }
            errln!("compiled in {:.2} s, linked in {:.2} s", r.compile_seconds, r.link_seconds);
            0
        }
        Err(m) => fail(&m),
    }
}
