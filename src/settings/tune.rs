//! The `tune { }` block: how to search (`method`, `trials`, `metric`, `mode`, `seed`,
//! `prune`, `folds`, `jobs`) and the space, one distribution per train setting or model
//! argument: `lr = loguniform(1e-4, 1e-1)`, `hidden = choice([64, 128, 256])`,
//! `p = uniform(0, 0.5)`, `epochs = int(5, 40)`, `width = logint(16, 1024)`.
//!
//! Every bound and option is checked here the way the trial will see it: an option of a
//! train setting goes through `settings::apply`, an option of a model argument must be a
//! literal of the argument's kind. A grid over a continuous range is an error.

use super::values::{choice, err, int, lit_of, ArgSpec, Ty};
use super::KEYS;
use crate::diagnostic::{Diagnostic, Span};
use crate::ir::recipe::{Dist, Lit, Param, TrainSettings, TuneSettings};
use crate::syntax::ast::{Expr, ExprKind, Ident, Kind, Setting};

/// The keys of the block itself; any other key is a dimension of the space.
pub const TUNE_KEYS: [&str; 8] = ["method", "trials", "metric", "mode", "seed", "prune", "folds", "jobs"];

/// Train settings that cannot be tuned: every trial is scored on the same rows, by the
/// same metrics.
const FIXED: [&str; 7] = ["data", "split", "split_seed", "metrics", "metrics_on", "monitor", "mode"];

fn stopper_spec(name: &str) -> Option<Vec<ArgSpec>> {
    Some(match name {
        "none" => vec![],
        "median" => vec![
            ("startup", Ty::Int(0, 1 << 20), Some(Lit::Num(5.0))),
            ("warmup", Ty::Int(0, 1 << 24), Some(Lit::Num(3.0))),
        ],
        "asha" => vec![
            ("reduction", Ty::Int(2, 100), Some(Lit::Num(3.0))),
            ("min_epochs", Ty::Int(1, 1 << 24), Some(Lit::Num(1.0))),
        ],
        _ => return None,
    })
}

/// Checks a whole `tune` block of a model whose arguments are `args` (name, kind).
pub fn check_block(
    settings: &[Setting],
    span: Span,
    args: &[(String, Option<Kind>)],
) -> (TuneSettings, Vec<Diagnostic>) {
    let mut t = TuneSettings::default();
    let errs = super::check_each(settings, "tune", span, &mut t, |t, k, v| apply(t, k, v, args), cross_check);
    (t, errs)
}

/// Rules over the whole block: a space to search, and a grid of choices only.
pub fn cross_check(t: &TuneSettings, span: Span) -> Result<(), Diagnostic> {
    if t.space.is_empty() {
        return Err(Diagnostic::new("E0620", span, "the `tune` block has no hyperparameter to search")
            .with_help("add a key with a distribution, like `lr = loguniform(1e-4, 1e-1)`"));
    }
    if t.method == "grid" {
        if let Some(p) = t.space.iter().find(|p| matches!(p.dist, Dist::Uniform(..) | Dist::LogUniform(..))) {
            return Err(Diagnostic::new(
                "E0623",
                span,
                format!(
                    "grid search enumerates `choice([...])` lists and integer ranges, but `{}` is {}",
                    p.name,
                    p.dist.render()
                ),
            )
            .with_help("give the values to try as `choice([...])`, or use `method = random` or `method = bayes`"));
        }
    }
    Ok(())
}

/// Checks one `key = value` of the block (or of `nnc tune --space key=value`).
pub fn apply(t: &mut TuneSettings, key: &Ident, v: &Expr, args: &[(String, Option<Kind>)]) -> Result<(), Diagnostic> {
    let name = |e: &Expr| match &e.kind {
        ExprKind::Name(n) | ExprKind::Str(n) => Some(n.clone()),
        _ => None,
    };
    match key.name.as_str() {
        "method" => match name(v).as_deref() {
            Some(m @ ("grid" | "random" | "bayes")) => t.method = m.to_string(),
            _ => return Err(err(v.span, "`method` is `grid`, `random` or `bayes`")),
        },
        "trials" => t.trials = Some(int(v, "`trials`", 1, 100_000)?),
        "metric" => match name(v) {
            Some(m) if m.starts_with("val_") || m.starts_with("cv_") => t.metric = Some(m),
            _ => {
                return Err(err(v.span, "`metric` names a validation metric (`val_accuracy`, `val_loss`, `val_f1`, ...) or a cross-validated one (`cv_accuracy`, ...)")
                    .with_help("the test rows are never used to choose hyperparameters"))
            }
        },
        "mode" => match name(v).as_deref() {
            Some(m @ ("min" | "max")) => t.mode = Some(m.to_string()),
            _ => return Err(err(v.span, "`mode` is `min` or `max`")),
        },
        "seed" => t.seed = int(v, "`seed`", 0, i64::MAX)?,
        "prune" => t.stopper = choice(v, "pruner", stopper_spec, "none, median, asha")?,
        "folds" => t.folds = int(v, "`folds`", 2, 1000)?,
        "jobs" => t.jobs = Some(int(v, "`jobs`", 1, 1024)?),
        k => {
            let dist = dimension(k, key.span, v, args)?;
            if let Some(slot) = t.space.iter_mut().find(|p| p.name == k) {
                slot.dist = dist;
            } else {
                t.space.push(Param { name: k.to_string(), dist });
            }
        }
    }
    Ok(())
}

/// The distribution of a key of the space, checked against what the key accepts.
fn dimension(key: &str, key_span: Span, v: &Expr, args: &[(String, Option<Kind>)]) -> Result<Dist, Diagnostic> {
    let train_key = KEYS.contains(&key);
    let arg_kind = args.iter().find(|(n, _)| n == key).map(|(_, k)| *k);
    if !train_key && arg_kind.is_none() {
        let names: Vec<&str> = args.iter().map(|(n, _)| n.as_str()).collect();
        let mut d = Diagnostic::new(
            "E0621",
            key_span,
            format!("`{key}` is neither a tune setting, nor a train setting, nor an argument of the model"),
        );
        let all = TUNE_KEYS.iter().chain(KEYS.iter()).copied().chain(names.iter().copied());
        d = d.with_help(match crate::diagnostic::closest(key, all) {
            Some(c) => format!("did you mean `{c}`?"),
            None if names.is_empty() => {
                "the model takes no arguments; declare them as `model Name(hidden: int = 128)`".into()
            }
            None => format!("the model's arguments are: {}", names.join(", ")),
        });
        return Err(d);
    }
    if FIXED.contains(&key) {
        return Err(Diagnostic::new("E0622", key_span, format!("`{key}` cannot be tuned"))
            .with_help("every trial is trained and scored on the same rows with the same metrics"));
    }
    let ExprKind::Call { callee, args: call_args } = &v.kind else {
        return Err(not_a_dist(key, v.span));
    };
    let ExprKind::Name(f) = &callee.kind else {
        return Err(not_a_dist(key, v.span));
    };
    let positional: Vec<&Expr> = call_args.iter().filter(|a| a.name.is_none()).map(|a| &a.value).collect();
    if positional.len() != call_args.len() {
        return Err(err(v.span, format!("`{f}(...)` takes its arguments in order, without names")));
    }
    let dist = match f.as_str() {
        "uniform" | "loguniform" => {
            let [lo, hi] = two(f, &positional, v.span)?;
            let (a, b) = (number(lo)?, number(hi)?);
            if a >= b || a.is_nan() || b.is_nan() {
                return Err(Diagnostic::new(
                    "E0602",
                    v.span,
                    format!("`{f}(lo, hi)` needs lo < hi, found {a} and {b}"),
                ));
            }
            if f == "loguniform" {
                if a <= 0.0 {
                    return Err(Diagnostic::new(
                        "E0602",
                        lo.span,
                        format!("`loguniform` needs a lower bound above 0, found {a}"),
                    ));
                }
                Dist::LogUniform(a, b)
            } else {
                Dist::Uniform(a, b)
            }
        }
        "int" | "logint" => {
            let [lo, hi] = two(f, &positional, v.span)?;
            let a = int(lo, "the lower bound", -(1 << 40), 1 << 40)?;
            let b = int(hi, "the upper bound", -(1 << 40), 1 << 40)?;
            if a > b {
                return Err(Diagnostic::new(
                    "E0602",
                    v.span,
                    format!("`{f}(lo, hi)` needs lo <= hi, found {a} and {b}"),
                ));
            }
            if f == "logint" {
                if a < 1 {
                    return Err(Diagnostic::new(
                        "E0602",
                        lo.span,
                        format!("`logint` needs a lower bound of at least 1, found {a}"),
                    ));
                }
                Dist::LogInt(a, b)
            } else {
                Dist::Int(a, b)
            }
        }
        "choice" => {
            let items = match positional.as_slice() {
                [list] => match &list.kind {
                    ExprKind::List(items) if !items.is_empty() => items,
                    _ => return Err(err(v.span, "`choice` takes a non-empty list: `choice([32, 64, 128])`")),
                },
                _ => return Err(err(v.span, "`choice` takes one list: `choice([32, 64, 128])`")),
            };
            let mut options = Vec::new();
            for it in items {
                let text = render(it).ok_or_else(|| {
                    err(it.span, "an option of `choice` is a literal: a number, a name, a string, true or false, or a call like `adam(lr = 0.001)`")
                })?;
                if options.contains(&text) {
                    return Err(Diagnostic::new("E0602", it.span, format!("the option `{text}` is given twice")));
                }
                check_value(key, it, train_key, arg_kind.flatten())?;
                options.push(text);
            }
            return Ok(Dist::Choice(options));
        }
        _ => return Err(not_a_dist(key, callee.span)),
    };
    // Both bounds must be values the key accepts (an integer key needs int or logint).
    let (lo, hi) = match &dist {
        Dist::Uniform(a, b) | Dist::LogUniform(a, b) => (num_expr(*a, false, v.span), num_expr(*b, false, v.span)),
        Dist::Int(a, b) | Dist::LogInt(a, b) => (num_expr(*a as f64, true, v.span), num_expr(*b as f64, true, v.span)),
        Dist::Choice(_) => unreachable!("returned above"),
    };
    check_value(key, &lo, train_key, arg_kind.flatten())?;
    check_value(key, &hi, train_key, arg_kind.flatten())?;
    Ok(dist)
}

/// A number literal (negative numbers as `Neg`, as the parser makes them).
fn num_expr(x: f64, is_int: bool, span: Span) -> Expr {
    let lit = Expr { kind: ExprKind::Number(x.abs(), is_int), span };
    if x < 0.0 {
        Expr { kind: ExprKind::Neg(Box::new(lit)), span }
    } else {
        lit
    }
}

fn not_a_dist(key: &str, span: Span) -> Diagnostic {
    err(span, format!("`{key}` needs a distribution to search"))
        .with_help("one of: uniform(lo, hi), loguniform(lo, hi), int(lo, hi), logint(lo, hi), choice([a, b, ...])")
}

fn two<'a>(f: &str, a: &[&'a Expr], span: Span) -> Result<[&'a Expr; 2], Diagnostic> {
    match a {
        [lo, hi] => Ok([*lo, *hi]),
        _ => Err(err(span, format!("`{f}` takes two bounds: `{f}(lo, hi)`"))),
    }
}

fn number(e: &Expr) -> Result<f64, Diagnostic> {
    let x = lit_of(Ty::Num(f64::MIN, f64::MAX), e, "a bound")?.as_f64().unwrap_or(f64::NAN);
    if !x.is_finite() {
        return Err(Diagnostic::new("E0602", e.span, "a bound must be a finite number"));
    }
    Ok(x)
}

/// Checks that a trial may set `key` to `value`: through the train block's own checks,
/// or by the kind of the model argument.
fn check_value(key: &str, value: &Expr, train_key: bool, kind: Option<Kind>) -> Result<(), Diagnostic> {
    if train_key {
        let mut s = TrainSettings::default();
        let id = Ident { name: key.to_string(), span: value.span };
        return super::apply(&mut s, &id, value).map_err(|mut d| {
            d.message = format!("`{key}` cannot take this value: {}", d.message);
            d
        });
    }
    let inner = match &value.kind {
        ExprKind::Neg(i) => &i.kind,
        k => k,
    };
    let ok = match (kind, inner) {
        (Some(Kind::Int), ExprKind::Number(x, is_int)) => *is_int && x.fract() == 0.0,
        (Some(Kind::Float), ExprKind::Number(..)) => true,
        (Some(Kind::Bool), ExprKind::Bool(_)) => true,
        (Some(Kind::Str), ExprKind::Str(_)) => true,
        (Some(_), _) => false,
        (None, _) => true,
    };
    if ok {
        Ok(())
    } else {
        let want = kind.map(Kind::name).unwrap_or("?");
        Err(Diagnostic::new("E0603", value.span, format!("model argument `{key}` is {want}: this value is not"))
            .with_help(match kind {
                Some(Kind::Int) => {
                    "an int argument is searched with `int(lo, hi)`, `logint(lo, hi)` or a choice of integers"
                }
                _ => "give values of the argument's kind",
            }))
    }
}

/// The source text of a literal option, as `--set key=<text>` reads it back.
pub fn render(e: &Expr) -> Option<String> {
    Some(match &e.kind {
        ExprKind::Number(v, true) if v.fract() == 0.0 && v.abs() < 9.0e15 => format!("{}", *v as i64),
        ExprKind::Number(v, _) => format!("{v:?}"),
        ExprKind::Neg(inner) => format!("-{}", render(inner)?),
        ExprKind::Name(n) => n.clone(),
        ExprKind::Str(s) => format!("{s:?}"),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::List(items) => format!("[{}]", items.iter().map(render).collect::<Option<Vec<_>>>()?.join(", ")),
        ExprKind::Call { callee, args } => {
            let f = render(callee)?;
            let mut parts = Vec::new();
            for a in args {
                let v = render(&a.value)?;
                parts.push(match &a.name {
                    Some(n) => format!("{} = {v}", n.name),
                    None => v,
                });
            }
            format!("{f}({})", parts.join(", "))
        }
        _ => return None,
    })
}
