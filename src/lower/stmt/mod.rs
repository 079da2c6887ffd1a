//! Statements: `exec_block` runs a body and `exec_stmt` dispatches each statement by its
//! kind to one file of this folder (inputs, params and states, layers, outputs and the loss,
//! loops and ifs, train and tune blocks, bindings, teachers). Every file builds on
//! `lower/context.rs` only; the expression evaluator they call is `Lowerer`'s methods.

mod assign;
mod control;
mod input;
mod layer;
mod output;
mod param;
mod teacher;
mod train;

use crate::diagnostic::{Diagnostic, Span};
use crate::lower::context::{set, Body, Ctx, Lowerer, Val, R};
use crate::syntax::ast::Stmt;

impl Lowerer {
    /// Runs statements; returns the value of a final expression statement (fn bodies).
    pub(super) fn exec_block(&mut self, stmts: &[Stmt], ctx: &Ctx) -> R<Option<Val>> {
        let mut last = None;
        for s in stmts {
            if self.fatal {
                break;
            }
            match self.exec_stmt(s, ctx) {
                Ok(v) => last = v,
                Err(d) => {
                    if ctx.body == Body::Model {
                        // Poison what the statement would have bound and go on.
                        if let Stmt::Assign { name, .. }
                        | Stmt::Output { name, .. }
                        | Stmt::Layer { name, .. }
                        | Stmt::Param { name, .. }
                        | Stmt::State { name, .. }
                        | Stmt::Input { name, .. }
                        | Stmt::Teacher { name, .. } = s
                        {
                            set(&ctx.env, &name.name, Val::Poison);
                        }
                        if let Stmt::Loss { span, .. } = s {
                            self.loss_span = Some(*span);
                        }
                        self.errors.push(d);
                        last = None;
                    } else {
                        return Err(d);
                    }
                }
            }
        }
        Ok(last)
    }

    fn only_in(&self, ctx: &Ctx, allowed: &[Body], what: &str, span: Span) -> R<()> {
        if allowed.contains(&ctx.body) {
            return Ok(());
        }
        let place = match ctx.body {
            Body::Model => "a model",
            Body::Layer => "a layer",
            Body::Fn => "a fn",
        };
        Err(Diagnostic::new("E0203", span, format!("{what} cannot appear in {place}")).with_help(match what {
            "`input`" | "`output`" | "`loss`" | "`train`" => "declare it in the `model` body",
            _ => "declare it in a `model` or `layer` body",
        }))
    }

    fn declare(&mut self, full: &str, span: Span) -> R<()> {
        if let Some(first) = self.declared.get(full) {
            return Err(Diagnostic::new("E0310", span, format!("`{full}` is declared twice"))
                .with_label("declared again here")
                .with_note(*first, "first declared here"));
        }
        self.declared.insert(full.to_string(), span);
        Ok(())
    }

    /// Runs one statement: a dispatch on its kind to the files of `lower/stmt/`.
    fn exec_stmt(&mut self, s: &Stmt, ctx: &Ctx) -> R<Option<Val>> {
        match s {
            Stmt::Input { name, ty, span } if self.teacher.is_some() => self.teacher_input(name, ty, *span, ctx)?,
            Stmt::Loss { .. } | Stmt::Train { .. } | Stmt::Tune { .. } if self.teacher.is_some() => {
                // A teacher is run for its outputs only.
            }
            Stmt::Teacher { name, model, path, span } => self.teacher_stmt(name, model, path, *span, ctx)?,
            Stmt::Input { name, ty, span } => self.input_stmt(name, ty, *span, ctx)?,
            Stmt::Param { name, ty, init, options, span } => {
                self.param_or_state(true, name, ty, init.as_ref(), options, *span, ctx)?
            }
            Stmt::State { name, ty, init, options, span } => {
                self.param_or_state(false, name, ty, init.as_ref(), options, *span, ctx)?
            }
            Stmt::Layer { name, value, span } => self.layer_stmt(name, value, *span, ctx)?,
            Stmt::Output { name, value, span } => self.output_stmt(name, value.as_ref(), *span, ctx)?,
            Stmt::Loss { value, span } => self.loss_stmt(value, *span, ctx)?,
            Stmt::Fn(def) => self.fn_stmt(def, ctx),
            Stmt::For { var, start, end, body, span } => self.for_stmt(var, start, end, body, *span, ctx)?,
            Stmt::If { negated, cond, then, otherwise, .. } => {
                return self.if_stmt(*negated, cond, then, otherwise.as_ref(), ctx)
            }
            Stmt::Train { settings, span } => self.train_stmt(settings, *span, ctx)?,
            Stmt::Tune { settings, span } => self.tune_stmt(settings, *span, ctx)?,
            Stmt::Update { name, value, span } => self.update_stmt(name, value, *span, ctx)?,
            Stmt::Assign { name, value, .. } => self.assign_stmt(name, value, ctx)?,
            Stmt::Expr(e) => return Ok(Some(self.eval(e, &ctx.env)?)),
        }
        Ok(None)
    }
}
