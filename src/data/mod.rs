//! The data layer: consumes a `train { data = ... }` choice (`settings::Choice`), the
//! `.nn` file's folder and the model's inputs (`InputSpec`), and produces a `Dataset` of
//! named arrays with one leading sample dimension; then splits it (`split`), fits and
//! applies preprocessing (`Preprocessor`), and cuts batches (`batches`, `gather`).
//!
//! Binding (docs/language.md):
//! - `csv`, `idx`, `npy` and the synthetic sets yield features and labels. The features
//!   go to the features input (`features_input`: the model's first input not named `y`),
//!   reshaped to its per-sample shape (the per-sample element counts must agree); the
//!   labels go to the input named `y` (`LABEL_INPUT`), as i32 (integers >= 0) when that
//!   input is i32, else as f32.
//! - `npz` and `safetensors` yield arrays bound to inputs by name; every input needs an
//!   array with the same number of samples and the same per-sample element count (arrays
//!   are reshaped to the input's per-sample shape). Arrays no input names are ignored.
//!
//! A training run strings these together:
//!
//! ```
//! use nnc::internals::data::{self, DType, InputSpec, Preprocessor};
//! use nnc::internals::settings::{Choice, Lit};
//! let inputs = [InputSpec::new("x", DType::F32, &[2]), InputSpec::new("y", DType::I32, &[])];
//! let source = Choice { name: "moons".into(), args: vec![("n".into(), Lit::Num(100.0))] };
//! let mut ds = data::load(&source, std::path::Path::new("."), &inputs)?;
//! let parts = data::split(&ds, &[0.8, 0.2], 0, Some("y"))?; // train, test
//! let standardize = Choice { name: "standardize".into(), args: vec![] };
//! let pre = Preprocessor::fit(&standardize, &ds, &parts[0], &inputs)?;
//! pre.apply_dataset(&mut ds)?; // checkpoints keep pre.to_tensors()
//! for epoch in 0..2 {
//!     for rows in data::batches(&parts[0], 32, Some(data::epoch_seed(0, epoch))) {
//!         let batch = data::gather(&ds, &rows); // "x": [rows.len(), 2], "y": [rows.len()]
//!         assert_eq!(batch["x"].shape, vec![rows.len(), 2]);
//!     }
//! }
//! # Ok::<(), String>(())
//! ```
//!
//! Every value is checked: non-numbers, NaN and infinities, non-integer values for i32
//! inputs and negative class labels are errors naming the file and the row (1-based: a
//! line of a text file, a sample of a binary one). Errors are plain `String`s.

pub mod augment;
mod csv;
mod dataset;
mod formats;
pub mod linalg;
mod preprocess;
mod raw;
mod split;
mod synthetic;

use std::collections::BTreeMap;
use std::path::Path;

use crate::settings::{Choice, Lit};

pub use dataset::{features_input, gather, preprocess_input, Array, ArrayData, DType, Dataset, InputSpec, LABEL_INPUT};
pub use preprocess::{
    PreprocessKind, Preprocessor, KIND_TENSOR, MATRIX_TENSOR, MAX_WHITEN_DIM, MEAN_TENSOR, SCALE_TENSOR,
};
pub use raw::{int_arg, num_arg};
use raw::{str_arg, Locator, NdArray, Raw};
pub use split::{batches, epoch_seed, kfold, leave_one_out, split};
pub use synthetic::MAX_POINTS as MAX_SYNTHETIC_POINTS;

/// Loads the data source of a `train` block. Paths are relative to `base_dir` (the `.nn`
/// file's folder); a path ending in `.gz` (or starting with the gzip magic bytes) is
/// decompressed. The result binds every input in `inputs`.
pub fn load(choice: &Choice, base_dir: &Path, inputs: &[InputSpec]) -> crate::Result<Dataset> {
    let path = |arg: &str| -> Result<std::path::PathBuf, String> { Ok(base_dir.join(str_arg(choice, arg)?)) };
    // Errors of a file's reader are data errors about that file.
    let (raw, file) = match choice.name.as_str() {
        "csv" => {
            let label = int_arg(choice, "label", -1)?;
            let header = match choice.arg("header") {
                None => false,
                Some(Lit::Bool(b)) => *b,
                Some(other) => return Err(format!("csv: `header` must be true or false, found {}", other.render()).into()),
            };
            let p = path("path")?;
            (csv::load(&p, Some(label), header)?, p)
        }
        "idx" => {
            let p = path("images")?;
            (formats::load_idx(&p, Some(&path("labels")?)).map_err(data_error(&p))?, p)
        }
        "npy" => {
            let p = path("features")?;
            (formats::load_npy_pair(&p, Some(&path("labels")?)).map_err(data_error(&p))?, p)
        }
        "npz" => {
            let p = path("path")?;
            let arrays = formats::load_npz(&p).map_err(data_error(&p))?;
            return bind_named(arrays, &p.display().to_string(), inputs).map_err(data_error(&p));
        }
        "safetensors" => {
            let p = path("path")?;
            let arrays = formats::load_safetensors(&p).map_err(data_error(&p))?;
            return bind_named(arrays, &p.display().to_string(), inputs).map_err(data_error(&p));
        }
        "spirals" | "moons" | "blobs" | "xor" => return Ok(bind_raw(synthetic::generate(choice)?, inputs)?),
        other => {
            return Err(format!(
                "unknown data source `{other}`; expected one of: csv, idx, npy, npz, safetensors, spirals, moons, blobs, xor"
            )
            .into())
        }
    };
    bind_raw(raw, inputs).map_err(data_error(&file))
}

/// A reader's message as a data error about `file`.
fn data_error(file: &Path) -> impl Fn(String) -> crate::Error + '_ {
    move |m| crate::Error::data(file, m)
}

/// A data file named on the command line (`nnc predict --inputs`, `nnc eval --data`),
/// read like the `train` block's sources; its format comes from its name (a `.gz`
/// suffix is decompressed): `.csv`, `.npy`, `.npz`, `.safetensors`, and IDX (`-ubyte`,
/// `.idx`, `.idx1`, `.idx3`, ...).
#[derive(Clone, Debug, Default)]
pub struct DataFile {
    pub path: std::path::PathBuf,
    /// A csv file's label column (negative counts from the end); `None`: every column
    /// is a feature.
    pub label_column: Option<i64>,
    /// A csv file's first row is a header.
    pub header: bool,
    /// The labels of an `.npy` or IDX features file (an `.npy` or IDX file).
    pub labels: Option<std::path::PathBuf>,
}

/// The formats `DataFile` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Npy,
    Npz,
    Safetensors,
    Idx,
}

/// The format of a data file, from its name.
pub fn file_format(path: &Path) -> Result<FileFormat, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    Ok(match ext {
        "csv" => FileFormat::Csv,
        "npy" => FileFormat::Npy,
        "npz" => FileFormat::Npz,
        "safetensors" => FileFormat::Safetensors,
        e if e.starts_with("idx") => FileFormat::Idx,
        _ if name.ends_with("-ubyte") => FileFormat::Idx,
        _ => {
            return Err(format!(
                "cannot tell the format of `{}` from its name; expected .csv, .npy, .npz, .safetensors or an IDX file \
                 (-ubyte, .idx3), optionally .gz",
                path.display()
            ))
        }
    })
}

/// Loads a data file for `inputs`: csv, npy and IDX give the features input (and the
/// labels input `y` when the file has labels: a csv label column, a labels file); npz
/// and safetensors give every input by name. Values are checked as `load` checks them.
pub fn load_file(f: &DataFile, inputs: &[InputSpec]) -> crate::Result<Dataset> {
    let data = |m: String| crate::Error::data(&f.path, m);
    let format = file_format(&f.path).map_err(crate::Error::Usage)?;
    let shown = f.path.display();
    if f.label_column.is_some() && format != FileFormat::Csv {
        return Err(crate::Error::Usage(format!("`{shown}`: a label column is for csv files; this is {format:?}")));
    }
    if f.header && format != FileFormat::Csv {
        return Err(crate::Error::Usage(format!("`{shown}`: a header row is for csv files; this is {format:?}")));
    }
    if f.labels.is_some() && !matches!(format, FileFormat::Npy | FileFormat::Idx) {
        return Err(crate::Error::Usage(format!(
            "`{shown}`: a separate labels file goes with npy or IDX features; a {format:?} file holds its own labels"
        )));
    }
    let mut raw = match format {
        FileFormat::Csv => csv::load(&f.path, f.label_column, f.header)?,
        FileFormat::Npy => formats::load_npy_pair(&f.path, f.labels.as_deref()).map_err(data)?,
        FileFormat::Idx => formats::load_idx(&f.path, f.labels.as_deref()).map_err(data)?,
        FileFormat::Npz => {
            let arrays = formats::load_npz(&f.path).map_err(data)?;
            return bind_named(arrays, &shown.to_string(), inputs).map_err(data);
        }
        FileFormat::Safetensors => {
            let arrays = formats::load_safetensors(&f.path).map_err(data)?;
            return bind_named(arrays, &shown.to_string(), inputs).map_err(data);
        }
    };
    if !inputs.iter().any(|i| i.name == LABEL_INPUT) {
        // Labels nothing reads (predictions): the column is left out, the values unused.
        raw.labels = None;
    }
    bind_raw(raw, inputs).map_err(data)
}

fn shape_str(s: &[usize]) -> String {
    format!("{s:?}")
}

fn bind_raw(raw: Raw, inputs: &[InputSpec]) -> Result<Dataset, String> {
    let file = raw.feature_at.file().to_string();
    if raw.n == 0 {
        return Err(format!("`{file}` has no samples"));
    }
    let per: usize = raw.shape.iter().product();
    if raw.features.len() != raw.n * per || raw.labels.as_ref().is_some_and(|l| l.len() != raw.n) {
        return Err(format!("`{file}`: internal size mismatch"));
    }
    let fin = features_input(inputs)
        .ok_or_else(|| format!("`{file}` gives features and labels, but the model has no input for the features"))?;
    if fin.per_sample() != per {
        let hint = if raw.labels.is_none() && per == fin.per_sample() + 1 {
            "; if one column is a label, name it (`--label-column` on the command line)"
        } else {
            ""
        };
        return Err(format!(
            "`{file}` gives samples of shape {} ({per} values each), but the model's input `{}` takes samples of shape {} ({} values each){hint}",
            shape_str(&raw.shape),
            fin.name,
            shape_str(&fin.per_sample_shape),
            fin.per_sample()
        ));
    }
    let mut arrays = BTreeMap::new();
    let mut fshape = vec![raw.n];
    fshape.extend_from_slice(&fin.per_sample_shape);
    let fdata = match fin.dtype {
        DType::F32 => {
            for (i, row) in raw.features.chunks(per.max(1)).enumerate() {
                if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                    return Err(format!(
                        "{}: feature {} is {}; expected a finite number",
                        raw.feature_at.at(i),
                        j + 1,
                        row[j]
                    ));
                }
            }
            ArrayData::F32(raw.features)
        }
        DType::I32 => {
            let mut out = Vec::with_capacity(raw.features.len());
            for (idx, &v) in raw.features.iter().enumerate() {
                let i = idx / per.max(1);
                out.push(to_i32(v as f64).ok_or_else(|| {
                    format!(
                        "{}: feature {} is {v}; the model's input `{}` is i32, so an integer was expected",
                        raw.feature_at.at(i),
                        idx % per.max(1) + 1,
                        fin.name
                    )
                })?);
            }
            ArrayData::I32(out)
        }
    };
    arrays.insert(fin.name.clone(), Array { shape: fshape, data: fdata });

    if let Some(labels) = &raw.labels {
        let yin = inputs.iter().find(|i| i.name == LABEL_INPUT).ok_or_else(|| {
            format!(
                "`{file}` gives labels, but the model has no input named `{LABEL_INPUT}` to receive them (declare e.g. `input y: i32[B]`)"
            )
        })?;
        if yin.per_sample() != 1 {
            return Err(format!(
                "`{}` gives one label per sample, but the model's input `{LABEL_INPUT}` takes samples of shape {} ({} values each)",
                raw.label_at.file(),
                shape_str(&yin.per_sample_shape),
                yin.per_sample()
            ));
        }
        let mut yshape = vec![raw.n];
        yshape.extend_from_slice(&yin.per_sample_shape);
        let ydata = labels_to(labels, yin.dtype, &raw.label_at, LABEL_INPUT)?;
        arrays.insert(LABEL_INPUT.to_string(), Array { shape: yshape, data: ydata });
    }

    if let Some(other) = inputs.iter().find(|i| !arrays.contains_key(&i.name)) {
        if raw.labels.is_none() && other.name == LABEL_INPUT {
            return Err(format!(
                "`{file}` gives features only, but the model's input `{LABEL_INPUT}` needs labels (name the label column, or a labels file)"
            ));
        }
        return Err(format!(
            "`{file}` gives features (bound to `{}`) and labels (bound to `{LABEL_INPUT}`), but the model's input `{}` has no data; use npz or safetensors to give every input by name",
            fin.name, other.name
        ));
    }
    Ok(Dataset { n: raw.n, arrays })
}

fn to_i32(v: f64) -> Option<i32> {
    (v.is_finite() && v.fract() == 0.0 && v >= i32::MIN as f64 && v <= i32::MAX as f64).then_some(v as i32)
}

/// Converts label values for the label input: i32 needs non-negative integers.
fn labels_to(values: &[f64], dtype: DType, at: &Locator, input: &str) -> Result<ArrayData, String> {
    match dtype {
        DType::I32 => {
            let mut out = Vec::with_capacity(values.len());
            for (i, &v) in values.iter().enumerate() {
                let Some(c) = to_i32(v) else {
                    return Err(format!(
                        "{}: label {v} is not an integer; the model's input `{input}` is i32 (class labels)",
                        at.at(i)
                    ));
                };
                if c < 0 {
                    return Err(format!("{}: label {c} is negative; class labels are 0, 1, 2, ...", at.at(i)));
                }
                out.push(c);
            }
            Ok(ArrayData::I32(out))
        }
        DType::F32 => {
            let mut out = Vec::with_capacity(values.len());
            for (i, &v) in values.iter().enumerate() {
                let f = v as f32;
                if !f.is_finite() {
                    return Err(format!("{}: label {v} is not a finite f32 number", at.at(i)));
                }
                out.push(f);
            }
            Ok(ArrayData::F32(out))
        }
    }
}

fn bind_named(mut arrays: BTreeMap<String, NdArray>, file: &str, inputs: &[InputSpec]) -> Result<Dataset, String> {
    let mut n: Option<(usize, String)> = None;
    let mut out = BTreeMap::new();
    let names = arrays_list(arrays.keys());
    for inp in inputs {
        let Some(a) = arrays.remove(&inp.name) else {
            return Err(format!(
                "`{file}` has no array `{}` for the model's input `{}`; it has: {names}",
                inp.name, inp.name
            ));
        };
        let Some(&rows) = a.shape.first() else {
            return Err(format!(
                "`{file}`: array `{}` is a scalar; expected shape [n, {}] (samples first)",
                inp.name,
                inp.per_sample_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            ));
        };
        match &n {
            None => n = Some((rows, inp.name.clone())),
            Some((m, first)) if *m != rows => {
                return Err(format!(
                    "`{file}`: array `{}` has {rows} samples but array `{first}` has {m}; every array needs the same leading dimension",
                    inp.name
                ))
            }
            _ => {}
        }
        let per: usize = a.shape.iter().skip(1).product();
        if per != inp.per_sample() {
            let mut want = vec![rows];
            want.extend_from_slice(&inp.per_sample_shape);
            return Err(format!(
                "`{file}`: array `{}` has shape {} ({per} values per sample), but the model's input `{}` takes shape {} ({} values per sample)",
                inp.name,
                shape_str(&a.shape),
                inp.name,
                shape_str(&want),
                inp.per_sample()
            ));
        }
        let at = Locator::Samples(format!("{file}: array `{}`", inp.name));
        let data = if inp.name == LABEL_INPUT && per == 1 {
            labels_to(&a.values, inp.dtype, &at, &inp.name)?
        } else {
            values_to(&a.values, per, inp.dtype, &at, &inp.name)?
        };
        let mut shape = vec![rows];
        shape.extend_from_slice(&inp.per_sample_shape);
        out.insert(inp.name.clone(), Array { shape, data });
    }
    let Some((n, first)) = n else {
        return Err(format!("the model has no inputs to bind the arrays of `{file}` to"));
    };
    if n == 0 {
        return Err(format!("`{file}`: array `{first}` has no samples"));
    }
    Ok(Dataset { n, arrays: out })
}

fn arrays_list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = names.map(|s| format!("`{s}`")).collect();
    if v.is_empty() {
        "no arrays".to_string()
    } else {
        v.join(", ")
    }
}

/// Converts any values for an input: finite for f32, integers for i32.
fn values_to(values: &[f64], per: usize, dtype: DType, at: &Locator, input: &str) -> Result<ArrayData, String> {
    let per = per.max(1);
    match dtype {
        DType::F32 => {
            let mut out = Vec::with_capacity(values.len());
            for (idx, &v) in values.iter().enumerate() {
                let f = v as f32;
                if !f.is_finite() {
                    return Err(format!(
                        "{}: value {} is {v}; expected a finite f32 number",
                        at.at(idx / per),
                        idx % per + 1
                    ));
                }
                out.push(f);
            }
            Ok(ArrayData::F32(out))
        }
        DType::I32 => {
            let mut out = Vec::with_capacity(values.len());
            for (idx, &v) in values.iter().enumerate() {
                out.push(to_i32(v).ok_or_else(|| {
                    format!(
                        "{}: value {} is {v}; the model's input `{input}` is i32, so an integer was expected",
                        at.at(idx / per),
                        idx % per + 1
                    )
                })?);
            }
            Ok(ArrayData::I32(out))
        }
    }
}
