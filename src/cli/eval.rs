//! `nnc eval`: metrics of a checkpoint on the rows it held out.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// The checkpoint to score (`last.safetensors` or `best.safetensors` of a run).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Print one JSON object: every metric, and the confusion matrix of a classifier.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Some(c) = compile(&a.file, opts) else { return 1 };
    let p = match pick(&c, a.model.as_deref()) {
        Ok(p) => p,
        Err(m) => return fail(&m),
    };
    let dir = a.file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let source = std::fs::read_to_string(&a.file).unwrap_or_default();
    match crate::train::trainer::evaluate(p, &dir, &a.checkpoint, a.backend == Backend::Jit, &source) {
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
