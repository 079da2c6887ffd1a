//! `layer fc = Dense(784, 128)` and layer arrays (`layer blocks = Block(64) * 4`): layer
//! instances named by their dotted path.

use crate::diagnostic::{Diagnostic, Span};
use crate::limits;
use crate::lower::context::{set, Body, Ctx, Env, Lowerer, Val, R};
use crate::syntax::ast::{Expr, ExprKind, Ident};

impl Lowerer {
    /// Declares a layer (or a list of them) under the current path.
    pub(super) fn layer_stmt(&mut self, name: &Ident, value: &Expr, span: Span, ctx: &Ctx) -> R<()> {
        self.only_in(ctx, &[Body::Model, Body::Layer], "`layer`", span)?;
        let full = format!("{}{}", ctx.path, name.name);
        self.declare(&full, name.span)?;
        let v = self.layer_decl(&full, value, &ctx.env)?;
        set(&ctx.env, &name.name, v);
        Ok(())
    }

    fn layer_decl(&mut self, path: &str, value: &Expr, env: &Env) -> R<Val> {
        match &value.kind {
            ExprKind::Repeat(inner, count) => {
                let n = self.eval_const_int(count, env, "the number of copies")?;
                if !(1..=limits::MAX_LAYER_ARRAY).contains(&n) {
                    return Err(Diagnostic::new(
                        "E0311",
                        count.span,
                        format!("a layer array needs 1 to {} copies, found {n}", limits::MAX_LAYER_ARRAY),
                    ));
                }
                let mut out = Vec::new();
                for i in 0..n {
                    out.push(self.layer_decl(&format!("{path}.{i}"), inner, env)?);
                    if self.fatal {
                        break;
                    }
                }
                Ok(Val::List(out))
            }
            ExprKind::Call { callee, args } => {
                let c = self.eval_callee(callee, env)?;
                match c {
                    Val::LayerCtor(ctor) => {
                        let args = self.eval_args(args, env)?;
                        self.instantiate(&ctor, args, path, value.span)
                    }
                    Val::Poison => Ok(Val::Poison),
                    other => Err(Diagnostic::new(
                        "E0312",
                        callee.span,
                        format!("`layer` needs a layer definition such as `Dense(64, 10)`, found {}", other.describe()),
                    )),
                }
            }
            _ => match self.eval(value, env)? {
                v @ (Val::Layer(_) | Val::Poison) => Ok(v),
                Val::LayerCtor(ctor) => self.instantiate(&ctor, vec![], path, value.span),
                Val::List(items) if items.iter().all(|i| matches!(i, Val::Layer(_))) => Ok(Val::List(items)),
                other => Err(Diagnostic::new(
                    "E0312",
                    value.span,
                    format!("`layer` needs a layer such as `Dense(64, 10)`, found {}", other.describe()),
                )),
            },
        }
    }
}
