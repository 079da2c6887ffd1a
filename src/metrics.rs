//! Evaluation metrics for classifiers and regressors, their text and JSON forms, and a
//! per-epoch log written as `metrics.csv`.
//!
//! Classification takes row-major class scores `[n, k]` (logits or probabilities; `f32` or
//! `f64`) and integer labels in `0..classes`. `k == 1` is a single sigmoid column (binary:
//! class 1 when the logit is > 0, or the probability > 0.5); `k >= 2` predicts the arg-max
//! (the lowest index on ties; NaN scores never win). Regression takes predictions and
//! targets of equal length.
//!
//! Names and definitions follow scikit-learn: for two classes `precision`, `recall` and
//! `f1` are those of the positive class 1 (`average='binary'`), `*_macro` and `*_weighted`
//! are `average='macro'` and `average='weighted'`, `auc` is `roc_auc_score`,
//! `average_precision` is `average_precision_score` and `auc_ovr` is
//! `roc_auc_score(multi_class='ovr')`. Curves ([`roc_curve`], [`pr_curve`]) take one score
//! per row for one class against the rest ([`positive_scores`]).
//!
//! Named results are a `BTreeMap<String, f64>` (`Metrics`): `format_lines` gives
//! `test_accuracy: 0.972` lines and `to_json` a JSON object. Undefined values (the AUC when
//! only one class is present) are NaN, printed `nan` and written as JSON `null`.
//!
//! ```
//! use nnc::internals::metrics::{classification_metrics, format_lines, ScoreKind};
//! let scores = [2.0f32, -1.0, 0.5, 1.5, -0.3, 0.2];
//! let m = classification_metrics(&scores, 2, &[0, 1, 0], ScoreKind::Logits, "test_").expect("valid");
//! assert_eq!(m["test_accuracy"], 2.0 / 3.0);
//! assert!(format_lines(&m).contains("test_accuracy: 0.666667\n"));
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Named metric values, sorted by name.
pub type Metrics = BTreeMap<String, f64>;

/// What the class scores are. It matters only for a single score column (`k == 1`), where
/// it picks the decision threshold (0 for a logit, 0.5 for a probability), and for the AUC
/// of two score columns (logits compare `z1 - z0`, probabilities compare `p1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreKind {
    Logits,
    Probabilities,
}

/// The number of classes that `k` score columns describe: 2 for a single sigmoid column.
pub fn num_classes(k: usize) -> usize {
    if k == 1 {
        2
    } else {
        k
    }
}

/// Checks that `scores` holds whole rows of `k` and returns the row count.
fn rows_of(len: usize, k: usize) -> Result<usize, String> {
    if k == 0 {
        return Err("scores need at least one column".into());
    }
    if len / k * k != len {
        return Err(format!("{len} scores do not form rows of {k} columns"));
    }
    Ok(len / k)
}

fn check_labels(labels: &[i32], classes: usize, what: &str) -> Result<(), String> {
    for (i, &l) in labels.iter().enumerate() {
        if l < 0 || l as usize >= classes {
            return Err(format!("{what} {i} is {l}, outside 0..{classes}"));
        }
    }
    Ok(())
}

fn check_len(a: usize, b: usize, what_a: &str, what_b: &str) -> Result<(), String> {
    if a != b {
        return Err(format!("{a} {what_a} but {b} {what_b}"));
    }
    if a == 0 {
        return Err(format!("no {what_a} to evaluate"));
    }
    Ok(())
}

/// Predicted class per row of `scores` (`[n, k]` row-major): the arg-max of each row, or
/// for `k == 1` class 1 when the score exceeds the threshold of `kind`.
pub fn predicted_classes<T: Copy + Into<f64>>(scores: &[T], k: usize, kind: ScoreKind) -> Result<Vec<i32>, String> {
    let n = rows_of(scores.len(), k)?;
    if k > i32::MAX as usize {
        return Err(format!("{k} classes are too many"));
    }
    let threshold = match kind {
        ScoreKind::Logits => 0.0,
        ScoreKind::Probabilities => 0.5,
    };
    let mut out = Vec::with_capacity(n);
    for row in scores.chunks_exact(k) {
        if k == 1 {
            let s: f64 = row[0].into();
            out.push(i32::from(s > threshold));
            continue;
        }
        let mut best = 0usize;
        let mut best_score = f64::NAN;
        for (j, &s) in row.iter().enumerate() {
            let s: f64 = s.into();
            if !s.is_nan() && (best_score.is_nan() || s > best_score) {
                best = j;
                best_score = s;
            }
        }
        out.push(best as i32);
    }
    Ok(out)
}

/// Fraction of predictions equal to their labels.
pub fn accuracy(predicted: &[i32], labels: &[i32]) -> Result<f64, String> {
    check_len(predicted.len(), labels.len(), "predictions", "labels")?;
    let hits = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    Ok(hits as f64 / labels.len() as f64)
}

/// A `classes x classes` confusion matrix: rows are true classes, columns predicted ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    counts: Vec<u64>,
}

/// Precision, recall, F1 and support of one class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Samples whose true class this is.
    pub support: u64,
    /// Samples predicted as this class.
    pub predicted: u64,
}

/// Averages of the per-class scores: macro ([`ConfusionMatrix::macro_scores`]) or
/// support-weighted ([`ConfusionMatrix::weighted_scores`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MacroScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// How many classes the averages are over (for weighted averages: the classes of
    /// nonzero weight, i.e. with support).
    pub classes: usize,
}

impl ConfusionMatrix {
    /// Counts (true, predicted) pairs; both must lie in `0..classes`, and `classes` in
    /// `1..=4096`.
    pub fn new(predicted: &[i32], labels: &[i32], classes: usize) -> Result<ConfusionMatrix, String> {
        check_len(predicted.len(), labels.len(), "predictions", "labels")?;
        if classes == 0 {
            return Err("a confusion matrix needs at least one class".into());
        }
        let cells =
            classes.checked_mul(classes).filter(|&c| c <= 1 << 24).ok_or(format!("{classes} classes are too many"))?;
        check_labels(labels, classes, "label")?;
        check_labels(predicted, classes, "prediction")?;
        let mut counts = vec![0u64; cells];
        for (&p, &l) in predicted.iter().zip(labels) {
            counts[l as usize * classes + p as usize] += 1;
        }
        Ok(ConfusionMatrix { classes, counts })
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Samples of true class `actual` predicted as `predicted` (0 outside the matrix).
    pub fn get(&self, actual: usize, predicted: usize) -> u64 {
        if actual >= self.classes || predicted >= self.classes {
            return 0;
        }
        self.counts[actual * self.classes + predicted]
    }

    /// The rows (true classes) of the matrix.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.counts.chunks(self.classes.max(1)).map(|r| r.to_vec()).collect()
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Scores of class `c`. A ratio with a zero denominator is 0 (a class never predicted
    /// has precision 0; a class never present has recall 0), as scikit-learn's
    /// `zero_division=0`.
    pub fn class_scores(&self, c: usize) -> ClassScores {
        let tp = self.get(c, c);
        let support: u64 = (0..self.classes).map(|p| self.get(c, p)).sum();
        let predicted: u64 = (0..self.classes).map(|a| self.get(a, c)).sum();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision = ratio(tp, predicted);
        let recall = ratio(tp, support);
        let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
        ClassScores { precision, recall, f1, support, predicted }
    }

    /// Unweighted means of the per-class precision, recall and F1 (macro F1 is the mean of
    /// the per-class F1, not the F1 of the macro precision and recall). A class with no
    /// support and no prediction is left out of the average, as it says nothing about the
    /// classifier; a class present but never predicted counts with precision 0, and one
    /// predicted but never present counts with recall 0. With no classes left all three
    /// are NaN.
    ///
    /// This is scikit-learn's `average='macro'` with `labels=None`, which averages over
    /// the union of the classes in `y_true` and `y_pred` (`unique_labels`), with
    /// `zero_division=0`.
    pub fn macro_scores(&self) -> MacroScores {
        let used: Vec<ClassScores> =
            (0..self.classes).map(|c| self.class_scores(c)).filter(|s| s.support > 0 || s.predicted > 0).collect();
        let n = used.len();
        let mean = |f: fn(&ClassScores) -> f64| {
            if n == 0 {
                f64::NAN
            } else {
                used.iter().map(f).sum::<f64>() / n as f64
            }
        };
        MacroScores { precision: mean(|s| s.precision), recall: mean(|s| s.recall), f1: mean(|s| s.f1), classes: n }
    }

    /// Support-weighted means of the per-class precision, recall and F1, scikit-learn's
    /// `average='weighted'`: with `s_c` the number of samples of true class `c`,
    ///
    /// ```text
    /// precision_weighted = sum_c s_c * precision_c / sum_c s_c
    /// ```
    ///
    /// and likewise for recall and F1. A class with no support weighs 0 (so a class only
    /// predicted, never present, does not count). Weighted recall equals the accuracy.
    /// `classes` counts the classes with support; with none (an empty matrix) all three
    /// are NaN.
    ///
    /// ```
    /// use nnc::internals::metrics::ConfusionMatrix;
    /// // true 0 0 0 1, predicted 0 0 1 1: class 0 P 1, R 2/3; class 1 P 1/2, R 1.
    /// let cm = ConfusionMatrix::new(&[0, 0, 1, 1], &[0, 0, 0, 1], 2).expect("valid");
    /// let w = cm.weighted_scores();
    /// assert_eq!(w.precision, (3.0 * 1.0 + 1.0 * 0.5) / 4.0);
    /// assert_eq!(w.recall, 0.75);
    /// assert_eq!(w.classes, 2);
    /// ```
    pub fn weighted_scores(&self) -> MacroScores {
        let scores: Vec<ClassScores> =
            (0..self.classes).map(|c| self.class_scores(c)).filter(|s| s.support > 0).collect();
        let total: u64 = scores.iter().map(|s| s.support).sum();
        let mean = |f: fn(&ClassScores) -> f64| {
            if total == 0 {
                f64::NAN
            } else {
                scores.iter().map(|s| s.support as f64 * f(s)).sum::<f64>() / total as f64
            }
        };
        MacroScores {
            precision: mean(|s| s.precision),
            recall: mean(|s| s.recall),
            f1: mean(|s| s.f1),
            classes: scores.len(),
        }
    }

    /// The matrix as a text table with row and column totals, e.g.
    ///
    /// ```text
    /// true \ pred  0  1  total
    /// 0            2  1      3
    /// 1            0  4      4
    /// total        2  5      7
    /// ```
    ///
    /// `names` (one per class) replace the class numbers when given.
    pub fn to_table(&self, names: Option<&[String]>) -> String {
        let k = self.classes;
        let name = |c: usize| match names.and_then(|n| n.get(c)) {
            Some(s) => s.clone(),
            None => c.to_string(),
        };
        let mut header = vec!["true \\ pred".to_string()];
        header.extend((0..k).map(name));
        header.push("total".into());
        let mut table = vec![header];
        for a in 0..k {
            let mut row = vec![name(a)];
            row.extend((0..k).map(|p| self.get(a, p).to_string()));
            row.push((0..k).map(|p| self.get(a, p)).sum::<u64>().to_string());
            table.push(row);
        }
        let mut totals = vec!["total".to_string()];
        totals.extend((0..k).map(|p| (0..k).map(|a| self.get(a, p)).sum::<u64>().to_string()));
        totals.push(self.total().to_string());
        table.push(totals);
        let cols = k + 2;
        let widths: Vec<usize> = (0..cols)
            .map(|c| table.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &table {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let w = widths.get(c).copied().unwrap_or(0);
                if c == 0 {
                    let _ = write!(line, "{cell:<w$}");
                } else {
                    let _ = write!(line, "  {cell:>w$}");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The confusion matrix of `scores` (`[n, k]`) against `labels`.
pub fn confusion_matrix<T: Copy + Into<f64>>(
    scores: &[T],
    k: usize,
    labels: &[i32],
    kind: ScoreKind,
) -> Result<ConfusionMatrix, String> {
    let pred = predicted_classes(scores, k, kind)?;
    ConfusionMatrix::new(&pred, labels, num_classes(k))
}

/// The text table of a confusion matrix (see [`ConfusionMatrix::to_table`]).
pub fn confusion_table(cm: &ConfusionMatrix, names: Option<&[String]>) -> String {
    cm.to_table(names)
}

/// The confusion matrix as JSON: an array of rows (true classes), each an array of counts
/// per predicted class, on one line without a trailing newline.
///
/// ```
/// use nnc::internals::metrics::{confusion_to_json, ConfusionMatrix};
/// let cm = ConfusionMatrix::new(&[0, 1, 1], &[0, 0, 1], 2).expect("valid");
/// assert_eq!(confusion_to_json(&cm), "[[1, 1], [0, 1]]");
/// ```
pub fn confusion_to_json(cm: &ConfusionMatrix) -> String {
    let rows: Vec<String> = cm
        .rows()
        .iter()
        .map(|r| format!("[{}]", r.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")))
        .collect();
    format!("[{}]", rows.join(", "))
}

/// Area under the ROC curve of a binary classifier from one score per sample (higher
/// means class 1), by the Mann-Whitney rank formula: tied scores get their average rank,
/// which equals the trapezoid rule over the ROC curve. NaN scores rank lowest. Labels
/// must be 0 or 1, and both must occur.
pub fn roc_auc_binary<T: Copy + Into<f64>>(scores: &[T], labels: &[i32]) -> Result<f64, String> {
    check_len(scores.len(), labels.len(), "scores", "labels")?;
    check_labels(labels, 2, "label")?;
    let positives = labels.iter().filter(|&&l| l == 1).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err("ROC AUC needs samples of both classes".into());
    }
    let mut order: Vec<(f64, i32)> = scores
        .iter()
        .zip(labels)
        .map(|(&s, &l)| {
            let s: f64 = s.into();
            (if s.is_nan() { f64::NEG_INFINITY } else { s }, l)
        })
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && order[j].0 == order[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        let pos = order[i..j].iter().filter(|(_, l)| *l == 1).count();
        rank_sum += avg_rank * pos as f64;
        i = j;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Ok((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// ROC AUC from class scores `[n, k]` of a two-class problem: `k == 1` uses the single
/// column; `k == 2` uses `z1 - z0` for logits (the log-odds of class 1 under softmax) and
/// `p1` for probabilities. Other `k` are an error.
pub fn roc_auc<T: Copy + Into<f64>>(scores: &[T], k: usize, labels: &[i32], kind: ScoreKind) -> Result<f64, String> {
    rows_of(scores.len(), k)?;
    if k > 2 {
        return Err(format!("ROC AUC is computed for two classes, not {k}"));
    }
    roc_auc_binary(&positive_scores(scores, k, kind, 1)?, labels)
}

/// One score per row of `scores` (`[n, k]`) for `class` against the rest, higher meaning
/// more likely `class`:
///
/// - `k == 1` (one sigmoid column): the column itself for class 1, its negation for
///   class 0 (for probabilities `-p` ranks like `1 - p`);
/// - `k == 2` with logits: `z_c - z_other`, the log-odds of `c` under softmax;
/// - `k >= 2` with probabilities: `p_c`;
/// - `k > 2` with logits: the softmax probability `exp(z_c - m) / sum_j exp(z_j - m)`
///   with `m` the row's maximum (no overflow). A row holding NaN gives NaN; a row with
///   `+inf` logits shares the probability among them.
///
/// Errors when `scores` is not whole rows of `k` or `class` is not one of the
/// [`num_classes`]`(k)` classes.
///
/// ```
/// use nnc::internals::metrics::{positive_scores, ScoreKind};
/// let logits = [1.0f32, 3.0, 2.0, 0.5];
/// assert_eq!(positive_scores(&logits, 2, ScoreKind::Logits, 0).ok(), Some(vec![-2.0, 1.5]));
/// let p = positive_scores(&[0.0f64, 0.0, 0.0], 3, ScoreKind::Logits, 2).expect("valid");
/// assert!((p[0] - 1.0 / 3.0).abs() < 1e-15);
/// ```
pub fn positive_scores<T: Copy + Into<f64>>(
    scores: &[T],
    k: usize,
    kind: ScoreKind,
    class: usize,
) -> Result<Vec<f64>, String> {
    rows_of(scores.len(), k)?;
    let classes = num_classes(k);
    if class >= classes {
        return Err(format!("class {class} is outside 0..{classes}"));
    }
    let rows = scores.chunks_exact(k);
    Ok(match (k, kind) {
        (1, _) => rows.map(|r| if class == 1 { r[0].into() } else { -r[0].into() }).collect(),
        (_, ScoreKind::Probabilities) => rows.map(|r| r[class].into()).collect(),
        (2, ScoreKind::Logits) => rows.map(|r| r[class].into() - r[1 - class].into()).collect(),
        (_, ScoreKind::Logits) => rows.map(|r| softmax_at(r, class)).collect(),
    })
}

/// The softmax probability of entry `c` of a row of logits, computed stably.
fn softmax_at<T: Copy + Into<f64>>(row: &[T], c: usize) -> f64 {
    let z: Vec<f64> = row.iter().map(|&v| v.into()).collect();
    if z.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::INFINITY {
        let top = z.iter().filter(|&&v| v == m).count();
        return if z[c] == m { 1.0 / top as f64 } else { 0.0 };
    }
    if m == f64::NEG_INFINITY {
        return 1.0 / z.len() as f64;
    }
    let sum: f64 = z.iter().map(|v| (v - m).exp()).sum();
    (z[c] - m).exp() / sum
}

/// Counts of a binary classifier at each of its distinct score thresholds.
struct ThresholdCounts {
    /// Cumulative (true positives, false positives) after each distinct threshold,
    /// highest threshold first.
    cumulative: Vec<(u64, u64)>,
    positives: u64,
    negatives: u64,
}

/// The [`ThresholdCounts`] of one score per sample against labels 0 / 1. NaN scores count
/// as `-inf` (lowest), as in [`roc_auc_binary`].
fn threshold_counts(pos_scores: &[f64], labels01: &[i32]) -> Result<ThresholdCounts, String> {
    check_len(pos_scores.len(), labels01.len(), "scores", "labels")?;
    check_labels(labels01, 2, "label")?;
    let mut order: Vec<(f64, bool)> = pos_scores
        .iter()
        .zip(labels01)
        .map(|(&s, &l)| (if s.is_nan() { f64::NEG_INFINITY } else { s + 0.0 }, l == 1))
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = Vec::new();
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && order[j].0 == order[i].0 {
            if order[j].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        out.push((tp, fp));
        i = j;
    }
    Ok(ThresholdCounts { cumulative: out, positives: tp, negatives: fp })
}

/// The ROC curve of one score per sample (higher means class 1) against labels 0 / 1:
/// `(false positive rate, true positive rate)` points, starting at `(0, 0)` and then one
/// per distinct score, thresholds descending (a sample is called positive when its score
/// is >= the threshold), so the last point is `(1, 1)`. With `P` positives and `N`
/// negatives, after a threshold `t` the point is `(FP(t) / N, TP(t) / P)`. Tied scores
/// make one point (a diagonal step). This is scikit-learn's
/// `roc_curve(drop_intermediate=False)` with its first point at threshold `inf` replaced
/// by the same `(0, 0)`. NaN scores count as the lowest. Errors unless both classes
/// occur.
///
/// ```
/// use nnc::internals::metrics::roc_curve;
/// let roc = roc_curve(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]).expect("valid");
/// assert_eq!(roc, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]);
/// ```
pub fn roc_curve(pos_scores: &[f64], labels01: &[i32]) -> Result<Vec<(f64, f64)>, String> {
    let ThresholdCounts { cumulative: counts, positives: p, negatives: n } = threshold_counts(pos_scores, labels01)?;
    if p == 0 || n == 0 {
        return Err("a ROC curve needs samples of both classes".into());
    }
    let mut out = Vec::with_capacity(counts.len() + 1);
    out.push((0.0, 0.0));
    out.extend(counts.iter().map(|&(tp, fp)| (fp as f64 / n as f64, tp as f64 / p as f64)));
    Ok(out)
}

/// The precision-recall curve of one score per sample (higher means class 1) against
/// labels 0 / 1, in scikit-learn's `precision_recall_curve` convention
/// (`drop_intermediate=False`): one `(recall, precision)` point per distinct score, in
/// ascending threshold order (so recall falls from 1), then a final point `(0, 1)` that
/// has no threshold. At threshold `t`, `precision = TP(t) / (TP(t) + FP(t))` and
/// `recall = TP(t) / P`, counting samples with score >= `t` as positive. NaN scores count
/// as the lowest. Errors when no sample is positive (recall is undefined; scikit-learn
/// warns and sets it to 1).
///
/// ```
/// use nnc::internals::metrics::pr_curve;
/// let pr = pr_curve(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]).expect("valid");
/// assert_eq!(pr, vec![(1.0, 0.5), (1.0, 2.0 / 3.0), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0)]);
/// ```
pub fn pr_curve(pos_scores: &[f64], labels01: &[i32]) -> Result<Vec<(f64, f64)>, String> {
    let ThresholdCounts { cumulative: counts, positives: p, .. } = threshold_counts(pos_scores, labels01)?;
    if p == 0 {
        return Err("a precision-recall curve needs at least one positive sample".into());
    }
    let mut out: Vec<(f64, f64)> =
        counts.iter().rev().map(|&(tp, fp)| (tp as f64 / p as f64, tp as f64 / (tp + fp) as f64)).collect();
    out.push((0.0, 1.0));
    Ok(out)
}

/// Average precision of one score per sample (higher means class 1) against labels 0 / 1,
/// scikit-learn's `average_precision_score`: over the distinct thresholds in descending
/// order (ties grouped),
///
/// ```text
/// AP = sum_n (R_n - R_{n-1}) * P_n,   R_0 = 0,
/// ```
///
/// the precision at each threshold weighted by the recall it adds (a step function, not
/// the trapezoid rule). NaN when no sample is positive (scikit-learn warns and gives 0).
/// NaN scores count as the lowest.
///
/// ```
/// use nnc::internals::metrics::average_precision;
/// let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]).expect("valid");
/// assert!((ap - (0.5 * 1.0 + 0.5 * 2.0 / 3.0)).abs() < 1e-15);
/// ```
pub fn average_precision(pos_scores: &[f64], labels01: &[i32]) -> Result<f64, String> {
    let ThresholdCounts { cumulative: counts, positives: p, .. } = threshold_counts(pos_scores, labels01)?;
    if p == 0 {
        return Ok(f64::NAN);
    }
    let mut ap = 0.0;
    let mut prev_tp = 0u64;
    for &(tp, fp) in &counts {
        if tp > prev_tp {
            ap += (tp - prev_tp) as f64 / p as f64 * (tp as f64 / (tp + fp) as f64);
        }
        prev_tp = tp;
    }
    Ok(ap)
}

/// Macro one-vs-rest ROC AUC, scikit-learn's
/// `roc_auc_score(multi_class='ovr', average='macro')`: the mean over the classes `c` of
/// the AUC of `c` against the rest, each ranking [`positive_scores`] (softmax
/// probabilities of logits, or the given probabilities). For two classes this is the
/// binary AUC. NaN when some class has no positive or no negative sample among the
/// labels (scikit-learn raises an error there). Errors on malformed scores or labels
/// outside `0..classes`.
///
/// ```
/// use nnc::internals::metrics::{roc_auc_ovr, ScoreKind};
/// // Every class ranked perfectly against the rest.
/// let logits = [3.0f32, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 3.0];
/// assert_eq!(roc_auc_ovr(&logits, 3, &[0, 1, 2], ScoreKind::Logits).ok(), Some(1.0));
/// assert!(roc_auc_ovr(&logits, 3, &[0, 1, 1], ScoreKind::Logits).expect("valid").is_nan());
/// ```
pub fn roc_auc_ovr<T: Copy + Into<f64>>(
    scores: &[T],
    k: usize,
    labels: &[i32],
    kind: ScoreKind,
) -> Result<f64, String> {
    let n = rows_of(scores.len(), k)?;
    check_len(n, labels.len(), "score rows", "labels")?;
    let classes = num_classes(k);
    check_labels(labels, classes, "label")?;
    let mut present = vec![0usize; classes];
    for &l in labels {
        present[l as usize] += 1;
    }
    if present.iter().any(|&m| m == 0 || m == n) {
        return Ok(f64::NAN);
    }
    if classes == 2 {
        return roc_auc(scores, k, labels, kind);
    }
    let mut sum = 0.0;
    for c in 0..classes {
        let one_vs_rest: Vec<i32> = labels.iter().map(|&l| i32::from(l as usize == c)).collect();
        sum += roc_auc_binary(&positive_scores(scores, k, kind, c)?, &one_vs_rest)?;
    }
    Ok(sum / classes as f64)
}

/// Every classification metric of `scores` (`[n, k]`) against `labels`, keys prefixed by
/// `prefix` (e.g. `"test_"`), named as scikit-learn's functions and averages:
///
/// - always `accuracy`, the macro averages `precision_macro`, `recall_macro`, `f1_macro`
///   (over the classes that occur as a label or a prediction) and the support-weighted
///   `precision_weighted`, `recall_weighted`, `f1_weighted`;
/// - two classes (`k == 1` or `k == 2`): `precision`, `recall`, `f1` of the positive
///   class 1 (`average='binary'`), `auc` (ROC AUC; NaN when only one class occurs in
///   `labels`) and `average_precision` (NaN when no label is 1);
/// - more than two classes: `auc_ovr`, the macro one-vs-rest ROC AUC ([`roc_auc_ovr`];
///   NaN when a class is missing from `labels`), and no plain `precision`, `recall`,
///   `f1` (they would be ambiguous; use the `_macro` or `_weighted` ones).
///
/// Precision, recall and F1 with a zero denominator are 0 (`zero_division=0`).
pub fn classification_metrics<T: Copy + Into<f64>>(
    scores: &[T],
    k: usize,
    labels: &[i32],
    kind: ScoreKind,
    prefix: &str,
) -> Result<Metrics, String> {
    let pred = predicted_classes(scores, k, kind)?;
    let cm = ConfusionMatrix::new(&pred, labels, num_classes(k))?;
    let mut m = Metrics::new();
    m.insert(format!("{prefix}accuracy"), accuracy(&pred, labels)?);
    for (suffix, s) in [("macro", cm.macro_scores()), ("weighted", cm.weighted_scores())] {
        m.insert(format!("{prefix}precision_{suffix}"), s.precision);
        m.insert(format!("{prefix}recall_{suffix}"), s.recall);
        m.insert(format!("{prefix}f1_{suffix}"), s.f1);
    }
    if num_classes(k) == 2 {
        let positive = cm.class_scores(1);
        m.insert(format!("{prefix}precision"), positive.precision);
        m.insert(format!("{prefix}recall"), positive.recall);
        m.insert(format!("{prefix}f1"), positive.f1);
        let both = labels.contains(&0) && labels.contains(&1);
        let auc = if both { roc_auc(scores, k, labels, kind)? } else { f64::NAN };
        m.insert(format!("{prefix}auc"), auc);
        m.insert(
            format!("{prefix}average_precision"),
            average_precision(&positive_scores(scores, k, kind, 1)?, labels)?,
        );
    } else {
        m.insert(format!("{prefix}auc_ovr"), roc_auc_ovr(scores, k, labels, kind)?);
    }
    Ok(m)
}

fn regression_pairs<'a, T: Copy + Into<f64>, U: Copy + Into<f64>>(
    predicted: &'a [T],
    targets: &'a [U],
) -> Result<impl Iterator<Item = f64> + 'a, String> {
    check_len(predicted.len(), targets.len(), "predictions", "targets")?;
    Ok(predicted.iter().zip(targets).map(|(&p, &t)| p.into() - t.into()))
}

/// Mean squared error (in f64).
pub fn mse<T: Copy + Into<f64>, U: Copy + Into<f64>>(predicted: &[T], targets: &[U]) -> Result<f64, String> {
    Ok(regression_pairs(predicted, targets)?.map(|d| d * d).sum::<f64>() / predicted.len() as f64)
}

/// Mean absolute error (in f64).
pub fn mae<T: Copy + Into<f64>, U: Copy + Into<f64>>(predicted: &[T], targets: &[U]) -> Result<f64, String> {
    Ok(regression_pairs(predicted, targets)?.map(f64::abs).sum::<f64>() / predicted.len() as f64)
}

/// Root mean squared error, `sqrt(mse)`.
pub fn rmse<T: Copy + Into<f64>, U: Copy + Into<f64>>(predicted: &[T], targets: &[U]) -> Result<f64, String> {
    Ok(mse(predicted, targets)?.sqrt())
}

/// The coefficient of determination, scikit-learn's `r2_score`: with `y` the targets,
/// `ŷ` the predictions and `ȳ` the mean target,
///
/// ```text
/// R² = 1 - sum_i (y_i - ŷ_i)² / sum_i (y_i - ȳ)²
/// ```
///
/// 1 for a perfect fit, 0 for predicting the mean, negative when worse. Several outputs
/// per sample are taken as one flat vector (scikit-learn's `r2_score` of the flattened
/// arrays). NaN when the targets are constant, where R² is undefined (scikit-learn's
/// default `force_finite=True` gives 1 for a perfect fit there and 0 otherwise).
///
/// ```
/// use nnc::internals::metrics::r2;
/// assert_eq!(r2(&[1.0f64, 2.0, 3.0], &[1.0f64, 2.0, 3.0]).ok(), Some(1.0));
/// assert_eq!(r2(&[2.0f64, 2.0, 2.0], &[1.0f64, 2.0, 3.0]).ok(), Some(0.0));
/// assert!(r2(&[1.0f64, 2.0], &[5.0f64, 5.0]).expect("valid").is_nan());
/// ```
pub fn r2<T: Copy + Into<f64>, U: Copy + Into<f64>>(predicted: &[T], targets: &[U]) -> Result<f64, String> {
    let ss_res: f64 = regression_pairs(predicted, targets)?.map(|d| d * d).sum();
    let mean = targets.iter().map(|&t| t.into()).sum::<f64>() / targets.len() as f64;
    let ss_tot: f64 = targets.iter().map(|&t| (t.into() - mean).powi(2)).sum();
    Ok(if ss_tot == 0.0 { f64::NAN } else { 1.0 - ss_res / ss_tot })
}

/// `{prefix}mse`, `{prefix}rmse`, `{prefix}mae` and `{prefix}r2` (see [`r2`]).
pub fn regression_metrics<T: Copy + Into<f64>, U: Copy + Into<f64>>(
    predicted: &[T],
    targets: &[U],
    prefix: &str,
) -> Result<Metrics, String> {
    let mut m = Metrics::new();
    let mse = mse(predicted, targets)?;
    m.insert(format!("{prefix}mse"), mse);
    m.insert(format!("{prefix}rmse"), mse.sqrt());
    m.insert(format!("{prefix}mae"), mae(predicted, targets)?);
    m.insert(format!("{prefix}r2"), r2(predicted, targets)?);
    Ok(m)
}

/// A number in full precision (the shortest text that reads back the same f64), using an
/// exponent only for magnitudes below 1e-5 or from 1e16 on; `nan`, `inf`, `-inf` when not
/// finite. The text is also valid JSON for finite values.
pub fn format_number(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = v.abs();
    if a == 0.0 || (1e-5..1e16).contains(&a) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

/// A number rounded to 6 significant digits for people (`0.972`, `0.666667`, `1.5e-7`).
pub fn format_short(v: f64) -> String {
    if !v.is_finite() || v == 0.0 {
        return format_number(v);
    }
    match format!("{v:.5e}").parse::<f64>() {
        Ok(r) => format_number(r),
        Err(_) => format_number(v),
    }
}

/// One `name value` pair per metric on one line, values as `format_short` writes them
/// (`accuracy 0.975  loss 0.0778913`).
pub fn format_pairs(m: &Metrics) -> String {
    m.iter().map(|(k, v)| format!("{k} {}", format_short(*v))).collect::<Vec<_>>().join("  ")
}

/// One `name: value` line per metric, in name order, values to 6 significant digits.
pub fn format_lines(metrics: &Metrics) -> String {
    let mut out = String::new();
    for (k, v) in metrics {
        let _ = writeln!(out, "{k}: {}", format_short(*v));
    }
    out
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number, or `null` for NaN and infinities (JSON has neither).
pub fn json_number(v: f64) -> String {
    if v.is_finite() {
        format_number(v)
    } else {
        "null".into()
    }
}

/// The metrics as a pretty-printed JSON object with sorted keys and a trailing newline,
/// numbers in full precision, NaN and infinities as `null`.
pub fn to_json(metrics: &BTreeMap<String, f64>) -> String {
    if metrics.is_empty() {
        return "{}\n".into();
    }
    let mut out = String::from("{\n");
    let last = metrics.len() - 1;
    for (i, (k, v)) in metrics.iter().enumerate() {
        let _ = writeln!(out, "  {}: {}{}", json_string(k), json_number(*v), if i == last { "" } else { "," });
    }
    out.push_str("}\n");
    out
}

/// One row per epoch (or any step) of named values, written as CSV. The columns are the
/// first row's names in insertion order; a later row may add names (appended as new
/// columns) or leave some out (empty cells).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsLog {
    columns: Vec<String>,
    rows: Vec<Vec<Option<f64>>>,
}

impl MetricsLog {
    pub fn new() -> MetricsLog {
        MetricsLog::default()
    }

    /// Appends a row of `(name, value)` pairs. Names must be non-empty, unique within the
    /// row, and free of commas, quotes and line breaks (they become CSV headers).
    pub fn push<S: AsRef<str>>(&mut self, row: &[(S, f64)]) -> Result<(), String> {
        let mut cells: Vec<(usize, f64)> = Vec::with_capacity(row.len());
        let mut new_columns: Vec<String> = Vec::new();
        for (name, v) in row {
            let name = name.as_ref();
            if name.is_empty() || name.contains([',', '"', '\n', '\r']) {
                return Err(format!("`{name}` cannot be a metrics column name"));
            }
            let idx = match self.columns.iter().position(|c| c == name) {
                Some(i) => i,
                None => match new_columns.iter().position(|c| c == name) {
                    Some(i) => self.columns.len() + i,
                    None => {
                        new_columns.push(name.to_string());
                        self.columns.len() + new_columns.len() - 1
                    }
                },
            };
            if cells.iter().any(|(i, _)| *i == idx) {
                return Err(format!("metric `{name}` appears twice in one row"));
            }
            cells.push((idx, *v));
        }
        self.columns.extend(new_columns);
        let mut values = vec![None; self.columns.len()];
        for (i, v) in cells {
            values[i] = Some(v);
        }
        self.rows.push(values);
        Ok(())
    }

    /// Appends a row from a metrics map (names in sorted order).
    pub fn push_metrics(&mut self, metrics: &Metrics) -> Result<(), String> {
        let row: Vec<(&str, f64)> = metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        self.push(&row)
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The value of `column` in row `row`, if that row has it.
    pub fn get(&self, row: usize, column: &str) -> Option<f64> {
        let c = self.columns.iter().position(|n| n == column)?;
        self.rows.get(row)?.get(c).copied().flatten()
    }

    /// Every row's value of `column` (`None` where a row lacks it), or `None` when no row
    /// has the column.
    pub fn column(&self, column: &str) -> Option<Vec<Option<f64>>> {
        let c = self.columns.iter().position(|n| n == column)?;
        Some(self.rows.iter().map(|r| r.get(c).copied().flatten()).collect())
    }

    /// The CSV text: a header line, then one line per row (values in full precision,
    /// `nan` / `inf` / `-inf` when not finite, empty where a row lacks the column).
    pub fn to_csv(&self) -> String {
        let mut out = self.columns.join(",");
        out.push('\n');
        for row in &self.rows {
            let cells: Vec<String> = (0..self.columns.len())
                .map(|i| row.get(i).copied().flatten().map(format_number).unwrap_or_default())
                .collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }

    /// Writes the CSV to `path` atomically (a temporary file beside it, then a rename), so
    /// a reader never sees a half-written file. Call it after every epoch.
    pub fn write_csv(&self, path: &Path) -> Result<(), String> {
        crate::tensors::write_atomic(path, self.to_csv().as_bytes())
    }
}

/// Class probabilities of logits `[n, k]`: a stable softmax per row, or the sigmoid of a
/// single logit column (`k == 1`).
pub fn probabilities(v: &[f64], k: usize) -> Vec<f64> {
    if k <= 1 {
        return v.iter().map(|&z| 1.0 / (1.0 + (-z).exp())).collect();
    }
    let mut out = Vec::with_capacity(v.len());
    for row in v.chunks(k) {
        let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|&z| (z - mx).exp()).collect();
        let s: f64 = e.iter().sum();
        out.extend(e.into_iter().map(|x| x / s));
    }
    out
}
