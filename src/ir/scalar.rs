//! The scalar meaning of the elementwise primitives, generic over the float type
//! (`Real`: f32 and f64). The reference interpreter applies it element by element and
//! `simplify` folds constants with it, so both agree by construction.

use super::{BinaryOp, UnaryOp};

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
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn erf(self) -> Self;
    fn round_even(self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
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
    fn sin(self) -> Self {
        f64::sin(self)
    }
    fn cos(self) -> Self {
        f64::cos(self)
    }
    fn powf(self, e: Self) -> Self {
        f64::powf(self, e)
    }
    fn erf(self) -> Self {
        erf64(self)
    }
    fn round_even(self) -> Self {
        f64::round_ties_even(self)
    }
    fn floor(self) -> Self {
        f64::floor(self)
    }
    fn ceil(self) -> Self {
        f64::ceil(self)
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
    // In f64, rounded once: the correctly rounded f32 result but for rare double roundings.
    fn sin(self) -> Self {
        f64::sin(f64::from(self)) as f32
    }
    fn cos(self) -> Self {
        f64::cos(f64::from(self)) as f32
    }
    fn powf(self, e: Self) -> Self {
        f32::powf(self, e)
    }
    fn erf(self) -> Self {
        erf64(self as f64) as f32
    }
    fn round_even(self) -> Self {
        f32::round_ties_even(self)
    }
    fn floor(self) -> Self {
        f32::floor(self)
    }
    fn ceil(self) -> Self {
        f32::ceil(self)
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

pub fn unary<T: Real>(op: UnaryOp, x: T) -> T {
    let zero = T::zero();
    let one = T::one();
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sign => {
            if x > zero {
                one
            } else if x < zero {
                -one
            } else {
                zero
            }
        }
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => {
            // Stable on both tails.
            if x >= zero {
                one / (one + (-x).exp())
            } else {
                let e = x.exp();
                e / (one + e)
            }
        }
        UnaryOp::Erf => x.erf(),
        UnaryOp::Round => x.round_even(),
        UnaryOp::Floor => x.floor(),
        UnaryOp::Ceil => x.ceil(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
    }
}

pub fn binary<T: Real>(op: BinaryOp, a: T, b: T) -> T {
    let bit = |c: bool| if c { T::one() } else { T::zero() };
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Pow => a.powf(b),
        // NaN from either side propagates (as the JIT's max/min).
        BinaryOp::Max => {
            if a.is_nan() || a > b {
                a
            } else {
                b
            }
        }
        BinaryOp::Min => {
            if a.is_nan() || a < b {
                a
            } else {
                b
            }
        }
        BinaryOp::Lt => bit(a < b),
        BinaryOp::Le => bit(a <= b),
        BinaryOp::Gt => bit(a > b),
        BinaryOp::Ge => bit(a >= b),
        BinaryOp::Eq => bit(a == b),
        BinaryOp::Ne => bit(a != b),
    }
}
