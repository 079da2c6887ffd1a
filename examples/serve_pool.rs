//! Serving predictions from a pool of threads: the checkpoint is read once and shared,
//! each worker compiles its own eval step (`Predictor`, a few milliseconds) and answers
//! requests from a channel on its own buffers, with no allocation per request.
//!
//! Run: cargo run --release --example serve_pool
//! (it trains the digits example first when examples/runs/digits/ has no checkpoint).

use nnc::{Model, TrainConfig};
use std::sync::{mpsc, Arc, Mutex};

fn main() -> nnc::Result<()> {
    let model = Model::from_file("examples/digits.nn")?;
    let ck_path = std::env::temp_dir().join("nnc-serve-pool").join("best.safetensors");
    if !ck_path.exists() {
        let out = ck_path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        println!("training digits into {} first", out.display());
        model.clone().with("epochs", 10)?.train(&TrainConfig::new(&out).replace(true), &mut nnc::Quiet)?;
    }
    let ck = Arc::new(model.load_checkpoint(&ck_path)?);
    let (width, classes) = (model.inputs()[0].per_row(), model.outputs()[0].per_row());
    // Requests: one image each (64 pixels, as digits.csv holds them); answers: a class.
    let (tx, rx) = mpsc::channel::<(usize, Vec<f32>, mpsc::Sender<(usize, usize)>)>();
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (model, ck, rx) = (model.clone(), ck.clone(), rx.clone());
            std::thread::spawn(move || -> nnc::Result<usize> {
                let mut predictor = model.predictor_from(&ck, 1, 1)?;
                let mut logits = vec![0.0f32; classes];
                let mut served = 0;
                loop {
                    let Ok((id, x, reply)) = rx.lock().map_err(|_| nnc::Error::Run("poisoned".into()))?.recv() else {
                        break;
                    };
                    predictor.predict_into(&x, &mut logits)?;
                    let class = (0..classes).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap_or(0);
                    let _ = reply.send((id, class));
                    served += 1;
                }
                println!("worker {w} served {served} requests");
                Ok(served)
            })
        })
        .collect();
    // A client: 200 requests of synthetic images, answers gathered by id.
    let (reply_tx, reply_rx) = mpsc::channel();
    for id in 0..200 {
        let x: Vec<f32> = (0..width).map(|j| ((id * 7 + j * 3) % 17) as f32).collect();
        tx.send((id, x, reply_tx.clone())).map_err(|_| nnc::Error::Run("the pool stopped".into()))?;
    }
    drop((tx, reply_tx));
    let mut counts = vec![0usize; classes];
    for (_, class) in reply_rx {
        counts[class] += 1;
    }
    let mut total = 0;
    for w in workers {
        total += w.join().map_err(|_| nnc::Error::Run("a worker panicked".into()))??;
    }
    println!("{total} answers; predicted classes: {counts:?}");
    Ok(())
}
