//! Significance tests for comparing two models: are the differences between their scores
//! larger than chance would make them?
//!
//! Two settings are covered. The same cross-validation folds (or repeated splits) scored
//! by both models give paired per-fold scores `a[i]`, `b[i]`: [`paired_t_test`] tests
//! whether their mean difference is 0, and [`corrected_paired_t_test`] does the same with
//! Nadeau and Bengio's correction for the overlap of the training sets (use it for CV
//! folds; the plain test is over-confident there). The same test rows predicted by both
//! models give per-row correctness `a_correct[i]`, `b_correct[i]`: [`mcnemar`] tests
//! whether the models err on different rows equally often.
//!
//! The distribution functions behind them are implemented here without dependencies:
//! [`ln_gamma`] (Lanczos), the regularized incomplete beta function
//! ([`regularized_beta`], continued fraction by the modified Lentz method) and incomplete
//! gamma function ([`regularized_gamma_q`], series or continued fraction), and from them
//! [`student_t_cdf`], [`t_two_sided_p`], [`erfc`], [`chi2_sf`] and the exact
//! [`binomial_two_sided_p`]. Checked against 50-digit mpmath values, the p-values agree
//! to about 1e-11 relative or better for t with 1 to 1e12 degrees of freedom and
//! chi-square with 1 to 1e6, down to p-values near 1e-300 (huge degrees of freedom are
//! handled by asymptotic forms where the continued fractions would lose digits).
//! Invalid arguments (negative degrees of freedom, NaN) give NaN; the tests return
//! `Result<_, String>` errors for unusable data.
//!
//! ```
//! use nnc::internals::stats::{paired_t_test, t_two_sided_p};
//! let t = paired_t_test(&[0.91, 0.93, 0.90, 0.94], &[0.89, 0.92, 0.90, 0.91]).expect("valid");
//! assert_eq!(t.df, 3.0);
//! assert!(t.p_value > 0.05 && t.p_value < 0.2);
//! assert!((t_two_sided_p(2.262, 9.0) - 0.05).abs() < 1e-4);
//! ```

use std::f64::consts::PI;

/// Iteration limit of the series and continued fractions (they need about
/// `sqrt(max(a, b))` terms; the limit only guards against non-convergence).
const MAX_ITER: usize = 1_000_000;
/// Relative accuracy at which a series or continued fraction stops.
const EPS: f64 = 1e-16;
/// A number near the smallest positive double, for Lentz's method.
const TINY: f64 = 1e-300;

/// The natural logarithm of the gamma function, `ln |Γ(x)|`, by the Lanczos approximation
/// (g = 7, 9 coefficients; about 1e-15 relative), with the reflection formula
/// `Γ(x) Γ(1 - x) = π / sin(π x)` for `x < 1/2`. `+inf` at the poles `0, -1, -2, ...`;
/// NaN for NaN.
///
/// ```
/// use nnc::internals::stats::ln_gamma;
/// assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
/// assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-14);
/// ```
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x.is_nan() {
        return f64::NAN;
    }
    if x == f64::INFINITY {
        return f64::INFINITY;
    }
    if x <= 0.0 && x == x.floor() {
        return f64::INFINITY;
    }
    if x < 0.5 {
        // ln|Γ(x)| = ln(π / |sin(π x)|) - ln|Γ(1 - x)|
        return (PI / (PI * x).sin().abs()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// `ln Γ(x + s) - ln Γ(x)` for `x >= 100`, from Stirling's series written without the
/// cancellation of the two large logarithms:
/// `(x - 1/2) ln(1 + s/x) + s ln(x + s) - s + c(x + s) - c(x)` with
/// `c(z) = 1/(12z) - 1/(360z³) + 1/(1260z⁵)` (error below 1e-16 for `z >= 100`).
fn ln_gamma_shift(x: f64, s: f64) -> f64 {
    let c = |z: f64| {
        let z2 = z * z;
        (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / (1260.0 * z2)) / z2) / z
    };
    (x - 0.5) * (s / x).ln_1p() + s * (x + s).ln() - s + (c(x + s) - c(x))
}

/// `ln B(a, b) = ln Γ(a) + ln Γ(b) - ln Γ(a + b)`; for a large argument the difference
/// of the two large terms is taken from [`ln_gamma_shift`], keeping its digits.
fn ln_beta(a: f64, b: f64) -> f64 {
    let (small, big) = if a < b { (a, b) } else { (b, a) };
    if big >= 100.0 {
        ln_gamma(small) - ln_gamma_shift(big, small)
    } else {
        ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
    }
}

/// The continued fraction of the incomplete beta function (Numerical Recipes' `betacf`),
/// evaluated by the modified Lentz method; NaN if it does not converge.
fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=MAX_ITER {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() <= EPS {
            return h;
        }
    }
    f64::NAN
}

/// The regularized incomplete beta function
///
/// ```text
/// I_x(a, b) = B(x; a, b) / B(a, b) = 1/B(a, b) ∫_0^x t^(a-1) (1-t)^(b-1) dt
/// ```
///
/// for `a, b > 0` and `0 <= x <= 1`, by its continued fraction (modified Lentz), using
/// `I_x(a, b) = 1 - I_(1-x)(b, a)` where that converges faster. NaN outside the domain.
///
/// ```
/// use nnc::internals::stats::regularized_beta;
/// // I_x(1, 1) = x; I_x(2, 1) = x².
/// assert!((regularized_beta(0.3, 1.0, 1.0) - 0.3).abs() < 1e-15);
/// assert!((regularized_beta(0.3, 2.0, 1.0) - 0.09).abs() < 1e-15);
/// ```
pub fn regularized_beta(x: f64, a: f64, b: f64) -> f64 {
    regularized_beta_split(x, 1.0 - x, a, b)
}

/// [`regularized_beta`] with `y = 1 - x` given separately, so a caller that knows `1 - x`
/// more precisely than the subtraction (x near 1) keeps its digits.
fn regularized_beta_split(x: f64, y: f64, a: f64, b: f64) -> f64 {
    if !(a > 0.0 && b > 0.0 && (0.0..=1.0).contains(&x)) || a.is_infinite() || b.is_infinite() {
        return f64::NAN;
    }
    if x == 0.0 || y == 0.0 {
        return if x == 0.0 { 0.0 } else { 1.0 };
    }
    if x < (a + 1.0) / (a + b + 2.0) {
        beta_by_fraction(x, y, a, b)
    } else {
        (1.0 - beta_by_fraction(y, x, b, a)).clamp(0.0, 1.0)
    }
}

/// `I_x(a, b)` from the continued fraction in `x` (`y = 1 - x`), for `0 < x < 1`:
/// `x^a (1-x)^b / (a B(a, b))` times the fraction.
fn beta_by_fraction(x: f64, y: f64, a: f64, b: f64) -> f64 {
    // The logarithm of whichever of x and y is near 1 is taken as ln(1 - other).
    let (ln_x, ln_y) = if x > 0.5 { ((-y).ln_1p(), y.ln()) } else { (x.ln(), (-x).ln_1p()) };
    let front = (a * ln_x + b * ln_y - ln_beta(a, b)).exp();
    (front * beta_continued_fraction(a, b, x) / a).clamp(0.0, 1.0)
}

/// The regularized lower and upper incomplete gamma functions `(P(a, x), Q(a, x))`,
/// `P + Q = 1`, for `a > 0`, `x >= 0`: the series of `P` when `x < a + 1`, else the
/// continued fraction of `Q` (modified Lentz). The smaller of the two is computed
/// directly, so tail probabilities keep their relative accuracy.
fn regularized_gamma(a: f64, x: f64) -> (f64, f64) {
    if !(a > 0.0 && x >= 0.0) || a.is_infinite() {
        return (f64::NAN, f64::NAN);
    }
    if x == 0.0 {
        return (0.0, 1.0);
    }
    if x == f64::INFINITY {
        return (1.0, 0.0);
    }
    // ln(x^a e^-x / Γ(a)); for large a with Stirling's series for ln Γ(a) and the large
    // terms cancelled by hand: a (ln(1 + u) - u) + ln(a)/2 - ln(2π)/2 - c(a), u = x/a - 1.
    let ln_front = if a >= 100.0 {
        let u = (x - a) / a;
        let a2 = a * a;
        let c = (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / (1260.0 * a2)) / a2) / a;
        a * (u.ln_1p() - u) + 0.5 * (a / (2.0 * PI)).ln() - c
    } else {
        a * x.ln() - x - ln_gamma(a)
    };
    if x < a + 1.0 {
        let (mut ap, mut del) = (a, 1.0 / a);
        let mut sum = del;
        for _ in 0..MAX_ITER {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * EPS {
                let p = (sum.ln() + ln_front).exp().clamp(0.0, 1.0);
                return (p, 1.0 - p);
            }
        }
        (f64::NAN, f64::NAN)
    } else {
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..=MAX_ITER {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() <= EPS {
                let q = (ln_front.exp() * h).clamp(0.0, 1.0);
                return (1.0 - q, q);
            }
        }
        (f64::NAN, f64::NAN)
    }
}

/// The regularized upper incomplete gamma function
/// `Q(a, x) = Γ(a, x) / Γ(a) = 1/Γ(a) ∫_x^∞ t^(a-1) e^(-t) dt` for `a > 0`, `x >= 0`;
/// NaN outside the domain.
///
/// ```
/// use nnc::internals::stats::regularized_gamma_q;
/// // Q(1, x) = exp(-x).
/// assert!((regularized_gamma_q(1.0, 2.5) - (-2.5f64).exp()).abs() < 1e-15);
/// ```
pub fn regularized_gamma_q(a: f64, x: f64) -> f64 {
    regularized_gamma(a, x).1
}

/// The complementary error function `erfc(x) = 2/√π ∫_x^∞ e^(-t²) dt`, as `Q(1/2, x²)`
/// for `x >= 0` and `2 - erfc(-x)` below.
///
/// ```
/// use nnc::internals::stats::erfc;
/// assert_eq!(erfc(0.0), 1.0);
/// assert!((erfc(1.0) - 0.157_299_207_050_285_13).abs() < 1e-15);
/// ```
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    regularized_gamma_q(0.5, x * x)
}

/// The cumulative distribution function of Student's t distribution with `df > 0`
/// degrees of freedom, `P(T <= t)`: with `x = df / (df + t²)` the two tails hold
/// `I_x(df/2, 1/2)` together, so `P(T <= t) = 1 - I_x(df/2, 1/2) / 2` for `t >= 0` (and
/// by symmetry below). `df = inf` gives the standard normal `erfc(-t/√2) / 2`. NaN for
/// NaN arguments or `df <= 0`.
///
/// ```
/// use nnc::internals::stats::student_t_cdf;
/// assert_eq!(student_t_cdf(0.0, 5.0), 0.5);
/// // df = 1 is the Cauchy distribution: 1/2 + atan(t)/π.
/// assert!((student_t_cdf(1.0, 1.0) - 0.75).abs() < 1e-15);
/// ```
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if df == f64::INFINITY {
        return 0.5 * erfc(-t / std::f64::consts::SQRT_2);
    }
    let tails = t_two_sided_p(t, df);
    if t >= 0.0 {
        1.0 - 0.5 * tails
    } else {
        0.5 * tails
    }
}

/// The two-sided p-value of a t statistic with `df > 0` degrees of freedom,
/// `P(|T| >= |t|) = I_x(df/2, 1/2)` with `x = df / (df + t²)`, computed directly (no
/// `1 - cdf` cancellation, so tiny p-values keep their digits). 1 at `t = 0`, 0 at
/// `t = ±inf`; `df = inf` uses the normal distribution, `erfc(|t|/√2)`. For
/// `df >= 1e6` and `t⁴ <= df / 1000` it is Fisher's expansion around the normal tail,
///
/// ```text
/// p = erfc(|t|/√2) + 2 φ(t) [ (t³ + t) / (4 df) + (3t⁷ - 7t⁵ - 5t³ - 3t) / (96 df²) ],
/// ```
///
/// accurate to about 1e-11 relative there, where the continued fraction would lose
/// about `df·ε`. NaN for NaN arguments or `df <= 0`.
///
/// ```
/// use nnc::internals::stats::t_two_sided_p;
/// assert!((t_two_sided_p(2.262, 9.0) - 0.05).abs() < 1e-4);
/// assert!((t_two_sided_p(1.959964, f64::INFINITY) - 0.05).abs() < 1e-6);
/// ```
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t.is_infinite() {
        return 0.0;
    }
    if df == f64::INFINITY {
        return erfc(t.abs() / std::f64::consts::SQRT_2);
    }
    let t = t.abs();
    // Huge df: the continued fraction would lose about df·ε (x = df/(df + t²) is near 1),
    // while the normal tail with Fisher's corrections in 1/df is then exact to double
    // precision for moderate t (error about t^11 / df³ relative; t⁴ <= df/1000 keeps it
    // below 1e-12).
    if df >= 1e6 && t.powi(4) <= df * 1e-3 {
        let t2 = t * t;
        let phi = (-0.5 * t2).exp() / (2.0 * PI).sqrt();
        let g1 = t * (t2 + 1.0) / 4.0;
        let g2 = t * (((3.0 * t2 - 7.0) * t2 - 5.0) * t2 - 3.0) / 96.0;
        return erfc(t / std::f64::consts::SQRT_2) + 2.0 * phi * (g1 / df + g2 / (df * df));
    }
    // x = df / (df + t²) and 1 - x = t² / (df + t²), written so that neither t² nor df
    // overflows and 1 - x keeps its digits when x is near 1.
    let r = t / df.sqrt();
    let r2 = r * r;
    let (x, y) = (1.0 / (1.0 + r2), r2 / (1.0 + r2));
    regularized_beta_split(x, y, 0.5 * df, 0.5)
}

/// The survival function `P(X >= x)` of the chi-square distribution with `df > 0`
/// degrees of freedom: `Q(df/2, x/2)`, which for `df = 1` is `erfc(√(x/2))`. 1 for
/// `x <= 0`; NaN for NaN arguments or `df <= 0`.
///
/// ```
/// use nnc::internals::stats::chi2_sf;
/// assert!((chi2_sf(3.841_458_820_694_124, 1.0) - 0.05).abs() < 1e-14);
/// // df = 2 is the exponential distribution with mean 2.
/// assert!((chi2_sf(3.0, 2.0) - (-1.5f64).exp()).abs() < 1e-15);
/// ```
pub fn chi2_sf(x: f64, df: f64) -> f64 {
    if x.is_nan() || df.is_nan() || df <= 0.0 || df.is_infinite() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if df == 1.0 {
        return erfc((0.5 * x).sqrt());
    }
    regularized_gamma_q(0.5 * df, 0.5 * x)
}

/// The exact two-sided p-value of `k` successes in `n` trials under a fair coin
/// (`p = 1/2`): the probability of an outcome at least as unlikely as `k`, which by
/// symmetry is `min(1, 2 Σ_{i=0}^{m} C(n, i) / 2^n)` with `m = min(k, n - k)` (the same
/// as scipy's `binomtest(k, n).pvalue`). The terms are summed in log space from the
/// largest (`i = m`) down, stopping once they no longer change the sum, so large `n` do
/// not underflow or take long. NaN when `k > n`; 1 for `n = 0`.
///
/// ```
/// use nnc::internals::stats::binomial_two_sided_p;
/// // 1 of 10: 2 * (1 + 10) / 1024.
/// assert!((binomial_two_sided_p(1, 10) - 22.0 / 1024.0).abs() < 1e-15);
/// assert_eq!(binomial_two_sided_p(5, 10), 1.0);
/// ```
pub fn binomial_two_sided_p(k: u64, n: u64) -> f64 {
    if k > n {
        return f64::NAN;
    }
    let m = k.min(n - k);
    if 2 * u128::from(m) == u128::from(n) {
        return 1.0;
    }
    let (nf, mf) = (n as f64, m as f64);
    // ln(C(n, m) / 2^n), then the ratios C(n, i-1) / C(n, i) = i / (n - i + 1).
    let ln_top = ln_gamma(nf + 1.0) - ln_gamma(mf + 1.0) - ln_gamma(nf - mf + 1.0) - nf * std::f64::consts::LN_2;
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    let mut i = m;
    while i > 0 {
        term *= i as f64 / (n - i + 1) as f64;
        if term < sum * 1e-17 {
            break;
        }
        sum += term;
        i -= 1;
    }
    (2.0 * (ln_top + sum.ln()).exp()).min(1.0)
}

/// The sample mean and standard deviation of `xs` (`ddof = 1`: the squared deviations
/// divided by `n - 1`). One value has standard deviation 0; no values give NaN for both.
///
/// ```
/// use nnc::internals::stats::mean_std;
/// assert_eq!(mean_std(&[1.0, 2.0, 3.0]), (2.0, 1.0));
/// assert_eq!(mean_std(&[4.0]), (4.0, 0.0));
/// ```
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let ss: f64 = xs.iter().map(|x| (x - mean).powi(2)).sum();
    (mean, (ss / (n - 1) as f64).sqrt())
}

/// The result of a paired t-test on the differences `a[i] - b[i]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TTest {
    /// Number of pairs.
    pub n: usize,
    /// Mean of `a - b` (positive when `a` scores higher).
    pub mean_diff: f64,
    /// Sample standard deviation of `a - b` (`ddof = 1`).
    pub std_diff: f64,
    /// The t statistic.
    pub t: f64,
    /// Degrees of freedom, `n - 1`.
    pub df: f64,
    /// Two-sided p-value of `mean_diff == 0`.
    pub p_value: f64,
}

/// The differences `a - b`, checked: equal lengths, at least 2 pairs, finite values.
fn differences(a: &[f64], b: &[f64]) -> Result<Vec<f64>, String> {
    if a.len() != b.len() {
        return Err(format!("a paired test needs equally many scores, found {} and {}", a.len(), b.len()));
    }
    if a.len() < 2 {
        return Err(format!("a paired t-test needs at least 2 pairs of scores, found {}", a.len()));
    }
    if let Some(i) = (0..a.len()).find(|&i| !a[i].is_finite() || !b[i].is_finite()) {
        return Err(format!("the scores of pair {i} are not finite: {} and {}", a[i], b[i]));
    }
    Ok(a.iter().zip(b).map(|(x, y)| x - y).collect())
}

/// A t-test of the differences `d` whose mean has variance `var_factor * s²`.
fn t_test_of(d: &[f64], var_factor: f64) -> TTest {
    let n = d.len();
    let df = (n - 1) as f64;
    if d.iter().all(|&x| x == d[0]) {
        let mean_diff = d[0];
        let (t, p_value) = if mean_diff == 0.0 { (0.0, 1.0) } else { (f64::INFINITY.copysign(mean_diff), 0.0) };
        return TTest { n, mean_diff, std_diff: 0.0, t, df, p_value };
    }
    let (mean_diff, std_diff) = mean_std(d);
    let t = mean_diff / (var_factor * std_diff * std_diff).sqrt();
    TTest { n, mean_diff, std_diff, t, df, p_value: t_two_sided_p(t, df) }
}

/// Student's paired t-test of `a` against `b` (scipy's `ttest_rel(a, b)`): with
/// `d = a - b`, `n` pairs, mean `d̄` and sample standard deviation `s` (`ddof = 1`),
///
/// ```text
/// t = d̄ / (s / √n),   df = n - 1,   p = P(|T_df| >= |t|).
/// ```
///
/// When every difference is exactly the same (`s = 0`): a common difference of 0 gives
/// `t = 0`, `p = 1`; any other gives `t = ±inf`, `p = 0` (scipy gives NaN for 0 / 0).
/// Errors for fewer than 2 pairs, unequal lengths or non-finite scores.
///
/// On cross-validation folds this test is over-confident (the folds share training
/// data, so the differences are correlated); use [`corrected_paired_t_test`] there.
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Result<TTest, String> {
    let d = differences(a, b)?;
    let n = d.len() as f64;
    Ok(t_test_of(&d, 1.0 / n))
}

/// Nadeau and Bengio's corrected resampled t-test (Machine Learning 52, 2003) for scores
/// of two models on the same `n` cross-validation folds or random splits, each split
/// training on `n_train` rows and testing on `n_test`: the variance of the mean
/// difference is `(1/n + n_test/n_train) s²` instead of the paired test's `s²/n`, which
/// accounts for the overlap of the training sets:
///
/// ```text
/// t = d̄ / √((1/n + n_test/n_train) s²),   df = n - 1.
/// ```
///
/// For k-fold CV, `n_test / n_train = 1 / (k - 1)`. Exactly equal differences are
/// handled as in [`paired_t_test`]. Errors as [`paired_t_test`], and when `n_test` or
/// `n_train` is 0.
pub fn corrected_paired_t_test(a: &[f64], b: &[f64], n_test: usize, n_train: usize) -> Result<TTest, String> {
    if n_test == 0 || n_train == 0 {
        return Err(format!(
            "the corrected t-test needs the training and test sizes of a split, found {n_train} and {n_test}"
        ));
    }
    let d = differences(a, b)?;
    let n = d.len() as f64;
    Ok(t_test_of(&d, 1.0 / n + n_test as f64 / n_train as f64))
}

/// The result of McNemar's test on paired per-row correctness of two models.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct McNemar {
    /// Rows model A got right and model B wrong.
    pub b: u64,
    /// Rows model A got wrong and model B right.
    pub c: u64,
    /// `min(b, c)` for the exact test; the continuity-corrected chi-square otherwise.
    pub statistic: f64,
    /// Two-sided p-value of "A and B err equally often on the rows they disagree on".
    pub p_value: f64,
    /// Whether the exact binomial test was used.
    pub exact: bool,
}

/// McNemar's test of two classifiers on the same rows: `a_correct[i]` and `b_correct[i]`
/// say whether each got row `i` right. Only the discordant rows count: `b` (A right,
/// B wrong) and `c` (A wrong, B right). Under the null hypothesis each discordant row is
/// a fair coin flip.
///
/// - `b + c < 25`: the exact two-sided binomial test, `p = binomial_two_sided_p(min(b,
///   c), b + c)`, with `statistic = min(b, c)` (as statsmodels' `mcnemar(exact=True)`);
/// - otherwise the chi-square statistic with Edwards' continuity correction,
///   `(|b - c| - 1)² / (b + c)`, on 1 degree of freedom (as R's `mcnemar.test` and
///   statsmodels' `mcnemar(exact=False)`);
/// - `b + c == 0`: the models never disagree, `statistic = 0`, `p = 1` (exact).
///
/// Errors for unequal lengths or no rows.
pub fn mcnemar(a_correct: &[bool], b_correct: &[bool]) -> Result<McNemar, String> {
    if a_correct.len() != b_correct.len() {
        return Err(format!(
            "McNemar's test needs one result per row from both models, found {} and {}",
            a_correct.len(),
            b_correct.len()
        ));
    }
    if a_correct.is_empty() {
        return Err("McNemar's test needs at least one row".into());
    }
    let b = a_correct.iter().zip(b_correct).filter(|(&x, &y)| x && !y).count() as u64;
    let c = a_correct.iter().zip(b_correct).filter(|(&x, &y)| !x && y).count() as u64;
    let n = b + c;
    if n == 0 {
        return Ok(McNemar { b, c, statistic: 0.0, p_value: 1.0, exact: true });
    }
    if n < 25 {
        let m = b.min(c);
        return Ok(McNemar { b, c, statistic: m as f64, p_value: binomial_two_sided_p(m, n), exact: true });
    }
    let diff = b.abs_diff(c) as f64 - 1.0;
    let statistic = diff * diff / n as f64;
    Ok(McNemar { b, c, statistic, p_value: chi2_sf(statistic, 1.0), exact: false })
}
