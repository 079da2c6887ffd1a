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
    let model = crate::Model::from_program(p, &file);
    let cfg = crate::BuildConfig { batch, max_batch, threads };
    match model.build_library(&checkpoint, &out, &cfg) {
        Ok(r) => {
            if let Some(w) = &r.warning {
                errln!("{w}");
            }
            for (f, size) in &r.files {
                errln!("wrote {} ({:.1} KB)", f.display(), *size as f64 / 1024.0);
            }
            errln!("compiled in {:.2} s, linked in {:.2} s", r.compile_seconds, r.link_seconds);
            0
        }
        Err(e) => fail_with(&e, opts),
    }
}
