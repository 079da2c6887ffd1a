//! nnc: a neural-network compiler. A `.nn` model goes through these stages, each a
//! plain function in its own module (see ARCHITECTURE.md for the code map):
//!
//! ```text
//! source -> syntax::parse -> ast::File -> lower -> ir::Program (train + eval graphs)
//! ```
//!
//! `pipeline` strings them together; `cli` is the command line.
//!
//! ```
//! let src = "model M {\n input x: [B, 4]\n layer fc = Dense(4, 2)\n output y = fc(x)\n}\n";
//! let compiled = nnc::pipeline::compile_source("m.nn", src, None).ok().expect("compiles");
//! assert_eq!(compiled.programs[0].train.params.len(), 2);
//! ```

// Diagnostics are returned by value on cold paths; boxing them buys nothing.
#![allow(clippy::result_large_err)]

pub mod autodiff;
pub mod buffers;
pub mod cli;
pub mod codegen;
pub mod data;
pub mod diagnostic;
pub mod fusion;
pub mod gradcheck;
pub mod ir;
pub mod limits;
pub mod lower;
pub mod metrics;
pub mod pipeline;
pub mod plot;
pub mod rng;
pub mod runtime;
pub mod settings;
pub mod simplify;
pub mod stats;
pub mod syntax;
pub mod tensors;
pub mod train;
