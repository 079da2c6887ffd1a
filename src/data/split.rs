//! Splits and batches: consumes a `Dataset` (or a list of rows) and a seed, produces lists
//! of row indices.
//!
//! `split` divides the rows by fractions (train / test, or train / validation / test),
//! stratified by a label array when one is given: every class is shuffled and cut by the
//! cumulative fractions; the rounding error of each cut is carried to the next class, so
//! the parts' totals stay within one sample of the fractions and no sample is lost. Each
//! part is shuffled again so classes are interleaved. `kfold` divides the rows into K
//! cross-validation folds the same way (stratified, or plain), `leave_one_out` into one
//! fold per row. `batches` cuts rows into batches, optionally shuffled; the last partial
//! batch is kept.

use std::collections::BTreeMap;

use crate::rng::SplitMix64;

use super::dataset::{ArrayData, Dataset};

/// Fisher-Yates with a `SplitMix64`.
fn shuffle(rows: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..rows.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        rows.swap(i, j);
    }
}

/// Divides the rows of `ds` into parts by `fractions` (which add up to 1), shuffled by
/// `seed` and stratified by the array `label` when given (i32 labels; f32 labels when
/// they are integers with at most 1000 distinct values, else unstratified). No fractions:
/// one part holding every row in order. Errors on bad fractions, a missing label array,
/// or an empty first (training) part.
pub fn split(ds: &Dataset, fractions: &[f64], seed: u64, label: Option<&str>) -> Result<Vec<Vec<usize>>, String> {
    if fractions.is_empty() {
        if ds.n == 0 {
            return Err("the training part is empty: the data set has no samples".into());
        }
        return Ok(vec![(0..ds.n).collect()]);
    }
    if let Some(f) = fractions.iter().find(|f| !(0.0..=1.0).contains(*f)) {
        return Err(format!("split fractions must be between 0 and 1, found {f}"));
    }
    let total: f64 = fractions.iter().sum();
    if (total - 1.0).abs() > 1e-6 {
        return Err(format!("split fractions must add up to 1, found {total}"));
    }
    let groups = groups(ds, label)?;
    let mut rng = SplitMix64::new(seed);
    let k = fractions.len();
    let mut cum = Vec::with_capacity(k);
    let mut acc = 0.0;
    for f in fractions {
        acc += f;
        cum.push(acc);
    }
    let mut carry = vec![0.0f64; k];
    let mut parts: Vec<Vec<usize>> = vec![Vec::new(); k];
    for mut rows in groups {
        shuffle(&mut rows, &mut rng);
        let m = rows.len();
        let mut start = 0usize;
        for p in 0..k {
            let end = if p + 1 == k {
                m
            } else {
                let ideal = cum[p] * m as f64 + carry[p];
                let cut = ideal.round().clamp(start as f64, m as f64) as usize;
                carry[p] = ideal - cut as f64;
                cut
            };
            parts[p].extend_from_slice(&rows[start..end]);
            start = end;
        }
    }
    for part in &mut parts {
        shuffle(part, &mut rng);
    }
    if parts.first().is_none_or(|p| p.is_empty()) {
        return Err(format!("the training part of the split is empty: {} samples divided by {fractions:?}", ds.n));
    }
    Ok(parts)
}

/// Divides the rows of `ds` into `k` disjoint cross-validation folds that together hold
/// every row exactly once, shuffled by `seed`; fold `i` is the test part of round `i`
/// and the other folds its training part. Each fold is sorted ascending (the order
/// within a fold carries no information).
///
/// With a `label` array the folds are stratified (by the rules of [`split`]: i32 labels,
/// or f32 labels that are integers with at most 1000 distinct values; otherwise
/// unstratified): every class's rows are shuffled and dealt round-robin to the folds,
/// the dealing position carried from one class to the next (classes in label order).
/// So a class of `m` rows puts `floor(m/k)` or `ceil(m/k)` rows in every fold (its
/// proportions match the whole within one row per class), small classes are spread over
/// different folds rather than all landing in fold 0, and fold sizes differ by at most
/// one. Without a label the shuffled rows are dealt the same way.
///
/// Errors for `k < 2`, more folds than rows (leave-one-out is `--folds loo`, see
/// [`leave_one_out`]), no rows, or a missing label array.
pub fn kfold(ds: &Dataset, k: usize, seed: u64, label: Option<&str>) -> Result<Vec<Vec<usize>>, String> {
    if ds.n == 0 {
        return Err("cannot make cross-validation folds: the data set has no samples".into());
    }
    if k < 2 {
        return Err(format!("cross-validation needs at least 2 folds, found {k}"));
    }
    if k > ds.n {
        return Err(format!("{k} folds are more than the {} samples (leave-one-out is --folds loo)", ds.n));
    }
    let groups = groups(ds, label)?;
    let mut rng = SplitMix64::new(seed);
    let mut folds: Vec<Vec<usize>> = vec![Vec::with_capacity(ds.n / k + 1); k];
    let mut next = 0usize;
    for mut rows in groups {
        shuffle(&mut rows, &mut rng);
        for r in rows {
            folds[next].push(r);
            next = (next + 1) % k;
        }
    }
    for fold in &mut folds {
        fold.sort_unstable();
    }
    Ok(folds)
}

/// Leave-one-out cross-validation folds of `n` rows: `n` folds, fold `i` holding row `i`
/// alone.
pub fn leave_one_out(n: usize) -> Vec<Vec<usize>> {
    (0..n).map(|i| vec![i]).collect()
}

/// The rows grouped by label value (sorted by value), or one group of every row.
fn groups(ds: &Dataset, label: Option<&str>) -> Result<Vec<Vec<usize>>, String> {
    let all = || vec![(0..ds.n).collect::<Vec<usize>>()];
    let Some(name) = label else {
        return Ok(all());
    };
    let Some(arr) = ds.arrays.get(name) else {
        let have: Vec<&str> = ds.arrays.keys().map(String::as_str).collect();
        return Err(format!(
            "cannot stratify the split by `{name}`: the data has no such array (it has: {})",
            have.join(", ")
        ));
    };
    if arr.per_sample() != 1 || arr.rows() != ds.n {
        return Ok(all());
    }
    let mut by: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    match &arr.data {
        ArrayData::I32(v) => {
            for (i, &c) in v.iter().enumerate() {
                by.entry(i64::from(c)).or_default().push(i);
            }
        }
        ArrayData::F32(v) => {
            for (i, &c) in v.iter().enumerate() {
                if c.fract() != 0.0 || !c.is_finite() || by.len() > 1000 {
                    return Ok(all());
                }
                by.entry(c as i64).or_default().push(i);
            }
        }
    }
    Ok(by.into_values().collect())
}

/// Cuts `rows` into batches of `batch` (at least 1) rows; the last batch may be shorter.
/// With a seed, the rows are shuffled first (use `epoch_seed` for one order per epoch).
pub fn batches(rows: &[usize], batch: usize, shuffle_seed: Option<u64>) -> Vec<Vec<usize>> {
    let mut order = rows.to_vec();
    if let Some(seed) = shuffle_seed {
        shuffle(&mut order, &mut SplitMix64::new(seed));
    }
    order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
}

/// A per-epoch shuffle seed derived from the run's seed.
pub fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    let mut r = SplitMix64::new(seed ^ epoch.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    r.next_u64()
}
