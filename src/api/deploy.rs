//! Deploying a trained [`Model`]: its eval graph as an ONNX model (`nnc export`), or
//! compiled ahead of time into a native library with a C API (`nnc build`).

use super::model::Model;
use crate::error::{Error, Result};
use crate::ir::Program;
use std::path::{Path, PathBuf};

/// How `nnc build` compiles the library.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// Exactly this batch (one step; a call takes 1 to N rows, padded to N).
    pub batch: Option<usize>,
    /// Otherwise steps for 1, 2, 4, ... up to this many rows.
    pub max_batch: usize,
    /// Threads a call may split its large products and kernels across.
    pub threads: usize,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig { batch: None, max_batch: 256, threads: 1 }
    }
}

/// What `build_library` wrote.
#[derive(Clone, Debug)]
pub struct BuildReport {
    /// The library's name (the model's, lower-cased).
    pub name: String,
    /// The files written (`lib<name>.so`, `lib<name>.a`, `<name>.h`) with their sizes.
    pub files: Vec<(PathBuf, u64)>,
    /// Seconds of code generation and of linking.
    pub compile_seconds: f64,
    /// Seconds of linking.
    pub link_seconds: f64,
    /// Set when the checkpoint was trained from another version of the source.
    pub warning: Option<String>,
}

/// What `export_onnx` wrote.
#[derive(Clone, Debug)]
pub struct ExportReport {
    /// Bytes written.
    pub bytes: usize,
    /// The opset, node and initializer counts, inputs and outputs.
    pub summary: String,
    /// Set when the checkpoint was trained from another version of the source.
    pub warning: Option<String>,
}

impl Model {
    /// The eval graph of `checkpoint` as an ONNX model (opset 18, a dynamic batch
    /// dimension, the checkpoint's preprocessing as leading ops), written atomically.
    pub fn export_onnx(&self, checkpoint: impl AsRef<Path>, out: impl AsRef<Path>) -> Result<ExportReport> {
        let (bytes, summary, warning) = self.onnx(checkpoint.as_ref())?;
        let out = out.as_ref();
        crate::tensors::write_atomic(out, &bytes)
            .map_err(|m| Error::Io { path: out.to_path_buf(), source: std::io::Error::other(m) })?;
        Ok(ExportReport { bytes: bytes.len(), summary, warning })
    }

    /// The ONNX model's bytes, its summary, and the source warning.
    pub(crate) fn onnx(&self, checkpoint: &Path) -> Result<(Vec<u8>, String, Option<String>)> {
        export(&self.program, checkpoint, &self.source).map_err(|m| Error::checkpoint(checkpoint, None, m))
    }

    /// Compiles the eval graph of `checkpoint` ahead of time into `out`: a shared and a
    /// static library with a C header, weights and preprocessing embedded.
    pub fn build_library(
        &self,
        checkpoint: impl AsRef<Path>,
        out: impl AsRef<Path>,
        cfg: &BuildConfig,
    ) -> Result<BuildReport> {
        let checkpoint = checkpoint.as_ref();
        let inf = crate::train::inference::load(&self.program, checkpoint, &self.source)?;
        let runtime = crate::aot::find_runtime()?;
        let (batches, exact) = match cfg.batch {
            Some(n) => (vec![n], true),
            None => (crate::aot::batch_sizes(cfg.max_batch), false),
        };
        let req = crate::aot::Request {
            model: &self.program.name,
            graph: &inf.eval,
            tensors: &inf.tensors,
            preprocess: inf.preprocess,
            batches,
            exact,
            threads: cfg.threads,
            out: out.as_ref(),
            runtime,
        };
        let r = crate::aot::build(&req)?;
        Ok(BuildReport {
            name: r.name,
            files: r.files,
            compile_seconds: r.compile_seconds,
            link_seconds: r.link_seconds,
            warning: inf.warning,
        })
    }
}

/// The eval graph as `nnc predict` runs it (outputs only), simplified.
fn export_graph(p: &Program) -> crate::ir::Graph {
    let mut g = p.eval.clone();
    g.loss = None;
    let g = crate::simplify::dead_code(&crate::simplify::simplify(&crate::simplify::dead_code(&g)));
    crate::simplify::drop_unused_inputs(&g)
}

fn export(p: &Program, ck: &Path, source: &str) -> Result<(Vec<u8>, String, Option<String>), String> {
    let (mut ps, meta) = crate::train::checkpoint::read(ck)?;
    crate::train::checkpoint::validate(&p.eval, &ps, ck, true)?;
    let warning = crate::train::trainer::source_warning(&meta, source, ck);
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
    let opts = crate::export::Options {
        model_name: p.name.clone(),
        batch_symbol: crate::pipeline::batch_symbol(&g),
        metadata,
        int8,
    };
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
    Ok((prost::Message::encode_to_vec(&model), summary, warning))
}
