//! The strong Wolfe line search (Nocedal & Wright, algorithms 3.5 and 3.6, cubic
//! interpolation in the zoom) shared by the host-loop optimizers: L-BFGS (`lbfgs`), BFGS,
//! Newton and Newton-CG (`second_order`).

/// The objective and its gradient at a point.
pub type Eval<'a> = dyn FnMut(&[f64]) -> Result<(f64, Vec<f64>), String> + 'a;

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
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

/// A strong Wolfe line search along the descent direction `d` from `x` (c1 = 1e-4,
/// c2 = 0.9), first trying the step `t0`. Returns the step, the objective and the
/// gradient there; a step of 0 with an empty gradient when no step decreases the
/// objective.
pub fn strong_wolfe(
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
