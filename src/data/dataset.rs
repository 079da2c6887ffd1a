//! The data layer's values: model inputs as it sees them (`InputSpec`), arrays and
//! datasets, and the inputs that receive features and labels. A leaf below `mod.rs`
//! (loading and binding), `split.rs` and `preprocess.rs`.

use std::collections::BTreeMap;

/// The input that receives the labels of `csv`, `idx`, `npy` and the synthetic sets.
pub const LABEL_INPUT: &str = "y";

/// Element type of a model input (and of an `Array`): the IR's.
pub use crate::ir::DType;

/// One model input as the data layer sees it: the name, element type and shape without
/// the batch dimension (`[B, 8, 8]` gives `[8, 8]`; a `[B]` input gives `[]`).
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub dtype: DType,
    pub per_sample_shape: Vec<usize>,
}

impl InputSpec {
    pub fn new(name: &str, dtype: DType, per_sample_shape: &[usize]) -> InputSpec {
        InputSpec { name: name.to_string(), dtype, per_sample_shape: per_sample_shape.to_vec() }
    }
    pub(super) fn per_sample(&self) -> usize {
        self.per_sample_shape.iter().product()
    }
}

/// Row-major element storage.
#[derive(Clone, Debug, PartialEq)]
pub enum ArrayData {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

/// A dense array whose leading dimension is the sample count.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: ArrayData,
}

impl Array {
    /// The leading dimension (0 for a scalar, which a `Dataset` never holds).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }
    /// Elements per sample: the product of the dimensions after the first.
    pub fn per_sample(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
    pub fn dtype(&self) -> DType {
        match self.data {
            ArrayData::F32(_) => DType::F32,
            ArrayData::I32(_) => DType::I32,
        }
    }
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            ArrayData::F32(v) => Some(v),
            ArrayData::I32(_) => None,
        }
    }
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            ArrayData::I32(v) => Some(v),
            ArrayData::F32(_) => None,
        }
    }
    /// The selected samples, in the order given; rows past the end are skipped.
    pub fn gather(&self, rows: &[usize]) -> Array {
        let k = self.per_sample();
        let n = self.rows();
        let valid: Vec<usize> = rows.iter().copied().filter(|&r| r < n).collect();
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = valid.len();
        }
        fn pick<T: Copy>(src: &[T], rows: &[usize], k: usize) -> Vec<T> {
            let mut out = Vec::with_capacity(rows.len() * k);
            for &r in rows {
                if let Some(s) = src.get(r * k..(r + 1) * k) {
                    out.extend_from_slice(s);
                }
            }
            out
        }
        let data = match &self.data {
            ArrayData::F32(v) => ArrayData::F32(pick(v, &valid, k)),
            ArrayData::I32(v) => ArrayData::I32(pick(v, &valid, k)),
        };
        Array { shape, data }
    }
}

/// Named arrays sharing the leading dimension `n`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub n: usize,
    pub arrays: BTreeMap<String, Array>,
}

impl Dataset {
    pub fn get(&self, name: &str) -> Option<&Array> {
        self.arrays.get(name)
    }
    /// The largest value of an input's array (class labels): i32 values as they are, f32
    /// values rounded down. `None` when the array is missing or empty.
    pub fn max_label(&self, input: &str) -> Option<i32> {
        match &self.arrays.get(input)?.data {
            ArrayData::I32(v) => v.iter().copied().max(),
            ArrayData::F32(v) => v.iter().copied().filter(|x| x.is_finite()).map(|x| x.floor() as i32).max(),
        }
    }
    /// How many samples carry each label value (i32 arrays, or f32 arrays rounded down).
    pub fn class_counts(&self, input: &str) -> Option<BTreeMap<i32, usize>> {
        let mut out = BTreeMap::new();
        match &self.arrays.get(input)?.data {
            ArrayData::I32(v) => v.iter().for_each(|&c| *out.entry(c).or_insert(0) += 1),
            ArrayData::F32(v) => v.iter().for_each(|&c| *out.entry(c.floor() as i32).or_insert(0) += 1),
        }
        Some(out)
    }
    /// The dataset of the given rows (see `gather`).
    pub fn subset(&self, rows: &[usize]) -> Dataset {
        let arrays = gather(self, rows);
        let n = rows.iter().filter(|&&r| r < self.n).count();
        Dataset { n, arrays }
    }
}

/// The arrays of the given rows, in that order, each with leading dimension `rows.len()`.
/// Rows past the end of the dataset are skipped.
pub fn gather(ds: &Dataset, rows: &[usize]) -> BTreeMap<String, Array> {
    ds.arrays.iter().map(|(k, a)| (k.clone(), a.gather(rows))).collect()
}

/// The input that receives the features of `csv`, `idx`, `npy` and synthetic sets: the
/// model's first input not named `y` (in practice the first input).
pub fn features_input(inputs: &[InputSpec]) -> Option<&InputSpec> {
    inputs.iter().find(|i| i.name != LABEL_INPUT)
}

/// The input that preprocessing transforms: the model's first f32 input not named `y`.
pub fn preprocess_input(inputs: &[InputSpec]) -> Option<&InputSpec> {
    inputs.iter().find(|i| i.name != LABEL_INPUT && i.dtype == DType::F32)
}
