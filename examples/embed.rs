//! Embedding nnc in a program: compile a model from a string with a setting changed,
//! look at it, train it, then predict on points of your own with the trained step.
//! Only the crate's front door (`nnc::Model` and friends) is used.
//!
//! Run: cargo run --release --example embed

use nnc::{Model, TrainConfig};

const MODEL: &str = r#"
model Moons(hidden: int = 16) {
    input x: [B, 2]
    input y: i32[B]
    layer fc1 = Dense(2, hidden)
    layer fc2 = Dense(hidden, 2)
    output logits = fc2(tanh(fc1(x)))
    loss = cross_entropy(logits, y)
    train { data = moons(n = 400, noise = 0.1, seed = 1)  split = [0.8, 0.2]
            optimizer = adam(lr = 0.02)  batch = 32  epochs = 60 }
}
"#;

fn main() -> nnc::Result<()> {
    // 1. Compile, with a model argument and a train setting as `--set` would bind them.
    //    A compile error comes back as `nnc::Error::Compile` with its diagnostics.
    let model = Model::from_source("moons.nn", MODEL)?.with("hidden", 16)?.with("epochs", 40)?;
    for t in model.inputs() {
        println!("input {t}");
    }
    let n: usize = model.params().iter().map(|p| p.len()).sum();
    println!("{} parameters", n);
    // 2. Train into a folder of the system's temporary directory, one line per 10 epochs.
    let out = std::env::temp_dir().join("nnc-embed-example");
    println!("writing the run to {}", out.display());
    let mut every_10th = |e: &nnc::Epoch| {
        if e.epoch.is_multiple_of(10) {
            println!("epoch {}: train_loss {:.4}", e.epoch, e.get("train_loss").unwrap_or(f64::NAN));
        }
        nnc::Control::Continue
    };
    let run = model.train(&TrainConfig::new(&out).replace(true), &mut every_10th)?;
    for (k, v) in &run.test {
        println!("{k}: {v:.4}");
    }
    // 3. The checkpoint: a safetensors file keyed by parameter names.
    let ck = model.load_checkpoint(run.best_checkpoint())?;
    println!("checkpoint holds {} tensors, e.g. fc1.W {:?}", ck.names().len(), ck.shape("fc1.W").unwrap_or(&[]));
    // 4. Predictions on four points of your own: the eval step compiled for 4 rows, on
    //    your buffers (nothing is allocated per call).
    let points = [-1.0f32, 0.5, 0.0, 1.0, 1.0, -0.5, 2.0, 0.5];
    let mut logits = [0.0f32; 8];
    let mut predictor = model.predictor_from(&ck, 4, 1)?;
    predictor.predict_into(&points, &mut logits)?;
    for (p, l) in points.chunks(2).zip(logits.chunks(2)) {
        println!("x = {p:?}: class {} (logits {:.3}, {:.3})", usize::from(l[1] > l[0]), l[0], l[1]);
    }
    Ok(())
}
