//! Training: the step graph (`update`), schedules, the host-loop optimizers (L-BFGS, BFGS, Newton,
//! Newton-CG, sharing one line search), compiled engines
//! (`engine`), the metrics target (`target`), checkpoints, the run layer (`session`:
//! a recipe with its compiled steps, fitted and scored on any rows), and the commands
//! built on it: `trainer` (one run with its files), `cv` (cross-validation), `compare`
//! (two models), and `tune` (hyperparameter search, sampled by `search`).

pub mod checkpoint;
pub mod compare;
pub mod cv;
pub mod distributed;
pub mod engine;
pub mod finetune;
pub mod lbfgs;
pub mod line_search;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod prune;
pub mod quantize;
pub mod schedule;
pub mod search;
pub mod second_order;
pub mod session;
pub mod target;
pub mod teacher;
pub mod trainer;
pub mod tune;
pub mod update;
