//! `for i in a..b { }` (unrolled) and `if cond { } else { }` (a compile-time choice).

use crate::diagnostic::{Diagnostic, Span};
use crate::ir::Dim;
use crate::limits;
use crate::lower::context::{set, Ctx, Lowerer, Val, R};
use crate::syntax::ast::{Block, Expr, Ident};

impl Lowerer {
    /// Unrolls a loop: runs its body once per value of `var`.
    pub(super) fn for_stmt(
        &mut self,
        var: &Ident,
        start: &Expr,
        end: &Expr,
        body: &Block,
        span: Span,
        ctx: &Ctx,
    ) -> R<()> {
        let a = self.eval_const_int(start, &ctx.env, "a loop bound")?;
        let b = self.eval_const_int(end, &ctx.env, "a loop bound")?;
        if b.saturating_sub(a) > limits::MAX_LOOP_ITERATIONS {
            self.fatal = true;
            return Err(Diagnostic::new(
                "E0902",
                span,
                format!(
                    "this loop runs {} times; loops are unrolled and the limit is {}",
                    b.saturating_sub(a),
                    limits::MAX_LOOP_ITERATIONS
                ),
            ));
        }
        for i in a..b {
            self.iterations += 1;
            if self.iterations > limits::MAX_TOTAL_ITERATIONS {
                self.fatal = true;
                return Err(Diagnostic::new(
                    "E0902",
                    span,
                    format!(
                        "loops run more than {} iterations in all; loops are unrolled",
                        limits::MAX_TOTAL_ITERATIONS
                    ),
                ));
            }
            set(&ctx.env, &var.name, Val::Int(Dim::konst(i)));
            self.exec_block(&body.stmts, ctx)?;
            if self.fatal {
                break;
            }
        }
        Ok(())
    }

    /// Runs the branch that `cond` picks; returns its final expression's value.
    pub(super) fn if_stmt(
        &mut self,
        negated: bool,
        cond: &Expr,
        then: &Block,
        otherwise: Option<&Block>,
        ctx: &Ctx,
    ) -> R<Option<Val>> {
        let c = match self.eval(cond, &ctx.env)? {
            Val::Bool(b) => b,
            Val::Poison => return Ok(None),
            other => {
                return Err(Diagnostic::new(
                    "E0404",
                    cond.span,
                    format!("`if` needs a compile-time boolean such as `training`, found {}", other.describe()),
                ))
            }
        };
        if c != negated {
            return self.exec_block(&then.stmts, ctx);
        } else if let Some(o) = otherwise {
            return self.exec_block(&o.stmts, ctx);
        }
        Ok(None)
    }
}
