//! Cross-validation and a small search from Rust: `Model::cross_validate` is `nnc cv`
//! as one call (the training step compiled once for every fold), and a loop over
//! learning rates compares settings on the same folds. Nothing is written to disk.
//!
//! Run: cargo run --release --example crossval

use nnc::{CvConfig, Model};

const MODEL: &str = r#"
model Moons {
    input x: [B, 2]
    input y: i32[B]
    layer hidden = Dense(2, 16)
    layer out = Dense(16, 2)
    output logits = out(tanh(hidden(x)))
    loss = cross_entropy(logits, y)
    train { data = moons(n = 400, noise = 0.15, seed = 1)  optimizer = adam(lr = 0.02)
            batch = 32  epochs = 30  metrics = [accuracy, f1] }
}
"#;

fn main() -> nnc::Result<()> {
    let model = Model::from_source("moons.nn", MODEL)?;
    // 1. `nnc cv` as one call: 5 stratified folds, one line per fold.
    let report = model.cross_validate(&CvConfig::folds(5), &mut |f| {
        println!("fold {}: accuracy {:.4}", f.fold, f.metrics["accuracy"]);
    })?;
    for (name, mean, std) in &report.summary {
        println!("cv_{name}: {mean:.4} ± {std:.4}");
    }
    // 2. A search over learning rates, every setting on the same 5 folds (the folds
    //    depend on the data and `split_seed`, not on the optimizer).
    for lr in ["0.002", "0.02", "0.2"] {
        let m = model.clone().with("optimizer", format!("adam(lr = {lr})"))?;
        let r = m.cross_validate(&CvConfig::folds(5), &mut |_| {})?;
        let (_, mean, std) = r.summary.iter().find(|(n, ..)| n == "accuracy").cloned().unwrap_or_default();
        println!("lr {lr}: accuracy {mean:.4} ± {std:.4} over {} folds", r.folds.len());
    }
    Ok(())
}
