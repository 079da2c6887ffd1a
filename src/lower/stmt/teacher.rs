//! `teacher = Big(hidden = 512) from "runs/big/best.safetensors"`: another model lowered
//! inside this one for distillation.

use crate::diagnostic::{Diagnostic, Span};
use crate::ir::Mode;
use crate::lower::context::{new_scope, set, Body, Ctx, Instance, Lowerer, TeacherMode, Val, R};
use crate::syntax::ast::{self, Expr, ExprKind};
use std::rc::Rc;

impl Lowerer {
    /// `teacher = Big(hidden = 512) from "runs/big/best.safetensors"`: lowers model `Big`
    /// in eval mode inside this graph. Its inputs are this model's inputs of the same
    /// names, its parameters and states become states `teacher.<name>` read from the file
    /// (no gradient reaches them: they are not parameters), and `teacher` is bound to a
    /// value whose members are its outputs.
    pub(super) fn teacher_stmt(
        &mut self,
        name: &ast::Ident,
        model: &Expr,
        path: &Expr,
        span: Span,
        ctx: &Ctx,
    ) -> R<()> {
        self.only_in(ctx, &[Body::Model], "a teacher (`name = Model from \"file\"`)", span)?;
        if let Some(tm) = &self.teacher {
            return Err(Diagnostic::new(
                "E0350",
                span,
                format!("teacher model `{}` has a teacher of its own; a teacher's teacher is not supported", tm.model),
            )
            .with_help("distil in two runs: train the middle model with its teacher, then use its checkpoint"));
        }
        // `Big` or `Big(args)`.
        let (callee, margs) = match &model.kind {
            ExprKind::Call { callee, args } => (&**callee, args.clone()),
            _ => (model, Vec::new()),
        };
        let ExprKind::Name(n) = &callee.kind else {
            return Err(Diagnostic::new("E0351", model.span, "a teacher is a model: `Big` or `Big(hidden = 512)`")
                .with_help("write `teacher = Big from \"runs/big/best.safetensors\"`"));
        };
        let mname = ast::Ident { name: n.clone(), span: callee.span };
        let Some(def) = self.models.get(&mname.name).cloned() else {
            let mut d = Diagnostic::new("E0351", mname.span, format!("there is no model `{}`", mname.name))
                .with_help("a teacher is a model of this file or of a `use`d file");
            if let Some(c) = crate::diagnostic::closest(&mname.name, self.models.keys().map(String::as_str)) {
                d = d.with_help(format!("did you mean `{c}`?"));
            }
            return Err(d);
        };
        if def.name.name == self.model_name {
            return Err(Diagnostic::new(
                "E0350",
                mname.span,
                format!("model `{}` cannot be its own teacher", self.model_name),
            ));
        }
        let file = match self.eval(path, &ctx.env)? {
            Val::Str(f) => f,
            other => {
                return Err(Diagnostic::new(
                    "E0351",
                    path.span,
                    format!("a teacher's checkpoint is a file name in quotes, found {}", other.describe()),
                ))
            }
        };
        let resolved = match self.dirs.get(&span.file) {
            Some(d) => d.join(&file).display().to_string(),
            None => file.clone(),
        };
        self.declare(&name.name, name.span)?;
        let args = self.eval_args(&margs, &ctx.env)?;
        let scope = new_scope(Some(&self.global));
        self.scopes.push(scope.clone());
        self.bind_args(&format!("teacher model `{}`", mname.name), &def.args, args, &scope, model.span)?;
        let mode = self.mode;
        self.mode = Mode::Eval;
        self.teacher = Some(TeacherMode {
            prefix: format!("{}{}.", ctx.path, name.name),
            path: resolved,
            written: file.clone(),
            model: mname.name.clone(),
            outputs: Vec::new(),
        });
        let tctx = Ctx { env: scope, body: Body::Model, path: format!("{}{}.", ctx.path, name.name) };
        let before = self.errors.len();
        let r = self.exec_block(&def.body.stmts, &tctx);
        self.mode = mode;
        let tm = self.teacher.take();
        r?;
        if self.errors.len() > before {
            return Err(Diagnostic::new(
                "E0353",
                span,
                format!("teacher model `{}` does not compile inside model `{}`", mname.name, self.model_name),
            ));
        }
        let outputs = tm.map(|t| t.outputs).unwrap_or_default();
        if outputs.is_empty() {
            return Err(Diagnostic::new(
                "E0353",
                mname.span,
                format!("teacher model `{}` has no `output`: nothing of it can be used", mname.name),
            ));
        }
        let env = new_scope(None);
        self.scopes.push(env.clone());
        for (n, v) in outputs {
            set(&env, &n, v);
        }
        set(
            &ctx.env,
            &name.name,
            Val::Layer(Rc::new(Instance { kind: format!("teacher {}", mname.name), path: name.name.clone(), env })),
        );
        Ok(())
    }
}
