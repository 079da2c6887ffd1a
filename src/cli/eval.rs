//! `nnc eval`: metrics of a checkpoint on the rows it held out, or on every row of a
//! data file (`--data`).

use super::*;
use crate::train::trainer::EvalData;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// The checkpoint to score (`last.safetensors` or `best.safetensors` of a run); give
    /// it several times to score an ensemble that averages the members' probabilities.
    #[arg(long, required_unless_present = "torch")]
    pub checkpoint: Vec<PathBuf>,
    /// Score a PyTorch state dict (safetensors, torch.nn names and layouts) instead of a
    /// checkpoint, on the rows of `--data` (it records no split and no preprocessing).
    #[arg(long, conflicts_with = "checkpoint", requires = "data")]
    pub torch: Option<PathBuf>,
    /// Score every row of this data file instead of the held-out rows: csv, npy, npz,
    /// safetensors or IDX (`.gz` too), with labels; the checkpoint's preprocessing applied.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The label column of a `--data` csv file (default: the train block's csv `label`).
    #[arg(long, allow_hyphen_values = true, requires = "data")]
    pub label_column: Option<i64>,
    /// A `--data` csv file's first row is a header (default: the train block's csv `header`).
    #[arg(long, requires = "data")]
    pub header: bool,
    /// The labels of `--data` npy or IDX features (an npy or IDX file).
    #[arg(long, requires = "data")]
    pub labels: Option<PathBuf>,
    /// Print one JSON object: every metric, and the confusion matrix of a classifier.
    #[arg(long)]
    pub json: bool,
    /// Native code (`jit`) or the reference interpreter (`interp`).
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: Backend,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    // The model as the (first) checkpoint was trained: its model arguments.
    let sets = a.checkpoint.first().map(|c| checkpoint_args(c)).unwrap_or_default();
    let p = match compile_with_sets(&a.file, &sets, a.model.as_deref(), opts) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let p = &p;
    let dir = a.file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let source = std::fs::read_to_string(&a.file).unwrap_or_default();
    let given = match &a.data {
        Some(path) => match load(p, path, &a) {
            Ok(ds) => Some((ds, path.display().to_string())),
            Err(m) => return fail(&m),
        },
        None => None,
    };
    let rows = match &given {
        Some((ds, name)) => EvalData::All(ds, name),
        None => EvalData::HeldOut,
    };
    if a.checkpoint.len() > 1 {
        return ensemble(p, &dir, &a, &source, rows);
    }
    let backend = a.backend.run();
    let report = match (&a.torch, a.checkpoint.first()) {
        (Some(sd), _) => crate::train::trainer::evaluate_torch(p, sd, backend, rows),
        (None, Some(ck)) => crate::train::trainer::evaluate_on(p, &dir, ck, backend, &source, rows),
        (None, None) => Err("give --checkpoint or --torch".to_string()),
    };
    match report {
        Ok(r) => {
            for n in &r.notes {
                errln!("note: {n}");
            }
            for n in &r.eval.notes {
                errln!("note: {n}");
            }
            if a.json {
                let mut text = crate::metrics::to_json(&r.eval.all);
                if let Some(cm) = &r.eval.confusion {
                    // Insert the matrix as one more key of the object.
                    let body = text.trim_end().trim_end_matches('}').trim_end().to_string();
                    let sep = if body.ends_with('{') { "" } else { "," };
                    text = format!("{body}{sep}\n  \"confusion\": {}\n}}\n", crate::metrics::confusion_to_json(cm));
                }
                outs!("{text}");
            } else {
                outln!("on {}:", r.rows);
                outs!("{}", crate::metrics::format_lines(&r.eval.shown));
                if let Some(cm) = &r.eval.confusion {
                    outln!("confusion matrix (rows: true class, columns: predicted):\n{}", cm.to_table(None));
                }
            }
            0
        }
        Err(m) => fail(&m),
    }
}

/// The `--data` file, bound to every input the model reads in training (labels too).
/// A csv file's label column and header default to those of the train block's csv source.
fn load(p: &crate::ir::Program, path: &std::path::Path, a: &Args) -> Result<crate::data::Dataset, String> {
    let specs = crate::train::engine::input_specs(&p.train)?;
    let mut f = crate::data::DataFile {
        path: path.to_path_buf(),
        label_column: a.label_column,
        header: a.header,
        labels: a.labels.clone(),
    };
    let csv = crate::data::file_format(path)? == crate::data::FileFormat::Csv;
    let labeled = specs.iter().any(|s| s.name == crate::data::LABEL_INPUT);
    if csv && labeled && f.label_column.is_none() {
        let from_train = p.settings.data.as_ref().filter(|c| c.name == "csv");
        let Some(c) = from_train else {
            return Err(format!(
                "`{}`: which column holds the labels? pass --label-column N (the train block's source is not a csv \
                 file to take it from)",
                path.display()
            ));
        };
        f.label_column = Some(crate::data::int_arg(c, "label", -1)?);
        if !a.header {
            f.header = matches!(c.arg("header"), Some(crate::settings::Lit::Bool(true)));
        }
        errln!(
            "note: label column {} and header = {} as in the train block's csv source",
            f.label_column.unwrap_or(-1),
            f.header
        );
    }
    Ok(crate::data::load_file(&f, &specs)?)
}

fn ensemble(p: &crate::ir::Program, dir: &std::path::Path, a: &Args, source: &str, rows: EvalData) -> i32 {
    match crate::train::trainer::evaluate_ensemble(p, dir, &a.checkpoint, a.backend.run(), source, rows) {
        Ok((members, ens)) => {
            let rows = members.first().map(|m| m.rows.clone()).unwrap_or_default();
            for n in members.first().map(|m| m.notes.clone()).unwrap_or_default().iter().chain(&ens.notes) {
                errln!("note: {n}");
            }
            if a.json {
                let mut all = crate::metrics::Metrics::new();
                for (i, m) in members.iter().enumerate() {
                    for (k, v) in &m.eval.all {
                        all.insert(format!("member{}_{k}", i + 1), *v);
                    }
                }
                for (k, v) in &ens.all {
                    all.insert(format!("ensemble_{k}"), *v);
                }
                outs!("{}", crate::metrics::to_json(&all));
                return 0;
            }
            outln!("on {rows}:");
            for (i, (m, c)) in members.iter().zip(&a.checkpoint).enumerate() {
                outln!("member {} ({}): {}", i + 1, c.display(), crate::metrics::format_pairs(&m.eval.shown));
            }
            outln!("ensemble of {}: {}", members.len(), crate::metrics::format_pairs(&ens.shown));
            0
        }
        Err(m) => fail(&m),
    }
}
