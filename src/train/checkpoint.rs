//! Checkpoints: what a run writes (parameters, states with optimizer state, the
//! preprocessing, and metadata that records the recipe, the data and the split), and the
//! one validation every command that reads a checkpoint goes through.
//!
//! Metadata keys (all strings): `nnc.model`, `nnc.source_hash`, the loop's position
//! (`nnc.epoch`, `nnc.step`, `nnc.best`, `nnc.best_epoch`, `nnc.bad_epochs`, and inside an
//! interrupted epoch `nnc.batch`, `nnc.epoch_loss`, `nnc.epoch_seen`, `nnc.epoch_correct`),
//! the split (`SplitRecord`: `nnc.data`, `nnc.data_rows`, `nnc.data_hash`, `nnc.split`,
//! `nnc.split_seed`, `nnc.preprocess`, `nnc.metrics_on`) and the recipe (`nnc.recipe.<key>`
//! for every train setting that shapes the trajectory: `--resume` refuses a change).

use crate::data::{ArrayData, Dataset};
use crate::ir::{Graph, Program};
use crate::tensors::{HostData, TensorMap};
use std::collections::BTreeMap;
use std::path::Path;

/// Everything that defines which rows a run trained on and which it held out.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitRecord {
    /// The data source as written (`csv(path = "data/digits.csv.gz", label = -1, ...)`).
    pub data: String,
    pub rows: usize,
    /// A 64-bit FNV-1a hash of every array the source loaded (names, shapes, bytes).
    pub hash: String,
    /// The split fractions (empty: no split).
    pub split: Vec<f64>,
    pub split_seed: u64,
    /// The preprocessing as written (`standardize`).
    pub preprocess: String,
}

/// FNV-1a over a data set's arrays, in name order.
pub fn data_hash(ds: &Dataset) -> String {
    let mut h = crate::rng::Fnv::default();
    let mut eat = |bytes: &[u8]| h.eat(bytes);
    eat(&(ds.n as u64).to_le_bytes());
    for (name, a) in &ds.arrays {
        eat(name.as_bytes());
        for d in &a.shape {
            eat(&(*d as u64).to_le_bytes());
        }
        match &a.data {
            ArrayData::F32(v) => v.iter().for_each(|x| eat(&x.to_bits().to_le_bytes())),
            ArrayData::I32(v) => v.iter().for_each(|x| eat(&x.to_le_bytes())),
        }
    }
    format!("{:016x}", h.finish())
}

impl SplitRecord {
    /// The record of a program's settings over a loaded (raw, unpreprocessed) data set.
    pub fn of(p: &Program, raw: &Dataset) -> SplitRecord {
        let s = &p.settings;
        SplitRecord {
            data: s.data.as_ref().map(|c| c.render()).unwrap_or_default(),
            rows: raw.n,
            hash: data_hash(raw),
            split: s.split.clone(),
            split_seed: s.split_seed(),
            preprocess: s.preprocess.render(),
        }
    }

    pub fn to_meta(&self, meta: &mut BTreeMap<String, String>) {
        meta.insert("nnc.data".into(), self.data.clone());
        meta.insert("nnc.data_rows".into(), self.rows.to_string());
        meta.insert("nnc.data_hash".into(), self.hash.clone());
        let split: Vec<String> = self.split.iter().map(|f| f.to_string()).collect();
        meta.insert("nnc.split".into(), split.join(","));
        meta.insert("nnc.split_seed".into(), self.split_seed.to_string());
        meta.insert("nnc.preprocess".into(), self.preprocess.clone());
    }

    /// The record in a checkpoint's metadata; `Err` names what is missing or malformed.
    pub fn from_meta(meta: &BTreeMap<String, String>, path: &Path) -> Result<SplitRecord, String> {
        if !meta.contains_key("nnc.model") {
            return Err(format!(
                "`{}` is not a training checkpoint (it records no model and no split: an `nnc init` file?); this \
                 needs a checkpoint written by `nnc train`",
                path.display()
            ));
        }
        let get = |k: &str| {
            meta.get(k).ok_or_else(|| {
                format!(
                    "`{}` does not record its split (no `{k}`: it was written by an older nnc), so its held-out \
                     rows cannot be rebuilt; train it again",
                    path.display()
                )
            })
        };
        let bad = |k: &str, v: &str| format!("`{}`: metadata `{k}` is `{v}`, which is not valid", path.display());
        let rows = get("nnc.data_rows")?;
        let seed = get("nnc.split_seed")?;
        let split_text = get("nnc.split")?;
        let mut split = Vec::new();
        for f in split_text.split(',').filter(|f| !f.is_empty()) {
            let x: f64 = f.parse().map_err(|_| bad("nnc.split", split_text))?;
            if !(0.0..=1.0).contains(&x) {
                return Err(bad("nnc.split", split_text));
            }
            split.push(x);
        }
        if !split.is_empty() && ((split.iter().sum::<f64>() - 1.0).abs() > 1e-6 || !(2..=3).contains(&split.len())) {
            return Err(bad("nnc.split", split_text));
        }
        Ok(SplitRecord {
            data: get("nnc.data")?.clone(),
            rows: rows.parse().map_err(|_| bad("nnc.data_rows", rows))?,
            hash: get("nnc.data_hash")?.clone(),
            split,
            split_seed: seed.parse().map_err(|_| bad("nnc.split_seed", seed))?,
            preprocess: get("nnc.preprocess")?.clone(),
        })
    }
}

/// The recipe a resumed run must keep, rendered: the settings declared
/// `OnResume::Recipe` or `Extend` (`settings::recorded`) and the model's arguments.
pub fn recipe(p: &Program) -> BTreeMap<String, String> {
    let mut r: BTreeMap<String, String> =
        crate::settings::recorded(&p.settings).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    // The model's arguments shape it as much as the settings do.
    for (k, v) in &p.args {
        r.insert(format!("arg.{k}"), v.clone());
    }
    r
}

/// Reads a checkpoint: its tensors and metadata.
/// Int8 weights of a quantized checkpoint are dequantized (`compress::quantize`).
pub fn read(path: &Path) -> Result<(TensorMap, BTreeMap<String, String>), String> {
    let mut tensors = crate::tensors::read(path)?;
    crate::compress::quantize::dequantize(&mut tensors, &path.display().to_string())?;
    let bytes = std::fs::read(path).map_err(|err| format!("cannot read `{}`: {err}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|err| format!("`{}` is not a valid checkpoint: {err}", path.display()))?;
    let meta: BTreeMap<String, String> = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    Ok((tensors, meta))
}

/// Checks that `tensors` (read from `path`) hold every parameter and state of `g` as f32
/// with its exact shape; `states` says whether states (and optimizer state) are required.
pub fn validate(g: &Graph, tensors: &TensorMap, path: &Path, states: bool) -> Result<(), String> {
    let check = |name: &str, shape: &[i64], what: &str| -> Result<(), String> {
        let t = tensors.get(name).ok_or_else(|| format!("`{}` has no {what} `{name}`", path.display()))?;
        let want: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        if t.shape != want {
            return Err(format!(
                "`{}`: {what} `{name}` has shape {:?}, the model needs {:?}",
                path.display(),
                t.shape,
                want
            ));
        }
        if !matches!(t.data, HostData::F32(_) | HostData::F64(_)) {
            return Err(format!(
                "`{}`: {what} `{name}` is {}, the model needs floats (F32)",
                path.display(),
                t.dtype_name()
            ));
        }
        Ok(())
    };
    for p in &g.params {
        check(&p.name, &p.shape, "parameter")?;
    }
    if states {
        for s in g.states.iter().filter(|s| s.teacher_source().is_none()) {
            check(&s.name, &s.shape, "state")?;
        }
    }
    Ok(())
}
