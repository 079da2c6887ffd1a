//! The training step as one graph: forward, backward, regularization, gradient clipping
//! and the optimizer update, all IR, so fusion and the JIT treat the update like any
//! other computation.
//!
//! The objective is the model's `loss` plus the `train` block's `l1`/`l2` terms on
//! decayed parameters (weights, rank >= 2); the reported loss stays the model's. Values
//! that change per step without changing the graph (the learning rate from the
//! schedule, Adam's bias corrections) are scalar inputs named `hyper.*`, computed on the
//! host by `hyper_values`. Optimizer state lives in states named `opt.<slot>.<param>`.
//! Formulas follow PyTorch's conventions (docs/language.md).

use crate::autodiff;
use crate::diagnostic::Span;
use crate::ir::{BinaryOp, Dim, Graph, Init, InputDecl, Op, ReduceOp, StateDecl, Type, UnaryOp, Value};
use crate::settings::TrainSettings;

/// The names of the monitoring outputs a step graph gets with `log_grad_norms`: for
/// every parameter `p`, `monitor.grad.<p>` (the sum of squares of the objective's
/// gradient, as backpropagation gives it: before pruning masks and clipping),
/// `monitor.update.<p>` (of the step's change `w_new - w`) and `monitor.param.<p>` (of
/// `w` before the step). Scalars computed inside the step, so no gradient is copied out.
pub const MONITOR_PREFIX: &str = "monitor.";

/// The three monitoring output names of parameter `p`: gradient, update, parameter.
pub fn monitor_names(p: &str) -> [String; 3] {
    [format!("{MONITOR_PREFIX}grad.{p}"), format!("{MONITOR_PREFIX}update.{p}"), format!("{MONITOR_PREFIX}param.{p}")]
}

/// The scalar inputs of a step graph, in order.
pub const HYPER: [&str; 3] = ["hyper.lr", "hyper.bc1", "hyper.bc2"];

/// Values of the `hyper.*` inputs at optimizer step `t` (1-based) with learning rate
/// `lr`: the rate itself and Adam's bias corrections 1 - beta^t.
pub fn hyper_values(settings: &TrainSettings, lr: f64, t: u64) -> [f64; 3] {
    let o = &settings.optimizer;
    let b1 = o.num("beta1").unwrap_or(0.9);
    let b2 = o.num("beta2").unwrap_or(0.999);
    let t = t.max(1) as i32;
    [lr, 1.0 - b1.powi(t), 1.0 - b2.powi(t)]
}

struct B {
    g: Graph,
}

impl B {
    fn push(&mut self, op: Op, args: Vec<Value>, ty: Option<Type>) -> Result<Value, String> {
        let name = op.name();
        self.g.push(op, args, ty).map_err(|e| format!("the optimizer update built an ill-typed {name}: {e}"))
    }
    fn konst(&mut self, v: f64, like: Value) -> Result<Value, String> {
        let ty = Type::f32(self.g.ty(like).shape.clone());
        self.push(Op::Fill(v), vec![], Some(ty))
    }
    fn bin(&mut self, op: BinaryOp, a: Value, b: Value) -> Result<Value, String> {
        self.push(Op::Binary(op), vec![a, b], None)
    }
    fn add(&mut self, a: Value, b: Value) -> Result<Value, String> {
        self.bin(BinaryOp::Add, a, b)
    }
    fn sub(&mut self, a: Value, b: Value) -> Result<Value, String> {
        self.bin(BinaryOp::Sub, a, b)
    }
    fn mul(&mut self, a: Value, b: Value) -> Result<Value, String> {
        self.bin(BinaryOp::Mul, a, b)
    }
    fn div(&mut self, a: Value, b: Value) -> Result<Value, String> {
        self.bin(BinaryOp::Div, a, b)
    }
    fn scale(&mut self, a: Value, k: f64) -> Result<Value, String> {
        let c = self.konst(k, a)?;
        self.mul(a, c)
    }
    /// A scalar broadcast to `like`'s shape.
    fn spread(&mut self, s: Value, like: Value) -> Result<Value, String> {
        let shape = self.g.ty(like).shape.clone();
        if shape.is_empty() {
            return Ok(s);
        }
        self.push(Op::Broadcast { shape }, vec![s], None)
    }
    fn sum_all(&mut self, x: Value) -> Result<Value, String> {
        let r = self.g.ty(x).rank() as u32;
        if r == 0 {
            return Ok(x);
        }
        self.push(Op::Reduce { op: ReduceOp::Sum, axes: (0..r).collect() }, vec![x], None)
    }
    fn scalar_input(&mut self, name: &str) -> Result<Value, String> {
        let idx = self.g.inputs.len() as u32;
        let v = self.push(Op::Input(idx), vec![], Some(Type::scalar()))?;
        self.g.inputs.push(InputDecl { name: name.into(), ty: Type::scalar(), value: v, span: Span::default() });
        Ok(v)
    }
    /// A new optimizer state `opt.<slot>.<param>` of the parameter's shape, zeros.
    fn state(&mut self, slot: &str, param: usize) -> Result<(usize, Value), String> {
        let p = &self.g.params[param];
        let (name, shape, span) = (format!("opt.{slot}.{}", p.name), p.shape.clone(), p.span);
        let idx = self.g.states.len();
        let ty = Type::f32(shape.iter().map(|&d| Dim::konst(d)).collect());
        let v = self.push(Op::State(idx as u32), vec![], Some(ty))?;
        self.g.states.push(StateDecl { name, shape, init: Init::Zeros, value: v, update: None, span });
        Ok((idx, v))
    }
}

/// The training objective: the model's loss plus the `train` block's l1/l2 terms on
/// decayed parameters. Returns the graph with the objective's nodes and its value.
pub fn objective(train: &Graph, settings: &TrainSettings) -> Result<(Graph, Value), String> {
    let loss = train.loss.ok_or("the model has no `loss` to train")?;
    let mut b = B { g: train.clone() };
    let objective = add_regularizers(&mut b, train, settings, loss)?;
    Ok((b.g, objective))
}

fn add_regularizers(b: &mut B, train: &Graph, settings: &TrainSettings, loss: Value) -> Result<Value, String> {
    let mut objective = loss;
    // A proximal l1 is not a term of the loss: the step thresholds after the update.
    let l1 = if settings.l1_proximal { 0.0 } else { settings.l1 };
    for (coef, is_l1) in [(l1, true), (settings.l2, false)] {
        if coef == 0.0 {
            continue;
        }
        for i in 0..train.params.len() {
            if !train.params[i].decay {
                continue;
            }
            let w = train.params[i].value;
            let t = if is_l1 {
                b.push(Op::Unary(UnaryOp::Abs), vec![w], None)?
            } else {
                let sq = b.mul(w, w)?;
                b.scale(sq, 0.5)?
            };
            let s = b.sum_all(t)?;
            let s = b.scale(s, coef)?;
            objective = b.add(objective, s)?;
        }
    }
    Ok(objective)
}

/// The step graph of a train graph: every parameter gets its `update`, optimizer
/// states are added with theirs. L-BFGS is a host loop and has no step graph.
pub fn step_graph(train: &Graph, settings: &TrainSettings) -> Result<Graph, String> {
    step_graph_timed(train, settings).map(|(g, _)| g)
}

/// `step_graph`, with the seconds spent in `autodiff::grad`.
pub fn step_graph_timed(train: &Graph, settings: &TrainSettings) -> Result<(Graph, f64), String> {
    let loss = train.loss.ok_or("the model has no `loss` to train")?;
    let mut b = B { g: train.clone() };
    let objective = add_regularizers(&mut b, train, settings, loss)?;
    let wrt: Vec<Value> = train.params.iter().map(|p| p.value).collect();
    let t = std::time::Instant::now();
    let (g2, grads) = autodiff::grad(&b.g, objective, &wrt)?;
    let t_grad = t.elapsed().as_secs_f64();
    b.g = g2;
    Ok((apply_gradients(b, grads, settings)?, t_grad))
}

/// The scalar input of a gradient graph: this rank's share of the global batch
/// (its rows over the global batch's rows).
pub const SHARE: &str = "hyper.share";

/// The prefix of a gradient's name: `grad.<param>` (outputs of a gradient graph, inputs
/// of an update graph).
pub const GRAD_PREFIX: &str = "grad.";

/// The first half of a data-parallel step (`dist::comm`): the forward and
/// backward pass of the model's loss times `hyper.share`, with every parameter's
/// gradient an output `grad.<param>` (after the train graph's own outputs). With each
/// rank's loss the mean over its rows and its share its rows over the global batch, the
/// sum of the ranks' gradients is the gradient of the mean loss over the global batch.
/// States the forward pass updates (batch-norm statistics) keep their updates;
/// regularization, clipping and the optimizer belong to `update_graph`.
pub fn gradient_graph(train: &Graph) -> Result<Graph, String> {
    let loss = train.loss.ok_or("the model has no `loss` to train")?;
    let mut b = B { g: train.clone() };
    let share = b.scalar_input(SHARE)?;
    let objective = b.mul(loss, share)?;
    let wrt: Vec<Value> = train.params.iter().map(|p| p.value).collect();
    let (mut g, grads) = autodiff::grad(&b.g, objective, &wrt)?;
    for (p, gv) in train.params.iter().zip(grads) {
        g.outputs.push((format!("{GRAD_PREFIX}{}", p.name), gv));
    }
    let errs = crate::ir::verify::verify(&g);
    if let Some(e) = errs.first() {
        return Err(format!("internal compiler error: the gradient graph is ill-formed: {e}"));
    }
    Ok(g)
}

/// The step of a data-parallel run (`dist::comm`) as one graph: the forward and
/// backward pass of the model's loss times `hyper.share` (as `gradient_graph`), each
/// gradient summed over the ranks by an `Op::AllReduce` (created in the order the
/// gradients are computed: fusion buckets them in this order), then the rest of the step
/// on the sums (as `update_graph`: the l1/l2 terms' gradients added once, clipping, the
/// optimizer update).
pub fn distributed_step_graph(train: &Graph, settings: &TrainSettings) -> Result<Graph, String> {
    let loss = train.loss.ok_or("the model has no `loss` to train")?;
    let mut b = B { g: train.clone() };
    let share = b.scalar_input(SHARE)?;
    let objective = b.mul(loss, share)?;
    let wrt: Vec<Value> = train.params.iter().map(|p| p.value).collect();
    let (g2, grads) = autodiff::grad(&b.g, objective, &wrt)?;
    b.g = g2;
    let mut order: Vec<usize> = (0..grads.len()).collect();
    order.sort_by_key(|&i| grads[i].as_u32());
    let mut summed = grads.clone();
    for i in order {
        summed[i] = b.push(Op::AllReduce, vec![grads[i]], None)?;
    }
    let zero = b.push(Op::Fill(0.0), vec![], Some(Type::scalar()))?;
    let reg = add_regularizers(&mut b, train, settings, zero)?;
    if reg != zero {
        let (g3, reg_grads) = autodiff::grad(&b.g, reg, &wrt)?;
        b.g = g3;
        for (gv, r) in summed.iter_mut().zip(reg_grads) {
            *gv = b.add(*gv, r)?;
        }
    }
    let g = apply_gradients(b, summed, settings)?;
    let errs = crate::ir::verify::verify(&g);
    if let Some(e) = errs.first() {
        return Err(format!("internal compiler error: the distributed step graph is ill-formed: {e}"));
    }
    Ok(g)
}

/// The second half of a data-parallel step: the parameters, one input `grad.<param>`
/// per parameter (the summed gradient of the loss), and the rest of `step_graph` on them
/// (the l1/l2 terms' gradients added once, clipping, the optimizer update).
pub fn update_graph(train: &Graph, settings: &TrainSettings) -> Result<Graph, String> {
    let mut b = B { g: Graph::new(crate::ir::Mode::Train) };
    let mut grads = Vec::with_capacity(train.params.len());
    for (i, p) in train.params.iter().enumerate() {
        let ty = Type::f32(p.shape.iter().map(|&d| Dim::konst(d)).collect());
        let v = b.push(Op::Param(i as u32), vec![], Some(ty.clone()))?;
        b.g.params.push(crate::ir::ParamDecl { value: v, update: None, ..p.clone() });
        let idx = b.g.inputs.len() as u32;
        let gv = b.push(Op::Input(idx), vec![], Some(ty.clone()))?;
        b.g.inputs.push(InputDecl { name: format!("{GRAD_PREFIX}{}", p.name), ty, value: gv, span: p.span });
        grads.push(gv);
    }
    let params = b.g.clone();
    let zero = b.push(Op::Fill(0.0), vec![], Some(Type::scalar()))?;
    let reg = add_regularizers(&mut b, &params, settings, zero)?;
    if reg != zero {
        let wrt: Vec<Value> = b.g.params.iter().map(|p| p.value).collect();
        let (g2, reg_grads) = autodiff::grad(&b.g, reg, &wrt)?;
        b.g = g2;
        for (gv, r) in grads.iter_mut().zip(reg_grads) {
            *gv = b.add(*gv, r)?;
        }
    }
    apply_gradients(b, grads, settings)
}

/// Masks, clipping, the optimizer update and proximal l1 on gradients `grads` (one per
/// parameter of `b.g`): the part of a step after the backward pass.
fn apply_gradients(mut b: B, mut grads: Vec<Value>, settings: &TrainSettings) -> Result<Graph, String> {
    // The gradients before masks and clipping, for `log_grad_norms`.
    let raw_grads = grads.clone();
    // Pruning masks (`compress::prune`): a pruned weight gets no gradient, so clipping's norm
    // and the optimizer's state never see it, and its update is multiplied by 0 as well.
    let mut masks: Vec<Option<Value>> = vec![None; grads.len()];
    if settings.prune.is_some() {
        for (i, gv) in grads.iter_mut().enumerate() {
            if !b.g.params[i].is_weight() {
                continue;
            }
            let (si, m) = b.state("mask", i)?;
            let st = &mut b.g.states[si];
            st.name = format!("{}{}", crate::compress::prune::MASK_PREFIX, b.g.params[i].name);
            st.init = Init::Ones;
            *gv = b.mul(*gv, m)?;
            masks[i] = Some(m);
        }
    }
    // Clipping.
    if let Some(c) = settings.clip_value {
        for gv in grads.iter_mut() {
            let lo = b.konst(-c, *gv)?;
            let hi = b.konst(c, *gv)?;
            let t = b.bin(BinaryOp::Max, *gv, lo)?;
            *gv = b.bin(BinaryOp::Min, t, hi)?;
        }
    }
    if let Some(c) = settings.clip_norm {
        // factor = min(1, c / (||g|| + 1e-6)) over the global L2 norm, as PyTorch.
        let mut total: Option<Value> = None;
        for &gv in &grads {
            let sq = b.mul(gv, gv)?;
            let s = b.sum_all(sq)?;
            total = Some(match total {
                Some(t) => b.add(t, s)?,
                None => s,
            });
        }
        if let Some(t) = total {
            let norm = b.push(Op::Unary(UnaryOp::Sqrt), vec![t], None)?;
            let eps = b.konst(1e-6, norm)?;
            let den = b.add(norm, eps)?;
            let cv = b.konst(c, norm)?;
            let ratio = b.div(cv, den)?;
            let one = b.konst(1.0, norm)?;
            let factor = b.bin(BinaryOp::Min, ratio, one)?;
            for gv in grads.iter_mut() {
                let f = b.spread(factor, *gv)?;
                *gv = b.mul(*gv, f)?;
            }
        }
    }
    let lr = b.scalar_input(HYPER[0])?;
    let bc1 = b.scalar_input(HYPER[1])?;
    let bc2 = b.scalar_input(HYPER[2])?;
    let o = settings.optimizer.clone();
    let arg = |n: &str, d: f64| o.num(n).unwrap_or(d);
    for (i, &gv) in grads.iter().enumerate() {
        let p = b.g.params[i].value;
        let lr_p = b.spread(lr, p)?;
        let new_p = match o.name.as_str() {
            "sgd" => {
                let step = b.mul(lr_p, gv)?;
                b.sub(p, step)?
            }
            "momentum" => {
                // v = mu v - lr g; w += v
                let (si, v) = b.state("v", i)?;
                let mv = b.scale(v, arg("mu", 0.9))?;
                let step = b.mul(lr_p, gv)?;
                let nv = b.sub(mv, step)?;
                b.g.states[si].update = Some(nv);
                b.add(p, nv)?
            }
            "nesterov" => {
                // b = mu b + g; w -= lr (g + mu b)
                let mu = arg("mu", 0.9);
                let (si, buf) = b.state("b", i)?;
                let mb = b.scale(buf, mu)?;
                let nb = b.add(mb, gv)?;
                b.g.states[si].update = Some(nb);
                let look = b.scale(nb, mu)?;
                let d = b.add(gv, look)?;
                let step = b.mul(lr_p, d)?;
                b.sub(p, step)?
            }
            "adagrad" | "rmsprop" => {
                // adagrad: s += g^2; rmsprop: s = beta s + (1 - beta) g^2; w -= lr g / (sqrt(s) + eps)
                let (si, s) = b.state("s", i)?;
                let g2 = b.mul(gv, gv)?;
                let ns = if o.name == "adagrad" {
                    b.add(s, g2)?
                } else {
                    let beta = arg("beta", 0.99);
                    let a = b.scale(s, beta)?;
                    let c = b.scale(g2, 1.0 - beta)?;
                    b.add(a, c)?
                };
                b.g.states[si].update = Some(ns);
                let root = b.push(Op::Unary(UnaryOp::Sqrt), vec![ns], None)?;
                let eps = b.konst(arg("eps", if o.name == "adagrad" { 1e-10 } else { 1e-8 }), root)?;
                let den = b.add(root, eps)?;
                let q = b.div(gv, den)?;
                let step = b.mul(lr_p, q)?;
                b.sub(p, step)?
            }
            "adam" | "adamw" => {
                let (b1, b2) = (arg("beta1", 0.9), arg("beta2", 0.999));
                // adamw decays first: w = w - lr wd w (weights only).
                let mut w = p;
                if o.name == "adamw" && b.g.params[i].decay {
                    let wd = arg("weight_decay", 0.01);
                    let lw = b.mul(lr_p, p)?;
                    let d = b.scale(lw, wd)?;
                    w = b.sub(p, d)?;
                }
                let (mi, m) = b.state("m", i)?;
                let (vi, v) = b.state("v", i)?;
                let a = b.scale(m, b1)?;
                let c = b.scale(gv, 1.0 - b1)?;
                let nm = b.add(a, c)?;
                let g2 = b.mul(gv, gv)?;
                let a = b.scale(v, b2)?;
                let c = b.scale(g2, 1.0 - b2)?;
                let nv = b.add(a, c)?;
                b.g.states[mi].update = Some(nm);
                b.g.states[vi].update = Some(nv);
                // w -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps), as PyTorch.
                let bc1_p = b.spread(bc1, p)?;
                let bc2_p = b.spread(bc2, p)?;
                let root_v = b.push(Op::Unary(UnaryOp::Sqrt), vec![nv], None)?;
                let root_bc2 = b.push(Op::Unary(UnaryOp::Sqrt), vec![bc2_p], None)?;
                let den = b.div(root_v, root_bc2)?;
                let eps = b.konst(arg("eps", 1e-8), den)?;
                let den = b.add(den, eps)?;
                let q = b.div(nm, den)?;
                let rate = b.div(lr_p, bc1_p)?;
                let step = b.mul(rate, q)?;
                b.sub(w, step)?
            }
            other => return Err(format!("optimizer `{other}` has no compiled update step")),
        };
        // Proximal l1 (soft thresholding): w = sign(u) max(|u| - lr l1, 0) after the
        // update u, the proximal operator of lr·l1·|w|: weights the gradient does not
        // hold away from 0 become exact zeros.
        let new_p = if settings.l1_proximal && settings.l1 > 0.0 && b.g.params[i].decay {
            let mag = b.push(Op::Unary(UnaryOp::Abs), vec![new_p], None)?;
            let t = b.scale(lr_p, settings.l1)?;
            let shrunk = b.sub(mag, t)?;
            let zero = b.konst(0.0, shrunk)?;
            let kept = b.bin(BinaryOp::Max, shrunk, zero)?;
            let sign = b.push(Op::Unary(UnaryOp::Sign), vec![new_p], None)?;
            b.mul(sign, kept)?
        } else {
            new_p
        };
        let new_p = match masks[i] {
            Some(m) => b.mul(new_p, m)?,
            None => new_p,
        };
        b.g.params[i].update = Some(new_p);
        if settings.log_grad_norms {
            let sq = |b: &mut B, v: Value| -> Result<Value, String> {
                let s = b.mul(v, v)?;
                b.sum_all(s)
            };
            let [gn, un, pn] = monitor_names(&b.g.params[i].name);
            let g2 = sq(&mut b, raw_grads[i])?;
            let delta = b.sub(new_p, p)?;
            let u2 = sq(&mut b, delta)?;
            let p2 = sq(&mut b, p)?;
            b.g.outputs.extend([(gn, g2), (un, u2), (pn, p2)]);
        }
    }
    let errs = crate::ir::verify::verify(&b.g);
    if let Some(e) = errs.first() {
        return Err(format!("internal compiler error: the step graph is ill-formed: {e}"));
    }
    Ok(b.g)
}
