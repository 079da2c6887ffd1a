//! What the readers share before binding: the arguments of a data source (`str_arg`,
//! `num_arg`, `int_arg`), features and labels as read (`Raw`, `NdArray`) and where each
//! sample came from (`Locator`). A leaf below `mod.rs` and the readers (`csv.rs`,
//! `formats.rs`, `synthetic.rs`) and `preprocess.rs`.

use crate::settings::{Choice, Lit};

pub(super) fn str_arg(choice: &Choice, name: &str) -> Result<String, String> {
    match choice.arg(name) {
        Some(Lit::Str(s)) | Some(Lit::Name(s)) => Ok(s.clone()),
        Some(other) => Err(format!("{}: `{name}` must be a string, found {}", choice.name, other.render())),
        None => Err(format!("{}: the argument `{name}` is missing", choice.name)),
    }
}

pub fn num_arg(choice: &Choice, name: &str, default: Option<f64>) -> Result<f64, String> {
    match choice.arg(name) {
        Some(Lit::Num(v)) if v.is_finite() => Ok(*v),
        Some(other) => Err(format!("{}: `{name}` must be a number, found {}", choice.name, other.render())),
        None => default.ok_or_else(|| format!("{}: the argument `{name}` is missing", choice.name)),
    }
}

pub fn int_arg(choice: &Choice, name: &str, default: i64) -> Result<i64, String> {
    let v = num_arg(choice, name, Some(default as f64))?;
    if v.fract() != 0.0 || v.abs() > 9.0e15 {
        return Err(format!("{}: `{name}` must be an integer, found {v}", choice.name));
    }
    Ok(v as i64)
}

/// Where a sample came from, for error messages.
#[derive(Clone, Debug)]
pub(crate) enum Locator {
    /// A text file and the 1-based line of each sample.
    Lines(String, Vec<usize>),
    /// A binary file (or a generator): samples are numbered from 1.
    Samples(String),
}

impl Locator {
    pub(crate) fn at(&self, i: usize) -> String {
        match self {
            Locator::Lines(f, lines) => match lines.get(i) {
                Some(l) => format!("{f}:{l}"),
                None => format!("{f}: sample {}", i + 1),
            },
            Locator::Samples(f) => format!("{f}: sample {}", i + 1),
        }
    }
    pub(super) fn file(&self) -> &str {
        match self {
            Locator::Lines(f, _) | Locator::Samples(f) => f,
        }
    }
}

/// Features and labels from a source that yields both.
pub(crate) struct Raw {
    pub n: usize,
    /// `n * shape.product()` values, row-major.
    pub features: Vec<f32>,
    /// Per-sample shape of the features.
    pub shape: Vec<usize>,
    /// One label per sample; `None` for a features-only file (`load_file` unlabeled).
    pub labels: Option<Vec<f64>>,
    pub feature_at: Locator,
    pub label_at: Locator,
}

/// An array read from a binary file, values widened to f64.
pub(crate) struct NdArray {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}
