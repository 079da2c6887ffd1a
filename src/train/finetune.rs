//! `nnc prune`'s run: a trained checkpoint pruned by magnitude (`compress::prune`) at one
//! or more sparsities, each scored on the rows the checkpoint held out, then optionally
//! fine-tuned with its masks fixed (pruned weights stay exact zeros) on the
//! checkpoint's own training rows and scored again. Every level starts from the dense
//! checkpoint, and the fine-tuning starts with fresh optimizer state.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::session::{Progress, Quiet, Session};
use super::target::{self, Evaluation};
use super::trainer::{rebuild, roles, EvalData};
use crate::compress::prune::{self, Scope, Structure};
use crate::data::Preprocessor;
use crate::ir::recipe::Choice;
use crate::ir::Program;
use crate::tensors::TensorMap;

/// How to prune.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    pub sparsities: Vec<f64>,
    pub scope: Scope,
    pub structure: Structure,
    /// The weights to prune by name (every weight when empty).
    pub params: Vec<String>,
    /// Epochs of fine-tuning with fixed masks after pruning (0: none).
    pub finetune_epochs: usize,
    pub backend: crate::runtime::backend::Backend,
    pub threads: usize,
}

/// One sparsity level.
pub struct Level {
    /// The sparsity asked for, and the fraction of weights that are exact zeros.
    pub asked: f64,
    pub reached: f64,
    /// Held-out metrics right after pruning, and after fine-tuning.
    pub pruned: Evaluation,
    pub tuned: Option<Evaluation>,
    /// The pruned (and fine-tuned) parameters and model states, to save.
    pub tensors: TensorMap,
}

pub struct PruneReport {
    pub dense: Evaluation,
    pub levels: Vec<Level>,
    /// Which rows the metrics are on ("the test split (360 rows)").
    pub rows: String,
    /// How many weights (parameters of rank >= 2, those of `params` if given) there are,
    /// of how many parameters.
    pub weights: usize,
    pub params: usize,
    pub notes: Vec<String>,
    /// What a pruned checkpoint carries besides its tensors.
    pub pre: Preprocessor,
    pub meta: BTreeMap<String, String>,
}

/// Prunes the checkpoint at every sparsity of `opts`.
pub fn prune_checkpoint(
    p: &Program,
    base_dir: &Path,
    checkpoint: &Path,
    source: &str,
    opts: &PruneOptions,
    stop: &AtomicBool,
) -> Result<PruneReport, String> {
    let rb = rebuild(p, base_dir, checkpoint, source, EvalData::HeldOut)?;
    let mut notes = rb.notes.clone();
    let (train, val, held, _) = roles(&rb.parts);
    let metrics = rb.q.settings.metrics.clone();
    let score = |s: &mut Session| -> Result<Evaluation, String> {
        let sc = s.score(&rb.ds, held)?;
        Ok(target::report(&rb.ds, held, &sc, s.kind, "test_", &metrics))
    };
    // The model's own parameters and states only: fine-tuning starts a fresh optimizer.
    let model: TensorMap =
        rb.tensors.iter().filter(|(k, _)| !k.starts_with("opt.")).map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut q = rb.q.clone();
    q.settings.prune = Some(Choice { name: "fixed".into(), args: vec![] });
    q.settings.epochs = opts.finetune_epochs as i64;
    // The rebuilt rows are preprocessed, and augmentation reads raw ones: fine-tuning
    // trains on the rows as they are.
    if !q.settings.augment.is_empty() && opts.finetune_epochs > 0 {
        q.settings.augment.clear();
        notes.push("fine-tuning trains without the recipe's `augment` (on the rows as they are)".into());
    }
    let mut dense_session = Session::new(&rb.q, opts.backend, opts.threads)?;
    dense_session.init(0, train.len())?;
    dense_session.load_tensors(&model, train.len())?;
    notes.push(dense_session.target_note());
    let dense = score(&mut dense_session)?;
    let graph = dense_session.step_graph();
    let chosen = |d: &crate::ir::ParamDecl| d.is_weight() && (opts.params.is_empty() || opts.params.contains(&d.name));
    let weights: usize =
        graph.params.iter().filter(|d| chosen(d)).map(|d| d.shape.iter().product::<i64>() as usize).sum();
    let chosen_names: Vec<String> = graph.params.iter().filter(|d| chosen(d)).map(|d| d.name.clone()).collect();
    let params: usize = graph.params.iter().map(|d| d.shape.iter().product::<i64>() as usize).sum();
    let eval_names: Vec<String> =
        rb.q.eval
            .params
            .iter()
            .map(|d| d.name.clone())
            .chain(rb.q.eval.states.iter().map(|d| d.name.clone()))
            .collect();
    let mut levels = Vec::new();
    for &asked in &opts.sparsities {
        let mut s = Session::new(&q, opts.backend, opts.threads)?;
        s.init(q.settings.seed as u64, train.len())?;
        s.load_tensors(&model, train.len())?;
        let reached = s.prune_to(asked, opts.scope, opts.structure, &opts.params)?;
        let pruned = score(&mut s)?;
        let tuned = if opts.finetune_epochs > 0 {
            let mut at = Progress::default();
            s.fit(&rb.ds, train, val, &mut at, stop, &mut Quiet)?;
            Some(score(&mut s)?)
        } else {
            None
        };
        let all = s.tensors()?;
        let after = prune::sparsity_of(chosen_names.iter().filter_map(|n| all.get(n).and_then(|t| t.floats())));
        if after < reached {
            return Err(format!(
                "internal error: fine-tuning lost sparsity ({after} of the weights are zero, {reached} were)"
            ));
        }
        let tensors = all.into_iter().filter(|(k, _)| eval_names.contains(k)).collect();
        levels.push(Level { asked, reached, pruned, tuned, tensors });
    }
    let mut meta = rb.meta.clone();
    meta.insert("nnc.pruned_from".into(), checkpoint.display().to_string());
    meta.insert("nnc.prune_scope".into(), format!("{:?}", opts.scope).to_lowercase());
    meta.insert("nnc.prune_structure".into(), format!("{:?}", opts.structure).to_lowercase());
    meta.insert("nnc.finetune_epochs".into(), opts.finetune_epochs.to_string());
    Ok(PruneReport { dense, levels, rows: rb.rows, weights, params, notes, pre: rb.pre, meta })
}
