//! The `train { }` and `tune { }` blocks of a model: its recipe and its hyperparameter search.

use crate::diagnostic::{Diagnostic, Span};
use crate::ir::Mode;
use crate::lower::context::{AugmentSpans, Body, Ctx, Lowerer, R};
use crate::settings;
use crate::syntax::ast::Setting;

impl Lowerer {
    /// Checks the train block and keeps its settings (errors in train mode only, once).
    pub(super) fn train_stmt(&mut self, st: &[Setting], span: Span, ctx: &Ctx) -> R<()> {
        self.only_in(ctx, &[Body::Model], "`train`", span)?;
        if let Some(first) = self.train_span {
            return Err(
                Diagnostic::new("E0310", span, "the model has two `train` blocks").with_note(first, "first here")
            );
        }
        self.train_span = Some(span);
        self.metrics_span = st.iter().find(|x| x.key.name == "metrics").map(|x| x.value.span);
        self.augment_spans = AugmentSpans::of(st, span);
        let (s, errs) = settings::check_block(st, span);
        self.settings = Some(s);
        if self.mode == Mode::Train {
            self.errors.extend(errs);
        }
        Ok(())
    }

    /// Checks the tune block against the model's arguments.
    pub(super) fn tune_stmt(&mut self, st: &[Setting], span: Span, ctx: &Ctx) -> R<()> {
        self.only_in(ctx, &[Body::Model], "`tune`", span)?;
        if let Some(first) = self.tune_span {
            return Err(
                Diagnostic::new("E0310", span, "the model has two `tune` blocks").with_note(first, "first here")
            );
        }
        self.tune_span = Some(span);
        let (t, errs) = settings::tune::check_block(st, span, &self.model_args);
        self.tune = Some(t);
        if self.mode == Mode::Train {
            self.errors.extend(errs);
        }
        Ok(())
    }
}
