//! Model compression as pure transforms, below the run layer: magnitude pruning masks
//! (`prune`: which weights to zero, gradual sparsity schedules) and int8 quantization
//! (`quantize`: the per-channel weight codec, the fake-quantized eval graph with
//! calibrated activation scales, the quantization-aware training graph). The runs that
//! use them — fine-tuning a pruned model, calibrating and scoring a quantized one — are
//! in the run layer (`train::finetune`, `train::ptq`), because training-time pruning and
//! QAT need these transforms inside a session.

pub mod prune;
pub mod quantize;
