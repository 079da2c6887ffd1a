//! Bindings: `x = ...`, a state update `s <- ...`, and a local `fn` definition.

use crate::diagnostic::{Diagnostic, Span};
use crate::ir::Mode;
use crate::lower::context::{lookup, set, Closure, Ctx, Lowerer, Val, R};
use crate::syntax::ast::{Expr, FnDef, Ident};
use std::rc::Rc;

impl Lowerer {
    /// Binds a name to a value.
    pub(super) fn assign_stmt(&mut self, name: &Ident, value: &Expr, ctx: &Ctx) -> R<()> {
        let v = self.eval(value, &ctx.env)?;
        set(&ctx.env, &name.name, v);
        Ok(())
    }

    /// `s <- value`: the new value of a state after a train step.
    pub(super) fn update_stmt(&mut self, name: &Ident, value: &Expr, span: Span, ctx: &Ctx) -> R<()> {
        let target = lookup(&ctx.env, &name.name).ok_or_else(|| self.unknown_name(&name.name, name.span, &ctx.env))?;
        let v = self.eval(value, &ctx.env)?;
        let (Val::Tensor(t), Val::Tensor(nv)) = (&target, &v) else {
            if matches!(target, Val::Poison) || matches!(v, Val::Poison) {
                return Ok(());
            }
            return Err(Diagnostic::new(
                "E0340",
                name.span,
                format!("`{}` is not a state; `<-` updates a `state`", name.name),
            ));
        };
        let Some(&idx) = self.state_of.get(t) else {
            return Err(Diagnostic::new(
                "E0340",
                name.span,
                format!("`{}` is not a state; `<-` updates a `state`", name.name),
            )
            .with_help("use `=` to bind a new value"));
        };
        let shape = self.g.ty(*t).shape.clone();
        let nv = self.broadcast_to(*nv, &shape, value.span)?;
        if self.mode == Mode::Train {
            if self.g.states[idx].update.is_some() {
                return Err(Diagnostic::new(
                    "E0341",
                    span,
                    format!("state `{}` is updated twice in one step", self.g.states[idx].name),
                ));
            }
            self.g.states[idx].update = Some(nv);
        }
        Ok(())
    }

    /// Binds a fn defined in a body (it sees the body's scope).
    pub(super) fn fn_stmt(&mut self, def: &FnDef, ctx: &Ctx) {
        let c =
            Closure { def: Rc::new(def.clone()), env: ctx.env.clone(), from_prelude: def.span.file == self.prelude };
        set(&ctx.env, &def.name.name, Val::Fn(Rc::new(c)));
    }
}
