//! Model comparison: two programs trained and scored on the same rows (the same folds, or
//! the same train/test split), the per-fold or per-row difference with a significance
//! test, and what each model costs (parameters, forward work, step time, training time).
//!
//! On folds the test is Nadeau and Bengio's corrected resampled t-test on the per-fold
//! metric (the plain paired t-test treats folds as independent samples although their
//! training sets overlap, and is over-confident); its plain counterpart is reported
//! beside it. On one shared test split it is McNemar's test on the rows one model gets
//! right and the other wrong.

use super::cv::{self, Folds};
use crate::ir::Program;
use crate::stats::{McNemar, TTest};
use crate::train::checkpoint::data_hash;
use crate::train::session::Session;
use crate::train::trainer::{load_data, split_rows};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// Training rows and held-out rows of one fold.
type TrainHeld = (Vec<usize>, Vec<usize>);

/// One model's side of a comparison.
#[derive(Clone, Debug)]
pub struct Side {
    pub name: String,
    /// Per fold (or the one test split): the compared metric.
    pub values: Vec<f64>,
    pub parameters: i64,
    /// Matrix-product FLOPs of the eval graph per example (2 m k n per product).
    pub forward_flops: f64,
    /// Training time per step: fit time over steps (validation scoring included).
    pub step_ms: f64,
    /// Training time summed over folds.
    pub train_seconds: f64,
}

#[derive(Clone, Debug)]
pub struct Comparison {
    /// The compared metric: `accuracy` for classifiers, `mse` for regressors, else `loss`.
    pub metric: String,
    /// Whether a higher value is better.
    pub higher_is_better: bool,
    pub a: Side,
    pub b: Side,
    /// Mean of a - b.
    pub mean_diff: f64,
    pub ttest: Option<TTest>,
    pub plain_ttest: Option<TTest>,
    pub mcnemar: Option<McNemar>,
    /// The p-value of the test used.
    pub p_value: f64,
    pub test: String,
    pub verdict: String,
    pub notes: Vec<String>,
}

/// Matrix-product FLOPs per example of a program's eval graph.
pub fn forward_flops(p: &Program) -> Result<f64, String> {
    let mut g = p.eval.clone();
    g.loss = None;
    let g = crate::simplify::drop_unused_inputs(&crate::simplify::dead_code(&g));
    let batch = 8;
    let cg = crate::runtime::executable::concrete(&g, batch)?;
    let exe = crate::runtime::executable::Executable::new(&cg, &Default::default())?;
    Ok(exe.matmul_flops() as f64 / batch as f64)
}

fn metric_of(m: &crate::metrics::Metrics) -> (String, bool) {
    if m.contains_key("accuracy") {
        ("accuracy".into(), true)
    } else if m.contains_key("mse") {
        ("mse".into(), false)
    } else {
        ("loss".into(), false)
    }
}

/// Compares `a` and `b` (each with the folder its data paths are relative to) on `folds`,
/// or on `a`'s train/test split when `folds` is `None`.
pub fn compare(
    a: (&Program, &Path),
    b: (&Program, &Path),
    folds: Option<Folds>,
    backend: crate::runtime::backend::Backend,
    threads: usize,
    stop: &AtomicBool,
) -> Result<Comparison, String> {
    let (raw_a, _) = load_data(a.0, a.1)?;
    let (raw_b, _) = load_data(b.0, b.1)?;
    let (ha, hb) = (data_hash(&raw_a), data_hash(&raw_b));
    if ha != hb || raw_a.n != raw_b.n {
        return Err(format!(
            "the two models read different data ({}: {} rows, hash {ha}; {}: {} rows, hash {hb}); a comparison needs \
             the same rows",
            a.0.name, raw_a.n, b.0.name, raw_b.n
        ));
    }
    let mut notes = Vec::new();
    // Both models on A's folds or split.
    let mut pb = b.0.clone();
    if pb.settings.split != a.0.settings.split || pb.settings.split_seed() != a.0.settings.split_seed() {
        notes.push(format!("both models use {}'s split and split_seed", a.0.name));
    }
    pb.settings.split = a.0.settings.split.clone();
    pb.settings.split_seed = Some(a.0.settings.split_seed() as i64);
    let (parts, on_folds): (Vec<TrainHeld>, bool) = match folds {
        Some(f) => {
            let fs = cv::folds_of(a.0, &raw_a, f)?;
            let pairs = (0..fs.len())
                .map(|i| {
                    let train: Vec<usize> =
                        fs.iter().enumerate().filter(|(j, _)| *j != i).flat_map(|(_, x)| x.iter().copied()).collect();
                    (train, fs[i].clone())
                })
                .collect();
            (pairs, true)
        }
        None => {
            let sp = split_rows(a.0, &raw_a)?;
            if sp.len() < 2 {
                return Err(
                    "comparing on a test split needs one: set `split` in the train block, or use --folds K".into()
                );
            }
            let held = sp[sp.len() - 1].clone();
            let train: Vec<usize> = sp[..sp.len() - 1].iter().flatten().copied().collect();
            (vec![(train, held)], false)
        }
    };
    let mut sides = Vec::new();
    let mut correct: Vec<Vec<bool>> = Vec::new();
    let mut metric = ("loss".to_string(), false);
    for p in [a.0, &pb] {
        let mut s = Session::new(p, backend, threads)?;
        let mut values = Vec::new();
        let (mut secs, mut steps) = (0.0, 0u64);
        let mut all_correct = Vec::new();
        for (train, held) in &parts {
            let t = std::time::Instant::now();
            let (ev, at, ok) = cv::run_fold(&mut s, &raw_a, train, held, stop)?;
            secs += t.elapsed().as_secs_f64();
            steps += at.step;
            metric = metric_of(&ev.shown);
            values.push(ev.shown.get(&metric.0).copied().unwrap_or(f64::NAN));
            all_correct.extend(ok.unwrap_or_default());
        }
        sides.push(Side {
            name: p.name.clone(),
            values,
            parameters: p.train.param_count(),
            forward_flops: forward_flops(p)?,
            step_ms: secs * 1e3 / steps.max(1) as f64,
            train_seconds: secs,
        });
        correct.push(all_correct);
    }
    let sb = sides.pop().ok_or("internal error: no side")?;
    let sa = sides.pop().ok_or("internal error: no side")?;
    let diffs: Vec<f64> = sa.values.iter().zip(&sb.values).map(|(x, y)| x - y).collect();
    let mean_diff = diffs.iter().sum::<f64>() / diffs.len().max(1) as f64;
    let (mut ttest, mut plain, mut mc) = (None, None, None);
    let (p_value, test) = if on_folds {
        let n_test = parts.iter().map(|(_, h)| h.len()).sum::<usize>() / parts.len().max(1);
        let n_train = parts.iter().map(|(t, _)| t.len()).sum::<usize>() / parts.len().max(1);
        let t = crate::stats::corrected_paired_t_test(&sa.values, &sb.values, n_test, n_train)?;
        plain = crate::stats::paired_t_test(&sa.values, &sb.values).ok();
        let p = t.p_value;
        ttest = Some(t);
        (p, format!("corrected resampled t-test over {} folds (Nadeau & Bengio)", parts.len()))
    } else if correct[0].len() == correct[1].len() && !correct[0].is_empty() {
        let m = crate::stats::mcnemar(&correct[0], &correct[1])?;
        let p = m.p_value;
        mc = Some(m);
        (p, format!("McNemar's test on {} test rows", correct[0].len()))
    } else {
        notes.push("one test split of a regressor: no significance test (use --folds K)".into());
        (f64::NAN, "none".into())
    };
    let (name, higher) = metric.clone();
    let better = if (mean_diff > 0.0) == higher { &sa.name } else { &sb.name };
    let verdict = if p_value.is_nan() {
        format!("no test: {name} differs by {}", crate::metrics::format_short(mean_diff))
    } else if p_value < 0.05 && mean_diff != 0.0 {
        format!("{better} is better on {name} (p = {} < 0.05)", crate::metrics::format_short(p_value))
    } else {
        format!("no significant difference in {name} at the 5% level (p = {})", crate::metrics::format_short(p_value))
    };
    Ok(Comparison {
        metric: name,
        higher_is_better: higher,
        a: sa,
        b: sb,
        mean_diff,
        ttest,
        plain_ttest: plain,
        mcnemar: mc,
        p_value,
        test,
        verdict,
        notes,
    })
}
