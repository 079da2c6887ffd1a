//! The library's front door: compile a model ([`Model`]), inspect it, train it
//! ([`Model::train`] with an [`Observer`]), read and write its checkpoints
//! ([`Checkpoint`]), run predictions on your buffers ([`Predictor`]), cross-validate,
//! tune and compare, export to ONNX and build a C library. Every call returns
//! [`crate::Result`].

mod deploy;
mod fit;
mod model;
mod predict;
mod select;

pub use deploy::{BuildConfig, BuildReport, ExportReport};
pub use fit::{Backend, Checkpoint, Control, Epoch, Metrics, Observer, Quiet, Run, TrainConfig};
pub use model::{DType, Dim, Model, ParamInfo, PlanInfo, TensorInfo, Value};
pub use predict::Predictor;
pub use select::{
    Comparison, CvConfig, CvReport, FoldResult, Folds, Side, TrialResult, TrialState, TuneConfig, TuneReport,
};
