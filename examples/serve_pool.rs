//! Serving predictions from a pool of threads: the checkpoint is read once and shared,
//! each worker compiles its own eval step (`Predictor`, a few milliseconds) and answers
//! requests from a channel on its own buffers, with no allocation per request. The
//! requests are the 1,797 rows of examples/data/digits.csv.gz, raw (the checkpoint's
//! standardization is applied by the predictor).
//!
//! Run: cargo run --release --example serve_pool
//! (it trains the digits example for 10 epochs first, into the system's temporary folder).

use nnc::{Model, TrainConfig};
use std::io::Read;
use std::sync::{mpsc, Arc, Mutex};

type Request = (Vec<f32>, i64, mpsc::Sender<(usize, bool)>);

fn main() -> nnc::Result<()> {
    let model = Model::from_file("examples/digits.nn")?;
    let ck_path = std::env::temp_dir().join("nnc-serve-pool").join("best.safetensors");
    if !ck_path.exists() {
        let out = ck_path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        println!("training digits into {} first", out.display());
        model.clone().with("epochs", 10)?.train(&TrainConfig::new(&out).replace(true), &mut nnc::Quiet)?;
    }
    let ck = Arc::new(model.load_checkpoint(&ck_path)?);
    let classes = model.outputs()[0].per_row();
    let (tx, rx) = mpsc::channel::<Request>();
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (model, ck, rx) = (model.clone(), ck.clone(), rx.clone());
            std::thread::spawn(move || -> nnc::Result<usize> {
                let mut predictor = model.predictor_from(&ck, 1, 1)?;
                let mut logits = vec![0.0f32; classes];
                let mut served = 0;
                loop {
                    let next = rx.lock().map_err(|_| nnc::Error::Run("a worker panicked".into()))?.recv();
                    let Ok((x, label, reply)) = next else { break };
                    predictor.predict_into(&x, &mut logits)?;
                    let class = (0..classes).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap_or(0);
                    let _ = reply.send((w, class as i64 == label));
                    served += 1;
                }
                Ok(served)
            })
        })
        .collect();
    // A client: every row of the digits file as one request.
    let mut text = String::new();
    let file = std::fs::File::open("examples/data/digits.csv.gz")
        .map_err(|e| nnc::Error::Io { path: "examples/data/digits.csv.gz".into(), source: e })?;
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|e| nnc::Error::Io { path: "examples/data/digits.csv.gz".into(), source: e })?;
    let (reply_tx, reply_rx) = mpsc::channel();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cells: Vec<f32> = line.split(',').filter_map(|c| c.trim().parse().ok()).collect();
        let Some((label, x)) = cells.split_last() else { continue };
        tx.send((x.to_vec(), *label as i64, reply_tx.clone()))
            .map_err(|_| nnc::Error::Run("the pool stopped".into()))?;
    }
    drop((tx, reply_tx));
    let (mut right, mut by_worker) = (0, [0usize; 2]);
    for (w, ok) in reply_rx {
        right += usize::from(ok);
        by_worker[w] += 1;
    }
    let mut total = 0;
    for w in workers {
        total += w.join().map_err(|_| nnc::Error::Run("a worker panicked".into()))??;
    }
    println!("{total} requests answered ({} and {} by the two workers); {right} right", by_worker[0], by_worker[1]);
    Ok(())
}
