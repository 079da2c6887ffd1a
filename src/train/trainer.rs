//! `nnc train` as a library call: a `Session` fitted on the training part of the split,
//! with the run's files in its output folder (`last.safetensors`, `best.safetensors`,
//! `metrics.csv`, `curves.png`, `roc.png` for classifiers, `boundary.png` for models with
//! a 2-D input), and `evaluate`, which scores a checkpoint on exactly the rows it held out.
//!
//! Checkpoints store every parameter, state and optimizer state exactly, the fitted
//! preprocessing, the recipe and the split (`checkpoint`), so `--resume` continues
//! bit-identically and `eval` rebuilds the same test rows, or refuses. Nothing here
//! prints: progress goes to a callback, explanations into `Report::notes`.

use super::checkpoint::{self, SplitRecord};
use super::engine::labels_of;
use super::session::{End, Next, Observer, Progress, Session};
use super::target::{self, Evaluation};
use crate::data::{self, Array, ArrayData, Dataset, InputSpec, Preprocessor};
use crate::ir::Program;
use crate::metrics::{Metrics, MetricsLog};
use crate::tensors::{HostData, HostTensor, TensorMap};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

pub use super::engine::input_specs;

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub out_dir: PathBuf,
    /// Continue from `out_dir/last.safetensors`.
    pub resume: bool,
    /// JIT (default) or the reference interpreter.
    pub backend: crate::runtime::backend::Backend,
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

/// Progress events for the caller to show. The callback returns `Next::Stop` after an
/// epoch to end the run there (its test metrics are still computed); what it returns
/// for the other events is not used.
pub enum Event<'a> {
    /// Everything is checked and training starts (`resumed`: from this epoch and step).
    Start {
        resumed: Option<(usize, u64)>,
        out_dir: &'a Path,
    },
    Batch {
        epoch: usize,
        batch: usize,
        batches: usize,
        loss: f64,
        lr: f64,
    },
    Epoch(&'a EpochReport),
}

#[derive(Clone, Debug)]
pub struct Report {
    /// The held-out metrics as printed (`test_*`; `train_*` without a split).
    pub test: Metrics,
    /// Everything computed on those rows.
    pub all: Metrics,
    pub confusion: Option<String>,
    /// Explanations: what the metrics are computed on, names, skipped metrics.
    pub notes: Vec<String>,
    pub epochs_run: usize,
    pub best_epoch: Option<usize>,
    /// What chose the best epoch: `val_loss`, or `train_loss` without a validation part.
    pub best_by: String,
    pub best_value: f64,
    pub stopped_early: bool,
    pub interrupted: bool,
    /// The run had finished before (`--resume` of a finished run).
    pub already_finished: bool,
    pub seconds: f64,
    pub files: Vec<PathBuf>,
}

/// The data of a run: the loaded data set (preprocessed), its split and the record.
pub struct Prepared {
    pub ds: Dataset,
    /// The raw (unpreprocessed) data set.
    pub raw: Dataset,
    pub parts: Vec<Vec<usize>>,
    pub pre: Preprocessor,
    pub specs: Vec<InputSpec>,
    pub record: SplitRecord,
}

/// Whether `dir` holds a training run (a checkpoint or a log): a folder `train` does not
/// replace unless asked.
pub fn holds_run(dir: &Path) -> bool {
    dir.join("last.safetensors").exists() || dir.join("metrics.csv").exists()
}

/// Loads the data of a program's `train` block (raw) and checks its labels.
pub fn load_data(p: &Program, base_dir: &Path) -> crate::Result<(Dataset, Vec<InputSpec>)> {
    let s = &p.settings;
    let source = s.data.as_ref().ok_or_else(|| match (p.train.loss.is_some(), s.present) {
        (false, false) => format!("model `{}` has no loss and no `train` block: there is nothing to train", p.name),
        (false, true) => format!("model `{}` has no `loss`: there is nothing to train", p.name),
        _ => format!("the `train` block of model `{}` has no `data = ...` source", p.name),
    })?;
    let specs = input_specs(&p.train)?;
    let ds = data::load(source, base_dir, &specs)?;
    // Integer inputs read as ids (labels into one_hot, tokens into an embedding): every
    // value within range, or the sample is named.
    let bounds = crate::ir::id_bounds(&p.train);
    for (inp, bound) in p.train.inputs.iter().zip(bounds) {
        let (Some((b, what)), Some(a)) = (bound, ds.get(&inp.name)) else { continue };
        let per = a.per_sample().max(1);
        let bad = match &a.data {
            ArrayData::I32(v) => v.iter().position(|&x| x < 0 || i64::from(x) >= b).map(|i| (i, f64::from(v[i]))),
            ArrayData::F32(v) => v
                .iter()
                .position(|&x| !(x >= 0.0 && (x as f64) < b as f64) || x.fract() != 0.0)
                .map(|i| (i, f64::from(v[i]))),
        };
        if let Some((i, x)) = bad {
            let name =
                if inp.name == data::LABEL_INPUT { "label".to_string() } else { format!("`{}` value", inp.name) };
            return Err(format!(
                "{}: the {name} of sample {} (counting from 0) is {x}, outside 0..{b} (the {what})",
                source.render(),
                i / per
            )
            .into());
        }
    }
    Ok((ds, specs))
}

/// Divides rows by the program's split fractions and split seed (stratified by the
/// labels when there are any).
pub fn split_rows(p: &Program, ds: &Dataset) -> Result<Vec<Vec<usize>>, String> {
    let s = &p.settings;
    let label = ds.get(data::LABEL_INPUT).is_some().then_some(data::LABEL_INPUT);
    let parts = data::split(ds, &s.split, s.split_seed(), label)?;
    if parts.iter().skip(1).any(|p| p.is_empty()) {
        return Err(format!("a split part is empty: {} samples are too few for split {:?}", ds.n, s.split));
    }
    Ok(parts)
}

/// Loads the data, splits it, and fits preprocessing on the training part.
pub fn prepare(p: &Program, base_dir: &Path) -> crate::Result<Prepared> {
    let (raw, specs) = load_data(p, base_dir)?;
    let parts = split_rows(p, &raw)?;
    let pre = Preprocessor::fit(&p.settings.preprocess, &raw, &parts[0], &specs)?;
    super::teacher::check_preprocessing(&p.train, &pre.to_tensors())?;
    let mut ds = raw.clone();
    pre.apply_dataset(&mut ds)?;
    let record = SplitRecord::of(p, &raw);
    Ok(Prepared { ds, raw, parts, pre, specs, record })
}

/// The parts of a split: (train, validation, held-out rows, prefix of held-out metrics).
pub fn roles(parts: &[Vec<usize>]) -> (&[usize], Option<&[usize]>, &[usize], &'static str) {
    match parts.len() {
        3 => (&parts[0], Some(&parts[1]), &parts[2], "test_"),
        2 => (&parts[0], None, &parts[1], "test_"),
        _ => (&parts[0], None, &parts[0], "train_"),
    }
}

/// The hash of a model's source text that checkpoints record (`nnc.source_hash`).
pub fn source_hash(source: &str) -> String {
    fnv(source)
}

fn fnv(s: &str) -> String {
    format!("{:016x}", crate::rng::name_hash(s))
}

/// The preprocessing stored in a checkpoint's tensors.
pub fn preprocessor_of(tensors: &TensorMap, input: &str, path: &Path) -> Result<Preprocessor, String> {
    let mut m = BTreeMap::new();
    for (k, t) in tensors {
        if k.starts_with("preprocess.") {
            let v = t
                .floats()
                .ok_or_else(|| format!("`{}`: tensor `{k}` is {}, expected F32", path.display(), t.dtype_name()))?;
            m.insert(k.clone(), (t.shape.clone(), v.iter().map(|&x| x as f32).collect::<Vec<f32>>()));
        }
    }
    if m.is_empty() {
        return Ok(Preprocessor::none());
    }
    Preprocessor::from_tensors(&m, input).map_err(|e| format!("`{}`: {e}", path.display()))
}

/// The preprocessing stored in a checkpoint, checked against what its metadata says it
/// was trained with: a checkpoint that records a preprocessing but lacks its tensors is
/// refused rather than scored on unpreprocessed inputs.
pub fn checkpoint_preprocessor(path: &Path, input: &str) -> Result<Preprocessor, String> {
    let (tensors, meta) = checkpoint::read(path)?;
    checked_preprocessor(&tensors, &meta, input, None, path)
}

pub fn checked_preprocessor(
    tensors: &TensorMap,
    meta: &BTreeMap<String, String>,
    input: &str,
    features: Option<usize>,
    path: &Path,
) -> Result<Preprocessor, String> {
    let pre = preprocessor_of(tensors, input, path)?;
    if let Some(want) = features {
        if pre.kind() != "none" && pre.dim() != want {
            return Err(format!(
                "`{}`: `preprocess.mean` holds {} values, but input `{input}` has {want} features per sample",
                path.display(),
                pre.dim()
            ));
        }
    }
    if let Some(recorded) = meta.get("nnc.preprocess") {
        let name = recorded.split('(').next().unwrap_or("").trim();
        if name != "none" && pre.kind() == "none" {
            return Err(format!(
                "`{}` was trained with `preprocess = {recorded}` but has no `preprocess.*` tensors; it cannot be scored \
                 on raw inputs",
                path.display()
            ));
        }
    }
    Ok(pre)
}

/// A checkpoint's metadata.
fn meta_of(p: &Program, opts: &TrainOptions, record: &SplitRecord, at: &Progress) -> BTreeMap<String, String> {
    checkpoint_meta(p, &opts.source, record, at)
}

/// The metadata of a checkpoint of `p` (from `source`) trained on `record`'s split, at `at`.
pub fn checkpoint_meta(p: &Program, source: &str, record: &SplitRecord, at: &Progress) -> BTreeMap<String, String> {
    let mut m = BTreeMap::from([
        ("nnc.model".to_string(), p.name.clone()),
        ("nnc.source_hash".to_string(), fnv(source)),
        ("nnc.epoch".to_string(), at.epoch.to_string()),
        ("nnc.step".to_string(), at.step.to_string()),
        ("nnc.best".to_string(), at.best.to_string()),
        ("nnc.best_epoch".to_string(), at.best_epoch.map(|b| b.to_string()).unwrap_or_default()),
        ("nnc.bad_epochs".to_string(), at.bad_epochs.to_string()),
    ]);
    if p.settings.schedule.name == "plateau" {
        m.insert("nnc.lr_scale".into(), at.plateau.scale.to_string());
        m.insert("nnc.plateau_bad".into(), at.plateau.bad.to_string());
        if let Some(b) = at.plateau.best {
            m.insert("nnc.plateau_best".into(), b.to_string());
        }
    }
    if at.batch > 0 {
        m.insert("nnc.batch".into(), at.batch.to_string());
        m.insert("nnc.epoch_loss".into(), at.epoch_loss.to_string());
        m.insert("nnc.epoch_seen".into(), at.epoch_seen.to_string());
        m.insert("nnc.epoch_correct".into(), at.epoch_correct.to_string());
    }
    record.to_meta(&mut m);
    if let Some(on) = &p.settings.metrics_on {
        m.insert("nnc.metrics_on".into(), on.clone());
    }
    for (k, v) in checkpoint::recipe(p) {
        m.insert(format!("nnc.recipe.{k}"), v);
    }
    for (k, v) in &p.args {
        m.insert(format!("nnc.arg.{k}"), v.clone());
    }
    m
}

/// Writes a checkpoint: the session's tensors, the preprocessing and metadata, atomically.
fn save(path: &Path, s: &Session, pre: &Preprocessor, meta: BTreeMap<String, String>) -> Result<(), String> {
    save_tensors(path, s.tensors()?, pre, meta)
}

/// Writes a checkpoint of `tensors` (a session's) with the preprocessing and metadata.
pub fn save_tensors(
    path: &Path,
    mut map: TensorMap,
    pre: &Preprocessor,
    meta: BTreeMap<String, String>,
) -> Result<(), String> {
    for (k, (shape, v)) in pre.to_tensors() {
        map.insert(k, HostTensor::f32(shape, v.into_iter().map(f64::from).collect()));
    }
    crate::tensors::write(path, &map, Some(meta))
}

/// Checks a checkpoint to resume from against the run: the same model source, data,
/// split and recipe (only `epochs` may change), and metadata that makes sense. Returns
/// where to continue, and notes.
fn resume_point(
    meta: &BTreeMap<String, String>,
    p: &Program,
    opts: &TrainOptions,
    record: &SplitRecord,
    path: &Path,
    batches_in: &dyn Fn(usize) -> usize,
) -> Result<(Progress, Vec<String>), String> {
    let shown = path.display();
    if meta.get("nnc.source_hash") != Some(&fnv(&opts.source)) {
        return Err(format!(
            "`{shown}` was written by a different version of this model; remove it or train without --resume"
        ));
    }
    let had = SplitRecord::from_meta(meta, path)?;
    let mut diffs = Vec::new();
    if had.hash != record.hash || had.rows != record.rows {
        diffs.push(format!(
            "data: {} rows (hash {}) then, {} rows (hash {}) now",
            had.rows, had.hash, record.rows, record.hash
        ));
    }
    if had.split != record.split {
        diffs.push(format!("split: {:?} then, {:?} now", had.split, record.split));
    }
    if had.split_seed != record.split_seed {
        diffs.push(format!("split_seed: {} then, {} now", had.split_seed, record.split_seed));
    }
    if had.preprocess != record.preprocess {
        diffs.push(format!("preprocess: {} then, {} now", had.preprocess, record.preprocess));
    }
    let mut notes = Vec::new();
    for (k, now) in checkpoint::recipe(p) {
        let then = meta.get(&format!("nnc.recipe.{k}")).ok_or_else(|| {
            format!("`{shown}` does not record its recipe (no `nnc.recipe.{k}`: written by an older nnc); train again")
        })?;
        if *then == now {
            continue;
        }
        if crate::settings::setting(&k).is_some_and(|s| s.on_resume == crate::settings::OnResume::Extend) {
            if matches!(p.settings.schedule.name.as_str(), "cosine" | "cyclic" | "inverse_time" | "linear_warmup") {
                notes.push(format!(
                    "epochs changed from {then} to {now}: the {} schedule now spans the new total, so the learning \
                     rate continues from a different point of its curve",
                    p.settings.schedule.name
                ));
            }
            continue;
        }
        diffs.push(format!("{k}: {then} then, {now} now"));
    }
    if !diffs.is_empty() {
        return Err(format!(
            "`{shown}` belongs to a different run; --resume continues only the same run (only `epochs` may change):\n  {}",
            diffs.join("\n  ")
        ));
    }
    let bad = |k: &str| {
        format!("`{shown}`: metadata `{k}` is `{}`, which is not valid", meta.get(k).cloned().unwrap_or_default())
    };
    let int = |k: &str, max: u64| -> Result<u64, String> {
        match meta.get(k) {
            None => Ok(0),
            Some(v) => v.parse::<u64>().ok().filter(|&x| x <= max).ok_or_else(|| bad(k)),
        }
    };
    let epoch = int("nnc.epoch", 1 << 24)? as usize;
    let step = int("nnc.step", u64::MAX / 2)?;
    let best = match meta.get("nnc.best").map(|v| v.parse::<f64>()) {
        None => f64::INFINITY,
        Some(Ok(x)) if !x.is_nan() => x,
        _ => return Err(bad("nnc.best")),
    };
    let best_epoch = match meta.get("nnc.best_epoch").map(String::as_str) {
        None | Some("") => None,
        Some(v) => {
            Some(v.parse::<usize>().ok().filter(|&b| b >= 1 && b <= epoch).ok_or_else(|| bad("nnc.best_epoch"))?)
        }
    };
    let bad_epochs = int("nnc.bad_epochs", epoch as u64)? as usize;
    let batch = int("nnc.batch", batches_in(epoch) as u64)? as usize;
    let epoch_seen = int("nnc.epoch_seen", u64::MAX / 2)? as usize;
    let epoch_correct = int("nnc.epoch_correct", epoch_seen as u64)? as usize;
    let epoch_loss = match meta.get("nnc.epoch_loss").map(|v| v.parse::<f64>()) {
        None => 0.0,
        Some(Ok(x)) if x.is_finite() => x,
        _ => return Err(bad("nnc.epoch_loss")),
    };
    let before: usize = (0..epoch).map(batches_in).sum();
    if step < before as u64 && !p.settings.host_optimizer() {
        return Err(bad("nnc.step"));
    }
    let number = |k: &str, ok: &dyn Fn(f64) -> bool| -> Result<Option<f64>, String> {
        match meta.get(k).map(|v| v.parse::<f64>()) {
            None => Ok(None),
            Some(Ok(x)) if ok(x) => Ok(Some(x)),
            _ => Err(bad(k)),
        }
    };
    let plateau = crate::optim::schedule::Plateau {
        scale: number("nnc.lr_scale", &|x| x > 0.0 && x <= 1.0)?.unwrap_or(1.0),
        best: number("nnc.plateau_best", &f64::is_finite)?,
        bad: int("nnc.plateau_bad", epoch as u64)? as usize,
    };
    Ok((
        Progress { epoch, step, best, best_epoch, bad_epochs, batch, epoch_loss, epoch_seen, epoch_correct, plateau },
        notes,
    ))
}

/// Writes the log and the checkpoints as the fit goes.
struct Files<'a> {
    p: &'a Program,
    opts: &'a TrainOptions,
    record: &'a SplitRecord,
    pre: &'a Preprocessor,
    log: &'a mut MetricsLog,
    epochs: usize,
    progress: &'a mut dyn FnMut(Event) -> Next,
    /// Whether this process writes the run's files (rank 0 of a distributed run).
    writer: bool,
}

impl Observer for Files<'_> {
    fn batch(&mut self, epoch: usize, batch: usize, batches: usize, loss: f64, lr: f64) {
        let _ = (self.progress)(Event::Batch { epoch, batch, batches, loss, lr });
    }
    fn epoch(&mut self, s: &Session, at: &Progress, row: &[(String, f64)], improved: bool) -> Result<Next, String> {
        self.log.push(row)?;
        if self.writer {
            self.log.write_csv(&self.opts.out_dir.join("metrics.csv"))?;
            let meta = meta_of(self.p, self.opts, self.record, at);
            if improved {
                save(&self.opts.out_dir.join("best.safetensors"), s, self.pre, meta.clone())?;
            }
            save(&self.opts.out_dir.join("last.safetensors"), s, self.pre, meta)?;
        }
        Ok((self.progress)(Event::Epoch(&EpochReport {
            epoch: at.epoch,
            epochs: self.epochs,
            step: at.step,
            metrics: row.to_vec(),
        })))
    }
    fn interrupted(&mut self, s: &Session, at: &Progress) -> Result<(), String> {
        if !self.writer {
            return Ok(());
        }
        save(&self.opts.out_dir.join("last.safetensors"), s, self.pre, meta_of(self.p, self.opts, self.record, at))
    }
}

/// Trains a program. `stop` is polled after every step (Ctrl-C): a checkpoint is
/// written and the report says `interrupted`. The output folder is created only once
/// everything is checked.
pub fn train(
    p: &Program,
    base_dir: &Path,
    opts: &TrainOptions,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Event) -> Next,
) -> crate::Result<Report> {
    train_with(p, base_dir, opts, stop, progress, None)
}

/// A data-parallel run's communicator and whether to compare parameter hashes across
/// ranks after every epoch (`dist::comm`).
pub struct Distributed {
    pub comm: Box<dyn crate::dist::comm::Communicator>,
    pub check_params: bool,
    /// Overlap the gradient sums with the backward pass (`Session::distribute_with`).
    pub overlap: bool,
}

/// `train`, as one rank of a data-parallel run when `dist` is given: every rank reads
/// the same data and split and trains on its shard of every batch; rank 0 alone writes
/// the files (the others score as it does, and write nothing).
pub fn train_with(
    p: &Program,
    base_dir: &Path,
    opts: &TrainOptions,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Event) -> Next,
    dist: Option<Distributed>,
) -> crate::Result<Report> {
    let t0 = std::time::Instant::now();
    let prep = prepare(p, base_dir)?;
    let (train_rows, val_rows, held, prefix) = roles(&prep.parts);
    let mut session = Session::new(p, opts.backend, opts.threads)?;
    if let Some(d) = dist {
        session.distribute_with(d.comm, d.check_params, d.overlap)?;
    }
    let (rank, ranks) = session.rank();
    let writer = rank == 0;
    let mut notes = Vec::new();
    notes.push(session.target_note());
    if prefix == "train_" {
        notes.push("no held-out split (`split` is not set): the final metrics are on the training rows".into());
    }
    let last_path = opts.out_dir.join("last.safetensors");
    let mut at = Progress::default();
    let mut log = MetricsLog::new();
    let mut resumed = None;
    if opts.resume {
        if !last_path.exists() {
            return Err(format!("there is no run to resume: `{}` does not exist", last_path.display()).into());
        }
        let (tensors, meta) = checkpoint::read(&last_path)?;
        let (point, more) = resume_point(&meta, p, opts, &prep.record, &last_path, &|e| {
            train_rows.len().div_ceil(session.batch_for(train_rows.len(), e))
        })?;
        notes.extend(more);
        checkpoint::validate(session.step_graph(), &tensors, &last_path, true)?;
        session.init(0, train_rows.len())?;
        session.load_tensors(&tensors, train_rows.len())?;
        let csv = opts.out_dir.join("metrics.csv");
        if csv.exists() {
            log = read_log(&csv).map_err(|e| format!("cannot continue `{}`: {e}", csv.display()))?;
        }
        resumed = Some((point.epoch, point.step));
        at = point;
    } else {
        session.init(p.settings.seed as u64, train_rows.len())?;
    }
    session.augment_from(&prep.raw, &prep.pre)?;
    if writer {
        std::fs::create_dir_all(&opts.out_dir)
            .map_err(|e| format!("cannot create `{}`: {e}", opts.out_dir.display()))?;
        crate::tensors::remove_stale_temps(&opts.out_dir);
    }
    let epochs = p.settings.epochs as usize;
    let already_finished = opts.resume && at.epoch >= epochs;
    let _ = progress(Event::Start { resumed, out_dir: &opts.out_dir });
    let end = {
        let mut files = Files {
            p,
            opts,
            record: &prep.record,
            pre: &prep.pre,
            log: &mut log,
            epochs,
            progress: &mut *progress,
            writer,
        };
        session.fit(&prep.ds, train_rows, val_rows, &mut at, stop, &mut files).map_err(|e| {
            if last_path.exists() {
                format!("{e}; the last good checkpoint is `{}`", last_path.display())
            } else {
                format!("{e}; no checkpoint was written yet")
            }
        })?
    };
    let best_by = p.settings.monitor();
    let mut files = vec![last_path.clone(), opts.out_dir.join("best.safetensors"), opts.out_dir.join("metrics.csv")];
    let mut report = Report {
        test: Metrics::new(),
        all: Metrics::new(),
        confusion: None,
        notes,
        epochs_run: at.epoch,
        best_epoch: at.best_epoch,
        best_by,
        best_value: at.best,
        stopped_early: end == End::StoppedEarly,
        interrupted: end == End::Interrupted,
        already_finished,
        seconds: 0.0,
        files: vec![],
    };
    if let Some(t) = session.step_times().filter(|t| t.steps > 0) {
        let ms = |x: f64| 1e3 * x / t.steps as f64;
        report.notes.push(format!(
            "{ranks} ranks, {} steps: per step {:.3} ms (rank 0: forward, backward, gradient sums, update), \
             {:.3} ms starting gradient sums, {:.3} ms waiting for them, {:.3} ms summing the loss and counts",
            t.steps,
            ms(t.step),
            ms(t.sum_start),
            ms(t.sum_wait),
            ms(t.stats)
        ));
    }
    // Every rank of a distributed run scores its share of the held-out rows (a collective).
    let held_scores = if end != End::Interrupted { Some(session.score(&prep.ds, held)?) } else { None };
    if !writer {
        report.files = Vec::new();
        report.seconds = t0.elapsed().as_secs_f64();
        return Ok(report);
    }
    if let Some(scores) = held_scores {
        let ev = target::report(&prep.ds, held, &scores, session.kind, prefix, &p.settings.metrics);
        report.notes.extend(ev.notes.iter().cloned());
        if p.settings.metrics.iter().any(|m| m == "confusion") {
            report.confusion = ev.confusion.as_ref().map(|c| c.to_table(None));
        }
        report.test = ev.shown.clone();
        report.all = ev.all.clone();
        if ev.classes >= 2 {
            let path = opts.out_dir.join("roc.png");
            let title = format!("{}: ROC and precision-recall ({} rows)", p.name, &prefix[..prefix.len() - 1]);
            match roc_plot(&path, &title, &prep.ds, held, &scores, session.kind, ev.classes) {
                Ok(()) => files.push(path),
                Err(e) => report.notes.push(format!("roc.png not drawn: {e}")),
            }
        }
        let curves = opts.out_dir.join("curves.png");
        if !log.is_empty() {
            crate::plot::plot_curves(&curves, &log, &format!("{} training", p.name))?;
            files.push(curves);
        }
        // `log_grad_norms`: the per-parameter norms on log axes.
        if p.settings.log_grad_norms && !log.is_empty() {
            let path = opts.out_dir.join("grad_norms.png");
            match grad_norm_plot(&path, &log, &p.name) {
                Ok(()) => files.push(path),
                Err(e) => report.notes.push(format!("grad_norms.png not drawn: {e}")),
            }
        }
        // The decision boundary of a model with a 2-D input.
        if let Some(spec) = prep.specs.first() {
            if spec.per_sample_shape == [2] && labels_of(&prep.ds, train_rows).is_some() && session.target.is_ok() {
                let path = opts.out_dir.join("boundary.png");
                boundary(&path, p, &mut session, &prep.ds, train_rows, &spec.name)?;
                files.push(path);
            }
        }
    }
    report.files = files;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// The result of `evaluate`.
#[derive(Clone, Debug)]
pub struct EvalReport {
    pub eval: Evaluation,
    /// The raw scores of the held-out rows (for ensembles).
    pub scores: target::Scores,
    pub kind: crate::metrics::ScoreKind,
    pub record: SplitRecord,
    /// Which rows were scored: "the test split (360 rows)".
    pub rows: String,
    pub notes: Vec<String>,
    /// The preprocessed data and the held-out rows.
    pub held_data: (Dataset, Vec<usize>),
}

/// Scores several checkpoints of one model on their common held-out rows, each alone and
/// as an ensemble that averages the members' probabilities (softmax of logits, sigmoid of
/// one logit; the mean prediction of a regressor). On held-out rows, the members must
/// share their split (same data, fractions and split seed).
pub fn evaluate_ensemble(
    p: &Program,
    base_dir: &Path,
    checkpoints: &[PathBuf],
    backend: crate::runtime::backend::Backend,
    source: &str,
    rows: EvalData,
) -> Result<(Vec<EvalReport>, Evaluation), String> {
    let mut members = Vec::new();
    for c in checkpoints {
        let r = evaluate_on(p, base_dir, c, backend, source, rows)?;
        if let (Some(first), EvalData::HeldOut) = (members.first(), rows) {
            let f: &EvalReport = first;
            if f.record != r.record {
                return Err(format!(
                    "`{}` was trained on another split than `{}`; an ensemble is scored on the rows all its members held out",
                    c.display(),
                    checkpoints[0].display()
                ));
            }
        }
        members.push(r);
    }
    let first = members.first().ok_or("an ensemble needs at least one checkpoint")?;
    let (ds, held) = &first.held_data;
    let width = first.scores.width;
    let n = held.len();
    let mut avg = vec![0f64; n * width];
    let classifier = first.eval.classes >= 2;
    for m in &members {
        if m.scores.width != width || m.scores.values.len() != n * width {
            return Err("the members' outputs differ in shape".into());
        }
        let values: Vec<f64> = m.scores.values.iter().map(|&x| f64::from(x)).collect();
        let probs = if classifier && m.kind == crate::metrics::ScoreKind::Logits {
            crate::metrics::probabilities(&values, width)
        } else {
            values
        };
        for (a, p) in avg.iter_mut().zip(probs) {
            *a += p / members.len() as f64;
        }
    }
    let scores = target::Scores { loss: f64::NAN, values: avg.iter().map(|&x| x as f32).collect(), width };
    let kind = if classifier { crate::metrics::ScoreKind::Probabilities } else { first.kind };
    let mut ev = target::report(ds, held, &scores, kind, "", &p.settings.metrics);
    ev.all.remove("loss");
    ev.shown.remove("loss");
    ev.notes.push(format!(
        "the ensemble averages the {} members' {}; it has no loss of its own",
        members.len(),
        if classifier { "probabilities" } else { "predictions" }
    ));
    Ok((members, ev))
}

/// The rows `evaluate` scores.
#[derive(Clone, Copy)]
pub enum EvalData<'a> {
    /// Exactly the rows the checkpoint held out: the split it records (seed, fractions)
    /// over the model's data source, which must be the data it was trained on (same rows
    /// and hash).
    HeldOut,
    /// Every row of a data set (raw: the checkpoint's preprocessing is applied), with a
    /// name for people (`new.csv`).
    All(&'a Dataset, &'a str),
}

/// Scores a checkpoint on `rows` (`EvalData`), with the checkpoint's own preprocessing.
pub fn evaluate(
    p: &Program,
    base_dir: &Path,
    checkpoint_path: &Path,
    backend: crate::runtime::backend::Backend,
    source: &str,
) -> Result<EvalReport, String> {
    evaluate_on(p, base_dir, checkpoint_path, backend, source, EvalData::HeldOut)
}

/// The warning for a checkpoint trained from another version of the model file.
pub fn source_warning(meta: &BTreeMap<String, String>, source: &str, path: &Path) -> Option<String> {
    meta.get("nnc.source_hash").filter(|h| **h != fnv(source)).map(|_| {
        format!(
            "warning: `{}` was trained from a different version of this model file; its parameters fit the \
             shapes, but their meaning may have changed",
            path.display()
        )
    })
}

/// A checkpoint with the data it was trained on (`rebuild`).
pub struct Rebuilt {
    /// The program as the checkpoint was trained: its split, split seed and metrics_on.
    pub q: Program,
    pub tensors: TensorMap,
    pub meta: BTreeMap<String, String>,
    pub record: SplitRecord,
    /// The rows, preprocessed with the checkpoint's preprocessing.
    pub ds: Dataset,
    pub pre: Preprocessor,
    /// The split's parts (`roles`); one part of every row for `EvalData::All`.
    pub parts: Vec<Vec<usize>>,
    /// The rows scored: the held-out part (or every row).
    pub held: Vec<usize>,
    /// Which rows `held` are, for people: "the test split (360 rows)".
    pub rows: String,
    pub notes: Vec<String>,
}

/// Reads a checkpoint and rebuilds its data: the recorded split over the model's data
/// source, which must be the data it was trained on (same rows and hash), or the rows
/// given; the checkpoint's preprocessing applied; its tensors checked against the model.
pub fn rebuild(
    p: &Program,
    base_dir: &Path,
    checkpoint_path: &Path,
    source: &str,
    rows: EvalData,
) -> Result<Rebuilt, String> {
    rebuild_from(p, base_dir, checkpoint_path, source, rows, None)
}

/// `rebuild` with the tensors given (a PyTorch state dict read from `checkpoint_path`,
/// in nnc's names) instead of read from a checkpoint: no split record, so only
/// `EvalData::All`, and no preprocessing.
fn rebuild_from(
    p: &Program,
    base_dir: &Path,
    checkpoint_path: &Path,
    source: &str,
    rows: EvalData,
    given: Option<TensorMap>,
) -> Result<Rebuilt, String> {
    let (tensors, meta, record) = match (given, &rows) {
        (Some(t), EvalData::All(ds, _)) => (t, BTreeMap::new(), SplitRecord::of(p, ds)),
        (Some(_), EvalData::HeldOut) => {
            return Err(format!(
                "`{}` is a state dict without a split record: score it on a data file (`--data`)",
                checkpoint_path.display()
            ))
        }
        (None, _) => {
            let (t, meta) = checkpoint::read(checkpoint_path)?;
            let record = SplitRecord::from_meta(&meta, checkpoint_path)?;
            (t, meta, record)
        }
    };
    let shown = checkpoint_path.display();
    let mut notes: Vec<String> = source_warning(&meta, source, checkpoint_path).into_iter().collect();
    let mut q = p.clone();
    // A quantized checkpoint is scored with its int8 activations.
    q.eval = crate::compress::quantize::eval_graph(&p.eval, &tensors, &meta, &shown.to_string())?;
    q.settings.split = record.split.clone();
    if record.split_seed != p.settings.split_seed() || record.split != p.settings.split {
        notes.push(format!(
            "using the checkpoint's split ({:?}, split_seed {}), not the file's ({:?}, split_seed {})",
            record.split,
            record.split_seed,
            p.settings.split,
            p.settings.split_seed()
        ));
    }
    q.settings.split_seed = Some(record.split_seed as i64);
    if let Some(on) = meta.get("nnc.metrics_on") {
        q.settings.metrics_on = Some(on.clone());
    }
    let (mut ds, specs, parts, all) = match rows {
        EvalData::HeldOut => {
            let (raw, specs) = load_data(&q, base_dir)?;
            let hash = checkpoint::data_hash(&raw);
            if hash != record.hash || raw.n != record.rows {
                return Err(format!(
                    "the data changed since `{shown}` was trained: {} now has {} rows (hash {hash}), the checkpoint \
                     was trained on {} rows (hash {}); its held-out rows cannot be rebuilt",
                    record.data, raw.n, record.rows, record.hash
                ));
            }
            let parts = split_rows(&q, &raw)?;
            (raw, specs, parts, false)
        }
        EvalData::All(given, _) => {
            let specs = input_specs(&q.train)?;
            (given.clone(), specs, vec![(0..given.n).collect()], true)
        }
    };
    let held = if all { parts[0].clone() } else { roles(&parts).2.to_vec() };
    let mut pre = Preprocessor::none();
    if let Some(spec) = data::preprocess_input(&specs) {
        let n = spec.per_sample_shape.iter().product();
        pre = checked_preprocessor(&tensors, &meta, &spec.name, Some(n), checkpoint_path)?;
        super::teacher::check_preprocessing(&q.eval, &pre.to_tensors())?;
        pre.apply_dataset(&mut ds)?;
    }
    checkpoint::validate(&q.eval, &tensors, checkpoint_path, true)?;
    let rows = if let EvalData::All(_, name) = rows {
        format!("all {} rows of {name}", held.len())
    } else if roles(&parts).3 == "train_" {
        notes.push("the checkpoint was trained without a split: these are its training rows".into());
        format!("the training rows ({} rows, no held-out split)", held.len())
    } else {
        format!("the test split ({} rows)", held.len())
    };
    Ok(Rebuilt { q, tensors, meta, record, ds, pre, parts, held, rows, notes })
}

/// `evaluate` on the given rows.
pub fn evaluate_on(
    p: &Program,
    base_dir: &Path,
    checkpoint_path: &Path,
    backend: crate::runtime::backend::Backend,
    source: &str,
    rows: EvalData,
) -> Result<EvalReport, String> {
    evaluate_from(p, base_dir, checkpoint_path, backend, source, rows, None)
}

/// `evaluate_on` a PyTorch state dict (safetensors, torch.nn names and layouts) on the
/// rows of a data file.
pub fn evaluate_torch(
    p: &Program,
    state_dict: &Path,
    backend: crate::runtime::backend::Backend,
    rows: EvalData,
) -> Result<EvalReport, String> {
    let sd = crate::tensors::read(state_dict)?;
    let t = crate::torch::from_state_dict(&p.eval, &sd, &state_dict.display().to_string())?;
    evaluate_from(p, Path::new("."), state_dict, backend, "", rows, Some(t))
}

fn evaluate_from(
    p: &Program,
    base_dir: &Path,
    checkpoint_path: &Path,
    backend: crate::runtime::backend::Backend,
    source: &str,
    rows: EvalData,
    given: Option<TensorMap>,
) -> Result<EvalReport, String> {
    let Rebuilt { q, tensors, record, ds, held, rows, mut notes, .. } =
        rebuild_from(p, base_dir, checkpoint_path, source, rows, given)?;
    let mut session = Session::new(&q, backend, 1)?;
    session.init(0, held.len())?;
    session.load_tensors(&tensors, held.len())?;
    notes.push(session.target_note());
    let scores = session.score(&ds, &held)?;
    let ev = target::report(&ds, &held, &scores, session.kind, "", &q.settings.metrics);
    Ok(EvalReport { eval: ev, rows, notes, scores, kind: session.kind, record, held_data: (ds, held) })
}

/// ROC and precision-recall curves of held-out scores (one-vs-rest per class for more
/// than two classes), with the AUC and the average precision in the legend.
fn roc_plot(
    path: &Path,
    title: &str,
    ds: &Dataset,
    rows: &[usize],
    scores: &super::target::Scores,
    kind: crate::metrics::ScoreKind,
    classes: usize,
) -> Result<(), String> {
    use crate::metrics as m;
    let labels = labels_of(ds, rows).ok_or("no class labels")?;
    let (mut roc, mut pr) = (Vec::new(), Vec::new());
    let wanted: Vec<usize> = if classes == 2 { vec![1] } else { (0..classes).collect() };
    for c in wanted {
        let pos = m::positive_scores(&scores.values, scores.width, kind, c)?;
        let y: Vec<i32> = labels.iter().map(|&l| i32::from(l as usize == c)).collect();
        if !y.contains(&1) || !y.contains(&0) {
            continue;
        }
        let name = if classes == 2 { "class 1".to_string() } else { format!("class {c}") };
        let (r, a) = (m::roc_curve(&pos, &y)?, m::roc_auc_binary(&pos, &y)?);
        let (q, ap) = (m::pr_curve(&pos, &y)?, m::average_precision(&pos, &y)?);
        let (rs, ps) = crate::plot::roc_pr_series(&name, &r, a, &q, ap);
        roc.push(rs);
        pr.push(ps);
    }
    if roc.is_empty() {
        return Err("no class has both positive and negative rows".into());
    }
    crate::plot::plot_roc_pr(path, title, &roc, &pr)
}

/// The decision regions of a 2-D classifier over its training points.
fn boundary(
    path: &Path,
    p: &Program,
    session: &mut Session,
    ds: &Dataset,
    rows: &[usize],
    input: &str,
) -> Result<(), String> {
    let x = ds.get(input).and_then(Array::as_f32).ok_or("no features")?;
    let points: Vec<[f32; 2]> = rows.iter().map(|&r| [x[2 * r], x[2 * r + 1]]).collect();
    let labels = labels_of(ds, rows).ok_or("no labels")?;
    let classes = (labels.iter().copied().max().unwrap_or(1) + 1).max(2) as usize;
    let kind = session.kind;
    let mut predict = |pts: &[[f32; 2]]| -> Result<Vec<i32>, String> {
        let flat: Vec<f32> = pts.iter().flat_map(|p| p.iter().copied()).collect();
        let arrays =
            BTreeMap::from([(input.to_string(), Array { shape: vec![pts.len(), 2], data: ArrayData::F32(flat) })]);
        let grid = Dataset { n: pts.len(), arrays };
        let all: Vec<usize> = (0..pts.len()).collect();
        let sc = session.predict(&grid, &all)?;
        crate::metrics::predicted_classes(&sc.values, sc.width.max(1), kind)
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

/// `grad_norms.png`: every parameter's mean gradient L2 norm per epoch and its mean
/// update/parameter norm ratio, on logarithmic axes.
fn grad_norm_plot(path: &Path, log: &MetricsLog, model: &str) -> Result<(), String> {
    use super::session::{GRAD_NORM_PREFIX, UPDATE_RATIO_PREFIX};
    use crate::plot::{prefixed_series, Panel};
    let x = crate::plot::x_axis_name(log);
    let panels = vec![
        Panel {
            title: "Gradient L2 norm (mean over the epoch's steps)".into(),
            x_label: x.clone(),
            y_label: "||grad|| (log scale)".into(),
            series: prefixed_series(log, GRAD_NORM_PREFIX),
        },
        Panel {
            title: "Update / parameter norm ratio".into(),
            x_label: x,
            y_label: "||dw|| / ||w|| (log scale)".into(),
            series: prefixed_series(log, UPDATE_RATIO_PREFIX),
        },
    ];
    crate::plot::plot_log_panels(path, &format!("{model}: gradient norms per parameter"), &panels)
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

/// An engine array as a named tensor (a data file's inputs for `run_named`).
pub fn tensor_of(a: &Array) -> HostTensor {
    match &a.data {
        ArrayData::F32(v) => HostTensor::f32(a.shape.clone(), v.iter().map(|&x| f64::from(x)).collect()),
        ArrayData::I32(v) => HostTensor { shape: a.shape.clone(), data: HostData::I32(v.clone()) },
    }
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
