//! `nnc predict`: run the eval graph on inputs (tensors by name, or a data file as
//! `train` reads it) and write the outputs (safetensors, or predictions as csv or npy).

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// Parameters and states (an `nnc init` file or a checkpoint; a checkpoint's
    /// preprocessing is applied either way).
    #[arg(long, required_unless_present_any = ["checkpoint", "torch"])]
    pub params: Option<PathBuf>,
    /// A training checkpoint (as --params). Give it several times for an ensemble: each
    /// member's outputs as `member<i>.<name>`, and the members' mean probabilities as
    /// `ensemble.probabilities` (a classifier) or their mean prediction.
    #[arg(long, conflicts_with = "params")]
    pub checkpoint: Vec<PathBuf>,
    /// A PyTorch state dict saved as safetensors (`safetensors.torch.save_file`): its
    /// `torch.nn` names and layouts mapped onto the model's layers (a Linear's
    /// `weight [out, in]` becomes a Dense `W [in, out]`); no preprocessing is applied.
    #[arg(long, conflicts_with_all = ["params", "checkpoint"])]
    pub torch: Option<PathBuf>,
    /// The inputs: a `.safetensors` file of tensors by name (batch dimension first), or a
    /// data file read as `train` reads its sources (csv, npy, npz, IDX; `.gz` too), the
    /// checkpoint's preprocessing applied either way.
    #[arg(long)]
    pub inputs: PathBuf,
    /// A csv file's label column, left out of the features (negative counts from the end).
    #[arg(long, allow_hyphen_values = true)]
    pub label_column: Option<i64>,
    /// A csv file's first row is a header.
    #[arg(long)]
    pub header: bool,
    /// Where to write: `.safetensors` (every output by name), `.csv` (a row per sample: a
    /// classifier's predicted class and probabilities, else the outputs' values) or `.npy`
    /// (the prediction the loss scores: a classifier's probabilities).
    #[arg(long)]
    pub out: PathBuf,
    /// Native code (`jit`) or the reference interpreter (`interp`).
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
}

/// The outputs of one checkpoint on the inputs, its preprocessing applied first.
fn predict_one(
    p: &crate::ir::Program,
    g: &crate::ir::Graph,
    ck: &std::path::Path,
    inputs: &crate::tensors::TensorMap,
    source: &str,
    run: crate::runtime::exec::ExecOptions,
    torch: Option<&crate::tensors::TensorMap>,
) -> Result<crate::tensors::TensorMap, String> {
    let (mut ps, meta) = match torch {
        Some(t) => (t.clone(), Default::default()),
        None => crate::train::checkpoint::read(ck)?,
    };
    crate::train::checkpoint::validate(&p.eval, &ps, ck, true)?;
    crate::train::teacher::fill(g, &mut ps)?;
    if let Some(w) = crate::train::trainer::source_warning(&meta, source, ck) {
        errln!("{w}");
    }
    let mut ins = inputs.clone();
    let specs = crate::train::trainer::input_specs(&p.train)?;
    if let Some(spec) = crate::data::preprocess_input(&specs) {
        let n = spec.per_sample_shape.iter().product();
        let pre = crate::train::trainer::checked_preprocessor(&ps, &meta, &spec.name, Some(n), ck)?;
        if let Some(t) = ins.get_mut(&spec.name) {
            if let crate::tensors::HostData::F32(v) | crate::tensors::HostData::F64(v) = &mut t.data {
                let mut f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                pre.apply_values(&mut f)?;
                *v = f.into_iter().map(f64::from).collect();
            }
        }
    }
    crate::runtime::exec::run_named(g, &ps, &ins, run)
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, params, checkpoint, torch, inputs, label_column, header, out, backend, model } = a;
    let out_format = match OutFormat::of(&out) {
        Ok(f) => f,
        Err(m) => return fail(&m),
    };
    let first = checkpoint.first().or(params.as_ref()).cloned().unwrap_or_default();
    let first = if torch.is_some() { PathBuf::new() } else { first };
    let p = match compile_with_sets(&file, &checkpoint_args(&first), model.as_deref(), opts) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut p = p;
    // A quantized checkpoint runs with its int8 activations (every member alike).
    let mut quantized: Option<Option<Vec<f64>>> = None;
    for ck in checkpoint.iter().chain(params.iter()) {
        let scales = match crate::train::checkpoint::read(ck)
            .and_then(|(t, m)| crate::compress::quantize::act_scales(&t, &m, &ck.display().to_string()))
        {
            Ok(s) => s,
            Err(m) => return fail(&m),
        };
        match &quantized {
            Some(q) if *q != scales => {
                return fail("the members of an ensemble must all be quantized alike (or none of them)");
            }
            _ => quantized = Some(scales),
        }
    }
    if let Some(Some(scales)) = &quantized {
        match crate::compress::quantize::fake_quant_graph(&p.eval, scales) {
            Ok(g) => p.eval = g,
            Err(m) => return fail(&format!("`{}`: {m}", first.display())),
        }
    }
    let p = &p;
    // The metrics target (the prediction the loss scores) is what an ensemble averages.
    let target = crate::train::target::target(p);
    // The prediction the loss scores is an output whenever it is needed: to average an
    // ensemble, or to write a csv or npy of predictions.
    let mut g = match (&target, checkpoint.len() > 1 || out_format != OutFormat::Safetensors) {
        (Ok(t), true) => match crate::train::target::with_target_output(&p.eval, t) {
            Ok(g) => g,
            Err(m) => return fail(&m),
        },
        _ => p.eval.clone(),
    };
    // predict returns outputs only: a loss may need labels the caller lacks.
    g.loss = None;
    let g = crate::simplify::drop_unused_inputs(&crate::simplify::dead_code(&g));
    let run = crate::runtime::exec::ExecOptions { backend: backend.run(), ..Default::default() };
    // `--params` and `--checkpoint` are read the same way: a file that carries a
    // preprocessing (a training checkpoint) has it applied to the features input first.
    let cks: Vec<PathBuf> =
        if checkpoint.is_empty() { params.into_iter().chain(torch.clone()).collect() } else { checkpoint };
    let torch_params = match &torch {
        Some(t) => match crate::tensors::read(t)
            .and_then(|sd| crate::torch::from_state_dict(&p.eval, &sd, &t.display().to_string()))
        {
            Ok(m) => Some(m),
            Err(m) => return fail(&m),
        },
        None => None,
    };
    let ins = match read_inputs(&g, &inputs, label_column, header) {
        Ok(t) => t,
        Err(m) => return fail(&m),
    };
    let source = std::fs::read_to_string(&file).unwrap_or_default();
    let mut result = crate::tensors::TensorMap::new();
    if cks.len() == 1 {
        match predict_one(p, &g, &cks[0], &ins, &source, run, torch_params.as_ref()) {
            Ok(r) => result = r,
            Err(m) => return fail(&m),
        }
    } else {
        let t = match &target {
            Ok(t) => t,
            Err(why) => return fail(&format!("an ensemble averages the prediction the loss scores, but {why}")),
        };
        let mut sum: Option<(Vec<usize>, Vec<f64>)> = None;
        for (i, ck) in cks.iter().enumerate() {
            let r = match predict_one(p, &g, ck, &ins, &source, run, None) {
                Ok(r) => r,
                Err(m) => return fail(&m),
            };
            let Some(v) = r.get(&t.output).and_then(crate::tensors::HostTensor::floats) else {
                return fail(&format!("`{}` gave no output `{}`", ck.display(), t.output));
            };
            let k = r[&t.output].shape.last().copied().unwrap_or(1);
            let v = if t.kind.is_some() { crate::metrics::probabilities(v, k) } else { v.to_vec() };
            match &mut sum {
                None => sum = Some((r[&t.output].shape.clone(), v)),
                Some((_, s)) => s.iter_mut().zip(&v).for_each(|(a, b)| *a += b),
            }
            for (name, tensor) in r {
                if name != crate::train::target::SCORED_OUTPUT {
                    result.insert(format!("member{}.{name}", i + 1), tensor);
                }
            }
        }
        if let Some((shape, s)) = sum {
            let n = cks.len() as f64;
            let name = if t.kind.is_some() {
                "ensemble.probabilities".to_string()
            } else {
                format!("ensemble.mean.{}", t.output)
            };
            result.insert(name, crate::tensors::HostTensor::f32(shape, s.into_iter().map(|x| x / n).collect()));
        }
    }
    // A classifier: class labels, or a loss that scores logits (`bce_logits` on 0/1 targets).
    let classifier = p.train.inputs.iter().any(|i| i.name == crate::data::LABEL_INPUT && i.ty.dtype == ir::DType::I32)
        || target.as_ref().is_ok_and(|t| t.kind.is_some());
    let scored = match &target {
        Ok(t) if cks.len() > 1 && t.kind.is_some() => Some(("ensemble.probabilities".to_string(), true)),
        Ok(t) if cks.len() > 1 => Some((format!("ensemble.mean.{}", t.output), true)),
        Ok(t) => {
            let probs =
                classifier && crate::train::target::score_kind(&g, t) == crate::metrics::ScoreKind::Probabilities;
            Some((t.output.clone(), probs))
        }
        Err(_) => None,
    };
    if out_format == OutFormat::Safetensors {
        if cks.len() == 1 {
            result.remove(crate::train::target::SCORED_OUTPUT);
        }
        return match crate::tensors::write(&out, &result, None) {
            Ok(()) => {
                errln!("wrote {} tensors to {}", result.len(), out.display());
                0
            }
            Err(m) => fail(&m),
        };
    }
    let table = match predictions(&result, scored.as_ref(), classifier, target.as_ref().err()) {
        Ok(t) => t,
        Err(m) => return fail(&m),
    };
    let bytes = match out_format {
        OutFormat::Csv => table.to_csv().into_bytes(),
        _ => table.to_npy(),
    };
    match crate::tensors::write_atomic(&out, &bytes) {
        Ok(()) => {
            errln!("wrote predictions of {} rows to {}", table.rows, out.display());
            0
        }
        Err(m) => fail(&m),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OutFormat {
    Safetensors,
    Csv,
    Npy,
}

impl OutFormat {
    fn of(path: &std::path::Path) -> Result<OutFormat, String> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_lowercase).as_deref() {
            Some("safetensors") => Ok(OutFormat::Safetensors),
            Some("csv") => Ok(OutFormat::Csv),
            Some("npy") => Ok(OutFormat::Npy),
            _ => Err(format!(
                "`--out {}`: the name must end in .safetensors (every output), .csv or .npy (predictions)",
                path.display()
            )),
        }
    }
}

/// The inputs of the predict graph `g`: tensors by name from a safetensors file, or a
/// data file bound to the inputs as the train block's sources are.
fn read_inputs(
    g: &crate::ir::Graph,
    path: &std::path::Path,
    label_column: Option<i64>,
    header: bool,
) -> Result<crate::tensors::TensorMap, String> {
    let format = crate::data::file_format(path)?;
    if format == crate::data::FileFormat::Safetensors && label_column.is_none() && !header {
        return crate::tensors::read(path);
    }
    let specs = crate::train::engine::input_specs(g)?;
    let f = crate::data::DataFile { path: path.to_path_buf(), label_column, header, labels: None };
    let ds = crate::data::load_file(&f, &specs)?;
    Ok(ds.arrays.iter().map(|(k, a)| (k.clone(), crate::train::trainer::tensor_of(a))).collect())
}

/// Predictions as a table: one row per sample.
struct Table {
    rows: usize,
    columns: Vec<String>,
    /// `rows * columns.len()` values, row-major; a classifier's first column is its class.
    values: Vec<f64>,
    /// The first column holds integers (the predicted class).
    class_column: bool,
}

impl Table {
    fn to_csv(&self) -> String {
        let mut s = self.columns.join(",");
        s.push('\n');
        let w = self.columns.len().max(1);
        for row in self.values.chunks(w) {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(
                    |(j, v)| {
                        if j == 0 && self.class_column {
                            format!("{}", *v as i64)
                        } else {
                            format!("{}", *v as f32)
                        }
                    },
                )
                .collect();
            s.push_str(&cells.join(","));
            s.push('\n');
        }
        s
    }

    /// The values without a class column, as a little-endian f32 `.npy` array [rows, k]
    /// (or [rows] for one column).
    fn to_npy(&self) -> Vec<u8> {
        let skip = usize::from(self.class_column);
        let w = self.columns.len().max(1);
        let k = w - skip;
        let shape = if k == 1 { format!("({},)", self.rows) } else { format!("({}, {k})", self.rows) };
        let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        // Magic, version 1.0, header length; the header padded with spaces to a multiple of
        // 64 bytes and ended by a newline (the format's own rule).
        let unpadded = 10 + header.len() + 1;
        header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        for row in self.values.chunks(w) {
            for v in &row[skip..] {
                out.extend_from_slice(&(*v as f32).to_le_bytes());
            }
        }
        out
    }
}

/// The table of predictions: a classifier's class and probabilities, or the values of
/// the prediction the loss scores (every output when there is none).
fn predictions(
    result: &crate::tensors::TensorMap,
    scored: Option<&(String, bool)>,
    classifier: bool,
    no_target: Option<&String>,
) -> Result<Table, String> {
    let per_row = |name: &str, t: &crate::tensors::HostTensor| -> Result<(usize, usize, Vec<f64>), String> {
        let v: Vec<f64> = match &t.data {
            crate::tensors::HostData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            crate::tensors::HostData::F32(v) | crate::tensors::HostData::F64(v) => v.clone(),
        };
        let Some(&n) = t.shape.first() else {
            return Err(format!("output `{name}` is a scalar, not one value per sample; write .safetensors"));
        };
        Ok((n, v.len().checked_div(n).unwrap_or(0), v))
    };
    let Some((name, are_probs)) = scored else {
        // No prediction the loss scores: every output, side by side.
        let mut cols = Vec::new();
        let mut parts = Vec::new();
        for (name, t) in result {
            let (n, w, v) = per_row(name, t)?;
            cols.extend(if w == 1 { vec![name.clone()] } else { (0..w).map(|j| format!("{name}_{j}")).collect() });
            parts.push((n, w, v));
        }
        let rows = parts.first().map(|p| p.0).unwrap_or(0);
        if parts.iter().any(|p| p.0 != rows) {
            return Err("the outputs differ in their number of rows; write .safetensors".into());
        }
        let mut values = Vec::with_capacity(rows * cols.len());
        for r in 0..rows {
            for (_, w, v) in &parts {
                values.extend_from_slice(&v[r * w..(r + 1) * w]);
            }
        }
        if let Some(why) = no_target {
            errln!("note: no prediction is scored by a loss ({why}); writing every output");
        }
        return Ok(Table { rows, columns: cols, values, class_column: false });
    };
    let t = result.get(name).ok_or_else(|| format!("the model gave no output `{name}`"))?;
    let (rows, w, v) = per_row(name, t)?;
    if !classifier {
        // The prediction the loss scores, when it is not a declared output, is `prediction`.
        let shown = if name == crate::train::target::SCORED_OUTPUT { "prediction" } else { name.as_str() };
        let cols = if w == 1 { vec![shown.to_string()] } else { (0..w).map(|j| format!("{shown}_{j}")).collect() };
        return Ok(Table { rows, columns: cols, values: v, class_column: false });
    }
    let probs = if *are_probs { v } else { crate::metrics::probabilities(&v, w) };
    let kind = crate::metrics::ScoreKind::Probabilities;
    let classes = crate::metrics::predicted_classes(&probs, w, kind)?;
    let mut cols = vec!["class".to_string()];
    if w == 1 {
        cols.push("probability_1".into());
    } else {
        cols.extend((0..w).map(|j| format!("probability_{j}")));
    }
    let mut values = Vec::with_capacity(rows * (w + 1));
    for (r, c) in classes.iter().enumerate() {
        values.push(f64::from(*c));
        values.extend_from_slice(&probs[r * w..(r + 1) * w]);
    }
    Ok(Table { rows, columns: cols, values, class_column: true })
}
