//! Post-training quantization as a run (`nnc quantize`): the int8 weight codec and the
//! fake-quantized eval graph (`compress::quantize`) applied to a trained checkpoint, the
//! activation scales calibrated on rows of its training part, and the held-out metrics
//! in f32, with int8 weights, and with int8 weights and activations.

use super::checkpoint;
use super::session::Session;
use super::target;
use super::trainer::{rebuild, roles, tensor_of, EvalData};
use crate::compress::quantize::{
    activation_sites, fake_quant_graph, quantize_weight, scale_shape, ACT_SCALE, META_INT8, META_KEY, QMAX,
    WEIGHT_SCALE,
};
use crate::tensors::{HostData, HostTensor, TensorMap};
use std::collections::BTreeMap;

/// What `quantize_checkpoint` measured and wrote.
pub struct QuantReport {
    /// Held-out metrics in f32, with int8 weights, and with int8 weights and activations.
    pub dense: target::Evaluation,
    pub weights_only: target::Evaluation,
    pub full: target::Evaluation,
    pub rows: String,
    /// Bytes of the weights in f32 and in int8 (the scales apart), and of the scales.
    pub f32_bytes: usize,
    pub int8_bytes: usize,
    pub scale_bytes: usize,
    pub sites: usize,
    pub calibration_rows: usize,
    pub notes: Vec<String>,
    /// The checkpoint to write: tensors (int8 weights as I32 values, named in `int8`),
    /// the preprocessing and the metadata.
    pub tensors: TensorMap,
    pub int8: std::collections::BTreeSet<String>,
    pub pre: crate::data::Preprocessor,
    pub meta: BTreeMap<String, String>,
}

/// Quantizes a trained checkpoint: int8 weights per channel, activation scales from
/// `calibrate` rows of its training part, each scored on the rows it held out.
pub fn quantize_checkpoint(
    p: &crate::ir::Program,
    base_dir: &std::path::Path,
    checkpoint: &std::path::Path,
    source: &str,
    calibrate: usize,
    backend: crate::runtime::backend::Backend,
) -> Result<QuantReport, String> {
    let (_, meta0) = checkpoint::read(checkpoint)?;
    if meta0.contains_key(META_KEY) {
        return Err(format!(
            "`{}` is quantized already; quantize the f32 checkpoint it came from",
            checkpoint.display()
        ));
    }
    let rb = rebuild(p, base_dir, checkpoint, source, EvalData::HeldOut)?;
    let (train, _, held, _) = roles(&rb.parts);
    let metrics = rb.q.settings.metrics.clone();
    let score = |q: &crate::ir::Program, t: &TensorMap| -> Result<(target::Evaluation, String), String> {
        let mut s = Session::new(q, backend, 1)?;
        s.init(0, held.len())?;
        s.load_tensors(t, held.len())?;
        let sc = s.score(&rb.ds, held)?;
        Ok((target::report(&rb.ds, held, &sc, s.kind, "test_", &metrics), s.target_note()))
    };
    let model: TensorMap =
        rb.tensors.iter().filter(|(k, _)| !k.starts_with("opt.")).map(|(k, v)| (k.clone(), v.clone())).collect();
    let (dense, note) = score(&rb.q, &model)?;
    let mut notes = rb.notes.clone();
    notes.push(note);
    // Weights.
    let mut wq = model.clone();
    let mut out = model.clone();
    let mut int8 = std::collections::BTreeSet::new();
    let (mut f32_bytes, mut int8_bytes, mut scale_bytes) = (0, 0, 0);
    for d in rb.q.eval.params.iter().filter(|d| d.is_weight()) {
        let t = model.get(&d.name).ok_or_else(|| format!("internal error: no `{}`", d.name))?;
        let w = t.floats().ok_or_else(|| format!("`{}` is not a float tensor", d.name))?;
        let (q, scale, sshape) = quantize_weight(&t.shape, w);
        let (axis, _) = scale_shape(&t.shape);
        let count = t.shape[axis];
        let inner: usize = t.shape[axis + 1..].iter().product();
        let deq =
            q.iter().enumerate().map(|(i, &x)| f64::from((f64::from(x) * scale[(i / inner) % count]) as f32)).collect();
        wq.insert(d.name.clone(), HostTensor::f32(t.shape.clone(), deq));
        f32_bytes += 4 * w.len();
        int8_bytes += w.len();
        scale_bytes += 4 * scale.len();
        out.insert(d.name.clone(), HostTensor { shape: t.shape.clone(), data: HostData::I32(q) });
        out.insert(format!("{WEIGHT_SCALE}{}", d.name), HostTensor::f32(sshape, scale));
        int8.insert(d.name.clone());
    }
    let (weights_only, _) = score(&rb.q, &wq)?;
    // Activations: the largest |a| of each site over the calibration rows.
    let sites = activation_sites(&rb.q.eval);
    let mut cal = rb.q.eval.clone();
    cal.loss = None;
    for (k, &(mm, operand)) in sites.iter().enumerate() {
        let v = rb.q.eval.nodes[mm].args[operand];
        cal.outputs.push((format!("quant.site.{k}"), v));
    }
    let cal = crate::simplify::drop_unused_inputs(&crate::simplify::dead_code(&cal));
    let rows: Vec<usize> = train.iter().copied().take(calibrate.max(1)).collect();
    let batch = crate::data::gather(&rb.ds, &rows);
    let ins: TensorMap = batch.iter().map(|(k, a)| (k.clone(), tensor_of(a))).collect();
    let run = crate::runtime::exec::ExecOptions { backend, ..Default::default() };
    let outs = crate::runtime::exec::run_named(&cal, &wq, &ins, run)?;
    let mut scales = Vec::with_capacity(sites.len());
    for k in 0..sites.len() {
        let v = outs.get(&format!("quant.site.{k}")).and_then(HostTensor::floats).ok_or("internal error: a site")?;
        let amax = v.iter().fold(0f64, |m, x| m.max(x.abs()));
        let s = if amax > 0.0 { f64::from((amax / QMAX) as f32) } else { 1.0 };
        scales.push(s);
        out.insert(format!("{ACT_SCALE}{k}"), HostTensor::f32(vec![], vec![s]));
    }
    let mut q2 = rb.q.clone();
    q2.eval = fake_quant_graph(&rb.q.eval, &scales)?;
    let (full, _) = score(&q2, &wq)?;
    let mut meta = rb.meta.clone();
    meta.insert(META_KEY.into(), META_INT8.into());
    meta.insert("nnc.quant_calibration_rows".into(), rows.len().to_string());
    meta.insert("nnc.quantized_from".into(), checkpoint.display().to_string());
    Ok(QuantReport {
        dense,
        weights_only,
        full,
        rows: rb.rows,
        f32_bytes,
        int8_bytes,
        scale_bytes,
        sites: sites.len(),
        calibration_rows: rows.len(),
        notes,
        tensors: out,
        int8,
        pre: rb.pre,
        meta,
    })
}
