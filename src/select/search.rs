//! Hyperparameter search, the sampling half: a search space and the values proposed for trial N.
//! Training, pruning decisions and the trial loop live elsewhere; everything here is a pure function.
//!
//! Three methods:
//! - [`grid`]: every combination of `choice` lists (and small int ranges), first key varying slowest.
//! - [`random`]: independent draws, seeded by (seed, trial index) only, so trials may run in parallel
//!   in any order and still get the same values.
//! - [`tpe`]: Bayesian optimisation by the Tree-structured Parzen Estimator, univariate, as Optuna's
//!   `TPESampler` does by default. The finished trials are ranked and split into a good group (the
//!   best `min(ceil(0.1 n), 25)`) and a bad one; per parameter a density is fitted to each group, `l`
//!   and `g`, candidates are drawn from `l`, and the one maximising `l(x) / g(x)` is proposed.
//!
//! Why TPE rather than a Gaussian process with expected improvement: TPE handles choices, integers
//! and log ranges natively (a categorical density, rounding, and a ln transform), needs no matrix
//! inversion, and is what Optuna uses by default. A GP fits continuous spaces well but needs kernels
//! over categorical options and an O(n^3) solve per proposal.

use crate::rng::SplitMix64;

pub use crate::ir::recipe::{Dist, Param};

/// A sampled value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A value of a `Uniform` or `LogUniform` parameter.
    Num(f64),
    /// A value of an `Int` or `LogInt` parameter.
    Int(i64),
    /// The index of an option of a `Choice` parameter.
    Pick(usize),
}

impl Value {
    /// The text of the value for `--set name=<text>`: a float so that it reads back as a float
    /// (Rust's `{:?}` of f64: "0.001", "1.0", "1e-5"), an integer as an integer, a choice as its option's text.
    pub fn render(&self, d: &Dist) -> String {
        match (*self, d) {
            (Value::Num(x), _) => format!("{x:?}"),
            (Value::Int(i), _) => i.to_string(),
            (Value::Pick(k), Dist::Choice(options)) => options.get(k).cloned().unwrap_or_default(),
            (Value::Pick(k), _) => k.to_string(),
        }
    }
}

/// How a finished trial ended, for the sampler.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Finished with this score (higher is better: the caller negates metrics to minimize).
    Complete(f64),
    /// Stopped by the trial stopper after `epochs` epochs, with its score then (higher is better).
    Stopped { epochs: usize, score: f64 },
    /// Diverged or failed: no score.
    Failed,
}

/// A finished trial: the values it ran with (one per parameter of the space) and how it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    /// The values, in the order of the space's parameters.
    pub values: Vec<Value>,
    /// How it ended.
    pub outcome: Outcome,
}

/// Settings of [`tpe`].
#[derive(Clone, Debug, PartialEq)]
pub struct TpeOptions {
    /// Random trials before the model is used (Optuna: 10).
    pub startup: usize,
    /// Candidates drawn from the good density per parameter (Optuna: 24).
    pub candidates: usize,
}

impl Default for TpeOptions {
    fn default() -> TpeOptions {
        TpeOptions { startup: 10, candidates: 24 }
    }
}

/// Int ranges with at most this many values are enumerated by [`grid`].
const GRID_INT_MAX: i128 = 1000;
const LARGE: &str = " (more than 1000 values to enumerate)";
/// A grid with more combinations than this is an error rather than an allocation of gigabytes.
const GRID_MAX: usize = 1_000_000;

/// Every combination of the choices, the first parameter varying slowest (the last varies fastest).
/// An `Int` or `LogInt` range with at most 1000 values is enumerated too, as every integer of it in
/// increasing order (log spacing plays no part in a grid). Errors, naming the parameter, for a
/// `Uniform` or `LogUniform` parameter, a larger int range, a `Choice` with no options, or more than
/// 1,000,000 combinations. An empty space gives one empty combination.
pub fn grid(space: &[Param]) -> Result<Vec<Vec<Value>>, String> {
    let axes = space.iter().map(grid_axis).collect::<Result<Vec<_>, _>>()?;
    let total = axes.iter().try_fold(1usize, |n, a| n.checked_mul(a.len()).filter(|&n| n <= GRID_MAX));
    let total = total.ok_or_else(|| format!("grid search has more than {GRID_MAX} combinations"))?;
    let combination = |mut k: usize| {
        let mut values = vec![Value::Pick(0); axes.len()];
        for (v, axis) in values.iter_mut().zip(&axes).rev() {
            *v = axis[k % axis.len()];
            k /= axis.len();
        }
        values
    };
    Ok((0..total).map(combination).collect())
}

/// The values [`grid`] enumerates for one parameter.
fn grid_axis(p: &Param) -> Result<Vec<Value>, String> {
    let need = "grid search needs `choice([...])` for every key";
    match (&p.dist, range(&p.dist).and_then(|r| r.int)) {
        (Dist::Choice(o), _) if o.is_empty() => Err(format!("{need}; `{}` has no options", p.name)),
        (Dist::Choice(o), _) => Ok((0..o.len()).map(Value::Pick).collect()),
        (_, Some((lo, hi))) if i128::from(hi) - i128::from(lo) < GRID_INT_MAX => {
            Ok((lo..=hi).map(Value::Int).collect())
        }
        (d, int) => Err(format!("{need}; `{}` is {}{}", p.name, describe(d), if int.is_some() { LARGE } else { "" })),
    }
}

/// The distribution as written in a search space, for messages.
fn describe(d: &Dist) -> String {
    match d {
        Dist::Uniform(a, b) => format!("uniform({a:?}, {b:?})"),
        Dist::LogUniform(a, b) => format!("loguniform({a:?}, {b:?})"),
        Dist::Int(a, b) => format!("int({a}, {b})"),
        Dist::LogInt(a, b) => format!("logint({a}, {b})"),
        Dist::Choice(o) => format!("choice([{}])", o.join(", ")),
    }
}

/// Trial `index`'s values by random search: deterministic in (seed, index) only, so trials run
/// in parallel in any order give the same values.
pub fn random(space: &[Param], seed: u64, index: usize) -> Vec<Value> {
    let mut rng = trial_rng(seed, index);
    space.iter().map(|p| prior_draw(&p.dist, &mut rng)).collect()
}

/// The rng of one trial: (seed, index) mixed, then hashed so that nearby seeds give unrelated streams.
fn trial_rng(seed: u64, index: usize) -> SplitMix64 {
    SplitMix64::new(SplitMix64::new(seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64())
}

/// One draw from the distribution itself (uniform in the working space).
fn prior_draw(d: &Dist, rng: &mut SplitMix64) -> Value {
    match range(d) {
        Some(r) => r.fixed().unwrap_or_else(|| r.value(rng.uniform(r.lo, r.hi))),
        None => Value::Pick(rng.below(n_options(d) as u64) as usize),
    }
}

/// The number of options of a choice (0 for anything else).
fn n_options(d: &Dist) -> usize {
    match d {
        Dist::Choice(o) => o.len(),
        _ => 0,
    }
}

/// A numeric distribution in the space the samplers work in, [lo, hi]: ln for log ranges, ints widened
/// to [min - 0.5, max + 0.5] (then rounded and clamped back). `int` holds the integer bounds of `Int`
/// and `LogInt`; `min` and `max` bound the values themselves (reversed bounds are swapped).
struct Range {
    lo: f64,
    hi: f64,
    log: bool,
    int: Option<(i64, i64)>,
    min: f64,
    max: f64,
}

/// The working range of a numeric distribution; `None` for a choice.
fn range(d: &Dist) -> Option<Range> {
    let (int, min, max, log) = match *d {
        Dist::Uniform(a, b) => (None, a.min(b), a.max(b), false),
        Dist::LogUniform(a, b) => (None, a.min(b), a.max(b), a.min(b) > 0.0),
        Dist::Int(a, b) => (Some((a.min(b), a.max(b))), 0.0, 0.0, false),
        Dist::LogInt(a, b) => (Some((a.min(b).max(1), a.max(b).max(1))), 0.0, 0.0, true),
        Dist::Choice(_) => return None,
    };
    let (min, max) = int.map_or((min, max), |(a, b)| (a as f64, b as f64));
    let (wlo, whi) = if int.is_some() { (min - 0.5, max + 0.5) } else { (min, max) };
    let (lo, hi) = if log { (wlo.ln(), whi.ln()) } else { (wlo, whi) };
    Some(Range { lo, hi, log, int, min, max })
}

impl Range {
    /// The value at working-space point `x`, rounded and clamped into the range.
    fn value(&self, x: f64) -> Value {
        let v = if self.log { x.exp() } else { x };
        match self.int {
            Some((a, b)) => Value::Int((v.round() as i64).max(a).min(b)),
            None => Value::Num(v.max(self.min).min(self.max)),
        }
    }
    /// The working-space point of an observed value, if it is a number.
    fn point(&self, v: &Value) -> Option<f64> {
        let v = match *v {
            Value::Num(x) => x,
            Value::Int(i) => i as f64,
            Value::Pick(_) => return None,
        };
        let x = if self.log { v.ln() } else { v };
        x.is_finite().then(|| x.max(self.lo).min(self.hi))
    }
    /// The only value of a range with lo == hi.
    fn fixed(&self) -> Option<Value> {
        (self.min == self.max).then(|| self.value(self.lo))
    }
}

/// Trial `index`'s values by TPE given the trials that finished before it (`history`, in index
/// order). Random (exactly `random(space, seed, index)`) while fewer than `opts.startup` trials in
/// history are Complete or Stopped (as Optuna counts them), or none is Complete. Deterministic in
/// (space, history, seed, index).
///
/// Ranking: Complete by score (best first), then Stopped by epochs reached (more first) then score,
/// then Failed (a diverging learning rate is information, so failed trials join the bad group).
/// Scores must be finite; a non-finite one is ranked as Failed in release builds.
pub fn tpe(space: &[Param], history: &[Trial], seed: u64, index: usize, opts: &TpeOptions) -> Vec<Value> {
    debug_assert!(history.iter().all(|t| rank_key(t).0 < 2 || t.outcome == Outcome::Failed), "non-finite score");
    let complete = history.iter().filter(|t| rank_key(t).0 == 0).count();
    let scored = history.iter().filter(|t| rank_key(t).0 < 2).count();
    if scored < opts.startup || complete == 0 {
        return random(space, seed, index);
    }
    let order = rank(history);
    let n_good = history.len().div_ceil(10).clamp(1, 25).min(history.len());
    let (good, bad) = order.split_at(n_good);
    let mut rng = trial_rng(seed, index);
    let mut propose = |(j, p): (usize, &Param)| {
        let observed = |group: &[usize]| group.iter().filter_map(|&t| history[t].values.get(j)).copied().collect();
        let (good, bad): (Vec<Value>, Vec<Value>) = (observed(good), observed(bad));
        match range(&p.dist) {
            Some(r) => r.fixed().unwrap_or_else(|| tpe_numeric(&r, &good, &bad, opts.candidates, &mut rng)),
            None => tpe_choice(n_options(&p.dist), &good, &bad, opts.candidates, &mut rng),
        }
    };
    space.iter().enumerate().map(&mut propose).collect()
}

/// Sort key of a trial: (group, epochs, score) with group 0 Complete, 1 Stopped, 2 Failed.
fn rank_key(t: &Trial) -> (u8, usize, f64) {
    match t.outcome {
        Outcome::Complete(s) if s.is_finite() => (0, 0, s),
        Outcome::Stopped { epochs, score } if score.is_finite() => (1, epochs, score),
        _ => (2, 0, 0.0),
    }
}

/// Indices of `history`, best first (stable, so ties keep index order).
fn rank(history: &[Trial]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..history.len()).collect();
    order.sort_by(|&a, &b| {
        let ((ga, ea, sa), (gb, eb, sb)) = (rank_key(&history[a]), rank_key(&history[b]));
        ga.cmp(&gb).then(eb.cmp(&ea)).then(sb.total_cmp(&sa))
    });
    order
}

/// TPE for one numeric parameter: the candidate from `l` with the largest log l(x) - log g(x).
fn tpe_numeric(r: &Range, good: &[Value], bad: &[Value], candidates: usize, rng: &mut SplitMix64) -> Value {
    let points = |vs: &[Value]| vs.iter().filter_map(|v| r.point(v)).collect();
    let (l, g) = (Parzen::new(points(good), r.lo, r.hi), Parzen::new(points(bad), r.lo, r.hi));
    r.value(argmax(candidates, || l.sample(rng), |x| l.log_pdf(x) - g.log_pdf(x)))
}

/// TPE for one choice: categorical densities from counts + 1 per option, candidates drawn from `l`.
/// Drawing from counts + 1 is drawing one of k prior slots or one of the good observations.
fn tpe_choice(k: usize, good: &[Value], bad: &[Value], candidates: usize, rng: &mut SplitMix64) -> Value {
    let picks = |vs: &[Value]| -> Vec<usize> {
        vs.iter().filter_map(|v| if let Value::Pick(i) = *v { (i < k).then_some(i) } else { None }).collect()
    };
    if k <= 1 {
        return Value::Pick(0);
    }
    let (l, g) = (picks(good), picks(bad));
    let density = |obs: &[usize], i| (1 + obs.iter().filter(|&&o| o == i).count()) as f64 / (k + obs.len()) as f64;
    let draw = || match rng.below((k + l.len()) as u64) as usize {
        r if r < k => r,
        r => l[r - k],
    };
    Value::Pick(argmax(candidates, draw, |i| (density(&l, i) / density(&g, i)).ln()))
}

/// The first of `n` (at least one) draws with the largest score.
fn argmax<T: Copy>(n: usize, mut draw: impl FnMut() -> T, score: impl Fn(T) -> f64) -> T {
    let first = draw();
    let better = |best: (f64, T), c: (f64, T)| if c.0 > best.0 || best.0.is_nan() { c } else { best };
    (1..n).map(|_| draw()).map(|x| (score(x), x)).fold((score(first), first), better).1
}

/// A Parzen estimator: an equally weighted mixture of Gaussians truncated to [lo, hi], one at each
/// observation plus a prior component at the middle of the range with sigma = hi - lo. Bandwidths as
/// Optuna's defaults: the larger distance to the neighbours among the sorted observations *and the
/// prior's mean*, the outermost using their one inner neighbour (the range ends are no neighbours:
/// `consider_endpoints=False`), clipped to [(hi - lo) / min(100, 1 + components), hi - lo].
struct Parzen {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    /// ln(sigma * Z) per component, Z the mass of the untruncated Gaussian inside [lo, hi].
    log_norms: Vec<f64>,
    lo: f64,
    hi: f64,
}

impl Parzen {
    fn new(obs: Vec<f64>, lo: f64, hi: f64) -> Parzen {
        let (width, prior) = (hi - lo, 0.5 * (lo + hi));
        let min_sigma = width / (2.0 + obs.len() as f64).min(100.0);
        let mut mus = obs;
        mus.push(prior);
        mus.sort_by(f64::total_cmp);
        let gap = |i: usize, j: Option<usize>| j.and_then(|j| mus.get(j)).map_or(0.0, |m: &f64| (m - mus[i]).abs());
        let mut sigmas: Vec<f64> = (0..mus.len())
            .map(|i| gap(i, i.checked_sub(1)).max(gap(i, Some(i + 1))).max(min_sigma).min(width))
            .collect();
        if let Some(p) = mus.iter().position(|&m| m == prior) {
            sigmas[p] = width;
        }
        let mass = |m: f64, s: f64| (normal_cdf((hi - m) / s) - normal_cdf((lo - m) / s)).max(1e-300);
        let log_norms = mus.iter().zip(&sigmas).map(|(&m, &s)| (s * mass(m, s)).ln()).collect();
        Parzen { mus, sigmas, log_norms, lo, hi }
    }

    /// ln of the mixture density at x (by log-sum-exp).
    fn log_pdf(&self, x: f64) -> f64 {
        let terms = self.mus.iter().zip(&self.sigmas).zip(&self.log_norms);
        let terms: Vec<f64> = terms.map(|((&m, &s), &n)| -0.5 * ((x - m) / s).powi(2) - n).collect();
        let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = terms.iter().map(|t| (t - top).exp()).sum();
        top + sum.ln() - (terms.len() as f64).ln() - 0.5 * std::f64::consts::TAU.ln()
    }

    /// One draw: a component uniformly, then its truncated normal by rejection (every component's
    /// mean lies in [lo, hi] and sigma <= hi - lo, so a draw lands inside with probability > 1/3).
    fn sample(&self, rng: &mut SplitMix64) -> f64 {
        let i = rng.below(self.mus.len() as u64) as usize;
        let (m, s) = (self.mus[i], self.sigmas[i]);
        let inside = (0..100).map(|_| m + s * rng.normal()).find(|x| (self.lo..=self.hi).contains(x));
        inside.unwrap_or_else(|| rng.uniform(self.lo, self.hi))
    }
}

/// The standard normal CDF, by erfc (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7).
fn normal_cdf(z: f64) -> f64 {
    let x = -z / std::f64::consts::SQRT_2;
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let c = [-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806];
    let d = [0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277];
    let poly = c.iter().chain(&d).rev().fold(0.0, |acc, k| k + t * acc);
    let erfc = t * (-a * a + poly).exp();
    0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, dist: Dist) -> Param {
        Param { name: name.to_string(), dist }
    }
    fn choice(options: &[&str]) -> Dist {
        Dist::Choice(options.iter().map(|s| s.to_string()).collect())
    }
    fn in_range(values: &[Value], space: &[Param]) -> bool {
        values.len() == space.len()
            && values.iter().zip(space).all(|(v, p)| match (*v, &p.dist) {
                (Value::Num(x), Dist::Uniform(a, b) | Dist::LogUniform(a, b)) => *a <= x && x <= *b,
                (Value::Int(i), Dist::Int(a, b) | Dist::LogInt(a, b)) => *a.min(b) <= i && i <= *a.max(b),
                (Value::Pick(k), Dist::Choice(o)) => k < o.len(),
                _ => false,
            })
    }

    #[test]
    fn grid_enumerates_choices_first_key_slowest() {
        let options = |n: usize| Dist::Choice((0..n).map(|i| i.to_string()).collect());
        let g = grid(&[param("a", options(3)), param("b", options(2)), param("c", options(4))]).expect("a grid");
        assert_eq!(g.len(), 24);
        for (k, combination) in g.iter().enumerate() {
            assert_eq!(combination, &[Value::Pick(k / 8), Value::Pick(k / 4 % 2), Value::Pick(k % 4)]);
        }
        let err = grid(&[param("a", choice(&["1"])), param("lr", Dist::LogUniform(1e-4, 0.1))]).expect_err("an error");
        assert_eq!(err, "grid search needs `choice([...])` for every key; `lr` is loguniform(0.0001, 0.1)");
        assert_eq!(
            grid(&[param("h", Dist::Int(3, 5))]).expect("a grid"),
            [[Value::Int(3)], [Value::Int(4)], [Value::Int(5)]]
        );
        assert!(grid(&[param("h", Dist::Int(0, 1000))]).expect_err("an error").contains("`h` is int(0, 1000)"));
        assert_eq!(grid(&[]).expect("a grid"), vec![Vec::<Value>::new()]);
    }

    #[test]
    fn random_stays_in_range_and_is_reproducible() {
        let space = [
            param("u", Dist::Uniform(-1.0, 2.0)),
            param("lr", Dist::LogUniform(1e-5, 1e-1)),
            param("h", Dist::Int(16, 512)),
            param("b", Dist::LogInt(1, 1024)),
            param("opt", choice(&["sgd", "adam", "lbfgs"])),
        ];
        let samples: Vec<Vec<Value>> = (0..2000).map(|i| random(&space, 7, i)).collect();
        assert!(samples.iter().all(|v| in_range(v, &space)));
        let below = samples.iter().filter(|v| matches!(v[1], Value::Num(x) if x < (1e-5f64 * 1e-1).sqrt())).count();
        assert!((900..=1100).contains(&below), "{below} of 2000 below the geometric mean");
        let ints: std::collections::BTreeSet<String> = samples.iter().map(|v| v[2].render(&space[2].dist)).collect();
        assert!(ints.len() > 400 && ints.contains("16") && ints.contains("512"));
        assert_eq!(random(&space, 7, 3), samples[3]);
        assert_ne!(random(&space, 8, 3), samples[3]);
    }

    /// The best (score, lr) of 40 sequential trials of f(lr, hidden, act).
    fn best_found(space: &[Param], seed: u64, use_tpe: bool) -> (f64, f64) {
        let mut history: Vec<Trial> = Vec::new();
        for i in 0..40 {
            let values =
                if use_tpe { tpe(space, &history, seed, i, &TpeOptions::default()) } else { random(space, seed, i) };
            let [Value::Num(lr), Value::Int(h), Value::Pick(k)] = values[..] else { panic!("{values:?}") };
            let score = -(lr.log10() + 2.5).powi(2) - ((h as f64 - 160.0) / 100.0).powi(2) - [0.0, 0.1, 0.5][k];
            history.push(Trial { values, outcome: Outcome::Complete(score) });
        }
        let best = &history[rank(&history)[0]];
        let (Outcome::Complete(s), Value::Num(lr)) = (&best.outcome, best.values[0]) else { unreachable!() };
        (*s, lr)
    }

    #[test]
    fn tpe_beats_random_on_a_known_optimum() {
        let space = [
            param("lr", Dist::LogUniform(1e-5, 1e-1)),
            param("hidden", Dist::Int(16, 512)),
            param("act", choice(&["relu", "gelu", "tanh"])),
        ];
        let (mut random_sum, mut tpe_sum, mut near) = (0.0, 0.0, 0);
        for seed in 1..=10 {
            random_sum += best_found(&space, seed, false).0;
            let (score, lr) = best_found(&space, seed, true);
            tpe_sum += score;
            near += usize::from((lr.log10() + 2.5).abs() < 3f64.log10());
        }
        let (random_mean, tpe_mean) = (random_sum / 10.0, tpe_sum / 10.0);
        println!(
            "mean best of 40 trials, 10 seeds: random {random_mean:.4}, tpe {tpe_mean:.4}; tpe lr within 3x: {near}/10"
        );
        assert!(tpe_mean > random_mean, "tpe {tpe_mean} vs random {random_mean}");
        assert!(near >= 8, "tpe's best lr within 3x in only {near}/10 seeds");
    }

    #[test]
    fn tpe_is_reproducible_and_uses_pruned_and_failed_trials() {
        let space = [param("lr", Dist::LogUniform(1e-5, 1.0)), param("opt", choice(&["sgd", "adam"]))];
        let opts = TpeOptions::default();
        // lr above 1e-2 diverges; the rest scores best near 1e-4; a third is pruned.
        let trial = |i: usize| {
            let values = random(&space, 3, i);
            let Value::Num(lr) = values[0] else { unreachable!() };
            let score = -(lr.log10() + 4.0).powi(2);
            let outcome = match i % 3 {
                _ if lr > 1e-2 => Outcome::Failed,
                0 => Outcome::Stopped { epochs: i % 5, score },
                _ => Outcome::Complete(score),
            };
            Trial { values, outcome }
        };
        let history: Vec<Trial> = (0..30).map(trial).collect();
        assert!(history.iter().any(|t| t.outcome == Outcome::Failed));
        let t = |outcome| Trial { values: vec![], outcome };
        let (pruned, complete) = (|epochs, score| t(Outcome::Stopped { epochs, score }), |s| t(Outcome::Complete(s)));
        let mixed =
            [t(Outcome::Failed), pruned(2, -1.0), complete(0.5), pruned(3, -5.0), complete(0.9), pruned(2, 0.0)];
        assert_eq!(rank(&mixed), [4, 2, 3, 5, 1, 0]);
        let proposals: Vec<Vec<Value>> = (30..50).map(|i| tpe(&space, &history, 3, i, &opts)).collect();
        assert_eq!(proposals, (30..50).map(|i| tpe(&space, &history, 3, i, &opts)).collect::<Vec<_>>());
        assert!(proposals.iter().all(|v| in_range(v, &space)));
        let near = proposals.iter().filter(|v| matches!(v[0], Value::Num(lr) if (1e-5..1e-3).contains(&lr))).count();
        assert!(near >= 15, "only {near}/20 proposals near the good lr");
        // Fewer than `startup` Complete or Stopped trials: exactly random, whatever else (failed
        // trials) is in the history; pruned trials count towards `startup`.
        let (complete, other): (Vec<Trial>, Vec<Trial>) =
            history.into_iter().partition(|t| matches!(t.outcome, Outcome::Complete(_)));
        let failed: Vec<Trial> = other.iter().filter(|t| t.outcome == Outcome::Failed).cloned().collect();
        let few = [&failed[..], &complete[..opts.startup - 1]].concat();
        assert_eq!(tpe(&space, &few, 3, 99, &opts), random(&space, 3, 99));
        assert_ne!(tpe(&space, &[&few[..], &complete[9..]].concat(), 3, 99, &opts), random(&space, 3, 99));
        let pruned_only: Vec<Trial> = other.iter().filter(|t| t.outcome != Outcome::Failed).cloned().collect();
        assert!(pruned_only.len() >= 3);
        let small = TpeOptions { startup: pruned_only.len() + 1, ..opts };
        let with_pruned = [&pruned_only[..], &complete[..1]].concat();
        assert_ne!(tpe(&space, &with_pruned, 3, 99, &small), random(&space, 3, 99));
        // No complete trial at all: random.
        let enough = TpeOptions { startup: pruned_only.len(), ..small };
        assert_eq!(tpe(&space, &pruned_only, 3, 99, &enough), random(&space, 3, 99));
    }

    #[test]
    fn edges_do_not_panic() {
        let space = [
            param("c", Dist::Uniform(0.5, 0.5)),
            param("i", Dist::Int(4, 4)),
            param("swapped", Dist::Int(9, 2)),
            param("nonpositive", Dist::LogUniform(0.0, 1.0)),
            param("logint", Dist::LogInt(0, 3)),
            param("none", Dist::Choice(vec![])),
            param("one", choice(&["x"])),
        ];
        // Short value lists and values of the wrong kind, one observation, all observations equal.
        let values = |v| vec![Value::Num(0.5), Value::Int(4), Value::Int(5), Value::Num(0.2), v];
        let seen = |v| Trial { values: values(v), outcome: Outcome::Complete(1.0) };
        let histories = [vec![], vec![seen(Value::Int(2))], vec![seen(Value::Pick(3)); 12]];
        for (h, startup) in histories.iter().zip([0, 1, 10]) {
            for candidates in [0, 24] {
                let v = tpe(&space, h, 1, h.len(), &TpeOptions { startup, candidates });
                assert!(in_range(&v[..5], &space[..5]) && v[5..] == [Value::Pick(0); 2], "{v:?}");
                assert_eq!(v[..2], [Value::Num(0.5), Value::Int(4)]);
            }
        }
        assert!(tpe(&[], &histories[2], 1, 0, &TpeOptions::default()).is_empty() && random(&[], 1, 0).is_empty());
    }

    #[test]
    fn render() {
        assert_eq!(Value::Num(0.001).render(&Dist::Uniform(0.0, 1.0)), "0.001");
        assert_eq!(Value::Num(1.0).render(&Dist::Uniform(0.0, 1.0)), "1.0");
        assert_eq!(Value::Num(1e-5).render(&Dist::LogUniform(1e-6, 1.0)), "1e-5");
        assert_eq!(Value::Int(64).render(&Dist::Int(1, 100)), "64");
        assert_eq!(Value::Pick(1).render(&choice(&["a", "b"])), "b");
    }
}
