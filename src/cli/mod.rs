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

mod bench;
mod build_lib;
mod check;
mod compare;
mod completions;
mod cv;
mod eval;
mod export;
mod grad;
mod gradcheck;
mod init;
mod ir_stage;
mod man;
mod params;
mod plan;
mod predict;
mod prune;
mod quantize;
mod ranks;
mod train;
mod tune;

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

impl Backend {
    /// The runtime's backend this flag names.
    fn run(self) -> crate::runtime::backend::Backend {
        match self {
            Backend::Jit => crate::runtime::backend::Backend::Jit,
            Backend::Interp => crate::runtime::backend::Backend::Interpreter,
        }
    }
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
    Check(check::Args),
    /// Print a stage of the compilation.
    Ir(ir_stage::Args),
    /// List every parameter and state: name, shape, initializer, element count.
    Params(params::Args),
    /// Write every parameter and state, initialized by its initializer.
    Init(init::Args),
    /// Run forward and backward: write `loss`, every output and `grad.<param>`.
    Grad(grad::Args),
    /// Run the eval graph: write every output.
    Predict(predict::Args),
    /// Write the eval graph and a checkpoint as an ONNX model (opset 18, a dynamic batch).
    Export(export::Args),
    /// Train a model with its `train` block: the main job.
    Train(train::Args),
    /// Search hyperparameters (train settings and model arguments): grid, random or
    /// Bayesian (TPE), with pruning of bad trials.
    Tune(tune::Args),
    /// Cross-validate the model's train recipe: K folds, mean and spread of every metric.
    Cv(cv::Args),
    /// Compare two models on the same folds or the same test split, with a significance
    /// test, their size, work and speed.
    Compare(compare::Args),
    /// Metrics of a checkpoint on the test split (or on a data file).
    Eval(eval::Args),
    /// Prune a checkpoint's smallest weights (magnitude, global or per layer, or whole
    /// rows or channels), fine-tune with the pruned weights kept at zero, and score it.
    Prune(prune::Args),
    /// Quantize a checkpoint to int8 (weights per channel, activations calibrated on
    /// training rows) and score it: a checkpoint 4x smaller in its weights.
    Quantize(quantize::Args),
    /// Print the buffer plan of the training step.
    Plan(plan::Args),
    /// Compile the training step and time it on synthetic inputs.
    Bench(bench::Args),
    /// Compile a checkpoint's eval graph ahead of time into a native library with a C
    /// API (`lib<name>.so`, `lib<name>.a`, `<name>.h`): docs/build.md.
    Build(build_lib::Args),
    /// Compare analytic gradients with central differences in f64.
    Gradcheck(gradcheck::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Print the manual page (roff) of nnc or of one command: `nnc man train | man -l -`.
    Man(man::Args),
}

/// `--eps`, `--tol`: a number above 0 and finite.
fn positive_finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("expected a positive finite number, found `{s}`")),
    }
}

/// `--threads`: 1 up to the CPUs this process may use.
fn thread_count(s: &str) -> Result<usize, String> {
    let cpus = std::thread::available_parallelism().map(std::num::NonZeroUsize::get).unwrap_or(1);
    match s.parse::<usize>() {
        Ok(n) if (1..=cpus).contains(&n) => Ok(n),
        _ => Err(format!("expected a thread count from 1 to {cpus} (the CPUs available), found `{s}`")),
    }
}

/// `--steps`, `--coords`, `--batch` of the checks: 1 to a million.
fn count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to 1000000, found `{s}`")),
    }
}

/// Every command and argument without a one-line description in `--help`
/// (`command --arg`), for the test that keeps the help complete.
pub fn undocumented_args() -> Vec<String> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut out = Vec::new();
    for sub in cmd.get_subcommands() {
        if sub.get_about().is_none() {
            out.push(sub.get_name().to_string());
        }
        for a in sub.get_arguments() {
            let id = a.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if a.get_help().is_none() {
                out.push(format!(
                    "{} {}",
                    sub.get_name(),
                    a.get_long().map(|l| format!("--{l}")).unwrap_or_else(|| id.to_uppercase())
                ));
            }
        }
    }
    out
}

/// The names of the commands and of each one's long options, for the test that checks
/// the README's command table against the CLI.
pub fn command_options() -> Vec<(String, Vec<String>)> {
    use clap::CommandFactory;
    Cli::command()
        .get_subcommands()
        .map(|c| {
            let longs =
                c.get_arguments().filter_map(|a| a.get_long().map(str::to_string)).filter(|l| l != "help").collect();
            (c.get_name().to_string(), longs)
        })
        .collect()
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
        Command::Check(a) => check::run(a, opts),
        Command::Ir(a) => ir_stage::run(a, opts),
        Command::Params(a) => params::run(a, opts),
        Command::Init(a) => init::run(a, opts),
        Command::Grad(a) => grad::run(a, opts),
        Command::Predict(a) => predict::run(a, opts),
        Command::Export(a) => export::run(a, opts),
        Command::Train(a) => train::run(a, opts),
        Command::Eval(a) => eval::run(a, opts),
        Command::Prune(a) => prune::run(a, opts),
        Command::Quantize(a) => quantize::run(a, opts),
        Command::Cv(a) => cv::run(a, opts),
        Command::Tune(a) => tune::run(a, opts),
        Command::Compare(a) => compare::run(a, opts),
        Command::Plan(a) => plan::run(a, opts),
        Command::Bench(a) => bench::run(a, opts),
        Command::Build(a) => build_lib::run(a, opts),
        Command::Gradcheck(a) => gradcheck::run(a, opts),
        Command::Completions(a) => completions::run(a, opts),
        Command::Man(a) => man::run(a, opts),
    }
}

fn fail(m: &str) -> i32 {
    errln!("error: {m}");
    1
}

/// Prints an error of the library (a compile error as its diagnostics) and returns its
/// exit code.
fn fail_with(e: &crate::Error, opts: RenderOptions) -> i32 {
    match e {
        crate::Error::Compile(c) => report(c, opts),
        e => errln!("error: {e}"),
    }
    e.exit_code()
}

fn pick<'a>(c: &'a Compiled, name: Option<&str>) -> Result<&'a Program, String> {
    pipeline::pick(c, name)
}

fn run_and_write(
    g: &ir::Graph,
    params: &std::path::Path,
    inputs: &std::path::Path,
    out: &std::path::Path,
    run: crate::runtime::exec::ExecOptions,
) -> i32 {
    let mut ps = match crate::tensors::read(params) {
        Ok(t) => t,
        Err(m) => return fail(&m),
    };
    // A teacher's tensors are read from its own checkpoint.
    if let Err(m) = crate::train::teacher::fill(g, &mut ps) {
        return fail(&m);
    }
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

/// Compiles `file` with `--set key=value` pairs (`pipeline::configure`). Errors are
/// printed; the exit code is returned (1 a bad model, 2 a bad `--set`).
fn compile_with_sets(
    file: &std::path::Path,
    sets: &[String],
    model: Option<&str>,
    opts: RenderOptions,
) -> Result<Program, i32> {
    pipeline::configure(file, sets, model).map_err(|e| match e {
        pipeline::ConfigureError::Compile(e) => {
            report(&e, opts);
            1
        }
        pipeline::ConfigureError::Model(m) => fail(&m),
        pipeline::ConfigureError::Set(m) => {
            errln!("error: {m}");
            2
        }
    })
}

/// The `--set` pairs that rebuild the model a checkpoint was trained as: its model
/// arguments (`nnc.arg.<name>` metadata), and a quantization-aware recipe (which
/// changes the graphs the checkpoint runs with).
fn checkpoint_args(path: &std::path::Path) -> Vec<String> {
    match crate::train::checkpoint::read(path) {
        Ok((_, meta)) => {
            let mut sets: Vec<String> =
                meta.iter().filter_map(|(k, v)| k.strip_prefix("nnc.arg.").map(|n| format!("{n}={v}"))).collect();
            if let Some(q) = meta.get("nnc.recipe.quantize") {
                sets.push(format!("quantize={q}"));
            }
            sets
        }
        Err(_) => Vec::new(),
    }
}

/// The output folder of a command that writes a run: `explicit`, refused while it holds
/// one (`holds`) unless `replace`; else `runs/<name>` beside the model, or with a run
/// there the first of `runs/<name>-2`, `-3`, ... that holds none, so no run is replaced
/// silently. `what` and `how` complete the refusal: "holds {what}; pass {how}".
fn output_folder(
    model_dir: &std::path::Path,
    name: &str,
    explicit: Option<PathBuf>,
    holds: &dyn Fn(&std::path::Path) -> bool,
    replace: bool,
    (what, how): (&str, &str),
) -> Result<PathBuf, String> {
    if let Some(o) = explicit {
        if holds(&o) && !replace {
            return Err(format!("`{}` holds {what}; pass {how}, or choose another --out", o.display()));
        }
        return Ok(o);
    }
    let runs = model_dir.join("runs");
    let base = runs.join(name);
    if replace || !holds(&base) {
        return Ok(base);
    }
    Ok((2..).map(|i| runs.join(format!("{name}-{i}"))).find(|d| !holds(d)).unwrap_or(base))
}
