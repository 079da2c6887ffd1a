//! `nnc export`: the eval graph and a checkpoint as an ONNX model.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// Parameters and states: a training checkpoint (its preprocessing becomes the
    /// model's leading ops) or an `nnc init` file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Where to write the ONNX model (`.onnx`); nothing is written on an error.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, checkpoint, out, model } = a;
    let p = match compile_with_sets(&file, &checkpoint_args(&checkpoint), model.as_deref(), opts) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let model = crate::Model::from_program(p, &file);
    let (bytes, summary, warning) = match model.onnx(&checkpoint) {
        Ok(r) => r,
        Err(e) => return fail_with(&e, opts),
    };
    if let Some(w) = warning {
        errln!("{w}");
    }
    match crate::tensors::write_atomic(&out, &bytes) {
        Ok(()) => {
            errln!("wrote {} ({} bytes): {summary}", out.display(), bytes.len());
            0
        }
        Err(m) => fail(&m),
    }
}
