//! `input x: f32[B, 784]`: a model input, or in a teacher the student's input of that name.

use crate::diagnostic::{Diagnostic, Span};
use crate::ir::{self, DType, Dim, Op, Sym, Type};
use crate::limits;
use crate::lower::context::{lookup, set, Body, Ctx, Env, Lowerer, Val, R};
use crate::syntax::ast::{self, ExprKind, Ident, TensorType};

impl Lowerer {
    /// Declares an input of the model.
    pub(super) fn input_stmt(&mut self, name: &Ident, ty: &TensorType, span: Span, ctx: &Ctx) -> R<()> {
        self.only_in(ctx, &[Body::Model], "`input`", span)?;
        self.declare(&name.name, name.span)?;
        let t = self.input_type(ty, &ctx.env)?;
        let idx = self.g.inputs.len() as u32;
        let v = self.push(Op::Input(idx), vec![], Some(t.clone()), span)?;
        self.g.inputs.push(ir::InputDecl { name: name.name.clone(), ty: t, value: v, span });
        set(&ctx.env, &name.name, Val::Tensor(v));
        Ok(())
    }

    /// A teacher reads the student's input of the same name and type.
    pub(super) fn teacher_input(&mut self, name: &Ident, ty: &TensorType, span: Span, ctx: &Ctx) -> R<()> {
        let t = self.input_type(ty, &ctx.env)?;
        let model = self.teacher.as_ref().map(|m| m.model.clone()).unwrap_or_default();
        let Some(inp) = self.g.inputs.iter().find(|i| i.name == name.name).cloned() else {
            let names: Vec<String> = self.g.inputs.iter().map(|i| format!("`{}`", i.name)).collect();
            return Err(Diagnostic::new(
                "E0352",
                span,
                format!(
                    "teacher model `{model}` reads input `{}`, which model `{}` has not declared before its \
                     teacher",
                    name.name, self.model_name
                ),
            )
            .with_help(if names.is_empty() {
                "declare the student's inputs before the teacher".to_string()
            } else {
                format!("the inputs declared so far: {}", names.join(", "))
            }));
        };
        if inp.ty != t {
            return Err(Diagnostic::new(
                "E0352",
                span,
                format!(
                    "teacher model `{model}` reads input `{}` as {}, but model `{}` declares it as {}",
                    name.name,
                    self.ty_str(&t),
                    self.model_name,
                    self.ty_str(&inp.ty)
                ),
            )
            .with_note(inp.span, "the student's input")
            .with_help("a teacher sees the student's inputs: same names, dtypes and shapes (same symbols)"));
        }
        set(&ctx.env, &name.name, Val::Tensor(inp.value));
        Ok(())
    }

    fn input_type(&mut self, ty: &TensorType, env: &Env) -> R<Type> {
        let dtype = ty.dtype.unwrap_or(DType::F32);
        let mut shape = Vec::new();
        for d in &ty.dims {
            match d {
                ast::DimExpr::Ellipsis(s) => {
                    return Err(Diagnostic::new(
                        "E0313",
                        *s,
                        "an `input` needs a full shape; `...` is for fn arguments",
                    ))
                }
                ast::DimExpr::Expr(e) => {
                    if let ExprKind::Name(n) = &e.kind {
                        if lookup(env, n).is_none() {
                            let sym = match self.g.symbol(n) {
                                Some(s) => s,
                                None => {
                                    self.g.symbols.push(n.clone());
                                    Sym(self.g.symbols.len() as u32 - 1)
                                }
                            };
                            // The symbol is a size the rest of the model can use:
                            // `zeros([B, 4])`, `reshape(x, [B, 2, 5])`.
                            set(env, n, Val::Int(Dim::sym(sym)));
                            shape.push(Dim::sym(sym));
                            continue;
                        }
                    }
                    let v = self.eval(e, env)?;
                    let d = self.as_dim(&v, e.span)?;
                    if let Some(c) = d.as_const() {
                        if c < 1 {
                            return Err(Diagnostic::new(
                                "E0320",
                                e.span,
                                format!("an input dimension is {c}; it must be at least 1"),
                            ));
                        }
                    }
                    shape.push(d);
                }
            }
        }
        if shape.len() > limits::MAX_RANK {
            return Err(Diagnostic::new(
                "E0314",
                ty.span,
                format!("rank {} is above the limit of {}", shape.len(), limits::MAX_RANK),
            ));
        }
        let fixed: i64 =
            shape.iter().filter_map(Dim::as_const).try_fold(1i64, |a, b| a.checked_mul(b)).unwrap_or(i64::MAX);
        if fixed > limits::MAX_TENSOR_ELEMENTS {
            return Err(Diagnostic::new(
                "E0321",
                ty.span,
                format!("this input has more than {} elements per sample", limits::MAX_TENSOR_ELEMENTS),
            ));
        }
        Ok(Type { dtype, shape })
    }
}
