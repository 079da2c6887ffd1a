//! The ONNX writer: an eval graph, its parameters and a preprocessing in, the bytes of an
//! ONNX `ModelProto` out (`to_onnx`).
//!
//! Each IR value gets the ONNX name `/v<index>` (parameters and states keep their own
//! names as initializers, inputs and outputs their model names); helper values are named
//! `/<what>_<n>`. Three kinds of nodes are emitted only where something reads them, in
//! the form the reader needs: `fill` (a scalar), `broadcast` (its operand, when the
//! reader is an elementwise op or a matmul whose other operand has the full shape, as
//! ONNX broadcasts multidirectionally) and `iota` (a `Range` reshaped to its axis);
//! anywhere else they become an `Expand` to the exact shape.
//!
//! Shapes that hold symbols (`[B, 784]`, `[28*B, 64]`) are computed at run time: a symbol's
//! value is `Gather(Shape(input), axis)` for the first input that has it as a dim, and a
//! polynomial dim is built from those with `Mul` and `Add` on int64 `[1]` tensors. A
//! `Reshape` target with one symbolic dim uses ONNX's `-1` instead (exact: the element
//! count is kept).

use super::onnx_pb as pb;
use crate::data::{PreprocessKind, Preprocessor};
use crate::ir::{BinaryOp, DType, Dim, Graph, Op, ReduceOp, Sym, UnaryOp, Value, Window};
use crate::tensors::{HostData, TensorMap};
use pb::attribute_proto::AttributeType;
use pb::tensor_proto::DataType;
use prost::Message;
use std::collections::HashMap;

/// The ONNX operator set written (the default domain).
pub const OPSET: i64 = 18;
/// The IR version that opset 18 needs.
pub const IR_VERSION: i64 = 8;

/// What the model file says about itself.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The graph's name (the model's).
    pub model_name: String,
    /// The IR symbol exported as the `dim_param` `batch`; other symbols keep their names.
    pub batch_symbol: Option<String>,
    /// `metadata_props` of the model (key, value).
    pub metadata: Vec<(String, String)>,
    /// Weights stored as int8 with per-channel scales (an `nnc quantize` checkpoint): each
    /// becomes an INT8 initializer and a `DequantizeLinear` that gives the float weight.
    pub int8: HashMap<String, Int8Weight>,
}

/// A weight as int8 values and one scale per channel along `axis`.
#[derive(Clone, Debug, Default)]
pub struct Int8Weight {
    pub axis: usize,
    pub values: Vec<i8>,
    pub scales: Vec<f32>,
}

/// The ONNX model of `g` with `params` (parameters and states by name) as initializers
/// and `pre` (when not `none`) applied to its input first, encoded.
pub fn to_onnx(g: &Graph, params: &TensorMap, pre: Option<&Preprocessor>, opts: &Options) -> Result<Vec<u8>, String> {
    Ok(to_model(g, params, pre, opts)?.encode_to_vec())
}

/// As `to_onnx`, the message before encoding.
pub fn to_model(
    g: &Graph,
    params: &TensorMap,
    pre: Option<&Preprocessor>,
    opts: &Options,
) -> Result<pb::ModelProto, String> {
    let mut x = Exporter::new(g, opts);
    let graph = x.graph(params, pre)?;
    Ok(pb::ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![pb::OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        producer_name: Some("nnc".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(format!("The eval graph of the nnc model `{}`.", opts.model_name)),
        graph: Some(graph),
        metadata_props: opts
            .metadata
            .iter()
            .map(|(k, v)| pb::StringStringEntryProto { key: Some(k.clone()), value: Some(v.clone()) })
            .collect(),
        ..Default::default()
    })
}

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn elem_type(d: DType) -> DataType {
    match d {
        DType::F32 => DataType::Float,
        DType::I32 => DataType::Int32,
    }
}

fn tensor_proto(name: &str, dt: DataType, dims: &[i64], raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: Some(name.into()),
        data_type: Some(dt as i32),
        dims: dims.to_vec(),
        raw_data: Some(raw),
        ..Default::default()
    }
}

fn f32_bytes(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(f32::to_le_bytes).collect()
}

fn const_dims(dims: &[Dim]) -> Option<Vec<i64>> {
    dims.iter().map(Dim::as_const).collect()
}

/// NumPy broadcasting of shapes (right-aligned; a dim is 1 or equal), None on a clash.
fn broadcast_all(shapes: &[&[Dim]]) -> Option<Vec<Dim>> {
    let n = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let one = Dim::konst(1);
    let mut out = vec![one.clone(); n];
    for s in shapes {
        let off = n - s.len();
        for (i, d) in s.iter().enumerate() {
            if *d == one {
                continue;
            }
            if out[off + i] == one {
                out[off + i] = d.clone();
            } else if out[off + i] != *d {
                return None;
            }
        }
    }
    Some(out)
}

struct Exporter<'g> {
    g: &'g Graph,
    opts: &'g Options,
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    /// The ONNX name of each IR value in its full shape, once emitted.
    full: HashMap<Value, String>,
    /// The broadcastable form of lazy values (`fill`, `broadcast`, `iota`) and its shape.
    compact: HashMap<Value, (String, Vec<Dim>)>,
    /// Where each symbol's value is read: (input name, axis).
    sym_source: HashMap<Sym, (String, usize)>,
    /// int64 `[1]` tensors of symbolic dims, built once.
    dim_values: HashMap<Dim, String>,
    shapes_of: HashMap<String, String>,
    consts: HashMap<(i32, Vec<i64>, Vec<u8>), String>,
    counter: usize,
}

impl<'g> Exporter<'g> {
    fn new(g: &'g Graph, opts: &'g Options) -> Exporter<'g> {
        Exporter {
            g,
            opts,
            nodes: Vec::new(),
            inits: Vec::new(),
            full: HashMap::new(),
            compact: HashMap::new(),
            sym_source: HashMap::new(),
            dim_values: HashMap::new(),
            shapes_of: HashMap::new(),
            consts: HashMap::new(),
            counter: 0,
        }
    }

    fn fresh(&mut self, what: &str) -> String {
        self.counter += 1;
        format!("/{what}_{}", self.counter)
    }

    fn value_name(v: Value) -> String {
        format!("/v{}", v.as_u32())
    }

    /// Appends a node with one output named `out` (a fresh name when None).
    fn op(&mut self, op: &str, inputs: Vec<String>, attrs: Vec<pb::AttributeProto>, out: Option<String>) -> String {
        let out = out.unwrap_or_else(|| self.fresh(&op.to_lowercase()));
        self.nodes.push(pb::NodeProto {
            input: inputs,
            output: vec![out.clone()],
            name: Some(format!("{op}:{}", out.trim_start_matches('/'))),
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    fn constant(&mut self, dt: DataType, dims: &[i64], raw: Vec<u8>) -> String {
        let key = (dt as i32, dims.to_vec(), raw);
        if let Some(n) = self.consts.get(&key) {
            return n.clone();
        }
        let name = self.fresh("const");
        self.inits.push(tensor_proto(&name, dt, dims, key.2.clone()));
        self.consts.insert(key, name.clone());
        name
    }

    fn const_i64(&mut self, dims: &[i64], v: &[i64]) -> String {
        self.constant(DataType::Int64, dims, v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn ints(&mut self, v: &[i64]) -> String {
        self.const_i64(&[v.len() as i64], v)
    }

    fn scalar(&mut self, dt: DType, x: f64) -> String {
        match dt {
            DType::F32 => self.constant(DataType::Float, &[], f32_bytes([x as f32])),
            DType::I32 => self.constant(DataType::Int32, &[], (x as i32).to_le_bytes().to_vec()),
        }
    }

    fn dim_param(&self, s: Sym) -> String {
        let name = self.g.symbols.get(s.0 as usize).cloned().unwrap_or_else(|| format!("s{}", s.0));
        if self.opts.batch_symbol.as_deref() == Some(name.as_str()) {
            "batch".into()
        } else {
            name
        }
    }

    fn value_info(&self, name: &str, dtype: DType, shape: &[Dim]) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{dimension, Dimension};
        let dim = |d: &Dim| Dimension {
            denotation: None,
            value: match (d.as_const(), d.terms()) {
                (Some(c), _) => Some(dimension::Value::DimValue(c)),
                (None, [(m, 1)]) if m.len() == 1 => Some(dimension::Value::DimParam(self.dim_param(m[0]))),
                // A polynomial dim (`28*B`) has no dim_param form: left unknown.
                _ => None,
            },
        };
        pb::ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(pb::TypeProto {
                denotation: None,
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: Some(elem_type(dtype) as i32),
                    shape: Some(pb::TensorShapeProto { dim: shape.iter().map(dim).collect() }),
                })),
            }),
            ..Default::default()
        }
    }

    // ---- symbolic dims at run time ----

    fn sym_value(&mut self, s: Sym) -> Result<String, String> {
        let d = Dim::sym(s);
        if let Some(n) = self.dim_values.get(&d) {
            return Ok(n.clone());
        }
        let (input, axis) = self.sym_source.get(&s).cloned().ok_or_else(|| {
            format!(
                "the size `{}` is no input's dim, so the ONNX graph cannot read it from an input's shape",
                self.dim_param(s)
            )
        })?;
        let shape = match self.shapes_of.get(&input) {
            Some(n) => n.clone(),
            None => {
                let n = self.op("Shape", vec![input.clone()], vec![], None);
                self.shapes_of.insert(input, n.clone());
                n
            }
        };
        let idx = self.ints(&[axis as i64]);
        let n = self.op("Gather", vec![shape, idx], vec![attr_int("axis", 0)], None);
        self.dim_values.insert(d, n.clone());
        Ok(n)
    }

    /// An int64 `[1]` tensor holding the value of `d`.
    fn dim_i64(&mut self, d: &Dim) -> Result<String, String> {
        if let Some(c) = d.as_const() {
            return Ok(self.ints(&[c]));
        }
        if let Some(n) = self.dim_values.get(d) {
            return Ok(n.clone());
        }
        let mut sum: Option<String> = None;
        for (mono, coef) in d.terms().to_vec() {
            let mut term: Option<String> = None;
            for s in mono {
                let v = self.sym_value(s)?;
                term = Some(match term {
                    None => v,
                    Some(t) => self.op("Mul", vec![t, v], vec![], None),
                });
            }
            let term = match term {
                None => self.ints(&[coef]),
                Some(t) if coef == 1 => t,
                Some(t) => {
                    let c = self.ints(&[coef]);
                    self.op("Mul", vec![t, c], vec![], None)
                }
            };
            sum = Some(match sum {
                None => term,
                Some(s) => self.op("Add", vec![s, term], vec![], None),
            });
        }
        let n = sum.unwrap_or_else(|| self.ints(&[0]));
        self.dim_values.insert(d.clone(), n.clone());
        Ok(n)
    }

    /// A scalar f32 holding the value of `d`.
    fn dim_f32(&mut self, d: &Dim) -> Result<String, String> {
        if let Some(c) = d.as_const() {
            return Ok(self.scalar(DType::F32, c as f64));
        }
        let i = self.dim_i64(d)?;
        let f = self.op("Cast", vec![i], vec![attr_int("to", DataType::Float as i64)], None);
        let scalar = self.const_i64(&[0], &[]);
        Ok(self.op("Reshape", vec![f, scalar], vec![], None))
    }

    /// An int64 shape tensor with exactly these dims.
    fn shape_exact(&mut self, dims: &[Dim]) -> Result<String, String> {
        if let Some(c) = const_dims(dims) {
            return Ok(self.ints(&c));
        }
        let mut pieces = Vec::new();
        let mut run: Vec<i64> = Vec::new();
        for d in dims {
            match d.as_const() {
                Some(c) => run.push(c),
                None => {
                    if !run.is_empty() {
                        pieces.push(self.ints(&run));
                        run.clear();
                    }
                    pieces.push(self.dim_i64(d)?);
                }
            }
        }
        if !run.is_empty() {
            pieces.push(self.ints(&run));
        }
        if pieces.len() == 1 {
            return Ok(pieces.remove(0));
        }
        Ok(self.op("Concat", pieces, vec![attr_int("axis", 0)], None))
    }

    /// `Reshape(x)` to `dims`: constant targets, `-1` for a single symbolic dim.
    fn reshape(&mut self, x: String, dims: &[Dim], out: Option<String>) -> Result<String, String> {
        let has_zero = dims.iter().any(|d| d.as_const() == Some(0));
        let symbolic = dims.iter().filter(|d| !d.is_const()).count();
        let (shape, attrs) = if has_zero {
            (self.shape_exact(dims)?, vec![attr_int("allowzero", 1)])
        } else if symbolic == 1 {
            let c: Vec<i64> = dims.iter().map(|d| d.as_const().unwrap_or(-1)).collect();
            (self.ints(&c), vec![])
        } else {
            (self.shape_exact(dims)?, vec![])
        };
        Ok(self.op("Reshape", vec![x, shape], attrs, out))
    }

    // ---- values ----

    fn is_lazy(&self, v: Value) -> bool {
        matches!(self.g.nodes[v].op, Op::Fill(_) | Op::Broadcast { .. } | Op::Iota { .. })
    }

    /// The name of `v` in its full shape.
    fn full(&mut self, v: Value) -> Result<String, String> {
        if let Some(n) = self.full.get(&v) {
            return Ok(n.clone());
        }
        if !self.is_lazy(v) {
            return Err(format!("internal error: v{} is read before it is exported", v.as_u32()));
        }
        let shape = self.g.ty(v).shape.clone();
        let (c, cshape) = match self.g.nodes[v].op {
            // A fill read whole: a [1, .., 1] constant of the result's rank, expanded
            // (tract mis-shapes a matmul whose operand is a rank-0 constant expanded).
            Op::Fill(x) => {
                let ones = vec![1i64; shape.len()];
                let c = match self.g.ty(v).dtype {
                    DType::F32 => self.constant(DataType::Float, &ones, f32_bytes([x as f32])),
                    DType::I32 => self.constant(DataType::Int32, &ones, (x as i32).to_le_bytes().to_vec()),
                };
                (c, vec![Dim::konst(1); shape.len()])
            }
            _ => self.compact(v)?,
        };
        let n = if cshape == shape {
            c
        } else {
            // Expand keeps a dim where the target says 1: only the dims that grow are needed.
            let off = shape.len() - cshape.len();
            let target: Vec<Dim> = shape
                .iter()
                .enumerate()
                .map(|(i, d)| if i >= off && cshape[i - off] == *d { Dim::konst(1) } else { d.clone() })
                .collect();
            let t = self.shape_exact(&target)?;
            self.op("Expand", vec![c, t], vec![], Some(Self::value_name(v)))
        };
        self.full.insert(v, n.clone());
        Ok(n)
    }

    /// A name and shape of `v` that broadcasts (NumPy rules) to `v`'s shape.
    fn compact(&mut self, v: Value) -> Result<(String, Vec<Dim>), String> {
        if let Some(c) = self.compact.get(&v) {
            return Ok(c.clone());
        }
        let node = &self.g.nodes[v];
        let c = match &node.op {
            Op::Fill(x) => (self.scalar(node.ty.dtype, *x), vec![]),
            Op::Broadcast { .. } => {
                let src = node.args[0];
                if self.is_lazy(src) {
                    self.compact(src)?
                } else {
                    (self.full(src)?, self.g.ty(src).shape.clone())
                }
            }
            Op::Iota { axis } => {
                let shape = node.ty.shape.clone();
                let a = *axis as usize;
                let n = shape.get(a).cloned().ok_or("iota axis out of range")?;
                let start = self.scalar(DType::F32, 0.0);
                let delta = self.scalar(DType::F32, 1.0);
                let limit = self.dim_f32(&n)?;
                let r = self.op("Range", vec![start, limit, delta], vec![], None);
                let dims: Vec<Dim> = (0..shape.len()).map(|i| if i == a { n.clone() } else { Dim::konst(1) }).collect();
                if dims.len() == 1 {
                    (r, dims)
                } else {
                    (self.reshape(r, &dims, None)?, dims)
                }
            }
            _ => (self.full(v)?, node.ty.shape.clone()),
        };
        self.compact.insert(v, c.clone());
        Ok(c)
    }

    /// Operands of an elementwise op: broadcastable forms where ONNX's broadcasting then
    /// gives exactly the result shape, else the first lazy one in full.
    fn elementwise_args(&mut self, v: Value) -> Result<Vec<String>, String> {
        let args = self.g.nodes[v].args.clone();
        let out = self.g.ty(v).shape.clone();
        let mut forms = Vec::with_capacity(args.len());
        for &a in &args {
            forms.push(self.compact(a)?);
        }
        let shapes: Vec<&[Dim]> = forms.iter().map(|(_, s)| s.as_slice()).collect();
        if broadcast_all(&shapes).as_deref() != Some(out.as_slice()) {
            let first = args[0];
            forms[0] = (self.full(first)?, out.clone());
        }
        Ok(forms.into_iter().map(|(n, _)| n).collect())
    }

    /// Operands of a matmul: a broadcast over batch dims only is left to ONNX's
    /// batch broadcasting when the other operand keeps its own.
    fn matmul_args(&mut self, v: Value) -> Result<Vec<String>, String> {
        let args = self.g.nodes[v].args.clone();
        let batched = |x: &mut Self, a: Value| -> Result<Option<String>, String> {
            if !matches!(x.g.nodes[a].op, Op::Broadcast { .. }) {
                return Ok(None);
            }
            let full_shape = x.g.ty(a).shape.clone();
            let (c, cs) = x.compact(a)?;
            let r = full_shape.len();
            let ok = cs.len() >= 2 && cs[cs.len() - 2..] == full_shape[r - 2..];
            Ok(ok.then_some(c))
        };
        let b = batched(self, args[1])?;
        let a = if b.is_none() { batched(self, args[0])? } else { None };
        let a = match a {
            Some(a) => a,
            None => self.full(args[0])?,
        };
        let b = match b {
            Some(b) => b,
            None => self.full(args[1])?,
        };
        Ok(vec![a, b])
    }

    fn unsupported(&self, v: Value, why: &str) -> String {
        let n = &self.g.nodes[v];
        format!(
            "cannot export `{}` (value v{}, {}) to ONNX: {why}",
            n.op.name(),
            v.as_u32(),
            n.ty.display(&self.g.symbols)
        )
    }

    fn param_init(&mut self, name: &str, shape: &[i64], params: &TensorMap) -> Result<(), String> {
        let t = params.get(name).ok_or_else(|| format!("no tensor `{name}` among the parameters"))?;
        let want: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        if t.shape != want {
            return Err(format!("tensor `{name}` has shape {:?}, the model needs {want:?}", t.shape));
        }
        if let Some(q) = self.opts.int8.get(name) {
            let count = shape.get(q.axis).copied().unwrap_or(0);
            if q.values.len() != t.shape.iter().product::<usize>() || q.scales.len() as i64 != count {
                return Err(format!("the int8 form of `{name}` does not match its shape {:?}", t.shape));
            }
            let (qn, sn) = (format!("{name}/int8"), format!("{name}/scale"));
            self.inits.push(tensor_proto(&qn, DataType::Int8, shape, q.values.iter().map(|&x| x as u8).collect()));
            self.inits.push(tensor_proto(&sn, DataType::Float, &[count], f32_bytes(q.scales.iter().copied())));
            let axis = attr_int("axis", q.axis as i64);
            self.op("DequantizeLinear", vec![qn, sn], vec![axis], Some(name.to_string()));
            return Ok(());
        }
        let raw = match &t.data {
            HostData::F32(v) | HostData::F64(v) => f32_bytes(v.iter().map(|&x| x as f32)),
            HostData::I32(_) => return Err(format!("tensor `{name}` is I32, the model needs floats (F32)")),
        };
        self.inits.push(tensor_proto(name, DataType::Float, shape, raw));
        Ok(())
    }

    /// The leading ops of `pre` on the raw input `raw` of shape `shape`.
    fn preprocess(&mut self, pre: &Preprocessor, raw: &str, shape: &[Dim]) -> Result<String, String> {
        let per_sample: Vec<i64> = const_dims(shape.get(1..).unwrap_or(&[]))
            .ok_or_else(|| format!("input `{raw}`: preprocessing needs constant per-sample dims"))?;
        let d: i64 = per_sample.iter().product();
        if d as usize != pre.dim || pre.mean.len() != pre.dim {
            return Err(format!(
                "the preprocessing of `{raw}` was fitted on {} values per sample, the input has {d}",
                pre.dim
            ));
        }
        let mean = format!("preprocess.mean/{raw}");
        match pre.kind {
            PreprocessKind::None => Ok(raw.to_string()),
            PreprocessKind::Center | PreprocessKind::Standardize => {
                self.inits.push(tensor_proto(&mean, DataType::Float, &per_sample, f32_bytes(pre.mean.iter().copied())));
                let c = self.op("Sub", vec![raw.to_string(), mean], vec![], Some(format!("/preprocess/{raw}/centred")));
                if pre.kind == PreprocessKind::Center {
                    return Ok(c);
                }
                if pre.scale.len() != pre.dim {
                    return Err("preprocess.scale does not match preprocess.mean".into());
                }
                let scale = format!("preprocess.scale/{raw}");
                self.inits.push(tensor_proto(
                    &scale,
                    DataType::Float,
                    &per_sample,
                    f32_bytes(pre.scale.iter().copied()),
                ));
                Ok(self.op("Div", vec![c, scale], vec![], Some(format!("/preprocess/{raw}"))))
            }
            PreprocessKind::WhitenPca | PreprocessKind::WhitenZca => {
                if pre.matrix.len() != pre.dim * pre.dim {
                    return Err("preprocess.matrix does not match preprocess.mean".into());
                }
                self.inits.push(tensor_proto(&mean, DataType::Float, &[d], f32_bytes(pre.mean.iter().copied())));
                let matrix = format!("preprocess.matrix/{raw}");
                self.inits.push(tensor_proto(&matrix, DataType::Float, &[d, d], f32_bytes(pre.matrix.iter().copied())));
                let flat_shape = self.ints(&[-1, d]);
                let flat = self.op("Reshape", vec![raw.to_string(), flat_shape], vec![], None);
                let c = self.op("Sub", vec![flat, mean], vec![], None);
                let w = self.op("MatMul", vec![c, matrix], vec![], None);
                self.reshape(w, shape, Some(format!("/preprocess/{raw}")))
            }
        }
    }

    /// `Im2col`: zero padding, then one strided `Slice` per window offset, stacked.
    fn im2col(&mut self, v: Value, w: &Window) -> Result<String, String> {
        let x = self.full(self.g.nodes[v].args[0])?;
        let out = self.g.ty(v).shape.clone();
        let (oh, ow) = match (out[4].as_const(), out[5].as_const()) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(self.unsupported(v, "the output size must be a number")),
        };
        let padded = if w.pad_h > 0 || w.pad_w > 0 {
            let (ph, pw) = (i64::from(w.pad_h), i64::from(w.pad_w));
            let pads = self.ints(&[ph, pw, ph, pw]);
            let zero = self.scalar(DType::F32, 0.0);
            let axes = self.ints(&[2, 3]);
            self.op("Pad", vec![x, pads, zero, axes], vec![], None)
        } else {
            x
        };
        let (sh, sw) = (i64::from(w.stride_h), i64::from(w.stride_w));
        let axes = self.ints(&[2, 3]);
        let steps = self.ints(&[sh, sw]);
        let unsq = self.ints(&[2]);
        let mut pieces = Vec::new();
        for i in 0..i64::from(w.kh) {
            for j in 0..i64::from(w.kw) {
                let starts = self.ints(&[i, j]);
                let ends = self.ints(&[i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1]);
                let s = self.op("Slice", vec![padded.clone(), starts, ends, axes.clone(), steps.clone()], vec![], None);
                pieces.push(self.op("Unsqueeze", vec![s, unsq.clone()], vec![], None));
            }
        }
        let stacked = if pieces.len() == 1 {
            pieces.remove(0)
        } else {
            self.op("Concat", pieces, vec![attr_int("axis", 2)], None)
        };
        self.reshape(stacked, &out, Some(Self::value_name(v)))
    }

    /// `Pad`: zeros with `x`'s elements at `start + i*step` along `axis`.
    fn pad(&mut self, v: Value, axis: u32, start: i64, step: i64, len: &Dim) -> Result<String, String> {
        let src = self.g.nodes[v].args[0];
        let x = self.full(src)?;
        let in_shape = self.g.ty(src).shape.clone();
        let a = axis as usize;
        let n = in_shape[a].as_const().ok_or_else(|| self.unsupported(v, "the padded dim must be a number"))?;
        let len = len.as_const().ok_or_else(|| self.unsupported(v, "the length must be a number"))?;
        let rank = in_shape.len() as i64;
        // A negative step writes x reversed, upwards from its last position.
        let (x, start, step) = if step < 0 {
            let (s, e, ax, st) = (self.ints(&[-1]), self.ints(&[i64::MIN]), self.ints(&[a as i64]), self.ints(&[-1]));
            (self.op("Slice", vec![x, s, e, ax, st], vec![], None), start + (n - 1) * step, -step)
        } else {
            (x, start, step)
        };
        let zero = self.scalar(DType::F32, 0.0);
        // Interleave step-1 zeros after each element: [.., n, 1, ..] padded to [.., n, step, ..].
        let (spread, spread_len) = if step > 1 {
            let ax = self.ints(&[a as i64 + 1]);
            let u = self.op("Unsqueeze", vec![x, ax.clone()], vec![], None);
            let pads = self.ints(&[0, step - 1]);
            let p = self.op("Pad", vec![u, pads, zero.clone(), ax], vec![], None);
            let mut dims = in_shape.clone();
            dims[a] = Dim::konst(n * step);
            (self.reshape(p, &dims, None)?, n * step)
        } else {
            (x, n)
        };
        let after = len - start - spread_len;
        let spread = if after < 0 {
            let (s, e, ax) = (self.ints(&[0]), self.ints(&[spread_len + after]), self.ints(&[a as i64]));
            self.op("Slice", vec![spread, s, e, ax], vec![], None)
        } else {
            spread
        };
        let mut pads = vec![0i64; 2 * rank as usize];
        pads[a] = start;
        pads[a + rank as usize] = after.max(0);
        let pads = self.ints(&pads);
        Ok(self.op("Pad", vec![spread, pads, zero], vec![], Some(Self::value_name(v))))
    }

    /// Emits the node of `v` (every op but the lazy ones).
    fn emit(&mut self, v: Value, params: &TensorMap, pre: Option<&Preprocessor>) -> Result<(), String> {
        let g = self.g;
        let node = &g.nodes[v];
        let out = Some(Self::value_name(v));
        let name = match &node.op {
            Op::Fill(_) | Op::Broadcast { .. } | Op::Iota { .. } => return Ok(()),
            Op::Input(i) => {
                let decl = g.inputs.get(*i as usize).ok_or("an input without a declaration")?;
                match pre {
                    Some(p) if p.kind != PreprocessKind::None && p.input == decl.name => {
                        self.preprocess(p, &decl.name, &decl.ty.shape)?
                    }
                    _ => decl.name.clone(),
                }
            }
            Op::Param(i) => {
                let decl = g.params.get(*i as usize).ok_or("a parameter without a declaration")?;
                self.param_init(&decl.name, &decl.shape, params)?;
                decl.name.clone()
            }
            Op::State(i) => {
                let decl = g.states.get(*i as usize).ok_or("a state without a declaration")?;
                self.param_init(&decl.name, &decl.shape, params)?;
                decl.name.clone()
            }
            Op::DimValue(d) => {
                let f = self.dim_f32(d)?;
                self.op("Identity", vec![f], vec![], out)
            }
            Op::Rand { .. } => {
                return Err(self.unsupported(
                    v,
                    "random numbers (`uniform_like`, `normal_like`) have no deterministic ONNX form; an \
                     exported eval graph must not draw them",
                ))
            }
            Op::ScatterAdd { .. } => {
                return Err(self.unsupported(v, "scatter-add (the adjoint of `gather`) is not exported"))
            }
            Op::Col2im { .. } => return Err(self.unsupported(v, "col2im (the adjoint of im2col) is not exported")),
            Op::AllReduce => {
                return Err(
                    self.unsupported(v, "a sum over data-parallel ranks belongs to a training step, not an eval graph")
                )
            }
            Op::Unary(u) => {
                let x = self.full(node.args[0])?;
                let op = match u {
                    UnaryOp::Neg => "Neg",
                    UnaryOp::Exp => "Exp",
                    UnaryOp::Log => "Log",
                    UnaryOp::Sqrt => "Sqrt",
                    UnaryOp::Abs => "Abs",
                    UnaryOp::Sign => "Sign",
                    UnaryOp::Tanh => "Tanh",
                    UnaryOp::Sigmoid => "Sigmoid",
                    UnaryOp::Erf => "Erf",
                    // ONNX's Round rounds halves to even, as nnc's.
                    UnaryOp::Round => "Round",
                    UnaryOp::Floor => "Floor",
                    UnaryOp::Ceil => "Ceil",
                    UnaryOp::Sin => "Sin",
                    UnaryOp::Cos => "Cos",
                };
                self.op(op, vec![x], vec![], out)
            }
            Op::Binary(b) => {
                let args = self.elementwise_args(v)?;
                // Comparisons give bool in ONNX: cast back to 0.0 / 1.0.
                let (op, compare) = match b {
                    BinaryOp::Add => ("Add", false),
                    BinaryOp::Sub => ("Sub", false),
                    BinaryOp::Mul => ("Mul", false),
                    BinaryOp::Div => ("Div", false),
                    BinaryOp::Pow => ("Pow", false),
                    BinaryOp::Max => ("Max", false),
                    BinaryOp::Min => ("Min", false),
                    BinaryOp::Lt => ("Less", true),
                    BinaryOp::Le => ("LessOrEqual", true),
                    BinaryOp::Gt => ("Greater", true),
                    BinaryOp::Ge => ("GreaterOrEqual", true),
                    BinaryOp::Eq | BinaryOp::Ne => ("Equal", true),
                };
                if compare {
                    let mut c = self.op(op, args, vec![], None);
                    if *b == BinaryOp::Ne {
                        c = self.op("Not", vec![c], vec![], None);
                    }
                    self.op("Cast", vec![c], vec![attr_int("to", DataType::Float as i64)], out)
                } else {
                    self.op(op, args, vec![], out)
                }
            }
            Op::Select => {
                let args = self.elementwise_args(v)?;
                let zero = self.scalar(DType::F32, 0.0);
                // cond != 0 ? a : b  ==  Where(cond == 0, b, a)
                let is_zero = self.op("Equal", vec![args[0].clone(), zero], vec![], None);
                self.op("Where", vec![is_zero, args[2].clone(), args[1].clone()], vec![], out)
            }
            Op::StopGradient => self.full(node.args[0])?,
            Op::Reshape { shape } => {
                let x = self.full(node.args[0])?;
                self.reshape(x, shape, out)?
            }
            Op::Transpose { perm } => {
                let x = self.full(node.args[0])?;
                let perm: Vec<i64> = perm.iter().map(|&p| i64::from(p)).collect();
                self.op("Transpose", vec![x], vec![attr_ints("perm", &perm)], out)
            }
            Op::Slice { axis, start, end, step } => {
                let x = self.full(node.args[0])?;
                let s = self.ints(&[*start]);
                // A reversed slice down to the first element ends at -1, which ONNX would read
                // as the last element: any end below -n means "past the first".
                let e = self.ints(&[if *end < 0 { i64::MIN } else { *end }]);
                let a = self.ints(&[i64::from(*axis)]);
                let st = self.ints(&[*step]);
                self.op("Slice", vec![x, s, e, a, st], vec![], out)
            }
            Op::Pad { axis, start, step, len } => self.pad(v, *axis, *start, *step, len)?,
            Op::Concat { axis } => {
                let mut xs = Vec::with_capacity(node.args.len());
                for &a in &node.args {
                    xs.push(self.full(a)?);
                }
                self.op("Concat", xs, vec![attr_int("axis", i64::from(*axis))], out)
            }
            Op::Reduce { op, axes } => {
                let x = self.full(node.args[0])?;
                if axes.is_empty() {
                    x
                } else {
                    let name = match op {
                        ReduceOp::Sum => "ReduceSum",
                        ReduceOp::Max => "ReduceMax",
                        ReduceOp::Min => "ReduceMin",
                    };
                    let axes: Vec<i64> = axes.iter().map(|&a| i64::from(a)).collect();
                    let axes = self.ints(&axes);
                    self.op(name, vec![x, axes], vec![attr_int("keepdims", 0)], out)
                }
            }
            Op::MatMul => {
                let args = self.matmul_args(v)?;
                self.op("MatMul", args, vec![], out)
            }
            Op::Gather => {
                let table = self.full(node.args[0])?;
                let ids = self.full(node.args[1])?;
                self.op("Gather", vec![table, ids], vec![attr_int("axis", 0)], out)
            }
            Op::OneHot { n } => {
                let ids = self.full(node.args[0])?;
                let depth = self.const_i64(&[], &[*n]);
                let values = self.constant(DataType::Float, &[2], f32_bytes([0.0, 1.0]));
                self.op("OneHot", vec![ids, depth, values], vec![attr_int("axis", -1)], out)
            }
            Op::Im2col(w) => self.im2col(v, w)?,
        };
        self.full.insert(v, name);
        Ok(())
    }

    fn graph(&mut self, params: &TensorMap, pre: Option<&Preprocessor>) -> Result<pb::GraphProto, String> {
        let g = self.g;
        let mut names: HashMap<&str, &str> = HashMap::new();
        for decl in &g.inputs {
            for (axis, d) in decl.ty.shape.iter().enumerate() {
                if let [(m, 1)] = d.terms() {
                    if m.len() == 1 {
                        self.sym_source.entry(m[0]).or_insert_with(|| (decl.name.clone(), axis));
                    }
                }
            }
            if names.insert(&decl.name, "an input").is_some() {
                return Err(format!("two inputs are named `{}`", decl.name));
            }
        }
        for name in g.params.iter().map(|p| &p.name).chain(g.states.iter().map(|s| &s.name)) {
            names.insert(name, "a parameter");
        }
        for (name, _) in &g.outputs {
            if let Some(what) = names.insert(name, "an output") {
                return Err(format!("output `{name}` has the name of {what}; ONNX names every value once"));
            }
        }
        for (v, _) in g.nodes.iter() {
            self.emit(v, params, pre)?;
        }
        for (name, v) in &g.outputs {
            let x = self.full(*v)?;
            self.op("Identity", vec![x], vec![], Some(name.clone()));
        }
        let inputs = g.inputs.iter().map(|d| self.value_info(&d.name, d.ty.dtype, &d.ty.shape)).collect();
        let outputs = g
            .outputs
            .iter()
            .map(|(name, v)| {
                let t = g.ty(*v);
                self.value_info(name, t.dtype, &t.shape)
            })
            .collect();
        Ok(pb::GraphProto {
            node: std::mem::take(&mut self.nodes),
            name: Some(self.opts.model_name.clone()),
            initializer: std::mem::take(&mut self.inits),
            input: inputs,
            output: outputs,
            ..Default::default()
        })
    }
}
