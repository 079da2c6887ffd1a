//! A checkpoint loaded for inference, as `nnc build` and the library's `Predictor` run
//! it: the checkpoint read and checked against the model, the eval graph with the int8
//! activations of a quantized checkpoint, only the outputs (no loss, so no labels), the
//! teachers' frozen tensors where the outputs read them, and the fitted preprocessing
//! of the features input.

use super::checkpoint;
use super::trainer::{checked_preprocessor, input_specs, source_warning};
use crate::data::Preprocessor;
use crate::ir::{Graph, Program};
use crate::tensors::TensorMap;
use std::collections::BTreeMap;
use std::path::Path;

/// What a compiled eval step of a checkpoint needs.
pub struct Inference {
    /// The eval graph as the checkpoint runs it (its loss kept): int8 activations for a
    /// quantized checkpoint.
    pub eval: Graph,
    /// The eval graph (batch dim symbolic): outputs only, dead code and unread inputs
    /// dropped; fake-quantized activations for a quantized checkpoint.
    pub graph: Graph,
    /// Parameters and states by name, teachers' included where the graph reads them.
    pub tensors: TensorMap,
    /// The checkpoint's metadata.
    pub meta: BTreeMap<String, String>,
    /// The preprocessing of the features input, applied to raw inputs before the step.
    pub preprocess: Option<Preprocessor>,
    /// Set when the checkpoint was trained from another version of the model's source.
    pub warning: Option<String>,
}

/// Loads `checkpoint` of `p` (from `source`) for inference.
pub fn load(p: &Program, checkpoint: &Path, source: &str) -> crate::Result<Inference> {
    let ck_error = |m: String| crate::Error::checkpoint(checkpoint, None, m);
    let (tensors, meta) = checkpoint::read(checkpoint).map_err(ck_error)?;
    checkpoint::validate(&p.eval, &tensors, checkpoint, true).map_err(ck_error)?;
    let warning = source_warning(&meta, source, checkpoint);
    Ok(Inference { warning, ..of(p, tensors, meta, checkpoint)? })
}

/// `load` for tensors and metadata read already (from `path`, named in errors) and
/// checked against the model.
pub fn of(
    p: &Program,
    mut tensors: TensorMap,
    meta: BTreeMap<String, String>,
    path: &Path,
) -> crate::Result<Inference> {
    let ck_error = |m: String| crate::Error::checkpoint(path, None, m);
    let eval = crate::compress::quantize::eval_graph(&p.eval, &tensors, &meta, &path.display().to_string())
        .map_err(ck_error)?;
    let mut graph = eval.clone();
    graph.loss = None;
    let graph = crate::simplify::drop_unused_inputs(&crate::simplify::dead_code(&graph));
    super::teacher::fill(&graph, &mut tensors)?;
    let specs = input_specs(&p.train)?;
    let preprocess = match crate::data::preprocess_input(&specs) {
        Some(spec) => {
            let n = spec.per_sample_shape.iter().product();
            Some(checked_preprocessor(&tensors, &meta, &spec.name, Some(n), path).map_err(ck_error)?)
        }
        None => None,
    };
    Ok(Inference { eval, graph, tensors, meta, preprocess, warning: None })
}
