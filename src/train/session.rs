//! The run layer: a model's recipe with its compiled steps, trained on any rows and scored
//! on any rows. `train`, `cv`, `compare` and ensembles are loops over a `Session`.
//!
//! A session compiles the training step once per batch size it meets (the full batch and
//! the last partial batch of an epoch; folds of another size add at most one more) and
//! the scoring graph once per chunk size, and reuses them for every fit: a new fold or a
//! new ensemble member only resets the parameters (`init`). The parameters live in the
//! engine that ran last and are copied by name to the next one.
//!
//! Determinism: shuffling depends only on (seed, epoch), dropout on (seed, step) and
//! augmentation on (seed, epoch, row), so a fit resumed from its `Progress` continues
//! bit-identically.
//!
//! Augmentation (the `augment` setting) changes the training batches only: the augmented
//! input's rows are read raw (`augment_from`), augmented, then preprocessed
//! (`data::augment::batch`); validation and scoring read the preprocessed rows as they are.

use super::engine::{labels_of, set_arrays, set_batch, sync, Engine, Scorer};
use super::target::{self, Scores, Target};
use crate::compress::prune;
use crate::data::{self, Array, ArrayData, Dataset, Preprocessor};
use crate::dist::comm::{self, Communicator};
use crate::ir::{Graph, Program};
use crate::metrics::{self, ScoreKind};
use crate::optim::second_order::{self, Method, Objective};
use crate::optim::{schedule, update};
use crate::settings::augment::Plan;
use crate::tensors::{HostTensor, TensorMap};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a fit is: the epoch and step it continues from, the best monitored value, and
/// inside an interrupted epoch the batch and the epoch's running sums.
#[derive(Clone, Debug)]
pub struct Progress {
    pub epoch: usize,
    pub step: u64,
    pub best: f64,
    pub best_epoch: Option<usize>,
    pub bad_epochs: usize,
    pub batch: usize,
    pub epoch_loss: f64,
    pub epoch_seen: usize,
    pub epoch_correct: usize,
    /// The reduce-on-plateau state (a factor of 1 for other schedules).
    pub plateau: schedule::Plateau,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            epoch: 0,
            step: 0,
            best: f64::INFINITY,
            best_epoch: None,
            bad_epochs: 0,
            batch: 0,
            epoch_loss: 0.0,
            epoch_seen: 0,
            epoch_correct: 0,
            plateau: schedule::Plateau::default(),
        }
    }
}

/// What the fit does after an epoch, as the observer decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// End the fit now (a pruned trial): `End::Stopped`.
    Stop,
}

/// How a fit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Finished,
    /// Early stopping: the best epoch's parameters are restored.
    StoppedEarly,
    /// `stop` was set; the progress says where to resume.
    Interrupted,
    /// The observer ended the fit after an epoch (`Next::Stop`).
    Stopped,
}

/// What a fit reports while it runs. Every method has a default that does nothing.
pub trait Observer {
    fn batch(&mut self, _epoch: usize, _batch: usize, _batches: usize, _loss: f64, _lr: f64) {}
    /// After every epoch, with the epoch's log row (`epoch`, `step`, `train_loss`,
    /// `val_loss`, ...); `improved` says that the monitored value is the best so far.
    fn epoch(&mut self, _s: &Session, _p: &Progress, _row: &[(String, f64)], _improved: bool) -> Result<Next, String> {
        Ok(Next::Continue)
    }
    /// Stopped inside an epoch (`p.batch` batches done).
    fn interrupted(&mut self, _s: &Session, _p: &Progress) -> Result<(), String> {
        Ok(())
    }
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

/// A recipe with its compiled steps.
pub struct Session {
    /// The program as run: its settings, and the metrics target added as an output.
    pub program: Program,
    /// The metrics target, or why there is none.
    pub target: Result<Target, String>,
    /// What the target's scores are.
    pub kind: ScoreKind,
    backend: crate::runtime::backend::Backend,
    threads: usize,
    /// A full-batch host-loop optimizer (`TrainSettings::host_optimizer`): the step graph
    /// computes the objective and the gradients, and updates nothing.
    host: bool,
    step_graph: Graph,
    /// Hessian-vector products for `newton` and `newton_cg`: the gradient of
    /// <grad, v> (`autodiff::directional_graph`), compiled per batch size.
    hvp_graph: Option<Graph>,
    hvp_engines: HashMap<usize, Engine>,
    steps: HashMap<usize, Engine>,
    /// The batch size of the engine that holds the current parameters.
    current: usize,
    scorer: Scorer,
    /// The target without the loss (inputs without labels), made on first use.
    predictor: Option<Scorer>,
    lbfgs_state: crate::optim::lbfgs::State,
    /// BFGS's inverse Hessian (not saved in checkpoints: a resumed fit starts it afresh).
    second_state: second_order::State,
    best_snapshot: Option<TensorMap>,
    /// Validation metrics added to every epoch's row besides `val_loss`, `val_accuracy`
    /// and the monitored one (`watch`).
    watched: Vec<String>,
    /// Whether the teacher's frozen tensors are in the engines (they never change).
    teacher_loaded: bool,
    /// The `augment` setting, checked against the model's inputs.
    augment: Option<Augmenter>,
    /// A data-parallel run (`distribute`): the engines of `steps` then compile the
    /// gradient graph, and this holds the update.
    dist: Option<Dist>,
}

/// What augmenting a batch needs besides the plan: the augmented input's raw rows when
/// the fitted preprocessing transforms it (else the rows as fitted are raw), and that
/// preprocessing. `source` false: `augment_from` was not called yet.
struct Augmenter {
    plan: Plan,
    raw: Option<Array>,
    pre: Preprocessor,
    source: bool,
}

/// What a data-parallel session sums through.
struct Dist {
    comm: Box<dyn Communicator>,
    /// Compare a hash of the parameters across ranks after every epoch.
    check: bool,
    /// Start each bucket's sum without waiting (`Communicator::start_sum`); false: sum
    /// it, blocking, where it would start (what overlap hides is measured against it).
    overlap: bool,
    times: StepTimes,
}

/// Seconds spent in the parts of a data-parallel session's steps so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepTimes {
    pub steps: u64,
    /// The whole step (forward, backward, the gradient sums, the update).
    pub step: f64,
    /// Inside the gradient sums' starts (with overlap off: the whole blocking sums).
    pub sum_start: f64,
    /// Waiting for started sums (the communication the backward pass did not hide).
    pub sum_wait: f64,
    /// Summing the step's loss, counts and stop flag after the step.
    pub stats: f64,
}

impl Session {
    /// Compiles nothing yet: steps are compiled on first use, per batch size.
    /// The program comes from the front end (`pipeline`), which made its graphs
    /// quantization-aware when its recipe says so.
    pub fn new(p: &Program, backend: crate::runtime::backend::Backend, threads: usize) -> Result<Session, String> {
        if p.settings.quantize.as_ref().is_some_and(|c| c.name == "qat") && !p.qat {
            return Err("internal error: a `quantize = qat` program that the front end did not finish".into());
        }
        let target = target::target(p);
        let mut program = p.clone();
        let scoring = target::scoring_graph(p, target.as_ref().ok())?;
        let kind = match &target {
            Ok(t) => target::score_kind(&scoring, t),
            Err(_) => ScoreKind::Logits,
        };
        if let Ok(t) = &target {
            program.train = target::with_target_output(&p.train, t)?;
        }
        let s = &program.settings;
        let host = s.host_optimizer();
        let method = method_of(s);
        if let Some(m) = &method {
            let n: usize = program.train.params.iter().map(|q| q.shape.iter().product::<i64>() as usize).sum();
            second_order::check_size(m, n)?;
        }
        let hvp_graph = match method {
            Some(Method::Newton { .. } | Method::NewtonCg { .. }) => Some(hvp_graph(&program.train, s)?),
            _ => None,
        };
        let augment = crate::settings::augment::plan(s, &crate::settings::augment::inputs_of(&program.train))
            .map_err(|p| format!("{}: {}", p.message, p.help))?
            .map(|plan| Augmenter { plan, raw: None, pre: Preprocessor::none(), source: false });
        let step_graph =
            if host { objective_graph(&program.train, s)? } else { update::step_graph(&program.train, s)? };
        Ok(Session {
            augment,
            target,
            kind,
            backend,
            threads,
            host,
            step_graph,
            hvp_graph,
            hvp_engines: HashMap::new(),
            steps: HashMap::new(),
            current: 0,
            scorer: Scorer::new(scoring, 256, backend, threads),
            predictor: None,
            lbfgs_state: Default::default(),
            second_state: Default::default(),
            best_snapshot: None,
            watched: Vec::new(),
            teacher_loaded: false,
            dist: None,
            program,
        })
    }

    /// Makes this session one rank of a data-parallel run over `comm`: each global batch
    /// is split into disjoint shards (`comm::shard`), the gradients of the ranks'
    /// shares of the loss are summed by `comm`, and every rank applies the same update.
    /// Call it before `init` or `load_tensors`. `check` compares a hash of the parameters
    /// across ranks after every epoch (an error when they differ).
    pub fn distribute(&mut self, comm: Box<dyn Communicator>, check: bool) -> Result<(), String> {
        self.distribute_with(comm, check, true)
    }

    /// `distribute`; with `overlap` false each gradient bucket is summed, blocking, where
    /// its sum would start (the same arithmetic; the baseline overlap is measured against).
    pub fn distribute_with(&mut self, comm: Box<dyn Communicator>, check: bool, overlap: bool) -> Result<(), String> {
        if !self.steps.is_empty() {
            return Err("internal error: distribute a session before it holds parameters".into());
        }
        if self.host {
            return Err(format!(
                "`{}` is a full-batch host loop: it does not run distributed (pick a compiled optimizer)",
                self.program.settings.optimizer.name
            ));
        }
        if !self.program.settings.augment.is_empty() {
            return Err("`augment` does not run distributed yet: train without it, or on one process".into());
        }
        if self.program.settings.log_grad_norms {
            return Err("`log_grad_norms` does not run distributed yet: leave it out, or train on one process".into());
        }
        if self.program.settings.prune.is_some() {
            return Err(
                "`prune` during training does not run distributed yet: train without it, then `nnc prune`".into()
            );
        }
        self.step_graph = update::distributed_step_graph(&self.program.train, &self.program.settings)?;
        self.dist = Some(Dist { comm, check, overlap, times: StepTimes::default() });
        Ok(())
    }

    /// This session's rank and the number of ranks (0 and 1 unless distributed).
    pub fn rank(&self) -> (usize, usize) {
        self.dist.as_ref().map(|d| (d.comm.rank(), d.comm.size())).unwrap_or((0, 1))
    }

    /// Where a data-parallel session's steps spent their time.
    pub fn step_times(&self) -> Option<StepTimes> {
        self.dist.as_ref().map(|d| d.times)
    }

    /// Adds a validation metric (`val_f1`, ...) to every epoch's row, for an observer
    /// that watches it (a tuner's pruner).
    pub fn watch(&mut self, metric: &str) {
        if !self.watched.iter().any(|m| m == metric) {
            self.watched.push(metric.to_string());
        }
    }

    /// Gives augmentation its raw rows: `raw` is the data set before `pre` (the fitted
    /// preprocessing) was applied to the rows that `fit` reads. Nothing to do without an
    /// `augment` setting; needed with one when the preprocessing is not `none`.
    pub fn augment_from(&mut self, raw: &Dataset, pre: &Preprocessor) -> Result<(), String> {
        if let Some(a) = &mut self.augment {
            a.raw = if pre.kind != data::PreprocessKind::None && pre.input == a.plan.input {
                Some(raw.get(&a.plan.input).ok_or_else(|| format!("the data has no array `{}`", a.plan.input))?.clone())
            } else {
                None
            };
            a.pre = pre.clone();
            a.source = true;
        }
        Ok(())
    }

    /// Whether the training batches are augmented.
    pub fn augments(&self) -> bool {
        self.augment.is_some()
    }

    /// The arrays of a training batch: `ds`'s rows, the augmented input augmented.
    fn training_batch(
        &self,
        ds: &Dataset,
        rows: &[usize],
        epoch: usize,
    ) -> Result<Option<std::collections::BTreeMap<String, Array>>, String> {
        let Some(a) = &self.augment else { return Ok(None) };
        if !a.source && self.program.settings.preprocess.name != "none" {
            return Err(
                "internal error: augmentation with preprocessing needs the raw rows (Session::augment_from)".into()
            );
        }
        let mut arrays = data::gather(ds, rows);
        let src = match &a.raw {
            Some(r) => r,
            None => ds.get(&a.plan.input).ok_or_else(|| format!("the data has no array `{}`", a.plan.input))?,
        };
        let none = Preprocessor::none();
        let pre = if a.raw.is_some() { &a.pre } else { &none };
        let seed = self.program.settings.seed as u64;
        arrays.insert(a.plan.input.clone(), data::augment::batch(&a.plan, src, rows, seed, epoch as u64, pre)?);
        Ok(Some(arrays))
    }

    /// The step engine for `batch` rows, holding the current parameters.
    fn engine(&mut self, batch: usize) -> Result<&mut Engine, String> {
        if !self.steps.contains_key(&batch) {
            let e = Engine::new(&self.step_graph, batch, self.backend, self.threads)?;
            self.steps.insert(batch, e);
        }
        if self.current != batch && self.current != 0 {
            let mut to = self.steps.remove(&batch).ok_or("internal error: no engine")?;
            let from = self.steps.get(&self.current).ok_or("internal error: no current engine")?;
            sync(from, &mut to)?;
            self.steps.insert(batch, to);
        }
        self.current = batch;
        self.steps.get_mut(&batch).ok_or_else(|| "internal error: no engine".into())
    }

    /// The engine holding the current parameters (compiled for `batch` if none is yet).
    fn holder(&mut self, batch: usize) -> Result<&mut Engine, String> {
        let b = if self.current == 0 { batch } else { self.current };
        self.engine(b)
    }

    /// What the metrics are computed on, or why they are not: a note for the user.
    pub fn target_note(&self) -> String {
        match &self.target {
            Ok(t) => format!("metrics are computed on {}", t.why),
            Err(why) => format!("metrics other than the loss are not computed: {why}"),
        }
    }

    /// How many training steps were compiled (one per batch size met so far).
    pub fn compiled_steps(&self) -> usize {
        self.steps.len()
    }

    /// The training batch size for `rows` training rows in epoch `epoch` (0-based).
    pub fn batch_for(&self, rows: usize, epoch: usize) -> usize {
        if self.host {
            rows.max(1)
        } else {
            (self.program.settings.batch_in(epoch) as usize).min(rows).max(1)
        }
    }

    /// The optimizer steps of a whole fit on `rows` training rows (one per batch; the
    /// host-loop optimizers count their epochs).
    pub fn total_steps(&self, rows: usize) -> u64 {
        let epochs = self.program.settings.epochs as usize;
        (0..epochs).map(|e| rows.div_ceil(self.batch_for(rows, e)) as u64).sum()
    }

    /// Fresh parameters and states from the initializers (seeded), and fresh optimizer
    /// state: the start of a new fit.
    pub fn init(&mut self, seed: u64, train_rows: usize) -> Result<(), String> {
        let b = self.batch_for(train_rows, 0);
        let loaded = self.teacher_loaded;
        let e = self.engine(b)?;
        let (params, states) = crate::runtime::init::init_all(e.graph(), seed);
        for (i, v) in params.iter().enumerate() {
            e.set_param(i, &v.iter().map(|&x| x as f32).collect::<Vec<_>>())?;
        }
        let g = e.graph().clone();
        for (i, v) in states.iter().enumerate() {
            if g.states[i].teacher_source().is_none() {
                e.set_state(i, &v.iter().map(|&x| x as f32).collect::<Vec<_>>())?;
            }
        }
        if !loaded {
            for (i, v) in super::teacher::load(&g)? {
                e.set_state(i, &v)?;
            }
        }
        self.teacher_loaded = true;
        self.lbfgs_state = Default::default();
        self.second_state = Default::default();
        self.best_snapshot = None;
        Ok(())
    }

    /// Every parameter and state (optimizer state included), by name; a teacher's frozen
    /// tensors are not among them (they stay in the teacher's checkpoint).
    pub fn tensors(&self) -> Result<TensorMap, String> {
        let e = self.steps.get(&self.current).ok_or("no parameters yet: call init or load_tensors first")?;
        let g = e.graph();
        let mut map = TensorMap::new();
        let f = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
        for (i, p) in g.params.iter().enumerate() {
            map.insert(p.name.clone(), HostTensor::f32(p.shape.iter().map(|&d| d as usize).collect(), f(e.param(i))));
        }
        for (i, s) in g.states.iter().enumerate() {
            if s.teacher_source().is_some() {
                continue;
            }
            map.insert(s.name.clone(), HostTensor::f32(s.shape.iter().map(|&d| d as usize).collect(), f(e.state(i))));
        }
        Ok(map)
    }

    /// The step graph's parameters and states (what `tensors` returns).
    pub fn step_graph(&self) -> &Graph {
        &self.step_graph
    }

    /// Sets parameters and states by name; `all_states` requires every state (optimizer
    /// state included, for resuming), else only the model's own states are read.
    pub fn load_tensors(&mut self, t: &TensorMap, train_rows: usize) -> Result<(), String> {
        let b = self.batch_for(train_rows, 0);
        let loaded = self.teacher_loaded;
        let e = self.holder(b)?;
        let g = e.graph().clone();
        for (i, p) in g.params.iter().enumerate() {
            if let Some(v) = t.get(&p.name).and_then(HostTensor::floats) {
                e.set_param(i, &v.iter().map(|&x| x as f32).collect::<Vec<_>>())?;
            }
        }
        for (i, s) in g.states.iter().enumerate() {
            if let Some(v) = t.get(&s.name).and_then(HostTensor::floats) {
                e.set_state(i, &v.iter().map(|&x| x as f32).collect::<Vec<_>>())?;
            }
        }
        // A teacher's tensors come from its own checkpoint (read once per session).
        if !loaded && g.has_teacher() {
            for (i, v) in super::teacher::load(&g)? {
                e.set_state(i, &v)?;
            }
        }
        self.teacher_loaded = true;
        Ok(())
    }

    /// Prunes the current weights to `sparsity` by magnitude (`compress::prune`): pruned
    /// weights become exact zeros and, when the step keeps masks (a `prune` setting),
    /// their masks zeros, so that training keeps them zero. Returns the sparsity reached
    /// over the prunable weights.
    /// `only` names the weights to prune (all of them when empty).
    pub fn prune_to(
        &mut self,
        sparsity: f64,
        scope: prune::Scope,
        structure: prune::Structure,
        only: &[String],
    ) -> Result<f64, String> {
        let cur = self.current;
        let e = self.steps.get_mut(&cur).ok_or("prune before init: no parameters")?;
        let g = e.graph().clone();
        let idx: Vec<usize> = (0..g.params.len())
            .filter(|&i| g.params[i].is_weight() && (only.is_empty() || only.contains(&g.params[i].name)))
            .collect();
        if let Some(bad) = only.iter().find(|n| !g.params.iter().any(|p| p.is_weight() && p.name == **n)) {
            let names: Vec<&str> = g.params.iter().filter(|p| p.is_weight()).map(|p| p.name.as_str()).collect();
            return Err(format!(
                "`{bad}` is not a weight of the model (parameters of rank >= 2: {})",
                names.join(", ")
            ));
        }
        if idx.is_empty() {
            return Err("the model has no weights (parameters of rank >= 2) to prune".into());
        }
        let values: Vec<Vec<f32>> = idx.iter().map(|&i| e.param(i)).collect();
        let shapes: Vec<Vec<usize>> =
            idx.iter().map(|&i| g.params[i].shape.iter().map(|&d| d as usize).collect()).collect();
        let ws: Vec<prune::Weight> = idx
            .iter()
            .zip(&values)
            .zip(&shapes)
            .map(|((&i, v), sh)| prune::Weight { name: &g.params[i].name, shape: sh, values: v })
            .collect();
        let masks = prune::masks(&ws, sparsity, scope, structure)?;
        let mut kept = Vec::with_capacity(idx.len());
        for ((&i, v), m) in idx.iter().zip(&values).zip(&masks) {
            let w: Vec<f32> = v.iter().zip(m).map(|(&x, &k)| if k == 0.0 { 0.0 } else { x }).collect();
            e.set_param(i, &w)?;
            let name = format!("{}{}", prune::MASK_PREFIX, g.params[i].name);
            if let Some(si) = g.states.iter().position(|st| st.name == name) {
                e.set_state(si, m)?;
            }
            kept.push(w);
        }
        self.best_snapshot = None;
        Ok(prune::sparsity_of(kept.iter().map(Vec::as_slice)))
    }

    /// The fraction of exact zeros among the current parameters that `which` selects.
    pub fn zero_fraction(&self, which: impl Fn(&crate::ir::ParamDecl) -> bool) -> Result<f64, String> {
        let e = self.steps.get(&self.current).ok_or("no parameters yet: call init or load_tensors first")?;
        let g = e.graph();
        let ws: Vec<Vec<f32>> = (0..g.params.len()).filter(|&i| which(&g.params[i])).map(|i| e.param(i)).collect();
        Ok(prune::sparsity_of(ws.iter().map(Vec::as_slice)))
    }

    /// The fraction of exact zeros among the current weights (parameters of rank >= 2).
    pub fn sparsity(&self) -> Result<f64, String> {
        let e = self.steps.get(&self.current).ok_or("no parameters yet: call init or load_tensors first")?;
        let g = e.graph();
        let ws: Vec<Vec<f32>> = (0..g.params.len()).filter(|&i| g.params[i].is_weight()).map(|i| e.param(i)).collect();
        Ok(prune::sparsity_of(ws.iter().map(Vec::as_slice)))
    }

    /// The loss and the target's values over `rows` (eval mode, chunks of 256).
    ///
    /// In a distributed session this is a collective (every rank calls it with the same
    /// rows): the chunks are split over ranks (`comm::block`: whole chunks, so each
    /// row is scored by the same compiled step as in one process), each rank scores its
    /// own, and the chunks' loss sums and the target's values are gathered to every rank
    /// (summed into zero buffers, which is exact). The loss is then added up chunk by
    /// chunk in the order one process adds it, so every rank returns the scores one
    /// process would, bit for bit, and every metric computed from them (accuracy,
    /// confusion counts, AUC, R², ...) is one process's.
    pub fn score(&mut self, ds: &Dataset, rows: &[usize]) -> Result<Scores, String> {
        let cur = self.current;
        let holder = self.steps.get(&cur).ok_or("score before init: no parameters")?;
        let Some(d) = self.dist.as_mut() else {
            let (loss, values, width) = self.scorer.run(holder, ds, rows)?;
            return Ok(Scores { loss, values, width });
        };
        let chunk = self.scorer.batch.max(1);
        let chunks = rows.len().div_ceil(chunk);
        let mine = comm::block(chunks, d.comm.rank(), d.comm.size());
        let (from, to) = ((mine.start * chunk).min(rows.len()), (mine.end * chunk).min(rows.len()));
        let (sums, values, width) = self.scorer.run_chunks(holder, ds, &rows[from..to])?;
        // The chunks' loss sums at their places, then the rows' width (from the ranks
        // that scored rows) and how many ranks did.
        let mut head = vec![0.0f64; chunks + 2];
        head[mine.clone()].copy_from_slice(&sums);
        if to > from {
            head[chunks] = width as f64;
            head[chunks + 1] = 1.0;
        }
        d.comm.allreduce_sum_f64(&mut head)?;
        let loss = head[..chunks].iter().fold(0.0, |a, s| a + s) / rows.len().max(1) as f64;
        let width = if head[chunks + 1] > 0.0 { (head[chunks] / head[chunks + 1]).round() as usize } else { 0 };
        if values.len() != (to - from) * width {
            return Err(format!("internal error: ranks score rows of different widths ({width} and {})", values.len()));
        }
        let mut all = vec![0.0f32; rows.len() * width];
        all[from * width..to * width].copy_from_slice(&values);
        d.comm.allreduce_sum_f32(&mut all)?;
        Ok(Scores { loss, values: all, width })
    }

    /// The target's values over rows of inputs only (no labels needed).
    pub fn predict(&mut self, ds: &Dataset, rows: &[usize]) -> Result<Scores, String> {
        if self.predictor.is_none() {
            let mut g = self.scorer.graph.clone();
            g.loss = None;
            let g = crate::simplify::drop_unused_inputs(&crate::simplify::dead_code(&g));
            self.predictor = Some(Scorer::new(g, 1000, self.backend, self.threads));
        }
        let holder = self.steps.get(&self.current).ok_or("predict before init: no parameters")?;
        let pr = self.predictor.as_mut().ok_or("internal error: no predictor")?;
        let (_, values, width) = pr.run(holder, ds, rows)?;
        Ok(Scores { loss: 0.0, values, width })
    }

    /// Trains on `train` rows from `p` (a fresh `Progress` after `init`, or a resumed one)
    /// to the recipe's last epoch, scoring `val` rows after every epoch.
    pub fn fit(
        &mut self,
        ds: &Dataset,
        train: &[usize],
        val: Option<&[usize]>,
        p: &mut Progress,
        stop: &AtomicBool,
        obs: &mut dyn Observer,
    ) -> Result<End, String> {
        let s = self.program.settings.clone();
        let epochs = s.epochs as usize;
        let labels_i32 = matches!(ds.get(data::LABEL_INPUT).map(|a| &a.data), Some(ArrayData::I32(_)));
        let mut cx = EpochCx {
            // Newton's methods take the unit step (scaled by their line search).
            base_lr: s.optimizer.num("lr").unwrap_or(if s.host_optimizer() { 1.0 } else { 1e-3 }),
            total: self.total_steps(train.len()),
            count_correct: labels_i32,
            target_name: self.target.as_ref().ok().map(|t| t.output.clone()),
            // `log_grad_norms`: per parameter, the output indices of its squared gradient,
            // update and parameter norms, and the epoch's sums of norms and ratios.
            norm_outputs: if s.log_grad_norms && !self.host { monitor_outputs(&self.step_graph)? } else { vec![] },
            norm_sums: Vec::new(),
            norm_steps: 0,
            s,
        };
        cx.norm_sums = vec![(0.0, 0.0, 0); cx.norm_outputs.len()];
        let t0 = std::time::Instant::now();
        let mut end = End::Finished;
        while p.epoch < epochs {
            let epoch = p.epoch;
            let te = std::time::Instant::now();
            let seen_before = p.epoch_seen;
            // One epoch's steps, by the strategy of this session.
            let run = match self.strategy() {
                Strategy::HostLoop => self.epoch_host(&cx, ds, train, p, stop, obs)?,
                Strategy::Distributed => self.epoch_distributed(&cx, ds, train, p, stop, obs)?,
                Strategy::Local => self.epoch_local(&mut cx, ds, train, p, stop, obs)?,
            };
            if run.interrupted && p.batch < run.batches {
                self.average_states()?;
                obs.interrupted(self, p)?;
                return Ok(End::Interrupted);
            }
            // A full epoch (or stopped after its last batch: finish it, then stop).
            self.average_states()?;
            self.check_params(epoch)?;
            let (sparsity, pruning_done) = self.epoch_pruning(&cx.s, epoch)?;
            let secs = te.elapsed().as_secs_f64();
            let (mut row, monitored) = self.epoch_row(&cx, ds, val, p, (sparsity, run.hvps))?;
            row.push(("lr".into(), run.lr));
            row.push(("samples_per_sec".into(), (p.epoch_seen - seen_before) as f64 / secs.max(1e-9)));
            row.push(("seconds".into(), t0.elapsed().as_secs_f64()));
            cx.drain_norms(&mut row);
            p.epoch = epoch + 1;
            p.batch = 0;
            p.epoch_loss = 0.0;
            p.epoch_seen = 0;
            p.epoch_correct = 0;
            let s = &cx.s;
            let improved = pruning_done && s.improves(monitored, p.best, p.best_epoch.is_some());
            p.plateau.observe(&s.schedule, monitored, s.maximize(), cx.base_lr);
            if improved {
                p.best = monitored;
                p.best_epoch = Some(epoch + 1);
                p.bad_epochs = 0;
                if s.early_stop.is_some() {
                    self.best_snapshot = Some(self.tensors()?);
                }
            } else {
                p.bad_epochs += 1;
            }
            if obs.epoch(self, p, &row, improved)? == Next::Stop {
                end = End::Stopped;
                break;
            }
            if run.interrupted {
                end = End::Interrupted;
                break;
            }
            if s.early_stop.is_some_and(|pat| p.bad_epochs >= pat as usize) {
                end = End::StoppedEarly;
                break;
            }
        }
        if end != End::Interrupted && cx.s.early_stop.is_some() {
            if let Some(best) = self.best_snapshot.take() {
                self.load_tensors(&best, train.len())?;
            }
        }
        Ok(end)
    }

    /// How this session's steps run.
    fn strategy(&self) -> Strategy {
        if self.host {
            Strategy::HostLoop
        } else if self.dist.is_some() {
            Strategy::Distributed
        } else {
            Strategy::Local
        }
    }

    /// A host-loop optimizer's epoch: its full-batch iterations on the compiled objective.
    fn epoch_host(
        &mut self,
        cx: &EpochCx,
        ds: &Dataset,
        train: &[usize],
        p: &mut Progress,
        stop: &AtomicBool,
        obs: &mut dyn Observer,
    ) -> Result<EpochRun, String> {
        let (s, epoch, lr) = (&cx.s, p.epoch, cx.base_lr);
        let batch = self.batch_for(train.len(), epoch);
        let max_iter = s.optimizer.num("max_iter").unwrap_or(20.0) as usize;
        // Progress per function evaluation: a full-batch iteration can take seconds.
        let mut each = |evals: u64, obj: f64| obs.batch(epoch, evals as usize, max_iter, obj, lr);
        let (loss, evals, products) = self.host_epoch(batch, ds, train, s, p.step, &mut each)?;
        // Hessian-vector products of the epoch (Newton, Newton-CG).
        let hvps = self.hvp_graph.is_some().then_some(products);
        if !loss.is_finite() {
            return Err(format!("the objective became {loss} in epoch {}", epoch + 1));
        }
        p.step += evals;
        p.epoch_loss = loss * train.len() as f64;
        p.epoch_seen = train.len();
        obs.batch(epoch, 1, 1, loss, lr);
        Ok(EpochRun { lr, interrupted: stop.load(Ordering::SeqCst), batches: 0, hvps })
    }

    /// A data-parallel epoch: each step on this rank's shard, gradients summed over ranks.
    fn epoch_distributed(
        &mut self,
        cx: &EpochCx,
        ds: &Dataset,
        train: &[usize],
        p: &mut Progress,
        stop: &AtomicBool,
        obs: &mut dyn Observer,
    ) -> Result<EpochRun, String> {
        let (s, epoch) = (&cx.s, p.epoch);
        let order = self.epoch_order(s, train, epoch);
        let mut run = EpochRun { lr: cx.base_lr, interrupted: false, batches: order.len(), hvps: None };
        for (bi, rows) in order.iter().enumerate().skip(p.batch) {
            let step = p.step;
            run.lr = schedule::rate_at(s, cx.base_lr, step, cx.total, p.plateau.scale);
            let hv = update::hyper_values(s, run.lr, step + 1);
            let count = if cx.count_correct { cx.target_name.as_deref() } else { None };
            let r = self.dist_step(ds, rows, &hv, (s.seed as u64, step), count, stop.load(Ordering::SeqCst))?;
            let loss = r.loss_sum / rows.len().max(1) as f64;
            finite_loss(loss, step, epoch, bi)?;
            p.epoch_loss += r.loss_sum;
            p.epoch_seen += rows.len();
            p.epoch_correct += r.correct;
            p.step += 1;
            obs.batch(epoch, bi + 1, order.len(), loss, run.lr);
            if r.stop {
                run.interrupted = true;
                p.batch = bi + 1;
                break;
            }
        }
        Ok(run)
    }

    /// An epoch of compiled steps in this process.
    fn epoch_local(
        &mut self,
        cx: &mut EpochCx,
        ds: &Dataset,
        train: &[usize],
        p: &mut Progress,
        stop: &AtomicBool,
        obs: &mut dyn Observer,
    ) -> Result<EpochRun, String> {
        let epoch = p.epoch;
        let order = self.epoch_order(&cx.s, train, epoch);
        let mut run = EpochRun { lr: cx.base_lr, interrupted: false, batches: order.len(), hvps: None };
        for (bi, rows) in order.iter().enumerate().skip(p.batch) {
            let step = p.step;
            let s = &cx.s;
            let augmented = self.training_batch(ds, rows, epoch)?;
            let e = self.engine(rows.len())?;
            match &augmented {
                Some(arrays) => set_arrays(e, arrays)?,
                None => set_batch(e, ds, rows)?,
            }
            run.lr = schedule::rate_at(s, cx.base_lr, step, cx.total, p.plateau.scale);
            let hv = update::hyper_values(s, run.lr, step + 1);
            for (k, h) in update::HYPER.iter().enumerate() {
                if let Some(i) = e.graph().inputs.iter().position(|inp| inp.name == *h) {
                    e.set_scalar(i, hv[k] as f32)?;
                }
            }
            e.run(s.seed as u64, step)?;
            let loss = f64::from(e.loss()?);
            finite_loss(loss, step, epoch, bi)?;
            p.epoch_loss += loss * rows.len() as f64;
            p.epoch_seen += rows.len();
            if !cx.norm_outputs.is_empty() {
                for ((_, [gi, ui, pi]), sum) in cx.norm_outputs.iter().zip(cx.norm_sums.iter_mut()) {
                    let at = |k: usize| -> Result<f64, String> {
                        Ok(f64::from(e.output(k)?.first().copied().unwrap_or(f32::NAN)))
                    };
                    let (g2, u2, p2) = (at(*gi)?, at(*ui)?, at(*pi)?);
                    sum.0 += g2.sqrt();
                    // A parameter at exactly 0 (a bias before its first step) has no ratio.
                    if p2 > 0.0 {
                        sum.1 += u2.sqrt() / p2.sqrt();
                        sum.2 += 1;
                    }
                }
                cx.norm_steps += 1;
            }
            if cx.count_correct {
                if let Some(name) = &cx.target_name {
                    let k = e.graph().outputs.iter().position(|(n, _)| n == name);
                    if let (Some(k), Some(labels)) = (k, labels_of(ds, rows)) {
                        let out = e.output(k)?;
                        let w = out.len() / rows.len().max(1);
                        if let Ok(pred) = metrics::predicted_classes(&out, w.max(1), self.kind) {
                            p.epoch_correct += pred.iter().zip(&labels).filter(|(a, b)| a == b).count();
                        }
                    }
                }
            }
            p.step += 1;
            obs.batch(epoch, bi + 1, order.len(), loss, run.lr);
            if stop.load(Ordering::SeqCst) {
                run.interrupted = true;
                p.batch = bi + 1;
                break;
            }
        }
        Ok(run)
    }

    /// The batches of an epoch, shuffled by its seed.
    fn epoch_order(&self, s: &crate::settings::TrainSettings, train: &[usize], epoch: usize) -> Vec<Vec<usize>> {
        let batch = self.batch_for(train.len(), epoch);
        data::batches(train, batch, Some(data::epoch_seed(s.seed as u64, epoch as u64)))
    }

    /// Gradual pruning after a full epoch, before it is scored: the sparsity reached
    /// (or proximal l1's share of exact zeros), and whether the final sparsity is (the
    /// best epoch is chosen among those at it).
    fn epoch_pruning(
        &mut self,
        s: &crate::settings::TrainSettings,
        epoch: usize,
    ) -> Result<(Option<f64>, bool), String> {
        let mut sparsity = None;
        let mut pruning_done = true;
        if let Some(pr) = s.prune.as_ref().filter(|c| c.name == "gradual") {
            let start = pr.num("start").unwrap_or(1.0) as usize;
            let last = pr.num("end").unwrap_or(1.0) as usize;
            let scope = match pr.arg("scope") {
                Some(crate::ir::recipe::Lit::Str(x)) | Some(crate::ir::recipe::Lit::Name(x)) => prune::Scope::parse(x)?,
                _ => prune::Scope::Global,
            };
            let target = prune::gradual_sparsity(pr.num("final").unwrap_or(0.0), start, last, epoch + 1);
            if epoch + 1 >= start && epoch < last {
                sparsity = Some(self.prune_to(target, scope, prune::Structure::Weights, &[])?);
            } else {
                sparsity = Some(self.sparsity()?);
            }
            pruning_done = epoch + 1 >= last;
        }
        // Proximal l1 makes exact zeros: their share among the decayed parameters.
        if sparsity.is_none() && s.l1_proximal && s.l1 > 0.0 {
            sparsity = Some(self.zero_fraction(|q| q.decay)?);
        }
        Ok((sparsity, pruning_done))
    }

    /// An epoch's log row up to the monitored metric (scoring the validation rows), and
    /// the monitored value.
    fn epoch_row(
        &mut self,
        cx: &EpochCx,
        ds: &Dataset,
        val: Option<&[usize]>,
        p: &Progress,
        (sparsity, hvps): (Option<f64>, Option<u64>),
    ) -> Result<(Vec<(String, f64)>, f64), String> {
        let monitor = cx.s.monitor();
        let train_loss = p.epoch_loss / p.epoch_seen.max(1) as f64;
        let mut row: Vec<(String, f64)> = vec![
            ("epoch".into(), (p.epoch + 1) as f64),
            ("step".into(), p.step as f64),
            ("train_loss".into(), train_loss),
        ];
        if cx.count_correct && cx.target_name.is_some() && !self.host {
            row.push(("train_accuracy".into(), p.epoch_correct as f64 / p.epoch_seen.max(1) as f64));
        }
        if let Some(sp) = sparsity {
            row.push(("sparsity".into(), sp));
        }
        if let Some(h) = hvps {
            row.push(("hvps".into(), h as f64));
        }
        if let Some(v) = val {
            let sc = self.score(ds, v)?;
            row.push(("val_loss".into(), sc.loss));
            let ev = target::report(ds, v, &sc, self.kind, "val_", &[]);
            let mut wanted = vec!["val_accuracy".to_string(), monitor.clone()];
            wanted.extend(self.watched.iter().cloned());
            for m in wanted {
                if let Some(a) = ev.all.get(&m) {
                    if !row.iter().any(|(k, _)| *k == m) {
                        row.push((m, *a));
                    }
                }
            }
        }
        let monitored = match row.iter().find(|(k, _)| *k == monitor) {
            Some((_, v)) => *v,
            None => {
                let have: Vec<&str> = row
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .filter(|k| k.starts_with(monitor.get(..4).unwrap_or("")))
                    .collect();
                return Err(format!(
                    "`monitor = {monitor}`: the epoch has no such metric (it has {}); the validation metrics are those \
                     `nnc eval` prints, with `val_` in front",
                    have.join(", ")
                ));
            }
        };
        Ok((row, monitored))
    }
}

/// A step's loss, refused when it is not finite (where: the step, the epoch and batch
/// from 1).
fn finite_loss(loss: f64, step: u64, epoch: usize, batch: usize) -> Result<(), String> {
    if loss.is_finite() {
        return Ok(());
    }
    Err(format!("the loss became {loss} at step {step} (epoch {}, batch {})", epoch + 1, batch + 1))
}

/// How a session's steps run: a host loop's full-batch iterations, data-parallel steps
/// over ranks, or compiled steps in this process.
enum Strategy {
    HostLoop,
    Distributed,
    Local,
}

/// What every epoch of a fit shares.
struct EpochCx {
    s: crate::settings::TrainSettings,
    base_lr: f64,
    /// Steps of the whole fit (for the schedule).
    total: u64,
    /// The labels are classes: count the training batches' right predictions.
    count_correct: bool,
    target_name: Option<String>,
    /// `log_grad_norms`: (parameter, [gradient, update, parameter] output indices).
    norm_outputs: Vec<(String, [usize; 3])>,
    /// (sum of gradient norms, sum of update ratios, steps with a nonzero parameter)
    norm_sums: Vec<(f64, f64, usize)>,
    norm_steps: usize,
}

impl EpochCx {
    /// The epoch's means of the gradient norms and update ratios into its row (those
    /// since a resume, in a resumed epoch), and the sums reset.
    fn drain_norms(&mut self, row: &mut Vec<(String, f64)>) {
        if self.norm_steps > 0 {
            let n = self.norm_steps as f64;
            for ((name, _), sum) in self.norm_outputs.iter().zip(&self.norm_sums) {
                row.push((format!("{GRAD_NORM_PREFIX}{name}"), sum.0 / n));
            }
            for ((name, _), sum) in self.norm_outputs.iter().zip(&self.norm_sums) {
                let ratio = if sum.2 > 0 { sum.1 / sum.2 as f64 } else { f64::NAN };
                row.push((format!("{UPDATE_RATIO_PREFIX}{name}"), ratio));
            }
        }
        self.norm_sums.iter_mut().for_each(|x| *x = (0.0, 0.0, 0));
        self.norm_steps = 0;
    }
}

/// What an epoch's steps did: the last learning rate, whether the stop flag ended it
/// (after `p.batch` of `batches` batches), and a host loop's Hessian-vector products.
struct EpochRun {
    lr: f64,
    interrupted: bool,
    batches: usize,
    hvps: Option<u64>,
}

/// What one data-parallel step reports, summed over ranks.
struct DistStep {
    loss_sum: f64,
    correct: usize,
    /// Some rank was asked to stop (Ctrl-C): every rank stops after this step.
    stop: bool,
}

impl Session {
    /// One data-parallel step on the global batch `rows`: forward and backward on this
    /// rank's shard, the gradients (and the loss sum, the correct count when `count`
    /// names the target, and the stop flag) summed over ranks, then the update on the
    /// summed gradients.
    fn dist_step(
        &mut self,
        ds: &Dataset,
        rows: &[usize],
        hv: &[f64; 3],
        (seed, step): (u64, u64),
        count: Option<&str>,
        stop: bool,
    ) -> Result<DistStep, String> {
        let (rank, size) = self.rank();
        let local = comm::shard(rows, rank, size);
        let t0 = std::time::Instant::now();
        let mut stats = [0.0f64; 3];
        let kind = self.kind;
        // A rank without rows still runs the step (its sums and the update): on one row
        // with a share of 0, so its gradients are zeros, and its model states (batch-norm
        // statistics) put back as they were.
        let (feed, share): (&[usize], f64) = if local.is_empty() {
            (&rows[..rows.len().min(1)], 0.0)
        } else {
            (local, local.len() as f64 / rows.len() as f64)
        };
        if feed.is_empty() {
            return Err("internal error: a distributed step without rows".into());
        }
        let mut d = self.dist.take().ok_or("internal error: not a distributed session")?;
        let model_state_count = self.program.train.states.len();
        let r = (|| -> Result<(), String> {
            let e = self.engine(feed.len())?;
            set_batch(e, ds, feed)?;
            let g = e.graph().clone();
            if let Some(i) = g.inputs.iter().position(|inp| inp.name == update::SHARE) {
                e.set_scalar(i, share as f32)?;
            }
            for (k, h) in update::HYPER.iter().enumerate() {
                if let Some(i) = g.inputs.iter().position(|inp| inp.name == *h) {
                    e.set_scalar(i, hv[k] as f32)?;
                }
            }
            let model_states: Vec<(usize, Vec<f32>)> =
                if local.is_empty() { (0..model_state_count).map(|i| (i, e.state(i))).collect() } else { Vec::new() };
            let mut hook =
                comm::Hook { comm: d.comm.as_mut(), overlap: d.overlap, error: None, times: Default::default() };
            // Each rank draws its own dropout masks.
            e.run_with(seed ^ (rank as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15), step, &mut hook)?;
            d.times.sum_start += hook.times.start;
            d.times.sum_wait += hook.times.wait;
            for (i, v) in model_states {
                e.set_state(i, &v)?;
            }
            if !local.is_empty() {
                stats[0] = f64::from(e.loss()?) * local.len() as f64;
                if let Some(name) = count {
                    let k = g.outputs.iter().position(|(n, _)| n == name);
                    if let (Some(k), Some(labels)) = (k, labels_of(ds, local)) {
                        let out = e.output(k)?;
                        let w = out.len() / local.len();
                        if let Ok(pred) = metrics::predicted_classes(&out, w.max(1), kind) {
                            stats[1] = pred.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64;
                        }
                    }
                }
            }
            Ok(())
        })();
        stats[2] = if stop { 1.0 } else { 0.0 };
        let t1 = std::time::Instant::now();
        let r = r.and_then(|_| d.comm.allreduce_sum_f64(&mut stats));
        let t2 = std::time::Instant::now();
        d.times.steps += 1;
        d.times.step += (t1 - t0).as_secs_f64();
        d.times.stats += (t2 - t1).as_secs_f64();
        self.dist = Some(d);
        r?;
        Ok(DistStep { loss_sum: stats[0], correct: stats[1].round() as usize, stop: stats[2] > 0.0 })
    }

    /// Averages the model's states (batch-norm running statistics, computed by each rank
    /// on its own rows) over ranks, so that every rank scores and saves the same model.
    fn average_states(&mut self) -> Result<(), String> {
        let Some(d) = self.dist.as_mut() else { return Ok(()) };
        let size = d.comm.size() as f32;
        let e = self.steps.get_mut(&self.current).ok_or("internal error: no engine holds the parameters")?;
        let g = e.graph().clone();
        for (i, st) in g.states.iter().enumerate() {
            if st.update.is_none() || st.teacher_source().is_some() {
                continue;
            }
            let mut v = e.state(i);
            d.comm.allreduce_sum_f32(&mut v)?;
            v.iter_mut().for_each(|x| *x /= size);
            e.set_state(i, &v)?;
        }
        Ok(())
    }

    /// With `check`: an error unless every rank holds the same parameters.
    fn check_params(&mut self, epoch: usize) -> Result<(), String> {
        let Some(d) = self.dist.as_mut() else { return Ok(()) };
        if !d.check {
            return Ok(());
        }
        let e = self.steps.get(&self.current).ok_or("internal error: no engine holds the parameters")?;
        let params: Vec<Vec<f32>> = (0..e.graph().params.len()).map(|i| e.param(i)).collect();
        let h = comm::hash_f32(params.iter().map(Vec::as_slice));
        if !comm::all_equal(d.comm.as_mut(), h)? {
            return Err(format!(
                "after epoch {}: the parameters differ between ranks (rank {} has hash {h:016x})",
                epoch + 1,
                d.comm.rank()
            ));
        }
        Ok(())
    }
}

/// The prefix of the `log_grad_norms` columns of an epoch's row: the mean over the
/// epoch's steps of a parameter's gradient L2 norm.
pub const GRAD_NORM_PREFIX: &str = "grad_norm.";
/// The prefix of the mean over the epoch's steps of ||w_new - w|| / ||w||.
pub const UPDATE_RATIO_PREFIX: &str = "update_ratio.";

/// Every parameter of a step graph built with `log_grad_norms`, with the output indices
/// of its squared gradient, update and parameter norms (`update::monitor_names`).
fn monitor_outputs(g: &Graph) -> Result<Vec<(String, [usize; 3])>, String> {
    let find = |n: &str| {
        g.outputs
            .iter()
            .position(|(o, _)| o == n)
            .ok_or_else(|| format!("internal error: the step graph has no output `{n}`"))
    };
    g.params
        .iter()
        .map(|p| {
            let [a, b, c] = update::monitor_names(&p.name);
            Ok((p.name.clone(), [find(&a)?, find(&b)?, find(&c)?]))
        })
        .collect()
}

impl Session {
    /// One `train` epoch of a host-loop optimizer: up to `max_iter` iterations on the
    /// whole training set. Returns the loss (without regularization) at the final point,
    /// or the objective when it is not finite, the number of function evaluations and
    /// the number of Hessian-vector products.
    fn host_epoch(
        &mut self,
        batch: usize,
        ds: &Dataset,
        rows: &[usize],
        s: &crate::settings::TrainSettings,
        step: u64,
        progress: &mut dyn FnMut(u64, f64),
    ) -> Result<(f64, u64, u64), String> {
        self.engine(batch)?;
        if let Some(hg) = &self.hvp_graph {
            if !self.hvp_engines.contains_key(&batch) {
                let h = Engine::new(hg, batch, self.backend, self.threads)?;
                self.hvp_engines.insert(batch, h);
            }
        }
        let e = self.steps.get_mut(&batch).ok_or("internal error: no engine")?;
        set_batch(e, ds, rows)?;
        let mut hv = match self.hvp_engines.get_mut(&batch) {
            Some(h) => {
                sync(e, h)?;
                set_batch(h, ds, rows)?;
                Some(HvpEngine::new(h, e.graph())?)
            }
            None => None,
        };
        let g = e.graph().clone();
        let sizes: Vec<usize> = g.params.iter().map(|q| q.shape.iter().product::<i64>() as usize).collect();
        let mut x: Vec<f64> = (0..sizes.len()).flat_map(|i| e.param(i)).map(f64::from).collect();
        let mut obj = CompiledObjective {
            e,
            hv: hv.as_mut(),
            sizes: &sizes,
            seed: s.seed as u64,
            step,
            evals: 0,
            hvps: 0,
            progress,
        };
        let value = match method_of(s) {
            None => {
                let o = crate::optim::lbfgs::Options {
                    lr: s.optimizer.num("lr").unwrap_or(1.0),
                    history: s.optimizer.num("history").unwrap_or(10.0) as usize,
                    max_iter: s.optimizer.num("max_iter").unwrap_or(20.0) as usize,
                    tolerance_grad: 1e-7,
                    tolerance_change: 1e-12,
                };
                let mut f = |x: &[f64]| obj.eval(x);
                crate::optim::lbfgs::minimize(&mut f, &mut x, &mut self.lbfgs_state, &o)?
            }
            Some(method) => {
                let o = second_order::Options {
                    method,
                    max_iter: s.optimizer.num("max_iter").unwrap_or(20.0) as usize,
                    tolerance_grad: 1e-7,
                    tolerance_change: 1e-12,
                };
                let trace = second_order::minimize(&mut obj, &mut x, &mut self.second_state, &o)?;
                trace.last().map_or(f64::NAN, |t| t.value)
            }
        };
        let (evals, hvps) = (obj.evals, obj.hvps);
        let e = obj.e;
        set_flat(e, &sizes, &x)?;
        if !value.is_finite() {
            return Ok((value, evals, hvps));
        }
        // The loss without regularization at the final point, as `train_loss`.
        e.run(s.seed as u64, step + evals.saturating_sub(1))?;
        let loss = e.output(sizes.len() + 1)?.first().copied().map_or(f64::NAN, f64::from);
        Ok((loss, evals, hvps))
    }
}

/// The second-order method a recipe names (None for L-BFGS and compiled optimizers).
pub fn method_of(s: &crate::settings::TrainSettings) -> Option<Method> {
    let o = &s.optimizer;
    let flag = |k: &str, d: bool| match o.arg(k) {
        Some(crate::ir::recipe::Lit::Bool(b)) => *b,
        _ => d,
    };
    match o.name.as_str() {
        "bfgs" => Some(Method::Bfgs { lr: o.num("lr").unwrap_or(1.0) }),
        "newton" => {
            Some(Method::Newton { damping: o.num("damping").unwrap_or(1e-4), line_search: flag("line_search", true) })
        }
        "newton_cg" => Some(Method::NewtonCg {
            max_cg: o.num("max_cg").unwrap_or(50.0) as usize,
            tol: o.num("tol").unwrap_or(0.5),
        }),
        _ => None,
    }
}

/// The host memory a host-loop optimizer uses for itself at `n` parameters, at its peak
/// (`second_order::Method::state_bytes`; L-BFGS keeps `history` pairs of f64 vectors),
/// with what it is; None for compiled optimizers, whose state is in the step's plan.
pub fn host_state_bytes(s: &crate::settings::TrainSettings, n: usize) -> Option<(usize, &'static str)> {
    if s.optimizer.name == "lbfgs" {
        let history = s.optimizer.num("history").unwrap_or(10.0) as usize;
        return Some((2 * history * n * 8, "history pairs (s, y) of f64 vectors"));
    }
    let m = method_of(s)?;
    let what = match m {
        Method::Bfgs { .. } => "the dense inverse Hessian, f64",
        Method::Newton { .. } => "the dense Hessian and its Cholesky factor, f64",
        Method::NewtonCg { .. } => "five f64 vectors of conjugate gradients",
    };
    Some((m.state_bytes(n), what))
}

/// The step graph of the host-loop optimizers (full batch): outputs `objective` (the
/// loss with its regularization), `grad.<param>` for each parameter, then the loss alone
/// (`train_loss`, as the compiled optimizers report it); no updates.
pub fn objective_graph(train: &Graph, s: &crate::settings::TrainSettings) -> Result<Graph, String> {
    let (g, obj) = update::objective(train, s)?;
    let wrt: Vec<_> = train.params.iter().map(|q| q.value).collect();
    let (mut g2, grads) = crate::autodiff::grad(&g, obj, &wrt)?;
    g2.outputs = vec![("objective".into(), obj)];
    for (q, gv) in train.params.iter().zip(grads) {
        g2.outputs.push((format!("grad.{}", q.name), gv));
    }
    g2.outputs.push(("loss".into(), train.loss.ok_or("the model has no `loss` to train")?));
    Ok(g2)
}

/// The graph of Hessian-vector products of the training objective (loss and
/// regularization): inputs `v.<param>` besides the data, outputs `hv.<param>` = (H v)
/// for each parameter.
pub fn hvp_graph(train: &Graph, s: &crate::settings::TrainSettings) -> Result<Graph, String> {
    let (mut g, obj) = update::objective(train, s)?;
    g.loss = Some(obj);
    g.outputs.clear();
    let d = crate::autodiff::directional_graph(&g)?;
    let wrt: Vec<_> = d.params.iter().map(|q| q.value).collect();
    let (mut g2, hv) = crate::autodiff::grad(&d, d.loss.ok_or("internal error: no directional loss")?, &wrt)?;
    g2.outputs = d.params.iter().zip(hv).map(|(q, v)| (format!("hv.{}", q.name), v)).collect();
    Ok(g2)
}

/// Writes the flat vector `x` into the engine's parameters (f32).
fn set_flat(e: &mut Engine, sizes: &[usize], x: &[f64]) -> Result<(), String> {
    let mut at = 0;
    for (i, &n) in sizes.iter().enumerate() {
        let v: Vec<f32> = x[at..at + n].iter().map(|&v| v as f32).collect();
        e.set_param(i, &v)?;
        at += n;
    }
    Ok(())
}

/// The Hessian-vector engine with, for each parameter of the step engine (by position),
/// its parameter index, its `v.` input index (None when the product does not read it)
/// and its output index.
struct HvpEngine<'a> {
    e: &'a mut Engine,
    map: Vec<(usize, Option<usize>, usize)>,
    shapes: Vec<Vec<usize>>,
}

impl<'a> HvpEngine<'a> {
    fn new(e: &'a mut Engine, step: &Graph) -> Result<HvpEngine<'a>, String> {
        let g = e.graph();
        let mut map = Vec::new();
        let mut shapes = Vec::new();
        for q in &step.params {
            let pi = g.params.iter().position(|p| p.name == q.name);
            let vi = g.inputs.iter().position(|i| i.name == format!("v.{}", q.name));
            let oi = g.outputs.iter().position(|(n, _)| *n == format!("hv.{}", q.name));
            let (Some(pi), Some(oi)) = (pi, oi) else {
                return Err(format!("internal error: the Hessian-vector graph lacks parameter `{}`", q.name));
            };
            map.push((pi, vi, oi));
            shapes.push(q.shape.iter().map(|&d| d as usize).collect());
        }
        Ok(HvpEngine { e, map, shapes })
    }
}

/// The compiled objective as `second_order` sees it: the step engine computes the
/// objective and gradients, the Hessian-vector engine their directional derivatives.
struct CompiledObjective<'a, 'b> {
    e: &'a mut Engine,
    hv: Option<&'a mut HvpEngine<'b>>,
    sizes: &'a [usize],
    seed: u64,
    step: u64,
    evals: u64,
    hvps: u64,
    progress: &'a mut dyn FnMut(u64, f64),
}

impl Objective for CompiledObjective<'_, '_> {
    fn eval(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>), String> {
        set_flat(self.e, self.sizes, x)?;
        self.e.run(self.seed, self.step + self.evals)?;
        self.evals += 1;
        let obj = f64::from(self.e.output(0)?.first().copied().unwrap_or(f32::NAN));
        (self.progress)(self.evals, obj);
        let mut grad = Vec::with_capacity(x.len());
        for k in 0..self.sizes.len() {
            grad.extend(self.e.output(k + 1)?.into_iter().map(f64::from));
        }
        Ok((obj, grad))
    }

    fn hvp(&mut self, x: &[f64], v: &[f64]) -> Result<Vec<f64>, String> {
        let h = self.hv.as_mut().ok_or("internal error: no Hessian-vector engine")?;
        self.hvps += 1;
        let mut at = 0;
        for (k, &(pi, vi, _)) in h.map.iter().enumerate() {
            let n = self.sizes[k];
            h.e.set_param(pi, &x[at..at + n].iter().map(|&a| a as f32).collect::<Vec<_>>())?;
            if let Some(vi) = vi {
                let data = crate::data::ArrayData::F32(v[at..at + n].iter().map(|&a| a as f32).collect());
                h.e.set_input(vi, &crate::data::Array { shape: h.shapes[k].clone(), data })?;
            }
            at += n;
        }
        // The products at x share the seed of the last evaluation (dropout masks).
        h.e.run(self.seed, self.step + self.evals.saturating_sub(1))?;
        let mut out = Vec::with_capacity(x.len());
        for &(_, _, oi) in &h.map {
            out.extend(h.e.output(oi)?.into_iter().map(f64::from));
        }
        Ok(out)
    }
}
