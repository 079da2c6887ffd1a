//! L-BFGS (Nocedal & Wright, algorithm 7.4) with the strong Wolfe line search of
//! `line_search`, as a host loop around a compiled objective-and-gradient function. Full batch, as PyTorch's `LBFGS`: each call of
//! `minimize` runs up to `max_iter` iterations.

pub use super::line_search::Eval;
use super::line_search::{dot, strong_wolfe};

/// The curvature pairs kept between calls.
#[derive(Clone, Debug, Default)]
pub struct State {
    s: Vec<Vec<f64>>,
    y: Vec<Vec<f64>>,
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The first trial step of each line search (scaled by 1/|g| on the first iteration).
    pub lr: f64,
    pub history: usize,
    pub max_iter: usize,
    pub tolerance_grad: f64,
    /// Stop when an iteration changes the objective by less than this, relative to
    /// 1 + |f| (0: only the gradient, or a line search that finds no decrease, stops).
    pub tolerance_change: f64,
}

/// The two-loop recursion: the quasi-Newton direction -H g.
#[allow(clippy::needless_range_loop)] // the recursion reads clearest with indices
fn direction(st: &State, g: &[f64]) -> Vec<f64> {
    let mut q: Vec<f64> = g.to_vec();
    let k = st.s.len();
    let mut alpha = vec![0.0; k];
    for i in (0..k).rev() {
        let rho = 1.0 / dot(&st.y[i], &st.s[i]);
        alpha[i] = rho * dot(&st.s[i], &q);
        for (qj, yj) in q.iter_mut().zip(&st.y[i]) {
            *qj -= alpha[i] * yj;
        }
    }
    if k > 0 {
        let gamma = dot(&st.s[k - 1], &st.y[k - 1]) / dot(&st.y[k - 1], &st.y[k - 1]);
        for qj in q.iter_mut() {
            *qj *= gamma;
        }
    }
    for i in 0..k {
        let rho = 1.0 / dot(&st.y[i], &st.s[i]);
        let beta = rho * dot(&st.y[i], &q);
        for (qj, sj) in q.iter_mut().zip(&st.s[i]) {
            *qj += (alpha[i] - beta) * sj;
        }
    }
    q.iter().map(|v| -v).collect()
}

/// Runs up to `max_iter` L-BFGS iterations from `x` (updated in place). Returns the
/// final objective.
pub fn minimize(f: &mut Eval, x: &mut [f64], st: &mut State, o: &Options) -> Result<f64, String> {
    let (mut fx, mut g) = f(x)?;
    for it in 0..o.max_iter {
        let gnorm = g.iter().map(|v| v.abs()).fold(0.0, f64::max);
        if gnorm <= o.tolerance_grad || !fx.is_finite() {
            break;
        }
        let mut d = direction(st, &g);
        if dot(&d, &g) >= 0.0 {
            // Not a descent direction: restart from steepest descent.
            st.s.clear();
            st.y.clear();
            d = g.iter().map(|v| -v).collect();
        }
        let t0 = if st.s.is_empty() && it == 0 {
            o.lr * (1.0f64).min(1.0 / g.iter().map(|v| v.abs()).sum::<f64>().max(1e-12))
        } else {
            o.lr
        };
        let (t, ft, gt) = strong_wolfe(f, x, fx, &g, &d, t0)?;
        if t == 0.0 || gt.is_empty() {
            break;
        }
        let s: Vec<f64> = d.iter().map(|v| t * v).collect();
        let y: Vec<f64> = gt.iter().zip(&g).map(|(a, b)| a - b).collect();
        for (xi, si) in x.iter_mut().zip(&s) {
            *xi += si;
        }
        if dot(&s, &y) > 1e-10 {
            st.s.push(s);
            st.y.push(y);
            if st.s.len() > o.history {
                st.s.remove(0);
                st.y.remove(0);
            }
        }
        let converged = (fx - ft).abs() < o.tolerance_change * (1.0 + fx.abs());
        fx = ft;
        g = gt;
        if converged {
            break;
        }
    }
    Ok(fx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rosenbrock() {
        let mut f = |x: &[f64]| -> Result<(f64, Vec<f64>), String> {
            let (a, b) = (x[0], x[1]);
            let v = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            Ok((v, vec![-2.0 * (1.0 - a) - 400.0 * a * (b - a * a), 200.0 * (b - a * a)]))
        };
        let mut x = vec![-1.2, 1.0];
        let mut st = State::default();
        let o = Options { lr: 1.0, history: 10, max_iter: 200, tolerance_grad: 1e-9, tolerance_change: 1e-12 };
        let v = minimize(&mut f, &mut x, &mut st, &o).expect("runs");
        assert!(v < 1e-10 && (x[0] - 1.0).abs() < 1e-5 && (x[1] - 1.0).abs() < 1e-5, "{v} at {x:?}");
    }

    #[test]
    fn quadratic_in_few_iterations() {
        let mut calls = 0;
        let mut f = |x: &[f64]| -> Result<(f64, Vec<f64>), String> {
            calls += 1;
            let w = [1.0, 10.0, 100.0];
            Ok((x.iter().zip(w).map(|(v, w)| 0.5 * w * v * v).sum(), x.iter().zip(w).map(|(v, w)| w * v).collect()))
        };
        let mut x = vec![1.0, 1.0, 1.0];
        let o = Options { lr: 1.0, history: 10, max_iter: 20, tolerance_grad: 1e-10, tolerance_change: 1e-12 };
        let v = minimize(&mut f, &mut x, &mut State::default(), &o).expect("runs");
        assert!(v < 1e-12, "{v}");
    }
}
