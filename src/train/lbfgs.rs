//! L-BFGS (Nocedal & Wright, algorithm 7.4) with a strong Wolfe line search (algorithms
//! 3.5 and 3.6, cubic interpolation in the zoom), as a host loop around a compiled
//! objective-and-gradient function. Full batch, as PyTorch's `LBFGS`: each call of
//! `minimize` runs up to `max_iter` iterations.

/// The objective and its gradient at a point.
pub type Eval<'a> = dyn FnMut(&[f64]) -> Result<(f64, Vec<f64>), String> + 'a;

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
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
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

/// The minimizer of the cubic through (a, fa, ga) and (b, fb, gb), kept inside [a, b].
fn cubic(a: f64, fa: f64, ga: f64, b: f64, fb: f64, gb: f64) -> f64 {
    let d1 = ga + gb - 3.0 * (fa - fb) / (a - b);
    let disc = d1 * d1 - ga * gb;
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    if disc >= 0.0 {
        let d2 = disc.sqrt() * (b - a).signum();
        let t = b - (b - a) * (gb + d2 - d1) / (gb - ga + 2.0 * d2);
        if t.is_finite() {
            return t.clamp(lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo));
        }
    }
    0.5 * (lo + hi)
}

/// A strong Wolfe line search along `d` from `x` (c1 = 1e-4, c2 = 0.9).
fn line_search(
    f: &mut Eval,
    x: &[f64],
    fx: f64,
    gx: &[f64],
    d: &[f64],
    t0: f64,
) -> Result<(f64, f64, Vec<f64>), String> {
    let (c1, c2) = (1e-4, 0.9);
    let g0 = dot(gx, d);
    let at = |f: &mut Eval, t: f64| -> Result<(f64, Vec<f64>, f64), String> {
        let xt: Vec<f64> = x.iter().zip(d).map(|(a, b)| a + t * b).collect();
        let (ft, gt) = f(&xt)?;
        let dg = dot(&gt, d);
        Ok((ft, gt, dg))
    };
    let (mut t_prev, mut f_prev, mut dg_prev) = (0.0, fx, g0);
    let mut t = t0;
    for i in 0..25 {
        let (ft, gt, dg) = at(f, t)?;
        if !ft.is_finite() || ft > fx + c1 * t * g0 || (i > 0 && ft >= f_prev) {
            return zoom(f, &at, fx, g0, (t_prev, f_prev, dg_prev), (t, ft, dg));
        }
        if dg.abs() <= -c2 * g0 {
            return Ok((t, ft, gt));
        }
        if dg >= 0.0 {
            return zoom(f, &at, fx, g0, (t, ft, dg), (t_prev, f_prev, dg_prev));
        }
        (t_prev, f_prev, dg_prev) = (t, ft, dg);
        t *= 2.0;
    }
    let (ft, gt, _) = at(f, t)?;
    Ok((t, ft, gt))
}

type Point = (f64, f64, f64);
/// Evaluates the objective at step t: (value, gradient, directional derivative).
type Probe<'a> = dyn Fn(&mut Eval, f64) -> Result<(f64, Vec<f64>, f64), String> + 'a;

fn zoom(
    f: &mut Eval,
    at: &Probe<'_>,
    fx: f64,
    g0: f64,
    mut lo: Point,
    mut hi: Point,
) -> Result<(f64, f64, Vec<f64>), String> {
    let (c1, c2) = (1e-4, 0.9);
    let mut best: Option<(f64, f64, Vec<f64>)> = None;
    for _ in 0..25 {
        let hi_f = if hi.1.is_finite() { hi.1 } else { lo.1 + 1e3 * (1.0 + lo.1.abs()) };
        let t = cubic(lo.0, lo.1, lo.2, hi.0, hi_f, if hi.2.is_finite() { hi.2 } else { 0.0 });
        let (ft, gt, dg) = at(f, t)?;
        if ft.is_finite() && best.as_ref().is_none_or(|b| ft < b.1) {
            best = Some((t, ft, gt.clone()));
        }
        if !ft.is_finite() || ft > fx + c1 * t * g0 || ft >= lo.1 {
            hi = (t, ft, dg);
        } else {
            if dg.abs() <= -c2 * g0 {
                return Ok((t, ft, gt));
            }
            if dg * (hi.0 - lo.0) >= 0.0 {
                hi = lo;
            }
            lo = (t, ft, dg);
        }
        if (hi.0 - lo.0).abs() < 1e-12 {
            break;
        }
    }
    match best {
        Some(b) if b.1 < fx => Ok(b),
        _ => Ok((0.0, fx, Vec::new())),
    }
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
        let (t, ft, gt) = line_search(f, x, fx, &g, &d, t0)?;
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
        let converged = (fx - ft).abs() < 1e-12 * (1.0 + fx.abs());
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
        let o = Options { lr: 1.0, history: 10, max_iter: 200, tolerance_grad: 1e-9 };
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
        let o = Options { lr: 1.0, history: 10, max_iter: 20, tolerance_grad: 1e-10 };
        let v = minimize(&mut f, &mut x, &mut State::default(), &o).expect("runs");
        assert!(v < 1e-12, "{v}");
    }
}
