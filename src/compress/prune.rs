//! Magnitude pruning (模型剪枝): masks that zero a model's smallest weights, and the
//! schedule of gradual pruning (Zhu & Gupta, 2017).
//!
//! What is pruned: the weights, parameters of rank >= 2 (dense matrices, convolution
//! kernels, recurrent and embedding matrices); biases and normalization gains and
//! offsets (rank 1) are never pruned. A pruned weight is an exact zero, and training keeps
//! it one: with a `prune` setting the step graph holds a mask state `prune.mask.<param>`
//! per weight (ones, not updated by the step), multiplies the weight's gradient by it
//! before clipping and the optimizer, and the updated weight by it after (`update.rs`).
//!
//! - Unstructured, `Scope::Global`: the smallest `sparsity` fraction of all weights
//!   together (by |w|); `Scope::Layer`: that fraction of each weight. Ties at the
//!   threshold are broken by position, so exactly `round(sparsity * n)` are zero.
//! - Structured (`Structure::Rows`, `Structure::Channels`): whole slices of each weight
//!   by their L2 norm, per layer. Rows are slices along the first axis (a Dense
//!   `[in, out]` matrix's row is one input unit's weights; a Conv2d `[c_out, c_in, k, k]`
//!   kernel's is one filter); channels are output units (a Dense matrix's columns, a
//!   kernel's filters: the last axis of a matrix, the first of a kernel).

/// The prefix of the mask states in a step graph.
pub const MASK_PREFIX: &str = "prune.mask.";

/// Over which weights the sparsity is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Global,
    Layer,
}

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, String> {
        match s {
            "global" => Ok(Scope::Global),
            "layer" => Ok(Scope::Layer),
            other => Err(format!("pruning scope `{other}`: expected `global` or `layer`")),
        }
    }
}

/// What is removed: single weights, or whole slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    Weights,
    Rows,
    Channels,
}

impl Structure {
    pub fn parse(s: &str) -> Result<Structure, String> {
        match s {
            "weights" | "none" => Ok(Structure::Weights),
            "rows" => Ok(Structure::Rows),
            "channels" => Ok(Structure::Channels),
            other => Err(format!("structured pruning by `{other}`: expected `rows` or `channels`")),
        }
    }
}

/// One weight to prune: its name, shape and values.
pub struct Weight<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub values: &'a [f32],
}

/// The masks (1 kept, 0 pruned) of `weights` at `sparsity` in [0, 1).
pub fn masks(weights: &[Weight], sparsity: f64, scope: Scope, structure: Structure) -> Result<Vec<Vec<f32>>, String> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(format!("sparsity {sparsity}: expected a fraction in [0, 1)"));
    }
    for w in weights {
        if w.shape.len() < 2 || w.shape.iter().product::<usize>() != w.values.len() {
            return Err(format!("`{}` is not a weight of rank >= 2 with shape {:?}", w.name, w.shape));
        }
    }
    match structure {
        Structure::Weights => Ok(match scope {
            Scope::Layer => weights.iter().map(|w| smallest(&[w.values], sparsity).remove(0)).collect(),
            Scope::Global => smallest(&weights.iter().map(|w| w.values).collect::<Vec<_>>(), sparsity),
        }),
        Structure::Rows | Structure::Channels => {
            Ok(weights.iter().map(|w| slices(w, sparsity, structure == Structure::Rows)).collect())
        }
    }
}

/// Masks zeroing the `round(sparsity * n)` smallest |values| over all `groups` together.
fn smallest(groups: &[&[f32]], sparsity: f64) -> Vec<Vec<f32>> {
    let n: usize = groups.iter().map(|g| g.len()).sum();
    let k = ((sparsity * n as f64).round() as usize).min(n);
    let mut order: Vec<(f32, u32, u32)> = Vec::with_capacity(n);
    for (gi, g) in groups.iter().enumerate() {
        order.extend(g.iter().enumerate().map(|(i, v)| (v.abs(), gi as u32, i as u32)));
    }
    // NaN sorts last (kept): a NaN weight is an error of training, not a small weight.
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let mut out: Vec<Vec<f32>> = groups.iter().map(|g| vec![1.0; g.len()]).collect();
    for &(_, gi, i) in &order[..k] {
        out[gi as usize][i as usize] = 0.0;
    }
    out
}

/// A mask zeroing whole slices of one weight by their L2 norm: rows (first axis) or
/// output channels (the last axis of a matrix, the first of a higher-rank kernel).
fn slices(w: &Weight, sparsity: f64, rows: bool) -> Vec<f32> {
    let axis = if rows || w.shape.len() > 2 { 0 } else { w.shape.len() - 1 };
    let count = w.shape[axis];
    let inner: usize = w.shape[axis + 1..].iter().product();
    let slice_of = |i: usize| (i / inner) % count;
    let mut norms = vec![0f64; count];
    for (i, v) in w.values.iter().enumerate() {
        norms[slice_of(i)] += f64::from(*v) * f64::from(*v);
    }
    let as_f32: Vec<f32> = norms.iter().map(|&x| x.sqrt() as f32).collect();
    let keep = smallest(&[&as_f32], sparsity).remove(0);
    (0..w.values.len()).map(|i| keep[slice_of(i)]).collect()
}

/// The sparsity of gradual pruning after epoch `epoch` (1-based): 0 before `start`,
/// `final_sparsity` from `end` on, and between them the cubic ramp of Zhu & Gupta,
/// s = final (1 - (1 - t)^3) with t = (epoch - start + 1) / (end - start + 1), so
/// that many weights go early, while the network can still recover, and few late.
pub fn gradual_sparsity(final_sparsity: f64, start: usize, end: usize, epoch: usize) -> f64 {
    if epoch < start {
        return 0.0;
    }
    if epoch >= end {
        return final_sparsity;
    }
    let t = (epoch - start + 1) as f64 / (end - start + 1) as f64;
    final_sparsity * (1.0 - (1.0 - t).powi(3))
}

/// The fraction of exact zeros among `weights`.
pub fn sparsity_of<'a, T: Copy + Into<f64> + 'a>(weights: impl Iterator<Item = &'a [T]>) -> f64 {
    let (mut zeros, mut n) = (0usize, 0usize);
    for w in weights {
        zeros += w.iter().filter(|&&x| x.into() == 0.0).count();
        n += w.len();
    }
    if n == 0 {
        0.0
    } else {
        zeros as f64 / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_and_layer_scopes_count_differently() {
        let a = [0.1f32, -0.2, 0.3, 0.4];
        let b = [1.0f32, 2.0, -3.0, 4.0];
        let ws = [Weight { name: "a", shape: &[2, 2], values: &a }, Weight { name: "b", shape: &[2, 2], values: &b }];
        let g = masks(&ws, 0.5, Scope::Global, Structure::Weights).expect("masks");
        assert_eq!(g, vec![vec![0.0; 4], vec![1.0; 4]]);
        let l = masks(&ws, 0.5, Scope::Layer, Structure::Weights).expect("masks");
        assert_eq!(l, vec![vec![0.0, 0.0, 1.0, 1.0], vec![0.0, 0.0, 1.0, 1.0]]);
    }

    #[test]
    fn structured_rows_and_channels() {
        // [3, 2]: rows are (1, 1), (5, 5), (0.1, 9); columns (1, 5, 0.1), (1, 5, 9).
        let w = [1.0f32, 1.0, 5.0, 5.0, 0.1, 9.0];
        let ws = [Weight { name: "w", shape: &[3, 2], values: &w }];
        let rows = masks(&ws, 1.0 / 3.0, Scope::Layer, Structure::Rows).expect("rows");
        assert_eq!(rows[0], vec![0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        let cols = masks(&ws, 0.5, Scope::Layer, Structure::Channels).expect("channels");
        assert_eq!(cols[0], vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn ties_still_give_the_exact_count() {
        let w = [0.0f32; 10];
        let m = masks(&[Weight { name: "w", shape: &[2, 5], values: &w }], 0.3, Scope::Global, Structure::Weights)
            .expect("masks");
        assert_eq!(m[0].iter().filter(|&&x| x == 0.0).count(), 3);
    }

    #[test]
    fn the_cubic_ramp() {
        assert_eq!(gradual_sparsity(0.9, 2, 8, 1), 0.0);
        assert!((gradual_sparsity(0.9, 2, 8, 8) - 0.9).abs() < 1e-12);
        let s: Vec<f64> = (2..=8).map(|e| gradual_sparsity(0.9, 2, 8, e)).collect();
        assert!(s.windows(2).all(|p| p[1] > p[0]), "{s:?}");
        // Most of the pruning happens early.
        assert!(s[2] > 0.5 * 0.9, "{s:?}");
    }
}
