//! Training a [`Model`]: a run with its files, watched by an [`Observer`] that may stop
//! it; the checkpoints a run writes ([`Checkpoint`]); and scoring a checkpoint on the
//! rows it held out.

use super::model::Model;
use crate::error::{Error, Result};
use crate::train::session::Next;
use crate::train::trainer::{self, Event};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Metrics by name (`test_accuracy`, `val_loss`, ...).
pub type Metrics = BTreeMap<String, f64>;

pub use crate::runtime::backend::Backend;

/// How a run goes: where its files go, whether it continues one, on which backend and
/// how many threads, and a flag that stops it from another thread (Ctrl-C).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// The run's folder: `last.safetensors`, `best.safetensors`, `metrics.csv`, plots.
    pub out_dir: PathBuf,
    /// Continue the run in `out_dir` from its `last.safetensors`.
    pub resume: bool,
    /// Replace a run that `out_dir` holds (without it, such a folder is refused).
    pub replace: bool,
    /// The backend.
    pub backend: Backend,
    /// Threads for large products and kernels.
    pub threads: usize,
    /// Set to stop the run after the current step (its checkpoint is written, and the
    /// run can be resumed).
    pub stop: Arc<AtomicBool>,
}

impl TrainConfig {
    /// A run into `out_dir`, on the JIT, one thread.
    pub fn new(out_dir: impl AsRef<Path>) -> TrainConfig {
        TrainConfig {
            out_dir: out_dir.as_ref().to_path_buf(),
            resume: false,
            replace: false,
            backend: Backend::Jit,
            threads: 1,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Continue the run in the folder.
    pub fn resume(mut self, yes: bool) -> TrainConfig {
        self.resume = yes;
        self
    }

    /// Replace the run the folder holds.
    pub fn replace(mut self, yes: bool) -> TrainConfig {
        self.replace = yes;
        self
    }

    /// The backend.
    pub fn backend(mut self, b: Backend) -> TrainConfig {
        self.backend = b;
        self
    }

    /// Threads for large products and kernels (at least 1).
    pub fn threads(mut self, n: usize) -> TrainConfig {
        self.threads = n.max(1);
        self
    }

    /// Stop when `flag` is set (by a signal handler or another thread).
    pub fn stop_on(mut self, flag: Arc<AtomicBool>) -> TrainConfig {
        self.stop = flag;
        self
    }
}

/// What the observer says after an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// End the run after this epoch: the test metrics are computed and the report says
    /// `stopped`.
    Stop,
}

/// One finished epoch.
#[derive(Clone, Debug)]
pub struct Epoch {
    /// From 1.
    pub epoch: usize,
    /// Epochs the run has in all.
    pub epochs: usize,
    /// Optimizer steps so far.
    pub step: u64,
    /// The epoch's row of `metrics.csv`: `train_loss`, `val_loss`, `lr`, ...
    pub metrics: Vec<(String, f64)>,
}

impl Epoch {
    /// The metric `name` of this epoch, if the run computes it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// Watches a run. Every method has a default; a closure `FnMut(&Epoch) -> Control` is
/// an observer too.
pub trait Observer {
    /// Everything is checked and training starts (`resumed`: from this epoch and step).
    fn start(&mut self, _resumed: Option<(usize, u64)>) {}
    /// After every step: the epoch (from 0), the batch (from 1) of `batches`, the loss
    /// and the learning rate.
    fn batch(&mut self, _epoch: usize, _batch: usize, _batches: usize, _loss: f64, _lr: f64) {}
    /// After every epoch, once its checkpoint and log row are written.
    fn epoch(&mut self, _e: &Epoch) -> Control {
        Control::Continue
    }
}

impl<F: FnMut(&Epoch) -> Control> Observer for F {
    fn epoch(&mut self, e: &Epoch) -> Control {
        self(e)
    }
}

/// An observer that watches nothing.
pub struct Quiet;

impl Observer for Quiet {}

/// The result of a training run.
#[derive(Clone, Debug)]
pub struct Run {
    /// The held-out metrics of the final model (`test_*`; `train_*` without a split).
    pub test: Metrics,
    /// Everything computed on those rows (macro and weighted averages, AUC, ...).
    pub all: Metrics,
    /// Explanations: which value the metrics are computed on, skipped metrics.
    pub notes: Vec<String>,
    /// Epochs run (in all, a resumed run's earlier ones included).
    pub epochs_run: usize,
    /// The epoch `best.safetensors` holds.
    pub best_epoch: Option<usize>,
    /// What chose the best epoch: `val_loss`, or `train_loss` without a validation part.
    pub best_by: String,
    /// Early stopping ended the run.
    pub stopped_early: bool,
    /// The observer ended the run ([`Control::Stop`]).
    pub stopped: bool,
    /// The stop flag ended the run inside an epoch: no test metrics; resume it.
    pub interrupted: bool,
    /// Wall time in seconds.
    pub seconds: f64,
    /// The run's folder.
    pub out_dir: PathBuf,
    /// Every file written.
    pub files: Vec<PathBuf>,
}

impl Run {
    /// The checkpoint of the best epoch.
    pub fn best_checkpoint(&self) -> PathBuf {
        self.out_dir.join("best.safetensors")
    }

    /// The checkpoint of the last epoch (what `resume` continues from).
    pub fn last_checkpoint(&self) -> PathBuf {
        self.out_dir.join("last.safetensors")
    }
}

impl Model {
    /// Trains the model with its `train` block into `cfg.out_dir`, as `nnc train` does.
    ///
    /// ```
    /// use nnc::{Control, Model, TrainConfig};
    /// let src = "model M {\n input x: [B, 2]\n input y: i32[B]\n layer fc = Dense(2, 2)\n \
    ///            output logits = fc(x)\n loss = cross_entropy(logits, y)\n \
    ///            train { data = blobs(n = 100, centers = 2, seed = 0)  epochs = 10  batch = 20 }\n}";
    /// let out = std::env::temp_dir().join("nnc-doc-observer");
    /// let mut seen = Vec::new();
    /// let mut stop_at_3 = |e: &nnc::Epoch| {
    ///     seen.push(e.get("train_loss").unwrap_or(f64::NAN));
    ///     if e.epoch == 3 { Control::Stop } else { Control::Continue }
    /// };
    /// let run = Model::from_source("m.nn", src)?.train(&TrainConfig::new(&out).replace(true), &mut stop_at_3)?;
    /// assert!(run.stopped && run.epochs_run == 3 && seen.len() == 3);
    /// # Ok::<(), nnc::Error>(())
    /// ```
    pub fn train(&self, cfg: &TrainConfig, observer: &mut dyn Observer) -> Result<Run> {
        if trainer::holds_run(&cfg.out_dir) && !cfg.resume && !cfg.replace {
            return Err(Error::Usage(format!(
                "`{}` holds a run (last.safetensors, metrics.csv); resume it, replace it, or choose another folder",
                cfg.out_dir.display()
            )));
        }
        let opts = trainer::TrainOptions {
            out_dir: cfg.out_dir.clone(),
            resume: cfg.resume,
            backend: cfg.backend,
            threads: cfg.threads.max(1),
            source: self.source.clone(),
        };
        let mut stopped = false;
        let mut on_event = |e: Event| match e {
            Event::Start { resumed, .. } => {
                observer.start(resumed);
                Next::Continue
            }
            Event::Batch { epoch, batch, batches, loss, lr } => {
                observer.batch(epoch, batch, batches, loss, lr);
                Next::Continue
            }
            Event::Epoch(r) => {
                let e = Epoch { epoch: r.epoch, epochs: r.epochs, step: r.step, metrics: r.metrics.clone() };
                match observer.epoch(&e) {
                    Control::Continue => Next::Continue,
                    Control::Stop => {
                        stopped = true;
                        Next::Stop
                    }
                }
            }
        };
        let r = trainer::train(&self.program, &self.base_dir(), &opts, &cfg.stop, &mut on_event)?;
        Ok(Run {
            test: r.test,
            all: r.all,
            notes: r.notes,
            epochs_run: r.epochs_run,
            best_epoch: r.best_epoch,
            best_by: r.best_by,
            stopped_early: r.stopped_early,
            stopped: stopped && !r.interrupted,
            interrupted: r.interrupted,
            seconds: r.seconds,
            out_dir: cfg.out_dir.clone(),
            files: r.files,
        })
    }

    /// Scores a checkpoint of this model on exactly the rows it held out (its recorded
    /// split), as `nnc eval` does: the metrics, and notes on what they are computed on.
    pub fn evaluate(&self, checkpoint: impl AsRef<Path>, backend: Backend) -> Result<(Metrics, Vec<String>)> {
        let ck = checkpoint.as_ref();
        let r = trainer::evaluate(&self.program, &self.base_dir(), ck, backend, &self.source)?;
        let mut notes = r.notes;
        notes.extend(r.eval.notes.iter().cloned());
        Ok((r.eval.shown, notes))
    }

    /// Reads a checkpoint (or an `nnc init` file) and checks it against this model:
    /// every parameter and state present, with its shape.
    pub fn load_checkpoint(&self, path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let (tensors, meta) = crate::train::checkpoint::read(path).map_err(|m| Error::checkpoint(path, None, m))?;
        crate::train::checkpoint::validate(&self.program.eval, &tensors, path, true)
            .map_err(|m| checkpoint_error(path, &self.program.eval, m))?;
        Ok(Checkpoint { path: path.to_path_buf(), tensors, meta })
    }

    /// Fresh parameters and states, initialized with `seed` as `nnc init --seed` does
    /// (a teacher's frozen tensors stay in the teacher's checkpoint).
    pub fn init(&self, seed: u64) -> Result<Checkpoint> {
        let g = &self.program.train;
        let values = g.param_count() + g.states.iter().map(|s| s.shape.iter().product::<i64>()).sum::<i64>();
        crate::limits::check_alloc((values.max(0) as u64).saturating_mul(12), "initializing the parameters")?;
        let (params, states) = crate::runtime::init::init_all(g, seed);
        let shape = |s: &[i64]| s.iter().map(|&x| x as usize).collect();
        let mut tensors = crate::tensors::TensorMap::new();
        for (d, v) in g.params.iter().zip(params) {
            tensors.insert(d.name.clone(), crate::tensors::HostTensor::f32(shape(&d.shape), v));
        }
        for (d, v) in g.states.iter().zip(states).filter(|(d, _)| d.teacher_source().is_none()) {
            tensors.insert(d.name.clone(), crate::tensors::HostTensor::f32(shape(&d.shape), v));
        }
        let meta =
            BTreeMap::from([("model".to_string(), self.program.name.clone()), ("seed".to_string(), seed.to_string())]);
        Ok(Checkpoint { path: PathBuf::new(), tensors, meta })
    }
}

/// A checkpoint error, naming the tensor when the message names one of the graph's.
fn checkpoint_error(path: &Path, g: &crate::ir::Graph, m: String) -> Error {
    let names = g.params.iter().map(|p| p.name.as_str()).chain(g.states.iter().map(|s| s.name.as_str()));
    let key = names.filter(|n| m.contains(&format!("`{n}`"))).max_by_key(|n| n.len());
    Error::checkpoint(path, key, m)
}

/// A model's parameters and states by name, with the metadata a run records (the
/// recipe, the split, the fitted preprocessing's tensors are among the tensors).
#[derive(Clone, Debug)]
pub struct Checkpoint {
    path: PathBuf,
    tensors: crate::tensors::TensorMap,
    meta: BTreeMap<String, String>,
}

impl Checkpoint {
    /// The file it was read from (empty for [`Model::init`]'s).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    /// The shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// The values of float tensor `name`, row-major.
    pub fn values(&self, name: &str) -> Option<Vec<f32>> {
        self.tensors.get(name).and_then(|t| t.floats()).map(|v| v.iter().map(|&x| x as f32).collect())
    }

    /// Replaces (or adds) a float tensor; its length must match the shape.
    pub fn set(&mut self, name: &str, shape: Vec<usize>, values: &[f32]) -> Result<()> {
        if shape.iter().product::<usize>() != values.len() {
            return Err(Error::Usage(format!("`{name}`: shape {shape:?} holds {} values", values.len())));
        }
        let t = crate::tensors::HostTensor::f32(shape, values.iter().map(|&x| f64::from(x)).collect());
        self.tensors.insert(name.to_string(), t);
        Ok(())
    }

    /// The metadata a run recorded (`nnc.model`, `nnc.epoch`, `nnc.recipe.*`, ...).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.meta
    }

    /// Writes it as safetensors, atomically (a temporary file, then a rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        crate::tensors::write(path, &self.tensors, Some(self.meta.clone()))
            .map_err(|m| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(m) })
    }

    pub(crate) fn tensors(&self) -> &crate::tensors::TensorMap {
        &self.tensors
    }
}
