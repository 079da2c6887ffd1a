//! Learning-rate schedules (docs/language.md): the rate at optimizer step `t`
//! (0-based) of a run of `total` steps. Computed on the host each step and passed to the
//! compiled step as the `hyper.lr` input.
//!
//! A rate is composed of three parts: an optional warmup (`warmup = linear(steps = N)`
//! or `cosine(steps = N)`) over the first N steps, the schedule over the steps after it
//! (its step count and total start after the warmup), and the factor of `plateau`, which
//! depends on the validation curve and so is state of the fit (`Plateau`), not a
//! function of the step.

use crate::settings::{Choice, TrainSettings};

/// The learning rate at step `t` of `total`: warmup, then the schedule, times the
/// plateau factor `scale`.
pub fn rate_at(s: &TrainSettings, lr: f64, t: u64, total: u64, scale: f64) -> f64 {
    let base = match &s.warmup {
        Some(w) => {
            let n = w.num("steps").unwrap_or(0.0).max(0.0) as u64;
            if t < n {
                let x = (t + 1) as f64 / n as f64;
                let f = if w.name == "cosine" { 0.5 * (1.0 + (std::f64::consts::PI * (1.0 - x)).cos()) } else { x };
                lr * f
            } else {
                rate(&s.schedule, lr, t - n, total.saturating_sub(n))
            }
        }
        None => rate(&s.schedule, lr, t, total),
    };
    base * scale
}

/// Reduce-on-plateau state (`schedule = plateau(factor, patience, min_lr, threshold)`),
/// as PyTorch's `ReduceLROnPlateau` in its default relative mode: after each epoch the
/// monitored metric either improves on the best by more than `threshold` (relative) or
/// counts a bad epoch; after more than `patience` bad epochs in a row the rate is
/// multiplied by `factor` (not below `min_lr`) and the count restarts.
#[derive(Clone, Debug, PartialEq)]
pub struct Plateau {
    /// The factor on the scheduled rate (1 until the first reduction).
    pub scale: f64,
    pub best: Option<f64>,
    pub bad: usize,
}

impl Default for Plateau {
    fn default() -> Self {
        Plateau { scale: 1.0, best: None, bad: 0 }
    }
}

impl Plateau {
    /// Records an epoch's monitored `value` (`maximize`: higher is better) for base rate
    /// `lr`; returns whether the rate was reduced.
    pub fn observe(&mut self, schedule: &Choice, value: f64, maximize: bool, lr: f64) -> bool {
        if schedule.name != "plateau" {
            return false;
        }
        let threshold = schedule.num("threshold").unwrap_or(1e-4);
        let better = match self.best {
            None => true,
            Some(b) if maximize => value > b * (1.0 + threshold.copysign(b)),
            Some(b) => value < b * (1.0 - threshold.copysign(b)),
        };
        if better {
            self.best = Some(value);
            self.bad = 0;
            return false;
        }
        self.bad += 1;
        if self.bad as f64 > schedule.num("patience").unwrap_or(10.0) {
            self.bad = 0;
            let min_scale = schedule.num("min_lr").unwrap_or(0.0) / lr;
            let next = (self.scale * schedule.num("factor").unwrap_or(0.1)).max(min_scale);
            let reduced = next < self.scale;
            self.scale = next;
            return reduced;
        }
        false
    }
}

/// The learning rate at step `t` for base rate `lr`.
pub fn rate(schedule: &Choice, lr: f64, t: u64, total: u64) -> f64 {
    let arg = |n: &str, d: f64| schedule.num(n).unwrap_or(d);
    let t = t as f64;
    let cosine =
        |p: f64, min_lr: f64| min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * p.clamp(0.0, 1.0)).cos());
    match schedule.name.as_str() {
        // lr gamma^floor(t / every)
        "step" => lr * arg("gamma", 0.1).powf((t / arg("every", 1.0).max(1.0)).floor()),
        // lr gamma^t
        "exponential" => lr * arg("gamma", 1.0).powf(t),
        // lr / (1 + decay t)^power
        "inverse_time" => lr / (1.0 + arg("decay", 0.0) * t).powf(arg("power", 1.0)),
        // lr min(1, (t + 1) / warmup)
        "linear_warmup" => {
            let w = arg("warmup", 0.0);
            if w <= 0.0 {
                lr
            } else {
                lr * ((t + 1.0) / w).min(1.0)
            }
        }
        // Linear warmup, then half a cosine from lr down to min_lr over the rest of the
        // run (or over `period` steps).
        "cosine" => {
            let w = arg("warmup", 0.0);
            let min_lr = arg("min_lr", 0.0);
            if t < w {
                return lr * (t + 1.0) / w;
            }
            let period = arg("period", 0.0);
            let span = if period > 0.0 { period } else { (total as f64 - w).max(1.0) };
            cosine((t - w) / span, min_lr)
        }
        // Cosine annealing with restarts every `period` steps.
        "cyclic" => {
            let p = arg("period", 1.0).max(1.0);
            cosine((t % p) / p, arg("min_lr", 0.0))
        }
        // Smith's triangular cyclic rate: linearly from min_lr up to lr over `step_size`
        // steps and back down over as many, the amplitude multiplied by `decay` every
        // cycle (1: "triangular", 0.5: "triangular2").
        "triangular" => {
            let half = arg("step_size", 1.0).max(1.0);
            let min_lr = arg("min_lr", 0.0);
            let cycle = (t / (2.0 * half)).floor();
            let x = (t / half - 2.0 * cycle - 1.0).abs();
            min_lr + (lr - min_lr) * (1.0 - x).max(0.0) * arg("decay", 1.0).powf(cycle)
        }
        _ => lr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Lit;

    fn ch(name: &str, args: &[(&str, f64)]) -> Choice {
        Choice { name: name.into(), args: args.iter().map(|(k, v)| (k.to_string(), Lit::Num(*v))).collect() }
    }

    #[test]
    fn schedules_by_hand() {
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        close(rate(&ch("constant", &[]), 0.1, 7, 10), 0.1);
        let s = ch("step", &[("every", 3.0), ("gamma", 0.5)]);
        for (t, want) in [(0, 0.1), (2, 0.1), (3, 0.05), (6, 0.025)] {
            close(rate(&s, 0.1, t, 10), want);
        }
        close(rate(&ch("exponential", &[("gamma", 0.9)]), 1.0, 3, 10), 0.729);
        close(rate(&ch("inverse_time", &[("decay", 0.5), ("power", 1.0)]), 1.0, 2, 10), 0.5);
        let w = ch("linear_warmup", &[("warmup", 4.0)]);
        for (t, want) in [(0, 0.25), (1, 0.5), (3, 1.0), (9, 1.0)] {
            close(rate(&w, 1.0, t, 10), want);
        }
        // Cosine with 2 warmup steps over 10: 0.5, 1, then 1 -> 0 over 8 steps.
        let c = ch("cosine", &[("warmup", 2.0), ("min_lr", 0.0), ("period", 0.0)]);
        close(rate(&c, 1.0, 0, 10), 0.5);
        close(rate(&c, 1.0, 2, 10), 1.0);
        close(rate(&c, 1.0, 6, 10), 0.5);
        close(rate(&c, 1.0, 10, 10), 0.0);
        let cy = ch("cyclic", &[("period", 4.0), ("min_lr", 0.1)]);
        close(rate(&cy, 1.0, 0, 100), 1.0);
        close(rate(&cy, 1.0, 2, 100), 0.55);
        close(rate(&cy, 1.0, 4, 100), 1.0);
        // Triangular, step_size 2, from 0.2 to 1: 0.2, 0.6, 1.0, 0.6, 0.2, 0.6, ...; with
        // decay 0.5 the second cycle peaks at 0.2 + 0.8 * 0.5 = 0.6.
        let tri = ch("triangular", &[("step_size", 2.0), ("min_lr", 0.2), ("decay", 1.0)]);
        for (t, want) in [(0, 0.2), (1, 0.6), (2, 1.0), (3, 0.6), (4, 0.2), (5, 0.6), (6, 1.0)] {
            close(rate(&tri, 1.0, t, 100), want);
        }
        let tri2 = ch("triangular", &[("step_size", 2.0), ("min_lr", 0.2), ("decay", 0.5)]);
        for (t, want) in [(2, 1.0), (4, 0.2), (5, 0.4), (6, 0.6), (7, 0.4), (10, 0.4)] {
            close(rate(&tri2, 1.0, t, 100), want);
        }
    }

    fn settings(warmup: Option<Choice>, schedule: Choice) -> TrainSettings {
        TrainSettings { warmup, schedule, ..TrainSettings::default() }
    }

    #[test]
    fn warmup_composes_with_any_schedule() {
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        // Linear warmup over 4 steps, then step decay every 3 steps counted after it.
        let s = settings(Some(ch("linear", &[("steps", 4.0)])), ch("step", &[("every", 3.0), ("gamma", 0.5)]));
        for (t, want) in [(0, 0.25), (1, 0.5), (3, 1.0), (4, 1.0), (6, 1.0), (7, 0.5), (10, 0.25)] {
            close(rate_at(&s, 1.0, t, 20, 1.0), want);
        }
        // The notes' cosine-shaped warmup 1/2 (1 + cos(pi (1 - t/T))) with t counted from 1,
        // then a cosine decay over the remaining 8 of 12 steps.
        let s = settings(Some(ch("cosine", &[("steps", 4.0)])), ch("cosine", &[("min_lr", 0.0)]));
        for (t, want) in [(0, 0.5 * (1.0 - (std::f64::consts::PI / 4.0).cos())), (1, 0.5), (3, 1.0), (4, 1.0), (8, 0.5)]
        {
            close(rate_at(&s, 1.0, t, 12, 1.0), want);
        }
        close(rate_at(&s, 1.0, 8, 12, 0.1), 0.05);
    }

    #[test]
    fn plateau_against_a_scripted_curve() {
        // factor 0.5, patience 2, threshold 0 (any improvement counts), min_lr 0.2 (scale 0.2 at lr 1).
        let sch = ch("plateau", &[("factor", 0.5), ("patience", 2.0), ("min_lr", 0.2), ("threshold", 0.0)]);
        let curve = [1.0, 0.9, 0.95, 0.92, 0.91, 0.8, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85];
        // Bad epochs after 0.9: 0.95, 0.92, 0.91 (3 > 2: reduce to 0.5 after epoch 5); 0.8
        // improves; then 0.85 x3 reduces to 0.25 after epoch 9, x3 more to max(0.125, 0.2) = 0.2.
        let want = [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2];
        let mut p = Plateau::default();
        for (i, (&v, &w)) in curve.iter().zip(&want).enumerate() {
            p.observe(&sch, v, false, 1.0);
            close_at(p.scale, w, i);
        }
        // Maximizing: an accuracy that stops rising.
        let mut q = Plateau::default();
        for v in [0.5, 0.6, 0.6, 0.6, 0.6] {
            q.observe(&sch, v, true, 1.0);
        }
        close_at(q.scale, 0.5, 0);
        // Other schedules never change the scale.
        let mut r = Plateau::default();
        for v in [1.0, 2.0, 3.0, 4.0] {
            assert!(!r.observe(&ch("constant", &[]), v, false, 1.0));
        }
        assert_eq!(r.scale, 1.0);
    }

    fn close_at(a: f64, b: f64, i: usize) {
        assert!((a - b).abs() < 1e-12, "epoch {}: scale {a}, expected {b}", i + 1);
    }
}
