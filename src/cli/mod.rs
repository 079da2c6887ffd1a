//! The command line (clap). The only place that prints or chooses an exit code:
//! 0 success, 1 a user error (bad model), 2 bad command-line usage.

use crate::diagnostic::{render, RenderOptions};
use crate::ir::{self, print, Program};
use crate::pipeline::{self, CompileError, Compiled};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;

// Output that never panics: a closed pipe (`nnc ir big.nn | head`) is not an error.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! outs {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}
macro_rules! errs {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = write!(std::io::stderr(), $($t)*);
    }};
}

#[derive(Parser)]
#[command(name = "nnc", version, about = "nnc: a neural-network compiler for .nn models")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Colour in diagnostics.
    #[arg(long, value_enum, default_value = "auto", global = true)]
    color: Color,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Stage {
    /// The parsed syntax tree, fully parenthesized.
    Ast,
    /// The lowered IR of the train and eval graphs.
    Ir,
    /// The train graph with its backward pass (`grad.<param>` outputs).
    Grad,
    /// The training step (or, without a loss, the eval graph) after simplification:
    /// constants folded, identities applied, common subexpressions merged.
    Opt,
    /// The kernels of the training step after fusion.
    Fused,
    /// The Cranelift IR of the training step.
    Clif,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Backend {
    /// Native code from Cranelift (the default).
    Jit,
    /// The reference interpreter.
    Interp,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum RunMode {
    Train,
    Eval,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ModeArg {
    Train,
    Eval,
    Both,
}

#[derive(Subcommand)]
enum Command {
    /// Compile models and report every error; exit 0 when all are fine.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a stage of the compilation.
    Ir {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "ir")]
        stage: Stage,
        /// Which graph to print.
        #[arg(long, value_enum, default_value = "both")]
        mode: ModeArg,
        /// Bind the batch symbol to this size.
        #[arg(long)]
        batch: Option<i64>,
    },
    /// List every parameter and state: name, shape, initializer, element count.
    Params {
        file: PathBuf,
        #[arg(long)]
        batch: Option<i64>,
    },
    /// Write every parameter and state, initialized by its initializer.
    Init {
        file: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        model: Option<String>,
    },
    /// Run forward and backward: write `loss`, every output and `grad.<param>`.
    Grad {
        file: PathBuf,
        #[arg(long)]
        params: PathBuf,
        #[arg(long)]
        inputs: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "train")]
        mode: RunMode,
        /// Compute in f64 and write f64 tensors.
        #[arg(long)]
        f64: bool,
        #[arg(long, value_enum, default_value = "jit")]
        backend: Backend,
        /// Seed of the dropout masks (with step 0).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        model: Option<String>,
    },
    /// Run the eval graph: write every output.
    Predict {
        file: PathBuf,
        /// Parameters and states (an `nnc init` file or a checkpoint).
        #[arg(long, required_unless_present = "checkpoint")]
        params: Option<PathBuf>,
        /// A training checkpoint: its parameters, and its preprocessing applied to the
        /// features input first.
        #[arg(long, conflicts_with = "params")]
        checkpoint: Option<PathBuf>,
        #[arg(long)]
        inputs: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "jit")]
        backend: Backend,
        #[arg(long)]
        model: Option<String>,
    },
    /// Train a model with its `train` block: the main job.
    Train {
        file: PathBuf,
        /// Override a train setting, e.g. `--set epochs=5 --set lr=0.01`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Output folder (default: runs/<file stem>/ beside the model).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from <out>/last.safetensors.
        #[arg(long)]
        resume: bool,
        #[arg(long, value_enum, default_value = "jit")]
        backend: Backend,
        /// Threads for large GEMMs.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long)]
        model: Option<String>,
    },
    /// Metrics of a checkpoint on the test split.
    Eval {
        file: PathBuf,
        #[arg(long)]
        checkpoint: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value = "jit")]
        backend: Backend,
        #[arg(long)]
        model: Option<String>,
    },
    /// Print the buffer plan of the training step.
    Plan {
        file: PathBuf,
        #[arg(long)]
        batch: Option<i64>,
        #[arg(long)]
        model: Option<String>,
    },
    /// Compile the training step and time it on synthetic inputs.
    Bench {
        file: PathBuf,
        #[arg(long)]
        batch: Option<i64>,
        /// Threads for large GEMMs.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Timed steps (after 5 warm-up steps).
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// Time every kernel and print the most expensive ones.
        #[arg(long)]
        profile: bool,
        #[arg(long)]
        model: Option<String>,
    },
    /// Compare analytic gradients with central differences in f64.
    Gradcheck {
        file: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 1e-6)]
        eps: f64,
        #[arg(long, default_value_t = 1e-6)]
        tol: f64,
        /// Batch size of the random inputs.
        #[arg(long, default_value_t = 3)]
        batch: usize,
        /// Most coordinates checked per parameter (a seeded sample beyond that).
        #[arg(long, default_value_t = 64)]
        coords: usize,
        #[arg(long, value_enum, default_value = "train")]
        mode: RunMode,
        #[arg(long)]
        model: Option<String>,
    },
}

/// Runs the command line and returns the exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let opts = RenderOptions { color };
    match cli.command {
        Command::Check { files } => {
            let mut code = 0;
            for f in files {
                match pipeline::compile_file(&f) {
                    Ok(c) => {
                        for p in &c.programs {
                            errln!(
                                "{}: model {} ok: {} params ({} values), {} + {} ops (train + eval)",
                                f.display(),
                                p.name,
                                p.train.params.len(),
                                p.train.param_count(),
                                p.train.len(),
                                p.eval.len()
                            );
                        }
                    }
                    Err(e) => {
                        report(&e, opts);
                        code = 1;
                    }
                }
            }
            code
        }
        Command::Ir { file, stage, mode, batch } => {
            if stage == Stage::Ast {
                let text = match pipeline::read_source(&file) {
                    Ok(t) => t,
                    Err(m) => {
                        errln!("error: {m}");
                        return 1;
                    }
                };
                return match pipeline::parse_source(&file.display().to_string(), &text) {
                    Ok((_, ast)) => {
                        outs!("{}", crate::syntax::print::print(&ast));
                        0
                    }
                    Err(e) => {
                        report(&e, opts);
                        1
                    }
                };
            }
            let Some(c) = compile(&file, opts) else { return 1 };
            for p in &c.programs {
                if stage == Stage::Opt {
                    let b = match crate::pipeline::batch_of(p, batch) {
                        Ok(b) => b,
                        Err(m) => return fail(&m),
                    };
                    let g = if p.train.loss.is_some() {
                        crate::pipeline::step_graph(p, b)
                    } else {
                        crate::runtime::executable::concrete(&p.eval, b)
                    };
                    match g {
                        Ok(g) => {
                            let s = crate::simplify::simplify(&g);
                            outln!("model {} ({} nodes simplified to {}, batch {b})", p.name, g.len(), s.len());
                            outs!("{}", print::print(&s));
                        }
                        Err(m) => return fail(&m),
                    }
                    continue;
                }
                if stage == Stage::Fused || stage == Stage::Clif {
                    let b = match crate::pipeline::batch_of(p, batch) {
                        Ok(b) => b,
                        Err(m) => return fail(&m),
                    };
                    let opts = crate::codegen::CodegenOptions {
                        keep_clif: stage == Stage::Clif,
                        threads: 1,
                        ..Default::default()
                    };
                    let g = if p.train.loss.is_some() {
                        crate::pipeline::step_graph(p, b)
                    } else {
                        crate::runtime::executable::concrete(&p.eval, b)
                    };
                    let exe = match g.and_then(|g| crate::runtime::executable::Executable::new(&g, &opts)) {
                        Ok(e) => e,
                        Err(m) => return fail(&m),
                    };
                    let what = if p.train.loss.is_some() { "training step" } else { "eval graph" };
                    outln!("model {} ({what}, batch {b})", p.name);
                    if stage == Stage::Clif {
                        outs!("{}", exe.clif());
                    } else {
                        for (i, k) in exe.schedule.kernels.iter().enumerate() {
                            outln!("  k{i}: {}", crate::fusion::describe(&exe.graph, &exe.schedule, k));
                        }
                    }
                    continue;
                }
                if stage == Stage::Grad {
                    outln!("model {}", p.name);
                    if p.train.loss.is_none() {
                        return fail(&format!("model `{}` has no `loss` to differentiate", p.name));
                    }
                    let g = match crate::autodiff::grad_program(&p.train) {
                        Ok(gr) => gr.graph,
                        Err(m) => return fail(&format!("internal compiler error: {m}")),
                    };
                    match bind_batch(&g, batch) {
                        Ok(g) => outs!("{}", print::print(&g)),
                        Err(m) => return fail(&m),
                    }
                    continue;
                }
                let graphs: Vec<&ir::Graph> = match mode {
                    ModeArg::Train => vec![&p.train],
                    ModeArg::Eval => vec![&p.eval],
                    ModeArg::Both => vec![&p.train, &p.eval],
                };
                outln!("model {}", p.name);
                for g in graphs {
                    match bind_batch(g, batch) {
                        Ok(g) => outs!("{}", print::print(&g)),
                        Err(m) => {
                            errln!("error: {m}");
                            return 1;
                        }
                    }
                }
            }
            0
        }
        Command::Init { file, seed, out, model } => {
            let Some(c) = compile(&file, opts) else { return 1 };
            let p = match pick(&c, model.as_deref()) {
                Ok(p) => p,
                Err(m) => return fail(&m),
            };
            let (params, states) = crate::runtime::init::init_all(&p.train, seed);
            let mut map = crate::tensors::TensorMap::new();
            for (d, v) in p.train.params.iter().zip(params) {
                map.insert(
                    d.name.clone(),
                    crate::tensors::HostTensor::f32(d.shape.iter().map(|&x| x as usize).collect(), v),
                );
            }
            for (d, v) in p.train.states.iter().zip(states) {
                map.insert(
                    d.name.clone(),
                    crate::tensors::HostTensor::f32(d.shape.iter().map(|&x| x as usize).collect(), v),
                );
            }
            let meta = std::collections::BTreeMap::from([
                ("model".to_string(), p.name.clone()),
                ("seed".to_string(), seed.to_string()),
            ]);
            match crate::tensors::write(&out, &map, Some(meta)) {
                Ok(()) => {
                    errln!("wrote {} tensors to {}", map.len(), out.display());
                    0
                }
                Err(m) => fail(&m),
            }
        }
        Command::Grad { file, params, inputs, out, mode, f64, backend, seed, model } => {
            let Some(c) = compile(&file, opts) else { return 1 };
            let p = match pick(&c, model.as_deref()) {
                Ok(p) => p,
                Err(m) => return fail(&m),
            };
            let g = if mode == RunMode::Train { &p.train } else { &p.eval };
            if g.loss.is_none() {
                return fail(&format!("model `{}` has no `loss` to differentiate", p.name));
            }
            let graph = match crate::autodiff::grad_program(g) {
                Ok(gr) => gr.graph,
                Err(m) => return fail(&format!("internal compiler error: {m}")),
            };
            if f64 && backend == Backend::Jit {
                return fail("--f64 runs in the interpreter: add --backend interp");
            }
            let run = crate::runtime::exec::ExecOptions { f64, seed, step: 0, jit: backend == Backend::Jit };
            run_and_write(&graph, &params, &inputs, &out, run)
        }
        Command::Predict { file, params, checkpoint, inputs, out, backend, model } => {
            let Some(c) = compile(&file, opts) else { return 1 };
            let p = match pick(&c, model.as_deref()) {
                Ok(p) => p,
                Err(m) => return fail(&m),
            };
            let mut g = p.eval.clone();
            // predict returns outputs only: a loss may need labels the caller lacks.
            g.loss = None;
            let g = crate::simplify::drop_unused_inputs(&crate::simplify::dead_code(&g));
            let run = crate::runtime::exec::ExecOptions { jit: backend == Backend::Jit, ..Default::default() };
            let Some(ck) = checkpoint else {
                return run_and_write(&g, params.as_deref().unwrap_or(std::path::Path::new("")), &inputs, &out, run);
            };
            // Apply the checkpoint's preprocessing to the features input, then run.
            let mut ins = match crate::tensors::read(&inputs) {
                Ok(t) => t,
                Err(m) => return fail(&m),
            };
            let specs = match crate::train::trainer::input_specs(&p.train) {
                Ok(s) => s,
                Err(m) => return fail(&m),
            };
            if let Some(spec) = crate::data::preprocess_input(&specs) {
                let pre = match crate::train::trainer::checkpoint_preprocessor(&ck, &spec.name) {
                    Ok(pp) => pp,
                    Err(m) => return fail(&m),
                };
                if let Some(t) = ins.get_mut(&spec.name) {
                    if let crate::tensors::HostData::F32(v) | crate::tensors::HostData::F64(v) = &mut t.data {
                        let mut f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                        if let Err(m) = pre.apply_values(&mut f) {
                            return fail(&m);
                        }
                        *v = f.into_iter().map(f64::from).collect();
                    }
                }
            }
            let ps = match crate::tensors::read(&ck) {
                Ok(t) => t,
                Err(m) => return fail(&m),
            };
            match crate::runtime::exec::run_named(&g, &ps, &ins, run)
                .and_then(|r| crate::tensors::write(&out, &r, None).map(|_| r.len()))
            {
                Ok(n) => {
                    errln!("wrote {n} tensors to {}", out.display());
                    0
                }
                Err(m) => fail(&m),
            }
        }
        Command::Gradcheck { file, seed, eps, tol, batch, coords, mode, model } => {
            let Some(c) = compile(&file, opts) else { return 1 };
            let p = match pick(&c, model.as_deref()) {
                Ok(p) => p,
                Err(m) => return fail(&m),
            };
            let g = if mode == RunMode::Train { &p.train } else { &p.eval };
            let o =
                crate::gradcheck::GradcheckOptions { seed, eps, tol, batch, max_coords: coords, ..Default::default() };
            match crate::gradcheck::gradcheck(g, &o) {
                Ok(reports) => {
                    outs!("{}", crate::gradcheck::table(&reports, tol));
                    let worst = reports.iter().map(|r| r.max_rel_err).fold(0.0, f64::max);
                    let checked: usize = reports.iter().map(|r| r.checked).sum();
                    let kinks: usize = reports.iter().map(|r| r.kinks).sum();
                    outln!("checked {checked} coordinates ({kinks} skipped at kinks); max relative error {worst:.3e} (tolerance {tol:e})");
                    if worst > tol || worst.is_nan() {
                        errln!("error: gradient check failed");
                        1
                    } else {
                        0
                    }
                }
                Err(m) => fail(&m),
            }
        }
        Command::Plan { file, batch, model } => {
            let Some(c) = compile(&file, opts) else { return 1 };
            let p = match pick(&c, model.as_deref()) {
                Ok(p) => p,
                Err(m) => return fail(&m),
            };
            let b = match crate::pipeline::batch_of(p, batch) {
                Ok(b) => b,
                Err(m) => return fail(&m),
            };
            let exe = match crate::pipeline::step_graph(p, b)
                .and_then(|g| crate::runtime::executable::Executable::new(&g, &Default::default()))
            {
                Ok(e) => e,
                Err(m) => return fail(&m),
            };
            outs!("{}", plan_table(&exe, &p.name, b));
            0
        }
        Command::Train { file, set, out, resume, backend, threads, model } => {
            train_command(&file, &set, out, resume, backend == Backend::Jit, threads, model.as_deref(), opts)
        }
        Command::Eval { file, checkpoint, json, backend, model } => {
            let Some(c) = compile(&file, opts) else { return 1 };
            let p = match pick(&c, model.as_deref()) {
                Ok(p) => p,
                Err(m) => return fail(&m),
            };
            let dir = file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
            match crate::train::trainer::evaluate(p, &dir, &checkpoint, backend == Backend::Jit) {
                Ok((m, confusion)) => {
                    if json {
                        outln!("{}", crate::metrics::to_json(&m));
                    } else {
                        outs!("{}", crate::metrics::format_lines(&m));
                        if let Some(c) = confusion {
                            outln!("confusion matrix (rows: true class, columns: predicted):\n{c}");
                        }
                    }
                    0
                }
                Err(m) => fail(&m),
            }
        }
        Command::Bench { file, batch, threads, steps, profile, model } => {
            bench(&file, batch, threads, steps, profile, model.as_deref(), opts)
        }
        Command::Params { file, batch } => {
            let Some(c) = compile(&file, opts) else { return 1 };
            for p in &c.programs {
                if let Err(m) = bind_batch(&p.train, batch) {
                    errln!("error: {m}");
                    return 1;
                }
                outs!("{}", params_table(p));
            }
            0
        }
    }
}

fn fail(m: &str) -> i32 {
    errln!("error: {m}");
    1
}

/// The model named `name`, or the only model of the file.
fn pick<'a>(c: &'a Compiled, name: Option<&str>) -> Result<&'a Program, String> {
    match name {
        Some(n) => c.programs.iter().find(|p| p.name == n).ok_or_else(|| {
            let names: Vec<&str> = c.programs.iter().map(|p| p.name.as_str()).collect();
            format!("no model named `{n}`; the file has: {}", names.join(", "))
        }),
        None if c.programs.len() == 1 => Ok(&c.programs[0]),
        None => {
            let names: Vec<&str> = c.programs.iter().map(|p| p.name.as_str()).collect();
            Err(format!("the file has several models ({}); choose one with --model", names.join(", ")))
        }
    }
}

fn run_and_write(
    g: &ir::Graph,
    params: &std::path::Path,
    inputs: &std::path::Path,
    out: &std::path::Path,
    run: crate::runtime::exec::ExecOptions,
) -> i32 {
    let ps = match crate::tensors::read(params) {
        Ok(t) => t,
        Err(m) => return fail(&m),
    };
    let ins = match crate::tensors::read(inputs) {
        Ok(t) => t,
        Err(m) => return fail(&m),
    };
    let result = match crate::runtime::exec::run_named(g, &ps, &ins, run) {
        Ok(r) => r,
        Err(m) => return fail(&m),
    };
    match crate::tensors::write(out, &result, None) {
        Ok(()) => {
            errln!("wrote {} tensors to {}", result.len(), out.display());
            0
        }
        Err(m) => fail(&m),
    }
}

fn compile(file: &std::path::Path, opts: RenderOptions) -> Option<Compiled> {
    match pipeline::compile_file(file) {
        Ok(c) => Some(c),
        Err(e) => {
            report(&e, opts);
            None
        }
    }
}

fn report(e: &CompileError, opts: RenderOptions) {
    errs!("{}", render(&e.diagnostics, &e.sources, opts));
    let n = e.diagnostics.len();
    errln!("{n} error{}", if n == 1 { "" } else { "s" });
}

fn bind_batch(g: &ir::Graph, batch: Option<i64>) -> Result<ir::Graph, String> {
    match batch {
        None => Ok(g.clone()),
        Some(n) => match pipeline::batch_symbol(g) {
            Some(sym) => ir::bind_symbol(g, &sym, n),
            None => Ok(g.clone()),
        },
    }
}

/// Applies `--set key=value` overrides to a program's train settings.
fn apply_sets(p: &mut Program, sets: &[String]) -> Result<(), String> {
    for s in sets {
        let (k, v) = s.split_once('=').ok_or_else(|| format!("--set expects key=value, found `{s}`"))?;
        let id = crate::diagnostic::FileId(0);
        let expr = crate::syntax::parse_expr(v.trim(), id).map_err(|d| format!("--set {s}: {}", d.message))?;
        let key = crate::syntax::ast::Ident { name: k.trim().to_string(), span: crate::diagnostic::Span::default() };
        crate::settings::apply(&mut p.settings, &key, &expr).map_err(|d| {
            let help = d.help.map(|h| format!(" ({h})")).unwrap_or_default();
            format!("--set {s}: {}{help}", d.message)
        })?;
        p.settings.present = true;
    }
    crate::settings::cross_check(&p.settings, crate::diagnostic::Span::default()).map_err(|d| d.message)
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

fn bench(
    file: &std::path::Path,
    batch: Option<i64>,
    threads: usize,
    steps: usize,
    profile: bool,
    model: Option<&str>,
    opts: RenderOptions,
) -> i32 {
    let t0 = std::time::Instant::now();
    let Some(c) = compile(file, opts) else { return 1 };
    let p = match pick(&c, model) {
        Ok(p) => p,
        Err(m) => return fail(&m),
    };
    let b = match crate::pipeline::batch_of(p, batch) {
        Ok(b) => b,
        Err(m) => return fail(&m),
    };
    let cg = crate::codegen::CodegenOptions { threads: threads.max(1), profile, ..Default::default() };
    let mut exe =
        match crate::pipeline::step_graph(p, b).and_then(|g| crate::runtime::executable::Executable::new(&g, &cg)) {
            Ok(e) => e,
            Err(m) => return fail(&m),
        };
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    if let Err(m) = synthetic_feeds(&mut exe, b) {
        return fail(&m);
    }
    if threads > 1 {
        let _ = rayon_threads(threads);
    }
    for s in 0..5 {
        exe.run(0, s);
    }
    let mut times = Vec::with_capacity(steps);
    for s in 0..steps.max(1) {
        let t = std::time::Instant::now();
        exe.run(0, 5 + s as u64);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let flops: usize = exe
        .schedule
        .kernels
        .iter()
        .map(|k| match k {
            crate::fusion::Kernel::MatMul { batch, m, k, n, .. } => 2 * batch * m * k * n,
            _ => 0,
        })
        .sum();
    outln!(
        "model {} (training step: {}, batch {b}, {threads} thread{})",
        p.name,
        p.settings.optimizer.name,
        if threads == 1 { "" } else { "s" }
    );
    outln!("compile: {compile_ms:.1} ms (source to native code; codegen {:.1} ms)", exe.compile_seconds * 1e3);
    outln!(
        "step: median {median:.3} ms, min {:.3} ms, max {:.3} ms over {} steps",
        times[0],
        times[times.len() - 1],
        times.len()
    );
    outln!(
        "matmul work: {:.1} MFLOP per step, {:.1} GFLOP/s at the median",
        flops as f64 / 1e6,
        flops as f64 / median / 1e6
    );
    outln!(
        "arena: {:.2} MB, parameters and states: {:.2} MB",
        exe.plan.arena_len as f64 * 4e-6,
        exe.plan.persistent_len as f64 * 4e-6
    );
    if profile {
        let times = exe.kernel_times();
        let total: u64 = times.iter().sum();
        let runs = (steps.max(1) + 5) as f64;
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(times[i]));
        // Totals by kind: gemm, elementwise, reduce, and each host routine.
        let mut kinds: Vec<(String, u64, usize)> = Vec::new();
        for (i, k) in exe.schedule.kernels.iter().enumerate() {
            let d = crate::fusion::describe(&exe.graph, &exe.schedule, k);
            let mut words = d.split_whitespace();
            let mut kind = words.next().unwrap_or("?").to_string();
            if kind == "host" {
                kind = format!("host {}", words.next().unwrap_or("?"));
            }
            match kinds.iter_mut().find(|e| e.0 == kind) {
                Some(e) => {
                    e.1 += times[i];
                    e.2 += 1;
                }
                None => kinds.push((kind, times[i], 1)),
            }
        }
        kinds.sort_by_key(|e| std::cmp::Reverse(e.1));
        outln!("time by kind (ms per step, share, kernels):");
        for (kind, t, n) in &kinds {
            outln!(
                "  {:>8.3} {:>5.1}%  {n:>4}  {kind}",
                *t as f64 / runs / 1e6,
                100.0 * *t as f64 / total.max(1) as f64
            );
        }
        outln!("kernels by time (ms per step, share):");
        for &i in order.iter().take(15) {
            let k = &exe.schedule.kernels[i];
            let d = crate::fusion::describe(&exe.graph, &exe.schedule, k);
            outln!(
                "  {:>8.3} {:>5.1}%  k{i}: {}",
                times[i] as f64 / runs / 1e6,
                100.0 * times[i] as f64 / total.max(1) as f64,
                d
            );
        }
    }
    0
}

/// Sets up rayon's global pool once (GEMMs and kernels split across threads), with the
/// calling thread as one of its `n` threads: the steps it runs then split their work with
/// `rayon::join` on its own deque, which allocates nothing (but for crossbeam's rare
/// epoch garbage bags) and wakes no other thread to wait on (from outside the pool, each
/// split is a job injected into a shared queue that allocates a block every 63 jobs, and
/// the caller sleeps until a worker ran it).
fn rayon_threads(n: usize) -> Result<(), String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .use_current_thread()
        .start_handler(|_| crate::codegen::fp::flush_denormals_in_this_thread())
        .build_global()
        .map_err(|e| e.to_string())
}

/// Random inputs (ids within their range), initialized parameters, hyper inputs.
fn synthetic_feeds(exe: &mut crate::runtime::executable::Executable, batch: usize) -> Result<(), String> {
    let g = exe.graph.clone();
    let (params, states) = crate::runtime::init::init_all(&g, 0);
    for (i, p) in params.iter().enumerate() {
        exe.set_param(i, &p.iter().map(|&x| x as f32).collect::<Vec<_>>())?;
    }
    for (i, s) in states.iter().enumerate() {
        exe.set_state(i, &s.iter().map(|&x| x as f32).collect::<Vec<_>>())?;
    }
    let inputs = crate::gradcheck::random_inputs::<f32>(&g, batch, 0)?;
    for (i, t) in inputs.iter().enumerate() {
        let name = &g.inputs[i].name;
        if name.starts_with("hyper.") {
            exe.set_input_f32(i, &[if name == "hyper.lr" { 1e-3 } else { 0.5 }])?;
            continue;
        }
        match &t.data {
            crate::runtime::interp::Data::F(d) => exe.set_input_f32(i, d)?,
            crate::runtime::interp::Data::I(d) => exe.set_input_i32(i, d)?,
        }
    }
    Ok(())
}

/// The `nnc plan` table.
fn plan_table(exe: &crate::runtime::executable::Executable, name: &str, batch: usize) -> String {
    use crate::buffers::Region;
    let g = &exe.graph;
    let plan = &exe.plan;
    let mut out = format!("model {name} (training step, batch {batch}): {} kernels\n", exe.schedule.kernels.len());
    out.push_str(&format!("{:<8} {:<14} {:>10} {:>10} {:>9}  {}\n", "value", "op", "offset", "bytes", "live", "type"));
    for (i, slot) in plan.slots.iter().enumerate() {
        let v = crate::ir::Value::from_u32(i as u32);
        let Some(slot) = slot else { continue };
        if slot.region != Region::Arena || exe.schedule.storage[i] != v {
            continue;
        }
        let live = match (plan.live[i], plan.in_place_of[i]) {
            (Some((a, b)), _) => format!("{a}..{b}"),
            (None, Some(x)) => format!("in {x}"),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "{:<8} {:<14} {:>10} {:>10} {:>9}  {}\n",
            v.to_string(),
            g.nodes[v].op.name(),
            slot.offset * 4,
            slot.len * 4,
            live,
            g.ty(v).display(&g.symbols)
        ));
    }
    let param_bytes: usize = plan.param_slots.iter().map(|s| s.len * 4).sum();
    let state_bytes: usize = plan.state_slots.iter().map(|s| s.len * 4).sum();
    out.push_str(&format!("arena: {} bytes ({:.2} MB)\n", plan.arena_len * 4, plan.arena_len as f64 * 4e-6));
    out.push_str(&format!(
        "naive (every value its own buffer): {} bytes ({:.2} MB)\n",
        plan.naive_bytes,
        plan.naive_bytes as f64 * 1e-6
    ));
    out.push_str(&format!("parameters: {param_bytes} bytes; gradients: computed into the arena; states and optimizer state: {state_bytes} bytes\n"));
    out.push_str(&format!(
        "updates in place: {}, copied: {}\n",
        g.params.len() + g.states.iter().filter(|s| s.update.is_some()).count() - plan.copies.len(),
        plan.copies.len()
    ));
    out
}

/// The `nnc params` table.
pub fn params_table(p: &Program) -> String {
    let g = &p.train;
    let mut rows: Vec<[String; 5]> = Vec::new();
    for d in &g.params {
        rows.push([
            d.name.clone(),
            format!("{:?}", d.shape),
            d.init.describe(),
            d.shape.iter().product::<i64>().to_string(),
            if d.decay { "yes".into() } else { "no".into() },
        ]);
    }
    for s in &g.states {
        rows.push([
            s.name.clone(),
            format!("{:?}", s.shape),
            s.init.describe(),
            s.shape.iter().product::<i64>().to_string(),
            "state".into(),
        ]);
    }
    let header = ["name", "shape", "init", "elements", "decay"];
    let mut w = header.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |r: &[String]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        )
    };
    let mut out = format!("model {}\n", p.name);
    out.push_str(&line(&header.map(String::from)));
    for r in &rows {
        out.push_str(&line(r));
    }
    let params: i64 = g.param_count();
    let states: i64 = g.states.iter().map(|s| s.shape.iter().product::<i64>()).sum();
    out.push_str(&format!(
        "total: {} parameters in {} tensors ({} bytes f32), {} state values\n",
        params,
        g.params.len(),
        params * 4,
        states
    ));
    out
}
