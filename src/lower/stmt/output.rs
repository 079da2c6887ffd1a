//! `output logits = ...` and `loss = ...`: what a model returns and what training minimises.

use crate::diagnostic::{Diagnostic, Span};
use crate::ir::DType;
use crate::lower::context::{lookup, set, Body, Ctx, Lowerer, Val, R};
use crate::syntax::ast::{Expr, Ident};

impl Lowerer {
    /// Declares an output (in a teacher, collects it for the student).
    pub(super) fn output_stmt(&mut self, name: &Ident, value: Option<&Expr>, span: Span, ctx: &Ctx) -> R<()> {
        self.only_in(ctx, &[Body::Model], "`output`", span)?;
        let v = match value {
            Some(e) => self.eval(e, &ctx.env)?,
            None => lookup(&ctx.env, &name.name).ok_or_else(|| self.unknown_name(&name.name, name.span, &ctx.env))?,
        };
        let key = format!("output {}{}", self.teacher.as_ref().map(|t| t.prefix.as_str()).unwrap_or(""), name.name);
        if let Some(first) = self.declared.get(&key) {
            return Err(Diagnostic::new("E0310", name.span, format!("output `{}` is declared twice", name.name))
                .with_note(*first, "first declared here"));
        }
        self.declared.insert(key, name.span);
        match v {
            Val::Tensor(t) if self.teacher.is_some() => {
                if let Some(tm) = self.teacher.as_mut() {
                    tm.outputs.push((name.name.clone(), Val::Tensor(t)));
                }
                set(&ctx.env, &name.name, Val::Tensor(t));
            }
            Val::Tensor(t) => {
                self.g.outputs.push((name.name.clone(), t));
                set(&ctx.env, &name.name, Val::Tensor(t));
            }
            Val::Poison => set(&ctx.env, &name.name, Val::Poison),
            other => {
                return Err(Diagnostic::new(
                    "E0330",
                    value.map(|e| e.span).unwrap_or(name.span),
                    format!("an output must be a tensor, found {}", other.describe()),
                ))
            }
        }
        Ok(())
    }

    /// Sets the model's loss: one f32 scalar.
    pub(super) fn loss_stmt(&mut self, value: &Expr, span: Span, ctx: &Ctx) -> R<()> {
        self.only_in(ctx, &[Body::Model], "`loss`", span)?;
        if let Some(first) = self.loss_span {
            return Err(Diagnostic::new("E0310", span, "the model has two `loss` statements")
                .with_note(first, "first loss here"));
        }
        self.loss_span = Some(span);
        match self.eval(value, &ctx.env)? {
            Val::Tensor(t) => {
                let ty = self.g.ty(t).clone();
                if ty.dtype != DType::F32 || !ty.shape.is_empty() {
                    return Err(Diagnostic::new(
                        "E0331",
                        value.span,
                        format!("the loss must be an f32 scalar, found {}", self.ty_str(&ty)),
                    )
                    .with_label("not a scalar")
                    .with_help("reduce it, e.g. `loss = mean(...)`"));
                }
                self.g.loss = Some(t);
            }
            Val::Float(_) | Val::Int(_) => {
                return Err(Diagnostic::new("E0331", value.span, "the loss must depend on the model; found a constant"))
            }
            Val::Poison => {}
            other => {
                return Err(Diagnostic::new(
                    "E0331",
                    value.span,
                    format!("the loss must be an f32 scalar tensor, found {}", other.describe()),
                ))
            }
        }
        Ok(())
    }
}
