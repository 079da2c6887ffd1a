//! Model selection on a [`Model`]: cross-validation, hyperparameter search and the
//! comparison of two models, as `nnc cv`, `nnc tune` and `nnc compare` run them.

use super::fit::Backend;
use super::model::Model;
use crate::error::{Error, Result};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use crate::select::compare::{Comparison, Side};
pub use crate::select::cv::{CvReport, FoldResult, Folds};
pub use crate::select::tune::{State as TrialState, TrialResult, TuneReport};

/// How cross-validation (and a comparison on folds) runs.
#[derive(Clone, Debug)]
pub struct CvConfig {
    /// K folds (stratified for classifiers), or leave-one-out.
    pub folds: Folds,
    /// The backend.
    pub backend: Backend,
    /// Threads of each fold's steps.
    pub threads: usize,
    /// Set to stop (the call then returns [`Error::Interrupted`]).
    pub stop: Arc<AtomicBool>,
}

impl CvConfig {
    /// K folds on the JIT, one thread.
    pub fn folds(k: usize) -> CvConfig {
        CvConfig { folds: Folds::K(k), backend: Backend::Jit, threads: 1, stop: Arc::new(AtomicBool::new(false)) }
    }

    /// Leave-one-out.
    pub fn leave_one_out() -> CvConfig {
        CvConfig { folds: Folds::LeaveOneOut, ..CvConfig::folds(2) }
    }
}

/// How a search runs; what it searches is the model's `tune` block.
#[derive(Clone, Debug)]
pub struct TuneConfig {
    /// Trials at once (each on one thread).
    pub jobs: usize,
    /// The backend.
    pub backend: Backend,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig { jobs: 1, backend: Backend::Jit, stop: Arc::new(AtomicBool::new(false)) }
    }
}

fn interrupted(stop: &AtomicBool, e: String) -> Error {
    if stop.load(std::sync::atomic::Ordering::SeqCst) {
        Error::Interrupted
    } else {
        Error::Run(e)
    }
}

impl Model {
    /// Cross-validates the model on its data source; `on_fold` sees every fold as it
    /// ends.
    ///
    /// ```
    /// let src = "model M {\n input x: [B, 2]\n input y: i32[B]\n layer fc = Dense(2, 3)\n \
    ///            output logits = fc(x)\n loss = cross_entropy(logits, y)\n \
    ///            train { data = blobs(n = 90, seed = 0)  epochs = 3  batch = 15 }\n}";
    /// let r = nnc::Model::from_source("m.nn", src)?.cross_validate(&nnc::CvConfig::folds(3), &mut |_| {})?;
    /// assert_eq!(r.folds.len(), 3);
    /// assert!(r.summary.iter().any(|(name, mean, _)| name == "accuracy" && *mean > 0.5));
    /// # Ok::<(), nnc::Error>(())
    /// ```
    pub fn cross_validate(&self, cfg: &CvConfig, on_fold: &mut dyn FnMut(&FoldResult)) -> Result<CvReport> {
        crate::select::cv::cross_validate(
            &self.program,
            &self.base_dir(),
            cfg.folds,
            cfg.backend,
            cfg.threads.max(1),
            &cfg.stop,
            on_fold,
        )
        .map_err(|e| interrupted(&cfg.stop, e))
    }

    /// Searches the model's `tune` block; `on_trial` sees every trial as it ends (from
    /// the worker thread that ran it).
    pub fn tune(&self, cfg: &TuneConfig, on_trial: &(dyn Fn(&TrialResult) + Sync)) -> Result<TuneReport> {
        let spec = self.program.settings.tune.clone().ok_or_else(|| {
            Error::Usage(format!("model `{}` has no `tune` block: there is nothing to search", self.name()))
        })?;
        let compile = |values: &[(String, String)]| -> std::result::Result<crate::ir::Program, String> {
            let mut m = self.clone();
            for (k, v) in values {
                m = m.with(k, v.as_str()).map_err(|e| match e {
                    Error::Compile(c) => format!(
                        "the model does not compile: {}",
                        c.diagnostics.first().map(|d| d.message.clone()).unwrap_or_default()
                    ),
                    e => e.to_string(),
                })?;
            }
            Ok(m.program)
        };
        let opts = crate::select::tune::TuneOptions {
            compile: &compile,
            fixed: self
                .sets
                .iter()
                .map(|s| s.split_once('=').map_or(s.as_str(), |(k, _)| k.trim()).to_string())
                .collect(),
            backend: cfg.backend,
            jobs: cfg.jobs.max(1),
            threads: 1,
            source: self.source.clone(),
        };
        crate::select::tune::tune(&self.program, &spec, &self.base_dir(), &opts, &cfg.stop, &|_, t| on_trial(t))
            .map_err(|e| interrupted(&cfg.stop, e))
    }

    /// Compares this model with `other` on the same folds (`Some`: the corrected
    /// resampled t-test) or on this model's test split (`None`: McNemar's test).
    pub fn compare(&self, other: &Model, folds: Option<Folds>, backend: Backend) -> Result<Comparison> {
        let stop = AtomicBool::new(false);
        let (da, db) = (self.base_dir(), other.base_dir());
        Ok(crate::select::compare::compare((&self.program, &da), (&other.program, &db), folds, backend, 1, &stop)?)
    }
}
