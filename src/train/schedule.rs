//! Learning-rate schedules (docs/language.md): the rate at optimizer step `t`
//! (0-based) of a run of `total` steps. Computed on the host each step and passed to the
//! compiled step as the `hyper.lr` input.

use crate::settings::Choice;

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
    }
}
