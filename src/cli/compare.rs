//! `nnc compare`: two models on the same folds or test split, with a significance test.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The first model file (`.nn`).
    pub a: PathBuf,
    /// The second model file (`.nn`).
    pub b: PathBuf,
    /// Compare on K cross-validation folds (or `loo`) instead of the first model's test split.
    #[arg(long)]
    pub folds: Option<crate::select::cv::Folds>,
    /// Override a train setting of both models, e.g. `--set epochs=5`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Native code (`jit`) or the reference interpreter (`interp`).
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    /// Threads for large GEMMs and kernels.
    #[arg(long, default_value_t = 1, value_parser = thread_count)]
    pub threads: usize,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    use std::sync::atomic::AtomicBool;
    let (pa, pb) = match (compile_with_sets(&a.a, &a.set, None, opts), compile_with_sets(&a.b, &a.set, None, opts)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let dir = |f: &std::path::Path| f.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let (da, db) = (dir(&a.a), dir(&a.b));
    let stop = AtomicBool::new(false);
    let t0 = std::time::Instant::now();
    let r = match crate::select::compare::compare((&pa, &da), (&pb, &db), a.folds, a.backend.run(), a.threads, &stop) {
        Ok(r) => r,
        Err(m) => return fail(&m),
    };
    let f = crate::metrics::format_short;
    for (i, (x, y)) in r.a.values.iter().zip(&r.b.values).enumerate() {
        let what = if r.a.values.len() > 1 { format!("fold {}", i + 1) } else { "test split".into() };
        outln!("{what}: {} {} {}, {} {} {}", r.a.name, r.metric, f(*x), r.b.name, r.metric, f(*y));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    outln!("{}: {} {}, {} {}", r.metric, r.a.name, f(mean(&r.a.values)), r.b.name, f(mean(&r.b.values)));
    outln!("mean_difference: {} ({} - {})", f(r.mean_diff), r.a.name, r.b.name);
    if let Some(t) = &r.ttest {
        outln!("t: {} (df {})", f(t.t), f(t.df));
    }
    if let Some(t) = &r.plain_ttest {
        outln!("plain_paired_t_p_value: {} (over-confident on folds; for reference)", f(t.p_value));
    }
    if let Some(m) = &r.mcnemar {
        outln!(
            "mcnemar: {} right only by {}, {} right only by {} ({})",
            m.b,
            r.a.name,
            m.c,
            r.b.name,
            if m.exact { "exact binomial" } else { "chi-square, continuity-corrected" }
        );
    }
    outln!("test: {}", r.test);
    outln!("p_value: {}", f(r.p_value));
    outln!("verdict: {}", r.verdict);
    for s in [&r.a, &r.b] {
        outln!(
            "{}: {} parameters, {} MFLOP forward per example (matrix products), {:.3} ms per training step, {:.2} s training",
            s.name,
            s.parameters,
            f(s.forward_flops / 1e6),
            s.step_ms,
            s.train_seconds
        );
    }
    for n in &r.notes {
        errln!("note: {n}");
    }
    errln!("compared in {:.1} s", t0.elapsed().as_secs_f64());
    0
}
