//! The `train { }` block: known keys, known data sources, optimizers and schedules with
//! their argument names, defaults and value types (docs/language.md).
//!
//! `apply` checks one `key = value` and stores it; the same function serves the block in
//! the source and `--set key=value` on the command line. The result, `TrainSettings`, is
//! plain data with every default filled in.

use crate::diagnostic::{Diagnostic, Span};
pub use crate::ir::recipe::{Choice, Lit, TrainSettings};
use crate::syntax::ast::{Expr, ExprKind, Ident};

pub mod augment;
pub mod tune;
mod values;

use values::{choice, err, int, lit_of, num, number, positive, ArgSpec, Ty, COUNT, POS, SEED, UNIT};

/// Data sources (docs/language.md).
fn data_spec(name: &str) -> Option<Vec<ArgSpec>> {
    Some(match name {
        "csv" => vec![
            ("path", Ty::Str, None),
            ("label", Ty::Int(i64::MIN / 2, i64::MAX / 2), num(-1.0)),
            ("header", Ty::Bool, Some(Lit::Bool(false))),
        ],
        "idx" => vec![("images", Ty::Str, None), ("labels", Ty::Str, None)],
        "npy" => vec![("features", Ty::Str, None), ("labels", Ty::Str, None)],
        "npz" | "safetensors" => vec![("path", Ty::Str, None)],
        "spirals" => vec![
            ("n", COUNT, None),
            ("classes", Ty::Int(2, 1000), num(2.0)),
            ("noise", POS, num(0.2)),
            ("seed", SEED, num(0.0)),
        ],
        "moons" => vec![("n", COUNT, None), ("noise", POS, num(0.1)), ("seed", SEED, num(0.0))],
        "blobs" => vec![
            ("n", COUNT, None),
            ("centers", Ty::Int(1, 1000), num(3.0)),
            ("std", POS, num(1.0)),
            ("seed", SEED, num(0.0)),
        ],
        "xor" => vec![("n", COUNT, None), ("noise", POS, num(0.1)), ("seed", SEED, num(0.0))],
        _ => return None,
    })
}
const DATA_NAMES: &str = "csv, idx, npy, npz, safetensors, spirals, moons, blobs, xor";

fn optimizer_spec(name: &str) -> Option<Vec<ArgSpec>> {
    let lr = |d: Option<f64>| ("lr", Ty::Pos, d.map(Lit::Num));
    Some(match name {
        "sgd" => vec![lr(None)],
        "momentum" | "nesterov" => vec![lr(None), ("mu", UNIT, num(0.9))],
        "adagrad" => vec![lr(Some(0.01)), ("eps", POS, num(1e-10))],
        "rmsprop" => vec![lr(Some(0.01)), ("beta", UNIT, num(0.99)), ("eps", POS, num(1e-8))],
        "adam" => vec![lr(Some(1e-3)), ("beta1", UNIT, num(0.9)), ("beta2", UNIT, num(0.999)), ("eps", POS, num(1e-8))],
        "adamw" => vec![
            lr(Some(1e-3)),
            ("beta1", UNIT, num(0.9)),
            ("beta2", UNIT, num(0.999)),
            ("eps", POS, num(1e-8)),
            ("weight_decay", POS, num(0.01)),
        ],
        "lbfgs" => vec![lr(Some(1.0)), ("history", Ty::Int(1, 1000), num(10.0)), ("max_iter", COUNT, num(20.0))],
        "bfgs" => vec![lr(Some(1.0)), ("max_iter", COUNT, num(20.0))],
        "newton" => vec![
            ("damping", POS, num(1e-4)),
            ("line_search", Ty::Bool, Some(Lit::Bool(true))),
            ("max_iter", COUNT, num(20.0)),
        ],
        "newton_cg" => vec![("max_cg", COUNT, num(50.0)), ("tol", UNIT, num(0.5)), ("max_iter", COUNT, num(20.0))],
        _ => return None,
    })
}
const OPTIMIZER_NAMES: &str = "sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, lbfgs, bfgs, newton, newton_cg";

fn schedule_spec(name: &str) -> Option<Vec<ArgSpec>> {
    Some(match name {
        "constant" => vec![],
        "step" => vec![("every", COUNT, None), ("gamma", POS, num(0.1))],
        "exponential" => vec![("gamma", POS, None)],
        "inverse_time" => vec![("decay", POS, None), ("power", POS, num(1.0))],
        "linear_warmup" => vec![("warmup", Ty::Int(0, 1 << 40), None)],
        "cosine" => vec![
            ("warmup", Ty::Int(0, 1 << 40), num(0.0)),
            ("min_lr", POS, num(0.0)),
            ("period", Ty::Int(0, 1 << 40), num(0.0)),
        ],
        "cyclic" => vec![("period", COUNT, None), ("min_lr", POS, num(0.0))],
        "triangular" => vec![("step_size", COUNT, None), ("min_lr", POS, num(0.0)), ("decay", UNIT, num(1.0))],
        "plateau" => vec![
            ("factor", UNIT, num(0.1)),
            ("patience", Ty::Int(0, 1 << 24), num(10.0)),
            ("min_lr", POS, num(0.0)),
            ("threshold", POS, num(1e-4)),
        ],
        _ => return None,
    })
}
const SCHEDULE_NAMES: &str =
    "constant, step, exponential, inverse_time, linear_warmup, cosine, cyclic, triangular, plateau";

fn warmup_spec(name: &str) -> Option<Vec<ArgSpec>> {
    match name {
        "linear" | "cosine" => Some(vec![("steps", COUNT, None)]),
        _ => None,
    }
}
const WARMUP_NAMES: &str = "linear, cosine";

fn preprocess_spec(name: &str) -> Option<Vec<ArgSpec>> {
    Some(match name {
        "none" | "center" | "standardize" => vec![],
        "whiten" => vec![("method", Ty::Str, Some(Lit::Str("zca".into()))), ("eps", POS, num(1e-5))],
        _ => return None,
    })
}
const PREPROCESS_NAMES: &str = "none, center, standardize, whiten";

fn prune_spec(name: &str) -> Option<Vec<ArgSpec>> {
    let epoch = Ty::Int(1, 1 << 24);
    Some(match name {
        "none" => vec![],
        "gradual" => vec![
            ("final", UNIT, None),
            ("start", epoch, num(1.0)),
            ("end", epoch, None),
            ("scope", Ty::Str, Some(Lit::Str("global".into()))),
        ],
        _ => return None,
    })
}
const PRUNE_NAMES: &str = "none, gradual";

fn quantize_spec(name: &str) -> Option<Vec<ArgSpec>> {
    Some(match name {
        "none" => vec![],
        "qat" => vec![("momentum", UNIT, num(0.9))],
        _ => return None,
    })
}
const QUANTIZE_NAMES: &str = "none, qat";

const METRIC_NAMES: [&str; 8] = ["accuracy", "precision", "recall", "f1", "confusion", "auc", "mse", "mae"];

/// Whether a resumed run may change a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnResume {
    /// Recorded in every checkpoint (`nnc.recipe.<name>`, by `record`); a resumed run
    /// with another value is a different run and is refused.
    Recipe,
    /// Recorded, and a resumed run may change it (`epochs` extends a run).
    Extend,
    /// Checked through the checkpoint's split record (`checkpoint::SplitRecord`: the
    /// data's rows and hash, the fractions, the split seed, the preprocessing).
    Split,
    /// Not recorded: it only watches the run (metrics, early stopping, logging).
    Free,
}

/// What a checkpoint records of a setting: (name, the value rendered), or nothing.
type Record = fn(&TrainSettings) -> Vec<(&'static str, String)>;

/// One train setting, declared once: its key, its meaning and default (for people and
/// editors), the parser that checks a value and stores it (the same for the train block
/// and `--set`), and what a checkpoint records of it.
pub struct Setting {
    /// The key in the train block and in `--set`.
    pub key: &'static str,
    /// What it sets, and its default.
    pub doc: &'static str,
    apply: fn(&mut TrainSettings, &Expr) -> Result<(), Diagnostic>,
    /// Whether a resumed run may change it.
    pub on_resume: OnResume,
    record: Record,
}

fn none(_: &TrainSettings) -> Vec<(&'static str, String)> {
    Vec::new()
}

fn or_none(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "none".into())
}

/// Every train setting, in the order error messages list them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "data",
        doc: "the data source: csv(path, label = -1, header = false), idx, npy, npz, safetensors, or a synthetic set (spirals, moons, blobs, xor)",
        apply: |s, v| {
            s.data = Some(choice(v, "data source", data_spec, DATA_NAMES)?);
            Ok(())
        },
        on_resume: OnResume::Split,
        record: none,
    },
    Setting {
        key: "preprocess",
        doc: "fitted on the training rows: none (default), center, standardize, whiten(method = \"zca\", eps = 1e-5)",
        apply: |s, v| {
            s.preprocess = choice(v, "preprocessing", preprocess_spec, PREPROCESS_NAMES)?;
            Ok(())
        },
        on_resume: OnResume::Split,
        record: none,
    },
    Setting {
        key: "split",
        doc: "fractions [train, test] or [train, validation, test] adding up to 1 (default: no split)",
        apply: apply_split,
        on_resume: OnResume::Split,
        record: none,
    },
    Setting {
        key: "optimizer",
        doc: "sgd(lr), momentum, nesterov, adagrad, rmsprop, adam (default, lr = 1e-3), adamw, lbfgs, bfgs, newton, newton_cg",
        apply: |s, v| {
            s.optimizer = choice(v, "optimizer", optimizer_spec, OPTIMIZER_NAMES)?;
            Ok(())
        },
        on_resume: OnResume::Recipe,
        record: |s| vec![("optimizer", s.optimizer.render())],
    },
    Setting {
        key: "schedule",
        doc: "the learning-rate schedule: constant (default), step, exponential, inverse_time, linear_warmup, cosine, cyclic, triangular, plateau",
        apply: |s, v| {
            s.schedule = choice(v, "schedule", schedule_spec, SCHEDULE_NAMES)?;
            Ok(())
        },
        on_resume: OnResume::Recipe,
        record: |s| vec![("schedule", s.schedule.render())],
    },
    Setting {
        key: "warmup",
        doc: "a warmup before the schedule: linear(steps) or cosine(steps) (default: none)",
        apply: |s, v| {
            s.warmup = Some(choice(v, "warmup", warmup_spec, WARMUP_NAMES)?);
            Ok(())
        },
        on_resume: OnResume::Recipe,
        record: |s| vec![("warmup", s.warmup.as_ref().map(|w| w.render()).unwrap_or_else(|| "none".into()))],
    },
    Setting {
        key: "batch",
        doc: "rows per step (default 32), or a batch-size schedule [32, 64, 256] with batch_at",
        apply: apply_batch,
        on_resume: OnResume::Recipe,
        record: |s| vec![("batch", s.batch.to_string()), ("batch_sizes", format!("{:?}", s.batch_sizes))],
    },
    Setting {
        key: "batch_at",
        doc: "the epochs after which a batch-size schedule moves to its next size",
        apply: apply_batch_at,
        on_resume: OnResume::Recipe,
        record: |s| vec![("batch_at", format!("{:?}", s.batch_at))],
    },
    Setting {
        key: "epochs",
        doc: "passes over the training rows (default 10); the one setting a resumed run may raise",
        apply: |s, v| {
            s.epochs = int(v, "`epochs`", 1, 1 << 24)?;
            Ok(())
        },
        on_resume: OnResume::Extend,
        record: |s| vec![("epochs", s.epochs.to_string())],
    },
    Setting {
        key: "l1",
        doc: "L1 weight penalty on weights (default 0)",
        apply: |s, v| {
            s.l1 = number(v, "`l1`")?;
            Ok(())
        },
        on_resume: OnResume::Recipe,
        record: |s| vec![("l1", s.l1.to_string())],
    },
    Setting {
        key: "l1_method",
        doc: "how L1 is applied: subgradient (default) or proximal (soft thresholding after the update)",
        apply: |s, v| match &v.kind {
            ExprKind::Name(n) | ExprKind::Str(n) if n == "subgradient" || n == "proximal" => {
                s.l1_proximal = n == "proximal";
                Ok(())
            }
            _ => Err(err(v.span, "`l1_method` is `subgradient` or `proximal`")),
        },
        on_resume: OnResume::Recipe,
        record: |s| if s.l1_proximal { vec![("l1_method", "proximal".into())] } else { Vec::new() },
    },
    Setting {
        key: "l2",
        doc: "L2 weight decay on weights (default 0)",
        apply: |s, v| {
            s.l2 = number(v, "`l2`")?;
            Ok(())
        },
        on_resume: OnResume::Recipe,
        record: |s| vec![("l2", s.l2.to_string())],
    },
    Setting {
        key: "clip_norm",
        doc: "clip the gradient to this global L2 norm (default: none)",
        apply: |s, v| {
            s.clip_norm = Some(positive(v, "`clip_norm`")?);
            Ok(())
        },
        on_resume: OnResume::Recipe,
        record: |s| vec![("clip_norm", or_none(s.clip_norm))],
    },
    Setting {
        key: "clip_value",
        doc: "clip every gradient value to [-v, v] (default: none)",
        apply: |s, v| {
            s.clip_value = Some(positive(v, "`clip_value`")?);
            Ok(())
        },
        on_resume: OnResume::Recipe,
        record: |s| vec![("clip_value", or_none(s.clip_value))],
    },
    Setting {
        key: "early_stop",
        doc: "stop after this many epochs without improvement of the monitored metric (needs a validation part)",
        apply: |s, v| {
            s.early_stop = Some(int(v, "`early_stop`", 1, 1 << 24)?);
            Ok(())
        },
        on_resume: OnResume::Free,
        record: none,
    },
    Setting {
        key: "monitor",
        doc: "the metric that chooses the best epoch and drives early stopping (default val_loss, or train_loss)",
        apply: apply_monitor,
        on_resume: OnResume::Recipe,
        record: |s| vec![("monitor", s.monitor())],
    },
    Setting {
        key: "mode",
        doc: "min or max: whether the monitored metric improves downwards (default: from its name)",
        apply: |s, v| match &v.kind {
            ExprKind::Name(n) | ExprKind::Str(n) if n == "min" || n == "max" => {
                s.mode = Some(n.clone());
                Ok(())
            }
            _ => Err(err(v.span, "`mode` is `min` or `max`")),
        },
        on_resume: OnResume::Recipe,
        record: |s| vec![("mode", if s.maximize() { "max" } else { "min" }.to_string())],
    },
    Setting {
        key: "min_delta",
        doc: "the smallest change of the monitored metric that counts as an improvement (default 0)",
        apply: |s, v| {
            s.min_delta = number(v, "`min_delta`")?;
            Ok(())
        },
        on_resume: OnResume::Recipe,
        record: |s| vec![("min_delta", s.min_delta.to_string())],
    },
    Setting {
        key: "seed",
        doc: "the seed of initialization, shuffling and dropout (default 0)",
        apply: |s, v| {
            s.seed = int(v, "`seed`", 0, i64::MAX)?;
            Ok(())
        },
        on_resume: OnResume::Recipe,
        record: |s| vec![("seed", s.seed.to_string())],
    },
    Setting {
        key: "split_seed",
        doc: "the seed of the split and the folds (default: seed)",
        apply: |s, v| {
            s.split_seed = Some(int(v, "`split_seed`", 0, i64::MAX)?);
            Ok(())
        },
        on_resume: OnResume::Split,
        record: none,
    },
    Setting {
        key: "metrics",
        doc: "the metrics printed: accuracy, precision, recall, f1, confusion, auc, mse, mae",
        apply: apply_metrics,
        on_resume: OnResume::Free,
        record: none,
    },
    Setting {
        key: "metrics_on",
        doc: "the output the metrics are computed on (default: the prediction the loss scores)",
        apply: |s, v| match &v.kind {
            ExprKind::Name(n) | ExprKind::Str(n) => {
                s.metrics_on = Some(n.clone());
                Ok(())
            }
            _ => Err(err(v.span, "`metrics_on` names an output, like `metrics_on = logits`")),
        },
        on_resume: OnResume::Free,
        record: none,
    },
    Setting {
        key: "prune",
        doc: "pruning while training: none (default) or gradual(final, start = 1, end, scope = \"global\")",
        apply: |s, v| {
            let c = choice(v, "pruning", prune_spec, PRUNE_NAMES)?;
            s.prune = (c.name != "none").then_some(c);
            Ok(())
        },
        on_resume: OnResume::Recipe,
        // Only when set: checkpoints from before the setting existed still resume.
        record: |s| s.prune.iter().map(|c| ("prune", c.render())).collect(),
    },
    Setting {
        key: "quantize",
        doc: "quantization-aware training: none (default) or qat(momentum = 0.9)",
        apply: |s, v| {
            let c = choice(v, "quantization", quantize_spec, QUANTIZE_NAMES)?;
            s.quantize = (c.name != "none").then_some(c);
            Ok(())
        },
        on_resume: OnResume::Recipe,
        record: |s| s.quantize.iter().map(|c| ("quantize", c.render())).collect(),
    },
    Setting {
        key: "augment",
        doc: "augmentations of the training rows: a list of flip_horizontal, shift, crop, noise, rotate (default: none)",
        apply: apply_augment,
        on_resume: OnResume::Recipe,
        record: |s| {
            if s.augment.is_empty() {
                return Vec::new();
            }
            let mut r = vec![("augment", augment::render(&s.augment))];
            if let Some(i) = &s.augment_input {
                r.push(("augment_input", i.clone()));
            }
            if let Some(sh) = &s.augment_shape {
                r.push(("augment_shape", format!("{sh:?}")));
            }
            r
        },
    },
    Setting {
        key: "augment_input",
        doc: "the input that augment changes (default: the features input)",
        apply: |s, v| match &v.kind {
            ExprKind::Name(n) | ExprKind::Str(n) => {
                s.augment_input = Some(n.clone());
                Ok(())
            }
            _ => Err(err(v.span, "`augment_input` names an input, like `augment_input = x`")),
        },
        // Recorded with `augment`.
        on_resume: OnResume::Recipe,
        record: none,
    },
    Setting {
        key: "augment_shape",
        doc: "the image shape [C, H, W] or [H, W] of the augmented input's rows",
        apply: apply_augment_shape,
        // Recorded with `augment`.
        on_resume: OnResume::Recipe,
        record: none,
    },
    Setting {
        key: "lr",
        doc: "a shortcut for the optimizer's learning rate (`--set lr=0.01`)",
        apply: |s, v| {
            let lr = lit_of(Ty::Pos, v, "`lr`")?;
            match s.optimizer.args.iter_mut().find(|(n, _)| n == "lr") {
                Some(slot) => slot.1 = lr,
                None => s.optimizer.args.push(("lr".into(), lr)),
            }
            Ok(())
        },
        // Recorded in the optimizer's arguments.
        on_resume: OnResume::Recipe,
        record: none,
    },
    Setting {
        key: "log_grad_norms",
        doc: "log each parameter's gradient norm and update ratio per epoch (default false)",
        apply: |s, v| {
            s.log_grad_norms = lit_of(Ty::Bool, v, "`log_grad_norms`")? == Lit::Bool(true);
            Ok(())
        },
        on_resume: OnResume::Free,
        record: none,
    },
];

/// The keys of `SETTINGS`, in order.
pub const KEYS: [&str; SETTINGS.len()] = {
    let mut keys = [""; SETTINGS.len()];
    let mut i = 0;
    while i < SETTINGS.len() {
        keys[i] = SETTINGS[i].key;
        i += 1;
    }
    keys
};

/// The setting of `key`.
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// What checkpoints record of the settings that a resumed run must keep (`nnc.recipe.*`).
pub fn recorded(s: &TrainSettings) -> Vec<(&'static str, String)> {
    SETTINGS
        .iter()
        .filter(|k| matches!(k.on_resume, OnResume::Recipe | OnResume::Extend))
        .flat_map(|k| (k.record)(s))
        .collect()
}

/// Checks one setting and stores it.
pub fn apply(s: &mut TrainSettings, key: &Ident, value: &Expr) -> Result<(), Diagnostic> {
    if let Some(k) = setting(&key.name) {
        return (k.apply)(s, value);
    }
    let mut d = Diagnostic::new("E0610", key.span, format!("unknown train setting `{}`", key.name))
        .with_label("not a train setting");
    if let Some(close) = crate::diagnostic::closest(&key.name, KEYS.iter().copied()) {
        d = d.with_help(format!("did you mean `{close}`? Settings are: {}", KEYS.join(", ")));
    } else {
        d = d.with_help(format!("settings are: {}", KEYS.join(", ")));
    }
    Err(d)
}

fn apply_augment(s: &mut TrainSettings, v: &Expr) -> Result<(), Diagnostic> {
    // A list of augmentations (one alone may go without brackets); `[]`: none.
    let items = match &v.kind {
        ExprKind::List(items) => items.iter().collect::<Vec<_>>(),
        _ => vec![v],
    };
    let mut out = Vec::new();
    for it in items {
        out.push(choice(it, "augmentation", augment::augment_spec, augment::AUGMENT_NAMES)?);
    }
    s.augment = out;
    Ok(())
}

fn apply_augment_shape(s: &mut TrainSettings, v: &Expr) -> Result<(), Diagnostic> {
    let ExprKind::List(items) = &v.kind else {
        return Err(err(v.span, "`augment_shape` is an image shape: `[C, H, W]` or `[H, W]`"));
    };
    if items.len() != 2 && items.len() != 3 {
        return Err(err(v.span, "`augment_shape` is an image shape: `[C, H, W]` or `[H, W]`"));
    }
    let mut dims = Vec::new();
    for it in items {
        dims.push(int(it, "a dimension of `augment_shape`", 1, 1 << 24)?);
    }
    s.augment_shape = Some(dims);
    Ok(())
}

fn apply_split(s: &mut TrainSettings, v: &Expr) -> Result<(), Diagnostic> {
    let ExprKind::List(items) = &v.kind else {
        return Err(err(v.span, "`split` must be a list like [0.8, 0.1, 0.1]"));
    };
    if items.len() != 2 && items.len() != 3 {
        return Err(Diagnostic::new(
            "E0609",
            v.span,
            "`split` needs two (train, test) or three (train, validation, test) parts",
        ));
    }
    let mut parts = Vec::new();
    for it in items {
        parts.push(lit_of(Ty::Num(0.0, 1.0), it, "a split fraction")?.as_f64().unwrap_or(0.0));
    }
    let total: f64 = parts.iter().sum();
    if (total - 1.0).abs() > 1e-6 {
        return Err(Diagnostic::new("E0609", v.span, format!("split fractions must add up to 1, found {total}")));
    }
    if parts[0] <= 0.0 {
        return Err(Diagnostic::new("E0609", v.span, "the training part of `split` must be above 0"));
    }
    s.split = parts;
    Ok(())
}

fn apply_batch(s: &mut TrainSettings, v: &Expr) -> Result<(), Diagnostic> {
    match &v.kind {
        // A batch-size schedule: the sizes in order, switched after `batch_at` epochs.
        ExprKind::List(items) => {
            if items.is_empty() {
                return Err(err(v.span, "`batch` needs at least one size"));
            }
            let mut sizes = Vec::new();
            for it in items {
                sizes.push(int(it, "a batch size", 1, 1 << 24)?);
            }
            s.batch = sizes[0];
            s.batch_sizes = sizes;
        }
        _ => {
            s.batch = int(v, "`batch`", 1, 1 << 24)?;
            s.batch_sizes = vec![];
        }
    }
    Ok(())
}

fn apply_batch_at(s: &mut TrainSettings, v: &Expr) -> Result<(), Diagnostic> {
    let items = match &v.kind {
        ExprKind::List(items) => items.iter().collect::<Vec<_>>(),
        _ => vec![v],
    };
    let mut at = Vec::new();
    for it in items {
        let e = int(it, "an epoch of `batch_at`", 1, 1 << 24)?;
        if at.last().is_some_and(|&l| e <= l) {
            return Err(Diagnostic::new("E0602", it.span, "the epochs of `batch_at` must increase"));
        }
        at.push(e);
    }
    s.batch_at = at;
    Ok(())
}

fn apply_monitor(s: &mut TrainSettings, v: &Expr) -> Result<(), Diagnostic> {
    match &v.kind {
        ExprKind::Name(n) | ExprKind::Str(n) if n.starts_with("val_") || n.starts_with("train_") => {
            s.monitor = Some(n.clone());
            Ok(())
        }
        _ => Err(err(
            v.span,
            "`monitor` names a metric of an epoch: `val_loss`, `val_accuracy`, `val_f1`, `train_loss`, ...",
        )
        .with_help("metrics of the validation rows start with `val_`, of the training batches with `train_`")),
    }
}

fn apply_metrics(s: &mut TrainSettings, v: &Expr) -> Result<(), Diagnostic> {
    let items = match &v.kind {
        ExprKind::List(items) => items.iter().collect::<Vec<_>>(),
        _ => vec![v],
    };
    let mut out = Vec::new();
    for it in items {
        let ExprKind::Name(n) = &it.kind else {
            return Err(err(it.span, "a metric is a name like `accuracy`"));
        };
        if !METRIC_NAMES.contains(&n.as_str()) {
            let help = match crate::diagnostic::closest(n, METRIC_NAMES.iter().copied()) {
                Some(c) => format!("did you mean `{c}`? Expected one of: {}", METRIC_NAMES.join(", ")),
                None => format!("expected one of: {}", METRIC_NAMES.join(", ")),
            };
            return Err(Diagnostic::new("E0604", it.span, format!("unknown metric `{n}`")).with_help(help));
        }
        out.push(n.clone());
    }
    s.metrics = out;
    Ok(())
}

/// Checks a whole `train` block; every wrong setting is reported. Cross-key rules
/// (early stopping needs a validation split) are checked at the end.
pub fn check_block(settings: &[crate::syntax::ast::Setting], span: Span) -> (TrainSettings, Vec<Diagnostic>) {
    let mut s = TrainSettings { present: true, ..TrainSettings::default() };
    let errs = check_each(settings, "train", span, &mut s, apply, cross_check);
    (s, errs)
}

/// Checks every `key = value` of a block into `into` with `apply` (each key at most
/// once, every error reported), then, when all are fine, the block's `cross` rules.
fn check_each<T>(
    settings: &[crate::syntax::ast::Setting],
    block: &str,
    span: Span,
    into: &mut T,
    mut apply: impl FnMut(&mut T, &Ident, &Expr) -> Result<(), Diagnostic>,
    cross: impl Fn(&T, Span) -> Result<(), Diagnostic>,
) -> Vec<Diagnostic> {
    let mut errs = Vec::new();
    let mut seen: Vec<(&str, Span)> = Vec::new();
    for st in settings {
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == st.key.name) {
            errs.push(
                Diagnostic::new("E0611", st.key.span, format!("{block} setting `{}` given twice", st.key.name))
                    .with_note(*first, "first given here"),
            );
            continue;
        }
        seen.push((&st.key.name, st.key.span));
        if let Err(d) = apply(into, &st.key, &st.value) {
            errs.push(d);
        }
    }
    if errs.is_empty() {
        if let Err(d) = cross(into, span) {
            errs.push(d);
        }
    }
    errs
}

/// Rules between the settings and the model's outputs (E0613: `metrics_on` names an
/// output), checked for the train block and for `--set` alike.
pub fn fits_outputs(s: &TrainSettings, train: &crate::ir::Graph, model: &str, span: Span) -> Result<(), Diagnostic> {
    let Some(on) = &s.metrics_on else { return Ok(()) };
    if train.outputs.iter().any(|(n, _)| n == on) {
        return Ok(());
    }
    let names: Vec<&str> = train.outputs.iter().map(|(n, _)| n.as_str()).collect();
    Err(Diagnostic::new("E0613", span, format!("`metrics_on = {on}`: model `{model}` has no output `{on}`")).with_help(
        if names.is_empty() {
            "declare the prediction with `output name = ...`".to_string()
        } else {
            format!("its outputs are: {}", names.join(", "))
        },
    ))
}

/// Rules that involve more than one key.
pub fn cross_check(s: &TrainSettings, span: Span) -> Result<(), Diagnostic> {
    if s.early_stop.is_some() && s.split.len() != 3 {
        return Err(Diagnostic::new(
            "E0612",
            span,
            "`early_stop` needs a validation part: `split = [train, validation, test]`",
        ));
    }
    if !s.batch_sizes.is_empty() || !s.batch_at.is_empty() {
        let sizes = s.batch_sizes.len().max(1);
        if s.batch_at.len() + 1 != sizes {
            return Err(Diagnostic::new(
                "E0612",
                span,
                format!(
                    "a batch-size schedule needs one `batch_at` epoch per change: `batch` has {sizes} size(s), \
                     `batch_at` {} epoch(s)",
                    s.batch_at.len()
                ),
            )
            .with_help("write `batch = [32, 64, 256]` with `batch_at = [10, 20]`"));
        }
    }
    let monitor = s.monitor();
    if monitor.starts_with("val_") && s.split.len() != 3 && s.monitor.is_some() {
        return Err(Diagnostic::new(
            "E0612",
            span,
            format!("`monitor = {monitor}` needs a validation part: `split = [train, validation, test]`"),
        ));
    }
    if s.warmup.is_some() && s.schedule.num("warmup").is_some_and(|w| w > 0.0) {
        return Err(Diagnostic::new(
            "E0612",
            span,
            "the warmup is given twice: use either `warmup = ...` or the schedule's own `warmup` argument",
        ));
    }
    if let (Some(min), Some(lr)) = (s.schedule.num("min_lr"), s.optimizer.num("lr")) {
        if min > lr {
            return Err(Diagnostic::new(
                "E0612",
                span,
                format!(
                    "`schedule = {}`: `min_lr = {min}` is above the learning rate it lowers ({lr}, the optimizer's `lr`)",
                    s.schedule.render()
                ),
            )
            .with_help("give a `min_lr` below the optimizer's `lr`"));
        }
    }
    if s.clip_norm.is_some() && s.clip_value.is_some() {
        return Err(Diagnostic::new("E0612", span, "use either `clip_norm` or `clip_value`, not both"));
    }
    if s.l1_proximal && s.host_optimizer() {
        let name = &s.optimizer.name;
        return Err(Diagnostic::new(
            "E0612",
            span,
            format!("`l1_method = proximal` thresholds the weights after each compiled update, and `{name}` has none"),
        )
        .with_help(format!("use `l1_method = subgradient` with {name}, or a first-order optimizer")));
    }
    if !s.augment.is_empty() && s.host_optimizer() {
        let name = &s.optimizer.name;
        return Err(Diagnostic::new(
            "E0612",
            span,
            format!("`augment` changes the training rows every epoch, and `{name}` minimizes one fixed objective"),
        )
        .with_help("use a first-order optimizer with augmentation"));
    }
    if s.log_grad_norms && s.host_optimizer() {
        let name = &s.optimizer.name;
        return Err(Diagnostic::new(
            "E0612",
            span,
            format!("`log_grad_norms` logs the norms the compiled update step computes, and `{name}` has none"),
        )
        .with_help("use a first-order optimizer, or leave `log_grad_norms` out"));
    }
    if let Some(pr) = &s.prune {
        let (fin, start, end) =
            (pr.num("final").unwrap_or(0.0), pr.num("start").unwrap_or(1.0), pr.num("end").unwrap_or(1.0));
        let scope = match pr.arg("scope") {
            Some(Lit::Str(x)) | Some(Lit::Name(x)) => x.clone(),
            _ => "global".into(),
        };
        let why = if fin >= 1.0 {
            Some(format!("`final = {fin}` would prune every weight; give a fraction below 1"))
        } else if start > end {
            Some(format!("`start = {start}` is after `end = {end}`"))
        } else if end > s.epochs as f64 {
            Some(format!("`end = {end}` is after the last epoch ({})", s.epochs))
        } else if scope != "global" && scope != "layer" {
            Some(format!("`scope = {scope}`: expected \"global\" or \"layer\""))
        } else if s.host_optimizer() {
            Some(format!(
                "pruning keeps masks in the compiled step, and `{}` has none: choose another optimizer",
                s.optimizer.name
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Diagnostic::new("E0612", span, format!("`prune = gradual(...)`: {why}"))
                .with_help("write e.g. `prune = gradual(final = 0.9, start = 2, end = 8)`"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::FileId;

    /// A `key = value` pair as text.
    type Pair = (&'static str, &'static str);

    /// A value other than the default for every setting, and a setting it needs first.
    const SAMPLES: &[(&str, &str, Option<Pair>)] = &[
        ("data", "moons(n = 10)", None),
        ("preprocess", "standardize", None),
        ("split", "[0.5, 0.5]", None),
        ("optimizer", "sgd(lr = 0.1)", None),
        ("schedule", "cosine(warmup = 2)", None),
        ("warmup", "linear(steps = 5)", None),
        ("batch", "[8, 16]", None),
        ("batch_at", "[3]", None),
        ("epochs", "7", None),
        ("l1", "0.01", None),
        ("l1_method", "proximal", None),
        ("l2", "0.01", None),
        ("clip_norm", "1.5", None),
        ("clip_value", "0.5", None),
        ("early_stop", "3", None),
        ("monitor", "val_accuracy", None),
        ("mode", "max", None),
        ("min_delta", "0.01", None),
        ("seed", "5", None),
        ("split_seed", "9", None),
        ("metrics", "[f1]", None),
        ("metrics_on", "logits", None),
        ("prune", "gradual(final = 0.5, end = 2)", None),
        ("quantize", "qat", None),
        ("augment", "[flip_horizontal]", None),
        ("augment_input", "x", Some(("augment", "[noise(std = 0.1)]"))),
        ("augment_shape", "[1, 8, 8]", Some(("augment", "[noise(std = 0.1)]"))),
        ("lr", "0.5", None),
        ("log_grad_norms", "true", None),
    ];

    fn set(s: &mut TrainSettings, key: &str, value: &str) {
        let e = crate::syntax::parse_expr(value, FileId(0)).expect("parses");
        let k = Ident { name: key.to_string(), span: Span::default() };
        apply(s, &k, &e).unwrap_or_else(|d| panic!("{key} = {value}: {}", d.message));
    }

    /// Every setting has a sample here (a new one without fails), parses it, and is
    /// recorded for resume exactly when it says so: a setting a resumed run must keep
    /// changes the recorded recipe, one that only watches does not.
    #[test]
    fn every_setting_is_recorded_as_it_declares() {
        for k in SETTINGS {
            let (_, value, base) =
                SAMPLES.iter().find(|(n, ..)| *n == k.key).unwrap_or_else(|| panic!("no sample for `{}`", k.key));
            let mut before = TrainSettings::default();
            if let Some((bk, bv)) = base {
                set(&mut before, bk, bv);
            }
            let mut after = before.clone();
            set(&mut after, k.key, value);
            let changed = recorded(&after) != recorded(&before);
            match k.on_resume {
                OnResume::Recipe | OnResume::Extend => assert!(changed, "`{}` is not recorded", k.key),
                OnResume::Split | OnResume::Free => assert!(!changed, "`{}` is recorded", k.key),
            }
            assert!(!k.doc.is_empty());
        }
        assert_eq!(KEYS.len(), SAMPLES.len());
    }

    /// The recipe of the defaults, as checkpoints have recorded it since the recipe
    /// existed (a change here makes old checkpoints refuse to resume).
    #[test]
    fn the_default_recipe_is_unchanged() {
        let r: Vec<String> = recorded(&TrainSettings::default()).iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            r.join(" "),
            "optimizer=adam(lr = 0.001, beta1 = 0.9, beta2 = 0.999, eps = 1e-8) schedule=constant warmup=none \
             batch=32 batch_sizes=[] batch_at=[] epochs=10 l1=0 l2=0 clip_norm=none clip_value=none monitor=train_loss \
             mode=min min_delta=0 seed=0"
        );
    }
}
