//! Second-order host-loop optimizers around a compiled objective, its gradient and its
//! Hessian-vector products (`autodiff::directional_graph`): full BFGS, Newton's method
//! with the exact Hessian, and Newton-CG (truncated Newton, Hessian-free). Full batch,
//! like L-BFGS (`lbfgs`): each call of `minimize` runs up to `max_iter` iterations, and
//! every one ends with the strong Wolfe line search of `line_search`.
//!
//! - BFGS (Nocedal & Wright, algorithm 6.1): the dense inverse-Hessian approximation
//!   H_{k+1} = (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ, ρ = 1/yᵀs, skipped when yᵀs ≤ 1e-10,
//!   with H_0 = (yᵀs / yᵀy) I set before the first update (6.20); the first step is
//!   steepest descent. n² f64s of state, kept between calls (`State`).
//! - Newton: H assembled column by column from n Hessian-vector products, symmetrized,
//!   solved by Cholesky (`data::linalg`) with H + λI; λ starts at `damping` every
//!   iteration and grows ×10 (Levenberg–Marquardt) until the factorization succeeds,
//!   which makes the direction a descent direction where H is not positive definite
//!   (saddles). Then the line search from the unit step, or the unit step alone.
//! - Newton-CG (algorithm 7.1): conjugate gradients on H p = −g with products H v only,
//!   stopped at the residual ‖r‖ ≤ η‖g‖, η = min(tol, √‖g‖) (superlinear near the optimum),
//!   at negative curvature (dᵀHd ≤ 0: the iterate so far, or −g on the first CG step, as
//!   Steihaug does), or after `max_cg` products.

use super::line_search::{dot, strong_wolfe};
use crate::data::linalg;

/// The function being minimized: its value and gradient, and Hessian-vector products.
pub trait Objective {
    fn eval(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>), String>;
    /// H(x) v.
    fn hvp(&mut self, x: &[f64], v: &[f64]) -> Result<Vec<f64>, String>;
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// The first trial step of each line search (scaled by 1/‖g‖₁ on the very first).
    Bfgs { lr: f64 },
    /// The starting damping λ and whether to search along the Newton direction.
    Newton { damping: f64, line_search: bool },
    /// The most Hessian-vector products per iteration and the cap of the forcing term.
    NewtonCg { max_cg: usize, tol: f64 },
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Bfgs { .. } => "bfgs",
            Method::Newton { .. } => "newton",
            Method::NewtonCg { .. } => "newton_cg",
        }
    }

    /// The largest parameter count the method accepts (`limits`), if it has one.
    pub fn max_params(&self) -> Option<usize> {
        match self {
            Method::Bfgs { .. } => Some(crate::limits::MAX_BFGS_PARAMS),
            Method::Newton { .. } => Some(crate::limits::MAX_NEWTON_PARAMS),
            Method::NewtonCg { .. } => None,
        }
    }

    /// The optimizer's own memory in bytes at `n` parameters, at its peak inside an
    /// iteration: BFGS keeps the n×n inverse Hessian (f64) between iterations; Newton
    /// holds the Hessian and its Cholesky factor (2 n² f64) while it solves; Newton-CG
    /// the CG vectors (iterate, residual, direction, product, unit vector: 5 n f64).
    /// Not counted: the point, gradient and line-search vectors every method shares.
    pub fn state_bytes(&self, n: usize) -> usize {
        match self {
            Method::Bfgs { .. } => n * n * 8,
            Method::Newton { .. } => 2 * n * n * 8,
            Method::NewtonCg { .. } => 5 * n * 8,
        }
    }
}

/// Refuses a model with more parameters than `m` can handle, naming the count.
pub fn check_size(m: &Method, n: usize) -> Result<(), String> {
    match m.max_params() {
        Some(max) if n > max => Err(format!(
            "`optimizer = {}` keeps a dense {n}×{n} matrix for this model's {n} parameters ({:.0} MB); it accepts at most \
             {max} parameters: use `newton_cg` or `lbfgs`, which need no matrix",
            m.name(),
            m.state_bytes(n) as f64 / 1e6
        )),
        _ => Ok(()),
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub method: Method,
    pub max_iter: usize,
    /// Stop when the largest gradient component is at most this.
    pub tolerance_grad: f64,
    /// Stop when an iteration changes the objective by less than this, relative to
    /// 1 + |f| (0: only the gradient, or a line search that finds no decrease, stops).
    pub tolerance_change: f64,
}

/// What is kept between calls: BFGS's inverse Hessian (empty before the first update).
#[derive(Clone, Debug, Default)]
pub struct State {
    h: Vec<f64>,
    iterations: usize,
}

impl State {
    /// The bytes of state kept between calls.
    pub fn bytes(&self) -> usize {
        self.h.len() * 8
    }
}

/// One point of the run: the objective and the gradient's Euclidean norm there, and of
/// the step that reached it: its length along the direction (1: the full Newton step),
/// the damping it used (Newton) and its Hessian-vector products.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Iterate {
    pub value: f64,
    pub grad_norm: f64,
    pub step: f64,
    pub damping: f64,
    pub hvps: usize,
}

fn norm(v: &[f64]) -> f64 {
    dot(v, v).sqrt()
}

/// Runs up to `max_iter` iterations from `x` (updated in place). Returns every point
/// visited, the start first; the last one's value is the final objective.
pub fn minimize(obj: &mut dyn Objective, x: &mut [f64], st: &mut State, o: &Options) -> Result<Vec<Iterate>, String> {
    let n = x.len();
    check_size(&o.method, n)?;
    let (mut fx, mut g) = obj.eval(x)?;
    let mut trace = vec![Iterate { value: fx, grad_norm: norm(&g), step: 0.0, damping: 0.0, hvps: 0 }];
    for _ in 0..o.max_iter {
        let gmax = g.iter().map(|v| v.abs()).fold(0.0, f64::max);
        if gmax <= o.tolerance_grad || !fx.is_finite() {
            break;
        }
        let (d, t0, damping, hvps) = match o.method {
            Method::Bfgs { lr } => {
                let mut d = if st.h.is_empty() { neg(&g) } else { neg(&symv(&st.h, &g)) };
                if dot(&d, &g) >= 0.0 {
                    // Not a descent direction: restart from steepest descent.
                    st.h.clear();
                    d = neg(&g);
                }
                let t0 = if st.h.is_empty() && st.iterations == 0 {
                    lr * (1.0f64).min(1.0 / g.iter().map(|v| v.abs()).sum::<f64>().max(1e-12))
                } else {
                    lr
                };
                (d, t0, 0.0, 0)
            }
            Method::Newton { damping, .. } => {
                let (d, lambda) = newton_direction(obj, x, &g, damping)?;
                (d, 1.0, lambda, n)
            }
            Method::NewtonCg { max_cg, tol } => {
                let (d, k) = cg_direction(obj, x, &g, max_cg, tol)?;
                (d, 1.0, 0.0, k)
            }
        };
        st.iterations += 1;
        let unit = matches!(o.method, Method::Newton { line_search: false, .. });
        let (t, ft, gt) = if unit {
            let xt: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + b).collect();
            let (ft, gt) = obj.eval(&xt)?;
            (1.0, ft, gt)
        } else {
            let mut f = |p: &[f64]| obj.eval(p);
            strong_wolfe(&mut f, x, fx, &g, &d, t0)?
        };
        if t == 0.0 || gt.is_empty() {
            break;
        }
        let s: Vec<f64> = d.iter().map(|v| t * v).collect();
        for (xi, si) in x.iter_mut().zip(&s) {
            *xi += si;
        }
        if matches!(o.method, Method::Bfgs { .. }) {
            let y: Vec<f64> = gt.iter().zip(&g).map(|(a, b)| a - b).collect();
            bfgs_update(&mut st.h, &s, &y);
        }
        let converged = (fx - ft).abs() < o.tolerance_change * (1.0 + fx.abs()) && !unit;
        fx = ft;
        g = gt;
        trace.push(Iterate { value: fx, grad_norm: norm(&g), step: t, damping, hvps });
        if converged {
            break;
        }
    }
    Ok(trace)
}

fn neg(v: &[f64]) -> Vec<f64> {
    v.iter().map(|a| -a).collect()
}

/// The product of the symmetric row-major matrix `h` with `v`.
fn symv(h: &[f64], v: &[f64]) -> Vec<f64> {
    let n = v.len();
    (0..n).map(|i| dot(&h[i * n..(i + 1) * n], v)).collect()
}

/// The BFGS update of the inverse Hessian `h` with the step `s` and the gradient change
/// `y`, in O(n²): with u = H y, H+ = H − ρ (s uᵀ + u sᵀ) + (ρ² yᵀu + ρ) s sᵀ. Skipped when
/// yᵀs ≤ 1e-10 (the curvature condition fails: the update would lose definiteness).
fn bfgs_update(h: &mut Vec<f64>, s: &[f64], y: &[f64]) {
    let n = s.len();
    let ys = dot(y, s);
    if ys <= 1e-10 {
        return;
    }
    if h.is_empty() {
        let gamma = ys / dot(y, y);
        *h = vec![0.0; n * n];
        for i in 0..n {
            h[i * n + i] = gamma;
        }
    }
    let rho = 1.0 / ys;
    let u = symv(h, y);
    let c = rho * rho * dot(y, &u) + rho;
    for i in 0..n {
        let row = &mut h[i * n..(i + 1) * n];
        let (si, ui) = (s[i], u[i]);
        for j in 0..n {
            row[j] += -rho * (si * u[j] + ui * s[j]) + c * si * s[j];
        }
    }
}

/// The exact Hessian at `x`, column j = H e_j, symmetrized: (H + Hᵀ)/2.
pub fn hessian(obj: &mut dyn Objective, x: &[f64]) -> Result<Vec<f64>, String> {
    let n = x.len();
    let mut h = vec![0.0; n * n];
    let mut e = vec![0.0; n];
    for j in 0..n {
        e[j] = 1.0;
        let col = obj.hvp(x, &e)?;
        e[j] = 0.0;
        if col.len() != n {
            return Err(format!("internal error: a Hessian-vector product of length {} for {n} parameters", col.len()));
        }
        for (i, c) in col.iter().enumerate() {
            h[i * n + j] = *c;
        }
    }
    for i in 0..n {
        for j in 0..i {
            let m = 0.5 * (h[i * n + j] + h[j * n + i]);
            h[i * n + j] = m;
            h[j * n + i] = m;
        }
    }
    if h.iter().any(|v| !v.is_finite()) {
        return Err("the Hessian has NaN or infinite entries".into());
    }
    Ok(h)
}

/// The damped Newton direction −(H + λI)⁻¹ g and the λ used: λ starts at `damping` and
/// grows ×10 until H + λI has a Cholesky factor.
fn newton_direction(obj: &mut dyn Objective, x: &[f64], g: &[f64], damping: f64) -> Result<(Vec<f64>, f64), String> {
    let n = x.len();
    let h = hessian(obj, x)?;
    // A zero damping that fails grows from a size relative to the diagonal.
    let scale = (0..n).map(|i| h[i * n + i].abs()).fold(1.0, f64::max);
    let mut lambda = damping;
    let mut a = h;
    let mut added = 0.0;
    for _ in 0..64 {
        for i in 0..n {
            a[i * n + i] += lambda - added;
        }
        added = lambda;
        if let Some(l) = linalg::cholesky(&a, n)? {
            let d = linalg::cholesky_solve(&l, n, &neg(g));
            return Ok((d, lambda));
        }
        lambda = (lambda * 10.0).max(1e-10 * scale);
    }
    Err(format!("the Hessian plus {lambda:e}·I is still not positive definite"))
}

/// Truncated conjugate gradients on H p = −g: the direction and the products used.
fn cg_direction(
    obj: &mut dyn Objective,
    x: &[f64],
    g: &[f64],
    max_cg: usize,
    tol: f64,
) -> Result<(Vec<f64>, usize), String> {
    let gnorm = norm(g);
    let eta = tol.min(gnorm.sqrt());
    let mut z = vec![0.0; g.len()];
    let mut r = g.to_vec();
    let mut d = neg(g);
    let mut rr = dot(&r, &r);
    for k in 0..max_cg {
        let bd = obj.hvp(x, &d)?;
        let curv = dot(&d, &bd);
        if !curv.is_finite() {
            return Err("a Hessian-vector product is NaN or infinite".into());
        }
        if curv <= 0.0 {
            // Negative curvature: stop (Steihaug); steepest descent if nothing yet.
            return Ok((if k == 0 { neg(g) } else { z }, k + 1));
        }
        let alpha = rr / curv;
        for i in 0..z.len() {
            z[i] += alpha * d[i];
            r[i] += alpha * bd[i];
        }
        let rr_new = dot(&r, &r);
        if rr_new.sqrt() <= eta * gnorm {
            return Ok((z, k + 1));
        }
        let beta = rr_new / rr;
        rr = rr_new;
        for i in 0..d.len() {
            d[i] = -r[i] + beta * d[i];
        }
    }
    Ok((z, max_cg))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rosenbrock's function with its exact Hessian.
    struct Rosen;
    impl Objective for Rosen {
        fn eval(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>), String> {
            let (a, b) = (x[0], x[1]);
            let v = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            Ok((v, vec![-2.0 * (1.0 - a) - 400.0 * a * (b - a * a), 200.0 * (b - a * a)]))
        }
        fn hvp(&mut self, x: &[f64], v: &[f64]) -> Result<Vec<f64>, String> {
            let (a, b) = (x[0], x[1]);
            let h = [2.0 - 400.0 * (b - a * a) + 800.0 * a * a, -400.0 * a, -400.0 * a, 200.0];
            Ok(vec![h[0] * v[0] + h[1] * v[1], h[2] * v[0] + h[3] * v[1]])
        }
    }

    fn opts(method: Method, max_iter: usize) -> Options {
        Options { method, max_iter, tolerance_grad: 1e-10, tolerance_change: 1e-12 }
    }

    #[test]
    fn rosenbrock_every_method() {
        for m in [
            Method::Bfgs { lr: 1.0 },
            Method::Newton { damping: 1e-4, line_search: true },
            Method::NewtonCg { max_cg: 50, tol: 0.5 },
        ] {
            let mut x = vec![-1.2, 1.0];
            let trace = minimize(&mut Rosen, &mut x, &mut State::default(), &opts(m, 200)).expect("runs");
            let v = trace.last().expect("a point").value;
            assert!(v < 1e-14 && (x[0] - 1.0).abs() < 1e-6 && (x[1] - 1.0).abs() < 1e-6, "{m:?}: {v} at {x:?}");
            // Rosenbrock's start is not in a convex region: Newton damped itself there.
            if let Method::Newton { .. } = m {
                assert!(trace.len() < 40, "{} iterations", trace.len());
            }
        }
    }

    /// A quadratic ½ xᵀ A x − bᵀx (A positive definite): Newton solves it in one step.
    struct Quad {
        a: Vec<f64>,
        b: Vec<f64>,
    }
    impl Objective for Quad {
        fn eval(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>), String> {
            let ax = symv(&self.a, x);
            Ok((0.5 * dot(x, &ax) - dot(&self.b, x), ax.iter().zip(&self.b).map(|(p, q)| p - q).collect()))
        }
        fn hvp(&mut self, _: &[f64], v: &[f64]) -> Result<Vec<f64>, String> {
            Ok(symv(&self.a, v))
        }
    }

    fn quad() -> Quad {
        Quad { a: vec![4.0, 1.0, 0.0, 1.0, 3.0, 0.5, 0.0, 0.5, 2.0], b: vec![1.0, -2.0, 0.5] }
    }

    #[test]
    fn newton_solves_a_quadratic_in_one_step() {
        let mut q = quad();
        let mut x = vec![0.0; 3];
        let o = opts(Method::Newton { damping: 0.0, line_search: false }, 1);
        let trace = minimize(&mut q, &mut x, &mut State::default(), &o).expect("runs");
        assert!(trace[1].grad_norm < 1e-12, "{trace:?}");
        assert_eq!(trace[1].hvps, 3);
        // Newton-CG: CG ends in at most n products on an n-dimensional quadratic.
        let mut x = vec![0.0; 3];
        let o = opts(Method::NewtonCg { max_cg: 50, tol: 1e-12 }, 1);
        let trace = minimize(&mut q, &mut x, &mut State::default(), &o).expect("runs");
        assert!(trace[1].grad_norm < 1e-10 && trace[1].hvps <= 3, "{trace:?}");
    }

    #[test]
    fn bfgs_keeps_the_inverse_hessian_and_finds_the_minimum() {
        let mut q = quad();
        let mut x = vec![0.0; 3];
        let mut st = State::default();
        let trace = minimize(&mut q, &mut x, &mut st, &opts(Method::Bfgs { lr: 1.0 }, 30)).expect("runs");
        assert!(trace.last().expect("a point").grad_norm < 1e-7, "{trace:?}");
        assert_eq!(st.bytes(), 9 * 8);
        // Near the minimum H approximates A⁻¹: H A ≈ I.
        for i in 0..3 {
            for j in 0..3 {
                let ha: f64 = (0..3).map(|k| st.h[i * 3 + k] * q.a[k * 3 + j]).sum();
                assert!((ha - if i == j { 1.0 } else { 0.0 }).abs() < 0.1, "H A at ({i}, {j}) = {ha}");
            }
        }
    }

    #[test]
    fn bfgs_update_satisfies_the_secant_equation() {
        let mut h = Vec::new();
        let (s, y) = ([0.5, -0.2, 0.1], [1.0, 0.3, -0.2]);
        bfgs_update(&mut h, &s, &y);
        let hy = symv(&h, &y);
        for (a, b) in hy.iter().zip(&s) {
            assert!((a - b).abs() < 1e-12, "H y = {hy:?}, s = {s:?}");
        }
        // yᵀs <= 0: skipped, H unchanged.
        let before = h.clone();
        bfgs_update(&mut h, &[1.0, 0.0, 0.0], &[-1.0, 0.0, 0.0]);
        assert_eq!(h, before);
    }

    /// f = x² − y² + y⁴/4: a saddle at the origin, minima at y = ±√2.
    struct Saddle;
    impl Objective for Saddle {
        fn eval(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>), String> {
            let (a, b) = (x[0], x[1]);
            Ok((a * a - b * b + 0.25 * b.powi(4), vec![2.0 * a, -2.0 * b + b.powi(3)]))
        }
        fn hvp(&mut self, x: &[f64], v: &[f64]) -> Result<Vec<f64>, String> {
            Ok(vec![2.0 * v[0], (-2.0 + 3.0 * x[1] * x[1]) * v[1]])
        }
    }

    #[test]
    fn newton_damps_at_a_saddle() {
        let mut x = vec![0.5, 0.1];
        let o = opts(Method::Newton { damping: 1e-4, line_search: true }, 50);
        let trace = minimize(&mut Saddle, &mut x, &mut State::default(), &o).expect("runs");
        assert!(trace[1].damping >= 1.0, "the first Hessian is indefinite: damping {}", trace[1].damping);
        assert!((x[1].abs() - 2f64.sqrt()).abs() < 1e-8 && x[0].abs() < 1e-8, "{x:?}");
        // Newton-CG meets the negative curvature and does not stop at the saddle either.
        let mut x = vec![0.5, 0.1];
        let o = opts(Method::NewtonCg { max_cg: 10, tol: 0.5 }, 50);
        minimize(&mut Saddle, &mut x, &mut State::default(), &o).expect("runs");
        assert!((x[1].abs() - 2f64.sqrt()).abs() < 1e-8 && x[0].abs() < 1e-8, "{x:?}");
    }

    #[test]
    fn refuses_above_the_limit_naming_the_count() {
        let n = crate::limits::MAX_NEWTON_PARAMS + 1;
        let e = check_size(&Method::Newton { damping: 1e-4, line_search: true }, n).expect_err("refused");
        assert!(e.contains(&format!("{n} parameters")) && e.contains("newton_cg"), "{e}");
        assert!(check_size(&Method::NewtonCg { max_cg: 5, tol: 0.5 }, 10 * n).is_ok());
        assert!(check_size(&Method::Bfgs { lr: 1.0 }, crate::limits::MAX_BFGS_PARAMS).is_ok());
    }
}
