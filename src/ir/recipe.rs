//! A model's training recipe as plain data: the checked settings of its `train { }` block
//! with every default filled in. The parser that fills it (and checks `--set`) is
//! `crate::settings`; the IR only carries the result, so it does not depend on the parser.

/// A checked literal value.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Num(f64),
    Str(String),
    Name(String),
    Bool(bool),
    List(Vec<Lit>),
}

impl Lit {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Lit::Num(v) => Some(*v),
            _ => None,
        }
    }
    pub fn render(&self) -> String {
        match self {
            Lit::Num(v) => crate::ir::num::num(*v),
            Lit::Str(s) => format!("{s:?}"),
            Lit::Name(n) => n.clone(),
            Lit::Bool(b) => b.to_string(),
            Lit::List(items) => format!("[{}]", items.iter().map(Lit::render).collect::<Vec<_>>().join(", ")),
        }
    }
}

/// A named choice with its arguments, defaults filled in: `adam(lr = 0.001, ...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub name: String,
    pub args: Vec<(String, Lit)>,
}

impl Choice {
    pub fn arg(&self, name: &str) -> Option<&Lit> {
        self.args.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    pub fn num(&self, name: &str) -> Option<f64> {
        self.arg(name).and_then(Lit::as_f64)
    }
    pub fn render(&self) -> String {
        if self.args.is_empty() {
            return self.name.clone();
        }
        let a: Vec<String> = self.args.iter().map(|(k, v)| format!("{k} = {}", v.render())).collect();
        format!("{}({})", self.name, a.join(", "))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrainSettings {
    /// Whether the model has a `train` block at all.
    pub present: bool,
    pub data: Option<Choice>,
    pub preprocess: Choice,
    pub split: Vec<f64>,
    pub optimizer: Choice,
    pub schedule: Choice,
    /// The batch size (the first one, with a batch-size schedule).
    pub batch: i64,
    /// A batch-size schedule: `batch = [32, 64, 256]` with `batch_at = [10, 20]` trains
    /// epochs 1-10 with 32 rows per batch, 11-20 with 64, then 256. Empty: `batch`
    /// throughout.
    pub batch_sizes: Vec<i64>,
    /// The epochs after which the next of `batch_sizes` starts (increasing).
    pub batch_at: Vec<i64>,
    pub epochs: i64,
    pub l1: f64,
    /// `l1_method = proximal`: the l1 term is applied after each update by soft
    /// thresholding (exact zeros) instead of as a subgradient in the loss.
    pub l1_proximal: bool,
    pub l2: f64,
    pub clip_norm: Option<f64>,
    pub clip_value: Option<f64>,
    /// Early stopping: the patience in epochs.
    pub early_stop: Option<i64>,
    /// The metric that early stopping, `plateau` and the best checkpoint watch
    /// (`val_loss`, `val_accuracy`, `val_f1`, ...; `None`: `val_loss` with a validation
    /// part, else `train_loss`).
    pub monitor: Option<String>,
    /// `min` or `max` (`None`: from the metric's name; losses and errors are minimized).
    pub mode: Option<String>,
    /// The least change of the monitored metric that counts as an improvement.
    pub min_delta: f64,
    /// A warmup before the schedule: `linear(steps = N)` or `cosine(steps = N)`.
    pub warmup: Option<Choice>,
    /// Seed of the initialization, dropout and shuffling.
    pub seed: i64,
    /// Seed of the train/validation/test split and of cross-validation folds (`None`:
    /// `seed`), so that runs with different initialization seeds can share their test rows.
    pub split_seed: Option<i64>,
    pub metrics: Vec<String>,
    /// The output that metrics are computed on (`None`: the prediction the loss scores).
    pub metrics_on: Option<String>,
    /// The model's `tune { }` block: a hyperparameter search over this recipe.
    pub tune: Option<TuneSettings>,
    /// Magnitude pruning while training: `gradual(final, start, end, scope)`, or
    /// `fixed` (masks set from outside, kept by every step: `nnc prune`'s fine-tuning).
    pub prune: Option<Choice>,
    /// Quantization-aware training: `qat(momentum = 0.9)` (`compress::quantize::qat_graph`).
    pub quantize: Option<Choice>,
    /// Data augmentation of the training rows, in order (`flip_horizontal(p)`,
    /// `shift(max)`, `crop(size, padding)`, `noise(std)`, `rotate(degrees)`); empty: none.
    /// Run on the host per sample and epoch (`data::augment`), never on validation,
    /// test or eval rows.
    pub augment: Vec<Choice>,
    /// The input augmented (`None`: the model's only float input other than `y`).
    pub augment_input: Option<String>,
    /// A flat input read as an image: `[C, H, W]` or `[H, W]`.
    pub augment_shape: Option<Vec<i64>>,
    /// Log every parameter's gradient L2 norm and update/parameter norm ratio per epoch
    /// (`optim::update::MONITOR_PREFIX` outputs of the step graph).
    pub log_grad_norms: bool,
}

/// The distribution of one hyperparameter in a search space.
#[derive(Clone, Debug, PartialEq)]
pub enum Dist {
    /// Uniform over [lo, hi].
    Uniform(f64, f64),
    /// Log-uniform over [lo, hi] (0 < lo < hi).
    LogUniform(f64, f64),
    /// Uniform over the integers lo..=hi.
    Int(i64, i64),
    /// Log-uniform over the integers lo..=hi (1 <= lo).
    LogInt(i64, i64),
    /// One of the options, as source text (`64`, `adam(lr = 0.001)`); sampled as indices.
    Choice(Vec<String>),
}

impl Dist {
    /// As written in a `tune` block: `loguniform(0.0001, 0.1)`.
    pub fn render(&self) -> String {
        let n = crate::ir::num::num;
        match self {
            Dist::Uniform(a, b) => format!("uniform({}, {})", n(*a), n(*b)),
            Dist::LogUniform(a, b) => format!("loguniform({}, {})", n(*a), n(*b)),
            Dist::Int(a, b) => format!("int({a}, {b})"),
            Dist::LogInt(a, b) => format!("logint({a}, {b})"),
            Dist::Choice(o) => format!("choice([{}])", o.join(", ")),
        }
    }
}

/// One dimension of a search space: a train setting or a model argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub dist: Dist,
}

/// A checked `tune { }` block.
#[derive(Clone, Debug, PartialEq)]
pub struct TuneSettings {
    /// `grid`, `random` or `bayes`.
    pub method: String,
    /// `None`: every grid point, or 20 trials.
    pub trials: Option<i64>,
    /// `val_accuracy`, `val_loss`, `cv_accuracy`, ... (`None`: `val_accuracy` for a
    /// classifier, else `val_loss`).
    pub metric: Option<String>,
    /// `min` or `max` (`None`: from the metric's name).
    pub mode: Option<String>,
    /// The seed of the sampler (trials keep the recipe's own `seed`).
    pub seed: i64,
    /// The trial stopper (the block's `prune` key, Optuna's "pruner"): `none`,
    /// `median(startup, warmup)` or `asha(reduction, min_epochs)`.
    pub stopper: Choice,
    /// Folds of a `cv_*` metric.
    pub folds: i64,
    /// Trials run at once (`None`: two where two CPUs are available).
    pub jobs: Option<i64>,
    pub space: Vec<Param>,
}

impl Default for TuneSettings {
    fn default() -> Self {
        TuneSettings {
            method: "bayes".into(),
            trials: None,
            metric: None,
            mode: None,
            seed: 0,
            stopper: Choice {
                name: "median".into(),
                args: vec![("startup".into(), Lit::Num(5.0)), ("warmup".into(), Lit::Num(3.0))],
            },
            folds: 5,
            jobs: None,
            space: Vec::new(),
        }
    }
}

impl TrainSettings {
    /// The seed that defines the split: `split_seed`, or `seed`.
    pub fn split_seed(&self) -> u64 {
        self.split_seed.unwrap_or(self.seed) as u64
    }

    /// The batch size of epoch `epoch` (0-based).
    pub fn batch_in(&self, epoch: usize) -> i64 {
        let passed = self.batch_at.iter().take_while(|&&e| e as usize <= epoch).count();
        self.batch_sizes.get(passed).copied().unwrap_or(self.batch)
    }

    /// The monitored metric's name.
    pub fn monitor(&self) -> String {
        match &self.monitor {
            Some(m) => m.clone(),
            None if self.split.len() == 3 => "val_loss".into(),
            None => "train_loss".into(),
        }
    }

    /// Whether the optimizer is a full-batch host loop around the compiled objective and
    /// gradient (`lbfgs`, `bfgs`, `newton`, `newton_cg`) rather than a compiled update.
    pub fn host_optimizer(&self) -> bool {
        HOST_OPTIMIZERS.contains(&self.optimizer.name.as_str())
    }

    /// Whether the monitored metric is maximized.
    pub fn maximize(&self) -> bool {
        match self.mode.as_deref() {
            Some(m) => m == "max",
            None => higher_is_better(&self.monitor()),
        }
    }
}

/// The optimizers that run on the host, full batch, with no compiled update.
pub const HOST_OPTIMIZERS: [&str; 4] = ["lbfgs", "bfgs", "newton", "newton_cg"];

/// Whether a metric's name says that higher is better: losses and errors (`loss`, `mse`,
/// `mae`, `rmse`, `error`) are minimized, everything else (accuracy, f1, auc, r2, ...)
/// maximized.
pub fn higher_is_better(name: &str) -> bool {
    !["loss", "mse", "mae", "rmse", "error"].iter().any(|w| name.contains(w))
}

impl TrainSettings {
    /// Whether `value` improves on `best` by more than `min_delta` in the monitored
    /// direction (`best_known` false: the first value always does).
    pub fn improves(&self, value: f64, best: f64, best_known: bool) -> bool {
        if !best_known {
            return !value.is_nan();
        }
        if self.maximize() {
            value > best + self.min_delta
        } else {
            value < best - self.min_delta
        }
    }
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            present: false,
            data: None,
            preprocess: Choice { name: "none".into(), args: vec![] },
            split: vec![],
            optimizer: Choice {
                name: "adam".into(),
                args: vec![
                    ("lr".into(), Lit::Num(1e-3)),
                    ("beta1".into(), Lit::Num(0.9)),
                    ("beta2".into(), Lit::Num(0.999)),
                    ("eps".into(), Lit::Num(1e-8)),
                ],
            },
            schedule: Choice { name: "constant".into(), args: vec![] },
            batch: 32,
            batch_sizes: vec![],
            batch_at: vec![],
            epochs: 10,
            l1: 0.0,
            l1_proximal: false,
            l2: 0.0,
            clip_norm: None,
            clip_value: None,
            early_stop: None,
            monitor: None,
            mode: None,
            min_delta: 0.0,
            warmup: None,
            seed: 0,
            split_seed: None,
            metrics: vec!["accuracy".into()],
            metrics_on: None,
            tune: None,
            prune: None,
            quantize: None,
            augment: vec![],
            augment_input: None,
            augment_shape: None,
            log_grad_norms: false,
        }
    }
}
