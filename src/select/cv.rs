//! Cross-validation: a recipe trained from fresh initialization on K-1 folds and scored
//! on the held-out fold, K times, with one `Session` (the steps are compiled once per
//! batch size, not once per fold).
//!
//! Folds are stratified by the labels of a classifier (`data::kfold`) and cover every row
//! of the data source exactly once; the `split` of the train block does not apply, except
//! that a three-part split (which early stopping needs) carves the same validation share
//! out of each fold's training rows. Preprocessing is fitted on each fold's training rows
//! only, so no statistic of the held-out fold leaks into its model.
//!
//! Over several ranks (`cross_validate_with` given a communicator), fold `i` runs on rank
//! `i mod N` with the rank's own session; the folds' results are gathered to every rank
//! (`comm::allgather_bytes`) and summarized as one process does. A fold's result
//! depends only on its rows and the recipe (every fold starts from the seeded
//! initialization), so the folds and the summary equal a one-process run's.

use crate::data::{self, Dataset, Preprocessor};
use crate::dist::comm::{self, Communicator, Unwire, Wire};
use crate::ir::Program;
use crate::metrics::Metrics;
use crate::train::session::{Progress, Quiet, Session};
use crate::train::target;
use crate::train::trainer::load_data;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// How the rows are divided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Folds {
    /// K folds (stratified for classifiers).
    K(usize),
    /// Leave-one-out: one fold per row.
    LeaveOneOut,
}

impl std::str::FromStr for Folds {
    type Err = String;
    fn from_str(s: &str) -> Result<Folds, String> {
        if s == "loo" {
            return Ok(Folds::LeaveOneOut);
        }
        match s.parse::<usize>() {
            Ok(k) if k >= 2 => Ok(Folds::K(k)),
            _ => Err(format!("--folds takes a number of folds (2 or more) or `loo`, found `{s}`")),
        }
    }
}

/// One fold's result.
#[derive(Clone, Debug)]
pub struct FoldResult {
    /// From 1.
    pub fold: usize,
    pub train_rows: usize,
    pub test_rows: usize,
    /// The metrics as `train` prints them (no prefix: `accuracy`, `loss`, ...).
    pub metrics: Metrics,
    /// Everything computed on the held-out fold.
    pub all: Metrics,
    /// Per held-out row, whether the classifier got it right (for paired tests).
    pub correct: Option<Vec<bool>>,
    pub held_out: Vec<usize>,
    pub epochs: usize,
    pub steps: u64,
    pub seconds: f64,
}

/// The whole cross-validation.
#[derive(Clone, Debug)]
pub struct CvReport {
    pub folds: Vec<FoldResult>,
    /// For every metric of the first fold: (name, mean, sample standard deviation).
    pub summary: Vec<(String, f64, f64)>,
    pub notes: Vec<String>,
    /// Rows of the data source.
    pub rows: usize,
    pub seconds: f64,
    /// Training steps compiled for all the folds (one per batch size, not one per fold).
    pub compiled_steps: usize,
}

/// The label array to stratify by: the labels of a classifier, none for a regressor.
fn class_labels(ds: &Dataset) -> Option<&'static str> {
    let all: Vec<usize> = (0..ds.n).collect();
    crate::train::engine::labels_of(ds, &all).map(|_| data::LABEL_INPUT)
}

/// The folds of `ds` for a program (stratified by its labels when it has any).
pub fn folds_of(p: &Program, ds: &Dataset, folds: Folds) -> Result<Vec<Vec<usize>>, String> {
    match folds {
        Folds::LeaveOneOut => Ok(data::leave_one_out(ds.n)),
        Folds::K(k) => data::kfold(ds, k, p.settings.split_seed(), class_labels(ds)),
    }
}

/// Trains and scores one fold: `train` rows (with the validation share of a three-part
/// split carved out), `held` rows scored.
pub fn run_fold(
    session: &mut Session,
    raw: &Dataset,
    train: &[usize],
    held: &[usize],
    stop: &AtomicBool,
) -> Result<(target::Evaluation, Progress, Option<Vec<bool>>), String> {
    let p = session.program.clone();
    let s = &p.settings;
    let (fit_rows, val_rows): (Vec<usize>, Option<Vec<usize>>) = if s.split.len() == 3 {
        let share = s.split[1] / (s.split[0] + s.split[1]);
        let sub = raw.subset(train);
        let parts = data::split(&sub, &[1.0 - share, share], s.split_seed(), class_labels(&sub))?;
        let map = |rows: &[usize]| rows.iter().map(|&r| train[r]).collect::<Vec<usize>>();
        (map(&parts[0]), Some(map(&parts[1])))
    } else {
        (train.to_vec(), None)
    };
    let specs = crate::train::engine::input_specs(&p.train)?;
    let pre = Preprocessor::fit(&s.preprocess, raw, &fit_rows, &specs)?;
    crate::train::teacher::check_preprocessing(&p.train, &pre.to_tensors())?;
    let mut ds = raw.clone();
    pre.apply_dataset(&mut ds)?;
    session.init(s.seed as u64, fit_rows.len())?;
    session.augment_from(raw, &pre)?;
    let mut at = Progress::default();
    session.fit(&ds, &fit_rows, val_rows.as_deref(), &mut at, stop, &mut Quiet)?;
    let scores = session.score(&ds, held)?;
    let ev = target::report(&ds, held, &scores, session.kind, "", &s.metrics);
    let correct = crate::train::engine::labels_of(&ds, held).and_then(|labels| {
        crate::metrics::predicted_classes(&scores.values, scores.width.max(1), session.kind)
            .ok()
            .map(|pred| pred.iter().zip(&labels).map(|(a, b)| a == b).collect())
    });
    Ok((ev, at, correct))
}

/// Cross-validates a program on its data source. `on_fold` sees every fold's result as
/// it finishes.
pub fn cross_validate(
    p: &Program,
    base_dir: &Path,
    folds: Folds,
    backend: crate::runtime::backend::Backend,
    threads: usize,
    stop: &AtomicBool,
    on_fold: &mut dyn FnMut(&FoldResult),
) -> Result<CvReport, String> {
    cross_validate_with(p, base_dir, folds, backend, threads, stop, on_fold, None)
}

/// `cross_validate` as one rank of a group (`comm`): this rank runs folds `rank, rank +
/// N, ...`, then every rank gets every fold's result (a collective: every rank calls it)
/// and `on_fold` sees them all, in fold order. `compiled_steps` is the sum over ranks.
#[allow(clippy::too_many_arguments)]
pub fn cross_validate_with(
    p: &Program,
    base_dir: &Path,
    folds: Folds,
    backend: crate::runtime::backend::Backend,
    threads: usize,
    stop: &AtomicBool,
    on_fold: &mut dyn FnMut(&FoldResult),
    comm: Option<&mut dyn Communicator>,
) -> Result<CvReport, String> {
    let (rank, size) = comm.as_ref().map_or((0, 1), |c| (c.rank(), c.size()));
    let t0 = std::time::Instant::now();
    let (raw, _) = load_data(p, base_dir)?;
    let parts = folds_of(p, &raw, folds)?;
    let mut session = Session::new(p, backend, threads)?;
    let mut notes = Vec::new();
    notes.push(session.target_note());
    if p.settings.split.len() == 3 {
        notes.push(format!(
            "each fold's training rows keep the validation share of `split` ({:.3}) for early stopping",
            p.settings.split[1] / (p.settings.split[0] + p.settings.split[1])
        ));
    } else if !p.settings.split.is_empty() {
        notes.push("`split` does not apply: the folds cover every row".into());
    }
    let mut results: Vec<FoldResult> = Vec::new();
    let mut fold_notes = Vec::new();
    // With a communicator, each fold's notes travel with it (the last fold's are kept).
    let mut mine: Vec<(FoldResult, Vec<String>)> = Vec::new();
    for (i, held) in parts.iter().enumerate().skip(rank).step_by(size) {
        let tf = std::time::Instant::now();
        let train: Vec<usize> =
            parts.iter().enumerate().filter(|(j, _)| *j != i).flat_map(|(_, f)| f.iter().copied()).collect();
        let (ev, at, correct) = run_fold(&mut session, &raw, &train, held, stop)?;
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(format!("interrupted in fold {} of {}", i + 1, parts.len()));
        }
        fold_notes = ev.notes.clone();
        let r = FoldResult {
            fold: i + 1,
            train_rows: train.len(),
            test_rows: held.len(),
            metrics: ev.shown,
            all: ev.all,
            correct,
            held_out: held.clone(),
            epochs: at.epoch,
            steps: at.step,
            seconds: tf.elapsed().as_secs_f64(),
        };
        if comm.is_some() {
            mine.push((r, ev.notes));
            continue;
        }
        on_fold(&r);
        results.push(r);
    }
    let mut compiled_steps = session.compiled_steps();
    if let Some(c) = comm {
        let mut w = Wire::default();
        w.u64(compiled_steps as u64);
        w.u64(mine.len() as u64);
        for (r, n) in &mine {
            encode_fold(&mut w, r, n);
        }
        let mut all: Vec<(FoldResult, Vec<String>)> = Vec::new();
        compiled_steps = 0;
        for bytes in comm::allgather_bytes(c, &w.0)? {
            let mut u = Unwire::new(&bytes);
            compiled_steps += u.u64()? as usize;
            for _ in 0..u.u64()? {
                all.push(decode_fold(&mut u, &parts)?);
            }
        }
        all.sort_by_key(|(r, _)| r.fold);
        if all.len() != parts.len() {
            return Err(format!("internal error: {} of {} folds came back from the ranks", all.len(), parts.len()));
        }
        for (r, n) in all {
            on_fold(&r);
            fold_notes = n;
            results.push(r);
        }
    }
    notes.extend(fold_notes);
    let mut summary = Vec::new();
    if let Some(first) = results.first() {
        for k in first.metrics.keys() {
            let vals: Vec<f64> = results.iter().filter_map(|r| r.metrics.get(k).copied()).collect();
            let (mean, std) = crate::stats::mean_std(&vals);
            summary.push((k.clone(), mean, std));
        }
    }
    Ok(CvReport { folds: results, summary, notes, rows: raw.n, seconds: t0.elapsed().as_secs_f64(), compiled_steps })
}

fn encode_metrics(w: &mut Wire, m: &Metrics) {
    w.u64(m.len() as u64);
    for (k, v) in m {
        w.str(k);
        w.f64(*v);
    }
}

fn decode_metrics(u: &mut Unwire) -> Result<Metrics, String> {
    let mut m = Metrics::new();
    for _ in 0..u.u64()? {
        let k = u.str()?;
        m.insert(k, u.f64()?);
    }
    Ok(m)
}

/// A fold's result and notes for another rank (its held-out rows are the fold's own).
fn encode_fold(w: &mut Wire, r: &FoldResult, notes: &[String]) {
    for x in [r.fold, r.train_rows, r.test_rows, r.epochs] {
        w.u64(x as u64);
    }
    w.u64(r.steps);
    w.f64(r.seconds);
    encode_metrics(w, &r.metrics);
    encode_metrics(w, &r.all);
    match &r.correct {
        Some(c) => {
            w.u64(1);
            w.bytes(&c.iter().map(|&b| u8::from(b)).collect::<Vec<u8>>());
        }
        None => w.u64(0),
    }
    w.u64(notes.len() as u64);
    for n in notes {
        w.str(n);
    }
}

fn decode_fold(u: &mut Unwire, parts: &[Vec<usize>]) -> Result<(FoldResult, Vec<String>), String> {
    let fold = u.u64()? as usize;
    let (train_rows, test_rows, epochs) = (u.u64()? as usize, u.u64()? as usize, u.u64()? as usize);
    let (steps, seconds) = (u.u64()?, u.f64()?);
    let (metrics, all) = (decode_metrics(u)?, decode_metrics(u)?);
    let correct = match u.u64()? {
        0 => None,
        _ => Some(u.bytes()?.iter().map(|&b| b != 0).collect()),
    };
    let notes = (0..u.u64()?).map(|_| u.str()).collect::<Result<Vec<String>, String>>()?;
    let held_out = parts.get(fold.wrapping_sub(1)).ok_or("internal error: a rank sent an unknown fold")?.clone();
    let r = FoldResult { fold, train_rows, test_rows, metrics, all, correct, held_out, epochs, steps, seconds };
    Ok((r, notes))
}

/// `cv.csv`: a header and one row per fold (fold, rows, every metric, epochs, seconds).
pub fn to_csv(r: &CvReport) -> String {
    let keys: Vec<&String> = r.folds.first().map(|f| f.metrics.keys().collect()).unwrap_or_default();
    let mut out = String::from("fold,train_rows,test_rows");
    for k in &keys {
        out.push(',');
        out.push_str(k);
    }
    out.push_str(",epochs,steps,seconds\n");
    for f in &r.folds {
        out.push_str(&format!("{},{},{}", f.fold, f.train_rows, f.test_rows));
        for k in &keys {
            out.push(',');
            out.push_str(&f.metrics.get(*k).map(|v| crate::metrics::format_number(*v)).unwrap_or_default());
        }
        out.push_str(&format!(",{},{},{}\n", f.epochs, f.steps, crate::metrics::format_number(f.seconds)));
    }
    out
}
