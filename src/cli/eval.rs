//! `nnc eval`: metrics of a checkpoint on the rows it held out.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// The checkpoint to score (`last.safetensors` or `best.safetensors` of a run); give
    /// it several times to score an ensemble that averages the members' probabilities.
    #[arg(long, required = true)]
    pub checkpoint: Vec<PathBuf>,
    /// Print one JSON object: every metric, and the confusion matrix of a classifier.
    #[arg(long)]
    pub json: bool,
    /// Native code (`jit`) or the reference interpreter (`interp`).
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    // The model as the (first) checkpoint was trained: its model arguments.
    let p = match compile_with_sets(&a.file, &checkpoint_args(&a.checkpoint[0]), a.model.as_deref(), opts) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let p = &p;
    let dir = a.file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let source = std::fs::read_to_string(&a.file).unwrap_or_default();
    if a.checkpoint.len() > 1 {
        return ensemble(p, &dir, &a, &source);
    }
    match crate::train::trainer::evaluate(p, &dir, &a.checkpoint[0], a.backend == Backend::Jit, &source) {
        Ok(r) => {
            for n in &r.notes {
                errln!("note: {n}");
            }
            for n in &r.eval.notes {
                errln!("note: {n}");
            }
            if a.json {
                let mut text = crate::metrics::to_json(&r.eval.all);
                if let Some(cm) = &r.eval.confusion {
                    // Insert the matrix as one more key of the object.
                    let body = text.trim_end().trim_end_matches('}').trim_end().to_string();
                    let sep = if body.ends_with('{') { "" } else { "," };
                    text = format!("{body}{sep}\n  \"confusion\": {}\n}}\n", crate::metrics::confusion_to_json(cm));
                }
                outs!("{text}");
            } else {
                outln!("on {}:", r.rows);
                outs!("{}", crate::metrics::format_lines(&r.eval.shown));
                if let Some(cm) = &r.eval.confusion {
                    outln!("confusion matrix (rows: true class, columns: predicted):\n{}", cm.to_table(None));
                }
            }
            0
        }
        Err(m) => fail(&m),
    }
}

fn ensemble(p: &crate::ir::Program, dir: &std::path::Path, a: &Args, source: &str) -> i32 {
    match crate::train::trainer::evaluate_ensemble(p, dir, &a.checkpoint, a.backend == Backend::Jit, source) {
        Ok((members, ens)) => {
            let rows = members.first().map(|m| m.rows.clone()).unwrap_or_default();
            for n in members.first().map(|m| m.notes.clone()).unwrap_or_default().iter().chain(&ens.notes) {
                errln!("note: {n}");
            }
            if a.json {
                let mut all = crate::metrics::Metrics::new();
                for (i, m) in members.iter().enumerate() {
                    for (k, v) in &m.eval.all {
                        all.insert(format!("member{}_{k}", i + 1), *v);
                    }
                }
                for (k, v) in &ens.all {
                    all.insert(format!("ensemble_{k}"), *v);
                }
                outs!("{}", crate::metrics::to_json(&all));
                return 0;
            }
            outln!("on {rows}:");
            for (i, (m, c)) in members.iter().zip(&a.checkpoint).enumerate() {
                outln!("member {} ({}): {}", i + 1, c.display(), super::cv::metric_pairs(&m.eval.shown));
            }
            outln!("ensemble of {}: {}", members.len(), super::cv::metric_pairs(&ens.shown));
            0
        }
        Err(m) => fail(&m),
    }
}
