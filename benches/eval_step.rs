//! The JIT's eval step, as `nnc predict` compiles it, timed at given batch sizes: the
//! reference `tools/build_bench.sh` compares a library built by `nnc build` against.
//!
//! `cargo bench --bench eval_step -- FILE [BATCH...]` (default batches 1 and 256).
//! Parameters are the model's initializers (seed 0); inputs fixed pseudo-random values.

use nnc::internals::runtime::executable::Executable;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let Some(file) = args.first() else {
        eprintln!("usage: cargo bench --bench eval_step -- FILE [BATCH...]");
        return Ok(());
    };
    let batches: Vec<usize> =
        if args.len() > 1 { args[1..].iter().filter_map(|b| b.parse().ok()).collect() } else { vec![1, 256] };
    let c = nnc::internals::pipeline::compile_file(std::path::Path::new(file))
        .map_err(|_| format!("{file} does not compile"))?;
    let p = c.programs.first().ok_or("no model")?;
    for b in batches {
        let cg = nnc::internals::pipeline::predict_graph(p, b)?;
        let mut exe = Executable::new(&cg, &Default::default())?;
        let (params, states) = nnc::internals::runtime::init::init_all(&exe.graph, 0);
        for (i, v) in params.iter().enumerate() {
            exe.set_param(i, &v.iter().map(|&x| x as f32).collect::<Vec<f32>>())?;
        }
        for (i, v) in states.iter().enumerate() {
            exe.set_state(i, &v.iter().map(|&x| x as f32).collect::<Vec<f32>>())?;
        }
        let mut x: u64 = 42;
        for (i, decl) in exe.graph.inputs.clone().iter().enumerate() {
            let n: usize = decl.ty.shape.iter().map(|d| d.as_const().unwrap_or(0) as usize).product();
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
                })
                .collect();
            if decl.ty.dtype == nnc::internals::ir::DType::I32 {
                exe.set_input_i32(i, &v.iter().map(|&f| (f.abs() * 4.0) as i32).collect::<Vec<i32>>())?;
            } else {
                exe.set_input_f32(i, &v)?;
            }
        }
        for _ in 0..20 {
            exe.run(0, 0);
        }
        let mut per = 1usize;
        loop {
            let t = std::time::Instant::now();
            for _ in 0..per {
                exe.run(0, 0);
            }
            if t.elapsed().as_secs_f64() > 0.01 || per > 1_000_000 {
                break;
            }
            per *= 2;
        }
        let mut times = Vec::new();
        let t0 = std::time::Instant::now();
        while t0.elapsed().as_secs_f64() < 2.0 || times.len() < 5 {
            let t = std::time::Instant::now();
            for _ in 0..per {
                exe.run(0, 0);
            }
            times.push(t.elapsed().as_secs_f64() / per as f64);
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        println!(
            "jit batch {b}: {:.2} us per step (median of {} rounds of {per}), {:.0} rows/s",
            med * 1e6,
            times.len(),
            b as f64 / med
        );
    }
    Ok(())
}
