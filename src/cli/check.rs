//! `nnc check`.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model files (`.nn`) to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { files } = a;
    let mut code = 0;
    for f in files {
        match pipeline::compile_file(&f) {
            Ok(c) => {
                for p in &c.programs {
                    outln!(
                        "{}: model {} ok: {} params ({} values), {} + {} ops (train + eval)",
                        f.display(),
                        p.name,
                        p.train.params.len(),
                        p.train.param_count(),
                        p.train.len(),
                        p.eval.len()
                    );
                }
            }
            Err(e) => {
                report(&e, opts);
                code = 1;
            }
        }
    }
    code
}
