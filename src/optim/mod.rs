//! Optimization: the optimizer update as IR (`update`: regularization, clipping, every
//! first-order optimizer, appended to the forward and backward graph), learning-rate
//! schedules (`schedule`), and the full-batch host loops around a compiled objective:
//! L-BFGS (`lbfgs`), BFGS, Newton and Newton-CG (`second_order`), all ending their
//! iterations with one strong Wolfe line search (`line_search`). Nothing here runs a
//! model: the run layer (`train::session`) drives these pieces.

pub mod lbfgs;
pub mod line_search;
pub mod schedule;
pub mod second_order;
pub mod update;
