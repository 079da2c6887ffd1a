//! The training loop: data, splits, preprocessing, the compiled step, schedules,
//! evaluation, metrics, checkpoints, early stopping and resuming.
//!
//! Consumes a lowered `Program` (its train block, possibly overridden) and produces a
//! `Report`, with files in the output folder: `last.safetensors`, `best.safetensors`,
//! `metrics.csv`, `curves.png` and, for models with a 2-D input, `boundary.png`.
//! Determinism: shuffling depends only on (seed, epoch), dropout on (seed, step), and
//! checkpoints store every parameter, state and optimizer state exactly, so `--resume`
//! continues bit-identically. Nothing here prints: progress goes to a callback.

use super::{schedule, update};
use crate::codegen::CodegenOptions;
use crate::data::{self, Array, ArrayData, Dataset, InputSpec, Preprocessor};
use crate::ir::{DType, Graph, Program};
use crate::metrics::{self, Metrics, MetricsLog, ScoreKind};
use crate::runtime::executable::{concrete, Executable};
use crate::runtime::interp::{self, Data, Feeds, Tensor};
use crate::tensors::{HostData, HostTensor, TensorMap};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub out_dir: PathBuf,
    /// Continue from `out_dir/last.safetensors`.
    pub resume: bool,
    /// JIT (default) or the reference interpreter.
    pub jit: bool,
    pub threads: usize,
    /// The model's source text (its hash goes into checkpoints).
    pub source: String,
}

/// What happened in one epoch (for progress output).
#[derive(Clone, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    pub epochs: usize,
    pub step: u64,
    pub metrics: Vec<(String, f64)>,
}

/// Progress events for the caller to show.
pub enum Event<'a> {
    Batch { epoch: usize, batch: usize, batches: usize, loss: f64, lr: f64 },
    Epoch(&'a EpochReport),
}

#[derive(Clone, Debug)]
pub struct Report {
    pub test: Metrics,
    pub confusion: Option<String>,
    pub epochs_run: usize,
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
    pub interrupted: bool,
    pub seconds: f64,
    pub files: Vec<PathBuf>,
}

/// A compiled graph on one backend.
#[allow(clippy::large_enum_variant)] // one or two engines per run
enum Engine {
    Jit(Box<Executable>),
    Interp { g: Graph, feeds: Feeds<f32>, run: Option<interp::Run<f32>> },
}

impl Engine {
    fn new(g: &Graph, batch: usize, jit: bool, threads: usize) -> Result<Engine, String> {
        let cg = concrete(g, batch)?;
        if jit {
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
    fn graph(&self) -> &Graph {
        match self {
            Engine::Jit(e) => &e.graph,
            Engine::Interp { g, .. } => g,
        }
    }
    fn param(&self, i: usize) -> Vec<f32> {
        match self {
            Engine::Jit(e) => e.param(i).to_vec(),
            Engine::Interp { feeds, .. } => feeds.params[i].clone(),
        }
    }
    fn state(&self, i: usize) -> Vec<f32> {
        match self {
            Engine::Jit(e) => e.state(i).to_vec(),
            Engine::Interp { feeds, .. } => feeds.states[i].clone(),
        }
    }
    fn set_param(&mut self, i: usize, v: &[f32]) -> Result<(), String> {
        match self {
            Engine::Jit(e) => e.set_param(i, v),
            Engine::Interp { feeds, .. } => {
                feeds.params[i] = v.to_vec();
                Ok(())
            }
        }
    }
    fn set_state(&mut self, i: usize, v: &[f32]) -> Result<(), String> {
        match self {
            Engine::Jit(e) => e.set_state(i, v),
            Engine::Interp { feeds, .. } => {
                feeds.states[i] = v.to_vec();
                Ok(())
            }
        }
    }
    fn set_input(&mut self, i: usize, a: &Array) -> Result<(), String> {
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
    fn set_scalar(&mut self, i: usize, v: f32) -> Result<(), String> {
        self.set_input(i, &Array { shape: vec![], data: ArrayData::F32(vec![v]) })
    }
    fn run(&mut self, seed: u64, step: u64) -> Result<(), String> {
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
    fn loss(&self) -> Result<f32, String> {
        match self {
            Engine::Jit(e) => e.loss(),
            Engine::Interp { g, run, .. } => {
                let l = g.loss.ok_or("no loss")?;
                Ok(run.as_ref().ok_or("not run")?.get(l).floats()[0])
            }
        }
    }
    fn output(&self, k: usize) -> Result<Vec<f32>, String> {
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
fn sync(from: &Engine, to: &mut Engine) -> Result<(), String> {
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
        let dt = if i.ty.dtype == DType::I32 { data::DType::I32 } else { data::DType::F32 };
        out.push(InputSpec::new(&i.name, dt, &rest));
    }
    Ok(out)
}

/// The class count the labels feed (one_hot n), if any.
fn classes_of(g: &Graph) -> Option<i64> {
    let y = g.inputs.iter().find(|i| i.name == data::LABEL_INPUT)?;
    g.nodes.iter().find_map(|(_, n)| match n.op {
        crate::ir::Op::OneHot { n: k } if n.args[0] == y.value => Some(k),
        _ => None,
    })
}

/// Everything prepared before the first step.
pub struct Prepared {
    pub ds: Dataset,
    pub parts: Vec<Vec<usize>>,
    pub pre: Preprocessor,
    pub specs: Vec<InputSpec>,
}

/// Loads the data, checks labels, splits and fits preprocessing on the training part.
pub fn prepare(p: &Program, base_dir: &Path) -> Result<Prepared, String> {
    let s = &p.settings;
    let source = s.data.as_ref().ok_or("the `train` block has no `data = ...` source")?;
    let specs = input_specs(&p.train)?;
    let mut ds = data::load(source, base_dir, &specs)?;
    if let (Some(k), Some(max)) = (classes_of(&p.train), ds.max_label(data::LABEL_INPUT)) {
        if i64::from(max) >= k {
            return Err(format!("label {max} is out of range: the model has {k} classes (labels 0..{})", k - 1));
        }
    }
    let label = ds.get(data::LABEL_INPUT).is_some().then_some(data::LABEL_INPUT);
    let parts = data::split(&ds, &s.split, s.seed as u64, label)?;
    if parts.iter().skip(1).any(|p| p.is_empty()) {
        return Err(format!("a split part is empty: {} samples are too few for split {:?}", ds.n, s.split));
    }
    let pre = Preprocessor::fit(&s.preprocess, &ds, &parts[0], &specs)?;
    pre.apply_dataset(&mut ds)?;
    Ok(Prepared { ds, parts, pre, specs })
}

fn set_batch(engine: &mut Engine, ds: &Dataset, rows: &[usize]) -> Result<(), String> {
    let arrays = data::gather(ds, rows);
    let g = engine.graph().clone();
    for (i, inp) in g.inputs.iter().enumerate() {
        if inp.name.starts_with("hyper.") {
            continue;
        }
        let a = arrays.get(&inp.name).ok_or_else(|| format!("the data has no array for input `{}`", inp.name))?;
        engine.set_input(i, a)?;
    }
    Ok(())
}

/// Loss and first output over `rows`, in chunks of at most `batch`.
struct Evaluator {
    engines: HashMap<usize, Engine>,
    graph: Graph,
    batch: usize,
    jit: bool,
    threads: usize,
}

impl Evaluator {
    fn run(&mut self, from: &Engine, ds: &Dataset, rows: &[usize]) -> Result<(f64, Vec<f32>, usize), String> {
        let mut loss = 0.0;
        let mut out = Vec::new();
        let mut width = 0;
        for chunk in rows.chunks(self.batch) {
            let n = chunk.len();
            if !self.engines.contains_key(&n) {
                let e = Engine::new(&self.graph, n, self.jit, self.threads)?;
                self.engines.insert(n, e);
            }
            let e = self.engines.get_mut(&n).ok_or("internal error: no engine")?;
            sync(from, e)?;
            set_batch(e, ds, chunk)?;
            e.run(0, 0)?;
            if e.graph().loss.is_some() {
                loss += f64::from(e.loss()?) * n as f64;
            }
            if !e.graph().outputs.is_empty() {
                let o = e.output(0)?;
                width = o.len() / n.max(1);
                out.extend(o);
            }
        }
        Ok((loss / rows.len().max(1) as f64, out, width))
    }
}

fn labels_of(ds: &Dataset, rows: &[usize]) -> Option<Vec<i32>> {
    match &ds.get(data::LABEL_INPUT)?.data {
        ArrayData::I32(v) => Some(rows.iter().map(|&r| v[r]).collect()),
        ArrayData::F32(v) => {
            let l: Vec<f32> = rows.iter().map(|&r| v[r]).collect();
            l.iter().all(|x| *x == 0.0 || *x == 1.0).then(|| l.iter().map(|&x| x as i32).collect())
        }
    }
}

/// Classification (or regression) metrics of scores against the labels of `rows`.
fn score_metrics(ds: &Dataset, rows: &[usize], scores: &[f32], width: usize, prefix: &str) -> Metrics {
    let mut m = Metrics::new();
    if width == 0 || scores.is_empty() {
        return m;
    }
    if let Some(labels) = labels_of(ds, rows) {
        let kind = if width == 1 && scores.iter().all(|s| (0.0..=1.0).contains(s)) {
            ScoreKind::Probabilities
        } else {
            ScoreKind::Logits
        };
        if let Ok(c) = metrics::classification_metrics(scores, width, &labels, kind, prefix) {
            m.extend(c);
        }
        // `metrics = [f1, precision, recall]` name the macro averages.
        for k in ["precision", "recall", "f1"] {
            if let Some(v) = m.get(&format!("{prefix}{k}_macro")).copied() {
                m.insert(format!("{prefix}{k}"), v);
            }
        }
    } else if let Some(Array { data: ArrayData::F32(t), .. }) = ds.get(data::LABEL_INPUT) {
        let per = t.len() / ds.n.max(1);
        let targets: Vec<f32> = rows.iter().flat_map(|&r| t[r * per..(r + 1) * per].iter().copied()).collect();
        if let Ok(r) = metrics::regression_metrics(scores, &targets, prefix) {
            m.extend(r);
        }
    }
    m
}

fn fnv(s: &str) -> String {
    format!("{:016x}", crate::rng::name_hash(s))
}

/// Writes a checkpoint: parameters, states (with optimizer state), preprocessing and
/// metadata, atomically.
fn save(path: &Path, e: &Engine, pre: &Preprocessor, meta: BTreeMap<String, String>) -> Result<(), String> {
    let g = e.graph();
    let mut map = TensorMap::new();
    let f = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
    for (i, p) in g.params.iter().enumerate() {
        map.insert(p.name.clone(), HostTensor::f32(p.shape.iter().map(|&d| d as usize).collect(), f(e.param(i))));
    }
    for (i, s) in g.states.iter().enumerate() {
        map.insert(s.name.clone(), HostTensor::f32(s.shape.iter().map(|&d| d as usize).collect(), f(e.state(i))));
    }
    for (k, (shape, v)) in pre.to_tensors() {
        map.insert(k, HostTensor::f32(shape, f(v)));
    }
    crate::tensors::write(path, &map, Some(meta))
}

/// Loads parameters and states (by name) from a checkpoint into an engine; returns the
/// checkpoint's metadata.
fn load(path: &Path, e: &mut Engine) -> Result<BTreeMap<String, String>, String> {
    let bytes = std::fs::read(path).map_err(|err| format!("cannot read `{}`: {err}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|err| format!("`{}` is not a valid checkpoint: {err}", path.display()))?;
    let meta: BTreeMap<String, String> = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    let tensors = crate::tensors::read(path)?;
    let g = e.graph().clone();
    for (i, p) in g.params.iter().enumerate() {
        let t = tensors.get(&p.name).ok_or_else(|| format!("`{}` has no parameter `{}`", path.display(), p.name))?;
        let v: Vec<f32> = t.floats().ok_or("not floats")?.iter().map(|&x| x as f32).collect();
        e.set_param(i, &v).map_err(|m| format!("`{}`: {m}", path.display()))?;
    }
    for (i, s) in g.states.iter().enumerate() {
        if let Some(t) = tensors.get(&s.name) {
            let v: Vec<f32> = t.floats().ok_or("not floats")?.iter().map(|&x| x as f32).collect();
            e.set_state(i, &v).map_err(|m| format!("`{}`: {m}", path.display()))?;
        }
    }
    Ok(meta)
}

/// The preprocessing stored in a checkpoint.
pub fn checkpoint_preprocessor(path: &Path, input: &str) -> Result<Preprocessor, String> {
    let tensors = crate::tensors::read(path)?;
    let mut m = BTreeMap::new();
    for (k, t) in tensors {
        if k.starts_with("preprocess.") {
            let v: Vec<f32> = t.floats().unwrap_or(&[]).iter().map(|&x| x as f32).collect();
            m.insert(k, (t.shape, v));
        }
    }
    if m.is_empty() {
        return Ok(Preprocessor::none());
    }
    Preprocessor::from_tensors(&m, input)
}

/// Trains a program. `stop` is polled after every step (Ctrl-C): a checkpoint is
/// written and the report says `interrupted`.
pub fn train(
    p: &Program,
    base_dir: &Path,
    opts: &TrainOptions,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Event),
) -> Result<Report, String> {
    let t0 = std::time::Instant::now();
    let s = p.settings.clone();
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| format!("cannot create `{}`: {e}", opts.out_dir.display()))?;
    let prep = prepare(p, base_dir)?;
    let (ds, parts, pre) = (&prep.ds, &prep.parts, &prep.pre);
    let train_rows = &parts[0];
    let (val_rows, test_rows): (Option<&Vec<usize>>, &Vec<usize>) = match parts.len() {
        3 => (Some(&parts[1]), &parts[2]),
        2 => (None, &parts[1]),
        _ => (None, &parts[0]),
    };
    let lbfgs = s.optimizer.name == "lbfgs";
    let (step_graph, batch) = if lbfgs {
        // Full batch: the objective and every gradient, as outputs.
        let (g, obj) = update::objective(&p.train, &s)?;
        let wrt: Vec<_> = p.train.params.iter().map(|q| q.value).collect();
        let (mut g2, grads) = crate::autodiff::grad(&g, obj, &wrt)?;
        g2.outputs = vec![("objective".into(), obj)];
        for (q, gv) in p.train.params.iter().zip(grads) {
            g2.outputs.push((format!("grad.{}", q.name), gv));
        }
        (g2, train_rows.len())
    } else {
        (update::step_graph(&p.train, &s)?, (s.batch as usize).min(train_rows.len()).max(1))
    };
    let mut full = Engine::new(&step_graph, batch, opts.jit, opts.threads)?;
    let mut lbfgs_state = super::lbfgs::State::default();
    let mut last: Option<Engine> = None;
    let rem = train_rows.len() % batch;
    let mut eval_graph = p.eval.clone();
    eval_graph.outputs.truncate(1);
    let mut evaluator =
        Evaluator { engines: HashMap::new(), graph: eval_graph, batch: 256, jit: opts.jit, threads: opts.threads };
    // Parameters: initialized, or from the last checkpoint.
    let last_path = opts.out_dir.join("last.safetensors");
    let best_path = opts.out_dir.join("best.safetensors");
    let mut start_epoch = 0usize;
    let mut step: u64 = 0;
    let mut best = f64::INFINITY;
    let mut best_epoch: Option<usize> = None;
    let mut bad_epochs = 0usize;
    let mut log = MetricsLog::new();
    // A run stopped inside an epoch resumes at its next batch, with the epoch's running
    // sums, so the result is the uninterrupted run's, bit for bit.
    let mut resume_at: (usize, f64, usize, usize) = (0, 0.0, 0, 0);
    if opts.resume {
        let meta = load(&last_path, &mut full)?;
        let get = |k: &str| meta.get(k).cloned().unwrap_or_default();
        if get("nnc.source_hash") != fnv(&opts.source) {
            return Err(format!(
                "`{}` was written by a different version of this model; remove it or train without --resume",
                last_path.display()
            ));
        }
        start_epoch = get("nnc.epoch").parse().unwrap_or(0);
        step = get("nnc.step").parse().unwrap_or(0);
        best = get("nnc.best").parse().unwrap_or(f64::INFINITY);
        best_epoch = get("nnc.best_epoch").parse().ok();
        bad_epochs = get("nnc.bad_epochs").parse().unwrap_or(0);
        resume_at = (
            get("nnc.batch").parse().unwrap_or(0),
            get("nnc.epoch_loss").parse().unwrap_or(0.0),
            get("nnc.epoch_seen").parse().unwrap_or(0),
            get("nnc.epoch_correct").parse().unwrap_or(0),
        );
        log = read_log(&opts.out_dir.join("metrics.csv")).unwrap_or_default();
    } else {
        let (params, states) = crate::runtime::init::init_all(full.graph(), s.seed as u64);
        for (i, v) in params.iter().enumerate() {
            full.set_param(i, &v.iter().map(|&x| x as f32).collect::<Vec<_>>())?;
        }
        for (i, v) in states.iter().enumerate() {
            full.set_state(i, &v.iter().map(|&x| x as f32).collect::<Vec<_>>())?;
        }
    }
    let epochs = s.epochs as usize;
    let per_epoch = train_rows.len().div_ceil(batch) as u64;
    let total = per_epoch * epochs as u64;
    let base_lr = s.optimizer.num("lr").unwrap_or(1e-3);
    let hyper_idx: Vec<usize> = update::HYPER
        .iter()
        .map(|h| full.graph().inputs.iter().position(|i| i.name == *h).unwrap_or(usize::MAX))
        .collect();
    let labels_i32 = matches!(ds.get(data::LABEL_INPUT).map(|a| &a.data), Some(ArrayData::I32(_)));
    let mut stopped_early = false;
    let mut interrupted = false;
    let mut epochs_run = start_epoch;
    let meta = |epoch: usize, step: u64, best: f64, best_epoch: Option<usize>, bad: usize| {
        BTreeMap::from([
            ("nnc.model".to_string(), p.name.clone()),
            ("nnc.source_hash".to_string(), fnv(&opts.source)),
            ("nnc.epoch".to_string(), epoch.to_string()),
            ("nnc.step".to_string(), step.to_string()),
            ("nnc.seed".to_string(), s.seed.to_string()),
            ("nnc.best".to_string(), best.to_string()),
            ("nnc.best_epoch".to_string(), best_epoch.map(|b| b.to_string()).unwrap_or_default()),
            ("nnc.bad_epochs".to_string(), bad.to_string()),
        ])
    };
    for epoch in start_epoch..epochs {
        let te = std::time::Instant::now();
        let mut done_in_epoch = 0;
        let order = if lbfgs {
            Vec::new()
        } else {
            data::batches(train_rows, batch, Some(data::epoch_seed(s.seed as u64, epoch as u64)))
        };
        let (mut sum_loss, mut seen, mut correct) = (0.0f64, 0usize, 0usize);
        let mut skip = 0;
        if epoch == start_epoch && !lbfgs {
            (skip, sum_loss, seen, correct) = resume_at;
        }
        let mut lr = base_lr;
        if lbfgs {
            let (loss, evals) = lbfgs_epoch(&mut full, ds, train_rows, &s, &mut lbfgs_state)?;
            if !loss.is_finite() {
                return Err(format!("the objective became {loss} in epoch {}", epoch + 1));
            }
            step += evals;
            sum_loss = loss * train_rows.len() as f64;
            seen = train_rows.len();
            progress(Event::Batch { epoch, batch: 1, batches: 1, loss, lr });
            if stop.load(Ordering::SeqCst) {
                interrupted = true;
            }
        }
        for (bi, rows) in order.iter().enumerate().skip(skip) {
            let partial = rows.len() != batch;
            if partial && last.is_none() {
                last = Some(Engine::new(&step_graph, rem, opts.jit, opts.threads)?);
            }
            let engine: &mut Engine = if partial {
                let l = last.as_mut().ok_or("internal error: no partial-batch engine")?;
                sync(&full, l)?;
                l
            } else {
                &mut full
            };
            set_batch(engine, ds, rows)?;
            lr = schedule::rate(&s.schedule, base_lr, step, total);
            let hv = update::hyper_values(&s, lr, step + 1);
            for (k, &i) in hyper_idx.iter().enumerate() {
                if i != usize::MAX {
                    engine.set_scalar(i, hv[k] as f32)?;
                }
            }
            engine.run(s.seed as u64, step)?;
            let loss = f64::from(engine.loss()?);
            if !loss.is_finite() {
                let ck = if last_path.exists() {
                    format!("the last good checkpoint is `{}`", last_path.display())
                } else {
                    "no checkpoint was written yet".into()
                };
                return Err(format!(
                    "the loss became {loss} at step {step} (epoch {}, batch {}); {ck}",
                    epoch + 1,
                    bi + 1
                ));
            }
            sum_loss += loss * rows.len() as f64;
            seen += rows.len();
            if labels_i32 {
                if let (Ok(out), Some(labels)) = (engine.output(0), labels_of(ds, rows)) {
                    let k = out.len() / rows.len().max(1);
                    if k > 1 {
                        if let Ok(pred) = metrics::predicted_classes(&out, k, ScoreKind::Logits) {
                            correct += pred.iter().zip(&labels).filter(|(a, b)| a == b).count();
                        }
                    }
                }
            }
            if partial {
                let l = last.as_ref().ok_or("internal error: no partial-batch engine")?;
                sync(l, &mut full)?;
            }
            step += 1;
            progress(Event::Batch { epoch, batch: bi + 1, batches: order.len(), loss, lr });
            if stop.load(Ordering::SeqCst) {
                interrupted = true;
                done_in_epoch = bi + 1;
                break;
            }
        }
        if interrupted {
            let mut m = meta(epoch, step, best, best_epoch, bad_epochs);
            if done_in_epoch < order.len() {
                m.insert("nnc.batch".into(), done_in_epoch.to_string());
                m.insert("nnc.epoch_loss".into(), sum_loss.to_string());
                m.insert("nnc.epoch_seen".into(), seen.to_string());
                m.insert("nnc.epoch_correct".into(), correct.to_string());
                save(&last_path, &full, pre, m)?;
                break;
            }
            // Stopped after the epoch's last batch: finish the epoch (log, checkpoints)
            // and stop after it.
        }
        let secs = te.elapsed().as_secs_f64();
        let mut row: Vec<(String, f64)> = vec![
            ("epoch".into(), (epoch + 1) as f64),
            ("step".into(), step as f64),
            ("train_loss".into(), sum_loss / seen.max(1) as f64),
        ];
        if labels_i32 && correct > 0 {
            row.push(("train_accuracy".into(), correct as f64 / seen.max(1) as f64));
        }
        let monitored = if let Some(v) = val_rows {
            let (vl, scores, width) = evaluator.run(&full, ds, v)?;
            row.push(("val_loss".into(), vl));
            let vm = score_metrics(ds, v, &scores, width, "val_");
            if let Some(a) = vm.get("val_accuracy") {
                row.push(("val_accuracy".into(), *a));
            }
            vl
        } else {
            sum_loss / seen.max(1) as f64
        };
        row.push(("lr".into(), lr));
        row.push(("samples_per_sec".into(), seen as f64 / secs.max(1e-9)));
        row.push(("seconds".into(), t0.elapsed().as_secs_f64()));
        log.push(&row)?;
        log.write_csv(&opts.out_dir.join("metrics.csv"))?;
        epochs_run = epoch + 1;
        if monitored < best {
            best = monitored;
            best_epoch = Some(epoch + 1);
            bad_epochs = 0;
            save(&best_path, &full, pre, meta(epoch + 1, step, best, best_epoch, 0))?;
        } else {
            bad_epochs += 1;
        }
        save(&last_path, &full, pre, meta(epoch + 1, step, best, best_epoch, bad_epochs))?;
        progress(Event::Epoch(&EpochReport { epoch: epoch + 1, epochs, step, metrics: row }));
        if interrupted {
            break;
        }
        if s.early_stop.is_some_and(|p| bad_epochs >= p as usize) {
            stopped_early = true;
            break;
        }
    }
    let mut files = vec![last_path.clone(), best_path.clone(), opts.out_dir.join("metrics.csv")];
    if s.early_stop.is_some() && best_path.exists() && !interrupted {
        load(&best_path, &mut full)?;
    }
    let mut test = Metrics::new();
    let mut confusion = None;
    if !interrupted {
        let (tl, scores, width) = evaluator.run(&full, ds, test_rows)?;
        test.insert("test_loss".into(), tl);
        let m = score_metrics(ds, test_rows, &scores, width, "test_");
        let wanted: Vec<String> = s.metrics.iter().map(|k| format!("test_{k}")).collect();
        for (k, v) in m {
            if wanted.contains(&k) || k == "test_accuracy" || k == "test_mse" || k == "test_mae" {
                test.insert(k, v);
            }
        }
        if s.metrics.iter().any(|m| m == "confusion") && width > 1 {
            if let Some(labels) = labels_of(ds, test_rows) {
                confusion = metrics::confusion_matrix(&scores, width, &labels, ScoreKind::Logits)
                    .ok()
                    .map(|c| c.to_table(None));
            }
        }
        let curves = opts.out_dir.join("curves.png");
        if !log.is_empty() && crate::plot::plot_curves(&curves, &log, &format!("{} training", p.name)).is_ok() {
            files.push(curves);
        }
        // The decision boundary of a model with a 2-D input.
        if let Some(spec) = prep.specs.first() {
            if spec.per_sample_shape == [2] && labels_of(ds, train_rows).is_some() {
                let path = opts.out_dir.join("boundary.png");
                if boundary(&path, p, &full, &mut evaluator, ds, train_rows, &spec.name).is_ok() {
                    files.push(path);
                }
            }
        }
    }
    Ok(Report {
        test,
        confusion,
        epochs_run,
        best_epoch,
        stopped_early,
        interrupted,
        seconds: t0.elapsed().as_secs_f64(),
        files,
    })
}

/// One `train` epoch of L-BFGS: up to `max_iter` iterations on the whole training set.
/// Returns the final objective and the number of function evaluations.
fn lbfgs_epoch(
    e: &mut Engine,
    ds: &Dataset,
    rows: &[usize],
    s: &crate::settings::TrainSettings,
    st: &mut super::lbfgs::State,
) -> Result<(f64, u64), String> {
    set_batch(e, ds, rows)?;
    let g = e.graph().clone();
    let sizes: Vec<usize> = g.params.iter().map(|q| q.shape.iter().product::<i64>() as usize).collect();
    let mut x: Vec<f64> = (0..sizes.len()).flat_map(|i| e.param(i)).map(f64::from).collect();
    let mut evals = 0u64;
    let mut f = |x: &[f64]| -> Result<(f64, Vec<f64>), String> {
        let mut at = 0;
        for (i, &n) in sizes.iter().enumerate() {
            let v: Vec<f32> = x[at..at + n].iter().map(|&v| v as f32).collect();
            e.set_param(i, &v)?;
            at += n;
        }
        e.run(s.seed as u64, evals)?;
        evals += 1;
        let obj = f64::from(e.output(0)?.first().copied().unwrap_or(f32::NAN));
        let mut grad = Vec::with_capacity(x.len());
        for k in 0..sizes.len() {
            grad.extend(e.output(k + 1)?.into_iter().map(f64::from));
        }
        Ok((obj, grad))
    };
    let o = super::lbfgs::Options {
        lr: s.optimizer.num("lr").unwrap_or(1.0),
        history: s.optimizer.num("history").unwrap_or(10.0) as usize,
        max_iter: s.optimizer.num("max_iter").unwrap_or(20.0) as usize,
        tolerance_grad: 1e-7,
    };
    let value = super::lbfgs::minimize(&mut f, &mut x, st, &o)?;
    let mut at = 0;
    for (i, &n) in sizes.iter().enumerate() {
        let v: Vec<f32> = x[at..at + n].iter().map(|&v| v as f32).collect();
        e.set_param(i, &v)?;
        at += n;
    }
    Ok((value, evals))
}

#[allow(clippy::too_many_arguments)]
fn boundary(
    path: &Path,
    p: &Program,
    full: &Engine,
    evaluator: &mut Evaluator,
    ds: &Dataset,
    rows: &[usize],
    input: &str,
) -> Result<(), String> {
    let x = ds.get(input).and_then(Array::as_f32).ok_or("no features")?;
    let points: Vec<[f32; 2]> = rows.iter().map(|&r| [x[2 * r], x[2 * r + 1]]).collect();
    let labels = labels_of(ds, rows).ok_or("no labels")?;
    let classes = (labels.iter().copied().max().unwrap_or(1) + 1).max(2) as usize;
    // Predict on the grid with the eval graph (outputs only).
    let mut g = p.eval.clone();
    g.loss = None;
    g.outputs.truncate(1);
    let g = crate::simplify::drop_unused_inputs(&crate::simplify::dead_code(&g));
    let mut grid_eval =
        Evaluator { engines: HashMap::new(), graph: g, batch: 1000, jit: evaluator.jit, threads: evaluator.threads };
    let mut predict = |pts: &[[f32; 2]]| -> Result<Vec<i32>, String> {
        let flat: Vec<f32> = pts.iter().flat_map(|p| p.iter().copied()).collect();
        let arrays =
            BTreeMap::from([(input.to_string(), Array { shape: vec![pts.len(), 2], data: ArrayData::F32(flat) })]);
        let grid = Dataset { n: pts.len(), arrays };
        let all: Vec<usize> = (0..pts.len()).collect();
        let (_, scores, width) = grid_eval.run(full, &grid, &all)?;
        let kind = if width == 1 && scores.iter().all(|s| (0.0..=1.0).contains(s)) {
            ScoreKind::Probabilities
        } else {
            ScoreKind::Logits
        };
        metrics::predicted_classes(&scores, width.max(1), kind)
    };
    crate::plot::plot_decision_boundary(
        path,
        &points,
        &labels,
        classes,
        &mut predict,
        &format!("{}: decision boundary", p.name),
    )
}

/// Reads a `metrics.csv` written by `MetricsLog` (to continue it on `--resume`).
fn read_log(path: &Path) -> Result<MetricsLog, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty")?.split(',').collect();
    let mut log = MetricsLog::new();
    for l in lines {
        let row: Vec<(String, f64)> = header
            .iter()
            .zip(l.split(','))
            .filter_map(|(k, v)| v.trim().parse::<f64>().ok().map(|x| (k.to_string(), x)))
            .collect();
        log.push(&row)?;
    }
    Ok(log)
}

/// Evaluates a checkpoint on the test split: metrics and the confusion matrix.
pub fn evaluate(
    p: &Program,
    base_dir: &Path,
    checkpoint: &Path,
    jit: bool,
) -> Result<(Metrics, Option<String>), String> {
    let prep = prepare(p, base_dir)?;
    let mut ds = prep.ds;
    // Use the checkpoint's preprocessing (fitted when it was trained) on the raw data.
    let raw = data::load(p.settings.data.as_ref().ok_or("no data")?, base_dir, &prep.specs)?;
    ds.arrays = raw.arrays;
    if let Some(spec) = data::preprocess_input(&prep.specs) {
        checkpoint_preprocessor(checkpoint, &spec.name)?.apply_dataset(&mut ds)?;
    }
    let test_rows = prep.parts.last().ok_or("no split")?.clone();
    let mut eval_graph = p.eval.clone();
    eval_graph.outputs.truncate(1);
    let mut holder = Engine::new(&eval_graph, 1, false, 1)?;
    load(checkpoint, &mut holder)?;
    let mut ev = Evaluator { engines: HashMap::new(), graph: eval_graph, batch: 256, jit, threads: 1 };
    let (loss, scores, width) = ev.run(&holder, &ds, &test_rows)?;
    let mut m = score_metrics(&ds, &test_rows, &scores, width, "");
    m.insert("loss".into(), loss);
    let confusion = match labels_of(&ds, &test_rows) {
        Some(labels) if width > 1 => {
            metrics::confusion_matrix(&scores, width, &labels, ScoreKind::Logits).ok().map(|c| c.to_table(None))
        }
        _ => None,
    };
    Ok((m, confusion))
}

/// The input of `HostData` as an engine array (for library users feeding tensors).
pub fn array_of(t: &HostTensor) -> Array {
    match &t.data {
        HostData::F32(v) | HostData::F64(v) => {
            Array { shape: t.shape.clone(), data: ArrayData::F32(v.iter().map(|&x| x as f32).collect()) }
        }
        HostData::I32(v) => Array { shape: t.shape.clone(), data: ArrayData::I32(v.clone()) },
    }
}
