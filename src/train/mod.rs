//! The run layer: `session` (a recipe with its compiled steps, fitted and scored on any
//! rows), `engine` (a compiled graph on either backend, fed with rows), `target` (what
//! the metrics are computed on), `checkpoint` (what a checkpoint records and checks),
//! `teacher` (a distilled model's frozen teacher tensors), and the runs built on a
//! session: `trainer` (one run with its files, and the evaluation of a checkpoint),
//! `inference` (a checkpoint loaded for its eval step),
//! `finetune` (pruning with fine-tuning) and `ptq` (post-training quantization).

pub mod checkpoint;
pub mod engine;
pub mod finetune;
pub mod inference;
pub mod ptq;
pub mod session;
pub mod target;
pub mod teacher;
pub mod trainer;
