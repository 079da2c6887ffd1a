//! `nnc prune`: magnitude pruning of a trained checkpoint, optionally fine-tuned with
//! the masks fixed, scored on the rows the checkpoint held out.

use super::*;
use crate::compress::prune::{Scope, Structure};

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// The trained checkpoint to prune.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The fraction of weights to zero, in [0, 1); several (`0.5,0.8,0.9`) give a table
    /// and one checkpoint each.
    #[arg(long, required = true, value_delimiter = ',', value_parser = fraction)]
    pub sparsity: Vec<f64>,
    /// Count the sparsity over all weights together (`global`) or per weight (`layer`).
    #[arg(long, value_enum, default_value = "global")]
    pub scope: ScopeArg,
    /// Remove whole slices by their L2 norm, per weight: `rows` (first axis) or
    /// `channels` (output units: a Dense matrix's columns, a kernel's filters).
    #[arg(long, value_enum)]
    pub structured: Option<StructureArg>,
    /// Prune only these weights (`fc1.W,fc2.W`; default: every parameter of rank >= 2).
    /// Structured pruning of the output layer's channels would remove classes: leave it out.
    #[arg(long, value_delimiter = ',')]
    pub params: Vec<String>,
    /// Epochs of fine-tuning after pruning, pruned weights kept at zero (0: none).
    #[arg(long, default_value_t = 0)]
    pub finetune_epochs: usize,
    /// Override a train setting for the fine-tuning, e.g. `--set lr=1e-4`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Where to write: a `.safetensors` checkpoint (one sparsity), or a folder for
    /// several (`sparsity-0.9.safetensors` each, and `prune.csv`).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Native code (`jit`) or the reference interpreter (`interp`).
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    /// Threads for large GEMMs and kernels.
    #[arg(long, default_value_t = 1, value_parser = thread_count)]
    pub threads: usize,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ScopeArg {
    /// The smallest weights of the whole model.
    Global,
    /// The smallest weights of each layer's weight, each at the sparsity.
    Layer,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum StructureArg {
    /// Rows: slices along the first axis.
    Rows,
    /// Output units: a Dense matrix's columns, a convolution's filters.
    Channels,
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..1.0).contains(&x) => Ok(x),
        _ => Err(format!("expected a fraction in [0, 1), found `{s}`")),
    }
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let mut sets = checkpoint_args(&a.checkpoint);
    sets.extend(a.set.iter().cloned());
    let p = match compile_with_sets(&a.file, &sets, a.model.as_deref(), opts) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let many = a.sparsity.len() > 1;
    if many && a.out.extension().is_some_and(|e| e == "safetensors") {
        return fail(&format!(
            "`--out {}`: several sparsities write one checkpoint each, so --out names a folder",
            a.out.display()
        ));
    }
    if !many && a.out.extension().is_none_or(|e| e != "safetensors") {
        return fail(&format!("`--out {}`: a pruned checkpoint's name ends in .safetensors", a.out.display()));
    }
    let same = |x: &std::path::Path, y: &std::path::Path| match (x.canonicalize(), y.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    if !many && same(&a.out, &a.checkpoint) {
        return fail("--out is the checkpoint being pruned; write the pruned one elsewhere");
    }
    let structure = match a.structured {
        None => Structure::Weights,
        Some(StructureArg::Rows) => Structure::Rows,
        Some(StructureArg::Channels) => Structure::Channels,
    };
    if structure != Structure::Weights && a.scope == ScopeArg::Global {
        errln!("note: structured pruning removes the same fraction of slices from every weight (per layer)");
    }
    let po = crate::train::finetune::PruneOptions {
        sparsities: a.sparsity.clone(),
        scope: if a.scope == ScopeArg::Global { Scope::Global } else { Scope::Layer },
        structure,
        params: a.params.clone(),
        finetune_epochs: a.finetune_epochs,
        backend: a.backend.run(),
        threads: a.threads,
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let dir = a.file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let source = std::fs::read_to_string(&a.file).unwrap_or_default();
    let r = match crate::train::finetune::prune_checkpoint(&p, &dir, &a.checkpoint, &source, &po, &stop) {
        Ok(r) => r,
        Err(m) => return fail(&m),
    };
    for n in &r.notes {
        errln!("note: {n}");
    }
    let metric = |e: &crate::train::target::Evaluation| {
        e.shown.get("test_accuracy").or_else(|| e.shown.get("test_loss")).copied().unwrap_or(f64::NAN)
    };
    let name = if r.dense.shown.contains_key("test_accuracy") { "accuracy" } else { "loss" };
    outln!("on {}: {} weights (parameters of rank >= 2) of {} parameters", r.rows, r.weights, r.params);
    let tuned_head =
        if a.finetune_epochs > 0 { format!("  {name} after {} epochs", a.finetune_epochs) } else { String::new() };
    outln!("sparsity  zero weights  {name} pruned{tuned_head}");
    outln!("{:<8}  {:>12}  {}", "dense", 0, crate::metrics::format_short(metric(&r.dense)));
    let mut csv = String::from("sparsity,reached,zero_weights,pruned_metric,tuned_metric,metric\n");
    let mut written = Vec::new();
    if many {
        if let Err(e) = std::fs::create_dir_all(&a.out) {
            return fail(&format!("cannot create `{}`: {e}", a.out.display()));
        }
    }
    for l in &r.levels {
        let zeros = (l.reached * r.weights as f64).round() as usize;
        let tuned =
            l.tuned.as_ref().map(|t| format!("  {}", crate::metrics::format_short(metric(t)))).unwrap_or_default();
        outln!("{:<8}  {:>12}  {}{tuned}", l.asked, zeros, crate::metrics::format_short(metric(&l.pruned)));
        csv.push_str(&format!(
            "{},{},{zeros},{},{},{name}\n",
            l.asked,
            l.reached,
            metric(&l.pruned),
            l.tuned.as_ref().map(|t| metric(t).to_string()).unwrap_or_default()
        ));
        let path = if many { a.out.join(format!("sparsity-{}.safetensors", l.asked)) } else { a.out.clone() };
        let mut meta = r.meta.clone();
        meta.insert("nnc.sparsity".into(), l.reached.to_string());
        if let Err(m) = crate::train::trainer::save_tensors(&path, l.tensors.clone(), &r.pre, meta) {
            return fail(&m);
        }
        written.push(path);
    }
    if many {
        let path = a.out.join("prune.csv");
        if let Err(m) = crate::tensors::write_atomic(&path, csv.as_bytes()) {
            return fail(&m);
        }
        written.push(path);
    }
    errln!("wrote {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    0
}
