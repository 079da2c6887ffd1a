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

/// The eval graph as `nnc predict` runs it (outputs only), simplified.
fn export_graph(p: &Program) -> ir::Graph {
    let mut g = p.eval.clone();
    g.loss = None;
    let g = crate::simplify::dead_code(&crate::simplify::simplify(&crate::simplify::dead_code(&g)));
    crate::simplify::drop_unused_inputs(&g)
}

fn export(p: &Program, ck: &std::path::Path, source: &str) -> Result<(Vec<u8>, String), String> {
    let (mut ps, meta) = crate::train::checkpoint::read(ck)?;
    crate::train::checkpoint::validate(&p.eval, &ps, ck, true)?;
    if let Some(w) = crate::train::trainer::source_warning(&meta, source, ck) {
        errln!("{w}");
    }
    let specs = crate::train::trainer::input_specs(&p.train)?;
    let pre = match crate::data::preprocess_input(&specs) {
        Some(spec) => {
            let n = spec.per_sample_shape.iter().product();
            Some(crate::train::trainer::checked_preprocessor(&ps, &meta, &spec.name, Some(n), ck)?)
        }
        None => None,
    };
    // A quantized checkpoint: its int8 activations as rounding ops, its int8 weights as
    // INT8 initializers with DequantizeLinear.
    let q = crate::compress::quantize::eval_graph(&p.eval, &ps, &meta, &ck.display().to_string())?;
    let g = export_graph(&Program { eval: q, ..p.clone() });
    let raw = crate::tensors::read(ck)?;
    let int8 = crate::compress::quantize::int8_weights(&raw)
        .into_iter()
        .map(|(name, axis, values, scales)| (name, crate::export::onnx::Int8Weight { axis, values, scales }))
        .collect();
    crate::train::teacher::fill(&g, &mut ps)?;
    let mut metadata = vec![("nnc.model".to_string(), p.name.clone())];
    if let Some(pre) = pre.as_ref().filter(|p| p.kind() != "none") {
        metadata.push(("nnc.preprocess".into(), format!("{} on `{}`", pre.kind(), pre.input)));
    }
    metadata.extend(p.args.iter().map(|(k, v)| (format!("nnc.arg.{k}"), v.clone())));
    let opts =
        crate::export::Options { model_name: p.name.clone(), batch_symbol: pipeline::batch_symbol(&g), metadata, int8 };
    let model = crate::export::to_model(&g, &ps, pre.as_ref(), &opts)?;
    let graph = model.graph.as_ref().ok_or("no graph")?;
    let io = |vs: &[crate::export::onnx_pb::ValueInfoProto]| {
        vs.iter().map(|v| v.name.clone().unwrap_or_default()).collect::<Vec<_>>().join(", ")
    };
    let summary = format!(
        "opset {}, {} nodes, {} initializers; inputs {}; outputs {}{}",
        crate::export::OPSET,
        graph.node.len(),
        graph.initializer.len(),
        io(&graph.input),
        io(&graph.output),
        match pre.as_ref().filter(|p| p.kind() != "none") {
            Some(p) => format!("; preprocessing `{}` of `{}` as leading ops", p.kind(), p.input),
            None => String::new(),
        }
    );
    Ok((prost::Message::encode_to_vec(&model), summary))
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, checkpoint, out, model } = a;
    let p = match compile_with_sets(&file, &checkpoint_args(&checkpoint), model.as_deref(), opts) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let source = std::fs::read_to_string(&file).unwrap_or_default();
    let (bytes, summary) = match export(&p, &checkpoint, &source) {
        Ok(r) => r,
        Err(m) => return fail(&m),
    };
    match crate::tensors::write_atomic(&out, &bytes) {
        Ok(()) => {
            errln!("wrote {} ({} bytes): {summary}", out.display(), bytes.len());
            0
        }
        Err(m) => fail(&m),
    }
}
