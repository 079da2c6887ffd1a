//! Distillation's teachers: the frozen tensors a model reads from its teacher's checkpoint.
//!
//! Lowering turns `teacher = Big from "runs/big/best.safetensors"` into the teacher's eval
//! graph inside the student's graphs; the teacher's parameters and states become states
//! `teacher.<name>` whose initializer is `Init::Load { path, tensor }`. They are never
//! updated (no gradient reaches a state, and nothing writes them), and the student's
//! checkpoints do not store them: whoever binds the student's tensors reads them here.
//!
//! The teacher sees the student's inputs after the student's preprocessing, so the two
//! must have been preprocessed alike; `check_preprocessing` refuses a teacher trained with
//! other preprocessing statistics rather than feed it inputs it was not trained on.

use crate::data::KIND_TENSOR;
use crate::ir::{Graph, StateDecl};
use crate::tensors::{HostTensor, TensorMap};
use std::collections::BTreeMap;
use std::path::Path;

/// Reads every frozen state of `g` from its file (each file once), checked by name,
/// shape and dtype: (state index, values).
pub fn load(g: &Graph) -> Result<Vec<(usize, Vec<f32>)>, String> {
    let mut out = Vec::new();
    for file in g.teacher_files() {
        let (tensors, meta) = super::checkpoint::read(Path::new(&file))
            .map_err(|e| format!("the teacher's checkpoint cannot be read: {e}"))?;
        for (i, s) in g.states.iter().enumerate() {
            let Some((p, name)) = s.teacher_source() else { continue };
            if p != file {
                continue;
            }
            out.push((i, tensor(&tensors, &meta, &file, name, s)?));
        }
    }
    Ok(out)
}

fn tensor(
    tensors: &TensorMap,
    meta: &BTreeMap<String, String>,
    file: &str,
    name: &str,
    s: &StateDecl,
) -> Result<Vec<f32>, String> {
    let args: Vec<String> =
        meta.iter().filter_map(|(k, v)| k.strip_prefix("nnc.arg.").map(|a| format!("{a} = {v}"))).collect();
    let trained_as = match (meta.get("nnc.model"), args.is_empty()) {
        (Some(m), true) => format!(" (it holds model `{m}`)"),
        (Some(m), false) => format!(" (it holds model `{m}` trained with {})", args.join(", ")),
        (None, _) => String::new(),
    };
    let t = tensors.get(name).ok_or_else(|| {
        format!("the teacher's checkpoint `{file}` has no tensor `{name}` (for `{}`){trained_as}", s.name)
    })?;
    let want: Vec<usize> = s.shape.iter().map(|&d| d as usize).collect();
    if t.shape != want {
        return Err(format!(
            "the teacher's checkpoint `{file}`: tensor `{name}` has shape {:?}, the teacher as declared needs {want:?}\
             {trained_as}; pass the teacher the arguments it was trained with",
            t.shape
        ));
    }
    let v = t.floats().ok_or_else(|| {
        format!("the teacher's checkpoint `{file}`: tensor `{name}` is {}, expected F32", t.dtype_name())
    })?;
    if let Some(j) = v.iter().position(|x| !x.is_finite()) {
        return Err(format!("the teacher's checkpoint `{file}`: tensor `{name}` holds {} at element {j}", v[j]));
    }
    Ok(v.iter().map(|&x| x as f32).collect())
}

/// Adds the teacher tensors of `g` to `map` under their state names (for tools that bind
/// tensors by name: `predict`, `grad`, `init`). Names already present are kept.
pub fn fill(g: &Graph, map: &mut TensorMap) -> Result<(), String> {
    if !g.states.iter().any(|s| s.teacher_source().is_some() && !map.contains_key(&s.name)) {
        return Ok(());
    }
    for (i, v) in load(g)? {
        let s = &g.states[i];
        map.entry(s.name.clone()).or_insert_with(|| {
            HostTensor::f32(s.shape.iter().map(|&d| d as usize).collect(), v.iter().map(|&x| f64::from(x)).collect())
        });
    }
    Ok(())
}

/// Checks that every teacher of `g` was trained on inputs preprocessed as the student's
/// are (`student`: the student's preprocessing tensors, `Preprocessor::to_tensors`). The
/// teacher reads the student's preprocessed inputs, so other statistics would feed it
/// inputs it never saw.
pub fn check_preprocessing(g: &Graph, student: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> Result<(), String> {
    for file in g.teacher_files() {
        let (tensors, meta) = super::checkpoint::read(Path::new(&file))
            .map_err(|e| format!("the teacher's checkpoint cannot be read: {e}"))?;
        let mut teacher: BTreeMap<String, (Vec<usize>, Vec<f64>)> = BTreeMap::new();
        for (k, t) in &tensors {
            if k.starts_with("preprocess.") {
                teacher.insert(k.clone(), (t.shape.clone(), t.floats().map(<[f64]>::to_vec).unwrap_or_default()));
            }
        }
        let kind_of = |m: &BTreeMap<String, (Vec<usize>, Vec<f64>)>| m.get(KIND_TENSOR).map(|(_, v)| v.clone());
        let student64: BTreeMap<String, (Vec<usize>, Vec<f64>)> = student
            .iter()
            .map(|(k, (s, v))| (k.clone(), (s.clone(), v.iter().map(|&x| f64::from(x)).collect())))
            .collect();
        // Kind code 0 is `none` (no tensor at all: a checkpoint from before kinds were stored).
        let none = |m: &BTreeMap<String, (Vec<usize>, Vec<f64>)>| kind_of(m).is_none_or(|k| k.first() == Some(&0.0));
        let same = (none(&teacher) && none(&student64))
            || (teacher.len() == student64.len()
                && teacher.iter().all(|(k, (shape, v))| {
                    student64.get(k).is_some_and(|(s2, v2)| {
                        s2 == shape
                            && v.len() == v2.len()
                            && v.iter().zip(v2).all(|(a, b)| (a - b).abs() <= 1e-6 * a.abs().max(1.0))
                    })
                }));
        if !same {
            let recorded = meta.get("nnc.preprocess").map(String::as_str).unwrap_or("none");
            return Err(format!(
                "the teacher `{file}` was trained with `preprocess = {recorded}` fitted on its own training rows, and \
                 the student's inputs are preprocessed differently; the teacher reads the student's inputs, so train \
                 both on the same data with the same `split`, `split_seed` and `preprocess`"
            ));
        }
    }
    Ok(())
}
