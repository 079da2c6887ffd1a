//! `nnc train`: train a model with its `train` block (the main job).

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// Override a train setting, e.g. `--set epochs=5 --set lr=0.01`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Output folder (default: runs/<file stem>/ beside the model, or runs/<stem>-2, -3,
    /// ... when that one holds a run).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in the output folder from its last.safetensors.
    #[arg(long)]
    pub resume: bool,
    /// Replace the run that the output folder holds.
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Native code (`jit`) or the reference interpreter (`interp`).
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    /// Threads for large GEMMs and kernels.
    #[arg(long, default_value_t = 1, value_parser = thread_count)]
    pub threads: usize,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
    /// Train N members with init seeds seed, seed+1, ... on the same split (into
    /// <out>/member-<i>/), then score their ensemble on the held-out rows.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=64))]
    pub ensemble: Option<u32>,
    /// Data-parallel training over MPI: run under `mpirun -np N` (or `srun`); each rank
    /// trains on its shard of every batch and rank 0 writes the files (needs nnc built
    /// with `--features mpi`; docs/distributed.md).
    #[arg(long, conflicts_with = "ensemble")]
    pub distributed: bool,
    /// With --distributed: compare a hash of the parameters across ranks after every
    /// epoch (an error when they differ).
    #[arg(long, requires = "distributed")]
    pub check_params: bool,
    /// With --distributed: abort the job when a collective waits longer than this many
    /// seconds for the other ranks (a rank that died).
    #[arg(long, value_name = "SECONDS", default_value_t = 300, requires = "distributed")]
    pub collective_timeout: u64,
    /// With --distributed: sum each gradient bucket, blocking, as soon as it is complete
    /// instead of overlapping the sums with the rest of the backward pass (the same
    /// arithmetic; for measuring what the overlap hides).
    #[arg(long, requires = "distributed")]
    pub no_overlap: bool,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let backend = a.backend.run();
    if !a.distributed {
        return run_rank(a, opts, backend, 0, None);
    }
    distributed(a, opts, backend)
}

/// `--distributed`: MPI first (every rank compiles the model itself); only rank 0 prints.
#[cfg(feature = "mpi")]
fn distributed(a: Args, opts: RenderOptions, backend: crate::runtime::backend::Backend) -> i32 {
    let world = match crate::dist::mpi::init() {
        Ok(w) => w,
        Err(m) => return fail(&m),
    };
    let rank = world.rank();
    let timeout = std::time::Duration::from_secs(a.collective_timeout.max(1));
    let comm = world.communicator(Some(timeout), Box::new(|m: &str| errln!("error: {m}")));
    let dist = crate::train::trainer::Distributed {
        comm: Box::new(comm),
        check_params: a.check_params,
        overlap: !a.no_overlap,
    };
    let code = run_rank(a, opts, backend, rank, Some(dist));
    // An error on one rank ends every rank, rather than leaving them waiting in a
    // collective.
    if code != 0 && code != 130 {
        world.abort(code);
    }
    code
}

#[cfg(not(feature = "mpi"))]
fn distributed(_a: Args, _opts: RenderOptions, _backend: crate::runtime::backend::Backend) -> i32 {
    super::ranks::no_mpi()
}

fn run_rank(
    a: Args,
    opts: RenderOptions,
    backend: crate::runtime::backend::Backend,
    rank: usize,
    dist: Option<crate::train::trainer::Distributed>,
) -> i32 {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut p = match compile_with_sets(&a.file, &a.set, a.model.as_deref(), opts) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let dir = a.file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let stem = a.file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
    let out_dir = match output_folder(
        &dir,
        &stem,
        a.out,
        &crate::train::trainer::holds_run,
        a.resume || a.force,
        ("a run (last.safetensors, metrics.csv)", "--resume to continue it, --force to replace it"),
    ) {
        Ok(d) => d,
        Err(m) => return fail(&m),
    };
    let source = std::fs::read_to_string(&a.file).unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let topts = crate::train::trainer::TrainOptions {
        out_dir: out_dir.clone(),
        resume: a.resume,
        backend,
        threads: a.threads,
        source,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (name, file) = (p.name.clone(), a.file.clone());
    let mut on_event = |e: crate::train::trainer::Event| {
        match e {
            _ if rank != 0 => {}
            crate::train::trainer::Event::Start { resumed, out_dir } => {
                errln!("training {name} from {} ({} backend) -> {}", file.display(), backend.name(), out_dir.display());
                if let Some((epoch, step)) = resumed {
                    errln!("resuming from epoch {epoch}, step {step}");
                }
            }
            crate::train::trainer::Event::Batch { epoch, batch, batches, loss, lr } => {
                bar.set_length(batches as u64);
                bar.set_position(batch as u64);
                bar.set_prefix(format!("epoch {}", epoch + 1));
                bar.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
            }
            crate::train::trainer::Event::Epoch(r) => {
                // One format per column: the learning rate always in exponent form. The
                // per-parameter norms of `log_grad_norms` go to metrics.csv only.
                use crate::train::session::{GRAD_NORM_PREFIX, UPDATE_RATIO_PREFIX};
                let parts: Vec<String> = r
                    .metrics
                    .iter()
                    .filter(|(k, _)| !k.starts_with(GRAD_NORM_PREFIX) && !k.starts_with(UPDATE_RATIO_PREFIX))
                    .map(|(k, v)| match k.as_str() {
                        "lr" => format!("lr {v:.3e}"),
                        "samples_per_sec" => format!("samples_per_sec {v:.0}"),
                        _ => format!("{k} {}", crate::metrics::format_short(*v)),
                    })
                    .collect();
                bar.suspend(|| errln!("{}", parts.join("  ")));
            }
        }
        crate::train::session::Next::Continue
    };
    if let Some(n) = a.ensemble {
        // Every member on the first member's split: the split seed stays put while the
        // init seed moves.
        p.settings.split_seed = Some(p.settings.split_seed() as i64);
        let mut lasts = Vec::new();
        for i in 0..n {
            let mut m = p.clone();
            m.settings.seed = p.settings.seed + i64::from(i);
            let mut o = topts.clone();
            o.out_dir = out_dir.join(format!("member-{}", i + 1));
            errln!("member {} of {n}: seed {}", i + 1, m.settings.seed);
            match crate::train::trainer::train(&m, &dir, &o, &stop, &mut on_event) {
                Ok(r) if r.interrupted => {
                    bar.finish_and_clear();
                    errln!("interrupted: saved {}", o.out_dir.join("last.safetensors").display());
                    return 130;
                }
                Ok(r) => {
                    bar.finish_and_clear();
                    outln!("member {}: {}", i + 1, crate::metrics::format_pairs(&r.test));
                    lasts.push(o.out_dir.join("last.safetensors"));
                }
                Err(e) => return fail_with(&e, opts),
            }
        }
        return match crate::train::trainer::evaluate_ensemble(
            &p,
            &dir,
            &lasts,
            backend,
            &topts.source,
            crate::train::trainer::EvalData::HeldOut,
        ) {
            Ok((_, ens)) => {
                for note in &ens.notes {
                    errln!("note: {note}");
                }
                outln!("ensemble of {n}: {}", crate::metrics::format_pairs(&ens.shown));
                0
            }
            Err(m) => fail(&m),
        };
    }
    let result = crate::train::trainer::train_with(&p, &dir, &topts, &stop, &mut on_event, dist);
    bar.finish_and_clear();
    if rank != 0 {
        // Rank 0 reports for the job.
        return match result {
            Ok(r) if r.interrupted => 130,
            Ok(_) => 0,
            Err(m) => fail(&format!("rank {rank}: {m}")),
        };
    }
    match result {
        Ok(r) => {
            if r.interrupted {
                errln!("interrupted: saved {}", out_dir.join("last.safetensors").display());
                return 130;
            }
            if r.already_finished {
                errln!(
                    "the run had already finished (epoch {} of {}): nothing to train",
                    r.epochs_run,
                    p.settings.epochs
                );
            }
            if r.stopped_early {
                errln!(
                    "stopped early after epoch {}; restored the best epoch ({})",
                    r.epochs_run,
                    r.best_epoch.unwrap_or(0)
                );
            }
            if let Some(b) = r.best_epoch {
                let why = if r.best_by.starts_with("train_") { ", no validation split" } else { "" };
                let word = if p.settings.maximize() { "highest" } else { "lowest" };
                errln!(
                    "best epoch: {b} ({word} {} {}{why}), saved as best.safetensors",
                    r.best_by,
                    crate::metrics::format_short(r.best_value)
                );
            }
            if !r.already_finished {
                errln!(
                    "trained {} epoch{} in {:.1} s; files: {}",
                    r.epochs_run,
                    if r.epochs_run == 1 { "" } else { "s" },
                    r.seconds,
                    r.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
                );
            }
            for n in &r.notes {
                errln!("note: {n}");
            }
            if let Some(c) = &r.confusion {
                outln!("confusion matrix (rows: true class, columns: predicted):\n{c}");
            }
            outs!("{}", crate::metrics::format_lines(&r.test));
            0
        }
        Err(e) => fail_with(&e, opts),
    }
}
