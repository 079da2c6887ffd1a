//! Gradient checking: analytic gradients (autodiff + interpreter, f64) against central
//! differences `(f(x+h) - f(x-h)) / 2h`.
//!
//! Kinks are handled deliberately: every run fingerprints the graph's discrete decisions
//! (which side of each max won, the sign of each abs, each comparison). A coordinate
//! whose x+h or x-h run decides differently from the unperturbed run straddles a kink,
//! where the central difference is not a derivative; it is skipped and counted.

use crate::autodiff;
use crate::ir::{DType, Graph, Op};
use crate::rng::SplitMix64;
use crate::runtime::init;
use crate::runtime::interp::{self, Feeds, Tensor};

#[derive(Clone, Debug)]
pub struct GradcheckOptions {
    pub seed: u64,
    pub eps: f64,
    pub tol: f64,
    /// The batch size (and the size of any other free symbol).
    pub batch: usize,
    /// Most coordinates checked per parameter (a seeded sample beyond that).
    pub max_coords: usize,
    /// Relative errors divide by max(|analytic|, |numeric|, floor).
    pub floor: f64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions { seed: 0, eps: 1e-6, tol: 1e-6, batch: 3, max_coords: 64, floor: 1e-2 }
    }
}

#[derive(Clone, Debug)]
pub struct ParamReport {
    pub name: String,
    pub shape: Vec<i64>,
    pub checked: usize,
    /// Coordinates skipped because x +- h crosses a kink.
    pub kinks: usize,
    pub max_rel_err: f64,
    /// Flat index of the worst coordinate, with its analytic and numeric values.
    pub worst: Option<(usize, f64, f64)>,
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

/// Checks d loss / d param for every parameter of `g` (a train or eval graph with a loss).
pub fn gradcheck(g: &Graph, opts: &GradcheckOptions) -> Result<Vec<ParamReport>, String> {
    let loss = g.loss.ok_or("the model has no loss")?;
    let grads = autodiff::grad_program(g)?;
    let inputs = random_inputs::<f64>(g, opts.batch, opts.seed)?;
    let (params, states) = random_params(g, opts.seed);
    let mut feeds = Feeds { inputs, params, states, seed: opts.seed, step: 0 };
    let base = interp::run(&grads.graph, &feeds)?;
    let mut rng = SplitMix64::new(opts.seed ^ 0xC00D);
    let mut reports = Vec::new();
    for (pi, decl) in g.params.iter().enumerate() {
        let analytic = base.get(grads.grads[pi]).floats().to_vec();
        let n = analytic.len();
        let coords: Vec<usize> = if n <= opts.max_coords {
            (0..n).collect()
        } else {
            let mut c: Vec<usize> = (0..opts.max_coords).map(|_| rng.below(n as u64) as usize).collect();
            c.sort_unstable();
            c.dedup();
            c
        };
        let mut rep = ParamReport {
            name: decl.name.clone(),
            shape: decl.shape.clone(),
            checked: 0,
            kinks: 0,
            max_rel_err: 0.0,
            worst: None,
        };
        for &i in &coords {
            let x0 = feeds.params[pi][i];
            feeds.params[pi][i] = x0 + opts.eps;
            let plus = interp::run(g, &feeds)?;
            feeds.params[pi][i] = x0 - opts.eps;
            let minus = interp::run(g, &feeds)?;
            feeds.params[pi][i] = x0;
            let base_fp = interp::run(g, &feeds)?.decisions;
            if plus.decisions != base_fp || minus.decisions != base_fp {
                rep.kinks += 1;
                continue;
            }
            let lp = plus.get(loss).floats()[0];
            let lm = minus.get(loss).floats()[0];
            let numeric = (lp - lm) / (2.0 * opts.eps);
            let a = analytic[i];
            let err = (a - numeric).abs() / a.abs().max(numeric.abs()).max(opts.floor);
            rep.checked += 1;
            if err > rep.max_rel_err || rep.worst.is_none() || err.is_nan() {
                rep.max_rel_err = if err.is_nan() { f64::INFINITY } else { err.max(rep.max_rel_err) };
                rep.worst = Some((i, a, numeric));
            }
        }
        reports.push(rep);
    }
    Ok(reports)
}

/// The gradcheck table as text.
pub fn table(reports: &[ParamReport], tol: f64) -> String {
    let mut out = format!(
        "{:<28} {:>14} {:>8} {:>6} {:>12}  {}\n",
        "param", "shape", "checked", "kinks", "max rel err", "worst (index: analytic vs numeric)"
    );
    for r in reports {
        let worst = match r.worst {
            Some((i, a, n)) => format!("{i}: {a:.9e} vs {n:.9e}"),
            None => "-".into(),
        };
        let flag = if r.max_rel_err > tol { "  FAIL" } else { "" };
        out.push_str(&format!(
            "{:<28} {:>14} {:>8} {:>6} {:>12.3e}  {worst}{flag}\n",
            r.name,
            format!("{:?}", r.shape),
            r.checked,
            r.kinks,
            r.max_rel_err
        ));
    }
    out
}
