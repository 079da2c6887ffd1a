//! What metrics are computed on, and which metrics a run reports under which names.
//!
//! `target` finds the prediction the loss scores: `metrics_on = name` when the train block
//! says so, else the first argument of the prelude loss the model's loss is built from
//! (`cross_entropy(logits, y)` scores `logits`), else the one declared output that the loss
//! reads last. When none of these settles it (two losses on two predictions, a loss that
//! reads no output), there is no target and the run says why instead of guessing.
//!
//! `report` turns class scores or predictions into named metrics following scikit-learn:
//! for two classes `precision`/`recall`/`f1` are those of the positive class (label 1),
//! with `*_macro` and `*_weighted` beside them; for more classes only the averages exist,
//! and a requested `f1` is reported as `f1_macro`, with a note that says so.

use super::engine::labels_of;
use crate::data::{self, Array, ArrayData, Dataset};
use crate::ir::{Graph, Op, Program, UnaryOp, Value};
use crate::metrics::{self, ConfusionMatrix, Metrics, ScoreKind};

/// The name under which a scored prediction that is not a declared output is added to
/// the graphs the trainer compiles.
pub const SCORED_OUTPUT: &str = "scored";

/// The value metrics are computed on.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The output's name in the run's graphs (a declared output, or [`SCORED_OUTPUT`]).
    pub output: String,
    /// What the scores are, when the loss says it (`cross_entropy`, `hinge` and
    /// `bce_logits` take logits); `None`: decided from the graph and the values.
    pub kind: Option<ScoreKind>,
    /// Why this value, for people: "`logits`, the prediction cross_entropy scores".
    pub why: String,
}

/// Values that `of` depends on (including itself).
fn ancestors(g: &Graph, of: Value) -> Vec<bool> {
    let mut reach = vec![false; g.len()];
    reach[of.as_u32() as usize] = true;
    for (v, n) in g.nodes.iter().rev() {
        if reach[v.as_u32() as usize] {
            for a in &n.args {
                reach[a.as_u32() as usize] = true;
            }
        }
    }
    reach
}

/// The scored predictions of `g` that its loss depends on: (index in `g.scored`, value).
fn scored_by_loss(g: &Graph) -> Vec<(usize, Value)> {
    let Some(loss) = g.loss else { return vec![] };
    let reach = ancestors(g, loss);
    let mut out: Vec<(usize, Value)> = Vec::new();
    for (i, s) in g.scored.iter().enumerate() {
        if reach[s.value.as_u32() as usize] && !out.iter().any(|(_, v)| *v == s.value) {
            out.push((i, s.value));
        }
    }
    out
}

/// Finds the metrics target of a program (see the module doc). `Err` is the reason
/// there is none, to show to the user; it is not a failure of the run.
pub fn target(p: &Program) -> Result<Target, String> {
    let g = &p.eval;
    if let Some(on) = &p.settings.metrics_on {
        return Ok(Target { output: on.clone(), kind: None, why: format!("`{on}` (metrics_on)") });
    }
    let Some(loss) = g.loss else {
        return Err("the model has no loss".into());
    };
    let scored = scored_by_loss(g);
    match scored.as_slice() {
        [(i, v)] => {
            let loss_fn = &g.scored[*i].loss_fn;
            let kind = (loss_fn != "mse").then_some(ScoreKind::Logits);
            return Ok(match g.outputs.iter().find(|(_, o)| o == v) {
                Some((name, _)) => {
                    Target { output: name.clone(), kind, why: format!("`{name}`, the prediction {loss_fn} scores") }
                }
                None => Target {
                    output: SCORED_OUTPUT.into(),
                    kind,
                    why: format!("the prediction {loss_fn} scores (not a declared output)"),
                },
            });
        }
        [] => {}
        many => {
            let fns: Vec<&str> = many.iter().map(|(i, _)| g.scored[*i].loss_fn.as_str()).collect();
            return Err(format!(
                "the loss scores {} predictions (with {}); choose one with `metrics_on = <output>`",
                many.len(),
                fns.join(", ")
            ));
        }
    }
    // A loss written by hand: the declared output it reads last.
    let reach = ancestors(g, loss);
    let read: Vec<&(String, Value)> = g.outputs.iter().filter(|(_, v)| reach[v.as_u32() as usize]).collect();
    let last: Vec<&&(String, Value)> = read
        .iter()
        .filter(|(_, v)| !read.iter().any(|(_, w)| w != v && ancestors(g, *w)[v.as_u32() as usize]))
        .collect();
    match last.as_slice() {
        [(name, _)] => {
            Ok(Target { output: name.clone(), kind: None, why: format!("`{name}`, the output the loss reads") })
        }
        [] => Err("the loss reads no declared output; name the prediction with `metrics_on = <output>`".into()),
        _ => Err("the loss reads several outputs; choose one with `metrics_on = <output>`".into()),
    }
}

/// `g` with the target's value as an output (when it is not a declared one).
pub fn with_target_output(g: &Graph, t: &Target) -> Result<Graph, String> {
    let mut g = g.clone();
    if g.outputs.iter().any(|(n, _)| *n == t.output) {
        return Ok(g);
    }
    let scored = scored_by_loss(&g);
    let &(_, v) = scored.first().ok_or_else(|| format!("internal error: no value for `{}`", t.output))?;
    g.outputs.push((t.output.clone(), v));
    Ok(g)
}

/// The graph that scores rows: the eval graph with the target as its only output (or no
/// output without a target: loss only).
pub fn scoring_graph(p: &Program, t: Option<&Target>) -> Result<Graph, String> {
    let mut g = match t {
        Some(t) => with_target_output(&p.eval, t)?,
        None => p.eval.clone(),
    };
    let keep: Vec<(String, Value)> =
        g.outputs.iter().filter(|(n, _)| t.is_some_and(|t| t.output == *n)).cloned().collect();
    g.outputs = keep;
    Ok(g)
}

/// What the scores of `output` in `g` are: the target's kind, else probabilities for a
/// sigmoid output, else logits.
pub fn score_kind(g: &Graph, t: &Target) -> ScoreKind {
    if let Some(k) = t.kind {
        return k;
    }
    let v = g.outputs.iter().find(|(n, _)| *n == t.output).map(|(_, v)| *v);
    match v.map(|v| &g.nodes[v].op) {
        Some(Op::Unary(UnaryOp::Sigmoid)) => ScoreKind::Probabilities,
        _ => ScoreKind::Logits,
    }
}

/// Scores of rows: the mean loss and the target's values (`width` per row).
#[derive(Clone, Debug, Default)]
pub struct Scores {
    pub loss: f64,
    pub values: Vec<f32>,
    pub width: usize,
}

/// Named metrics of one evaluation, the notes that explain names and omissions, and the
/// confusion matrix of a classifier.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    /// Everything computed, prefixed (`test_accuracy`, `test_f1_macro`, ...).
    pub all: Metrics,
    /// What the run prints: the requested metrics (and the loss), under their real names.
    pub shown: Metrics,
    pub notes: Vec<String>,
    pub confusion: Option<ConfusionMatrix>,
    /// Classes of a classifier (2 for one logit), 0 for a regressor.
    pub classes: usize,
}

/// Metrics of `scores` against the labels of `rows`, keys prefixed by `prefix`; `wanted`
/// are the train block's `metrics`.
pub fn report(
    ds: &Dataset,
    rows: &[usize],
    scores: &Scores,
    kind: ScoreKind,
    prefix: &str,
    wanted: &[String],
) -> Evaluation {
    let mut e = Evaluation::default();
    e.all.insert(format!("{prefix}loss"), scores.loss);
    e.shown.insert(format!("{prefix}loss"), scores.loss);
    if scores.width == 0 || scores.values.is_empty() {
        return e;
    }
    let want = |k: &str| wanted.iter().any(|w| w == k);
    if let Some(labels) = labels_of(ds, rows) {
        let m = match metrics::classification_metrics(&scores.values, scores.width, &labels, kind, prefix) {
            Ok(m) => m,
            Err(err) => {
                e.notes.push(format!("classification metrics not computed: {err}"));
                return e;
            }
        };
        let k = metrics::num_classes(scores.width);
        e.classes = k;
        e.confusion = metrics::confusion_matrix(&scores.values, scores.width, &labels, kind).ok();
        let show = |name: &str, e: &mut Evaluation| {
            let key = format!("{prefix}{name}");
            if let Some(v) = m.get(&key) {
                e.shown.insert(key, *v);
            }
        };
        show("accuracy", &mut e);
        for w in ["precision", "recall", "f1"] {
            if want(w) {
                if k == 2 {
                    show(w, &mut e);
                } else {
                    show(&format!("{w}_macro"), &mut e);
                }
            }
        }
        if k > 2 && ["precision", "recall", "f1"].iter().any(|w| want(w)) {
            e.notes.push(format!(
                "precision, recall and f1 of {k} classes are macro averages (`*_macro`; `*_weighted` in --json)"
            ));
        }
        if k == 2 && ["precision", "recall", "f1"].iter().any(|w| want(w)) {
            e.notes.push("precision, recall and f1 are those of the positive class (label 1)".into());
        }
        if want("auc") {
            if k == 2 {
                show("auc", &mut e);
            } else {
                show("auc_ovr", &mut e);
                e.notes.push(format!("auc of {k} classes: the one-vs-rest macro average (`auc_ovr`)"));
            }
        }
        for w in ["mse", "mae"] {
            if want(w) {
                e.notes.push(format!("{w} skipped: it is a regression metric and the labels are classes"));
            }
        }
        e.all.extend(m);
    } else if let Some(Array { data: ArrayData::F32(t), .. }) = ds.get(data::LABEL_INPUT) {
        let per = t.len() / ds.n.max(1);
        let targets: Vec<f32> = rows.iter().flat_map(|&r| t[r * per..(r + 1) * per].iter().copied()).collect();
        match metrics::regression_metrics(&scores.values, &targets, prefix) {
            Ok(m) => {
                for (k, v) in &m {
                    let base = &k[prefix.len()..];
                    if base == "mse" || base == "mae" || want(base) {
                        e.shown.insert(k.clone(), *v);
                    }
                }
                e.all.extend(m);
            }
            Err(err) => e.notes.push(format!("regression metrics not computed: {err}")),
        }
        // The default `metrics = [accuracy]` says nothing about a regressor.
        let default = wanted.len() == 1 && wanted[0] == "accuracy";
        for w in ["accuracy", "precision", "recall", "f1", "auc", "confusion"] {
            if want(w) && !(default && w == "accuracy") {
                e.notes.push(format!("{w} skipped: the labels are not classes (float targets)"));
            }
        }
    }
    e
}
