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
    // 3. Train, watching progress through a callback.
    let out_dir = std::env::temp_dir().join("nnc-embed-example");
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
    Ok(())
}
