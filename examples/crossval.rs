//! Cross-validation and a small search from Rust: one `Session` (the run layer) compiles
//! a model's training step once and is fitted fold after fold; a loop over learning rates
//! reuses the same library calls that `nnc cv` is built from. Nothing is written to disk.
//!
//! Run: cargo run --release --example crossval

use nnc::select::cv::{self, Folds};
use nnc::train::session::{Progress, Quiet, Session};
use std::sync::atomic::AtomicBool;

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

fn main() -> Result<(), String> {
    let compiled = nnc::pipeline::compile_source("moons.nn", MODEL, None)
        .map_err(|e| nnc::diagnostic::render(&e.diagnostics, &e.sources, Default::default()))?;
    let program = compiled.programs.into_iter().next().ok_or("no model")?;
    let stop = AtomicBool::new(false);

    // 1. `nnc cv` as one call: 5 stratified folds, one line per fold.
    let report = cv::cross_validate(&program, std::path::Path::new("."), Folds::K(5), true, 1, &stop, &mut |f| {
        println!("fold {}: accuracy {:.4}", f.fold, f.metrics["accuracy"]);
    })?;
    for (name, mean, std) in &report.summary {
        println!("cv_{name}: {mean:.4} ± {std:.4}");
    }

    // 2. The same pieces by hand: a search over learning rates, every trial on the same
    //    folds, each trial's session compiled once for all its folds.
    let (raw, _) = nnc::train::trainer::load_data(&program, std::path::Path::new("."))?;
    let folds = cv::folds_of(&program, &raw, Folds::K(5))?;
    for lr in [0.002, 0.02, 0.2] {
        let mut p = program.clone();
        p.settings.optimizer.args.retain(|(k, _)| k != "lr");
        p.settings.optimizer.args.push(("lr".into(), nnc::settings::Lit::Num(lr)));
        let mut session = Session::new(&p, true, 1)?;
        let mut accs = Vec::new();
        for (i, held) in folds.iter().enumerate() {
            let train: Vec<usize> =
                folds.iter().enumerate().filter(|(j, _)| *j != i).flat_map(|(_, f)| f.iter().copied()).collect();
            let (eval, _, _) = cv::run_fold(&mut session, &raw, &train, held, &stop)?;
            accs.push(eval.shown["accuracy"]);
        }
        let (mean, std) = nnc::stats::mean_std(&accs);
        println!("lr {lr}: accuracy {mean:.4} ± {std:.4} over {} folds", accs.len());
    }
    // 3. A session can also be driven directly: init, fit, score.
    let mut s = Session::new(&program, true, 1)?;
    let rows: Vec<usize> = (0..raw.n).collect();
    s.init(0, rows.len())?;
    let mut at = Progress::default();
    s.fit(&raw, &rows, None, &mut at, &stop, &mut Quiet)?;
    println!("fitted on all {} rows: {} steps, training loss {:.4}", rows.len(), at.step, s.score(&raw, &rows)?.loss);
    Ok(())
}
