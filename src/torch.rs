//! PyTorch state dicts (saved as safetensors, `safetensors.torch.save_file(model.state_dict(), path)`)
//! read as nnc parameters: the names and layouts of `torch.nn` modules mapped onto the
//! prelude layers of the same name in the model (`fc1.weight` onto the Dense layer
//! `fc1`'s `W`, transposed).
//!
//! | nnc layer | nnc tensors | PyTorch module | PyTorch tensors |
//! |---|---|---|---|
//! | `Dense(n_in, n_out)` | `W [n_in, n_out]`, `b` | `Linear(n_in, n_out)` | `weight [n_out, n_in]` (transposed), `bias` |
//! | `Conv2d` | `W [c_out, c_in, k, k]`, `b` | `Conv2d` | `weight` (same layout), `bias` |
//! | `BatchNorm` | `gamma`, `beta`, `mean`, `var` | `BatchNorm1d/2d` | `weight`, `bias`, `running_mean`, `running_var` |
//! | `LayerNorm` | `gamma`, `beta` | `LayerNorm` | `weight`, `bias` |
//! | `Embedding` | `table` | `Embedding` | `weight` |
//! | `RNN`, `LSTM` | `Wx [n_in, g n]`, `Wh [n, g n]`, `b` | `RNN`, `LSTM` (one layer) | `weight_ih_l0 [g n, n_in]`, `weight_hh_l0` (transposed), `bias_ih_l0 + bias_hh_l0` |
//! | `GRU` | `Wx`, `Wh`, `bx`, `bh` | `GRU` (one layer) | `weight_ih_l0`, `weight_hh_l0` (transposed), `bias_ih_l0`, `bias_hh_l0` |
//! | `MultiHeadAttention` | `Wq`, `Wk`, `Wv`, `Wo`, `bq`, `bk`, `bv`, `bo` | `MultiheadAttention` | `in_proj_weight [3d, d]` (thirds, transposed), `in_proj_bias`, `out_proj.weight` (transposed), `out_proj.bias` |
//!
//! The gate orders agree: PyTorch's LSTM gates are input, forget, cell, output and its
//! GRU's reset, update, new, as nnc's. A parameter with no counterpart in the state
//! dict, or one of another shape, is an error naming both names.

use crate::ir::Graph;
use crate::tensors::{HostTensor, TensorMap};

fn floats<'a>(sd: &'a TensorMap, name: &str, file: &str) -> Result<(&'a [usize], &'a [f64]), String> {
    let t = sd.get(name).ok_or_else(|| format!("`{file}` has no tensor `{name}`"))?;
    let v = t.floats().ok_or_else(|| format!("`{file}`: tensor `{name}` must be a float tensor"))?;
    Ok((&t.shape, v))
}

/// `[r, c]` row-major, transposed.
fn transpose(shape: &[usize], v: &[f64]) -> (Vec<usize>, Vec<f64>) {
    let (r, c) = (shape[0], shape[1]);
    let mut out = vec![0.0; v.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    (vec![c, r], out)
}

/// The tensors of `sd` (a PyTorch state dict) as the parameters and states of `g`.
pub fn from_state_dict(g: &Graph, sd: &TensorMap, file: &str) -> Result<TensorMap, String> {
    let mut out = TensorMap::new();
    let names: Vec<(String, Vec<usize>)> = g
        .params
        .iter()
        .map(|p| (p.name.clone(), p.shape.iter().map(|&d| d as usize).collect()))
        .chain(g.states.iter().map(|s| (s.name.clone(), s.shape.iter().map(|&d| d as usize).collect())))
        .collect();
    for (name, want) in &names {
        let (layer, leaf) = name.rsplit_once('.').unwrap_or(("", name.as_str()));
        let key = |k: &str| if layer.is_empty() { k.to_string() } else { format!("{layer}.{k}") };
        let recurrent = sd.contains_key(&key("weight_ih_l0"));
        let attention = sd.contains_key(&key("in_proj_weight"));
        let (from, shape, value): (String, Vec<usize>, Vec<f64>) = match leaf {
            "Wx" | "Wh" if recurrent => {
                let k = key(if leaf == "Wx" { "weight_ih_l0" } else { "weight_hh_l0" });
                let (s, v) = floats(sd, &k, file)?;
                let (s, v) = transpose(s, v);
                (k, s, v)
            }
            "b" if recurrent => {
                let (ki, kh) = (key("bias_ih_l0"), key("bias_hh_l0"));
                let (s, a) = floats(sd, &ki, file)?;
                let (_, b) = floats(sd, &kh, file)?;
                if a.len() != b.len() {
                    return Err(format!("`{file}`: `{ki}` and `{kh}` differ in size"));
                }
                (format!("{ki} + {kh}"), s.to_vec(), a.iter().zip(b).map(|(x, y)| x + y).collect())
            }
            "bx" | "bh" if recurrent => {
                let k = key(if leaf == "bx" { "bias_ih_l0" } else { "bias_hh_l0" });
                let (s, v) = floats(sd, &k, file)?;
                (k, s.to_vec(), v.to_vec())
            }
            "Wq" | "Wk" | "Wv" | "bq" | "bk" | "bv" if attention => {
                let third = ["q", "k", "v"].iter().position(|c| leaf.ends_with(c)).unwrap_or(0);
                let k = key(if leaf.starts_with('W') { "in_proj_weight" } else { "in_proj_bias" });
                let (s, v) = floats(sd, &k, file)?;
                let rows = s[0] / 3;
                let per = v.len() / 3;
                let part = &v[third * per..(third + 1) * per];
                if leaf.starts_with('W') {
                    let (s, v) = transpose(&[rows, s.get(1).copied().unwrap_or(1)], part);
                    (format!("{k} (third {})", third + 1), s, v)
                } else {
                    (format!("{k} (third {})", third + 1), vec![rows], part.to_vec())
                }
            }
            "Wo" | "bo" if attention => {
                let k = key(if leaf == "Wo" { "out_proj.weight" } else { "out_proj.bias" });
                let (s, v) = floats(sd, &k, file)?;
                if leaf == "Wo" {
                    let (s, v) = transpose(s, v);
                    (k, s, v)
                } else {
                    (k, s.to_vec(), v.to_vec())
                }
            }
            "W" => {
                let k = key("weight");
                let (s, v) = floats(sd, &k, file)?;
                // Linear stores [out, in]; a convolution's kernel has nnc's layout.
                if s.len() == 2 {
                    let (s, v) = transpose(s, v);
                    (k, s, v)
                } else {
                    (k, s.to_vec(), v.to_vec())
                }
            }
            _ => {
                let k = key(match leaf {
                    "b" | "beta" => "bias",
                    "gamma" | "table" => "weight",
                    "mean" => "running_mean",
                    "var" => "running_var",
                    other => other,
                });
                let (s, v) = floats(sd, &k, file)?;
                (k, s.to_vec(), v.to_vec())
            }
        };
        if &shape != want {
            return Err(format!(
                "`{file}`: `{from}` gives `{name}` the shape {shape:?}, but the model's `{name}` has shape {want:?}"
            ));
        }
        out.insert(name.clone(), HostTensor::f32(shape, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linear_weight_is_transposed() {
        let (s, v) = transpose(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(s, vec![3, 2]);
        assert_eq!(v, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
