//! `nnc bench`.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// Bind the batch symbol to this size.
    #[arg(long)]
    pub batch: Option<i64>,
    /// Threads for large GEMMs.
    #[arg(long, default_value_t = 1, value_parser = thread_count)]
    pub threads: usize,
    /// Timed steps (after 5 warm-up steps).
    #[arg(long, default_value_t = 50, value_parser = count)]
    pub steps: usize,
    /// Time every kernel and print the most expensive ones.
    #[arg(long)]
    pub profile: bool,
    /// With --profile: how many of the most expensive kernels to list.
    #[arg(long, default_value_t = 15, value_parser = count)]
    pub top: usize,
    /// Which step: the training step, or the eval graph as `nnc predict` runs it.
    #[arg(long, value_enum, default_value_t = RunMode::Train)]
    pub mode: RunMode,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
    /// Run each optimizer update as the epilogue of its weight gradient's GEMM
    /// (experimental; slower on the MLP workload so far).
    #[arg(long)]
    pub fuse_updates: bool,
    /// Threads for Cranelift's compile of the step's functions (default: one per core).
    #[arg(long, value_parser = thread_count)]
    pub compile_threads: Option<usize>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, batch, threads, steps, profile, top, mode, model, fuse_updates, compile_threads } = a;
    let model = model.as_deref();
    let t0 = std::time::Instant::now();
    let Some(c) = compile(&file, opts) else { return 1 };
    let t_front = t0.elapsed().as_secs_f64();
    let p = match pick(&c, model) {
        Ok(p) => p,
        Err(m) => return fail(&m),
    };
    let b = match crate::pipeline::batch_of(p, batch) {
        Ok(b) => b,
        Err(m) => return fail(&m),
    };
    let cg = crate::codegen::CodegenOptions {
        threads: threads.max(1),
        profile,
        fuse_updates,
        compile_threads: compile_threads.unwrap_or(0),
        ..Default::default()
    };
    if let Some(why) = crate::pipeline::host_stand_in(p).filter(|_| mode == RunMode::Train) {
        errln!("note: {why}");
    }
    let t = std::time::Instant::now();
    let graph = match mode {
        RunMode::Train => crate::pipeline::step_graph_timed(p, b),
        RunMode::Eval => crate::pipeline::predict_graph(p, b).map(|g| {
            let mut eval = crate::passes::Timings::default();
            eval.add("eval graph", t.elapsed().as_secs_f64());
            (g, eval)
        }),
    };
    let (graph, graph_timings) = match graph {
        Ok((g, timings)) => (Ok(g), timings),
        Err(m) => (Err(m), Default::default()),
    };
    let nodes = graph.as_ref().map_or(0, |g| g.nodes.len());
    let mut exe = match graph.and_then(|g| crate::runtime::executable::Executable::new(&g, &cg)) {
        Ok(e) => e,
        Err(m) => return fail(&m),
    };
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    if let Err(m) = synthetic_feeds(&mut exe, b) {
        return fail(&m);
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
    let flops = exe.matmul_flops();
    let what = match mode {
        RunMode::Train => format!("training step: {}", p.settings.optimizer.name),
        RunMode::Eval => "eval step, as nnc predict runs it".to_string(),
    };
    outln!("model {} ({what}, batch {b}, {threads} thread{})", p.name, if threads == 1 { "" } else { "s" });
    outln!(
        "compile: {compile_ms:.1} ms (source to native code; codegen {:.1} ms, Cranelift on {} thread{})",
        exe.compile_seconds * 1e3,
        crate::codegen::compile_threads(&cg),
        if crate::codegen::compile_threads(&cg) == 1 { "" } else { "s" }
    );
    // Where the compile time went, stage by stage (`pipeline`'s list).
    let mut front = crate::passes::Timings::default();
    front.add("parse+lower", t_front);
    let all = front.then(&graph_timings).then(&exe.timings);
    let parts: Vec<String> = all.stages().iter().map(|(n, t)| format!("{n} {:.1}", t * 1e3)).collect();
    outln!("compile stages (ms): {}", parts.join(", "));
    outln!("graph: {nodes} nodes, {} after simplify, {} kernels", exe.graph.nodes.len(), exe.schedule.kernels.len());
    let (functions, shared) = exe.functions();
    outln!(
        "kernel functions: {functions} compiled for {} kernels and epilogues ({shared} share code)",
        functions + shared
    );
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
        for &i in order.iter().take(top) {
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
