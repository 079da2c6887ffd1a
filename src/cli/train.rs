//! `nnc train`.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    pub file: PathBuf,
    /// Override a train setting, e.g. `--set epochs=5 --set lr=0.01`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Output folder (default: runs/<file stem>/ beside the model).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from <out>/last.safetensors.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    /// Threads for large GEMMs.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long)]
    pub model: Option<String>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, set, out, resume, backend, threads, model } = a;
    train_command(&file, &set, out, resume, backend == Backend::Jit, threads, model.as_deref(), opts)
}

#[allow(clippy::too_many_arguments)]
fn train_command(
    file: &std::path::Path,
    sets: &[String],
    out: Option<PathBuf>,
    resume: bool,
    jit: bool,
    threads: usize,
    model: Option<&str>,
    opts: RenderOptions,
) -> i32 {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let Some(c) = compile(file, opts) else { return 1 };
    let mut p = match pick(&c, model) {
        Ok(p) => p.clone(),
        Err(m) => return fail(&m),
    };
    if let Err(m) = apply_sets(&mut p, sets) {
        errln!("error: {m}");
        return 2;
    }
    let dir = file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let stem = file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
    let out_dir = out.unwrap_or_else(|| dir.join("runs").join(&stem));
    let source = std::fs::read_to_string(file).unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    if threads > 1 {
        let _ = rayon_threads(threads);
    }
    let topts = crate::train::trainer::TrainOptions { out_dir: out_dir.clone(), resume, jit, threads, source };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut on_event = |e: crate::train::trainer::Event| match e {
        crate::train::trainer::Event::Batch { epoch, batch, batches, loss, lr } => {
            bar.set_length(batches as u64);
            bar.set_position(batch as u64);
            bar.set_prefix(format!("epoch {}", epoch + 1));
            bar.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
        }
        crate::train::trainer::Event::Epoch(r) => {
            let parts: Vec<String> =
                r.metrics.iter().map(|(k, v)| format!("{k} {}", crate::metrics::format_short(*v))).collect();
            bar.suspend(|| errln!("{}", parts.join("  ")));
        }
    };
    errln!(
        "training {} from {} ({} backend) -> {}",
        p.name,
        file.display(),
        if jit { "jit" } else { "interp" },
        out_dir.display()
    );
    let result = crate::train::trainer::train(&p, &dir, &topts, &stop, &mut on_event);
    bar.finish_and_clear();
    match result {
        Ok(r) => {
            if r.interrupted {
                errln!("interrupted: saved {}", out_dir.join("last.safetensors").display());
                return 130;
            }
            if r.stopped_early {
                errln!(
                    "stopped early after epoch {}; restored the best epoch ({})",
                    r.epochs_run,
                    r.best_epoch.unwrap_or(0)
                );
            }
            errln!(
                "trained {} epochs in {:.1} s; files: {}",
                r.epochs_run,
                r.seconds,
                r.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
            );
            if let Some(c) = &r.confusion {
                outln!("confusion matrix (rows: true class, columns: predicted):\n{c}");
            }
            outs!("{}", crate::metrics::format_lines(&r.test));
            0
        }
        Err(m) => fail(&m),
    }
}
