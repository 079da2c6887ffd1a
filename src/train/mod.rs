//! Training: the step graph (`update`), and (later) the loop, checkpoints and early
//! stopping.

pub mod lbfgs;
pub mod schedule;
pub mod trainer;
pub mod update;
