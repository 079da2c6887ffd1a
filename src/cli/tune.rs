//! `nnc tune`: hyperparameter search over a model's train settings and arguments.

use super::*;
use crate::select::tune::{State, TrialResult};

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// Fix a train setting or model argument for every trial, e.g. `--set epochs=20`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Search a key (adds to or replaces the tune block's), e.g.
    /// `--space 'lr=loguniform(1e-4, 1e-1)'` or `--space 'hidden=choice([64, 128])'`.
    #[arg(long = "space", value_name = "KEY=DIST")]
    pub space: Vec<String>,
    /// `grid`, `random` or `bayes` (TPE); default: the tune block's, else bayes.
    #[arg(long)]
    pub method: Option<String>,
    /// Number of trials (default: the tune block's; every grid point, or 20).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub trials: Option<u32>,
    /// The metric to optimize: `val_accuracy`, `val_loss`, `val_f1`, ..., or `cv_accuracy`
    /// etc. to cross-validate every trial on the training rows.
    #[arg(long)]
    pub metric: Option<String>,
    /// `none`, `median`, `asha`, or with arguments: `median(startup = 5, warmup = 3)`.
    #[arg(long)]
    pub prune: Option<String>,
    /// The sampler's seed (trials keep the recipe's own seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Trials at once (default: the tune block's `jobs`, else 2 where 2 CPUs are available).
    #[arg(long, value_parser = thread_count)]
    pub jobs: Option<usize>,
    /// Output folder for tune.csv, tune.png and best.safetensors (default:
    /// runs/<file stem>-tune/ beside the model, or -tune-2, ... when that one holds a search).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the search that the output folder holds.
    #[arg(long)]
    pub force: bool,
    /// Native code (`jit`) or the reference interpreter (`interp`).
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
    /// Spread the trials over MPI ranks: run under `mpirun -np N` (or `srun`); trial i runs
    /// on rank i mod N, one at a time, as a one-process search with `--jobs N` would; rank 0
    /// prints and writes (needs nnc built with `--features mpi`; docs/distributed.md).
    #[arg(long, conflicts_with = "jobs")]
    pub distributed: bool,
    /// With --distributed: abort the job when a rank waits longer than this many seconds
    /// for the others (default: no limit, since a rank waits for the others' trials).
    #[arg(long, value_name = "SECONDS", requires = "distributed")]
    pub collective_timeout: Option<u64>,
}

/// The search: the tune block with the command line's changes.
fn spec_of(p: &Program, a: &Args) -> Result<crate::ir::recipe::TuneSettings, String> {
    let mut t = p.settings.tune.clone().unwrap_or_default();
    // Values of model arguments are checked by compiling them (`tune` does, before the
    // first trial), so no kinds are needed here.
    let kinds: Vec<(String, Option<crate::syntax::ast::Kind>)> =
        p.args.iter().map(|(n, _)| (n.clone(), None)).collect();
    let mut pairs: Vec<(String, String)> = Vec::new();
    for s in &a.space {
        let (k, v) = s.split_once('=').ok_or_else(|| format!("--space expects key=distribution, found `{s}`"))?;
        pairs.push((k.trim().to_string(), v.trim().to_string()));
    }
    let flag = |name: &str, v: &Option<String>| v.as_ref().map(|v| (name.to_string(), v.clone()));
    pairs.extend(flag("method", &a.method));
    pairs.extend(flag("metric", &a.metric));
    pairs.extend(flag("prune", &a.prune));
    pairs.extend(a.trials.map(|n| ("trials".to_string(), n.to_string())));
    pairs.extend(a.seed.map(|n| ("seed".to_string(), n.to_string())));
    for (k, v) in pairs {
        let expr = crate::syntax::parse_expr(&v, crate::diagnostic::FileId(0))
            .map_err(|d| format!("--{} {k}={v}: {}", if is_flag(&k) { k.as_str() } else { "space" }, d.message))?;
        let key = crate::syntax::ast::Ident { name: k.clone(), span: crate::diagnostic::Span::default() };
        crate::settings::tune::apply(&mut t, &key, &expr, &kinds).map_err(|d| {
            let help = d.help.map(|h| format!(" ({h})")).unwrap_or_default();
            let what = if is_flag(&k) { format!("--{k} {v}") } else { format!("--space {k}={v}") };
            format!("{what}: {}{help}", d.message)
        })?;
    }
    crate::settings::tune::cross_check(&t, crate::diagnostic::Span::default()).map_err(|d| {
        let help = d.help.map(|h| format!(" ({h})")).unwrap_or_default();
        format!("{}{help}", d.message)
    })?;
    Ok(t)
}

fn is_flag(k: &str) -> bool {
    matches!(k, "method" | "metric" | "prune" | "trials" | "seed")
}

fn values_text(t: &TrialResult) -> String {
    t.values.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// With `--distributed` every rank runs its trials; rank 0 prints and writes.
pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let (distributed, timeout) = (a.distributed, a.collective_timeout);
    super::ranks::on_ranks(distributed, timeout, |comm| run_rank(a, opts, comm))
}

fn run_rank(a: Args, opts: RenderOptions, comm: Option<&mut dyn crate::dist::comm::Communicator>) -> i32 {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let quiet = comm.as_ref().is_some_and(|c| c.rank() != 0);
    let p = match compile_with_sets(&a.file, &a.set, a.model.as_deref(), opts) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let spec = match spec_of(&p, &a) {
        Ok(s) => s,
        Err(m) if p.settings.tune.is_none() && a.space.is_empty() => {
            return fail(&format!(
                "model `{}` has no `tune` block and no --space was given: there is nothing to search ({m})",
                p.name
            ))
        }
        Err(m) => {
            errln!("error: {m}");
            return 2;
        }
    };
    let dir = a.file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let stem = a.file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
    let holds = |d: &std::path::Path| d.join("tune.csv").exists();
    let out_dir = match output_folder(
        &dir,
        &format!("{stem}-tune"),
        a.out.clone(),
        &holds,
        a.force,
        ("a search (tune.csv)", "--force to replace it"),
    ) {
        Ok(d) => d,
        Err(m) => return fail(&m),
    };
    let source = match crate::pipeline::read_source(&a.file) {
        Ok(s) => s,
        Err(m) => return fail(&m),
    };
    let cpus = std::thread::available_parallelism().map(std::num::NonZeroUsize::get).unwrap_or(1);
    let jobs = match &comm {
        Some(c) => c.size(),
        None => a.jobs.or(spec.jobs.map(|j| j as usize)).unwrap_or(2).min(cpus).max(1),
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let compile = |values: &[(String, String)]| -> Result<Program, String> {
        let mut sets = a.set.clone();
        sets.extend(values.iter().map(|(k, v)| format!("{k}={v}")));
        crate::pipeline::configure(&a.file, &sets, a.model.as_deref()).map_err(|e| match e {
            crate::pipeline::ConfigureError::Compile(c) => {
                let first = c.diagnostics.first().map(|d| d.message.clone()).unwrap_or_default();
                format!("the model does not compile: {first}")
            }
            crate::pipeline::ConfigureError::Model(m) | crate::pipeline::ConfigureError::Set(m) => m,
        })
    };
    let topts = crate::select::tune::TuneOptions {
        compile: &compile,
        fixed: a.set.iter().map(|s| s.split_once('=').map(|(k, _)| k.trim()).unwrap_or(s).to_string()).collect(),
        backend: a.backend.run(),
        jobs,
        threads: 1,
        source,
    };
    let trials = match (spec.method.as_str(), spec.trials) {
        ("grid", _) => "every grid point".to_string(),
        (_, Some(n)) => format!("{n} trials"),
        (_, None) => "20 trials".to_string(),
    };
    let space: Vec<String> = spec.space.iter().map(|q| format!("{} = {}", q.name, q.dist.render())).collect();
    if !quiet {
        let at_once =
            if comm.is_some() { format!("{jobs} at a time (one per rank)") } else { format!("{jobs} at a time") };
        errln!(
            "tuning {} from {}: {} search, {trials}, {at_once}, pruner {}",
            p.name,
            a.file.display(),
            spec.method,
            spec.stopper.render()
        );
        errln!("  space: {}", space.join(", "));
    }
    let on_trial = |name: &str, t: &TrialResult| {
        if quiet {
            return;
        }
        let m = format!("{name} {}", t.metric.map(crate::metrics::format_short).unwrap_or_else(|| "-".into()));
        match &t.state {
            State::Complete => {
                outln!("trial {}: {}  {m}  ({} epochs, {:.2} s)", t.index + 1, values_text(t), t.epochs, t.seconds)
            }
            State::Stopped(e) => {
                outln!("trial {}: {}  {m}  pruned at epoch {e} ({:.2} s)", t.index + 1, values_text(t), t.seconds)
            }
            State::Failed(why) => outln!("trial {}: {}  failed: {why}", t.index + 1, values_text(t)),
        }
    };
    let r = match crate::select::tune::tune_with(&p, &spec, &dir, &topts, &stop, &on_trial, comm) {
        Ok(r) => r,
        Err(m) => return fail(&m),
    };
    if quiet {
        return if stop.load(Ordering::SeqCst) { 130 } else { 0 };
    }
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        return fail(&format!("cannot create `{}`: {e}", out_dir.display()));
    }
    crate::tensors::remove_stale_temps(&out_dir);
    let mut files = Vec::new();
    let csv = out_dir.join("tune.csv");
    if let Err(m) = crate::tensors::write_atomic(&csv, crate::select::tune::to_csv(&r, &spec.space).as_bytes()) {
        return fail(&m);
    }
    files.push(csv);
    let png = out_dir.join("tune.png");
    match crate::select::tune::plot(&png, &p.name, &r, &spec.space) {
        Ok(()) => files.push(png),
        Err(e) => errln!("note: tune.png not drawn: {e}"),
    }
    match r.best {
        Some(i) => {
            let b = &r.trials[i];
            outln!(
                "best_{}: {} (trial {})",
                r.metric,
                crate::metrics::format_short(b.metric.unwrap_or(f64::NAN)),
                b.index + 1
            );
            outln!("best: {}", values_text(b));
            if let Some(test) = &r.test {
                for (k, v) in test {
                    outln!("{k}: {}", crate::metrics::format_short(*v));
                }
                errln!(
                    "note: the test metrics are the best trial's model on the {} test rows, which the search never saw",
                    r.rows.2
                );
            }
            if let Some(m) = &r.best_model {
                let path = out_dir.join("best.safetensors");
                let meta = crate::train::trainer::checkpoint_meta(&m.program, &topts.source, &r.record, &m.progress);
                match crate::train::trainer::save_tensors(&path, m.tensors.clone(), &m.pre, meta) {
                    Ok(()) => files.push(path),
                    Err(e) => return fail(&e),
                }
            }
        }
        None => outln!("best_{}: none (no trial completed)", r.metric),
    }
    for note in &r.notes {
        errln!("note: {note}");
    }
    let count = |f: &dyn Fn(&State) -> bool| r.trials.iter().filter(|t| f(&t.state)).count();
    let complete = count(&|s| *s == State::Complete);
    let pruned = count(&|s| matches!(s, State::Stopped(_)));
    let failed = count(&|s| matches!(s, State::Failed(_)));
    let shown: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    errln!(
        "{} trials ({complete} complete, {pruned} pruned, {failed} failed) on {} training and {} validation rows in {:.1} s; wrote {}",
        r.trials.len(),
        r.rows.0,
        r.rows.1,
        r.seconds,
        shown.join(", ")
    );
    if stop.load(Ordering::SeqCst) {
        errln!("interrupted: the search stopped early");
        return 130;
    }
    if let Some(i) = r.best {
        let sets: Vec<String> = r.trials[i].values.iter().map(|(k, v)| format!("--set '{k}={v}'")).collect();
        errln!("train it with: nnc train {} {}", a.file.display(), sets.join(" "));
    }
    0
}
