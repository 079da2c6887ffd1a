//! Running graphs: host tensors, symbol binding, and the reference interpreter.
//!
//! `interp` is the executable definition of every primitive and the oracle for every
//! later stage. It is generic over `Real` (f32 and f64) so gradient checks run in f64.

pub mod exec;
pub mod executable;
pub mod init;
pub mod interp;
pub mod rng;

use crate::ir::{Dim, Graph, Sym};

/// A floating-point element type the interpreter can run in.
pub trait Real:
    Copy
    + PartialOrd
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + Send
    + Sync
    + 'static
{
    const NAME: &'static str;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
    fn tanh(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn erf(self) -> Self;
    #[allow(clippy::eq_op)] // NaN is the only value unequal to itself
    fn is_nan(self) -> bool {
        self != self
    }
    fn zero() -> Self {
        Self::from_f64(0.0)
    }
    fn one() -> Self {
        Self::from_f64(1.0)
    }
}

impl Real for f64 {
    const NAME: &'static str = "f64";
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn abs(self) -> Self {
        f64::abs(self)
    }
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
    fn powf(self, e: Self) -> Self {
        f64::powf(self, e)
    }
    fn erf(self) -> Self {
        erf64(self)
    }
}

impl Real for f32 {
    const NAME: &'static str = "f32";
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn ln(self) -> Self {
        f32::ln(self)
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn abs(self) -> Self {
        f32::abs(self)
    }
    fn tanh(self) -> Self {
        f32::tanh(self)
    }
    fn powf(self, e: Self) -> Self {
        f32::powf(self, e)
    }
    fn erf(self) -> Self {
        erf64(self as f64) as f32
    }
}

/// The error function to full f64 precision: a Maclaurin series for |x| < 2.5 and a
/// continued fraction for erfc beyond (both converge fast there).
pub fn erf64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a < 2.5 {
        // erf x = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = a;
        let mut sum = a;
        let x2 = a * a;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
            if n > 200.0 {
                break;
            }
        }
        let r = sum * std::f64::consts::FRAC_2_SQRT_PI;
        return if x < 0.0 { -r } else { r };
    }
    if a > 6.0 {
        return x.signum();
    }
    // erfc a = exp(-a^2)/sqrt(pi) * 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...)))), evaluated
    // from the tail (Lentz would do too; 60 terms are plenty for a >= 2.5).
    let mut f = a;
    for k in (1..60).rev() {
        f = a + (k as f64 / 2.0) / f;
    }
    let erfc = (-a * a).exp() / (std::f64::consts::PI.sqrt() * f);
    let r = 1.0 - erfc;
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// Concrete values of a graph's symbols.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bindings(pub Vec<Option<i64>>);

impl Bindings {
    pub fn get(&self, s: Sym) -> Option<i64> {
        self.0.get(s.0 as usize).copied().flatten()
    }
    /// A dim's value; errors name the unbound symbol.
    pub fn dim(&self, d: &Dim, g: &Graph) -> Result<usize, String> {
        let v = d
            .eval(&|s| self.get(s))
            .ok_or_else(|| format!("the size `{}` depends on an unbound symbol", d.display(&g.symbols)))?;
        usize::try_from(v).map_err(|_| format!("the size `{}` is negative", d.display(&g.symbols)))
    }
    pub fn shape(&self, s: &[Dim], g: &Graph) -> Result<Vec<usize>, String> {
        s.iter().map(|d| self.dim(d, g)).collect()
    }
}

/// Binds the graph's symbols from the shapes of its inputs (by input index). Dims that
/// are a single symbol bind it; every other dim is then checked. Errors name the input,
/// the expected and the found shape.
pub fn bind_inputs(g: &Graph, shapes: &[Vec<usize>]) -> Result<Bindings, String> {
    let mut b = Bindings(vec![None; g.symbols.len()]);
    for (decl, shape) in g.inputs.iter().zip(shapes) {
        let expected = crate::ir::ty::shape_str(&decl.ty.shape, &g.symbols);
        if decl.ty.shape.len() != shape.len() {
            return Err(format!("input `{}` must have shape {expected}, found {shape:?}", decl.name));
        }
        for (d, &n) in decl.ty.shape.iter().zip(shape) {
            let syms: Vec<Sym> = d.symbols().collect();
            if syms.len() == 1 && *d == Dim::sym(syms[0]) {
                match b.get(syms[0]) {
                    None => {
                        if n == 0 {
                            return Err(format!("input `{}` has an empty dim: {shape:?}", decl.name));
                        }
                        b.0[syms[0].0 as usize] = Some(n as i64)
                    }
                    Some(v) if v == n as i64 => {}
                    Some(v) => {
                        return Err(format!(
                            "input `{}` must have shape {expected} with {} = {v}, found {shape:?}",
                            decl.name, g.symbols[syms[0].0 as usize]
                        ))
                    }
                }
            }
        }
    }
    for (decl, shape) in g.inputs.iter().zip(shapes) {
        let want = b.shape(&decl.ty.shape, g)?;
        if &want != shape {
            let expected = crate::ir::ty::shape_str(&decl.ty.shape, &g.symbols);
            return Err(format!("input `{}` must have shape {expected} ({want:?}), found {shape:?}", decl.name));
        }
    }
    Ok(b)
}
