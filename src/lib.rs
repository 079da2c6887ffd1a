//! nnc: a neural-network compiler. A `.nn` model goes through these stages, each a
//! plain function in its own module (ARCHITECTURE.md has the code map):
//!
//! ```text
//! source -> syntax::parse -> ast::File -> lower -> ir::Program (train + eval graphs)
//!        -> autodiff::grad (backward graph) -> optim::update (regularization, clipping,
//!           the optimizer update) -> simplify -> fusion::fuse (kernels)
//!        -> buffers::plan (one arena) -> codegen::compile (Cranelift)
//!        -> runtime::executable::Executable (a native step)
//! ```
//!
//! `pipeline` runs the front end (reading files, `use`, lowering, verification) and
//! builds step graphs; `runtime::interp` is the reference interpreter every stage is
//! tested against. On top sits the run layer: `train::session::Session` (a recipe with
//! its compiled steps, fitted and scored on any rows), used by `train::trainer` (one run
//! with checkpoints), `select::cv` (cross-validation) and `select::compare`; `cli` is the
//! command line (one file per command).
//!
//! ```
//! let src = "model M {\n input x: [B, 4]\n layer fc = Dense(4, 2)\n output y = fc(x)\n}\n";
//! let compiled = nnc::pipeline::compile_source("m.nn", src, None).ok().expect("compiles");
//! assert_eq!(compiled.programs[0].train.params.len(), 2);
//! ```

// Diagnostics are returned by value on cold paths; boxing them buys nothing.
#![allow(clippy::result_large_err)]

pub mod aot;
pub mod autodiff;
pub mod buffers;
pub mod cli;
pub mod codegen;
pub mod compress;
pub mod data;
pub mod diagnostic;
pub mod dist;
pub mod export;
pub mod fusion;
pub mod gradcheck;
pub mod ir;
pub mod limits;
pub mod lower;
pub mod metrics;
pub mod optim;
pub mod pipeline;
pub mod plot;
pub mod rng;
pub mod runtime;
pub mod select;
pub mod settings;
pub mod simplify;
pub mod stats;
pub mod syntax;
pub mod tensors;
pub mod torch;
pub mod train;
