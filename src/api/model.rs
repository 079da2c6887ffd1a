//! [`Model`]: a compiled `.nn` model with its settings, and what can be read off it
//! before anything runs (inputs, outputs, parameters, the buffer plan).

use crate::error::{Error, Result};
use crate::ir::{Graph, Program};
use std::path::{Path, PathBuf};

/// A compiled model: one `model` of a `.nn` file (or source text), with its model
/// arguments and train settings bound. Cheap to clone; every method that runs something
/// compiles what it needs (in milliseconds) and leaves the model as it was.
///
/// ```
/// let src = "model Lin(width: int = 4) {
///     input x: [B, width]
///     layer fc = Dense(width, 1)
///     output y = fc(x)
/// }";
/// let m = nnc::Model::from_source("lin.nn", src)?.with("width", 8)?;
/// assert_eq!(m.name(), "Lin");
/// assert_eq!(m.inputs()[0].to_string(), "x: f32[B, 8]");
/// assert_eq!(m.params().iter().map(|p| p.len()).sum::<usize>(), 9);
/// # Ok::<(), nnc::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Model {
    pub(crate) program: Program,
    /// The main file's text (its hash goes into checkpoints).
    pub(crate) source: String,
    pub(crate) origin: Origin,
    /// Which model of the file (`None`: the only one).
    pub(crate) model: Option<String>,
    /// `key=value` pairs in the order given (`with`), as `--set` takes them.
    pub(crate) sets: Vec<String>,
}

/// Where a model's source came from.
#[derive(Clone, Debug)]
pub(crate) enum Origin {
    File(PathBuf),
    Source { name: String, dir: PathBuf },
}

/// A value for [`Model::with`]: a number, a boolean, or a `.nn` expression as text
/// (`"adam(lr = 1e-3)"`, `"[0.8, 0.2]"`, `"cosine(warmup = 50)"`). A string model
/// argument takes [`Value::string`].
#[derive(Clone, Debug, PartialEq)]
pub struct Value(String);

impl Value {
    /// A string literal (`Value::string("relu")` is `"relu"` in the model's syntax).
    pub fn string(s: &str) -> Value {
        Value(format!("{s:?}"))
    }

    /// The value as `.nn` source text.
    pub fn as_source(&self) -> &str {
        &self.0
    }
}

macro_rules! value_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value(v.to_string())
            }
        }
    )*};
}
value_from!(i32, i64, u32, u64, usize, bool);

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        // `{:?}` keeps a decimal point or exponent (1.0, 1e-5), so a float stays a float.
        Value(format!("{v:?}"))
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Value {
        Value::from(f64::from(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value(v)
    }
}

/// The element type of a tensor: `F32`, or `I32` (class labels, token ids).
pub use crate::ir::DType;

/// One dimension of a shape: a number, or a symbol bound when the model runs (`B`, the
/// batch).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic size, as the model writes it (`B`, `T`, `2*B`).
    Symbol(String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
        }
    }
}

/// An input or output of a model: its name, shape and element type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The name in the `.nn` file.
    pub name: String,
    /// The shape, batch dimension first where the model has one.
    pub shape: Vec<Dim>,
    /// The element type.
    pub dtype: DType,
}

impl TensorInfo {
    /// Values per row: the product of the fixed dimensions after the first (the batch).
    pub fn per_row(&self) -> usize {
        self.shape.iter().skip(1).map(|d| if let Dim::Fixed(n) = d { *n } else { 1 }).product()
    }
}

impl std::fmt::Display for TensorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(Dim::to_string).collect();
        write!(f, "{}: {}[{}]", self.name, self.dtype.name(), dims.join(", "))
    }
}

/// A parameter of a model (a weight, a bias, a normalization gain) or a state (running
/// statistics).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    /// Its dotted name (`fc1.W`), as checkpoints key it.
    pub name: String,
    /// Its shape (parameters and states have fixed shapes).
    pub shape: Vec<usize>,
    /// How it is initialized, as the language writes it (`xavier_uniform`, `zeros`).
    pub init: String,
    /// Whether weight decay (`l1`, `l2`, `adamw`) applies to it.
    pub decay: bool,
    /// False for states: updated by the model itself, not by the optimizer.
    pub trainable: bool,
}

impl ParamInfo {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The buffer plan of a model's training step at one batch size (`nnc plan`).
#[derive(Clone, Debug, PartialEq)]
pub struct PlanInfo {
    /// The batch size planned for.
    pub batch: usize,
    /// Kernels the step runs (fused loops, matrix products, host kernels).
    pub kernels: usize,
    /// Bytes of the one arena that holds every intermediate value.
    pub arena_bytes: usize,
    /// Bytes if every value had its own buffer.
    pub naive_bytes: usize,
    /// Bytes of the parameters, and of the states and optimizer state.
    pub param_bytes: usize,
    /// Bytes of the states (running statistics, optimizer moments).
    pub state_bytes: usize,
    /// Floating-point operations of the step's matrix products (2 m k n each).
    pub matmul_flops: usize,
    /// Seconds spent compiling the step.
    pub compile_seconds: f64,
    /// Set when the planned step is not the one training runs: a host-loop optimizer's
    /// step is planned as plain gradient descent standing in for it.
    pub stand_in: Option<String>,
}

pub(crate) fn info_of(g: &Graph, name: &str, v: crate::ir::Value) -> TensorInfo {
    let ty = g.ty(v);
    let shape = ty
        .shape
        .iter()
        .map(|d| match d.as_const() {
            Some(n) => Dim::Fixed(n.max(0) as usize),
            None => Dim::Symbol(d.display(&g.symbols).to_string()),
        })
        .collect();
    TensorInfo { name: name.to_string(), shape, dtype: ty.dtype }
}

impl Model {
    /// Compiles the model of a `.nn` file (the only one, or the one [`Model::select`]
    /// names). Data paths in its `train` block are relative to the file's folder.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref().to_path_buf();
        let source = crate::pipeline::read_source(&path)
            .map_err(|m| Error::Io { path: path.clone(), source: std::io::Error::other(m) })?;
        Model::configured(Origin::File(path), source, None, Vec::new())
    }

    /// Compiles source text. `name` is the file name diagnostics show; `use` paths and
    /// data paths are relative to the current folder.
    pub fn from_source(name: &str, text: &str) -> Result<Model> {
        let origin = Origin::Source { name: name.to_string(), dir: PathBuf::from(".") };
        Model::configured(origin, crate::pipeline::normalize_source(text.to_string()), None, Vec::new())
    }

    /// Data paths and `use` paths relative to `dir` (for a model from source text).
    pub fn in_dir(self, dir: impl AsRef<Path>) -> Result<Model> {
        let origin = match self.origin {
            Origin::Source { name, .. } => Origin::Source { name, dir: dir.as_ref().to_path_buf() },
            Origin::File(f) => {
                return Err(Error::Usage(format!("`{}` is a file: its paths are relative to its folder", f.display())))
            }
        };
        Model::configured(origin, self.source, self.model, self.sets)
    }

    /// The model named `name`, for a file with several.
    pub fn select(self, name: &str) -> Result<Model> {
        Model::configured(self.origin, self.source, Some(name.to_string()), self.sets)
    }

    /// Binds a model argument or a train setting, with exactly the checks of the
    /// command line's `--set key=value` (and of the `train` block itself), and compiles
    /// again. A key given before is replaced.
    ///
    /// ```
    /// let src = "model M(h: int = 4) {\n input x: [B, 2]\n layer fc = Dense(2, h)\n output y = fc(x)\n}";
    /// let m = nnc::Model::from_source("m.nn", src)?;
    /// assert!(m.clone().with("h", 0).is_err()); // Dense needs a positive width
    /// assert!(matches!(m.with("nosuch", 1), Err(nnc::Error::Usage(_))));
    /// # Ok::<(), nnc::Error>(())
    /// ```
    pub fn with(self, key: &str, value: impl Into<Value>) -> Result<Model> {
        let value = value.into();
        let mut sets: Vec<String> =
            self.sets.into_iter().filter(|s| s.split_once('=').map(|(k, _)| k.trim()) != Some(key)).collect();
        sets.push(format!("{key}={}", value.as_source()));
        Model::configured(self.origin, self.source, self.model, sets)
    }

    /// A model the command line compiled already (`pipeline::configure`), from `file`.
    pub(crate) fn from_program(program: Program, file: &Path) -> Model {
        let source = std::fs::read_to_string(file).unwrap_or_default();
        Model { program, source, origin: Origin::File(file.to_path_buf()), model: None, sets: Vec::new() }
    }

    /// The model as `checkpoint` was trained: its recorded model arguments and
    /// quantization-aware recipe bound (what `nnc eval`, `predict` and `export` do).
    pub fn for_checkpoint(self, checkpoint: impl AsRef<Path>) -> Result<Model> {
        let path = checkpoint.as_ref();
        let (_, meta) = crate::train::checkpoint::read(path).map_err(|m| Error::checkpoint(path, None, m))?;
        let mut m = self;
        for (k, v) in &meta {
            if let Some(name) = k.strip_prefix("nnc.arg.") {
                m = m.with(name, v.as_str())?;
            }
        }
        match meta.get("nnc.recipe.quantize") {
            Some(q) => m.with("quantize", q.as_str()),
            None => Ok(m),
        }
    }

    pub(crate) fn configured(
        origin: Origin,
        source: String,
        model: Option<String>,
        sets: Vec<String>,
    ) -> Result<Model> {
        let program = match &origin {
            Origin::File(path) => crate::pipeline::configure(path, &sets, model.as_deref())?,
            Origin::Source { name, dir } => {
                crate::pipeline::configure_source(name, &source, Some(dir), &sets, model.as_deref())?
            }
        };
        Ok(Model { program, source, origin, model, sets })
    }

    /// The model's name (`Digits`).
    pub fn name(&self) -> &str {
        &self.program.name
    }

    /// The folder the `train` block's data paths are relative to.
    pub(crate) fn base_dir(&self) -> PathBuf {
        match &self.origin {
            Origin::File(f) => f.parent().map(Path::to_path_buf).unwrap_or_default(),
            Origin::Source { dir, .. } => dir.clone(),
        }
    }

    /// The `key=value` settings and arguments bound so far, in the order given.
    pub fn settings(&self) -> &[String] {
        &self.sets
    }

    /// The model arguments as bound (defaults included), as source text.
    pub fn args(&self) -> &[(String, String)] {
        &self.program.args
    }

    /// The inputs of the training graph (features and labels).
    pub fn inputs(&self) -> Vec<TensorInfo> {
        let g = &self.program.train;
        g.inputs.iter().map(|i| info_of(g, &i.name, i.value)).collect()
    }

    /// The outputs of the eval graph, as [`Predictor`](crate::Predictor) returns them.
    pub fn outputs(&self) -> Vec<TensorInfo> {
        let g = &self.program.eval;
        g.outputs.iter().map(|(n, v)| info_of(g, n, *v)).collect()
    }

    /// The parameters, then the states, in declaration order.
    pub fn params(&self) -> Vec<ParamInfo> {
        let g = &self.program.train;
        let size = |s: &[i64]| s.iter().map(|&d| d.max(0) as usize).collect();
        let params = g.params.iter().map(|p| ParamInfo {
            name: p.name.clone(),
            shape: size(&p.shape),
            init: p.init.describe(),
            decay: p.decay,
            trainable: true,
        });
        let states = g.states.iter().map(|s| ParamInfo {
            name: s.name.clone(),
            shape: size(&s.shape),
            init: s.init.describe(),
            decay: false,
            trainable: false,
        });
        params.chain(states).collect()
    }

    /// Compiles the training step at `batch` rows (`None`: the `train` block's batch) and
    /// reads its plan.
    pub fn plan(&self, batch: Option<usize>) -> Result<PlanInfo> {
        let b = crate::pipeline::batch_of(&self.program, batch.map(|b| b as i64)).map_err(Error::Usage)?;
        let g = crate::pipeline::step_graph(&self.program, b)?;
        let exe = crate::runtime::executable::Executable::new(&g, &Default::default())?;
        let plan = &exe.plan;
        Ok(PlanInfo {
            batch: b,
            kernels: exe.schedule.kernels.len(),
            arena_bytes: plan.arena_len * 4,
            naive_bytes: plan.naive_bytes,
            param_bytes: plan.param_slots.iter().map(|s| s.len * 4).sum(),
            state_bytes: plan.state_slots.iter().map(|s| s.len * 4).sum(),
            matmul_flops: exe.matmul_flops(),
            compile_seconds: exe.compile_seconds,
            stand_in: crate::pipeline::host_stand_in(&self.program),
        })
    }

    /// The IR of the model's training graph and of its eval graph, in nnc's stable text
    /// format (`nnc ir --stage ir`).
    pub fn ir(&self) -> (String, String) {
        (crate::ir::print::print(&self.program.train), crate::ir::print::print(&self.program.eval))
    }
}
