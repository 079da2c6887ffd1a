//! Synthetic sets: consumes a `spirals`/`moons`/`blobs`/`xor` choice and produces `Raw`
//! 2-D points with integer labels, deterministic per `seed` (`SplitMix64`), shuffled.
//!
//! - `spirals(n, classes = 2, noise = 0.2, seed)`: `n` points in all, split as evenly as
//!   possible among the arms; arm j has radius linspace(0, 1) and angle
//!   linspace(4j, 4(j+1)) radians plus N(0, noise²) (the noise is on the angle, as in
//!   the CS231n spiral set the course uses), the point (r sin t, r cos t); label j.
//! - `moons(n, noise = 0.1, seed)`: scikit-learn's `make_moons`: n // 2 points on the
//!   upper half circle (label 0), the rest on the lower one shifted to (1, 0.5) (label 1).
//! - `blobs(n, centers = 3, std = 1.0, seed)`: scikit-learn's `make_blobs` with 2
//!   features: centers uniform in (-10, 10)², n // centers points each (the first
//!   n % centers get one more), N(0, std²) around the center; label = center.
//! - `xor(n, noise = 0.1, seed)`: point i sits at corner i mod 4 of {-1, 1}², plus
//!   N(0, noise²) on each coordinate; label 1 when the corner's signs differ (XOR).

use crate::rng::SplitMix64;
use crate::settings::Choice;

use super::raw::{int_arg, num_arg, Locator, Raw};

/// The most points a synthetic set makes.
pub const MAX_POINTS: i64 = 1 << 24;

pub(crate) fn generate(choice: &Choice) -> Result<Raw, String> {
    let name = choice.name.as_str();
    let n = int_arg(choice, "n", 0)?;
    if !(1..=MAX_POINTS).contains(&n) {
        return Err(format!("{name}: `n` must be between 1 and {MAX_POINTS}, found {n}"));
    }
    let n = n as usize;
    let seed = int_arg(choice, "seed", 0)?;
    if seed < 0 {
        return Err(format!("{name}: `seed` must be at least 0, found {seed}"));
    }
    let mut rng = SplitMix64::new(seed as u64);
    let linspace = |lo: f64, hi: f64, m: usize, i: usize| {
        if m > 1 {
            lo + (hi - lo) * i as f64 / (m - 1) as f64
        } else {
            lo
        }
    };
    let positive = |arg: &str, default: f64| -> Result<f64, String> {
        let v = num_arg(choice, arg, Some(default))?;
        if v < 0.0 {
            return Err(format!("{name}: `{arg}` must be at least 0, found {v}"));
        }
        Ok(v)
    };
    let mut points: Vec<([f64; 2], i32)> = Vec::with_capacity(n);
    match name {
        "spirals" => {
            let classes = int_arg(choice, "classes", 2)?;
            if !(1..=1000).contains(&classes) {
                return Err(format!("spirals: `classes` must be between 1 and 1000, found {classes}"));
            }
            let noise = positive("noise", 0.2)?;
            let k = classes as usize;
            for j in 0..k {
                let m = n / k + usize::from(j < n % k);
                for i in 0..m {
                    let r = linspace(0.0, 1.0, m, i);
                    let t = linspace(4.0 * j as f64, 4.0 * (j + 1) as f64, m, i) + noise * rng.normal();
                    let x = r * t.sin();
                    let y = r * t.cos();
                    points.push(([x, y], j as i32));
                }
            }
        }
        "moons" => {
            let noise = positive("noise", 0.1)?;
            let n_out = n / 2;
            let n_in = n - n_out;
            let pi = std::f64::consts::PI;
            for i in 0..n_out {
                let t = linspace(0.0, pi, n_out, i);
                points.push(([t.cos(), t.sin()], 0));
            }
            for i in 0..n_in {
                let t = linspace(0.0, pi, n_in, i);
                points.push(([1.0 - t.cos(), 1.0 - t.sin() - 0.5], 1));
            }
            for (p, _) in &mut points {
                p[0] += noise * rng.normal();
                p[1] += noise * rng.normal();
            }
        }
        "blobs" => {
            let centers = int_arg(choice, "centers", 3)?;
            if !(1..=1000).contains(&centers) {
                return Err(format!("blobs: `centers` must be between 1 and 1000, found {centers}"));
            }
            let std = positive("std", 1.0)?;
            let k = centers as usize;
            let cs: Vec<[f64; 2]> = (0..k).map(|_| [rng.uniform(-10.0, 10.0), rng.uniform(-10.0, 10.0)]).collect();
            for (j, c) in cs.iter().enumerate() {
                let m = n / k + usize::from(j < n % k);
                for _ in 0..m {
                    let x = c[0] + std * rng.normal();
                    let y = c[1] + std * rng.normal();
                    points.push(([x, y], j as i32));
                }
            }
        }
        "xor" => {
            let noise = positive("noise", 0.1)?;
            for i in 0..n {
                let a = if i % 2 == 0 { -1.0 } else { 1.0 };
                let b = if (i / 2) % 2 == 0 { -1.0 } else { 1.0 };
                let label = i32::from((a > 0.0) != (b > 0.0));
                points.push(([a + noise * rng.normal(), b + noise * rng.normal()], label));
            }
        }
        other => return Err(format!("`{other}` is not a synthetic data set")),
    }
    for i in (1..points.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        points.swap(i, j);
    }
    let mut features = Vec::with_capacity(2 * n);
    let mut labels = Vec::with_capacity(n);
    for (p, l) in &points {
        features.push(p[0] as f32);
        features.push(p[1] as f32);
        labels.push(f64::from(*l));
    }
    Ok(Raw {
        n: points.len(),
        features,
        shape: vec![2],
        labels: Some(labels),
        feature_at: Locator::Samples(name.to_string()),
        label_at: Locator::Samples(name.to_string()),
    })
}
