//! `nnc gradcheck`: analytic gradients against central differences, in f64.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// Seed of the random parameters and inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Step of the central differences (a positive finite number).
    #[arg(long, default_value_t = 1e-6, value_parser = positive_finite)]
    pub eps: f64,
    /// Largest relative error that passes (a positive finite number).
    #[arg(long, default_value_t = 1e-6, value_parser = positive_finite)]
    pub tol: f64,
    /// Batch size of the random inputs.
    #[arg(long, default_value_t = 3, value_parser = count)]
    pub batch: usize,
    /// Most coordinates checked per parameter (a seeded sample beyond that).
    #[arg(long, default_value_t = 64, value_parser = count)]
    pub coords: usize,
    /// Which graph: the training graph (dropout on) or the eval graph.
    #[arg(long, value_enum, default_value = "train")]
    pub mode: RunMode,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, seed, eps, tol, batch, coords, mode, model } = a;
    let Some(c) = compile(&file, opts) else { return 1 };
    let p = match pick(&c, model.as_deref()) {
        Ok(p) => p,
        Err(m) => return fail(&m),
    };
    let g = if mode == RunMode::Train { &p.train } else { &p.eval };
    let o = crate::gradcheck::GradcheckOptions { seed, eps, tol, batch, max_coords: coords, ..Default::default() };
    match crate::gradcheck::gradcheck(g, &o) {
        Ok(reports) => {
            outs!("{}", crate::gradcheck::table(&reports, tol));
            let worst = reports.iter().map(|r| r.max_rel_err).fold(0.0, f64::max);
            let checked: usize = reports.iter().map(|r| r.checked).sum();
            let kinks: usize = reports.iter().map(|r| r.kinks).sum();
            outln!("checked {checked} coordinates ({kinks} skipped at kinks); max relative error {worst:.3e} (tolerance {tol:e})");
            if checked == 0 {
                errln!("error: gradient check failed: no coordinate was checked (all {kinks} sat at kinks)");
                1
            } else if worst > tol || worst.is_nan() {
                errln!("error: gradient check failed");
                1
            } else {
                0
            }
        }
        Err(m) => fail(&m),
    }
}
