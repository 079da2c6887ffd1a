//! Post-training int8 quantization (量化技术).
//!
//! - **Weights** (parameters of rank >= 2): per output channel, symmetric. Channel c of
//!   W has scale s_c = max |W_c| / 127 and is stored as int8 q = round(W / s_c) in
//!   [-127, 127] (an `I8` tensor under the weight's own name) with `quant.scale.<W>`
//!   (f32, shaped to broadcast over W: `[1, out]` for a `[in, out]` matrix, `[c_out, 1,
//!   1, 1]` for a kernel). `checkpoint::read` gives every command W = q · s in f32, so
//!   the stored weights are 4x smaller and every reader computes with exactly the
//!   quantized values.
//! - **Activations**: every operand of a matrix product that depends on an input (a
//!   Dense layer's input, a convolution's patches, attention's queries and keys) is
//!   rounded to int8 on a per-tensor symmetric grid, scale max |a| / 127 over calibration
//!   rows from the training part (`quant.act.<k>`, the k-th such operand in graph
//!   order). With int8 operands the products are exact in f32 while their sums stay below
//!   2^24 (127 · 127 · K for K up to 1040), as an int8 × int8 → int32 kernel computes
//!   them; `fake_quant_graph` inserts round and clamp before those products in the eval
//!   graph, which `eval` and `predict` use whenever a checkpoint is quantized.

use std::collections::BTreeMap;

use crate::ir::{BinaryOp, Graph, Op, Type, UnaryOp, Value};
use crate::tensors::{HostData, HostTensor, TensorMap};

/// The metadata key that marks a quantized checkpoint, and its value.
pub const META_KEY: &str = "nnc.quant";
pub const META_INT8: &str = "int8";
/// Prefixes of the scale tensors.
pub const WEIGHT_SCALE: &str = "quant.scale.";
pub const ACT_SCALE: &str = "quant.act.";

/// The symmetric int8 range.
pub const QMAX: f64 = 127.0;

/// The operands of matrix products that depend on an input, in graph order: (product,
/// operand index).
pub fn activation_sites(g: &Graph) -> Vec<(Value, usize)> {
    let mut live = vec![false; g.len()];
    let mut sites = Vec::new();
    for (v, n) in g.nodes.iter() {
        let i = v.as_u32() as usize;
        live[i] = matches!(n.op, Op::Input(_)) || n.args.iter().any(|a| live[a.as_u32() as usize]);
        if n.op == Op::MatMul {
            for (k, a) in n.args.iter().enumerate() {
                if live[a.as_u32() as usize] {
                    sites.push((v, k));
                }
            }
        }
    }
    sites
}

/// The channel axis of a weight and the shape its scale has.
pub fn scale_shape(shape: &[usize]) -> (usize, Vec<usize>) {
    let axis = if shape.len() == 2 { 1 } else { 0 };
    let s = shape.iter().enumerate().map(|(i, &d)| if i == axis { d } else { 1 }).collect();
    (axis, s)
}

/// Quantizes one weight per channel: the int8 values and the scales.
pub fn quantize_weight(shape: &[usize], w: &[f64]) -> (Vec<i32>, Vec<f64>, Vec<usize>) {
    let (axis, sshape) = scale_shape(shape);
    let count = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let ch = |i: usize| (i / inner) % count;
    let mut amax = vec![0f64; count];
    for (i, x) in w.iter().enumerate() {
        amax[ch(i)] = amax[ch(i)].max(x.abs());
    }
    // In f32, as the weights are used: s = amax / 127 (1 for an all-zero channel).
    let scale: Vec<f64> = amax.iter().map(|&a| if a > 0.0 { f64::from((a / QMAX) as f32) } else { 1.0 }).collect();
    let q = w.iter().enumerate().map(|(i, x)| (x / scale[ch(i)]).round_ties_even().clamp(-QMAX, QMAX) as i32).collect();
    (q, scale, sshape)
}

/// Dequantizes int8 weights in place: every `I32` tensor (an `I8` one as read) with a
/// `quant.scale.<name>` beside it becomes f32 q · s.
pub fn dequantize(tensors: &mut TensorMap, file: &str) -> Result<(), String> {
    let names: Vec<String> = tensors.keys().filter_map(|k| k.strip_prefix(WEIGHT_SCALE)).map(str::to_string).collect();
    for name in names {
        let scale = tensors[&format!("{WEIGHT_SCALE}{name}")].clone();
        let Some(s) = scale.floats() else {
            return Err(format!("`{file}`: `{WEIGHT_SCALE}{name}` must be a float tensor"));
        };
        let Some(t) = tensors.get_mut(&name) else {
            return Err(format!("`{file}` has `{WEIGHT_SCALE}{name}` but no tensor `{name}` to scale"));
        };
        let HostData::I32(q) = &t.data else {
            return Err(format!("`{file}`: the quantized weight `{name}` must be int8, found {}", t.dtype_name()));
        };
        let (axis, want) = if t.shape.len() >= 2 { scale_shape(&t.shape) } else { (0, vec![]) };
        if t.shape.len() < 2 || scale.shape != want {
            return Err(format!(
                "`{file}`: `{WEIGHT_SCALE}{name}` has shape {:?}; weight `{name}` of shape {:?} needs {want:?}",
                scale.shape, t.shape
            ));
        }
        let count = t.shape[axis];
        let inner: usize = t.shape[axis + 1..].iter().product();
        if let Some((i, x)) = q.iter().enumerate().find(|(_, x)| x.unsigned_abs() > QMAX as u32) {
            return Err(format!("`{file}`: weight `{name}` element {i} is {x}, outside the int8 range -127..127"));
        }
        let w: Vec<f64> =
            q.iter().enumerate().map(|(i, &x)| f64::from((f64::from(x) * s[(i / inner) % count]) as f32)).collect();
        *t = HostTensor::f32(t.shape.clone(), w);
    }
    Ok(())
}

/// The int8 weights of a quantized checkpoint as the file stores them (`tensors::read`,
/// before `dequantize`, which checks them): (name, channel axis, values, scales).
pub fn int8_weights(raw: &TensorMap) -> Vec<(String, usize, Vec<i8>, Vec<f32>)> {
    let mut out = Vec::new();
    for (k, scale) in raw {
        let Some(name) = k.strip_prefix(WEIGHT_SCALE) else { continue };
        let (Some(t), Some(s)) = (raw.get(name), scale.floats()) else { continue };
        let HostData::I32(q) = &t.data else { continue };
        if t.shape.len() < 2 {
            continue;
        }
        let (axis, _) = scale_shape(&t.shape);
        let values = q.iter().map(|&x| x.clamp(-127, 127) as i8).collect();
        out.push((name.to_string(), axis, values, s.iter().map(|&x| x as f32).collect()));
    }
    out
}

/// The eval graph with every activation site (`activation_sites`) rounded to int8 on
/// its scale: a = clamp(round(a / s), -127, 127) · s before the product.
pub fn fake_quant_graph(g: &Graph, scales: &[f64]) -> Result<Graph, String> {
    let sites = activation_sites(g);
    if sites.len() != scales.len() {
        return Err(format!(
            "the checkpoint quantizes {} activations, but the model's eval graph has {} matrix-product operands that \
             depend on an input: it was quantized for another model",
            scales.len(),
            sites.len()
        ));
    }
    let mut at: BTreeMap<(Value, usize), f64> = BTreeMap::new();
    for (site, s) in sites.iter().zip(scales) {
        at.insert(*site, *s);
    }
    let mut b = Graph::new(g.mode);
    b.symbols = g.symbols.clone();
    let mut map: Vec<Value> = Vec::with_capacity(g.len());
    let err = |e: String| format!("internal error: quantizing the eval graph: {e}");
    for (v, n) in g.nodes.iter() {
        let mut args: Vec<Value> = n.args.iter().map(|a| map[a.as_u32() as usize]).collect();
        if n.op == Op::MatMul {
            for (k, a) in args.iter_mut().enumerate() {
                let Some(&s) = at.get(&(v, k)) else { continue };
                let shape = b.ty(*a).shape.clone();
                let konst = |b: &mut Graph, x: f64| -> Result<Value, String> {
                    let c = b.push(Op::Fill(x), vec![], Some(Type::scalar()))?;
                    b.push(Op::Broadcast { shape: shape.clone() }, vec![c], None)
                };
                let sv = konst(&mut b, s).map_err(err)?;
                let lo = konst(&mut b, -QMAX).map_err(err)?;
                let hi = konst(&mut b, QMAX).map_err(err)?;
                let d = b.push(Op::Binary(BinaryOp::Div), vec![*a, sv], None).map_err(err)?;
                let r = b.push(Op::Unary(UnaryOp::Round), vec![d], None).map_err(err)?;
                let r = b.push(Op::Binary(BinaryOp::Max), vec![r, lo], None).map_err(err)?;
                let r = b.push(Op::Binary(BinaryOp::Min), vec![r, hi], None).map_err(err)?;
                *a = b.push(Op::Binary(BinaryOp::Mul), vec![r, sv], None).map_err(err)?;
            }
        }
        let declared = n.args.is_empty().then(|| n.ty.clone());
        map.push(b.push(n.op.clone(), args, declared).map_err(err)?);
    }
    let m = |v: Value| map[v.as_u32() as usize];
    let mut out = crate::simplify::with_nodes(g, b.nodes, m);
    for s in out.scored.iter_mut() {
        s.value = m(s.value);
    }
    Ok(out)
}

/// The activation scales a checkpoint records, in site order (`None`: not quantized).
pub fn act_scales(
    tensors: &TensorMap,
    meta: &BTreeMap<String, String>,
    file: &str,
) -> Result<Option<Vec<f64>>, String> {
    match meta.get(META_KEY).map(String::as_str) {
        None => return Ok(None),
        Some(META_INT8) => {}
        Some(other) => return Err(format!("`{file}`: quantization `{other}` is not one nnc knows (it writes int8)")),
    }
    let mut out = Vec::new();
    while let Some(t) = tensors.get(&format!("{ACT_SCALE}{}", out.len())) {
        let v = t.floats().and_then(|v| v.first().copied()).filter(|s| s.is_finite() && *s > 0.0);
        out.push(v.ok_or_else(|| format!("`{file}`: `{ACT_SCALE}{}` must hold one positive scale", out.len()))?);
    }
    Ok(Some(out))
}

/// The eval graph a checkpoint is scored with: its quantized form for a quantized one.
pub fn eval_graph(
    g: &Graph,
    tensors: &TensorMap,
    meta: &BTreeMap<String, String>,
    file: &str,
) -> Result<Graph, String> {
    match act_scales(tensors, meta, file)? {
        Some(s) => fake_quant_graph(g, &s).map_err(|e| format!("`{file}`: {e}")),
        None => Ok(g.clone()),
    }
}

/// Quantization-aware training (`quantize = qat(momentum)`): `g` with every weight
/// (parameter of rank >= 2) fake-quantized per output channel on its current range
/// (s_c = max |W_c| / 127, each step) and every activation site (`activation_sites`) on a
/// per-tensor scale kept in the state `quant.act.<k>`: in a train graph the state follows
/// the exponential moving average of max |a| / 127 over steps (the first step takes the
/// batch's own), in an eval graph it is read. Rounding passes the gradient straight
/// through (1 inside the range, 0 outside, as the prelude's `fake_quant`); the scales get
/// none. The rewrite runs once per program (`with_qat`); a graph that has the states
/// already is refused.
pub fn qat_graph(g: &Graph, momentum: f64) -> Result<Graph, String> {
    use crate::ir::{Init, ReduceOp, StateDecl};
    if g.states.iter().any(|s| s.name.starts_with(ACT_SCALE)) {
        return Err(format!("internal error: the graph is quantization-aware already (it has `{ACT_SCALE}*` states)"));
    }
    let sites = activation_sites(g);
    let site_index: BTreeMap<(Value, usize), usize> = sites.iter().enumerate().map(|(k, s)| (*s, k)).collect();
    let train = g.mode == crate::ir::Mode::Train;
    let mut b = Graph::new(g.mode);
    b.symbols = g.symbols.clone();
    let err = |e: String| format!("internal error: quantization-aware graph: {e}");
    let mut raw: Vec<Value> = Vec::with_capacity(g.len());
    let mut map: Vec<Value> = Vec::with_capacity(g.len());
    let weights: Vec<bool> = {
        let mut w = vec![false; g.len()];
        for p in g.params.iter().filter(|p| p.is_weight()) {
            w[p.value.as_u32() as usize] = true;
        }
        w
    };
    let mut new_states: Vec<StateDecl> = Vec::new();
    // x on the grid of scale s (same shape), straight-through inside [-127 s, 127 s].
    let fq = |b: &mut Graph, x: Value, s: Value| -> Result<Value, String> {
        let shape = b.ty(x).shape.clone();
        let konst = |b: &mut Graph, v: f64| -> Result<Value, String> {
            let c = b.push(Op::Fill(v), vec![], Some(Type::scalar()))?;
            b.push(Op::Broadcast { shape: shape.clone() }, vec![c], None)
        };
        let s = b.push(Op::StopGradient, vec![s], None)?;
        let tiny = konst(b, 1e-30)?;
        let s = b.push(Op::Binary(BinaryOp::Max), vec![s, tiny], None)?;
        let (lo, hi) = (konst(b, -QMAX)?, konst(b, QMAX)?);
        let lo_s = b.push(Op::Binary(BinaryOp::Mul), vec![lo, s], None)?;
        let hi_s = b.push(Op::Binary(BinaryOp::Mul), vec![hi, s], None)?;
        let xc = b.push(Op::Binary(BinaryOp::Max), vec![x, lo_s], None)?;
        let xc = b.push(Op::Binary(BinaryOp::Min), vec![xc, hi_s], None)?;
        let d = b.push(Op::Binary(BinaryOp::Div), vec![x, s], None)?;
        let r = b.push(Op::Unary(UnaryOp::Round), vec![d], None)?;
        let r = b.push(Op::Binary(BinaryOp::Max), vec![r, lo], None)?;
        let r = b.push(Op::Binary(BinaryOp::Min), vec![r, hi], None)?;
        let q = b.push(Op::Binary(BinaryOp::Mul), vec![r, s], None)?;
        let delta = b.push(Op::Binary(BinaryOp::Sub), vec![q, xc], None)?;
        let delta = b.push(Op::StopGradient, vec![delta], None)?;
        b.push(Op::Binary(BinaryOp::Add), vec![xc, delta], None)
    };
    for (v, n) in g.nodes.iter() {
        let mut args: Vec<Value> = n.args.iter().map(|a| map[a.as_u32() as usize]).collect();
        if n.op == Op::MatMul {
            for (k, a) in args.iter_mut().enumerate() {
                let Some(&site) = site_index.get(&(v, k)) else { continue };
                let idx = g.states.len() + new_states.len();
                let st = b.push(Op::State(idx as u32), vec![], Some(Type::scalar())).map_err(err)?;
                let scale = if train {
                    // s' = m s + (1 - m) max|a| / 127, or max|a| / 127 while s is 0.
                    let r = b.ty(*a).rank() as u32;
                    let abs = b.push(Op::Unary(UnaryOp::Abs), vec![*a], None).map_err(err)?;
                    let amax = b
                        .push(Op::Reduce { op: ReduceOp::Max, axes: (0..r).collect() }, vec![abs], None)
                        .map_err(err)?;
                    let k127 = b.push(Op::Fill(1.0 / QMAX), vec![], Some(Type::scalar())).map_err(err)?;
                    let obs = b.push(Op::Binary(BinaryOp::Mul), vec![amax, k127], None).map_err(err)?;
                    let obs = b.push(Op::StopGradient, vec![obs], None).map_err(err)?;
                    let m = b.push(Op::Fill(momentum), vec![], Some(Type::scalar())).map_err(err)?;
                    let m1 = b.push(Op::Fill(1.0 - momentum), vec![], Some(Type::scalar())).map_err(err)?;
                    let a1 = b.push(Op::Binary(BinaryOp::Mul), vec![m, st], None).map_err(err)?;
                    let a2 = b.push(Op::Binary(BinaryOp::Mul), vec![m1, obs], None).map_err(err)?;
                    let ema = b.push(Op::Binary(BinaryOp::Add), vec![a1, a2], None).map_err(err)?;
                    let zero = b.push(Op::Fill(0.0), vec![], Some(Type::scalar())).map_err(err)?;
                    let fresh = b.push(Op::Binary(BinaryOp::Eq), vec![st, zero], None).map_err(err)?;
                    b.push(Op::Select, vec![fresh, obs, ema], None).map_err(err)?
                } else {
                    st
                };
                new_states.push(StateDecl {
                    name: format!("{ACT_SCALE}{site}"),
                    shape: vec![],
                    init: Init::Zeros,
                    value: st,
                    update: train.then_some(scale),
                    span: Default::default(),
                });
                let shape = b.ty(*a).shape.clone();
                let sb = if shape.is_empty() {
                    scale
                } else {
                    b.push(Op::Broadcast { shape }, vec![scale], None).map_err(err)?
                };
                *a = fq(&mut b, *a, sb).map_err(err)?;
            }
        }
        let declared = n.args.is_empty().then(|| n.ty.clone());
        let nv = b.push(n.op.clone(), args, declared).map_err(err)?;
        raw.push(nv);
        if weights[v.as_u32() as usize] {
            // Per output channel: the max over every other axis.
            let shape = b.ty(nv).shape.clone();
            let axis = if shape.len() == 2 { 1 } else { 0 };
            let others: Vec<u32> = (0..shape.len() as u32).filter(|&i| i as usize != axis).collect();
            let abs = b.push(Op::Unary(UnaryOp::Abs), vec![nv], None).map_err(err)?;
            let amax = b.push(Op::Reduce { op: ReduceOp::Max, axes: others }, vec![abs], None).map_err(err)?;
            let kshape = vec![b.ty(amax).shape[0].clone()];
            let k127 = b.push(Op::Fill(1.0 / QMAX), vec![], Some(Type::scalar())).map_err(err)?;
            let k127 = b.push(Op::Broadcast { shape: kshape }, vec![k127], None).map_err(err)?;
            let s = b.push(Op::Binary(BinaryOp::Mul), vec![amax, k127], None).map_err(err)?;
            let mut keep = shape.clone();
            for (i, d) in keep.iter_mut().enumerate() {
                if i != axis {
                    *d = crate::ir::Dim::konst(1);
                }
            }
            let s = b.push(Op::Reshape { shape: keep }, vec![s], None).map_err(err)?;
            let s = b.push(Op::Broadcast { shape }, vec![s], None).map_err(err)?;
            map.push(fq(&mut b, nv, s).map_err(err)?);
        } else {
            map.push(nv);
        }
    }
    let m = |v: Value| map[v.as_u32() as usize];
    let mut out = crate::simplify::with_nodes(g, b.nodes, m);
    for (p, gp) in out.params.iter_mut().zip(&g.params) {
        p.value = raw[gp.value.as_u32() as usize];
        p.update = gp.update.map(|u| map[u.as_u32() as usize]);
    }
    for (s, gs) in out.states.iter_mut().zip(&g.states) {
        s.value = raw[gs.value.as_u32() as usize];
    }
    for i in out.inputs.iter_mut() {
        i.value = raw[i.value.as_u32() as usize];
    }
    out.states.extend(new_states);
    for sc in out.scored.iter_mut() {
        sc.value = m(sc.value);
    }
    Ok(out)
}

/// A program as its `quantize` setting trains it: both graphs quantization-aware. The
/// front end runs it last (`pipeline`); a program it ran on is returned as it is.
pub fn with_qat(p: &crate::ir::Program) -> Result<crate::ir::Program, String> {
    let Some(c) = p.settings.quantize.as_ref().filter(|c| c.name == "qat" && !p.qat) else {
        return Ok(p.clone());
    };
    let m = c.num("momentum").unwrap_or(0.9);
    let mut q = p.clone();
    q.train = qat_graph(&p.train, m)?;
    q.eval = qat_graph(&p.eval, m)?;
    q.qat = true;
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_weights_round_trip_within_half_a_step() {
        let shape = [3usize, 2];
        let w = [0.5, -2.0, -0.25, 1.0, 0.1, 0.0];
        let (q, s, sshape) = quantize_weight(&shape, &w);
        assert_eq!(sshape, vec![1, 2]);
        assert_eq!((q[0], q[1], q[5]), (127, -127, 0), "{q:?}");
        assert!(q.iter().all(|x| x.abs() <= 127));
        let mut t = TensorMap::from([
            ("w".to_string(), HostTensor { shape: shape.to_vec(), data: HostData::I32(q) }),
            (format!("{WEIGHT_SCALE}w"), HostTensor::f32(sshape, s.clone())),
        ]);
        dequantize(&mut t, "t").expect("dequantize");
        let back = t["w"].floats().expect("f32").to_vec();
        for (i, (a, b)) in w.iter().zip(&back).enumerate() {
            assert!((a - b).abs() <= 0.5 * s[i % 2] + 1e-7, "{i}: {a} vs {b}");
        }
    }
}
