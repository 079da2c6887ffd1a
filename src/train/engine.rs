//! Compiled graphs on either backend (`Engine`), feeding them rows of a data set, and
//! scoring rows with an eval graph (`Scorer`). The pieces every run is built from: the
//! trainer, cross-validation and model comparison reuse one engine per batch size.

use crate::codegen::CodegenOptions;
use crate::data::{self, Array, ArrayData, Dataset, InputSpec};
use crate::ir::{DType, Graph};
use crate::runtime::executable::{concrete, Executable};
use crate::runtime::interp::{self, Data, Feeds, Tensor};
use std::collections::HashMap;

/// A compiled graph on one backend.
#[allow(clippy::large_enum_variant)] // one or two engines per run
pub enum Engine {
    Jit(Box<Executable>),
    Interp { g: Graph, feeds: Feeds<f32>, run: Option<interp::Run<f32>> },
}

impl Engine {
    pub fn new(
        g: &Graph,
        batch: usize,
        backend: crate::runtime::backend::Backend,
        threads: usize,
    ) -> Result<Engine, String> {
        let cg = concrete(g, batch)?;
        if backend.jit() {
            let opts = CodegenOptions { threads: threads.max(1), ..Default::default() };
            Ok(Engine::Jit(Box::new(Executable::new(&cg, &opts)?)))
        } else {
            let feeds = Feeds {
                inputs: cg
                    .inputs
                    .iter()
                    .map(|i| {
                        let shape: Vec<usize> = i.ty.shape.iter().map(|d| d.as_const().unwrap_or(1) as usize).collect();
                        let n = shape.iter().product();
                        match i.ty.dtype {
                            DType::F32 => Tensor::f(shape, vec![0.0; n]),
                            DType::I32 => Tensor::i(shape, vec![0; n]),
                        }
                    })
                    .collect(),
                params: cg.params.iter().map(|p| vec![0.0; p.shape.iter().product::<i64>() as usize]).collect(),
                states: cg.states.iter().map(|s| vec![0.0; s.shape.iter().product::<i64>() as usize]).collect(),
                seed: 0,
                step: 0,
            };
            Ok(Engine::Interp { g: cg, feeds, run: None })
        }
    }
    pub fn graph(&self) -> &Graph {
        match self {
            Engine::Jit(e) => &e.graph,
            Engine::Interp { g, .. } => g,
        }
    }
    pub fn param(&self, i: usize) -> Vec<f32> {
        match self {
            Engine::Jit(e) => e.param(i).to_vec(),
            Engine::Interp { feeds, .. } => feeds.params[i].clone(),
        }
    }
    pub fn state(&self, i: usize) -> Vec<f32> {
        match self {
            Engine::Jit(e) => e.state(i).to_vec(),
            Engine::Interp { feeds, .. } => feeds.states[i].clone(),
        }
    }
    pub fn set_param(&mut self, i: usize, v: &[f32]) -> Result<(), String> {
        match self {
            Engine::Jit(e) => e.set_param(i, v),
            Engine::Interp { feeds, .. } => {
                feeds.params[i] = v.to_vec();
                Ok(())
            }
        }
    }
    pub fn set_state(&mut self, i: usize, v: &[f32]) -> Result<(), String> {
        match self {
            Engine::Jit(e) => e.set_state(i, v),
            Engine::Interp { feeds, .. } => {
                feeds.states[i] = v.to_vec();
                Ok(())
            }
        }
    }
    pub fn set_input(&mut self, i: usize, a: &Array) -> Result<(), String> {
        match (self, &a.data) {
            (Engine::Jit(e), ArrayData::F32(d)) => e.set_input_f32(i, d),
            (Engine::Jit(e), ArrayData::I32(d)) => e.set_input_i32(i, d),
            (Engine::Interp { feeds, .. }, ArrayData::F32(d)) => {
                feeds.inputs[i].data = Data::F(d.clone());
                Ok(())
            }
            (Engine::Interp { feeds, .. }, ArrayData::I32(d)) => {
                feeds.inputs[i].data = Data::I(d.clone());
                Ok(())
            }
        }
    }
    pub fn set_scalar(&mut self, i: usize, v: f32) -> Result<(), String> {
        self.set_input(i, &Array { shape: vec![], data: ArrayData::F32(vec![v]) })
    }
    pub fn run(&mut self, seed: u64, step: u64) -> Result<(), String> {
        match self {
            Engine::Jit(e) => {
                e.run(seed, step);
                Ok(())
            }
            Engine::Interp { g, feeds, run } => {
                feeds.seed = seed;
                feeds.step = step;
                let r = interp::run(g, feeds)?;
                interp::apply_updates(g, &r, feeds);
                *run = Some(r);
                Ok(())
            }
        }
    }
    /// `run` for a data-parallel step: its sums (`Op::AllReduce`) go through `hook`
    /// (the interpreter sums each one, blocking, in graph order).
    pub fn run_with(&mut self, seed: u64, step: u64, hook: &mut crate::dist::comm::Hook) -> Result<(), String> {
        match self {
            Engine::Jit(e) => e.run_with(seed, step, hook),
            Engine::Interp { g, feeds, run } => {
                feeds.seed = seed;
                feeds.step = step;
                let r = interp::run_with(g, feeds, &mut |buf| hook.comm.allreduce_sum_f32(buf))?;
                interp::apply_updates(g, &r, feeds);
                *run = Some(r);
            }
        }
        match hook.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    pub fn loss(&self) -> Result<f32, String> {
        match self {
            Engine::Jit(e) => e.loss(),
            Engine::Interp { g, run, .. } => {
                let l = g.loss.ok_or("no loss")?;
                Ok(run.as_ref().ok_or("not run")?.get(l).floats()[0])
            }
        }
    }
    pub fn output(&self, k: usize) -> Result<Vec<f32>, String> {
        match self {
            Engine::Jit(e) => {
                let v = e.graph.outputs.get(k).ok_or("no output")?.1;
                Ok(e.value(v)?.to_vec())
            }
            Engine::Interp { g, run, .. } => {
                let v = g.outputs.get(k).ok_or("no output")?.1;
                Ok(run.as_ref().ok_or("not run")?.get(v).floats().to_vec())
            }
        }
    }
}

/// Copies parameters and states between engines by name.
pub fn sync(from: &Engine, to: &mut Engine) -> Result<(), String> {
    let (fg, tg) = (from.graph().clone(), to.graph().clone());
    for (i, p) in tg.params.iter().enumerate() {
        if let Some(j) = fg.params.iter().position(|q| q.name == p.name) {
            to.set_param(i, &from.param(j))?;
        }
    }
    for (i, s) in tg.states.iter().enumerate() {
        if let Some(j) = fg.states.iter().position(|q| q.name == s.name) {
            to.set_state(i, &from.state(j))?;
        }
    }
    Ok(())
}

/// The model's data inputs (without the `hyper.*` ones) as loader specs.
pub fn input_specs(g: &Graph) -> Result<Vec<InputSpec>, String> {
    let mut out = Vec::new();
    for i in &g.inputs {
        let first = i.ty.shape.first();
        if first.is_none_or(|d| d.is_const()) {
            return Err(format!(
                "input `{}` must start with the batch dim (like `[B, ...]`) to be fed from data",
                i.name
            ));
        }
        let rest: Option<Vec<usize>> = i.ty.shape[1..].iter().map(|d| d.as_const().map(|c| c as usize)).collect();
        let rest = rest.ok_or_else(|| format!("input `{}`: only the first dim may be a symbol", i.name))?;
        let dt = i.ty.dtype;
        out.push(InputSpec::new(&i.name, dt, &rest));
    }
    Ok(out)
}

pub fn set_batch(engine: &mut Engine, ds: &Dataset, rows: &[usize]) -> Result<(), String> {
    set_arrays(engine, &data::gather(ds, rows))
}

/// Feeds every data input of the engine from `arrays` (by name).
pub fn set_arrays(engine: &mut Engine, arrays: &std::collections::BTreeMap<String, data::Array>) -> Result<(), String> {
    let g = engine.graph().clone();
    for (i, inp) in g.inputs.iter().enumerate() {
        // Hyper-parameters, and the directions of Hessian-vector products (`v.<param>`),
        // are not data.
        if inp.name.starts_with("hyper.") || inp.name.starts_with("v.") {
            continue;
        }
        let a = arrays.get(&inp.name).ok_or_else(|| format!("the data has no array for input `{}`", inp.name))?;
        engine.set_input(i, a)?;
    }
    Ok(())
}

/// An eval graph run over any rows in chunks of at most `batch`, with one compiled engine
/// per chunk size (compiled once, reused by every later call): the loss and the first
/// output, after copying the parameters of another engine.
pub struct Scorer {
    engines: HashMap<usize, Engine>,
    pub graph: Graph,
    pub batch: usize,
    pub backend: crate::runtime::backend::Backend,
    pub threads: usize,
}

impl Scorer {
    pub fn new(graph: Graph, batch: usize, backend: crate::runtime::backend::Backend, threads: usize) -> Scorer {
        Scorer { engines: HashMap::new(), graph, batch, backend, threads }
    }
    pub fn run(&mut self, from: &Engine, ds: &Dataset, rows: &[usize]) -> Result<(f64, Vec<f32>, usize), String> {
        let (sums, out, width) = self.run_chunks(from, ds, rows)?;
        let loss = sums.iter().fold(0.0, |a, s| a + s);
        Ok((loss / rows.len().max(1) as f64, out, width))
    }

    /// `run` with the loss summed over each chunk's rows (one entry per chunk of at most
    /// `batch` rows, in order) rather than averaged: a distributed session gathers the
    /// chunks its ranks scored and adds them in the same order as one process.
    pub fn run_chunks(
        &mut self,
        from: &Engine,
        ds: &Dataset,
        rows: &[usize],
    ) -> Result<(Vec<f64>, Vec<f32>, usize), String> {
        let mut sums = Vec::with_capacity(rows.len().div_ceil(self.batch.max(1)));
        let mut out = Vec::new();
        let mut width = 0;
        for chunk in rows.chunks(self.batch.max(1)) {
            let n = chunk.len();
            if !self.engines.contains_key(&n) {
                let e = Engine::new(&self.graph, n, self.backend, self.threads)?;
                self.engines.insert(n, e);
            }
            let e = self.engines.get_mut(&n).ok_or("internal error: no engine")?;
            sync(from, e)?;
            set_batch(e, ds, chunk)?;
            e.run(0, 0)?;
            sums.push(if e.graph().loss.is_some() { f64::from(e.loss()?) * n as f64 } else { 0.0 });
            if !e.graph().outputs.is_empty() {
                let o = e.output(0)?;
                width = o.len() / n.max(1);
                out.extend(o);
            }
        }
        Ok((sums, out, width))
    }
}

/// Integer class labels of `rows` (i32 labels, or f32 labels that are all 0 or 1).
pub fn labels_of(ds: &Dataset, rows: &[usize]) -> Option<Vec<i32>> {
    match &ds.get(data::LABEL_INPUT)?.data {
        ArrayData::I32(v) => Some(rows.iter().map(|&r| v[r]).collect()),
        ArrayData::F32(v) => {
            let l: Vec<f32> = rows.iter().map(|&r| v[r]).collect();
            l.iter().all(|x| *x == 0.0 || *x == 1.0).then(|| l.iter().map(|&x| x as i32).collect())
        }
    }
}
