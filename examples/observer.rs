//! A training loop with a custom observer: it prints a line per epoch, keeps the
//! validation curve, and stops the run itself once the validation loss has not improved
//! for three epochs (the run still writes its checkpoints and scores its test rows).
//! A second thread could stop it at any step through `TrainConfig::stop`.
//!
//! Run: cargo run --release --example observer

use nnc::{Control, Epoch, Model, Observer, TrainConfig};

/// Stops after `patience` epochs without a better `val_loss`.
struct Patience {
    patience: usize,
    best: f64,
    bad: usize,
    curve: Vec<f64>,
}

impl Observer for Patience {
    fn start(&mut self, resumed: Option<(usize, u64)>) {
        println!("start{}", resumed.map(|(e, _)| format!(" (resumed at epoch {e})")).unwrap_or_default());
    }
    fn epoch(&mut self, e: &Epoch) -> Control {
        let val = e.get("val_loss").unwrap_or(f64::NAN);
        self.curve.push(val);
        println!(
            "epoch {}/{}: train_loss {:.4} val_loss {val:.4}",
            e.epoch,
            e.epochs,
            e.get("train_loss").unwrap_or(f64::NAN)
        );
        if val < self.best {
            (self.best, self.bad) = (val, 0);
        } else {
            self.bad += 1;
        }
        if self.bad >= self.patience {
            println!("no better val_loss for {} epochs: stopping", self.patience);
            return Control::Stop;
        }
        Control::Continue
    }
}

fn main() -> nnc::Result<()> {
    let model = Model::from_file("examples/digits.nn")?.with("split", "[0.7, 0.15, 0.15]")?.with("epochs", 60)?;
    let out = std::env::temp_dir().join("nnc-observer-example");
    let mut obs = Patience { patience: 3, best: f64::INFINITY, bad: 0, curve: Vec::new() };
    let run = model.train(&TrainConfig::new(&out).replace(true), &mut obs)?;
    println!(
        "{} epochs (stopped by the observer: {}), best epoch {:?}; test_accuracy {:.4}",
        run.epochs_run,
        run.stopped,
        run.best_epoch,
        run.test.get("test_accuracy").copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
