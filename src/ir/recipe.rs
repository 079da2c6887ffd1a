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
            Lit::Num(v) => crate::ir::print::num(*v),
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
    pub batch: i64,
    pub epochs: i64,
    pub l1: f64,
    pub l2: f64,
    pub clip_norm: Option<f64>,
    pub clip_value: Option<f64>,
    pub early_stop: Option<i64>,
    /// Seed of the initialization, dropout and shuffling.
    pub seed: i64,
    /// Seed of the train/validation/test split and of cross-validation folds (`None`:
    /// `seed`), so that runs with different initialization seeds can share their test rows.
    pub split_seed: Option<i64>,
    pub metrics: Vec<String>,
    /// The output that metrics are computed on (`None`: the prediction the loss scores).
    pub metrics_on: Option<String>,
}

impl TrainSettings {
    /// The seed that defines the split: `split_seed`, or `seed`.
    pub fn split_seed(&self) -> u64 {
        self.split_seed.unwrap_or(self.seed) as u64
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
            epochs: 10,
            l1: 0.0,
            l2: 0.0,
            clip_norm: None,
            clip_value: None,
            early_stop: None,
            seed: 0,
            split_seed: None,
            metrics: vec!["accuracy".into()],
            metrics_on: None,
        }
    }
}
