//! `nnc gradcheck`: analytic gradients against finite differences (central, forward or
//! both), in f64, with respect to parameters and/or float inputs, at random parameters or
//! at those of a file or checkpoint.

use super::*;
use crate::gradcheck::{Method, Wrt, CENTRAL_TOL, FORWARD_TOL};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum MethodArg {
    /// (f(x+h) - f(x-h)) / 2h: error O(h^2).
    Central,
    /// (f(x+h) - f(x)) / h: error O(h), half the runs.
    Forward,
    /// Both, on the same coordinates.
    Both,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum WrtArg {
    /// The parameters.
    Params,
    /// The float inputs (i32 inputs are skipped).
    Inputs,
    /// Parameters and float inputs.
    Both,
}

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// Seed of the random parameters and inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Step of the finite differences (a positive finite number).
    #[arg(long, default_value_t = 1e-6, value_parser = positive_finite)]
    pub eps: f64,
    /// Largest relative error that passes, for every method checked (default: 1e-6 for
    /// central differences, 1e-3 for forward differences).
    #[arg(long, value_parser = positive_finite)]
    pub tol: Option<f64>,
    /// Finite differences: central, forward, or both on the same coordinates.
    #[arg(long, value_enum, default_value = "central")]
    pub method: MethodArg,
    /// Gradients with respect to the parameters, the float inputs, or both.
    #[arg(long, value_enum, default_value = "params")]
    pub wrt: WrtArg,
    /// Check at these parameters and states (an `nnc init` file or any safetensors file
    /// with every parameter by name) instead of random ones.
    #[arg(long, conflicts_with = "checkpoint")]
    pub params: Option<PathBuf>,
    /// Check at a checkpoint's parameters (the model built with its recorded arguments).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Batch size of the random inputs.
    #[arg(long, default_value_t = 3, value_parser = count)]
    pub batch: usize,
    /// Distinct coordinates checked per tensor (a seeded sample; all of a smaller tensor).
    #[arg(long, default_value_t = 64, value_parser = count)]
    pub coords: usize,
    /// Which graph: the training graph (dropout on) or the eval graph.
    #[arg(long, value_enum, default_value = "train")]
    pub mode: RunMode,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
}

/// The model as a checkpoint was trained: its recorded model arguments (not its
/// quantization-aware recipe, whose rounding has no derivative to check).
fn model_of(a: &Args, opts: RenderOptions) -> Result<Program, i32> {
    let sets: Vec<String> = match &a.checkpoint {
        Some(c) => checkpoint_args(c).into_iter().filter(|s| !s.starts_with("quantize=")).collect(),
        None => Vec::new(),
    };
    if sets.is_empty() {
        let c = compile(&a.file, opts).ok_or(1)?;
        return pick(&c, a.model.as_deref()).cloned().map_err(|m| fail(&m));
    }
    pipeline::configure(&a.file, &sets, a.model.as_deref()).map_err(|e| match e {
        pipeline::ConfigureError::Compile(e) => {
            report(&e, opts);
            1
        }
        pipeline::ConfigureError::Model(m) => fail(&m),
        // The arguments come from the checkpoint, not from the command line.
        pipeline::ConfigureError::Set(m) => fail(&format!(
            "the checkpoint does not fit this model: it records the model arguments {} ({m})",
            sets.join(", ")
        )),
    })
}

/// The parameters the check runs at, and a sentence saying where they come from.
fn point(a: &Args, g: &ir::Graph) -> Result<(Option<crate::gradcheck::Point>, String), String> {
    let (mut tensors, what) = match (&a.params, &a.checkpoint) {
        (Some(p), _) => (crate::tensors::read(p)?, format!("the parameters of {}", p.display())),
        (None, Some(c)) => {
            let (t, meta) = crate::train::checkpoint::read(c)?;
            crate::train::checkpoint::validate(g, &t, c, false)?;
            let mut what = format!("the parameters of checkpoint {}", c.display());
            if let Some(pre) = meta.get("nnc.preprocess").filter(|p| !p.is_empty() && p.as_str() != "none") {
                what.push_str(&format!(" (its preprocessing, {pre}, is for data and does not apply to random inputs)"));
            }
            (t, what)
        }
        (None, None) => {
            return Ok((None, format!("random parameters (initializers plus 0.1·N(0, 1) noise, seed {})", a.seed)))
        }
    };
    crate::train::teacher::fill(g, &mut tensors)?;
    let path = a.params.as_ref().or(a.checkpoint.as_ref()).map(|p| p.display().to_string()).unwrap_or_default();
    let pt = crate::gradcheck::point_from(g, &tensors).map_err(|m| format!("`{path}`: {m}"))?;
    Ok((Some(pt), what))
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let p = match model_of(&a, opts) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let g = if a.mode == RunMode::Train { &p.train } else { &p.eval };
    if g.loss.is_none() {
        return fail(&format!("model `{}` has no `loss` to differentiate", p.name));
    }
    let (at, where_) = match point(&a, g) {
        Ok(x) => x,
        Err(m) => return fail(&m),
    };
    let method = match a.method {
        MethodArg::Central => Method::Central,
        MethodArg::Forward => Method::Forward,
        MethodArg::Both => Method::Both,
    };
    let wrt = match a.wrt {
        WrtArg::Params => Wrt::Params,
        WrtArg::Inputs => Wrt::Inputs,
        WrtArg::Both => Wrt::Both,
    };
    let (tol, forward_tol) = (a.tol.unwrap_or(CENTRAL_TOL), a.tol.unwrap_or(FORWARD_TOL));
    let o = crate::gradcheck::GradcheckOptions {
        seed: a.seed,
        eps: a.eps,
        tol,
        forward_tol,
        batch: a.batch,
        max_coords: a.coords,
        method,
        wrt,
        ..Default::default()
    };
    errln!("at {where_}");
    errln!("inputs: random, batch {} (floats standard normal, ids uniform over their range), seed {}", a.batch, a.seed);
    if wrt != Wrt::Params {
        let ints: Vec<&str> =
            g.inputs.iter().filter(|i| i.ty.dtype == ir::DType::I32).map(|i| i.name.as_str()).collect();
        if !ints.is_empty() {
            errln!("note: i32 inputs have no gradient and are skipped: {}", ints.join(", "));
        }
        if crate::gradcheck::slots(g, wrt).is_empty() {
            return fail("nothing to check: the model has no float inputs");
        }
    }
    // Progress on stderr: a bar when it is a terminal (indicatif draws nothing otherwise).
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("gradcheck [{bar:30}] {pos}/{len} coordinates {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let result = crate::gradcheck::check(g, &o, at.as_ref(), &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let reports = match result {
        Ok(r) => r,
        Err(m) => return fail(&m),
    };
    outs!("{}", crate::gradcheck::table_with(&reports, tol, forward_tol));
    let all: Vec<String> =
        reports.iter().filter(|r| r.size <= a.coords).map(|r| format!("{} ({})", r.name, r.size)).collect();
    if !all.is_empty() {
        errln!("note: --coords {} covers every coordinate of: {}", a.coords, all.join(", "));
    }
    let checked: usize = reports.iter().map(|r| r.checked).sum();
    let kinks: usize = reports.iter().map(|r| r.kinks).sum();
    let worst = reports.iter().map(|r| r.max_rel_err).fold(0.0, f64::max);
    let first = if method == Method::Forward { "forward" } else { "central" };
    let first_tol = if method == Method::Forward { forward_tol } else { tol };
    let mut line = format!(
        "checked {checked} coordinates ({kinks} skipped at kinks); max relative error {worst:.3e} ({first} differences, \
         tolerance {first_tol:e})"
    );
    let fworst = reports.iter().filter_map(|r| r.forward.as_ref()).map(|f| f.max_rel_err).fold(0.0, f64::max);
    if method == Method::Both {
        line.push_str(&format!(", {fworst:.3e} (forward differences, tolerance {forward_tol:e})"));
    }
    outln!("{line}");
    let bad = |e: f64, t: f64| e > t || e.is_nan();
    if checked == 0 {
        errln!("error: gradient check failed: no coordinate was checked (all {kinks} sat at kinks)");
        1
    } else if bad(worst, first_tol) || (method == Method::Both && bad(fworst, forward_tol)) {
        errln!("error: gradient check failed");
        1
    } else {
        0
    }
}
