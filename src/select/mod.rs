//! Model selection on top of the run layer (`train::session`): K-fold and leave-one-out
//! cross-validation (`cv`), the comparison of two models on the same folds or split with
//! a significance test (`compare`), and hyperparameter search (`tune`, its trials sampled
//! by `search`: grid, random, a Gaussian-process proposal).

pub mod compare;
pub mod cv;
pub mod search;
pub mod tune;
