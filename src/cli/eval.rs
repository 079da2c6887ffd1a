//! `nnc eval`.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    pub file: PathBuf,
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    #[arg(long)]
    pub model: Option<String>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, checkpoint, json, backend, model } = a;
    let Some(c) = compile(&file, opts) else { return 1 };
    let p = match pick(&c, model.as_deref()) {
        Ok(p) => p,
        Err(m) => return fail(&m),
    };
    let dir = file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    match crate::train::trainer::evaluate(p, &dir, &checkpoint, backend == Backend::Jit) {
        Ok((m, confusion)) => {
            if json {
                outln!("{}", crate::metrics::to_json(&m));
            } else {
                outs!("{}", crate::metrics::format_lines(&m));
                if let Some(c) = confusion {
                    outln!("confusion matrix (rows: true class, columns: predicted):\n{c}");
                }
            }
            0
        }
        Err(m) => fail(&m),
    }
}
