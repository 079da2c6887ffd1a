//! The reference interpreter: the executable definition of every primitive.
//!
//! Plain loops over row-major buffers, no cleverness: this is the oracle that autodiff,
//! fusion, buffer planning and the JIT are checked against. It also fingerprints every
//! discrete decision a graph takes (which side of a max won, the sign of an `abs`, the
//! outcome of a comparison), so gradient checks can tell a kink crossed by a finite
//! difference from a wrong derivative.

use super::{bind_inputs, Bindings, Real};
use crate::ir::layout::{gather_offsets, im2col_map, strided_offsets, strides};
use crate::ir::scalar::{binary, unary};
use crate::ir::{BinaryOp, Graph, Op, ReduceOp, UnaryOp};
use crate::rng;

#[derive(Clone, Debug, PartialEq)]
pub enum Data<T> {
    F(Vec<T>),
    I(Vec<i32>),
}

/// A dense row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    pub shape: Vec<usize>,
    pub data: Data<T>,
}

impl<T: Real> Tensor<T> {
    pub fn f(shape: Vec<usize>, data: Vec<T>) -> Tensor<T> {
        Tensor { shape, data: Data::F(data) }
    }
    pub fn i(shape: Vec<usize>, data: Vec<i32>) -> Tensor<T> {
        Tensor { shape, data: Data::I(data) }
    }
    pub fn floats(&self) -> &[T] {
        match &self.data {
            Data::F(v) => v,
            Data::I(_) => &[],
        }
    }
    pub fn ints(&self) -> &[i32] {
        match &self.data {
            Data::I(v) => v,
            Data::F(_) => &[],
        }
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything a graph reads: inputs by input index, parameters and states by
/// declaration index, and the (seed, step) pair that keys the random streams.
#[derive(Clone, Debug)]
pub struct Feeds<T> {
    pub inputs: Vec<Tensor<T>>,
    pub params: Vec<Vec<T>>,
    pub states: Vec<Vec<T>>,
    pub seed: u64,
    pub step: u64,
}

/// The value of every node, and the fingerprint of the graph's discrete decisions.
pub struct Run<T> {
    pub values: Vec<Tensor<T>>,
    pub decisions: u64,
    pub bindings: Bindings,
}

impl<T> Run<T> {
    pub fn get(&self, v: crate::ir::Value) -> &Tensor<T> {
        &self.values[v.as_u32() as usize]
    }
}

struct Fingerprint(u64);

impl Fingerprint {
    fn add(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(5);
    }
}

/// Runs a graph. Input shapes bind the symbols; missing or mis-shaped feeds are errors.
/// `allreduce` is the identity: one process is one rank.
pub fn run<T: Real>(g: &Graph, feeds: &Feeds<T>) -> Result<Run<T>, String> {
    run_with(g, feeds, &mut |_| Ok(()))
}

/// `run`, with `allreduce` summing each `Op::AllReduce` operand over the ranks of a
/// data-parallel run in place (in graph order).
pub fn run_with<T: Real>(
    g: &Graph,
    feeds: &Feeds<T>,
    allreduce: &mut dyn FnMut(&mut [T]) -> Result<(), String>,
) -> Result<Run<T>, String> {
    if feeds.inputs.len() != g.inputs.len() {
        return Err(format!("the graph has {} inputs, {} were given", g.inputs.len(), feeds.inputs.len()));
    }
    let shapes: Vec<Vec<usize>> = feeds.inputs.iter().map(|t| t.shape.clone()).collect();
    let b = bind_inputs(g, &shapes)?;
    let mut fp = Fingerprint(0xcbf2_9ce4_8422_2325);
    let mut vals: Vec<Tensor<T>> = Vec::with_capacity(g.len());
    for (v, node) in g.nodes.iter() {
        let shape = b.shape(&node.ty.shape, g)?;
        let n: usize = shape.iter().product();
        let arg = |i: usize| &vals[node.args[i].as_u32() as usize];
        let fl = |i: usize| arg(i).floats();
        let out: Tensor<T> = match &node.op {
            Op::Input(i) => {
                let t = &feeds.inputs[*i as usize];
                let ok = match (&t.data, node.ty.dtype) {
                    (Data::F(d), crate::ir::DType::F32) => d.len() == n,
                    (Data::I(d), crate::ir::DType::I32) => d.len() == n,
                    _ => false,
                };
                if !ok {
                    return Err(format!("input `{}` has the wrong element type or length", g.inputs[*i as usize].name));
                }
                t.clone()
            }
            Op::Param(i) | Op::State(i) => {
                let (src, kind, name) = if matches!(node.op, Op::Param(_)) {
                    (&feeds.params, "parameter", &g.params[*i as usize].name)
                } else {
                    (&feeds.states, "state", &g.states[*i as usize].name)
                };
                let d = src.get(*i as usize).ok_or_else(|| format!("{kind} `{name}` was not given"))?;
                if d.len() != n {
                    return Err(format!("{kind} `{name}` has {} values, expected {n}", d.len()));
                }
                Tensor::f(shape, d.clone())
            }
            Op::Fill(x) => Tensor::f(shape, vec![T::from_f64(*x); n]),
            Op::DimValue(d) => {
                let x = d.eval(&|s| b.get(s)).ok_or("unbound symbol in a dim value")?;
                Tensor::f(shape, vec![T::from_f64(x as f64)])
            }
            Op::Iota { axis } => {
                let st = strides(&shape);
                let a = *axis as usize;
                Tensor::f(shape.clone(), (0..n).map(|i| T::from_f64(((i / st[a]) % shape[a]) as f64)).collect())
            }
            Op::Rand { stream } => {
                let key = rng::stream_key(feeds.seed, feeds.step, *stream);
                Tensor::f(shape, (0..n).map(|i| T::from_f64(rng::uniform(key, i as u32) as f64)).collect())
            }
            Op::Unary(u) => {
                let x = fl(0);
                if matches!(u, UnaryOp::Abs | UnaryOp::Sign) {
                    for &e in x {
                        fp.add(u64::from(e > T::zero()) + 2 * u64::from(e < T::zero()));
                    }
                }
                Tensor::f(shape, x.iter().map(|&e| unary(*u, e)).collect())
            }
            Op::Binary(op) => {
                let (a, c) = (fl(0), fl(1));
                let out: Vec<T> = a.iter().zip(c).map(|(&x, &y)| binary(*op, x, y)).collect();
                if op.is_comparison() || matches!(op, BinaryOp::Max | BinaryOp::Min) {
                    for (&x, &y) in a.iter().zip(c) {
                        fp.add(u64::from(x > y) + 2 * u64::from(x < y));
                    }
                }
                Tensor::f(shape, out)
            }
            Op::Select => {
                let (c, a, e) = (fl(0), fl(1), fl(2));
                for &x in c {
                    fp.add(u64::from(x != T::zero()));
                }
                Tensor::f(shape, (0..n).map(|i| if c[i] != T::zero() { a[i] } else { e[i] }).collect())
            }
            Op::StopGradient => arg(0).clone(),
            Op::AllReduce => {
                let mut sum = fl(0).to_vec();
                allreduce(&mut sum)?;
                Tensor::f(shape, sum)
            }
            Op::Broadcast { .. } => {
                let x = arg(0);
                let r = shape.len();
                let k = x.shape.len();
                let xs = strides(&x.shape);
                let mut src = vec![0usize; r];
                for j in 0..k {
                    src[r - k + j] = if x.shape[j] == 1 { 0 } else { xs[j] };
                }
                let offs = gather_offsets(&shape, &src, 0);
                pick(x, shape, &offs)
            }
            Op::Reshape { .. } => Tensor { shape, data: arg(0).data.clone() },
            Op::Transpose { perm } => {
                let x = arg(0);
                let xs = strides(&x.shape);
                let src: Vec<usize> = perm.iter().map(|&p| xs[p as usize]).collect();
                let offs = gather_offsets(&shape, &src, 0);
                pick(x, shape, &offs)
            }
            Op::Slice { axis, start, step, .. } => {
                let x = arg(0);
                let offs = strided_offsets(&shape, &x.shape, *axis as usize, *start, *step);
                pick(x, shape, &offs)
            }
            Op::Pad { axis, start, step, .. } => {
                let x = arg(0);
                let offs = strided_offsets(&x.shape, &shape, *axis as usize, *start, *step);
                let mut out = vec![T::zero(); n];
                for (k, &o) in offs.iter().enumerate() {
                    out[o] = x.floats()[k];
                }
                Tensor::f(shape, out)
            }
            Op::Concat { axis } => {
                let a = *axis as usize;
                let outer: usize = shape[..a].iter().product();
                let mut out_f = Vec::with_capacity(n);
                let mut out_i = Vec::new();
                let is_int = matches!(arg(0).data, Data::I(_));
                for o in 0..outer {
                    for i in 0..node.args.len() {
                        let t = arg(i);
                        let chunk: usize = t.shape[a..].iter().product();
                        match &t.data {
                            Data::F(d) => out_f.extend_from_slice(&d[o * chunk..(o + 1) * chunk]),
                            Data::I(d) => out_i.extend_from_slice(&d[o * chunk..(o + 1) * chunk]),
                        }
                    }
                }
                if is_int {
                    Tensor::i(shape, out_i)
                } else {
                    Tensor::f(shape, out_f)
                }
            }
            Op::Reduce { op, axes } => {
                let x = arg(0);
                let os = strides(&shape);
                // Source strides into the output: reduced axes contribute nothing.
                let mut dst = Vec::with_capacity(x.shape.len());
                let mut k = 0;
                for i in 0..x.shape.len() {
                    if axes.contains(&(i as u32)) {
                        dst.push(0);
                    } else {
                        dst.push(os[k]);
                        k += 1;
                    }
                }
                let offs = gather_offsets(&x.shape, &dst, 0);
                let d = x.floats();
                let mut out: Vec<Option<T>> = vec![None; n];
                let mut arg_of = vec![0usize; n];
                for (i, &o) in offs.iter().enumerate() {
                    let e = d[i];
                    out[o] = Some(match (out[o], op) {
                        (None, _) => {
                            arg_of[o] = i;
                            e
                        }
                        (Some(acc), ReduceOp::Sum) => acc + e,
                        (Some(acc), ReduceOp::Max) => {
                            if e > acc || e.is_nan() {
                                arg_of[o] = i;
                                e
                            } else {
                                acc
                            }
                        }
                        (Some(acc), ReduceOp::Min) => {
                            if e < acc || e.is_nan() {
                                arg_of[o] = i;
                                e
                            } else {
                                acc
                            }
                        }
                    });
                }
                if *op != ReduceOp::Sum {
                    for a in &arg_of {
                        fp.add(*a as u64);
                    }
                }
                Tensor::f(shape, out.into_iter().map(|o| o.unwrap_or(T::zero())).collect())
            }
            Op::MatMul => {
                let (a, c) = (arg(0), arg(1));
                let r = a.shape.len();
                let (m, k, nn) = (a.shape[r - 2], a.shape[r - 1], c.shape[r - 1]);
                let batch: usize = a.shape[..r - 2].iter().product();
                let (ad, cd) = (a.floats(), c.floats());
                let mut out = vec![T::zero(); n];
                for bi in 0..batch {
                    let (ao, co, oo) = (bi * m * k, bi * k * nn, bi * m * nn);
                    for i in 0..m {
                        for j in 0..nn {
                            let mut acc = T::zero();
                            for p in 0..k {
                                acc += ad[ao + i * k + p] * cd[co + p * nn + j];
                            }
                            out[oo + i * nn + j] = acc;
                        }
                    }
                }
                Tensor::f(shape, out)
            }
            Op::Gather => {
                let (t, ids) = (arg(0), arg(1));
                let rows = t.shape[0];
                let row: usize = t.shape[1..].iter().product();
                let mut out = Vec::with_capacity(n);
                for &id in ids.ints() {
                    if id >= 0 && (id as usize) < rows {
                        out.extend_from_slice(&t.floats()[id as usize * row..(id as usize + 1) * row]);
                    } else {
                        out.extend(std::iter::repeat_n(T::zero(), row));
                    }
                }
                Tensor::f(shape, out)
            }
            Op::ScatterAdd { .. } => {
                let (ids, src) = (arg(0), arg(1));
                let rows = shape[0];
                let row: usize = shape[1..].iter().product();
                let mut out = vec![T::zero(); n];
                for (k, &id) in ids.ints().iter().enumerate() {
                    if id >= 0 && (id as usize) < rows {
                        for j in 0..row {
                            out[id as usize * row + j] += src.floats()[k * row + j];
                        }
                    }
                }
                Tensor::f(shape, out)
            }
            Op::OneHot { n: classes } => {
                let ids = arg(0);
                let c = *classes as usize;
                let mut out = vec![T::zero(); n];
                for (k, &id) in ids.ints().iter().enumerate() {
                    if id >= 0 && (id as usize) < c {
                        out[k * c + id as usize] = T::one();
                    }
                }
                Tensor::f(shape, out)
            }
            Op::Im2col(w) => {
                let x = arg(0);
                let mut out = vec![T::zero(); n];
                im2col_map(&x.shape, w, &shape, |o, i| out[o] = x.floats()[i]);
                Tensor::f(shape, out)
            }
            Op::Col2im { window, .. } => {
                let p = arg(0);
                let mut out = vec![T::zero(); n];
                im2col_map(&shape, window, &p.shape, |o, i| out[i] += p.floats()[o]);
                Tensor::f(shape, out)
            }
        };
        debug_assert_eq!(out.len(), n, "{v}: wrong element count");
        vals.push(out);
    }
    Ok(Run { values: vals, decisions: fp.0, bindings: b })
}

/// The elements of `x` at `offs`, as a tensor of `shape` (float or int alike).
fn pick<T: Real>(x: &Tensor<T>, shape: Vec<usize>, offs: &[usize]) -> Tensor<T> {
    match &x.data {
        Data::F(d) => Tensor::f(shape, offs.iter().map(|&o| d[o]).collect()),
        Data::I(d) => Tensor::i(shape, offs.iter().map(|&o| d[o]).collect()),
    }
}

/// One training step of a step graph in the interpreter: returns the loss and writes
/// each parameter's and state's update back into `feeds` (the reference for the JIT's
/// in-place step).
pub fn step<T: Real>(g: &Graph, feeds: &mut Feeds<T>) -> Result<T, String> {
    let r = run(g, feeds)?;
    let loss = g.loss.map(|l| r.get(l).floats()[0]).unwrap_or(T::zero());
    apply_updates(g, &r, feeds);
    Ok(loss)
}

/// Writes a run's parameter and state updates back into the feeds.
pub fn apply_updates<T: Real>(g: &Graph, r: &Run<T>, feeds: &mut Feeds<T>) {
    for (i, p) in g.params.iter().enumerate() {
        if let Some(u) = p.update {
            feeds.params[i] = r.get(u).floats().to_vec();
        }
    }
    for (i, s) in g.states.iter().enumerate() {
        if let Some(u) = s.update {
            feeds.states[i] = r.get(u).floats().to_vec();
        }
    }
}
