//! nnc: a neural-network compiler. A model written in `.nn` is compiled into native
//! training and inference steps: parsed, checked for shapes, differentiated, fused,
//! planned into one arena and compiled by Cranelift. This crate is the library behind
//! the `nnc` command; its front door is [`Model`]:
//!
//! ```
//! use nnc::{Model, TrainConfig};
//!
//! # fn main() -> nnc::Result<()> {
//! let src = "model M(hidden: int = 8) {
//!     input x: [B, 2]
//!     input y: i32[B]
//!     layer fc1 = Dense(2, hidden)
//!     layer fc2 = Dense(hidden, 2)
//!     output logits = fc2(tanh(fc1(x)))
//!     loss = cross_entropy(logits, y)
//!     train { data = moons(n = 200, noise = 0.1, seed = 1)  split = [0.8, 0.2]
//!             optimizer = adam(lr = 0.02)  batch = 32  epochs = 5 }
//! }";
//! let model = Model::from_source("m.nn", src)?.with("hidden", 16)?.with("epochs", 3)?;
//! assert_eq!(model.params()[0].shape, vec![2, 16]);
//! let out = std::env::temp_dir().join("nnc-doc-lib");
//! let run = model.train(&TrainConfig::new(&out).replace(true), &mut nnc::Quiet)?;
//! assert_eq!(run.epochs_run, 3);
//! let mut predictor = model.predictor(run.best_checkpoint(), 4)?;
//! let x = [0.0f32, 1.0, 1.0, -0.5, -1.0, 0.5, 2.0, 0.0];
//! let mut logits = [0.0f32; 8];
//! predictor.predict_into(&x, &mut logits)?;
//! assert!(logits.iter().all(|v| v.is_finite()));
//! # Ok(())
//! # }
//! ```
//!
//! Everything a program needs is at the crate root: [`Model`] (compile, inspect, train,
//! cross-validate, tune, compare, export, build), [`Predictor`] (a compiled eval step
//! on caller-owned buffers), [`Checkpoint`], and one [`Error`]. The compiler's stages
//! are in [`internals`], for nnc's own tools, tests and benchmarks: they are not a
//! stable API. ARCHITECTURE.md in the repository maps them.

// Diagnostics are returned by value on cold paths; boxing them buys nothing.
#![allow(clippy::result_large_err)]
#![warn(missing_docs)]

mod api;
mod error;

pub use api::*;
pub use diagnostic::{Diagnostic, FileId, Label, RenderOptions, SourceMap, Span};
pub use error::{CompileErrors, Error, Result};

// The compiler and the run layer. Reachable from outside only through `internals`.
#[allow(missing_docs)]
mod aot;
#[allow(missing_docs)]
mod autodiff;
#[allow(missing_docs)]
mod buffers;
#[allow(missing_docs)]
mod cli;
#[allow(missing_docs)]
mod codegen;
#[allow(missing_docs)]
mod compress;
#[allow(missing_docs)]
mod data;
#[allow(missing_docs)]
mod diagnostic;
#[allow(missing_docs)]
mod dist;
#[allow(missing_docs)]
mod export;
#[allow(missing_docs)]
mod fusion;
#[allow(missing_docs)]
mod gradcheck;
#[allow(missing_docs)]
mod ir;
#[allow(missing_docs)]
mod limits;
#[allow(missing_docs)]
mod lower;
#[allow(missing_docs)]
mod metrics;
#[allow(missing_docs)]
mod optim;
#[allow(missing_docs)]
mod passes;
#[allow(missing_docs)]
mod pipeline;
#[allow(missing_docs)]
mod plot;
#[allow(missing_docs)]
mod rng;
#[allow(missing_docs)]
mod runtime;
#[allow(missing_docs)]
mod select;
#[allow(missing_docs)]
mod settings;
#[allow(missing_docs)]
mod simplify;
#[allow(missing_docs)]
mod stats;
#[allow(missing_docs)]
mod syntax;
#[allow(missing_docs)]
mod tensors;
#[allow(missing_docs)]
mod torch;
#[allow(missing_docs)]
mod train;

/// The compiler's stages and the run layer, for nnc's own command line, tools, tests
/// and benchmarks. Not a stable API: use the items at the crate root.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod internals {
    pub mod aot {
        pub use crate::aot::*;
    }
    pub mod autodiff {
        pub use crate::autodiff::*;
    }
    pub mod buffers {
        pub use crate::buffers::*;
    }
    pub mod cli {
        pub use crate::cli::*;
    }
    pub mod codegen {
        pub use crate::codegen::*;
    }
    pub mod compress {
        pub use crate::compress::*;
    }
    pub mod data {
        pub use crate::data::*;
    }
    pub mod diagnostic {
        pub use crate::diagnostic::*;
    }
    pub mod dist {
        pub use crate::dist::*;
    }
    pub mod export {
        pub use crate::export::*;
    }
    pub mod fusion {
        pub use crate::fusion::*;
    }
    pub mod gradcheck {
        pub use crate::gradcheck::*;
    }
    pub mod ir {
        pub use crate::ir::*;
    }
    pub mod limits {
        pub use crate::limits::*;
    }
    pub mod lower {
        pub use crate::lower::*;
    }
    pub mod metrics {
        pub use crate::metrics::*;
    }
    pub mod optim {
        pub use crate::optim::*;
    }
    pub mod passes {
        pub use crate::passes::*;
    }
    pub mod pipeline {
        pub use crate::pipeline::*;
    }
    pub mod plot {
        pub use crate::plot::*;
    }
    pub mod rng {
        pub use crate::rng::*;
    }
    pub mod runtime {
        pub use crate::runtime::*;
    }
    pub mod select {
        pub use crate::select::*;
    }
    pub mod settings {
        pub use crate::settings::*;
    }
    pub mod simplify {
        pub use crate::simplify::*;
    }
    pub mod stats {
        pub use crate::stats::*;
    }
    pub mod syntax {
        pub use crate::syntax::*;
    }
    pub mod tensors {
        pub use crate::tensors::*;
    }
    pub mod torch {
        pub use crate::torch::*;
    }
    pub mod train {
        pub use crate::train::*;
    }
}
