//! `nnc ir`: print a stage of the compilation.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// Which stage to print.
    #[arg(long, value_enum, default_value = "ir")]
    pub stage: Stage,
    /// Which graph to print.
    #[arg(long, value_enum, default_value = "both")]
    pub mode: ModeArg,
    /// Bind the batch symbol to this size.
    #[arg(long)]
    pub batch: Option<i64>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, stage, mode, batch } = a;
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
        if let Some(why) = crate::pipeline::host_stand_in(p).filter(|_| p.train.loss.is_some()) {
            if matches!(stage, Stage::Opt | Stage::Fused | Stage::Clif) {
                errln!("note: {why}");
            }
        }
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
            let opts =
                crate::codegen::CodegenOptions { keep_clif: stage == Stage::Clif, threads: 1, ..Default::default() };
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
