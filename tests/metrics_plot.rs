//! Known-answer tests of `nnc::internals::metrics` (hand-computed small cases) and smoke tests of the
//! PNG plots in `nnc::internals::plot` (valid PNG, expected size, the expected colours present).

use nnc::internals::metrics::{
    accuracy, average_precision, classification_metrics, confusion_matrix, confusion_table, confusion_to_json,
    format_lines, format_number, format_short, mae, mse, num_classes, positive_scores, pr_curve, predicted_classes, r2,
    regression_metrics, rmse, roc_auc, roc_auc_binary, roc_auc_ovr, roc_curve, to_json, ConfusionMatrix, Metrics,
    MetricsLog, ScoreKind,
};
use nnc::internals::plot::{
    curve_panels, plot_curves, plot_decision_boundary, plot_panels, plot_roc_pr, roc_pr_series, Panel, Series, GRID,
};
use std::path::{Path, PathBuf};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {{
        let (a, b): (f64, f64) = ($a, $b);
        assert!(close(a, b), "{a} != {b}");
    }};
}

/// A fresh folder for one test's files (kept after the run for inspection).
fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics_plot").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test folder");
    dir
}

// ---------------------------------------------------------------- predictions, accuracy

#[test]
fn predicted_classes_argmax_ties_and_nan() {
    let scores = [1.0f32, 2.0, 3.0, 3.0, 3.0, 1.0, f32::NAN, 1.0, 0.0, f32::NAN, f32::NAN, f32::NAN];
    assert_eq!(predicted_classes(&scores, 3, ScoreKind::Logits).expect("ok"), vec![2, 0, 1, 0]);
    // One sigmoid column: thresholds 0 (logits) and 0.5 (probabilities), strict.
    assert_eq!(predicted_classes(&[0.5f32, -0.1, 0.0], 1, ScoreKind::Logits).expect("ok"), vec![1, 0, 0]);
    assert_eq!(predicted_classes(&[0.7f64, 0.5, 0.2], 1, ScoreKind::Probabilities).expect("ok"), vec![1, 0, 0]);
    assert_eq!(num_classes(1), 2);
    assert_eq!(num_classes(5), 5);
    assert!(predicted_classes(&[1.0f32; 5], 2, ScoreKind::Logits).is_err());
    assert!(predicted_classes(&[1.0f32; 4], 0, ScoreKind::Logits).is_err());
}

#[test]
fn accuracy_known_answer() {
    assert_close!(accuracy(&[0, 1, 2, 2], &[0, 2, 2, 2]).expect("ok"), 0.75);
    assert!(accuracy(&[0, 1], &[0]).is_err());
    assert!(accuracy(&[], &[]).is_err());
}

// ---------------------------------------------------------------- confusion matrix, macro scores

#[test]
fn confusion_matrix_and_macro_with_a_never_predicted_class() {
    // true:  0 0 1 1 2 2
    // pred:  0 1 1 1 1 0      (class 2 is never predicted)
    let labels = [0, 0, 1, 1, 2, 2];
    let pred = [0, 1, 1, 1, 1, 0];
    let cm = ConfusionMatrix::new(&pred, &labels, 3).expect("ok");
    assert_eq!(cm.rows(), vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 1, 0]]);
    assert_eq!(cm.get(2, 0), 1);
    assert_eq!(cm.get(9, 0), 0);
    assert_eq!(cm.total(), 6);
    // class 0: P 1/2, R 1/2, F1 1/2; class 1: P 2/4, R 2/2, F1 2/3; class 2: P 0, R 0, F1 0.
    let c1 = cm.class_scores(1);
    assert_close!(c1.precision, 0.5);
    assert_close!(c1.recall, 1.0);
    assert_close!(c1.f1, 2.0 / 3.0);
    assert_eq!((c1.support, c1.predicted), (2, 4));
    let m = cm.macro_scores();
    assert_eq!(m.classes, 3);
    assert_close!(m.precision, 1.0 / 3.0);
    assert_close!(m.recall, 0.5);
    assert_close!(m.f1, 7.0 / 18.0);

    // A fourth class with no support and no prediction is left out of the average.
    let cm4 = ConfusionMatrix::new(&pred, &labels, 4).expect("ok");
    let m4 = cm4.macro_scores();
    assert_eq!(m4.classes, 3);
    assert_close!(m4.f1, 7.0 / 18.0);
    assert_close!(m4.precision, 1.0 / 3.0);
}

#[test]
fn macro_with_a_predicted_but_absent_class() {
    // true 0 0 1, pred 0 2 1: class 2 has no support but one prediction -> counts with F1 0.
    let cm = ConfusionMatrix::new(&[0, 2, 1], &[0, 0, 1], 3).expect("ok");
    let m = cm.macro_scores();
    assert_eq!(m.classes, 3);
    assert_close!(m.precision, (1.0 + 1.0 + 0.0) / 3.0);
    assert_close!(m.recall, (0.5 + 1.0 + 0.0) / 3.0);
    assert_close!(m.f1, (2.0 / 3.0 + 1.0 + 0.0) / 3.0);
}

#[test]
fn confusion_matrix_rejects_bad_labels() {
    assert!(ConfusionMatrix::new(&[0, 1], &[0, 2], 2).is_err());
    assert!(ConfusionMatrix::new(&[0, -1], &[0, 1], 2).is_err());
    assert!(ConfusionMatrix::new(&[0], &[0, 1], 2).is_err());
    assert!(ConfusionMatrix::new(&[0], &[0], 0).is_err());
    assert!(ConfusionMatrix::new(&[0], &[0], usize::MAX).is_err());
}

#[test]
fn confusion_matrix_from_scores_and_table() {
    // Logits of 7 samples, 2 classes.
    let scores = [2.0f32, 1.0, 0.0, 1.0, 3.0, -1.0, 0.0, 5.0, 1.0, 2.0, -2.0, 2.0, 0.5, 0.4];
    let labels = [0, 0, 0, 1, 1, 1, 1];
    let cm = confusion_matrix(&scores, 2, &labels, ScoreKind::Logits).expect("ok");
    assert_eq!(cm.rows(), vec![vec![2, 1], vec![1, 3]]);
    let expected = "\
true \\ pred  0  1  total
0            2  1      3
1            1  3      4
total        3  4      7
";
    assert_eq!(confusion_table(&cm, None), expected);
    let names = vec!["cat".to_string(), "dog".to_string()];
    let expected_named = "\
true \\ pred  cat  dog  total
cat            2    1      3
dog            1    3      4
total          3    4      7
";
    assert_eq!(cm.to_table(Some(&names)), expected_named);
}

// ---------------------------------------------------------------- ROC AUC

#[test]
fn auc_without_ties() {
    // The classic example: 3 of 4 positive/negative pairs ordered correctly.
    assert_close!(roc_auc_binary(&[0.1f32, 0.4, 0.35, 0.8], &[0, 0, 1, 1]).expect("ok"), 0.75);
    assert_close!(roc_auc_binary(&[0.1f32, 0.2, 0.8, 0.9], &[0, 0, 1, 1]).expect("ok"), 1.0);
    assert_close!(roc_auc_binary(&[0.9f64, 0.8, 0.2, 0.1], &[0, 0, 1, 1]).expect("ok"), 0.0);
}

#[test]
fn auc_with_ties_counts_half() {
    // pos 0.5 vs neg 0.1: 1, vs neg 0.5: 1/2; pos 0.9 vs both: 2 -> 3.5 / 4.
    assert_close!(roc_auc_binary(&[0.1f32, 0.5, 0.5, 0.9], &[0, 0, 1, 1]).expect("ok"), 0.875);
    // All scores tied: 0.5.
    assert_close!(roc_auc_binary(&[0.5f32; 4], &[0, 1, 0, 1]).expect("ok"), 0.5);
    // Ties across several groups: pos {1,2,2,3}, neg {1,1,2}:
    // pos 1: 0.5+0.5+0 = 1; pos 2: 1+1+0.5 = 2.5 (twice); pos 3: 3 -> 9 / 12.
    let scores = [1.0f32, 2.0, 2.0, 3.0, 1.0, 1.0, 2.0];
    let labels = [1, 1, 1, 1, 0, 0, 0];
    assert_close!(roc_auc_binary(&scores, &labels).expect("ok"), 9.0 / 12.0);
}

#[test]
fn auc_from_score_columns() {
    // Two logit columns: the AUC ranks z1 - z0 (1, -3, -1, 3) -> perfect; ranking by z1
    // alone would give 0.5.
    let logits = [0.0f32, 1.0, 5.0, 2.0, 0.0, -1.0, -3.0, 0.0];
    let labels = [1, 0, 0, 1];
    assert_close!(roc_auc(&logits, 2, &labels, ScoreKind::Logits).expect("ok"), 1.0);
    // Two probability columns: p1 is ranked.
    let probs = [0.9f32, 0.1, 0.3, 0.7, 0.6, 0.4, 0.2, 0.8];
    assert_close!(roc_auc(&probs, 2, &[0, 1, 0, 1], ScoreKind::Probabilities).expect("ok"), 1.0);
    // One sigmoid column with a tie between a positive and a negative: 3.5 / 4.
    assert_close!(roc_auc(&[-2.0f32, 0.3, 0.3, 1.0], 1, &[0, 1, 0, 1], ScoreKind::Logits).expect("ok"), 0.875);
    // Errors: one class only, more than two classes, labels outside 0..2.
    assert!(roc_auc(&[0.1f32, 0.2], 1, &[1, 1], ScoreKind::Logits).is_err());
    assert!(roc_auc(&[0.1f32; 6], 3, &[0, 1], ScoreKind::Logits).is_err());
    assert!(roc_auc_binary(&[0.1f32, 0.2], &[0, 2]).is_err());
}

#[test]
fn auc_nan_scores_rank_lowest() {
    // A NaN positive ranks below every negative (as -inf): 2 of 4 pairs ordered.
    let a = roc_auc_binary(&[f32::NAN, 0.5, 0.2, 0.9], &[1, 0, 0, 1]).expect("ok");
    assert_close!(a, 0.5);
}

// ---------------------------------------------------------------- named metrics

#[test]
fn classification_metrics_names_and_values() {
    // Probabilities of 3 classes; the same case as the confusion-matrix test above.
    let probs = [
        0.8f32, 0.1, 0.1, // -> 0
        0.2, 0.7, 0.1, // -> 1
        0.1, 0.8, 0.1, // -> 1
        0.3, 0.6, 0.1, // -> 1
        0.3, 0.4, 0.3, // -> 1
        0.5, 0.2, 0.3, // -> 0
    ];
    let m = classification_metrics(&probs, 3, &[0, 0, 1, 1, 2, 2], ScoreKind::Probabilities, "test_").expect("ok");
    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
    // More than two classes: macro and weighted averages, the one-vs-rest AUC, and no
    // plain precision / recall / f1.
    assert_eq!(
        keys,
        [
            "test_accuracy",
            "test_auc_ovr",
            "test_f1_macro",
            "test_f1_weighted",
            "test_precision_macro",
            "test_precision_weighted",
            "test_recall_macro",
            "test_recall_weighted"
        ]
    );
    assert_close!(m["test_accuracy"], 0.5);
    assert_close!(m["test_f1_macro"], 7.0 / 18.0);
    // Every class has support 2, so the weighted averages equal the macro ones.
    assert_close!(m["test_f1_weighted"], 7.0 / 18.0);
    assert_close!(m["test_recall_weighted"], 0.5);
    // One-vs-rest AUCs by hand (p_c ranked): class 0 {0.8, 0.2} vs {0.1, 0.3, 0.3, 0.5}
    // = 5/8; class 1 {0.8, 0.6} vs {0.1, 0.7, 0.4, 0.2} = 7/8; class 2 {0.3, 0.3} vs
    // {0.1, 0.1, 0.1, 0.1} = 8/8 (scikit-learn: 0.8333333333333334).
    assert_close!(m["test_auc_ovr"], (0.625 + 0.875 + 1.0) / 3.0);
    assert_eq!(
        format_lines(&m),
        "test_accuracy: 0.5\ntest_auc_ovr: 0.833333\ntest_f1_macro: 0.388889\ntest_f1_weighted: 0.388889\n\
         test_precision_macro: 0.333333\ntest_precision_weighted: 0.333333\ntest_recall_macro: 0.5\n\
         test_recall_weighted: 0.5\n"
    );

    // Binary, one sigmoid column: the positive class's scores, AUC and AP.
    let m =
        classification_metrics(&[-1.0f32, 2.0, 0.5, -0.2], 1, &[0, 1, 0, 1], ScoreKind::Logits, "val_").expect("ok");
    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "val_accuracy",
            "val_auc",
            "val_average_precision",
            "val_f1",
            "val_f1_macro",
            "val_f1_weighted",
            "val_precision",
            "val_precision_macro",
            "val_precision_weighted",
            "val_recall",
            "val_recall_macro",
            "val_recall_weighted"
        ]
    );
    assert_close!(m["val_accuracy"], 0.5);
    assert_close!(m["val_auc"], 0.75);
    // Predicted 0 1 1 0 for labels 0 1 0 1: class 1 P 1/2, R 1/2.
    assert_close!(m["val_precision"], 0.5);
    assert_close!(m["val_recall"], 0.5);
    // Ranked 2.0 (pos), 0.5 (neg), -0.2 (pos), -1.0 (neg): AP = 1/2 * 1 + 1/2 * 2/3.
    assert_close!(m["val_average_precision"], 0.5 + 1.0 / 3.0);
    // Only one class in the labels: the AUC is undefined (NaN, JSON null).
    let m = classification_metrics(&[-1.0f32, 2.0], 1, &[1, 1], ScoreKind::Logits, "").expect("ok");
    assert!(m["auc"].is_nan());
    assert_close!(m["accuracy"], 0.5);
    assert_close!(m["average_precision"], 1.0);
    assert!(to_json(&m).contains("\"auc\": null"));
    // No positives: AP is undefined too.
    let m = classification_metrics(&[-1.0f32, 2.0], 1, &[0, 0], ScoreKind::Logits, "").expect("ok");
    assert!(m["auc"].is_nan() && m["average_precision"].is_nan());
    assert_close!(m["precision"], 0.0);
}

#[test]
fn binary_metrics_match_scikit_learn() {
    // One logit column with tied scores. References from scikit-learn 1.9.1:
    // precision_score / recall_score / f1_score (average='binary', 'macro', 'weighted'),
    // roc_auc_score, average_precision_score.
    let s = [2.0f64, -1.0, 0.5, 0.5, -0.3, 1.2, -2.0, 0.5, 0.1, -0.7, 0.9, -0.1];
    let y = [1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0];
    let m = classification_metrics(&s, 1, &y, ScoreKind::Logits, "").expect("ok");
    assert_close!(m["accuracy"], 0.75);
    assert_close!(m["precision"], 0.7142857142857143);
    assert_close!(m["recall"], 0.8333333333333334);
    assert_close!(m["f1"], 0.7692307692307693);
    assert_close!(m["precision_macro"], 0.7571428571428571);
    assert_close!(m["recall_macro"], 0.75);
    assert_close!(m["f1_macro"], 0.7482517482517483);
    assert_close!(m["precision_weighted"], 0.7571428571428571);
    assert_close!(m["recall_weighted"], 0.75);
    assert_close!(m["f1_weighted"], 0.7482517482517483);
    assert_close!(m["auc"], 0.8611111111111112);
    assert_close!(m["average_precision"], 0.8777777777777778);

    // The same as two logit columns (z0 = 0, z1 = s) and as two probability columns.
    let two: Vec<f64> = s.iter().flat_map(|&v| [0.0, v]).collect();
    let m2 = classification_metrics(&two, 2, &y, ScoreKind::Logits, "").expect("ok");
    for (k, v) in &m {
        assert_close!(m2[k], *v);
    }
    let probs: Vec<f64> = s.iter().flat_map(|&v| [1.0 / (1.0 + v.exp()), 1.0 / (1.0 + (-v).exp())]).collect();
    let m3 = classification_metrics(&probs, 2, &y, ScoreKind::Probabilities, "").expect("ok");
    for (k, v) in &m {
        assert_close!(m3[k], *v);
    }

    // roc_curve(drop_intermediate=False) with its (inf-threshold) first point (0, 0).
    let third = 1.0 / 3.0;
    let sixth = 1.0 / 6.0;
    let roc = roc_curve(&s, &y).expect("ok");
    let want = [
        (0.0, 0.0),
        (0.0, sixth),
        (0.0, third),
        (0.0, 0.5),
        (sixth, 5.0 * sixth),
        (third, 5.0 * sixth),
        (0.5, 5.0 * sixth),
        (4.0 * sixth, 5.0 * sixth),
        (4.0 * sixth, 1.0),
        (5.0 * sixth, 1.0),
        (1.0, 1.0),
    ];
    assert_eq!(roc.len(), want.len());
    for (p, w) in roc.iter().zip(want) {
        assert_close!(p.0, w.0);
        assert_close!(p.1, w.1);
    }
    // precision_recall_curve: (recall, precision), thresholds ascending, then (0, 1).
    let pr = pr_curve(&s, &y).expect("ok");
    let want = [
        (1.0, 0.5),
        (1.0, 0.5454545454545454),
        (1.0, 0.6),
        (5.0 * sixth, 0.5555555555555556),
        (5.0 * sixth, 0.625),
        (5.0 * sixth, 0.7142857142857143),
        (5.0 * sixth, 5.0 * sixth),
        (0.5, 1.0),
        (third, 1.0),
        (sixth, 1.0),
        (0.0, 1.0),
    ];
    assert_eq!(pr.len(), want.len());
    for (p, w) in pr.iter().zip(want) {
        assert_close!(p.0, w.0);
        assert_close!(p.1, w.1);
    }
    // The trapezoid area under the ROC points is the rank AUC.
    let area: f64 = roc.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum();
    assert_close!(area, m["auc"]);
    assert_close!(average_precision(&s, &y).expect("ok"), 0.8777777777777778);
}

#[test]
fn curves_edge_cases_and_errors() {
    // NaN scores count as the lowest; -0.0 and 0.0 are one threshold.
    let roc = roc_curve(&[f64::NAN, 0.0, -0.0, 1.0], &[1, 0, 1, 0]).expect("ok");
    assert_eq!(roc, vec![(0.0, 0.0), (0.5, 0.0), (1.0, 0.5), (1.0, 1.0)]);
    // All scores tied: one step to (1, 1); precision is the prevalence.
    assert_eq!(roc_curve(&[0.3; 4], &[0, 1, 1, 1]).expect("ok"), vec![(0.0, 0.0), (1.0, 1.0)]);
    assert_eq!(pr_curve(&[0.3; 4], &[0, 1, 1, 1]).expect("ok"), vec![(1.0, 0.75), (0.0, 1.0)]);
    assert_close!(average_precision(&[0.3; 4], &[0, 1, 1, 1]).expect("ok"), 0.75);
    // Only positives: the PR curve and AP exist, the ROC curve does not.
    assert_eq!(pr_curve(&[0.1, 0.9], &[1, 1]).expect("ok"), vec![(1.0, 1.0), (0.5, 1.0), (0.0, 1.0)]);
    assert_close!(average_precision(&[0.1, 0.9], &[1, 1]).expect("ok"), 1.0);
    assert!(roc_curve(&[0.1, 0.9], &[1, 1]).expect_err("one class").contains("both classes"));
    // No positives: AP is NaN, the PR curve an error.
    assert!(average_precision(&[0.1, 0.9], &[0, 0]).expect("ok").is_nan());
    assert!(pr_curve(&[0.1, 0.9], &[0, 0]).expect_err("no positives").contains("positive"));
    // Malformed input.
    assert!(roc_curve(&[0.1], &[0, 1]).is_err());
    assert!(pr_curve(&[], &[]).is_err());
    assert!(average_precision(&[0.1, 0.2], &[0, 2]).expect_err("label").contains("outside 0..2"));
}

#[test]
fn positive_scores_of_each_score_kind() {
    // One sigmoid column: the column, or its negation for class 0.
    assert_eq!(positive_scores(&[0.5f32, -2.0], 1, ScoreKind::Logits, 1).expect("ok"), vec![0.5, -2.0]);
    assert_eq!(positive_scores(&[0.5f32, -2.0], 1, ScoreKind::Logits, 0).expect("ok"), vec![-0.5, 2.0]);
    assert_eq!(positive_scores(&[0.25f64], 1, ScoreKind::Probabilities, 0).expect("ok"), vec![-0.25]);
    // Two logit columns: the difference; probabilities: the column.
    assert_eq!(positive_scores(&[1.0f64, 4.0], 2, ScoreKind::Logits, 1).expect("ok"), vec![3.0]);
    assert_eq!(positive_scores(&[0.2f64, 0.8], 2, ScoreKind::Probabilities, 0).expect("ok"), vec![0.2]);
    // More logit columns: softmax, stable for large logits, NaN rows stay NaN.
    let p = positive_scores(&[1000.0f64, 1000.0 + 2f64.ln(), 1000.0], 3, ScoreKind::Logits, 1).expect("ok");
    assert_close!(p[0], 0.5);
    let p =
        positive_scores(&[f64::NAN, 1.0, 2.0, 0.0, f64::INFINITY, f64::INFINITY], 3, ScoreKind::Logits, 1).expect("ok");
    assert!(p[0].is_nan());
    assert_eq!(p[1], 0.5);
    let p = positive_scores(&[-1000.0f32, 0.0, 1000.0], 3, ScoreKind::Logits, 0).expect("ok");
    assert_eq!(p, vec![0.0]);
    // Errors: a class outside the problem, ragged rows.
    assert!(positive_scores(&[0.5f32], 1, ScoreKind::Logits, 2).expect_err("class").contains("class 2"));
    assert!(positive_scores(&[0.5f32; 5], 2, ScoreKind::Logits, 0).is_err());
}

#[test]
fn multiclass_metrics_match_scikit_learn() {
    // 12 rows of 4 logits. References from scikit-learn 1.9.1 (zero_division=0) and
    // roc_auc_score(multi_class='ovr', average='macro') of the softmax probabilities.
    let z = [
        2.8f32, -2.6, 0.4, -0.6, -0.5, 0.6, -2.0, -0.2, -0.9, 3.3, 1.0, -0.4, -0.3, -0.7, -1.1, 0.4, 1.3, -0.2, 1.0,
        -0.2, 0.0, 2.3, 0.5, -0.5, -0.2, 0.5, 2.7, -0.3, -0.2, 1.0, -0.9, 0.5, 1.7, 0.6, 0.1, 0.7, -2.8, 1.8, -1.0,
        -1.7, 0.3, 0.7, 0.4, -1.1, 0.0, -0.1, 2.2, 0.7,
    ];
    let y = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 2];
    assert_eq!(predicted_classes(&z, 4, ScoreKind::Logits).expect("ok"), vec![0, 1, 1, 3, 0, 1, 2, 1, 0, 1, 1, 2]);
    let m = classification_metrics(&z, 4, &y, ScoreKind::Logits, "").expect("ok");
    assert!(!m.contains_key("f1") && !m.contains_key("precision") && !m.contains_key("auc"));
    assert_close!(m["accuracy"], 0.75);
    assert_close!(m["precision_macro"], 0.875);
    assert_close!(m["recall_macro"], 0.75);
    assert_close!(m["f1_macro"], 0.7499999999999999);
    assert_close!(m["precision_weighted"], 0.875);
    assert_close!(m["recall_weighted"], 0.75);
    assert_close!(m["f1_weighted"], 0.75);
    assert!((m["auc_ovr"] - 0.9424189814814814).abs() < 1e-7, "{}", m["auc_ovr"]); // f32 logits
    let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
    let direct = roc_auc_ovr(&z64, 4, &y, ScoreKind::Logits).expect("ok");
    assert!((direct - 0.9424189814814814).abs() < 1e-12, "{direct}");
    // A class missing from the labels: the one-vs-rest AUC is undefined.
    let y3 = [0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 2];
    assert!(roc_auc_ovr(&z, 4, &y3, ScoreKind::Logits).expect("ok").is_nan());
    assert!(classification_metrics(&z, 4, &y3, ScoreKind::Logits, "").expect("ok")["auc_ovr"].is_nan());
    // Two classes: the binary AUC.
    let s = [0.1f64, 0.4, 0.35, 0.8];
    assert_close!(roc_auc_ovr(&s, 1, &[0, 0, 1, 1], ScoreKind::Probabilities).expect("ok"), 0.75);
    assert!(roc_auc_ovr(&z, 4, &y[..3], ScoreKind::Logits).is_err());
    assert!(roc_auc_ovr(&z, 4, &[4; 12], ScoreKind::Logits).is_err());
}

#[test]
fn weighted_scores_and_json_matrix() {
    // true 0 0 0 1 1 2, pred 0 0 1 1 1 3: class 3 predicted but never present (weight 0).
    let cm = ConfusionMatrix::new(&[0, 0, 1, 1, 1, 3], &[0, 0, 0, 1, 1, 2], 4).expect("ok");
    let w = cm.weighted_scores();
    // class 0: P 1, R 2/3, F1 0.8 (3 rows); class 1: P 2/3, R 1, F1 0.8 (2); class 2: 0 (1).
    assert_eq!(w.classes, 3);
    assert_close!(w.precision, (3.0 * 1.0 + 2.0 * (2.0 / 3.0)) / 6.0);
    assert_close!(w.recall, (3.0 * (2.0 / 3.0) + 2.0 * 1.0) / 6.0);
    assert_close!(w.f1, (3.0 * 0.8 + 2.0 * 0.8) / 6.0);
    // The macro average counts class 3 (predicted) with F1 0, over 4 classes.
    let m = cm.macro_scores();
    assert_eq!(m.classes, 4);
    assert_close!(m.f1, 1.6 / 4.0);
    assert_eq!(confusion_to_json(&cm), "[[2, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]");
    let one = ConfusionMatrix::new(&[0], &[0], 1).expect("ok");
    assert_eq!(confusion_to_json(&one), "[[1]]");
}

#[test]
fn regression_known_answers() {
    let pred = [1.0f32, 2.0, 3.0];
    let target = [1.0f64, 4.0, 0.0];
    assert_close!(mse(&pred, &target).expect("ok"), 13.0 / 3.0);
    assert_close!(mae(&pred, &target).expect("ok"), 5.0 / 3.0);
    let m = regression_metrics(&pred, &target, "test_").expect("ok");
    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(keys, ["test_mae", "test_mse", "test_r2", "test_rmse"]);
    assert_close!(m["test_mse"], 13.0 / 3.0);
    assert_close!(m["test_mae"], 5.0 / 3.0);
    assert_close!(m["test_rmse"], (13.0f64 / 3.0).sqrt());
    // Targets 1 4 0 (mean 5/3, SS_tot 26/3), SS_res 13: R² = 1 - 13 / (26/3) = -1/2.
    assert_close!(m["test_r2"], -0.5);
    // scikit-learn 1.9.1: mean_squared_error 0.25, its root 0.5, mean_absolute_error
    // 0.5, r2_score 0.7093023255813953.
    let (p, t) = ([1.0f64, 2.5, 2.0, 4.5, 3.0], [1.5f64, 2.0, 2.5, 4.0, 3.5]);
    assert_close!(rmse(&p, &t).expect("ok"), 0.5);
    assert_close!(r2(&p, &t).expect("ok"), 0.7093023255813953);
    // Constant targets: R² is undefined.
    assert!(r2(&[1.0f32, 2.0], &[3.0f32, 3.0]).expect("ok").is_nan());
    assert!(regression_metrics(&[1.0f32], &[1.0f32], "").expect("ok")["r2"].is_nan());
    assert!(r2(&[1.0f32], &[1.0f32, 2.0]).is_err());
    assert!(mse(&pred, &[1.0f32]).is_err());
    assert!(mae::<f32, f32>(&[], &[]).is_err());
}

// ---------------------------------------------------------------- formatting, JSON

#[test]
fn number_formatting() {
    assert_eq!(format_number(3.0), "3");
    assert_eq!(format_number(0.1), "0.1");
    assert_eq!(format_number(-2.5), "-2.5");
    assert_eq!(format_number(1e-7), "1e-7");
    assert_eq!(format_number(1.5e20), "1.5e20");
    assert_eq!(format_number(f64::NAN), "nan");
    assert_eq!(format_number(f64::NEG_INFINITY), "-inf");
    assert_eq!(format_short(0.97199999), "0.972");
    assert_eq!(format_short(2.0 / 3.0), "0.666667");
    assert_eq!(format_short(123456789.0), "123457000");
    assert_eq!(format_short(0.0), "0");
    assert_eq!(format_short(0.972f32 as f64), "0.972");
}

#[test]
fn json_is_sorted_finite_and_nan_is_null() {
    let mut m = Metrics::new();
    m.insert("b".into(), 1.5);
    m.insert("a".into(), f64::NAN);
    m.insert("c".into(), 0.1);
    m.insert("d".into(), f64::INFINITY);
    m.insert("e".into(), 1e-7);
    m.insert("f".into(), 3.0);
    m.insert("g\"h\\".into(), -0.25);
    let expected = "{\n  \"a\": null,\n  \"b\": 1.5,\n  \"c\": 0.1,\n  \"d\": null,\n  \"e\": 1e-7,\n  \"f\": 3,\n  \"g\\\"h\\\\\": -0.25\n}\n";
    assert_eq!(to_json(&m), expected);
    assert_eq!(to_json(&Metrics::new()), "{}\n");
}

// ---------------------------------------------------------------- MetricsLog, CSV

fn sample_log() -> MetricsLog {
    let mut log = MetricsLog::new();
    for e in 1..=12 {
        let t = e as f64;
        let mut row = vec![
            ("epoch", t),
            ("step", t * 50.0),
            ("train_loss", 1.2 * (-0.25 * t).exp() + 0.05),
            ("val_loss", 1.25 * (-0.22 * t).exp() + 0.09 + 0.01 * (t - 8.0).max(0.0)),
            ("train_accuracy", 1.0 - 0.5 * (-0.3 * t).exp()),
            ("val_accuracy", 0.97 - 0.5 * (-0.28 * t).exp()),
            ("lr", 0.01),
        ];
        if e == 5 {
            row.retain(|(k, _)| *k != "val_loss" && *k != "val_accuracy");
        }
        log.push(&row).expect("row");
    }
    log
}

#[test]
fn metrics_log_csv_columns_and_gaps() {
    let mut log = MetricsLog::new();
    log.push(&[("epoch", 1.0), ("train_loss", 0.5), ("val_loss", 0.75)]).expect("row 1");
    // A later row may add a column and leave one out.
    log.push(&[("epoch", 2.0), ("train_loss", 0.25), ("samples_per_sec", 1234.5)]).expect("row 2");
    log.push(&[("epoch", 3.0), ("train_loss", f64::NAN), ("val_loss", 1e-7), ("samples_per_sec", 1e3)]).expect("row 3");
    assert_eq!(log.columns(), ["epoch", "train_loss", "val_loss", "samples_per_sec"]);
    assert_eq!(log.len(), 3);
    assert_eq!(log.get(1, "val_loss"), None);
    assert_eq!(log.get(1, "samples_per_sec"), Some(1234.5));
    assert_eq!(log.column("val_loss"), Some(vec![Some(0.75), None, Some(1e-7)]));
    assert_eq!(log.column("nope"), None);
    let expected = "\
epoch,train_loss,val_loss,samples_per_sec
1,0.5,0.75,
2,0.25,,1234.5
3,nan,1e-7,1000
";
    assert_eq!(log.to_csv(), expected);

    let dir = out_dir("csv");
    let path = dir.join("metrics.csv");
    log.write_csv(&path).expect("write");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), expected);
    // Rewritten after another epoch: replaced whole, no temporary files left behind.
    log.push(&[("epoch", 4.0), ("train_loss", 0.125)]).expect("row 4");
    log.write_csv(&path).expect("rewrite");
    assert!(std::fs::read_to_string(&path).expect("read").ends_with("4,0.125,,\n"));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into())
        .collect();
    assert_eq!(names, ["metrics.csv"]);
    // Writing into a missing folder is an error, not a panic.
    assert!(log.write_csv(&dir.join("missing").join("metrics.csv")).is_err());
}

#[test]
fn metrics_log_rejects_bad_rows() {
    let mut log = MetricsLog::new();
    assert!(log.push(&[("a", 1.0), ("a", 2.0)]).is_err());
    assert!(log.push(&[("a,b", 1.0)]).is_err());
    assert!(log.push(&[("", 1.0)]).is_err());
    assert!(log.push(&[("x\ny", 1.0)]).is_err());
    assert!(log.is_empty());
    assert!(log.columns().is_empty());
    let mut m = Metrics::new();
    m.insert("test_accuracy".into(), 0.5);
    log.push_metrics(&m).expect("from a map");
    assert_eq!(log.to_csv(), "test_accuracy\n0.5\n");
}

// ---------------------------------------------------------------- PNG checks

/// Checks the PNG signature and the IHDR chunk by hand; returns (width, height).
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 33, "too short for a PNG");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[8..12], &[0, 0, 0, 13], "IHDR length");
    assert_eq!(&bytes[12..16], b"IHDR");
    let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    assert_eq!(bytes[24], 8, "bit depth");
    assert_eq!(bytes[25], 2, "colour type RGB");
    assert_eq!(&bytes[bytes.len() - 12..], b"\0\0\0\0IEND\xaeB`\x82", "IEND chunk");
    (w, h)
}

/// Decodes an 8-bit RGB PNG into its pixels.
fn decode_rgb(bytes: &[u8]) -> Vec<[u8; 3]> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    buf[..info.buffer_size()].chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect()
}

/// Fraction of pixels within 3 per channel of `rgb`.
fn share_of(pixels: &[[u8; 3]], rgb: [u8; 3]) -> f64 {
    let n = pixels.iter().filter(|p| p.iter().zip(rgb).all(|(&a, b)| (a as i32 - b as i32).abs() <= 3)).count();
    n as f64 / pixels.len() as f64
}

#[test]
fn curves_png() {
    let dir = out_dir("curves");
    let log = sample_log();
    let panels = curve_panels(&log);
    assert_eq!(panels.len(), 2);
    assert_eq!(panels[0].series.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["train_loss", "val_loss"]);
    assert_eq!(
        panels[1].series.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["train_accuracy", "val_accuracy"]
    );
    assert_eq!(panels[0].x_label, "epoch");

    let path = dir.join("curves.png");
    plot_curves(&path, &log, "Training curves: mlp on moons").expect("plot");
    let bytes = std::fs::read(&path).expect("read png");
    assert_eq!(png_size(&bytes), (1280, 520));
    assert!(bytes.len() > 10_000, "{} bytes is too small for a chart", bytes.len());
    let pixels = decode_rgb(&bytes);
    assert!(share_of(&pixels, [255, 255, 255]) > 0.5, "mostly white background");
    assert!(share_of(&pixels, [31, 119, 180]) > 0.001, "train lines (blue)");
    assert!(share_of(&pixels, [255, 127, 14]) > 0.001, "val lines (orange)");
    assert!(share_of(&pixels, [0, 0, 0]) > 0.001, "black text and axes");

    // Only losses: one panel.
    let mut loss_only = MetricsLog::new();
    for e in 0..3 {
        loss_only.push(&[("epoch", e as f64), ("loss", 1.0 / (e as f64 + 1.0))]).expect("row");
    }
    let path = dir.join("loss_only.png");
    plot_curves(&path, &loss_only, "loss").expect("plot");
    assert_eq!(png_size(&std::fs::read(&path).expect("read")), (660, 520));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".png") && !n.starts_with('.')), "{names:?}");
}

#[test]
fn curves_edge_cases_are_errors_or_pictures_not_panics() {
    let dir = out_dir("curves_edge");
    // Nothing to plot.
    assert!(plot_curves(&dir.join("a.png"), &MetricsLog::new(), "t").is_err());
    let mut no_loss = MetricsLog::new();
    no_loss.push(&[("epoch", 1.0), ("lr", 0.1)]).expect("row");
    assert!(plot_curves(&dir.join("b.png"), &no_loss, "t").is_err());
    assert!(!dir.join("a.png").exists() && !dir.join("b.png").exists());
    // One epoch, a constant series, NaN and infinite values, no epoch column.
    let mut odd = MetricsLog::new();
    odd.push(&[("train_loss", 0.5), ("val_loss", f64::NAN)]).expect("row");
    odd.push(&[("train_loss", f64::INFINITY), ("val_loss", 0.5)]).expect("row");
    odd.push(&[("train_loss", 0.5), ("val_loss", 0.5)]).expect("row");
    plot_curves(&dir.join("odd.png"), &odd, "").expect("plot");
    let mut one = MetricsLog::new();
    one.push(&[("epoch", 1.0), ("train_loss", 1e-12), ("train_accuracy", 1.0)]).expect("row");
    plot_curves(&dir.join("one.png"), &one, "one epoch").expect("plot");
    let mut huge = MetricsLog::new();
    huge.push(&[("epoch", 1.0), ("train_loss", 1e300)]).expect("row");
    huge.push(&[("epoch", 2.0), ("train_loss", -1e300)]).expect("row");
    assert!(plot_curves(&dir.join("huge.png"), &huge, "t").is_err());
    let mut big = MetricsLog::new();
    big.push(&[("epoch", 1.0), ("train_loss", 3e7)]).expect("row");
    big.push(&[("epoch", 2.0), ("train_loss", 1e-3)]).expect("row");
    plot_curves(&dir.join("big.png"), &big, "big").expect("plot");
    // Nearly equal values, a long run of steps, and a title with non-ASCII and control
    // characters.
    let mut close_values = MetricsLog::new();
    for i in 0..5000 {
        let v = 1.0 + 1e-8 * ((i % 7) as f64);
        close_values.push(&[("step", i as f64), ("train_loss", v), ("val_accuracy", 0.5)]).expect("row");
    }
    plot_curves(&dir.join("close.png"), &close_values, "ünïcödé α→β 日本\n\t\u{0}").expect("plot");
    // Panels given directly.
    let panel = Panel {
        title: "t".into(),
        x_label: "x".into(),
        y_label: "y".into(),
        series: vec![Series { name: "s".into(), points: vec![(0.0, 1.0), (1.0, 2.0)] }],
    };
    plot_panels(&dir.join("panel.png"), "panels", &[panel]).expect("plot");
    assert!(plot_panels(&dir.join("none.png"), "none", &[]).is_err());
    // A folder that does not exist.
    assert!(plot_curves(&dir.join("missing").join("c.png"), &sample_log(), "t").is_err());
}

/// Two Gaussian-ish blobs per class on a circle, deterministic.
fn blobs(classes: usize, per_class: usize) -> (Vec<[f32; 2]>, Vec<i32>) {
    let (mut pts, mut labels) = (vec![], vec![]);
    let mut seed = 12345u64;
    let mut rand = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5
    };
    for c in 0..classes {
        let angle = c as f64 / classes as f64 * std::f64::consts::TAU;
        let (cx, cy) = (3.0 * angle.cos() + 1.0, 2.0 * angle.sin() - 0.5);
        for _ in 0..per_class {
            pts.push([(cx + 1.6 * rand()) as f32, (cy + 1.6 * rand()) as f32]);
            labels.push(c as i32);
        }
    }
    (pts, labels)
}

#[test]
fn decision_boundary_png_of_a_linear_classifier() {
    let dir = out_dir("boundary");
    let (points, labels) = blobs(2, 60);
    // Class 1 when x > 1 + 0.3 y: a linear classifier.
    let mut calls = 0;
    let mut predict = |grid: &[[f32; 2]]| -> Result<Vec<i32>, String> {
        calls += 1;
        assert_eq!(grid.len(), GRID * GRID);
        Ok(grid.iter().map(|p| i32::from(p[0] < 1.0 + 0.3 * p[1])).collect())
    };
    let path = dir.join("boundary.png");
    plot_decision_boundary(&path, &points, &labels, 2, &mut predict, "Decision boundary: linear").expect("plot");
    assert_eq!(calls, 1);
    let bytes = std::fs::read(&path).expect("read png");
    assert_eq!(png_size(&bytes), (760, 760));
    assert!(bytes.len() > 10_000, "{} bytes is too small", bytes.len());
    let pixels = decode_rgb(&bytes);
    // Both regions shaded in light class colours (tab blue / orange, 70% towards white).
    let light = |c: [u8; 3]| c.map(|v| (v as f64 + (255.0 - v as f64) * 0.7).round() as u8);
    assert!(share_of(&pixels, light([31, 119, 180])) > 0.1, "class 0 region");
    assert!(share_of(&pixels, light([255, 127, 14])) > 0.1, "class 1 region");
    // The points in full colour.
    assert!(share_of(&pixels, [31, 119, 180]) > 0.002, "class 0 points");
    assert!(share_of(&pixels, [255, 127, 14]) > 0.002, "class 1 points");

    // Three classes: argmax of three linear scores.
    let (points, labels) = blobs(3, 50);
    let mut predict3 = |grid: &[[f32; 2]]| -> Result<Vec<i32>, String> {
        let w = [[1.0f32, 0.0], [-0.5, 0.87], [-0.5, -0.87]];
        Ok(grid
            .iter()
            .map(|p| {
                let s: Vec<f32> = w.iter().map(|w| w[0] * (p[0] - 1.0) + w[1] * (p[1] + 0.5)).collect();
                predicted_classes(&s, 3, ScoreKind::Logits).map(|v| v[0]).unwrap_or(0)
            })
            .collect())
    };
    let path3 = dir.join("boundary3.png");
    plot_decision_boundary(&path3, &points, &labels, 3, &mut predict3, "Three classes").expect("plot");
    let pixels = decode_rgb(&std::fs::read(&path3).expect("read"));
    assert!(share_of(&pixels, light([44, 160, 44])) > 0.05, "class 2 region");
}

#[test]
fn decision_boundary_errors() {
    let dir = out_dir("boundary_err");
    let path = dir.join("b.png");
    let pts = [[0.0f32, 0.0], [1.0, 1.0]];
    let mut ok = |g: &[[f32; 2]]| -> Result<Vec<i32>, String> { Ok(vec![0; g.len()]) };
    let mut short = |_: &[[f32; 2]]| -> Result<Vec<i32>, String> { Ok(vec![0; 3]) };
    let mut out_of_range = |g: &[[f32; 2]]| -> Result<Vec<i32>, String> { Ok(vec![2; g.len()]) };
    let mut failing = |_: &[[f32; 2]]| -> Result<Vec<i32>, String> { Err("model failed".into()) };
    assert!(plot_decision_boundary(&path, &pts, &[0, 1], 2, &mut short, "t").is_err());
    assert!(plot_decision_boundary(&path, &pts, &[0, 1], 2, &mut out_of_range, "t").is_err());
    let e = plot_decision_boundary(&path, &pts, &[0, 1], 2, &mut failing, "t").expect_err("fails");
    assert!(e.contains("model failed"));
    assert!(plot_decision_boundary(&path, &pts, &[0, 2], 2, &mut ok, "t").is_err());
    assert!(plot_decision_boundary(&path, &pts, &[0], 2, &mut ok, "t").is_err());
    assert!(plot_decision_boundary(&path, &[], &[], 2, &mut ok, "t").is_err());
    assert!(plot_decision_boundary(&path, &pts, &[0, 1], 0, &mut ok, "t").is_err());
    assert!(plot_decision_boundary(&path, &[[f32::NAN, 0.0]], &[0], 2, &mut ok, "t").is_err());
    assert!(plot_decision_boundary(&path, &[[-3e38, 0.0], [3e38, 0.0]], &[0, 1], 2, &mut ok, "t").is_err());
    assert!(!path.exists());
    // Degenerate data (one point, one class) still plots.
    plot_decision_boundary(&path, &[[5.0, 5.0]], &[0], 1, &mut ok, "one point").expect("plot");
    assert!(path.exists());
    // Many classes: no legend, colours cycle.
    let many: Vec<[f32; 2]> = (0..30).map(|i| [i as f32, (i * i % 7) as f32]).collect();
    let labels: Vec<i32> = (0..30).collect();
    let mut by_x = |g: &[[f32; 2]]| -> Result<Vec<i32>, String> {
        Ok(g.iter().map(|p| (p[0].round().clamp(0.0, 29.0)) as i32).collect())
    };
    plot_decision_boundary(&dir.join("many.png"), &many, &labels, 30, &mut by_x, "30 classes").expect("plot");
}

/// Per-class ROC and precision-recall series of logits `[n, k]` (k > 2) against labels.
fn per_class_series(logits: &[f64], k: usize, labels: &[i32]) -> (Vec<Series>, Vec<Series>) {
    let (mut rocs, mut prs) = (vec![], vec![]);
    for c in 0..k {
        let scores = positive_scores(logits, k, ScoreKind::Logits, c).expect("scores");
        let y: Vec<i32> = labels.iter().map(|&l| i32::from(l as usize == c)).collect();
        let roc = roc_curve(&scores, &y).expect("roc");
        let pr = pr_curve(&scores, &y).expect("pr");
        let auc = roc_auc_binary(&scores, &y).expect("auc");
        let ap = average_precision(&scores, &y).expect("ap");
        let (r, p) = roc_pr_series(&format!("class {c}"), &roc, auc, &pr, ap);
        rocs.push(r);
        prs.push(p);
    }
    (rocs, prs)
}

/// `n` deterministic pseudo-random values, uniform in [-2, 2).
fn noise(n: usize, mut seed: u64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 4.0
        })
        .collect()
}

/// Logits of a noisy nearest-centre classifier on `blobs`: minus the squared distance to
/// each class centre plus noise, so the classes are told apart well but not perfectly.
fn centre_logits(points: &[[f32; 2]], k: usize) -> Vec<f64> {
    let noise = noise(points.len() * k, 777);
    let mut out = vec![];
    for p in points {
        for c in 0..k {
            let angle = c as f64 / k as f64 * std::f64::consts::TAU;
            let (cx, cy) = (3.0 * angle.cos() + 1.0, 2.0 * angle.sin() - 0.5);
            out.push(-((p[0] as f64 - cx).powi(2) + (p[1] as f64 - cy).powi(2)) + noise[out.len()]);
        }
    }
    out
}

#[test]
fn roc_pr_png() {
    let dir = out_dir("roc_pr");
    // Ten classes: ten series per panel, each in its palette colour, legends included.
    let (points, labels) = blobs(10, 60);
    let logits = centre_logits(&points, 10);
    let (rocs, prs) = per_class_series(&logits, 10, &labels);
    // Names carry the areas to 3 decimals: "class 3 (AUC 0.987)".
    for (s, prefix) in [(&rocs[3], "class 3 (AUC "), (&prs[3], "class 3 (AP ")] {
        let area = s.name.strip_prefix(prefix).and_then(|r| r.strip_suffix(')')).expect("name");
        assert!(area.len() == 5 && area.parse::<f64>().is_ok_and(|a| (0.5..=1.0).contains(&a)), "{}", s.name);
    }
    let path = dir.join("roc_pr_10.png");
    plot_roc_pr(&path, "ROC and precision-recall: 10 classes", &rocs, &prs).expect("plot");
    let bytes = std::fs::read(&path).expect("read png");
    assert_eq!(png_size(&bytes), (1280, 640));
    assert!(bytes.len() > 10_000, "{} bytes is too small for a chart", bytes.len());
    let pixels = decode_rgb(&bytes);
    assert!(share_of(&pixels, [255, 255, 255]) > 0.4, "mostly white background");
    for (c, rgb) in [(0, [31, 119, 180]), (3, [214, 39, 40]), (9, [23, 190, 207])] {
        assert!(share_of(&pixels, rgb) > 0.0005, "class {c} colour {rgb:?}");
    }
    assert!(share_of(&pixels, [150, 150, 150]) > 0.0002, "grey chance diagonal");
    assert!(share_of(&pixels, [0, 0, 0]) > 0.001, "black text and axes");

    // Binary: train and validation curves of one sigmoid column.
    let (points, labels) = blobs(2, 80);
    // A linear score plus noise, so the classes overlap.
    let scores: Vec<f64> = points
        .iter()
        .zip(noise(points.len(), 5))
        .map(|(p, n)| 1.0 - p[0] as f64 + 0.3 * p[1] as f64 + 2.0 * n)
        .collect();
    let mut rocs = vec![];
    let mut prs = vec![];
    for (name, val) in [("train", false), ("val", true)] {
        let idx: Vec<usize> = (0..points.len()).filter(|i| (i % 4 == 0) == val).collect();
        let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
        let y: Vec<i32> = idx.iter().map(|&i| labels[i]).collect();
        let roc = roc_curve(&s, &y).expect("roc");
        let pr = pr_curve(&s, &y).expect("pr");
        let (r, p) = roc_pr_series(
            name,
            &roc,
            roc_auc_binary(&s, &y).expect("auc"),
            &pr,
            average_precision(&s, &y).expect("ap"),
        );
        rocs.push(r);
        prs.push(p);
    }
    let path = dir.join("roc_pr_binary.png");
    plot_roc_pr(&path, "ROC and precision-recall: linear classifier", &rocs, &prs).expect("plot");
    let pixels = decode_rgb(&std::fs::read(&path).expect("read"));
    assert!(share_of(&pixels, [31, 119, 180]) > 0.001, "train (blue)");
    assert!(share_of(&pixels, [255, 127, 14]) > 0.001, "val (orange)");

    // Twelve classes: the colours cycle and the last two series are dashed; one panel
    // only when there are no precision-recall curves.
    let (points, labels) = blobs(12, 30);
    let (rocs, _) = per_class_series(&centre_logits(&points, 12), 12, &labels);
    let path = dir.join("roc_12.png");
    plot_roc_pr(&path, "ROC: 12 classes", &rocs, &[]).expect("plot");
    assert_eq!(png_size(&std::fs::read(&path).expect("read")), (660, 640));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".png") && !n.starts_with('.')), "{names:?}");
}

#[test]
fn roc_pr_errors_not_panics() {
    let dir = out_dir("roc_pr_err");
    let path = dir.join("x.png");
    let good = Series { name: "ok".into(), points: vec![(0.0, 0.0), (1.0, 1.0)] };
    assert!(plot_roc_pr(&path, "t", &[], &[]).expect_err("nothing").contains("nothing to plot"));
    let outside = Series { name: "bad".into(), points: vec![(0.0, 0.0), (1.5, 1.0)] };
    let e = plot_roc_pr(&path, "t", std::slice::from_ref(&good), &[outside]).expect_err("outside");
    assert!(e.contains("`bad`") && e.contains("outside [0, 1]"), "{e}");
    let empty = Series { name: "nan".into(), points: vec![(f64::NAN, 0.5)] };
    assert!(plot_roc_pr(&path, "t", &[empty], &[]).expect_err("no points").contains("no finite points"));
    assert!(!path.exists());
    // Gaps (NaN points), a single point, a degenerate curve and many series still plot.
    let gappy = Series { name: "gap".into(), points: vec![(0.0, 0.0), (f64::NAN, 0.5), (0.5, 0.9), (1.0, 1.0)] };
    let single = Series { name: "one".into(), points: vec![(0.3, 0.7)] };
    let many: Vec<Series> = (0..30)
        .map(|i| Series { name: format!("s{i}"), points: vec![(0.0, 0.0), (i as f64 / 30.0, 1.0), (1.0, 1.0)] })
        .collect();
    plot_roc_pr(&path, "odd", &[gappy, single, good], &many).expect("plot");
    assert!(path.exists());
    assert!(plot_roc_pr(&dir.join("missing").join("y.png"), "t", &many, &[]).is_err());
}
