//! Hyperparameter search: trials of a recipe with values from a search space (`search`:
//! grid, random or TPE), each a `Session` fitted on the same training rows and scored on
//! the same validation rows, bad ones stopped early by a trial stopper (Optuna's pruner; the `prune` key), two at a time where two
//! CPUs are there.
//!
//! Rows: the test part of the model's `split` is never seen by the search. The
//! validation part scores the trials; with a two-part split (no validation part) a fifth
//! of the training part is held out for it (stratified, by `split_seed`); a `cv_*` metric
//! cross-validates every trial on the training part instead. The best trial's model is
//! kept (for `cv_*`: refitted on the training part) and scored once on the test rows.
//!
//! Determinism: a trial's values and its training depend only on its index, the seeds
//! and the trials before it, never on timing. TPE proposes trial `i` from trials
//! `0..=i-jobs` (waiting for them when needed), and the trial stopper decides trial `i` at
//! epoch `e` from the trials before it that reached `e` (waiting for those still short
//! of it), so a search with `jobs = 2` gives the same results as with `jobs = 1`, given
//! the same `jobs`.
//!
//! Pruners (the trial's value at an epoch is the best validation metric up to it):
//! - `median(startup, warmup)`: as Optuna's median pruner, after the first `startup`
//!   trials and past epoch `warmup`, a trial whose value is worse than the median of the
//!   earlier trials' values at the same epoch is stopped.
//! - `asha(reduction, min_epochs)`: asynchronous successive halving, at the rungs
//!   `min_epochs * reduction^k`, a trial continues only if its value is among the best
//!   `1/reduction` of the values of the trials (itself included) that reached the rung.
//!
//! Over N ranks (`tune_with` given a communicator) the trials run in rounds: in round
//! `k` rank `r` runs trial `k N + r`, one at a time, then the round's results are
//! gathered to every rank (`comm::allgather_bytes`). TPE proposes trial `i` from
//! trials `0..=i-N`, all of earlier rounds; the trial stopper needs the values at each epoch of
//! the trials running beside it, so the ranks of a round exchange them after every epoch
//! (`exchange`: a rank whose trial has ended takes part until every rank's has). So the
//! search is the one-process search with `jobs = N`, trial for trial; the best trial's
//! model is sent to every rank by the rank that trained it.

use super::cv::run_fold;
use super::search::{self, Outcome, TpeOptions, Trial, Value};
use crate::data::{self, Dataset, InputSpec, Preprocessor};
use crate::dist::comm::{self, Communicator, Unwire, Wire};
use crate::ir::recipe::{higher_is_better, Param, TuneSettings};
use crate::ir::Program;
use crate::metrics::Metrics;
use crate::tensors::TensorMap;
use crate::train::checkpoint::SplitRecord;
use crate::train::session::{End, Next, Observer, Progress, Session};
use crate::train::target;
use crate::train::trainer::{load_data, split_rows};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// Compiles the model of a trial from its `key=value` pairs (train settings and model
/// arguments), as `pipeline::configure` does with the `--set` pairs of every trial first.
pub type Compile<'a> = dyn Fn(&[(String, String)]) -> Result<Program, String> + Sync + 'a;

/// How the search runs (the `tune` block says what it searches).
pub struct TuneOptions<'a> {
    /// Compiles a trial's program.
    pub compile: &'a Compile<'a>,
    /// Keys fixed for every trial (`--set`), which the space may not search.
    pub fixed: Vec<String>,
    pub backend: crate::runtime::backend::Backend,
    /// Trials at once.
    pub jobs: usize,
    /// Threads of each trial's steps.
    pub threads: usize,
    /// The model's source (its hash goes into the best checkpoint).
    pub source: String,
}

/// How a trial ended.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Complete,
    /// Stopped by the trial stopper after this epoch.
    Stopped(usize),
    /// Diverged or could not run; the reason.
    Failed(String),
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Complete => "complete",
            State::Stopped(_) => "pruned",
            State::Failed(_) => "failed",
        }
    }
}

/// One trial.
#[derive(Clone, Debug)]
pub struct TrialResult {
    /// From 0 (printed from 1).
    pub index: usize,
    /// The values as `key=value` text, in the order of the space.
    pub values: Vec<(String, String)>,
    pub raw: Vec<Value>,
    pub state: State,
    /// The metric of the trial's final model (complete), or its value when pruned.
    pub metric: Option<f64>,
    /// The best validation metric up to each epoch (for pruning).
    pub curve: Vec<f64>,
    pub epochs: usize,
    pub seconds: f64,
}

/// The best trial's model.
pub struct BestModel {
    pub program: Program,
    pub tensors: TensorMap,
    pub pre: Preprocessor,
    pub progress: Progress,
}

/// The whole search.
pub struct TuneReport {
    pub metric: String,
    pub maximize: bool,
    pub method: String,
    pub trials: Vec<TrialResult>,
    /// The position in `trials` of the best complete trial.
    pub best: Option<usize>,
    pub best_model: Option<BestModel>,
    /// The best model's metrics on the test rows (`test_*`), when the split has them.
    pub test: Option<Metrics>,
    pub record: SplitRecord,
    pub notes: Vec<String>,
    /// Rows that trained and scored the trials, and test rows.
    pub rows: (usize, usize, usize),
    pub seconds: f64,
}

/// Rows of a data set: (trial training rows, validation rows, test rows).
type Rows = (Vec<usize>, Vec<usize>, Vec<usize>);

/// The rows of a search.
fn search_rows(p: &Program, raw: &Dataset, notes: &mut Vec<String>) -> Result<Rows, String> {
    let parts = split_rows(p, raw)?;
    let label = raw.get(data::LABEL_INPUT).is_some().then_some(data::LABEL_INPUT);
    let carve = |train: &[usize]| -> Result<(Vec<usize>, Vec<usize>), String> {
        let sub = raw.subset(train);
        let cut = data::split(&sub, &[0.8, 0.2], p.settings.split_seed(), label)?;
        let map = |rows: &[usize]| rows.iter().map(|&r| train[r]).collect::<Vec<usize>>();
        Ok((map(&cut[0]), map(&cut[1])))
    };
    Ok(match parts.len() {
        3 => (parts[0].clone(), parts[1].clone(), parts[2].clone()),
        2 => {
            let (fit, val) = carve(&parts[0])?;
            notes.push(format!(
                "`split` has no validation part: the trials are scored on a fifth of the training part ({} rows); the {} test rows are never seen by the search",
                val.len(),
                parts[1].len()
            ));
            (fit, val, parts[1].clone())
        }
        _ => {
            let (fit, val) = carve(&parts[0])?;
            notes.push(format!(
                "no `split`: the trials are scored on a fifth of the rows ({}); there are no test rows to score the best model on",
                val.len()
            ));
            (fit, val, Vec::new())
        }
    })
}

/// What the workers share.
struct Shared {
    next: usize,
    results: Vec<Option<TrialResult>>,
    /// Per trial, the best value up to each epoch so far.
    curves: Vec<Vec<f64>>,
    done: Vec<bool>,
    /// The best complete trial: its metric, index and model (none when cross-validated).
    best: Option<(f64, usize, Option<BestModel>)>,
    error: Option<String>,
}

struct Search<'a> {
    spec: &'a TuneSettings,
    opts: &'a TuneOptions<'a>,
    raw: &'a Dataset,
    specs: &'a [InputSpec],
    fit: &'a [usize],
    val: &'a [usize],
    metric: &'a str,
    maximize: bool,
    grid: Option<Vec<Vec<Value>>>,
    trials: usize,
    jobs: usize,
    /// Trials run in rounds over ranks, which exchange the trial stopper's values after every
    /// epoch (`exchange`): the trial stopper never waits.
    lockstep: bool,
    stop: &'a AtomicBool,
    shared: Mutex<Shared>,
    wake: Condvar,
}

/// Runs the search of `spec` over the model `base` (compiled from `opts.file` with
/// `opts.sets`); `on_trial` sees the metric's name and every trial as it ends (from the
/// worker that ran it).
pub fn tune(
    base: &Program,
    spec: &TuneSettings,
    base_dir: &Path,
    opts: &TuneOptions,
    stop: &AtomicBool,
    on_trial: &(dyn Fn(&str, &TrialResult) + Sync),
) -> Result<TuneReport, String> {
    tune_with(base, spec, base_dir, opts, stop, on_trial, None)
}

/// `tune` as one rank of a group (`comm`; see the module doc): every rank calls it; each
/// runs its share of the trials one at a time (`opts.jobs` is not used) and every rank
/// returns every trial. Rank 0 alone refits a cross-validated best and scores the test
/// rows (the others return without them).
pub fn tune_with(
    base: &Program,
    spec: &TuneSettings,
    base_dir: &Path,
    opts: &TuneOptions,
    stop: &AtomicBool,
    on_trial: &(dyn Fn(&str, &TrialResult) + Sync),
    mut comm: Option<&mut dyn Communicator>,
) -> Result<TuneReport, String> {
    let (rank, ranks) = comm.as_ref().map_or((0, 1), |c| (c.rank(), c.size()));
    let t0 = std::time::Instant::now();
    let mut notes = Vec::new();
    for k in &opts.fixed {
        if spec.space.iter().any(|p| p.name == *k) {
            return Err(format!("--set {k}: `{k}` is searched by the tune block; it cannot also be fixed"));
        }
    }
    let (raw, specs) = load_data(base, base_dir)?;
    let (fit, val, test) = search_rows(base, &raw, &mut notes)?;
    let classifier = crate::train::engine::labels_of(&raw, &fit).is_some();
    let metric = spec.metric.clone().unwrap_or_else(|| if classifier { "val_accuracy" } else { "val_loss" }.into());
    let maximize = match spec.mode.as_deref() {
        Some(m) => m == "max",
        None => higher_is_better(&metric),
    };
    let grid = match spec.method.as_str() {
        "grid" => Some(search::grid(&spec.space)?),
        _ => None,
    };
    let trials = match (&grid, spec.trials) {
        (Some(g), Some(n)) if (n as usize) < g.len() => {
            notes.push(format!("the grid has {} points; `trials = {n}` runs the first {n}", g.len()));
            n as usize
        }
        (Some(g), _) => g.len(),
        (None, n) => n.unwrap_or(20) as usize,
    };
    // Over ranks, TPE's lag is the number of ranks (one trial per rank at a time).
    let jobs = if comm.is_some() { ranks } else { opts.jobs.clamp(1, trials.max(1)) };
    check_values(&spec.space, opts)?;
    if metric.starts_with("cv_") && spec.stopper.name != "none" {
        notes.push("trials scored by cross-validation are not pruned (a pruner watches epochs of one fit)".into());
    }
    let search = Search {
        spec,
        opts,
        raw: &raw,
        specs: &specs,
        fit: &fit,
        val: &val,
        metric: &metric,
        maximize,
        grid,
        trials,
        jobs,
        lockstep: comm.is_some(),
        stop,
        shared: Mutex::new(Shared {
            next: 0,
            results: vec![None; trials],
            curves: vec![Vec::new(); trials],
            done: vec![false; trials],
            best: None,
            error: None,
        }),
        wake: Condvar::new(),
    };
    match comm.as_deref_mut() {
        Some(c) => {
            crate::codegen::fp::flush_denormals_in_this_thread();
            rounds(&search, c, on_trial)?;
        }
        None => std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| {
                    crate::codegen::fp::flush_denormals_in_this_thread();
                    worker(&search, on_trial)
                });
            }
        }),
    }
    let shared = search.shared.into_inner().map_err(|_| "a trial panicked".to_string())?;
    if let Some(e) = shared.error {
        return Err(e);
    }
    let results: Vec<TrialResult> = shared.results.into_iter().flatten().collect();
    if results.is_empty() {
        return Err("interrupted before the first trial ended".into());
    }
    if results.iter().all(|r| matches!(r.state, State::Failed(_))) {
        let why = match &results[0].state {
            State::Failed(w) => w.clone(),
            _ => String::new(),
        };
        return Err(format!("every trial failed; the first: {why}"));
    }
    // Positions in `results`, which lacks the trials an interruption cut off.
    let (best, mut best_model) = match shared.best {
        Some((_, i, m)) => (results.iter().position(|r| r.index == i), m),
        None => (None, None),
    };
    if let Some(c) = comm {
        // The rank that trained the best trial sends its model (a cross-validated trial
        // has none: rank 0 refits it below).
        let owner = best.map(|i| results[i].index % ranks);
        let mut w = Wire::default();
        if let (Some(o), Some(m)) = (owner, &best_model) {
            if o == rank {
                encode_model(&mut w, m);
            }
        }
        let sent = comm::allgather_bytes(c, &w.0)?;
        if let (Some(o), Some(i)) = (owner, best) {
            if best_model.is_none() && !sent[o].is_empty() {
                let p = trial_program(opts, &results[i].values)?;
                let pre = Preprocessor::fit(&p.settings.preprocess, &raw, &fit, &specs)?;
                best_model = Some(decode_model(&mut Unwire::new(&sent[o]), p, pre)?);
            }
        }
        if rank != 0 {
            let record = SplitRecord::of(base, &raw);
            let rows = (fit.len(), val.len(), test.len());
            let seconds = t0.elapsed().as_secs_f64();
            let (method, test) = (spec.method.clone(), None);
            let trials = results;
            return Ok(TuneReport {
                metric,
                maximize,
                method,
                trials,
                best,
                best_model,
                test,
                record,
                notes,
                rows,
                seconds,
            });
        }
    }
    // Cross-validated trials have no single model: refit the best on the training rows.
    if metric.starts_with("cv_") {
        if let Some(i) = best {
            let r = &results[i];
            let p = trial_program(opts, &r.values)?;
            let quiet = AtomicBool::new(false);
            let val_metric = format!("val_{}", metric.strip_prefix("cv_").unwrap_or(&metric));
            let d =
                FitData { raw: &raw, specs: &specs, metric: &val_metric, backend: opts.backend, threads: opts.threads };
            let (_, model) = fit_trial(&d, &p, &fit, Some(&val), &quiet, &mut |_, _| Next::Continue)?;
            best_model = Some(model);
            notes.push(format!(
                "the best configuration was cross-validated; its model was refitted on {} training rows",
                fit.len()
            ));
        }
    }
    let mut test_metrics = None;
    if let (Some(m), false) = (&best_model, test.is_empty()) {
        let mut s = Session::new(&m.program, opts.backend, opts.threads)?;
        s.init(0, fit.len())?;
        s.load_tensors(&m.tensors, fit.len())?;
        let mut ds = raw.clone();
        m.pre.apply_dataset(&mut ds)?;
        let sc = s.score(&ds, &test)?;
        let ev = target::report(&ds, &test, &sc, s.kind, "test_", &m.program.settings.metrics);
        test_metrics = Some(ev.shown);
    }
    let record = SplitRecord::of(base, &raw);
    Ok(TuneReport {
        metric,
        maximize,
        method: spec.method.clone(),
        trials: results,
        best,
        best_model,
        test: test_metrics,
        record,
        notes,
        rows: (fit.len(), val.len(), test.len()),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Compiles every value a model argument may take once, so that a bad option is an
/// error before the search rather than a failed trial.
fn check_values(space: &[Param], opts: &TuneOptions) -> Result<(), String> {
    use crate::ir::recipe::Dist;
    for p in space.iter().filter(|p| !crate::settings::KEYS.contains(&p.name.as_str())) {
        let values: Vec<String> = match &p.dist {
            Dist::Choice(o) => o.clone(),
            Dist::Int(a, b) | Dist::LogInt(a, b) => vec![a.to_string(), b.to_string()],
            Dist::Uniform(a, b) | Dist::LogUniform(a, b) => vec![format!("{a:?}"), format!("{b:?}")],
        };
        for v in values {
            trial_program(opts, &[(p.name.clone(), v.clone())]).map_err(|e| format!("`{}` = {v}: {e}", p.name))?;
        }
    }
    Ok(())
}

/// The program of a trial.
fn trial_program(opts: &TuneOptions, values: &[(String, String)]) -> Result<Program, String> {
    (opts.compile)(values)
}

/// The data a fit needs, without the search's shared state.
struct FitData<'a> {
    raw: &'a Dataset,
    specs: &'a [InputSpec],
    metric: &'a str,
    backend: crate::runtime::backend::Backend,
    threads: usize,
}

/// How a trial's fit ended: the end, the final validation metric, the epochs run.
type FitEnd = (End, Option<f64>, usize);

/// An observer that hands every epoch's monitored value (None when the epoch lacks it)
/// to `decide`.
struct Watch<'a> {
    metric: String,
    decide: &'a mut dyn FnMut(usize, Option<f64>) -> Next,
}

impl Observer for Watch<'_> {
    fn epoch(&mut self, _s: &Session, p: &Progress, row: &[(String, f64)], _improved: bool) -> Result<Next, String> {
        Ok((self.decide)(p.epoch, row.iter().find(|(k, _)| *k == self.metric).map(|(_, v)| *v)))
    }
}

/// Fits `p` on `fit` rows from its seed, scoring `val` rows every epoch (`decide` may
/// stop it). Returns how it ended, with the final validation metric, and the model.
fn fit_trial(
    d: &FitData,
    p: &Program,
    fit: &[usize],
    val: Option<&[usize]>,
    stop: &AtomicBool,
    decide: &mut dyn FnMut(usize, Option<f64>) -> Next,
) -> Result<(FitEnd, BestModel), String> {
    let pre = Preprocessor::fit(&p.settings.preprocess, d.raw, fit, d.specs)?;
    crate::train::teacher::check_preprocessing(&p.train, &pre.to_tensors())?;
    let mut ds = d.raw.clone();
    pre.apply_dataset(&mut ds)?;
    let mut session = Session::new(p, d.backend, d.threads)?;
    session.watch(d.metric);
    session.init(p.settings.seed as u64, fit.len())?;
    session.augment_from(d.raw, &pre)?;
    let mut at = Progress::default();
    let mut w = Watch { metric: d.metric.to_string(), decide };
    let end = session.fit(&ds, fit, val, &mut at, stop, &mut w)?;
    let value = match val {
        Some(v) => {
            let sc = session.score(&ds, v)?;
            let ev = target::report(&ds, v, &sc, session.kind, "val_", &[]);
            match ev.all.get(d.metric) {
                Some(x) => Some(*x),
                None => {
                    let names: Vec<&str> = ev.all.keys().map(String::as_str).collect();
                    return Err(format!(
                        "`metric = {}`: the validation rows have no such metric; they have: {}",
                        d.metric,
                        names.join(", ")
                    ));
                }
            }
        }
        None => None,
    };
    let model = BestModel { program: p.clone(), tensors: session.tensors()?, pre, progress: at.clone() };
    Ok(((end, value, at.epoch), model))
}

fn worker(s: &Search, on_trial: &(dyn Fn(&str, &TrialResult) + Sync)) {
    loop {
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        let index = {
            let mut sh = s.shared.lock().unwrap_or_else(|e| e.into_inner());
            if sh.next >= s.trials || sh.error.is_some() {
                return;
            }
            sh.next += 1;
            sh.next - 1
        };
        let Some((result, model)) = trial(s, index, None) else { return };
        record(s, result, model, on_trial);
    }
}

/// Proposes and runs trial `index`: its result and, when complete, its model; None when
/// the search is stopped while the proposal waits. `comm`: the trial runs in a round over
/// ranks (`rounds`).
fn trial(s: &Search, index: usize, comm: Option<&mut dyn Communicator>) -> Option<(TrialResult, Option<BestModel>)> {
    let t0 = std::time::Instant::now();
    let raw = s.spec.space.iter().zip(propose(s, index)?).map(|(p, v)| rounded(v, &p.dist)).collect::<Vec<Value>>();
    let values: Vec<(String, String)> =
        s.spec.space.iter().zip(&raw).map(|(p, v)| (p.name.clone(), v.render(&p.dist))).collect();
    let (state, metric, epochs, model) = run_trial(s, index, &values, comm);
    let seconds = t0.elapsed().as_secs_f64();
    let curve = s.shared.lock().unwrap_or_else(|e| e.into_inner()).curves[index].clone();
    Some((TrialResult { index, values, raw, state, metric, curve, epochs, seconds }, model))
}

/// Enters a trial's result in the search (and the best trial, with its model when it
/// has one), tells `on_trial`, and wakes the workers that wait for it.
fn record(s: &Search, result: TrialResult, model: Option<BestModel>, on_trial: &(dyn Fn(&str, &TrialResult) + Sync)) {
    let index = result.index;
    let mut sh = s.shared.lock().unwrap_or_else(|e| e.into_inner());
    // The best complete trial (ties: the earlier one), with its model when it has one.
    if let (State::Complete, Some(m)) = (&result.state, result.metric) {
        let wins = match &sh.best {
            None => true,
            Some((b, bi, _)) => better(s.maximize, m, *b) || (m == *b && index < *bi),
        };
        if wins {
            sh.best = Some((m, index, model));
        }
    }
    if let State::Failed(why) = &result.state {
        // A configuration error (an unknown metric) is the same for every trial.
        if why.starts_with("`metric = ") {
            sh.error = Some(why.clone());
        }
    }
    on_trial(s.metric, &result);
    sh.curves[index] = result.curve.clone();
    sh.results[index] = Some(result);
    sh.done[index] = true;
    drop(sh);
    s.wake.notify_all();
}

/// The search over ranks (see the module doc): round after round, every rank runs its
/// trial of the round, then every rank records every trial of the round in index order.
/// The ranks agree at the start of each round whether to go on (a stop on any rank, or a
/// configuration error, ends the search on every rank after the same round).
fn rounds(
    s: &Search,
    comm: &mut dyn Communicator,
    on_trial: &(dyn Fn(&str, &TrialResult) + Sync),
) -> Result<(), String> {
    let (rank, ranks) = (comm.rank(), comm.size());
    for round in 0..s.trials.div_ceil(ranks) {
        let failed = s.shared.lock().unwrap_or_else(|e| e.into_inner()).error.is_some();
        let mut flag = [if s.stop.load(Ordering::SeqCst) || failed { 1.0 } else { 0.0 }];
        comm.allreduce_sum_f64(&mut flag)?;
        if flag[0] > 0.0 {
            return Ok(());
        }
        let index = round * ranks + rank;
        let mine = if index < s.trials { trial(s, index, Some(&mut *comm)) } else { None };
        // Until every rank's trial of the round has ended.
        while !exchange(s, comm, round, Ended, 0.0)? {}
        let mut w = Wire::default();
        if let Some((r, _)) = &mine {
            encode_trial(&mut w, r);
        }
        let sent = comm::allgather_bytes(comm, &w.0)?;
        let mut model = mine.and_then(|(_, m)| m);
        for (from, bytes) in sent.iter().enumerate() {
            if bytes.is_empty() {
                continue;
            }
            let r = decode_trial(&mut Unwire::new(bytes))?;
            let m = if from == rank { model.take() } else { None };
            record(s, r, m, on_trial);
        }
    }
    Ok(())
}

/// What a rank says in an epoch exchange of a round.
#[derive(Clone, Copy, PartialEq)]
enum Said {
    /// Its trial's value at this epoch (pushed to the trial's curve).
    Value = 0,
    /// An epoch without the metric.
    Nothing = 1,
    /// Its trial has ended (or it has none).
    Ended = 2,
}
use Said::{Ended, Nothing};

/// One exchange of a round over ranks (see the module doc): every rank says what its
/// trial did at this epoch; the values join the round's curves and ended trials count
/// as done for the trial stopper. Returns whether every rank's trial has ended.
fn exchange(s: &Search, comm: &mut dyn Communicator, round: usize, said: Said, value: f64) -> Result<bool, String> {
    let (rank, ranks) = (comm.rank(), comm.size());
    let mut buf = vec![0.0f64; 2 * ranks];
    buf[2 * rank] = said as u8 as f64;
    buf[2 * rank + 1] = value;
    comm.allreduce_sum_f64(&mut buf)?;
    let mut sh = s.shared.lock().unwrap_or_else(|e| e.into_inner());
    let mut all_ended = true;
    for r in 0..ranks {
        let (st, v) = (buf[2 * r], buf[2 * r + 1]);
        all_ended &= st == Ended as u8 as f64;
        let j = round * ranks + r;
        if r == rank || j >= s.trials {
            continue;
        }
        if st == Said::Value as u8 as f64 {
            sh.curves[j].push(v);
        } else if st == Ended as u8 as f64 {
            sh.done[j] = true;
        }
    }
    drop(sh);
    s.wake.notify_all();
    Ok(all_ended)
}

fn encode_trial(w: &mut Wire, r: &TrialResult) {
    w.u64(r.index as u64);
    w.u64(r.values.len() as u64);
    for ((k, v), raw) in r.values.iter().zip(&r.raw) {
        w.str(k);
        w.str(v);
        match raw {
            Value::Num(x) => {
                w.u64(0);
                w.f64(*x);
            }
            Value::Int(i) => {
                w.u64(1);
                w.u64(*i as u64);
            }
            Value::Pick(i) => {
                w.u64(2);
                w.u64(*i as u64);
            }
        }
    }
    match &r.state {
        State::Complete => w.u64(0),
        State::Stopped(e) => {
            w.u64(1);
            w.u64(*e as u64);
        }
        State::Failed(why) => {
            w.u64(2);
            w.str(why);
        }
    }
    match r.metric {
        Some(m) => {
            w.u64(1);
            w.f64(m);
        }
        None => w.u64(0),
    }
    w.u64(r.curve.len() as u64);
    r.curve.iter().for_each(|&c| w.f64(c));
    w.u64(r.epochs as u64);
    w.f64(r.seconds);
}

fn decode_trial(u: &mut Unwire) -> Result<TrialResult, String> {
    let index = u.u64()? as usize;
    let (mut values, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..u.u64()? {
        values.push((u.str()?, u.str()?));
        raw.push(match u.u64()? {
            0 => Value::Num(u.f64()?),
            1 => Value::Int(u.u64()? as i64),
            _ => Value::Pick(u.u64()? as usize),
        });
    }
    let state = match u.u64()? {
        0 => State::Complete,
        1 => State::Stopped(u.u64()? as usize),
        _ => State::Failed(u.str()?),
    };
    let metric = match u.u64()? {
        0 => None,
        _ => Some(u.f64()?),
    };
    let curve = (0..u.u64()?).map(|_| u.f64()).collect::<Result<Vec<f64>, String>>()?;
    let (epochs, seconds) = (u.u64()? as usize, u.f64()?);
    Ok(TrialResult { index, values, raw, state, metric, curve, epochs, seconds })
}

/// A trial's model for another rank: its tensors and progress (the program and the
/// preprocessing are rebuilt there from the trial's values and the same rows).
fn encode_model(w: &mut Wire, m: &BestModel) {
    use crate::tensors::HostData;
    w.u64(m.tensors.len() as u64);
    for (name, t) in &m.tensors {
        w.str(name);
        w.u64(t.shape.len() as u64);
        t.shape.iter().for_each(|&d| w.u64(d as u64));
        match &t.data {
            HostData::F32(v) | HostData::F64(v) => {
                w.u64(if matches!(t.data, HostData::F32(_)) { 0 } else { 1 });
                w.u64(v.len() as u64);
                v.iter().for_each(|&x| w.f64(x));
            }
            HostData::I32(v) => {
                w.u64(2);
                w.u64(v.len() as u64);
                v.iter().for_each(|&x| w.u64(u64::from(x as u32)));
            }
        }
    }
    let p = &m.progress;
    for x in [p.epoch, p.bad_epochs, p.batch, p.epoch_seen, p.epoch_correct, p.plateau.bad] {
        w.u64(x as u64);
    }
    w.u64(p.step);
    for x in [p.best, p.epoch_loss, p.plateau.scale] {
        w.f64(x);
    }
    w.u64(p.best_epoch.map_or(0, |e| e as u64 + 1));
    match p.plateau.best {
        Some(b) => {
            w.u64(1);
            w.f64(b);
        }
        None => w.u64(0),
    }
}

fn decode_model(u: &mut Unwire, program: Program, pre: Preprocessor) -> Result<BestModel, String> {
    use crate::tensors::{HostData, HostTensor};
    let mut tensors = TensorMap::new();
    for _ in 0..u.u64()? {
        let name = u.str()?;
        let shape = (0..u.u64()?).map(|_| u.u64().map(|d| d as usize)).collect::<Result<Vec<usize>, String>>()?;
        let kind = u.u64()?;
        let n = u.u64()? as usize;
        let data = match kind {
            0 | 1 => {
                let v = (0..n).map(|_| u.f64()).collect::<Result<Vec<f64>, String>>()?;
                if kind == 0 {
                    HostData::F32(v)
                } else {
                    HostData::F64(v)
                }
            }
            _ => HostData::I32((0..n).map(|_| u.u64().map(|x| x as u32 as i32)).collect::<Result<_, String>>()?),
        };
        tensors.insert(name, HostTensor { shape, data });
    }
    let mut p = Progress::default();
    let mut next = || u.u64().map(|x| x as usize);
    (p.epoch, p.bad_epochs, p.batch, p.epoch_seen, p.epoch_correct, p.plateau.bad) =
        (next()?, next()?, next()?, next()?, next()?, next()?);
    p.step = u.u64()?;
    (p.best, p.epoch_loss, p.plateau.scale) = (u.f64()?, u.f64()?, u.f64()?);
    p.best_epoch = u.u64()?.checked_sub(1).map(|e| e as usize);
    p.plateau.best = match u.u64()? {
        0 => None,
        _ => Some(u.f64()?),
    };
    Ok(BestModel { program, tensors, pre, progress: p })
}

/// A sampled number to 4 significant digits (within its range), so that the value a
/// trial prints is exactly the value it trained with: `lr=0.004132`, not
/// `lr=0.004132320647148254`.
fn rounded(v: Value, d: &crate::ir::recipe::Dist) -> Value {
    use crate::ir::recipe::Dist;
    match (v, d) {
        (Value::Num(x), Dist::Uniform(lo, hi) | Dist::LogUniform(lo, hi)) => {
            let r = format!("{x:.3e}").parse::<f64>().unwrap_or(x);
            Value::Num(if r < *lo || r > *hi { x } else { r })
        }
        _ => v,
    }
}

/// The values of trial `index`; None when the search is stopped while waiting.
fn propose(s: &Search, index: usize) -> Option<Vec<Value>> {
    if let Some(g) = &s.grid {
        return g.get(index).cloned();
    }
    if s.spec.method == "random" {
        return Some(search::random(&s.spec.space, s.spec.seed as u64, index));
    }
    // TPE from trials 0..=index-jobs: wait until they have ended.
    let upto = (index + 1).saturating_sub(s.jobs);
    let mut sh = s.shared.lock().unwrap_or_else(|e| e.into_inner());
    while !sh.done[..upto].iter().all(|&d| d) {
        if s.stop.load(Ordering::SeqCst) || sh.error.is_some() {
            return None;
        }
        sh = s.wake.wait_timeout(sh, std::time::Duration::from_millis(50)).unwrap_or_else(|e| e.into_inner()).0;
    }
    let history: Vec<Trial> = sh.results[..upto]
        .iter()
        .flatten()
        .map(|r| Trial {
            values: r.raw.clone(),
            outcome: match (&r.state, r.metric) {
                (State::Complete, Some(m)) => Outcome::Complete(if s.maximize { m } else { -m }),
                (State::Stopped(e), Some(m)) => Outcome::Stopped { epochs: *e, score: if s.maximize { m } else { -m } },
                _ => Outcome::Failed,
            },
        })
        .collect();
    drop(sh);
    Some(search::tpe(&s.spec.space, &history, s.spec.seed as u64, index, &TpeOptions::default()))
}

/// Runs one trial: (state, metric, epochs, model).
fn run_trial(
    s: &Search,
    index: usize,
    values: &[(String, String)],
    mut comm: Option<&mut dyn Communicator>,
) -> (State, Option<f64>, usize, Option<BestModel>) {
    let p = match trial_program(s.opts, values) {
        Ok(p) => p,
        Err(e) => return (State::Failed(e), None, 0, None),
    };
    let d = FitData { raw: s.raw, specs: s.specs, metric: s.metric, backend: s.opts.backend, threads: s.opts.threads };
    if let Some(name) = s.metric.strip_prefix("cv_") {
        return match cv_trial(s, &p, name) {
            Ok(m) => (State::Complete, Some(m), p.settings.epochs as usize, None),
            Err(e) => (State::Failed(e), None, 0, None),
        };
    }
    let total_epochs = p.settings.epochs as usize;
    let mut best_so_far: Option<f64> = None;
    let mut stopped_at = None;
    // Over ranks, every epoch takes part in the round's exchange (a failed one ends the
    // search: the error is the search's).
    let mut tell = |said: Said, value: f64| -> bool {
        let Some(c) = comm.as_deref_mut() else { return true };
        let round = index / c.size().max(1);
        match exchange(s, c, round, said, value) {
            Ok(_) => true,
            Err(e) => {
                s.shared.lock().unwrap_or_else(|e| e.into_inner()).error = Some(e);
                false
            }
        }
    };
    let mut decide = |epoch: usize, v: Option<f64>| -> Next {
        let Some(v) = v else {
            return if tell(Nothing, 0.0) { Next::Continue } else { Next::Stop };
        };
        let b = match best_so_far {
            Some(b) if !better(s.maximize, v, b) => b,
            _ => v,
        };
        best_so_far = Some(b);
        {
            let mut sh = s.shared.lock().unwrap_or_else(|e| e.into_inner());
            sh.curves[index].push(b);
        }
        s.wake.notify_all();
        if !tell(Said::Value, b) {
            return Next::Stop;
        }
        if stopper_stops(s, index, epoch, b, total_epochs) {
            stopped_at = Some((epoch, b));
            Next::Stop
        } else {
            Next::Continue
        }
    };
    match fit_trial(&d, &p, s.fit, Some(s.val), s.stop, &mut decide) {
        Ok(((End::Stopped, _, epochs), _)) => {
            let (e, v) = stopped_at.unwrap_or((epochs, f64::NAN));
            (State::Stopped(e), Some(v), epochs, None)
        }
        Ok(((End::Interrupted, _, epochs), _)) => (State::Failed("interrupted".into()), None, epochs, None),
        Ok(((_, Some(v), epochs), model)) if v.is_finite() => (State::Complete, Some(v), epochs, Some(model)),
        Ok(((_, v, epochs), _)) => (
            State::Failed(format!("the metric is {}", v.map(|x| x.to_string()).unwrap_or("missing".into()))),
            None,
            epochs,
            None,
        ),
        Err(e) => (State::Failed(e), None, 0, None),
    }
}

fn better(maximize: bool, a: f64, b: f64) -> bool {
    if maximize {
        a > b
    } else {
        a < b
    }
}

/// Whether trial `index` is stopped at `epoch` (1-based) with value `v`.
fn stopper_stops(s: &Search, index: usize, epoch: usize, v: f64, total_epochs: usize) -> bool {
    let pr = &s.spec.stopper;
    let arg = |n: &str, d: f64| pr.num(n).unwrap_or(d) as usize;
    let at_rung = match pr.name.as_str() {
        "median" => index >= arg("startup", 5.0) && epoch > arg("warmup", 3.0),
        "asha" => {
            let (eta, min) = (arg("reduction", 3.0).max(2), arg("min_epochs", 1.0).max(1));
            let mut r = min;
            while r < epoch {
                r = r.saturating_mul(eta);
            }
            r == epoch && epoch < total_epochs
        }
        _ => false,
    };
    if !at_rung || epoch >= total_epochs {
        return false;
    }
    // The earlier trials' values at this epoch, once each has reached it or ended.
    let mut sh = s.shared.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let ready = (0..index).all(|j| sh.done[j] || sh.curves[j].len() >= epoch);
        if ready || s.lockstep || s.stop.load(Ordering::SeqCst) {
            break;
        }
        sh = s.wake.wait_timeout(sh, std::time::Duration::from_millis(50)).unwrap_or_else(|e| e.into_inner()).0;
    }
    let others: Vec<f64> = (0..index).filter_map(|j| sh.curves[j].get(epoch - 1).copied()).collect();
    drop(sh);
    if others.is_empty() {
        return false;
    }
    match pr.name.as_str() {
        "median" => {
            let mut sorted = others.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            let median = if n % 2 == 1 { sorted[n / 2] } else { 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]) };
            better(s.maximize, median, v)
        }
        _ => {
            let eta = arg("reduction", 3.0).max(2);
            let keep = ((others.len() + 1) / eta).max(1);
            let ahead = others.iter().filter(|&&o| better(s.maximize, o, v)).count();
            ahead >= keep
        }
    }
}

/// The mean of a metric over K folds of the training rows (validation rows included).
fn cv_trial(s: &Search, p: &Program, name: &str) -> Result<f64, String> {
    let mut rows = s.fit.to_vec();
    rows.extend_from_slice(s.val);
    rows.sort_unstable();
    let sub = s.raw.subset(&rows);
    let label = s.raw.get(data::LABEL_INPUT).is_some().then_some(data::LABEL_INPUT);
    let folds = data::kfold(&sub, s.spec.folds as usize, p.settings.split_seed(), label)?;
    let folds: Vec<Vec<usize>> = folds.iter().map(|f| f.iter().map(|&r| rows[r]).collect()).collect();
    let mut session = Session::new(p, s.opts.backend, s.opts.threads)?;
    let mut values = Vec::new();
    for (i, held) in folds.iter().enumerate() {
        let train: Vec<usize> =
            folds.iter().enumerate().filter(|(j, _)| *j != i).flat_map(|(_, f)| f.iter().copied()).collect();
        let (ev, _, _) = run_fold(&mut session, s.raw, &train, held, s.stop)?;
        let v = ev.all.get(name).copied().ok_or_else(|| {
            let names: Vec<String> = ev.all.keys().map(|k| format!("cv_{k}")).collect();
            format!("`metric = cv_{name}`: the folds have no such metric; they have: {}", names.join(", "))
        })?;
        values.push(v);
    }
    Ok(crate::stats::mean_std(&values).0)
}

/// `tune.csv`: a row per trial: its number, values, state, metric, epochs and seconds.
pub fn to_csv(r: &TuneReport, space: &[Param]) -> String {
    let mut out = String::from("trial");
    for p in space {
        out.push(',');
        out.push_str(&p.name);
    }
    out.push_str(&format!(",state,{},pruned_at_epoch,epochs,seconds,note\n", r.metric));
    for t in &r.trials {
        out.push_str(&(t.index + 1).to_string());
        for (_, v) in &t.values {
            out.push(',');
            out.push_str(&csv_field(v));
        }
        let pruned = match t.state {
            State::Stopped(e) => e.to_string(),
            _ => String::new(),
        };
        let note = match &t.state {
            State::Failed(w) => csv_field(w),
            _ => String::new(),
        };
        out.push_str(&format!(
            ",{},{},{pruned},{},{},{note}\n",
            t.state.name(),
            t.metric.map(crate::metrics::format_number).unwrap_or_default(),
            t.epochs,
            crate::metrics::format_number(t.seconds)
        ));
    }
    out
}

fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\"").replace('\n', " "))
    } else {
        v.to_string()
    }
}

/// `tune.png`: the metric of every complete and pruned trial against each hyperparameter
/// (log10 of log-scaled ones, the option's position for choices; at most 8).
pub fn plot(path: &Path, model: &str, r: &TuneReport, space: &[Param]) -> Result<(), String> {
    use crate::ir::recipe::Dist;
    use crate::plot::{Panel, Series};
    let mut panels = Vec::new();
    for (k, p) in space.iter().enumerate().take(8) {
        let x_of = |v: &Value| -> f64 {
            match (v, &p.dist) {
                (Value::Num(x), Dist::LogUniform(..)) => x.log10(),
                (Value::Int(i), Dist::LogInt(..)) => (*i as f64).log10(),
                (Value::Num(x), _) => *x,
                (Value::Int(i), _) => *i as f64,
                (Value::Pick(i), _) => *i as f64,
            }
        };
        let points = |want: &dyn Fn(&State) -> bool| -> Vec<(f64, f64)> {
            r.trials.iter().filter(|t| want(&t.state)).filter_map(|t| Some((x_of(t.raw.get(k)?), t.metric?))).collect()
        };
        let x_label = match &p.dist {
            Dist::LogUniform(..) | Dist::LogInt(..) => format!("log10({})", p.name),
            Dist::Choice(o) => {
                let opts: Vec<String> = o.iter().enumerate().map(|(i, v)| format!("{i}: {v}")).collect();
                format!("{} (option {})", p.name, opts.join(", "))
            }
            _ => p.name.clone(),
        };
        let mut series = vec![Series { name: "complete".into(), points: points(&|s| *s == State::Complete) }];
        let pruned = points(&|s| matches!(s, State::Stopped(_)));
        if !pruned.is_empty() {
            series.push(Series { name: "pruned (value when stopped)".into(), points: pruned });
        }
        if series.iter().all(|s| s.points.is_empty()) {
            return Err("no trial has a value".into());
        }
        panels.push(Panel { title: p.name.clone(), x_label, y_label: r.metric.clone(), series });
    }
    crate::plot::plot_scatter_panels(path, &format!("{model}: {} search, {} trials", r.method, r.trials.len()), &panels)
}
