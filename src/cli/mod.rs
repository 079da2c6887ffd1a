//! The command line (clap). The only place that prints or chooses an exit code:
//! 0 success, 1 a user error (bad model), 2 bad command-line usage.

use crate::diagnostic::{render, RenderOptions};
use crate::ir::{self, print, Program};
use crate::pipeline::{self, CompileError, Compiled};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;

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
                            eprintln!(
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
                        eprintln!("error: {m}");
                        return 1;
                    }
                };
                return match pipeline::parse_source(&file.display().to_string(), &text) {
                    Ok((_, ast)) => {
                        print!("{}", crate::syntax::print::print(&ast));
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
                let graphs: Vec<&ir::Graph> = match mode {
                    ModeArg::Train => vec![&p.train],
                    ModeArg::Eval => vec![&p.eval],
                    ModeArg::Both => vec![&p.train, &p.eval],
                };
                println!("model {}", p.name);
                for g in graphs {
                    match bind_batch(g, batch) {
                        Ok(g) => print!("{}", print::print(&g)),
                        Err(m) => {
                            eprintln!("error: {m}");
                            return 1;
                        }
                    }
                }
            }
            0
        }
        Command::Params { file, batch } => {
            let Some(c) = compile(&file, opts) else { return 1 };
            for p in &c.programs {
                if let Err(m) = bind_batch(&p.train, batch) {
                    eprintln!("error: {m}");
                    return 1;
                }
                print!("{}", params_table(p));
            }
            0
        }
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
    eprint!("{}", render(&e.diagnostics, &e.sources, opts));
    let n = e.diagnostics.len();
    eprintln!("{n} error{}", if n == 1 { "" } else { "s" });
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
