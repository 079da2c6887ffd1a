//! Initializers (docs/language.md): values for every parameter and state of a
//! graph, deterministic per seed. Each tensor draws from its own generator seeded by
//! (seed, name), so values do not depend on declaration order.

use crate::ir::{Graph, Init};
use crate::rng::{name_hash, SplitMix64};

/// (fan_in, fan_out) of a shape: `[in, out]` (nnc's Dense layout), `[out, in, k..]` (conv,
/// as PyTorch), `[n]` gives (n, n), a scalar (1, 1).
pub fn fans(shape: &[i64]) -> (f64, f64) {
    match shape.len() {
        0 => (1.0, 1.0),
        1 => (shape[0] as f64, shape[0] as f64),
        2 => (shape[0] as f64, shape[1] as f64),
        _ => {
            let receptive: i64 = shape[2..].iter().product();
            ((shape[1] * receptive) as f64, (shape[0] * receptive) as f64)
        }
    }
}

/// The initial values of one tensor.
pub fn init_tensor(init: &Init, shape: &[i64], seed: u64, name: &str) -> Vec<f64> {
    let n: i64 = shape.iter().product();
    let n = n.max(0) as usize;
    let mut rng = SplitMix64::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ name_hash(name));
    let (fan_in, fan_out) = fans(shape);
    let uniform = |rng: &mut SplitMix64, a: f64| (0..n).map(|_| rng.uniform(-a, a)).collect::<Vec<f64>>();
    let normal = |rng: &mut SplitMix64, s: f64| (0..n).map(|_| s * rng.normal()).collect::<Vec<f64>>();
    match init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Constant(v) => vec![*v; n],
        Init::Normal { std } => normal(&mut rng, *std),
        Init::Uniform { lo, hi } => (0..n).map(|_| rng.uniform(*lo, *hi)).collect(),
        Init::XavierUniform { gain } => uniform(&mut rng, gain * (6.0 / (fan_in + fan_out)).sqrt()),
        Init::XavierNormal { gain } => normal(&mut rng, gain * (2.0 / (fan_in + fan_out)).sqrt()),
        Init::HeUniform { gain } => uniform(&mut rng, gain * (6.0 / fan_in).sqrt()),
        Init::HeNormal { gain } => normal(&mut rng, gain * (2.0 / fan_in).sqrt()),
        Init::Chunks(parts) => {
            // Lowering checked that the first dim divides evenly.
            let k = parts.len().max(1) as i64;
            let mut sub = shape.to_vec();
            if let Some(d) = sub.first_mut() {
                *d /= k;
            }
            let mut out = Vec::with_capacity(n);
            for (i, p) in parts.iter().enumerate() {
                out.extend(init_tensor(p, &sub, seed, &format!("{name}#{i}")));
            }
            out.resize(n, 0.0);
            out
        }
        // A tensor read from a file: zeros until the run layer reads it
        // (`train::teacher::load`).
        Init::Load { .. } => vec![0.0; n],
    }
}

/// Initial values of every parameter and every state of `g`, in declaration order.
pub fn init_all(g: &Graph, seed: u64) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let params = g.params.iter().map(|p| init_tensor(&p.init, &p.shape, seed, &p.name)).collect();
    let states = g.states.iter().map(|s| init_tensor(&s.init, &s.shape, seed, &s.name)).collect();
    (params, states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xavier_bounds_and_fans() {
        assert_eq!(fans(&[64, 128]), (64.0, 128.0));
        assert_eq!(fans(&[8, 3, 5, 5]), (75.0, 200.0));
        let v = init_tensor(&Init::XavierUniform { gain: 1.0 }, &[64, 128], 0, "W");
        let a = (6.0f64 / 192.0).sqrt();
        assert!(v.iter().all(|x| x.abs() <= a));
        assert!(v.iter().any(|x| x.abs() > 0.9 * a));
        let var = v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
        assert!((var - a * a / 3.0).abs() < 0.05 * a * a / 3.0);
        assert_eq!(v, init_tensor(&Init::XavierUniform { gain: 1.0 }, &[64, 128], 0, "W"));
        assert_ne!(v, init_tensor(&Init::XavierUniform { gain: 1.0 }, &[64, 128], 1, "W"));
    }

    #[test]
    fn chunks_initialize_each_part_with_its_own_fans() {
        let init = Init::Chunks(vec![Init::Zeros, Init::Ones, Init::XavierUniform { gain: 1.0 }, Init::Constant(2.0)]);
        let v = init_tensor(&init, &[8], 3, "b");
        assert_eq!(&v[..6], &[0.0, 0.0, 1.0, 1.0, v[4], v[5]]);
        assert!(v[4] != v[5] && v[4].abs() <= 3f64.sqrt() / 2.0 * 1.0001, "xavier over [2]: fans (2, 2)");
        assert_eq!(&v[6..], &[2.0, 2.0]);
        let m = init_tensor(&Init::Chunks(vec![Init::Zeros, Init::Ones]), &[4, 3], 0, "W");
        assert_eq!(m, [vec![0.0; 6], vec![1.0; 6]].concat());
    }
}
