//! `nnc cv`: K-fold cross-validation of a model's `train` recipe.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// Number of folds (stratified for classifiers), or `loo` for leave-one-out.
    #[arg(long, default_value = "5")]
    pub folds: crate::select::cv::Folds,
    /// Override a train setting, e.g. `--set epochs=5 --set lr=0.01`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Output folder for cv.csv (default: runs/<file stem>-cv/ beside the model).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the cv.csv that the output folder holds.
    #[arg(long)]
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
    /// Spread the folds over MPI ranks: run under `mpirun -np N` (or `srun`); fold i runs
    /// on rank i mod N, rank 0 prints and writes cv.csv (needs nnc built with `--features
    /// mpi`; docs/distributed.md).
    #[arg(long)]
    pub distributed: bool,
    /// With --distributed: abort the job when a rank waits longer than this many seconds
    /// for the others (default: no limit, since a rank waits for the others' folds).
    #[arg(long, value_name = "SECONDS", requires = "distributed")]
    pub collective_timeout: Option<u64>,
}

/// With `--distributed` every rank runs its folds; rank 0 prints and writes.
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
    let dir = a.file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let stem = a.file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
    let has_cv = |d: &std::path::Path| d.join("cv.csv").exists();
    let out_dir = match output_folder(
        &dir,
        &format!("{stem}-cv"),
        a.out,
        &has_cv,
        a.force,
        ("a cv.csv", "--force to replace it"),
    ) {
        Ok(d) => d,
        Err(m) => return fail(&m),
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let k = match a.folds {
        crate::select::cv::Folds::K(k) => k.to_string(),
        crate::select::cv::Folds::LeaveOneOut => "leave-one-out".into(),
    };
    if !quiet {
        let ranks = comm.as_ref().map(|c| format!(" over {} ranks", c.size())).unwrap_or_default();
        errln!("cross-validating {} from {} ({k} folds{ranks})", p.name, a.file.display());
    }
    let mut on_fold = |f: &crate::select::cv::FoldResult| {
        if quiet {
            return;
        }
        outln!(
            "fold {}: {}  ({} train / {} held-out rows, {:.2} s)",
            f.fold,
            crate::metrics::format_pairs(&f.metrics),
            f.train_rows,
            f.test_rows,
            f.seconds
        );
    };
    let r = match crate::select::cv::cross_validate_with(
        &p,
        &dir,
        a.folds,
        a.backend.run(),
        a.threads,
        &stop,
        &mut on_fold,
        comm,
    ) {
        Ok(r) => r,
        Err(m) => return fail(&m),
    };
    if quiet {
        return 0;
    }
    let n = r.folds.len();
    for (name, mean, std) in &r.summary {
        outln!(
            "cv_{name}: {} ± {} ({n} folds)",
            crate::metrics::format_short(*mean),
            crate::metrics::format_short(*std)
        );
    }
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        return fail(&format!("cannot create `{}`: {e}", out_dir.display()));
    }
    let csv = out_dir.join("cv.csv");
    if let Err(m) = crate::tensors::write_atomic(&csv, crate::select::cv::to_csv(&r).as_bytes()) {
        return fail(&m);
    }
    for note in &r.notes {
        errln!("note: {note}");
    }
    errln!(
        "{n} folds over {} rows in {:.1} s ({} training step{} compiled); wrote {}",
        r.rows,
        r.seconds,
        r.compiled_steps,
        if r.compiled_steps == 1 { "" } else { "s" },
        csv.display()
    );
    0
}
