//! Preprocessing: consumes a `preprocess` choice, a `Dataset`, the training rows and the
//! features input; produces a fitted `Preprocessor` that transforms the features of any
//! rows and round-trips through named f32 tensors (for checkpoints).
//!
//! Samples are flattened to d = per-sample element count; statistics are population ones
//! (divide by n) over the training rows, accumulated in f64.
//! - `none`: the identity.
//! - `center`: x - mean.
//! - `standardize`: (x - mean) / scale with scale the standard deviation; a constant
//!   feature (std 0, or below 1e-6 of its mean's magnitude) gets scale 1: centred only.
//! - `whiten(method = "pca" | "zca", eps = 1e-5)`: with the covariance C = V Λ Vᵀ
//!   (eigenvalues descending), x' = (x - mean) @ M where M = V diag(1/sqrt(λ + eps)) (PCA:
//!   output k is the k-th principal component, unit variance) or M = V diag(1/sqrt(λ +
//!   eps)) Vᵀ (ZCA: the same, rotated back to the input axes). Cost: O(n d²) to fit and
//!   to apply, O(d³) for the eigendecomposition.
//!
//! Tensors (`to_tensors`): `preprocess.kind` [1] (0 none, 1 center, 2 standardize, 3 PCA,
//! 4 ZCA), `preprocess.mean` [d], `preprocess.scale` [d] (standardize) or
//! `preprocess.matrix` [d, d] (whiten, row-major, applied as `(x - mean) @ matrix`).

use std::collections::BTreeMap;

use crate::settings::{Choice, Lit};

use super::dataset::{preprocess_input, Array, ArrayData, Dataset, InputSpec};
use super::linalg;
use super::raw::num_arg;

/// What a `Preprocessor` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreprocessKind {
    None,
    Center,
    Standardize,
    WhitenPca,
    WhitenZca,
}

impl PreprocessKind {
    /// "none", "center", "standardize", "pca" or "zca".
    pub fn name(self) -> &'static str {
        match self {
            PreprocessKind::None => "none",
            PreprocessKind::Center => "center",
            PreprocessKind::Standardize => "standardize",
            PreprocessKind::WhitenPca => "pca",
            PreprocessKind::WhitenZca => "zca",
        }
    }
    fn code(self) -> f32 {
        match self {
            PreprocessKind::None => 0.0,
            PreprocessKind::Center => 1.0,
            PreprocessKind::Standardize => 2.0,
            PreprocessKind::WhitenPca => 3.0,
            PreprocessKind::WhitenZca => 4.0,
        }
    }
    fn from_code(c: f32) -> Option<PreprocessKind> {
        [
            PreprocessKind::None,
            PreprocessKind::Center,
            PreprocessKind::Standardize,
            PreprocessKind::WhitenPca,
            PreprocessKind::WhitenZca,
        ]
        .into_iter()
        .find(|k| k.code() == c)
    }
}

/// A fitted transform of one f32 input's samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocessor {
    pub kind: PreprocessKind,
    /// The input it transforms (empty for `none` without an f32 input).
    pub input: String,
    /// Elements per sample.
    pub dim: usize,
    /// `[dim]`; empty for `none`.
    pub mean: Vec<f32>,
    /// `[dim]` divisors (standardize only).
    pub scale: Vec<f32>,
    /// [dim, dim] row-major (whiten only).
    pub matrix: Vec<f32>,
}

/// The largest per-sample size `whiten` accepts (the covariance is d×d f64).
pub const MAX_WHITEN_DIM: usize = 4096;

pub const KIND_TENSOR: &str = "preprocess.kind";
pub const MEAN_TENSOR: &str = "preprocess.mean";
pub const SCALE_TENSOR: &str = "preprocess.scale";
pub const MATRIX_TENSOR: &str = "preprocess.matrix";

impl Preprocessor {
    /// The identity.
    pub fn none() -> Preprocessor {
        Preprocessor {
            kind: PreprocessKind::None,
            input: String::new(),
            dim: 0,
            mean: vec![],
            scale: vec![],
            matrix: vec![],
        }
    }

    /// "none", "center", "standardize", "pca" or "zca".
    /// Features per sample it was fitted on (0 for none).
    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn kind(&self) -> &'static str {
        self.kind.name()
    }

    /// Fits `choice` on the rows `train` of the features input (`preprocess_input`
    /// of `inputs`: the first f32 input not named `y`).
    pub fn fit(choice: &Choice, ds: &Dataset, train: &[usize], inputs: &[InputSpec]) -> Result<Preprocessor, String> {
        if choice.name == "none" {
            return Ok(Preprocessor::none());
        }
        let Some(inp) = preprocess_input(inputs) else {
            return Err(format!(
                "preprocess = {}: the model has no f32 input (other than `y`) to preprocess",
                choice.name
            ));
        };
        Preprocessor::fit_input(choice, ds, train, &inp.name)
    }

    /// Fits `choice` on the rows `train` of the f32 array `input`.
    pub fn fit_input(choice: &Choice, ds: &Dataset, train: &[usize], input: &str) -> Result<Preprocessor, String> {
        let kind = match choice.name.as_str() {
            "none" => return Ok(Preprocessor::none()),
            "center" => PreprocessKind::Center,
            "standardize" => PreprocessKind::Standardize,
            "whiten" => match choice.arg("method") {
                None => PreprocessKind::WhitenZca,
                Some(Lit::Str(m)) | Some(Lit::Name(m)) if m == "zca" => PreprocessKind::WhitenZca,
                Some(Lit::Str(m)) | Some(Lit::Name(m)) if m == "pca" => PreprocessKind::WhitenPca,
                Some(other) => {
                    return Err(format!("whiten: `method` must be \"pca\" or \"zca\", found {}", other.render()))
                }
            },
            other => {
                return Err(format!(
                    "unknown preprocessing `{other}`; expected one of: none, center, standardize, whiten"
                ))
            }
        };
        let arr = ds.arrays.get(input).ok_or_else(|| format!("preprocess: the data has no array `{input}`"))?;
        let ArrayData::F32(x) = &arr.data else {
            return Err(format!(
                "preprocess = {}: the input `{input}` is i32; only f32 inputs can be preprocessed",
                choice.name
            ));
        };
        let d = arr.per_sample();
        if x.len() != arr.rows() * d {
            return Err(format!("preprocess: array `{input}` of shape {:?} holds {} values", arr.shape, x.len()));
        }
        let rows: Vec<usize> = train.iter().copied().filter(|&r| r < arr.rows()).collect();
        if rows.is_empty() {
            return Err(format!("preprocess = {}: no training rows to fit on", choice.name));
        }
        let nf = rows.len() as f64;
        let row = |r: usize| &x[r * d..(r + 1) * d];
        let mut mean = vec![0.0f64; d];
        for &r in &rows {
            for (m, &v) in mean.iter_mut().zip(row(r)) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= nf);
        let mut p = Preprocessor {
            kind,
            input: input.to_string(),
            dim: d,
            mean: mean.iter().map(|&m| m as f32).collect(),
            scale: vec![],
            matrix: vec![],
        };
        match kind {
            PreprocessKind::None | PreprocessKind::Center => {}
            PreprocessKind::Standardize => {
                let mut var = vec![0.0f64; d];
                for &r in &rows {
                    for ((s, &v), m) in var.iter_mut().zip(row(r)).zip(&mean) {
                        let c = f64::from(v) - m;
                        *s += c * c;
                    }
                }
                p.scale = var
                    .iter()
                    .zip(&mean)
                    .map(|(s, m)| {
                        let sd = (s / nf).sqrt();
                        if sd == 0.0 || sd <= 1e-6 * m.abs() {
                            1.0
                        } else {
                            sd as f32
                        }
                    })
                    .collect();
            }
            PreprocessKind::WhitenPca | PreprocessKind::WhitenZca => {
                if d > MAX_WHITEN_DIM {
                    return Err(format!(
                        "whiten: `{input}` has {d} values per sample; whitening handles at most {MAX_WHITEN_DIM} (a {d}x{d} covariance)"
                    ));
                }
                let eps = num_arg(choice, "eps", Some(1e-5))?;
                if eps <= 0.0 {
                    return Err(format!("whiten: `eps` must be above 0, found {eps}"));
                }
                let mut cov = vec![0.0f64; d * d];
                let mut c = vec![0.0f64; d];
                for &r in &rows {
                    for ((ci, &v), m) in c.iter_mut().zip(row(r)).zip(&mean) {
                        *ci = f64::from(v) - m;
                    }
                    for i in 0..d {
                        let ci = c[i];
                        if ci == 0.0 {
                            continue;
                        }
                        let out = &mut cov[i * d..(i + 1) * d];
                        for (o, &cj) in out[i..].iter_mut().zip(&c[i..]) {
                            *o += ci * cj;
                        }
                    }
                }
                for i in 0..d {
                    for j in i..d {
                        let v = cov[i * d + j] / nf;
                        cov[i * d + j] = v;
                        cov[j * d + i] = v;
                    }
                }
                let eig = linalg::symmetric_eigen(&cov, d).map_err(|e| format!("whiten: {e}"))?;
                let inv: Vec<f64> = eig.values.iter().map(|&l| 1.0 / (l.max(0.0) + eps).sqrt()).collect();
                let v = &eig.vectors;
                let mut m = vec![0.0f64; d * d];
                if kind == PreprocessKind::WhitenPca {
                    for i in 0..d {
                        for k in 0..d {
                            m[i * d + k] = v[i * d + k] * inv[k];
                        }
                    }
                } else {
                    // M = V diag(inv) Vᵀ: M[i][j] = Σ_k V[i][k] inv[k] V[j][k].
                    let mut vs = vec![0.0f64; d * d];
                    for i in 0..d {
                        for k in 0..d {
                            vs[i * d + k] = v[i * d + k] * inv[k];
                        }
                    }
                    for i in 0..d {
                        for j in i..d {
                            let s: f64 =
                                vs[i * d..(i + 1) * d].iter().zip(&v[j * d..(j + 1) * d]).map(|(a, b)| a * b).sum();
                            m[i * d + j] = s;
                            m[j * d + i] = s;
                        }
                    }
                }
                p.matrix = m.iter().map(|&x| x as f32).collect();
            }
        }
        Ok(p)
    }

    /// Transforms the samples of a flat f32 buffer of whole samples, in place.
    pub fn apply_values(&self, x: &mut [f32]) -> Result<(), String> {
        let d = self.dim;
        if self.kind == PreprocessKind::None {
            return Ok(());
        }
        if d == 0 || !x.len().is_multiple_of(d) {
            return Err(format!(
                "preprocess: `{}` has {} values, not a whole number of {d}-value samples",
                self.input,
                x.len()
            ));
        }
        let sizes_ok = self.mean.len() == d
            && match self.kind {
                PreprocessKind::Standardize => self.scale.len() == d,
                PreprocessKind::WhitenPca | PreprocessKind::WhitenZca => self.matrix.len() == d * d,
                _ => true,
            };
        if !sizes_ok {
            return Err(format!("preprocess `{}`: the fitted tensors do not match {d} values per sample", self.kind()));
        }
        match self.kind {
            PreprocessKind::None => {}
            PreprocessKind::Center => {
                for s in x.chunks_mut(d) {
                    s.iter_mut().zip(&self.mean).for_each(|(v, m)| *v -= m);
                }
            }
            PreprocessKind::Standardize => {
                for s in x.chunks_mut(d) {
                    for ((v, m), sc) in s.iter_mut().zip(&self.mean).zip(&self.scale) {
                        *v = (*v - m) / sc;
                    }
                }
            }
            PreprocessKind::WhitenPca | PreprocessKind::WhitenZca => {
                let mut c = vec![0.0f32; d];
                let mut out = vec![0.0f32; d];
                for s in x.chunks_mut(d) {
                    for ((ci, &v), m) in c.iter_mut().zip(s.iter()).zip(&self.mean) {
                        *ci = v - m;
                    }
                    out.iter_mut().for_each(|o| *o = 0.0);
                    for (i, &ci) in c.iter().enumerate() {
                        if ci == 0.0 {
                            continue;
                        }
                        let mrow = &self.matrix[i * d..(i + 1) * d];
                        out.iter_mut().zip(mrow).for_each(|(o, &w)| *o += ci * w);
                    }
                    s.copy_from_slice(&out);
                }
            }
        }
        Ok(())
    }

    /// Transforms the input's array among `arrays` (e.g. from `gather`), in place.
    pub fn apply(&self, arrays: &mut BTreeMap<String, Array>) -> Result<(), String> {
        if self.kind == PreprocessKind::None {
            return Ok(());
        }
        let arr = arrays.get_mut(&self.input).ok_or_else(|| format!("preprocess: no array `{}`", self.input))?;
        if arr.per_sample() != self.dim {
            return Err(format!(
                "preprocess: `{}` has {} values per sample, but the preprocessing was fitted on {}",
                self.input,
                arr.per_sample(),
                self.dim
            ));
        }
        match &mut arr.data {
            ArrayData::F32(v) => self.apply_values(v),
            ArrayData::I32(_) => Err(format!("preprocess: `{}` is i32; expected f32", self.input)),
        }
    }

    /// Transforms every row of the dataset, in place.
    pub fn apply_dataset(&self, ds: &mut Dataset) -> Result<(), String> {
        self.apply(&mut ds.arrays)
    }

    /// The tensors a checkpoint stores: name -> (shape, values).
    pub fn to_tensors(&self) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
        let mut t = BTreeMap::new();
        t.insert(KIND_TENSOR.to_string(), (vec![1], vec![self.kind.code()]));
        if self.kind != PreprocessKind::None {
            t.insert(MEAN_TENSOR.to_string(), (vec![self.dim], self.mean.clone()));
        }
        if self.kind == PreprocessKind::Standardize {
            t.insert(SCALE_TENSOR.to_string(), (vec![self.dim], self.scale.clone()));
        }
        if matches!(self.kind, PreprocessKind::WhitenPca | PreprocessKind::WhitenZca) {
            t.insert(MATRIX_TENSOR.to_string(), (vec![self.dim, self.dim], self.matrix.clone()));
        }
        t
    }

    /// Rebuilds a preprocessor of `input` from `to_tensors` output. No `preprocess.kind`
    /// tensor means `none`.
    pub fn from_tensors(t: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, input: &str) -> Result<Preprocessor, String> {
        let Some((_, kind)) = t.get(KIND_TENSOR) else {
            return Ok(Preprocessor::none());
        };
        let kind = match kind.as_slice() {
            [c] => PreprocessKind::from_code(*c),
            _ => None,
        }
        .ok_or_else(|| format!("`{KIND_TENSOR}` should hold one of 0, 1, 2, 3, 4, found {kind:?}"))?;
        if kind == PreprocessKind::None {
            return Ok(Preprocessor::none());
        }
        let get = |name: &str, want: usize| -> Result<Vec<f32>, String> {
            let (shape, v) =
                t.get(name).ok_or_else(|| format!("`{name}` is missing (preprocessing `{}`)", kind.name()))?;
            if v.len() != want || shape.iter().product::<usize>() != want {
                return Err(format!("`{name}` should hold {want} values, found shape {shape:?} with {}", v.len()));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(format!("`{name}` has NaN or infinite values"));
            }
            Ok(v.clone())
        };
        let dim = t.get(MEAN_TENSOR).map(|(_, v)| v.len()).unwrap_or(0);
        // The mean sets the size; a scale of another size is reported with both, so the
        // wrong one is not guessed.
        if let (Some((ms, _)), Some((ss, sv))) = (t.get(MEAN_TENSOR), t.get(SCALE_TENSOR)) {
            if kind == PreprocessKind::Standardize && sv.len() != dim {
                return Err(format!(
                    "`{MEAN_TENSOR}` has shape {ms:?} but `{SCALE_TENSOR}` has shape {ss:?}; both must hold one value per feature"
                ));
            }
        }
        let mut p = Preprocessor {
            kind,
            input: input.to_string(),
            dim,
            mean: get(MEAN_TENSOR, dim)?,
            scale: vec![],
            matrix: vec![],
        };
        match kind {
            PreprocessKind::Standardize => {
                p.scale = get(SCALE_TENSOR, dim)?;
                if p.scale.contains(&0.0) {
                    return Err(format!("`{SCALE_TENSOR}` has a zero divisor"));
                }
            }
            PreprocessKind::WhitenPca | PreprocessKind::WhitenZca => p.matrix = get(MATRIX_TENSOR, dim * dim)?,
            _ => {}
        }
        Ok(p)
    }
}
