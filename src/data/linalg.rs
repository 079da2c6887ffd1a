//! Dense symmetric linear algebra on row-major f64 matrices.
//!
//! The eigendecomposition for whitening (eigenvalues descending, orthonormal
//! eigenvectors): Householder reduction to tridiagonal form, then the implicit QL
//! algorithm (tred2 and tql2 of EISPACK, as in the public-domain JAMA package): O(n³),
//! accurate to rounding for any symmetric matrix, including repeated and zero eigenvalues.
//!
//! The Cholesky factorization A = L Lᵀ and its solve, for Newton's method
//! (`optim::second_order`): O(n³/3), and the test of positive definiteness.

/// The Cholesky factor of the symmetric matrix `a` (row-major n×n; only its lower
/// triangle is read): the lower-triangular L (row-major, zeros above the diagonal) with
/// A = L Lᵀ, or `None` when A is not positive definite (a pivot is not above 0, or not
/// finite). Errors on a wrong size.
pub fn cholesky(a: &[f64], n: usize) -> Result<Option<Vec<f64>>, String> {
    if a.len() != n * n {
        return Err(format!("cholesky: expected {} entries for a {n}x{n} matrix, found {}", n * n, a.len()));
    }
    let mut l = vec![0.0; n * n];
    for j in 0..n {
        let d = a[j * n + j] - l[j * n..j * n + j].iter().map(|v| v * v).sum::<f64>();
        if !(d > 0.0 && d.is_finite()) {
            return Ok(None);
        }
        let djj = d.sqrt();
        l[j * n + j] = djj;
        for i in j + 1..n {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            l[i * n + j] = (a[i * n + j] - s) / djj;
        }
    }
    Ok(Some(l))
}

/// Solves A x = b given the Cholesky factor L of A (`cholesky`): L y = b forward, then
/// Lᵀ x = y backward.
pub fn cholesky_solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut y = b.to_vec();
    for i in 0..n {
        let s: f64 = l[i * n..i * n + i].iter().zip(&y[..i]).map(|(a, b)| a * b).sum();
        y[i] = (y[i] - s) / l[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = 0.0;
        for k in i + 1..n {
            s += l[k * n + i] * y[k];
        }
        y[i] = (y[i] - s) / l[i * n + i];
    }
    y
}

/// The eigenvalues (descending) and eigenvectors of a symmetric matrix.
#[derive(Clone, Debug)]
pub struct SymmetricEigen {
    pub n: usize,
    /// Descending.
    pub values: Vec<f64>,
    /// Row-major n×n: column j (`vectors[i * n + j]` for i in 0..n) is the unit
    /// eigenvector of `values[j]`.
    pub vectors: Vec<f64>,
}

/// Decomposes the symmetric matrix `a` (row-major n×n; only symmetric input gives a
/// meaningful answer). Errors on a wrong size, non-finite entries, or no convergence.
pub fn symmetric_eigen(a: &[f64], n: usize) -> Result<SymmetricEigen, String> {
    if a.len() != n * n {
        return Err(format!("eigendecomposition: expected {} entries for a {n}x{n} matrix, found {}", n * n, a.len()));
    }
    if a.iter().any(|x| !x.is_finite()) {
        return Err("eigendecomposition: the matrix has NaN or infinite entries".into());
    }
    if n == 0 {
        return Ok(SymmetricEigen { n, values: vec![], vectors: vec![] });
    }
    let mut v: Vec<Vec<f64>> = (0..n).map(|i| a[i * n..(i + 1) * n].to_vec()).collect();
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    tred2(&mut v, &mut d, &mut e);
    tql2(&mut v, &mut d, &mut e)?;
    // Sort descending.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[j].total_cmp(&d[i]));
    let values = order.iter().map(|&j| d[j]).collect();
    let mut vectors = vec![0.0; n * n];
    for (col, &j) in order.iter().enumerate() {
        for i in 0..n {
            vectors[i * n + col] = v[i][j];
        }
    }
    Ok(SymmetricEigen { n, values, vectors })
}

/// Householder reduction to tridiagonal form; `v` becomes the accumulated transform.
/// Index loops follow the published algorithm line by line.
#[allow(clippy::needless_range_loop)]
fn tred2(v: &mut [Vec<f64>], d: &mut [f64], e: &mut [f64]) {
    let n = d.len();
    d.copy_from_slice(&v[n - 1]);
    for i in (1..n).rev() {
        let mut scale = 0.0;
        let mut h = 0.0;
        for k in 0..i {
            scale += d[k].abs();
        }
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[i - 1][j];
                v[i][j] = 0.0;
                v[j][i] = 0.0;
            }
        } else {
            for k in 0..i {
                d[k] /= scale;
                h += d[k] * d[k];
            }
            let mut f = d[i - 1];
            let mut g = h.sqrt();
            if f > 0.0 {
                g = -g;
            }
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            for ej in e.iter_mut().take(i) {
                *ej = 0.0;
            }
            for j in 0..i {
                f = d[j];
                v[j][i] = f;
                g = e[j] + v[j][j] * f;
                for k in j + 1..i {
                    g += v[k][j] * d[k];
                    e[k] += v[k][j] * f;
                }
                e[j] = g;
            }
            f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                f = d[j];
                g = e[j];
                for k in j..i {
                    v[k][j] -= f * e[k] + g * d[k];
                }
                d[j] = v[i - 1][j];
                v[i][j] = 0.0;
            }
        }
        d[i] = h;
    }
    for i in 0..n - 1 {
        v[n - 1][i] = v[i][i];
        v[i][i] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[k][i + 1] / h;
            }
            for j in 0..=i {
                let mut g = 0.0;
                for k in 0..=i {
                    g += v[k][i + 1] * v[k][j];
                }
                for k in 0..=i {
                    v[k][j] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[k][i + 1] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[n - 1][j];
        v[n - 1][j] = 0.0;
    }
    v[n - 1][n - 1] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL on the tridiagonal (d, e), accumulating rotations into `v`.
fn tql2(v: &mut [Vec<f64>], d: &mut [f64], e: &mut [f64]) -> Result<(), String> {
    let n = d.len();
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0;
    let mut tst1: f64 = 0.0;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            let mut iter = 0;
            loop {
                iter += 1;
                if iter > 100 {
                    return Err("eigendecomposition did not converge".into());
                }
                let mut g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for di in d.iter_mut().skip(l + 2) {
                    *di -= h;
                }
                f += h;
                p = d[m];
                let mut c = 1.0;
                let mut c2 = c;
                let mut c3 = c;
                let el1 = e[l + 1];
                let mut s = 0.0;
                let mut s2 = 0.0;
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    for row in v.iter_mut() {
                        h = row[i + 1];
                        row[i + 1] = s * row[i] + c * h;
                        row[i] = c * row[i] - s * h;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if !p.is_finite() || !d[l].is_finite() {
                    return Err("eigendecomposition: numerical breakdown".into());
                }
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random symmetric positive definite matrix B Bᵀ + n I.
    fn spd(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let b: Vec<f64> = (0..n * n).map(|_| rng.normal()).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] =
                    (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>() + if i == j { n as f64 } else { 0.0 };
            }
        }
        a
    }

    #[test]
    fn cholesky_reproduces_the_matrix_and_solves() {
        for n in [1, 2, 5, 17] {
            let a = spd(n, n as u64);
            let l = cholesky(&a, n).expect("sized").expect("positive definite");
            for i in 0..n {
                for j in 0..n {
                    let llt: f64 = (0..n).map(|k| l[i * n + k] * l[j * n + k]).sum();
                    assert!((llt - a[i * n + j]).abs() < 1e-12 * (1.0 + a[i * n + j].abs()), "n = {n}: ({i}, {j})");
                    if j > i {
                        assert_eq!(l[i * n + j], 0.0);
                    }
                }
            }
            let x: Vec<f64> = (0..n).map(|i| i as f64 - 1.5).collect();
            let b: Vec<f64> = (0..n).map(|i| (0..n).map(|j| a[i * n + j] * x[j]).sum()).collect();
            let got = cholesky_solve(&l, n, &b);
            for (g, w) in got.iter().zip(&x) {
                assert!((g - w).abs() < 1e-10, "n = {n}: {got:?} vs {x:?}");
            }
        }
    }

    #[test]
    fn cholesky_refuses_indefinite_and_singular() {
        // Eigenvalues 3 and -1.
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).expect("sized").is_none());
        // Singular: eigenvalues 2 and 0.
        assert!(cholesky(&[1.0, 1.0, 1.0, 1.0], 2).expect("sized").is_none());
        assert!(cholesky(&[f64::NAN], 1).expect("sized").is_none());
        assert!(cholesky(&[1.0, 0.0, 0.0], 2).is_err());
        // Only the lower triangle is read.
        let l = cholesky(&[4.0, 99.0, 2.0, 5.0], 2).expect("sized").expect("positive definite");
        assert_eq!(l, vec![2.0, 0.0, 1.0, 2.0]);
    }
}
