//! [`Predictor`]: a checkpoint's eval step compiled for a fixed batch, run on the
//! caller's buffers.

use super::fit::Checkpoint;
use super::model::{DType, Model, TensorInfo};
use crate::error::{Error, Result};
use crate::runtime::executable::{concrete, Executable};
use std::collections::BTreeMap;
use std::path::Path;

/// A trained model's eval step, compiled to native code for up to `batch` rows, with
/// the checkpoint's parameters bound and its preprocessing applied to the raw features.
/// A call copies the caller's rows in, runs one native step and copies the outputs out:
/// after the first call nothing is allocated (for `standardize`, `center` or no
/// preprocessing). Fewer rows than the batch are padded with zeros (rows are
/// independent in an eval graph). One predictor serves one thread at a time; make one
/// per thread for a pool (each compiles in milliseconds), sharing a [`Checkpoint`].
pub struct Predictor {
    exe: Executable,
    batch: usize,
    /// (name, input index in the graph, values per row, dtype).
    inputs: Vec<(String, usize, usize, DType)>,
    /// (name, output index, values per row).
    outputs: Vec<(String, usize, usize)>,
    pre: Option<crate::data::Preprocessor>,
    /// One full batch of the input being set, preprocessed in place.
    scratch: Vec<f32>,
    scratch_i32: Vec<i32>,
    info_in: Vec<TensorInfo>,
    info_out: Vec<TensorInfo>,
}

impl Model {
    /// Compiles the eval step of `checkpoint` for up to `batch` rows.
    ///
    /// ```no_run
    /// let model = nnc::Model::from_file("examples/digits.nn")?;
    /// let mut p = model.predictor("examples/runs/digits/best.safetensors", 32)?;
    /// let x = vec![0.0f32; 32 * 64];
    /// let mut logits = vec![0.0f32; 32 * 10];
    /// p.predict_into(&x, &mut logits)?;
    /// # Ok::<(), nnc::Error>(())
    /// ```
    pub fn predictor(&self, checkpoint: impl AsRef<Path>, batch: usize) -> Result<Predictor> {
        let inf = crate::train::inference::load(&self.program, checkpoint.as_ref(), &self.source)?;
        Predictor::new(inf, batch, 1)
    }

    /// [`Model::predictor`] from a checkpoint already read (shared between threads),
    /// with `threads` for its large products.
    pub fn predictor_from(&self, ck: &Checkpoint, batch: usize, threads: usize) -> Result<Predictor> {
        let inf = crate::train::inference::of(&self.program, ck.tensors().clone(), ck.metadata().clone(), ck.path())?;
        Predictor::new(inf, batch, threads)
    }
}

impl Predictor {
    fn new(inf: crate::train::inference::Inference, batch: usize, threads: usize) -> Result<Predictor> {
        if batch == 0 {
            return Err(Error::Usage("a predictor needs a batch of at least 1 row".into()));
        }
        let g = concrete(&inf.graph, batch)?;
        let opts = crate::codegen::CodegenOptions { threads: threads.max(1), ..Default::default() };
        let mut exe = Executable::new(&g, &opts)?;
        for (i, d) in exe.graph.params.clone().iter().enumerate() {
            let v = floats(&inf.tensors, &d.name)?;
            exe.set_param(i, &v)?;
        }
        for (i, d) in exe.graph.states.clone().iter().enumerate() {
            let v = floats(&inf.tensors, &d.name)?;
            exe.set_state(i, &v)?;
        }
        let per_row = |shape: &[crate::ir::Dim]| -> usize {
            shape.iter().skip(1).map(|d| d.as_const().unwrap_or(1).max(0) as usize).product()
        };
        let inputs: Vec<(String, usize, usize, DType)> = exe
            .graph
            .inputs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), i, per_row(&d.ty.shape), d.ty.dtype))
            .collect();
        let outputs = exe
            .graph
            .outputs
            .iter()
            .enumerate()
            .map(|(k, (n, v))| (n.clone(), k, per_row(&exe.graph.ty(*v).shape)))
            .collect();
        let symbolic = |name: &str, v: crate::ir::Value| super::model::info_of(&inf.graph, name, v);
        let info_in = inf.graph.inputs.iter().map(|i| symbolic(&i.name, i.value)).collect();
        let info_out = inf.graph.outputs.iter().map(|(n, v)| symbolic(n, *v)).collect();
        let widest = inputs.iter().map(|i| i.2).max().unwrap_or(0) * batch;
        Ok(Predictor {
            exe,
            batch,
            inputs,
            outputs,
            pre: inf.preprocess,
            scratch: vec![0.0; widest],
            scratch_i32: vec![0; widest],
            info_in,
            info_out,
        })
    }

    /// The most rows one call takes.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The inputs a call reads (labels are not among them).
    pub fn inputs(&self) -> &[TensorInfo] {
        &self.info_in
    }

    /// The outputs a call writes.
    pub fn outputs(&self) -> &[TensorInfo] {
        &self.info_out
    }

    fn input(&self, name: &str) -> Result<usize> {
        self.inputs.iter().position(|i| i.0 == name).ok_or_else(|| {
            let names: Vec<&str> = self.inputs.iter().map(|i| i.0.as_str()).collect();
            Error::Usage(format!("the model has no input `{name}`; its inputs are: {}", names.join(", ")))
        })
    }

    /// Rows in `len` values of input `k`, checked.
    fn rows_of(&self, k: usize, len: usize, dtype: DType) -> Result<usize> {
        let (name, _, per_row, has) = &self.inputs[k];
        if *has != dtype {
            let how = if *has == DType::F32 { "set_input" } else { "set_input_i32" };
            return Err(Error::Usage(format!("input `{name}` is {}; set it with {how}", has.name())));
        }
        if *per_row == 0 || !len.is_multiple_of(*per_row) || len / per_row > self.batch || len == 0 {
            return Err(Error::Usage(format!(
                "input `{name}`: {len} values are not 1 to {} rows of {per_row}",
                self.batch
            )));
        }
        Ok(len / per_row)
    }

    fn set_f32(&mut self, k: usize, rows: &[f32]) -> Result<usize> {
        let n = self.rows_of(k, rows.len(), DType::F32)?;
        let (name, i, per_row, _) = &self.inputs[k];
        let buf = &mut self.scratch[..self.batch * per_row];
        buf[..rows.len()].copy_from_slice(rows);
        buf[rows.len()..].fill(0.0);
        if let Some(pre) = self.pre.as_ref().filter(|p| p.input == *name) {
            pre.apply_values(&mut buf[..rows.len()])?;
        }
        self.exe.set_input_f32(*i, buf)?;
        Ok(n)
    }

    /// Sets a float input from raw rows (the checkpoint's preprocessing is applied to
    /// the features input): `rows * values_per_row` values, rows from 1 to the batch.
    /// Returns the number of rows.
    pub fn set_input(&mut self, name: &str, rows: &[f32]) -> Result<usize> {
        let k = self.input(name)?;
        self.set_f32(k, rows)
    }

    /// Sets an integer input (token ids): `rows * values_per_row` values.
    pub fn set_input_i32(&mut self, name: &str, rows: &[i32]) -> Result<usize> {
        let k = self.input(name)?;
        let n = self.rows_of(k, rows.len(), DType::I32)?;
        let (_, i, per_row, _) = &self.inputs[k];
        let buf = &mut self.scratch_i32[..self.batch * per_row];
        buf[..rows.len()].copy_from_slice(rows);
        buf[rows.len()..].fill(0);
        self.exe.set_input_i32(*i, buf)?;
        Ok(n)
    }

    /// Runs the step on the inputs set.
    pub fn run(&mut self) {
        self.exe.run(0, 0);
    }

    fn output_at(&self, k: usize, rows: usize) -> Result<&[f32]> {
        let (_, o, per_row) = &self.outputs[k];
        let all = self.exe.value(self.exe.graph.outputs[*o].1)?;
        Ok(&all[..(rows.min(self.batch) * per_row).min(all.len())])
    }

    /// The first `rows` rows of output `name` after [`Predictor::run`].
    pub fn output(&self, name: &str, rows: usize) -> Result<&[f32]> {
        let k = self.outputs.iter().position(|o| o.0 == name).ok_or_else(|| {
            let names: Vec<&str> = self.outputs.iter().map(|o| o.0.as_str()).collect();
            Error::Usage(format!("the model has no output `{name}`; its outputs are: {}", names.join(", ")))
        })?;
        self.output_at(k, rows)
    }

    /// For a model with one input and one output: sets the input from `x`, runs, and
    /// writes the output's rows into `out` (which must hold exactly those rows).
    /// Returns the number of rows.
    pub fn predict_into(&mut self, x: &[f32], out: &mut [f32]) -> Result<usize> {
        if self.inputs.len() != 1 || self.outputs.len() != 1 {
            return Err(Error::Usage(format!(
                "predict_into is for one input and one output; this model has {} and {}: use set_input, run and output",
                self.inputs.len(),
                self.outputs.len()
            )));
        }
        let rows = self.set_f32(0, x)?;
        self.run();
        let y = self.output_at(0, rows)?;
        if out.len() != y.len() {
            let name = &self.outputs[0].0;
            return Err(Error::Usage(format!(
                "output `{name}`: {rows} rows are {} values, not {}",
                y.len(),
                out.len()
            )));
        }
        out.copy_from_slice(y);
        Ok(rows)
    }

    /// Named float inputs in, every output out (allocates the result).
    pub fn predict(&mut self, inputs: &[(&str, &[f32])]) -> Result<BTreeMap<String, Vec<f32>>> {
        let mut rows = None;
        for (name, v) in inputs {
            let n = self.set_input(name, v)?;
            if rows.is_some_and(|r| r != n) {
                return Err(Error::Usage(format!("input `{name}` has {n} rows, the others {}", rows.unwrap_or(0))));
            }
            rows = Some(n);
        }
        if let Some((missing, ..)) = self.inputs.iter().find(|i| !inputs.iter().any(|(n, _)| *n == i.0)) {
            return Err(Error::Usage(format!("input `{missing}` is not given")));
        }
        self.run();
        let rows = rows.unwrap_or(0);
        (0..self.outputs.len()).map(|k| Ok((self.outputs[k].0.clone(), self.output_at(k, rows)?.to_vec()))).collect()
    }
}

fn floats(t: &crate::tensors::TensorMap, name: &str) -> Result<Vec<f32>> {
    t.get(name)
        .and_then(|t| t.floats())
        .map(|v| v.iter().map(|&x| x as f32).collect())
        .ok_or_else(|| Error::Run(format!("no float tensor `{name}` for the predictor")))
}

// Predictors move between threads (one thread uses one at a time).
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Predictor>();
};
