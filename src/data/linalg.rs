//! Symmetric eigendecomposition for whitening: consumes a symmetric n×n matrix (row-major
//! f64) and produces its eigenvalues (descending) and orthonormal eigenvectors.
//!
//! Householder reduction to tridiagonal form, then the implicit QL algorithm (tred2 and
//! tql2 of EISPACK, as in the public-domain JAMA package): O(n³), accurate to rounding for
//! any symmetric matrix, including repeated and zero eigenvalues.

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
