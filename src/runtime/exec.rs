//! Running a graph on named tensors (safetensors files): parameters and states by their
//! dotted names, inputs by their `input` names; results by output name plus `loss`.
//! Other tensors in the files (a checkpoint's optimizer state, say) are ignored.

use super::interp::{self, Data, Feeds, Tensor};
use super::Real;
use crate::ir::{DType, Graph};
use crate::tensors::{HostData, HostTensor, TensorMap};

/// How to run.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecOptions {
    /// Run in f64 (the default is f32, as the compiled code does).
    pub f64: bool,
    pub seed: u64,
    pub step: u64,
    /// Run JIT-compiled native code (f32) instead of the interpreter.
    pub backend: crate::runtime::backend::Backend,
}

/// A float tensor of exactly `shape` as f64, or an error naming it as `kind` `name`.
pub fn floats_of(name: &str, kind: &str, t: &HostTensor, shape: &[i64]) -> Result<Vec<f64>, String> {
    let want: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    if t.shape != want {
        return Err(format!("{kind} `{name}` must have shape {want:?}, found {:?}", t.shape));
    }
    t.floats()
        .map(<[f64]>::to_vec)
        .ok_or_else(|| format!("{kind} `{name}` must be a float tensor, found {}", t.dtype_name()))
}

/// Builds the interpreter's feeds for `g` from named tensors.
pub fn feeds<T: Real>(
    g: &Graph,
    params: &TensorMap,
    inputs: &TensorMap,
    opts: ExecOptions,
) -> Result<Feeds<T>, String> {
    let conv = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect::<Vec<T>>();
    let mut ps = Vec::new();
    for p in &g.params {
        let t = params.get(&p.name).ok_or_else(|| format!("parameter `{}` is missing", p.name))?;
        ps.push(conv(floats_of(&p.name, "parameter", t, &p.shape)?));
    }
    let mut ss = Vec::new();
    for s in &g.states {
        let t = params.get(&s.name).ok_or_else(|| format!("state `{}` is missing", s.name))?;
        ss.push(conv(floats_of(&s.name, "state", t, &s.shape)?));
    }
    let mut ins = Vec::new();
    let bounds = crate::ir::id_bounds(g);
    for (i, bound) in g.inputs.iter().zip(&bounds) {
        if let (Some((b, what)), Some(HostData::I32(v))) = (bound, inputs.get(&i.name).map(|t| &t.data)) {
            if let Some((pos, bad)) = v.iter().enumerate().find(|(_, &x)| i64::from(x) < 0 || i64::from(x) >= *b) {
                return Err(format!("input `{}`: element {pos} is {bad}, outside 0..{b} (the {what})", i.name));
            }
        }
    }
    for i in &g.inputs {
        let t = inputs.get(&i.name).ok_or_else(|| format!("input `{}` is missing", i.name))?;
        let tensor = match (&t.data, i.ty.dtype) {
            (HostData::F32(v) | HostData::F64(v), DType::F32) => Tensor::f(t.shape.clone(), conv(v.clone())),
            (HostData::I32(v), DType::I32) => Tensor::i(t.shape.clone(), v.clone()),
            _ => return Err(format!("input `{}` must be {}, found {}", i.name, i.ty.dtype.name(), t.dtype_name())),
        };
        ins.push(tensor);
    }
    let shapes: Vec<Vec<usize>> = ins.iter().map(|t| t.shape.clone()).collect();
    super::bind_inputs(g, &shapes)?;
    Ok(Feeds { inputs: ins, params: ps, states: ss, seed: opts.seed, step: opts.step })
}

fn host<T: Real>(t: &Tensor<T>, f64_out: bool) -> HostTensor {
    let data = match &t.data {
        Data::F(v) => {
            let v: Vec<f64> = v.iter().map(|x| x.to_f64()).collect();
            if f64_out {
                HostData::F64(v)
            } else {
                HostData::F32(v)
            }
        }
        Data::I(v) => HostData::I32(v.clone()),
    };
    HostTensor { shape: t.shape.clone(), data }
}

fn run_t<T: Real>(g: &Graph, params: &TensorMap, inputs: &TensorMap, opts: ExecOptions) -> Result<TensorMap, String> {
    let f = feeds::<T>(g, params, inputs, opts)?;
    let r = interp::run(g, &f)?;
    let mut out = TensorMap::new();
    if let Some(l) = g.loss {
        out.insert("loss".into(), host(r.get(l), opts.f64));
    }
    for (name, v) in &g.outputs {
        out.insert(name.clone(), host(r.get(*v), opts.f64));
    }
    Ok(out)
}

/// Runs `g` and returns `loss` and every output (JIT or interpreter).
pub fn run_named(g: &Graph, params: &TensorMap, inputs: &TensorMap, opts: ExecOptions) -> Result<TensorMap, String> {
    if opts.backend.jit() && !opts.f64 {
        return run_jit(g, params, inputs, opts);
    }
    if opts.f64 {
        run_t::<f64>(g, params, inputs, opts)
    } else {
        run_t::<f32>(g, params, inputs, opts)
    }
}

fn run_jit(g: &Graph, params: &TensorMap, inputs: &TensorMap, opts: ExecOptions) -> Result<TensorMap, String> {
    let f = feeds::<f32>(g, params, inputs, opts)?;
    let shapes: Vec<Vec<usize>> = f.inputs.iter().map(|t| t.shape.clone()).collect();
    let b = super::bind_inputs(g, &shapes)?;
    let mut cg = g.clone();
    for (i, name) in g.symbols.iter().enumerate() {
        if let Some(v) = b.0[i] {
            cg = crate::ir::bind_symbol(&cg, name, v)?;
        }
    }
    let mut exe = super::executable::Executable::new(&cg, &Default::default())?;
    for (i, p) in f.params.iter().enumerate() {
        exe.set_param(i, p)?;
    }
    for (i, s) in f.states.iter().enumerate() {
        exe.set_state(i, s)?;
    }
    for (i, t) in f.inputs.iter().enumerate() {
        match &t.data {
            Data::F(d) => exe.set_input_f32(i, d)?,
            Data::I(d) => exe.set_input_i32(i, d)?,
        }
    }
    exe.run(opts.seed, opts.step);
    let mut out = TensorMap::new();
    let shape = |v: crate::ir::Value| -> Vec<usize> {
        exe.graph.ty(v).shape.iter().map(|d| d.as_const().unwrap_or(0) as usize).collect()
    };
    if let Some(l) = exe.graph.loss {
        out.insert("loss".into(), HostTensor::f32(vec![], vec![f64::from(exe.loss()?)]));
        let _ = l;
    }
    for (name, v) in &exe.graph.outputs {
        let raw = exe.value(*v)?;
        let t = if exe.graph.ty(*v).dtype == DType::I32 {
            // i32 values live in the arena as their bits.
            HostTensor { shape: shape(*v), data: HostData::I32(raw.iter().map(|x| x.to_bits() as i32).collect()) }
        } else {
            HostTensor::f32(shape(*v), raw.iter().map(|&x| f64::from(x)).collect())
        };
        out.insert(name.clone(), t);
    }
    Ok(out)
}
