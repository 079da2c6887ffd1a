//! Embedding nnc in a program: compile a model from a string, train it with the
//! library API, then run the trained step's gradients and predictions yourself.
//!
//! Run: cargo run --release --example embed

use std::sync::atomic::AtomicBool;

const MODEL: &str = r#"
model Moons {
    input x: [B, 2]
    input y: i32[B]
    layer hidden = Dense(2, 16)
    layer out = Dense(16, 2)
    output logits = out(tanh(hidden(x)))
    loss = cross_entropy(logits, y)
    train { data = moons(n = 400, noise = 0.1, seed = 1)  split = [0.8, 0.2]
            optimizer = adam(lr = 0.02)  batch = 32  epochs = 60 }
}
"#;

fn main() -> Result<(), String> {
    // 1. Compile: errors come back as diagnostics to render however you like.
    let compiled = nnc::pipeline::compile_source("moons.nn", MODEL, None)
        .map_err(|e| nnc::diagnostic::render(&e.diagnostics, &e.sources, Default::default()))?;
    let mut program = compiled.programs.into_iter().next().ok_or("no model")?;
    // 2. Override settings as `--set` would.
    program.settings.epochs = 40;
    // 3. Train, watching progress through a callback. The run's files go to a folder of
    //    the system's temporary directory.
    let out_dir = std::env::temp_dir().join("nnc-embed-example");
    println!("writing the run to {}", out_dir.display());
    let opts = nnc::train::trainer::TrainOptions {
        out_dir: out_dir.clone(),
        resume: false,
        jit: true,
        threads: 1,
        source: MODEL.to_string(),
    };
    let stop = AtomicBool::new(false);
    let mut last_loss = f64::NAN;
    let report = nnc::train::trainer::train(&program, std::path::Path::new("."), &opts, &stop, &mut |e| {
        if let nnc::train::trainer::Event::Epoch(r) = e {
            last_loss = r.metrics.iter().find(|(k, _)| k == "train_loss").map(|(_, v)| *v).unwrap_or(f64::NAN);
        }
    })?;
    println!("final training loss {last_loss:.4}");
    print!("{}", nnc::metrics::format_lines(&report.test));
    // 4. The checkpoint is a safetensors file keyed by parameter names.
    let params = nnc::tensors::read(&out_dir.join("best.safetensors"))?;
    println!("checkpoint holds {} tensors, e.g. hidden.W {:?}", params.len(), params["hidden.W"].shape);
    // 5. Predictions: the eval graph on four points of your own.
    let points = [[-1.0, 0.5], [0.0, 1.0], [1.0, -0.5], [2.0, 0.5]];
    let mut inputs = nnc::tensors::TensorMap::new();
    inputs.insert("x".into(), nnc::tensors::HostTensor::f32(vec![4, 2], points.iter().flatten().copied().collect()));
    let mut eval = program.eval.clone();
    eval.loss = None; // outputs only: no labels needed
    let eval = nnc::simplify::drop_unused_inputs(&nnc::simplify::dead_code(&eval));
    let run = nnc::runtime::exec::ExecOptions { jit: true, ..Default::default() };
    let out = nnc::runtime::exec::run_named(&eval, &params, &inputs, run)?;
    let logits = out["logits"].floats().ok_or("logits are floats")?;
    for (p, l) in points.iter().zip(logits.chunks(2)) {
        println!("x = {p:?}: class {} (logits {:.3}, {:.3})", usize::from(l[1] > l[0]), l[0], l[1]);
    }
    // 6. Gradients: the training graph with its backward pass, on labelled points.
    let grad = nnc::autodiff::grad_program(&program.train)?.graph;
    inputs.insert(
        "y".into(),
        nnc::tensors::HostTensor { shape: vec![4], data: nnc::tensors::HostData::I32(vec![0, 0, 1, 1]) },
    );
    let g = nnc::runtime::exec::run_named(&grad, &params, &inputs, run)?;
    let norm = |t: &nnc::tensors::HostTensor| t.floats().map(|v| v.iter().map(|x| x * x).sum::<f64>().sqrt());
    println!(
        "loss on them {:.4}; |grad.hidden.W| = {:.4}, |grad.out.W| = {:.4}",
        g["loss"].floats().and_then(|v| v.first().copied()).unwrap_or(f64::NAN),
        norm(&g["grad.hidden.W"]).unwrap_or(f64::NAN),
        norm(&g["grad.out.W"]).unwrap_or(f64::NAN)
    );
    Ok(())
}
