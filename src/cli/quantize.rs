//! `nnc quantize`: post-training int8 quantization of a checkpoint, scored on the rows
//! it held out.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// The trained (f32) checkpoint to quantize.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Training rows whose activations set the activation scales.
    #[arg(long, default_value_t = 1000, value_parser = count)]
    pub calibrate: usize,
    /// Where to write the quantized checkpoint (`.safetensors`): int8 weights with their
    /// scales, read by every command like any other checkpoint.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Native code (`jit`) or the reference interpreter (`interp`).
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let p = match compile_with_sets(&a.file, &checkpoint_args(&a.checkpoint), a.model.as_deref(), opts) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if a.out.extension().is_none_or(|e| e != "safetensors") {
        return fail(&format!("`--out {}`: a quantized checkpoint's name ends in .safetensors", a.out.display()));
    }
    let same = match (a.out.canonicalize(), a.checkpoint.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    if same {
        return fail("--out is the checkpoint being quantized; write the quantized one elsewhere");
    }
    let dir = a.file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let source = std::fs::read_to_string(&a.file).unwrap_or_default();
    let backend = a.backend.run();
    let r = match crate::train::ptq::quantize_checkpoint(&p, &dir, &a.checkpoint, &source, a.calibrate, backend) {
        Ok(r) => r,
        Err(m) => return fail(&m),
    };
    for n in &r.notes {
        errln!("note: {n}");
    }
    let name = if r.dense.shown.contains_key("test_accuracy") { "accuracy" } else { "loss" };
    let metric = |e: &crate::train::target::Evaluation| {
        crate::metrics::format_short(e.shown.get(&format!("test_{name}")).copied().unwrap_or(f64::NAN))
    };
    outln!("on {}: {} activations calibrated on {} training rows", r.rows, r.sites, r.calibration_rows);
    outln!("{:<30}  {name:<9}  weights", "");
    outln!("{:<30}  {:<9}  {} bytes", "f32", metric(&r.dense), r.f32_bytes);
    outln!(
        "{:<30}  {:<9}  {} bytes (+ {} of scales)",
        "int8 weights",
        metric(&r.weights_only),
        r.int8_bytes,
        r.scale_bytes
    );
    outln!(
        "{:<30}  {:<9}  {} bytes (+ {} of scales)",
        "int8 weights and activations",
        metric(&r.full),
        r.int8_bytes,
        r.scale_bytes
    );
    let mut map = r.tensors.clone();
    for (k, (shape, v)) in r.pre.to_tensors() {
        map.insert(k, crate::tensors::HostTensor::f32(shape, v.into_iter().map(f64::from).collect()));
    }
    let bytes = match crate::tensors::to_bytes_with(&map, Some(r.meta.clone()), &r.int8) {
        Ok(b) => b,
        Err(m) => return fail(&m),
    };
    match crate::tensors::write_atomic(&a.out, &bytes) {
        Ok(()) => {
            errln!("wrote {} ({} bytes)", a.out.display(), bytes.len());
            0
        }
        Err(m) => fail(&m),
    }
}
