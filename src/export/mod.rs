//! Export: an eval graph with its parameters as a file another runtime loads.
//!
//! `onnx::to_onnx` writes an ONNX `ModelProto` (opset `onnx::OPSET`): every primitive
//! becomes standard ONNX operators, parameters and states become initializers, symbolic
//! dims (the batch size) become `dim_param`s whose values the graph reads from its
//! inputs' shapes at run time, and a checkpoint's preprocessing becomes leading ops on
//! the features input. `onnx_pb` holds the prost types of the official `onnx.proto`,
//! generated once by `tools/gen_onnx_proto.sh` and committed (no `protoc` at build time).
//! docs/export.md has the op mapping.

pub mod onnx;
#[allow(clippy::all, clippy::pedantic, clippy::nursery, rustdoc::all)]
#[rustfmt::skip]
pub mod onnx_pb;

pub use onnx::{to_model, to_onnx, Options, IR_VERSION, OPSET};
