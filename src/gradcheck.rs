//! Gradient checking: analytic gradients (autodiff + interpreter, f64) against central
//! differences `(f(x+h) - f(x-h)) / 2h` (error O(h^2)) or forward differences
//! `(f(x+h) - f(x)) / h` (error O(h), one run per coordinate), with respect to the
//! parameters or the float inputs, at random or given parameters.
//!
//! Kinks are handled deliberately: every run fingerprints the graph's discrete decisions
//! (which side of each max won, the sign of each abs, each comparison). A coordinate
//! whose x+h or x-h run decides differently from the unperturbed run straddles a kink,
//! where the central difference is not a derivative; it is skipped and counted.

use crate::autodiff;
use crate::ir::{DType, Graph, Op, Value};
use crate::rng::SplitMix64;
use crate::runtime::init;
use crate::runtime::interp::{self, Data, Feeds, Tensor};

/// Which finite differences approximate the derivative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// `(f(x+h) - f(x-h)) / 2h`: error O(h^2), two runs per coordinate.
    #[default]
    Central,
    /// `(f(x+h) - f(x)) / h`: error O(h), one run per coordinate (f(x) is shared).
    Forward,
    /// Both, on the same coordinates (three runs per coordinate).
    Both,
}

/// What the gradient is taken with respect to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wrt {
    #[default]
    Params,
    /// The float inputs (i32 inputs have no gradient and are skipped).
    Inputs,
    Both,
}

/// The default tolerance of central differences (relative error).
pub const CENTRAL_TOL: f64 = 1e-6;
/// The default tolerance of forward differences. Their truncation error is `h/2 |f''|`,
/// first order in the step: at the default step 1e-6 the bundled examples measure up to
/// 7.7e-5 (central: 6.1e-7), so the tolerance leaves a margin above that; it is meant
/// for the default step (docs/language.md, "Gradient checks").
pub const FORWARD_TOL: f64 = 1e-3;

#[derive(Clone, Debug)]
pub struct GradcheckOptions {
    pub seed: u64,
    pub eps: f64,
    /// Largest relative error of central differences that passes.
    pub tol: f64,
    /// Largest relative error of forward differences that passes.
    pub forward_tol: f64,
    /// The batch size (and the size of any other free symbol).
    pub batch: usize,
    /// Most coordinates checked per tensor: that many distinct ones (a seeded sample),
    /// or all of them when the tensor has no more.
    pub max_coords: usize,
    /// Relative errors divide by max(|analytic|, |numeric|, floor).
    pub floor: f64,
    pub method: Method,
    pub wrt: Wrt,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            seed: 0,
            eps: 1e-6,
            tol: CENTRAL_TOL,
            forward_tol: FORWARD_TOL,
            batch: 3,
            max_coords: 64,
            floor: 1e-2,
            method: Method::Central,
            wrt: Wrt::Params,
        }
    }
}

/// A tensor whose gradient is checked: a parameter or a float input, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Param(usize),
    Input(usize),
}

/// The largest relative error of one method over the checked coordinates.
#[derive(Clone, Debug, Default)]
pub struct MethodError {
    pub max_rel_err: f64,
    /// Flat index of the worst coordinate, with its analytic and numeric values.
    pub worst: Option<(usize, f64, f64)>,
}

impl MethodError {
    fn add(&mut self, i: usize, a: f64, numeric: f64, floor: f64) {
        let err = (a - numeric).abs() / a.abs().max(numeric.abs()).max(floor);
        if err > self.max_rel_err || self.worst.is_none() || err.is_nan() {
            self.max_rel_err = if err.is_nan() { f64::INFINITY } else { err.max(self.max_rel_err) };
            self.worst = Some((i, a, numeric));
        }
    }
}

#[derive(Clone, Debug)]
pub struct ParamReport {
    pub name: String,
    pub slot: Slot,
    pub shape: Vec<i64>,
    /// How many coordinates the tensor has.
    pub size: usize,
    pub checked: usize,
    /// Coordinates skipped because x +- h crosses a kink.
    pub kinks: usize,
    /// The largest relative error of the method asked for (central differences with
    /// `Method::Both`).
    pub max_rel_err: f64,
    /// Flat index of the worst coordinate, with its analytic and numeric values.
    pub worst: Option<(usize, f64, f64)>,
    /// With `Method::Both`: forward differences on the same coordinates.
    pub forward: Option<MethodError>,
}

impl ParamReport {
    /// Whether every coordinate was checked or skipped at a kink (none left unsampled).
    pub fn all_coordinates(&self) -> bool {
        self.checked + self.kinks == self.size
    }
}

/// The parameters and states a check runs at (`None` in `check`: random ones).
#[derive(Clone, Debug)]
pub struct Point {
    pub params: Vec<Vec<f64>>,
    pub states: Vec<Vec<f64>>,
}

/// The valid id range of an i32 input: the smallest `one_hot` n or `gather` table size
/// among its users (2 if it has none).
fn id_range(g: &Graph, input: crate::ir::Value) -> i64 {
    let mut range = i64::MAX;
    for (_, node) in g.nodes.iter() {
        match &node.op {
            Op::OneHot { n } if node.args[0] == input => range = range.min(*n),
            Op::Gather if node.args[1] == input => {
                if let Some(r) = g.ty(node.args[0]).shape[0].as_const() {
                    range = range.min(r)
                }
            }
            _ => {}
        }
    }
    if range == i64::MAX {
        2
    } else {
        range
    }
}

/// Random inputs for every input of `g`, with every free symbol set to `batch`.
/// Floats are standard normal; ids are uniform over their valid range.
pub fn random_inputs<T: crate::runtime::Real>(g: &Graph, batch: usize, seed: u64) -> Result<Vec<Tensor<T>>, String> {
    let b = crate::runtime::Bindings(vec![Some(batch as i64); g.symbols.len()]);
    let mut rng = SplitMix64::new(seed ^ 0x0005_EED0_F1A9);
    let mut out = Vec::new();
    for i in &g.inputs {
        let shape = b.shape(&i.ty.shape, g)?;
        let n: usize = shape.iter().product();
        out.push(match i.ty.dtype {
            DType::F32 => Tensor::f(shape, (0..n).map(|_| T::from_f64(rng.normal())).collect()),
            DType::I32 => {
                let r = id_range(g, i.value).max(1) as u64;
                Tensor::i(shape, (0..n).map(|_| rng.below(r) as i32).collect())
            }
        });
    }
    Ok(out)
}

/// Parameters from their initializers plus a little noise (so that no value sits at a
/// special point such as exactly 0), and states from their initializers.
pub fn random_params(g: &Graph, seed: u64) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let (mut params, states) = init::init_all(g, seed);
    let mut rng = SplitMix64::new(seed ^ 0xA0A0);
    for p in params.iter_mut() {
        for x in p.iter_mut() {
            *x += 0.1 * rng.normal();
        }
    }
    (params, states)
}

/// The parameters and states of `g` from named tensors (an `nnc init` file or a
/// checkpoint), each with its exact shape.
pub fn point_from(g: &Graph, tensors: &crate::tensors::TensorMap) -> Result<Point, String> {
    let get = |name: &str, shape: &[i64], what: &str| -> Result<Vec<f64>, String> {
        let t = tensors.get(name).ok_or_else(|| format!("{what} `{name}` is missing"))?;
        crate::runtime::exec::floats_of(name, what, t, shape)
    };
    let params = g.params.iter().map(|p| get(&p.name, &p.shape, "parameter")).collect::<Result<_, _>>()?;
    let states = g.states.iter().map(|s| get(&s.name, &s.shape, "state")).collect::<Result<_, _>>()?;
    Ok(Point { params, states })
}

/// Checks d loss / d param for every parameter of `g` (a train or eval graph with a loss)
/// at random parameters.
pub fn gradcheck(g: &Graph, opts: &GradcheckOptions) -> Result<Vec<ParamReport>, String> {
    check(g, opts, None, &mut |_, _| {})
}

/// The tensors `wrt` selects: parameters in declaration order, then float inputs.
pub fn slots(g: &Graph, wrt: Wrt) -> Vec<Slot> {
    let mut out = Vec::new();
    if wrt != Wrt::Inputs {
        out.extend((0..g.params.len()).map(Slot::Param));
    }
    if wrt != Wrt::Params {
        out.extend((0..g.inputs.len()).filter(|&i| g.inputs[i].ty.dtype == DType::F32).map(Slot::Input));
    }
    out
}

/// Checks the gradient of the loss of `g` with respect to the tensors `opts.wrt` selects,
/// at `at` (random parameters when `None`) and random inputs. `progress(done, total)` is
/// called after every coordinate.
pub fn check(
    g: &Graph,
    opts: &GradcheckOptions,
    at: Option<&Point>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<ParamReport>, String> {
    let loss = g.loss.ok_or("the model has no loss")?;
    let slots = slots(g, opts.wrt);
    let wrt: Vec<Value> = slots
        .iter()
        .map(|s| match *s {
            Slot::Param(i) => g.params[i].value,
            Slot::Input(i) => g.inputs[i].value,
        })
        .collect();
    let (grad_graph, grads) = autodiff::grad(g, loss, &wrt)?;
    let inputs = random_inputs::<f64>(g, opts.batch, opts.seed)?;
    let (params, states) = match at {
        Some(p) => (p.params.clone(), p.states.clone()),
        None => random_params(g, opts.seed),
    };
    let mut feeds = Feeds { inputs, params, states, seed: opts.seed, step: 0 };
    let base = interp::run(&grad_graph, &feeds)?;
    let analytic: Vec<(Slot, Vec<f64>)> =
        slots.iter().zip(&grads).map(|(s, v)| (*s, base.get(*v).floats().to_vec())).collect();
    compare(g, opts, &mut feeds, &analytic, progress)
}

/// Up to `k` distinct indices below `n`, sorted (all of them when `k >= n`): Floyd's
/// sampling without replacement.
pub fn distinct_sample(n: usize, k: usize, rng: &mut SplitMix64) -> Vec<usize> {
    if k >= n {
        return (0..n).collect();
    }
    let mut chosen = std::collections::BTreeSet::new();
    for j in n - k..n {
        let t = rng.below(j as u64 + 1) as usize;
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    chosen.into_iter().collect()
}

fn coordinate(feeds: &mut Feeds<f64>, slot: Slot, i: usize) -> Result<&mut f64, String> {
    let v = match slot {
        Slot::Param(p) => feeds.params.get_mut(p).ok_or("no such parameter")?,
        Slot::Input(k) => match &mut feeds.inputs.get_mut(k).ok_or("no such input")?.data {
            Data::F(v) => v,
            Data::I(_) => return Err("an i32 input has no gradient to check".into()),
        },
    };
    v.get_mut(i).ok_or_else(|| "a coordinate out of range".into())
}

/// Compares `analytic` gradients (one per slot, flat) with finite differences of the loss
/// of `g` at `feeds`, on a seeded sample of distinct coordinates of each tensor.
/// Coordinates where a perturbed run decides differently from the unperturbed one (a
/// kink) are skipped and counted.
pub fn compare(
    g: &Graph,
    opts: &GradcheckOptions,
    feeds: &mut Feeds<f64>,
    analytic: &[(Slot, Vec<f64>)],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<ParamReport>, String> {
    let loss = g.loss.ok_or("the model has no loss")?;
    let base = interp::run(g, feeds)?;
    let (base_fp, base_loss) = (base.decisions, base.get(loss).floats()[0]);
    let mut rng = SplitMix64::new(opts.seed ^ 0xC00D);
    let samples: Vec<Vec<usize>> =
        analytic.iter().map(|(_, a)| distinct_sample(a.len(), opts.max_coords, &mut rng)).collect();
    let total: usize = samples.iter().map(Vec::len).sum();
    let (central, forward) = match opts.method {
        Method::Central => (true, false),
        Method::Forward => (false, true),
        Method::Both => (true, true),
    };
    let h = opts.eps;
    let mut done = 0;
    let mut reports = Vec::new();
    for ((slot, a), coords) in analytic.iter().zip(&samples) {
        let (name, shape) = match *slot {
            Slot::Param(p) => {
                let d = g.params.get(p).ok_or("no such parameter")?;
                (d.name.clone(), d.shape.clone())
            }
            Slot::Input(k) => {
                let d = g.inputs.get(k).ok_or("no such input")?;
                (d.name.clone(), feeds.inputs[k].shape.iter().map(|&x| x as i64).collect())
            }
        };
        let mut rep = ParamReport {
            name,
            slot: *slot,
            shape,
            size: a.len(),
            checked: 0,
            kinks: 0,
            max_rel_err: 0.0,
            worst: None,
            forward: None,
        };
        let (mut c_err, mut f_err) = (MethodError::default(), MethodError::default());
        for &i in coords {
            let x0 = *coordinate(feeds, *slot, i)?;
            *coordinate(feeds, *slot, i)? = x0 + h;
            let plus = interp::run(g, feeds);
            let minus = if central {
                *coordinate(feeds, *slot, i)? = x0 - h;
                Some(interp::run(g, feeds))
            } else {
                None
            };
            *coordinate(feeds, *slot, i)? = x0;
            let plus = plus?;
            let minus = minus.transpose()?;
            done += 1;
            progress(done, total);
            if plus.decisions != base_fp || minus.as_ref().is_some_and(|m| m.decisions != base_fp) {
                rep.kinks += 1;
                continue;
            }
            rep.checked += 1;
            let lp = plus.get(loss).floats()[0];
            if let Some(m) = &minus {
                c_err.add(i, a[i], (lp - m.get(loss).floats()[0]) / (2.0 * h), opts.floor);
            }
            if forward {
                f_err.add(i, a[i], (lp - base_loss) / h, opts.floor);
            }
        }
        let primary = if central { &c_err } else { &f_err };
        rep.max_rel_err = primary.max_rel_err;
        rep.worst = primary.worst;
        if central && forward {
            rep.forward = Some(f_err);
        }
        reports.push(rep);
    }
    Ok(reports)
}

fn worst_text(w: Option<(usize, f64, f64)>) -> String {
    match w {
        Some((i, a, n)) => format!("{i}: {a:.9e} vs {n:.9e}"),
        None => "-".into(),
    }
}

/// The gradcheck table as text (one tolerance for every method).
pub fn table(reports: &[ParamReport], tol: f64) -> String {
    table_with(reports, tol, tol)
}

/// The gradcheck table as text: `tol` flags the first error column, `forward_tol` the
/// forward-difference column that `Method::Both` adds.
pub fn table_with(reports: &[ParamReport], tol: f64, forward_tol: f64) -> String {
    let both = reports.iter().any(|r| r.forward.is_some());
    let label = |r: &ParamReport| match r.slot {
        Slot::Param(_) => r.name.clone(),
        Slot::Input(_) => format!("{} (input)", r.name),
    };
    let mut out = if both {
        format!(
            "{:<28} {:>14} {:>8} {:>6} {:>12} {:>12}  {}\n",
            "tensor",
            "shape",
            "checked",
            "kinks",
            "central err",
            "forward err",
            "worst central (index: analytic vs numeric)"
        )
    } else {
        format!(
            "{:<28} {:>14} {:>8} {:>6} {:>12}  {}\n",
            "tensor", "shape", "checked", "kinks", "max rel err", "worst (index: analytic vs numeric)"
        )
    };
    for r in reports {
        let fails = r.max_rel_err > tol || r.forward.as_ref().is_some_and(|f| f.max_rel_err > forward_tol);
        let flag = if fails { "  FAIL" } else { "" };
        let fwd = match &r.forward {
            Some(f) => format!(" {:>12.3e}", f.max_rel_err),
            None if both => format!(" {:>12}", "-"),
            None => String::new(),
        };
        out.push_str(&format!(
            "{:<28} {:>14} {:>8} {:>6} {:>12.3e}{fwd}  {}{flag}\n",
            label(r),
            format!("{:?}", r.shape),
            r.checked,
            r.kinks,
            r.max_rel_err,
            worst_text(r.worst)
        ));
    }
    out
}
