//! Known-answer tests of `nnc::internals::stats`: the distribution functions against table values
//! and scipy 1.17.1 (`scipy.special.gammaln`, `betainc`, `gammaincc`, `erfc`,
//! `scipy.stats.t`, `chi2`, `binomtest`, `ttest_rel`; the reference numbers below are
//! scipy's, printed with `repr(float(x))`, except where a comment names mpmath), and the
//! tests on worked examples (McNemar's also against statsmodels 0.15's `mcnemar`).

use nnc::internals::stats::{
    binomial_two_sided_p, chi2_sf, corrected_paired_t_test, erfc, ln_gamma, mcnemar, mean_std, paired_t_test,
    regularized_beta, regularized_gamma_q, student_t_cdf, t_two_sided_p,
};

/// `a` is within `rel` relative (or absolute, near 0) error of `b`.
fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(f64::MIN_POSITIVE)
}

macro_rules! assert_rel {
    ($a:expr, $b:expr, $rel:expr) => {{
        let (a, b): (f64, f64) = ($a, $b);
        assert!(close(a, b, $rel), "{a} != {b} (relative error {:e})", ((a - b) / b).abs());
    }};
}

// ---------------------------------------------------------------- special functions

#[test]
fn ln_gamma_against_scipy() {
    // scipy.special.gammaln
    for (x, want) in [
        (0.1, 2.252712651734206),
        (1.5, -0.12078223763524526),
        (10.3, 13.482036786138359),
        (171.5, 709.1431630309283),
        (1e6, 12815504.569147611),
        (-2.5, -0.05624371649767401),
    ] {
        assert_rel!(ln_gamma(x), want, 1e-13);
    }
    // Factorials: ln(n!) = ln Γ(n + 1).
    let mut fact = 1.0f64;
    for n in 1..=20 {
        fact *= n as f64;
        assert_rel!(ln_gamma(n as f64 + 1.0), fact.ln(), 1e-13);
    }
    assert!(ln_gamma(1.0).abs() < 1e-15);
    assert_eq!(ln_gamma(0.0), f64::INFINITY);
    assert_eq!(ln_gamma(-3.0), f64::INFINITY);
    assert!(ln_gamma(f64::NAN).is_nan());
}

#[test]
fn incomplete_beta_gamma_and_erfc_against_scipy() {
    // scipy.special.betainc(a, b, x)
    for (x, a, b, want) in [
        (0.3, 2.5, 4.0, 0.3521975859067672),
        (0.9, 50.0, 0.5, 0.001204149832559813),
        (0.01, 0.5, 0.5, 0.06376856085851985),
    ] {
        assert_rel!(regularized_beta(x, a, b), want, 1e-12);
    }
    assert_rel!(regularized_beta(0.999, 1000.0, 1000.0), 1.0, 1e-15);
    assert!(regularized_beta(1.5, 1.0, 1.0).is_nan());
    assert!(regularized_beta(0.5, 0.0, 1.0).is_nan());
    // scipy.special.gammaincc(a, x)
    for (a, x, want) in [
        (3.5, 2.0, 0.779777408475716),
        (0.5, 9.0, 2.2090496998585475e-05),
        (100.0, 120.0, 0.027863739890520652),
        (1e4, 1e4, 0.4986701916600448),
    ] {
        assert_rel!(regularized_gamma_q(a, x), want, 1e-11);
    }
    assert!(regularized_gamma_q(-1.0, 1.0).is_nan());
    // scipy.special.erfc
    for (x, want) in [
        (0.5, 0.4795001221869535),
        (-1.2, 1.9103139782296354),
        (3.0, 2.2090496998585445e-05),
        (6.0, 2.1519736712498913e-17),
    ] {
        assert_rel!(erfc(x), want, 1e-13);
    }
    // scipy gives 0; the true value 5.2e-319 is a subnormal double.
    assert!(erfc(27.0) < 1e-300);
    assert_eq!(erfc(40.0), 0.0);
    assert_eq!(erfc(f64::NEG_INFINITY), 2.0);
}

// ---------------------------------------------------------------- t and chi-square

#[test]
fn student_t_against_tables_and_scipy() {
    // Table values: the two-sided 5% critical value is 2.262 for df 9, 2.228 for df 10,
    // 12.706 for df 1, and 1.960 for the normal distribution.
    assert!((t_two_sided_p(2.262, 9.0) - 0.05).abs() < 1e-4);
    assert!((t_two_sided_p(2.228, 10.0) - 0.05).abs() < 1e-4);
    assert!((t_two_sided_p(12.706, 1.0) - 0.05).abs() < 1e-4);
    assert!((t_two_sided_p(1.96, 1e6) - 0.05).abs() < 1e-4);
    assert!((t_two_sided_p(1.96, f64::INFINITY) - 0.05).abs() < 1e-4);
    // scipy.stats.t.cdf(t, df)
    for (t, df, want) in [
        (2.262, 9.0, 0.9749935772487727),
        (-1.5, 3.0, 0.11529193262241147),
        (0.7, 2.5, 0.728297528405226),
        (10.0, 4.0, 0.999718998188642),
        (-40.0, 30.0, 6.863022597203209e-28),
        (1.96, 1e6, 0.9750019662073651),
        (3.0, 1e9, 0.998650101935131),
    ] {
        assert_rel!(student_t_cdf(t, df), want, 1e-10);
    }
    // 2 * scipy.stats.t.sf(|t|, df): small p-values keep their relative accuracy.
    for (t, df, want) in [
        (2.262, 9.0, 0.05001284550245463),
        (1.96, 1e6, 0.04999606758526985),
        (12.0, 5.0, 7.089492517161522e-05),
        (-50.0, 10.0, 2.47431032930268e-13),
        (1.96, 1e12, 0.04999579029671816),
    ] {
        assert_rel!(t_two_sided_p(t, df), want, 1e-9);
    }
    // Huge df, where the continued fraction alone would lose about df·1e-16 and an
    // asymptotic form takes over (references: mpmath 1.4 `betainc` at 50 digits).
    for (t, df, want) in [
        (3.0, 1e12, 2.6997960633266707e-3),
        (10.0, 1e9, 1.5239744906091137e-23),
        (20.0, 1e8, 5.5094625766577934e-89),
        (15.0, 1e7, 7.351312798325309e-51),
        (3.0, 1e5, 2.700460884064719e-3),
    ] {
        assert_rel!(t_two_sided_p(t, df), want, 2e-10);
    }
    assert_eq!(t_two_sided_p(0.0, 3.0), 1.0);
    assert_eq!(t_two_sided_p(f64::INFINITY, 3.0), 0.0);
    assert_eq!(student_t_cdf(f64::NEG_INFINITY, 3.0), 0.0);
    assert!(t_two_sided_p(1.0, 0.0).is_nan());
    assert!(student_t_cdf(f64::NAN, 3.0).is_nan());
    // Symmetry.
    assert_rel!(student_t_cdf(-0.8, 7.0), 1.0 - student_t_cdf(0.8, 7.0), 1e-14);
}

#[test]
fn chi_square_against_tables_and_scipy() {
    // The 5% and 0.1% critical values of chi-square with 1 df: 3.841459 and 10.83.
    assert!((chi2_sf(3.841459, 1.0) - 0.05).abs() < 1e-8);
    // scipy.stats.chi2.sf(x, df)
    for (x, df, want) in [
        (3.841459, 1.0, 0.04999999465319563),
        (3.841458820694124, 1.0, 0.04999999999999989),
        (10.83, 1.0, 0.0009986863791802592),
        (0.5, 1.0, 0.47950012218695337),
        (100.0, 1.0, 1.5239706048320995e-23),
        (5.0, 3.0, 0.1717971442967335),
        (20.0, 7.5, 0.007657674067298914),
        (1000.0, 900.0, 0.010994608942135844),
        (0.01, 4.0, 0.9999875415886458),
    ] {
        assert_rel!(chi2_sf(x, df), want, 1e-10);
    }
    assert_eq!(chi2_sf(0.0, 1.0), 1.0);
    assert_eq!(chi2_sf(-1.0, 2.0), 1.0);
    assert_eq!(chi2_sf(f64::INFINITY, 2.0), 0.0);
    assert!(chi2_sf(1.0, 0.0).is_nan());
    assert!(chi2_sf(f64::NAN, 1.0).is_nan());
}

#[test]
fn binomial_two_sided_against_scipy() {
    // scipy.stats.binomtest(k, n).pvalue (p = 0.5)
    for (k, n, want) in [
        (1, 10, 0.021484375),
        (3, 12, 0.14599609375),
        (0, 5, 0.0625),
        (7, 24, 0.06391465663909912),
        (2, 20, 0.0004024505615234375),
        (12, 24, 1.0),
        (450, 1000, 0.0017305360849763027),
        (480, 1000, 0.2174482932041415),
    ] {
        assert_rel!(binomial_two_sided_p(k, n), want, 1e-11);
        assert_rel!(binomial_two_sided_p(n - k, n), want, 1e-11);
    }
    // Far in the tail, in log space: no underflow to 0.
    assert_rel!(binomial_two_sided_p(50, 1000), 1.8636927066537988e-216, 1e-10);
    assert_eq!(binomial_two_sided_p(0, 0), 1.0);
    assert_eq!(binomial_two_sided_p(5, 9), 1.0);
    assert!(binomial_two_sided_p(11, 10).is_nan());
    // Large n is quick (terms stop once negligible).
    let p = binomial_two_sided_p(5_000_000_000, 10_000_000_000);
    assert_eq!(p, 1.0);
    assert!(binomial_two_sided_p(4_999_900_000, 10_000_000_000) < 0.06);
}

// ---------------------------------------------------------------- tests on worked examples

/// Per-fold accuracies of two models on 10 shared folds.
const A: [f64; 10] = [0.912, 0.894, 0.931, 0.905, 0.922, 0.917, 0.899, 0.928, 0.910, 0.921];
const B: [f64; 10] = [0.903, 0.889, 0.920, 0.907, 0.911, 0.905, 0.893, 0.915, 0.902, 0.917];

#[test]
fn paired_t_test_worked_example() {
    // By hand: d = .009 .005 .011 -.002 .011 .012 .006 .013 .008 .004, mean 0.0077,
    // s = 0.0045717, t = 0.0077 / (s / √10) = 5.3262; scipy.stats.ttest_rel(A, B):
    let t = paired_t_test(&A, &B).expect("valid");
    assert_eq!(t.n, 10);
    assert_eq!(t.df, 9.0);
    assert_rel!(t.mean_diff, 0.007700000000000007, 1e-12);
    assert_rel!(t.std_diff, 0.004571651780264988, 1e-12);
    assert_rel!(t.t, 5.326201371768775, 1e-12);
    assert_rel!(t.p_value, 0.0004770670208174369, 1e-9);
    // Swapping the models flips the sign, not the p-value.
    let s = paired_t_test(&B, &A).expect("valid");
    assert_rel!(s.t, -t.t, 1e-15);
    assert_rel!(s.p_value, t.p_value, 1e-15);
    // (mean, std) of the differences.
    let d: Vec<f64> = A.iter().zip(B).map(|(a, b)| a - b).collect();
    let (m, sd) = mean_std(&d);
    assert_rel!(m, t.mean_diff, 1e-15);
    assert_rel!(sd, t.std_diff, 1e-15);
}

#[test]
fn corrected_t_test_is_more_cautious_on_cv_folds() {
    // 10-fold CV: n_test / n_train = 1/9. The reference is the formula evaluated with
    // numpy (d.mean() / sqrt((1/10 + 1/9) * d.var(ddof=1))) and scipy's t.sf.
    let c = corrected_paired_t_test(&A, &B, 100, 900).expect("valid");
    assert_rel!(c.t, 3.665743189340179, 1e-12);
    assert_rel!(c.p_value, 0.0051890238378483255, 1e-9);
    assert_eq!(c.df, 9.0);
    let plain = paired_t_test(&A, &B).expect("valid");
    assert!(c.p_value > plain.p_value * 10.0);
    assert_eq!((c.mean_diff, c.std_diff), (plain.mean_diff, plain.std_diff));
    // Random 80/20 splits.
    let c = corrected_paired_t_test(&A, &B, 200, 800).expect("valid");
    assert_rel!(c.t, 2.846974386589163, 1e-12);
    assert_rel!(c.p_value, 0.019183632465104714, 1e-9);
    assert!(corrected_paired_t_test(&A, &B, 0, 800).expect_err("no test rows").contains("test sizes"));
    assert!(corrected_paired_t_test(&A, &B, 10, 0).is_err());
}

#[test]
fn t_tests_degenerate_and_bad_input() {
    // Identical scores: t = 0, p = 1.
    let t = paired_t_test(&[0.5, 0.7, 0.9], &[0.5, 0.7, 0.9]).expect("valid");
    assert_eq!((t.t, t.p_value, t.std_diff, t.mean_diff), (0.0, 1.0, 0.0, 0.0));
    // A constant nonzero difference: t = ±inf, p = 0.
    let t = paired_t_test(&[2.0, 3.0, 4.0], &[1.0, 2.0, 3.0]).expect("valid");
    assert_eq!((t.t, t.p_value, t.std_diff, t.mean_diff), (f64::INFINITY, 0.0, 0.0, 1.0));
    let t = corrected_paired_t_test(&[1.0, 2.0], &[2.0, 3.0], 1, 4).expect("valid");
    assert_eq!((t.t, t.p_value), (f64::NEG_INFINITY, 0.0));
    // Errors.
    assert!(paired_t_test(&[1.0], &[2.0]).expect_err("one pair").contains("at least 2"));
    assert!(paired_t_test(&[], &[]).is_err());
    assert!(paired_t_test(&[1.0, 2.0], &[1.0]).expect_err("lengths").contains("2 and 1"));
    assert!(paired_t_test(&[1.0, f64::NAN], &[1.0, 2.0]).expect_err("nan").contains("pair 1"));
    assert!(paired_t_test(&[1.0, 2.0], &[f64::INFINITY, 2.0]).is_err());
    // mean_std edge cases.
    assert_eq!(mean_std(&[3.0]), (3.0, 0.0));
    let (m, s) = mean_std(&[]);
    assert!(m.is_nan() && s.is_nan());
}

/// Correctness vectors with `both` rows right for both, `b` only A right, `c` only B
/// right and `neither` wrong for both.
fn outcomes(both: usize, b: usize, c: usize, neither: usize) -> (Vec<bool>, Vec<bool>) {
    let mut x = vec![];
    let mut y = vec![];
    for (n, xa, yb) in [(both, true, true), (b, true, false), (c, false, true), (neither, false, false)] {
        x.extend(std::iter::repeat_n(xa, n));
        y.extend(std::iter::repeat_n(yb, n));
    }
    (x, y)
}

#[test]
fn mcnemar_chi_square_textbook_table() {
    // Agresti, An Introduction to Categorical Data Analysis, presidential approval
    // ratings in two surveys: 794 approve both times, 150 approve then disapprove, 86
    // disapprove then approve, 570 disapprove both. With Edwards' correction
    // (|150 - 86| - 1)² / 236 = 16.8178; statsmodels' mcnemar(exact=False) and scipy's
    // chi2.sf(16.8178, 1) give p = 4.1146e-5.
    let (a, b) = outcomes(794, 150, 86, 570);
    let m = mcnemar(&a, &b).expect("valid");
    assert_eq!((m.b, m.c, m.exact), (150, 86, false));
    assert_rel!(m.statistic, 16.81779661016949, 1e-14);
    assert_rel!(m.p_value, 4.114562281345944e-05, 1e-10);
    // Swapping the models swaps b and c and keeps the p-value.
    let s = mcnemar(&b, &a).expect("valid");
    assert_eq!((s.b, s.c), (86, 150));
    assert_eq!(s.p_value, m.p_value);
    // b = 13, c = 12 (25 discordant rows, the first chi-square case): statistic 0, p 1.
    let (a, b) = outcomes(5, 13, 12, 5);
    let m = mcnemar(&a, &b).expect("valid");
    assert_eq!((m.statistic, m.p_value, m.exact), (0.0, 1.0, false));
}

#[test]
fn mcnemar_exact_branch() {
    // b = 3, c = 10: statsmodels' mcnemar(exact=True) gives statistic 3, p 0.09228515625
    // (scipy's binomtest(3, 13)).
    let (a, b) = outcomes(20, 3, 10, 30);
    let m = mcnemar(&a, &b).expect("valid");
    assert_eq!((m.b, m.c, m.exact), (3, 10, true));
    assert_eq!(m.statistic, 3.0);
    assert_rel!(m.p_value, 0.09228515625, 1e-12);
    for (b, c, want) in [(1, 7, 0.0703125), (0, 4, 0.125), (12, 12, 1.0)] {
        let (x, y) = outcomes(2, b, c, 1);
        let m = mcnemar(&x, &y).expect("valid");
        assert!(m.exact);
        assert_rel!(m.p_value, want, 1e-12);
    }
    // The models never disagree.
    let m = mcnemar(&[true, false, true], &[true, false, true]).expect("valid");
    assert_eq!((m.b, m.c, m.statistic, m.p_value, m.exact), (0, 0, 0.0, 1.0, true));
    assert!(mcnemar(&[true], &[true, false]).expect_err("lengths").contains("1 and 2"));
    assert!(mcnemar(&[], &[]).is_err());
}
