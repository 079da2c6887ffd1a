//! `param w: f32[784, 128] = xavier_uniform` and `state s: f32[64] = zeros`: tensors that
//! live across steps (in a teacher, frozen states read from its checkpoint).

use crate::diagnostic::{Diagnostic, Span};
use crate::ir::{self, Dim, Init, Op, Type};
use crate::limits;
use crate::lower::context::{set, Body, Ctx, Env, Lowerer, Val, R};
use crate::syntax::ast::{self, Expr, Ident, Setting, TensorType};

impl Lowerer {
    /// Declares a `param` (`is_param`) or a `state`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn param_or_state(
        &mut self,
        is_param: bool,
        name: &Ident,
        ty: &TensorType,
        init: Option<&Expr>,
        options: &[Setting],
        span: Span,
        ctx: &Ctx,
    ) -> R<()> {
        // Options: `decay = true|false` on a parameter (default true).
        let mut decay = true;
        for o in options {
            if !is_param || o.key.name != "decay" {
                return Err(Diagnostic::new(
                    "E0317",
                    o.key.span,
                    format!("{} has no option `{}`", if is_param { "a `param`" } else { "a `state`" }, o.key.name),
                )
                .with_help(if is_param {
                    "a parameter's one option is `decay = true|false` (whether l1, l2 and adamw's decay apply)"
                } else {
                    "a state takes no options"
                }));
            }
            decay = match self.eval(&o.value, &ctx.env)? {
                Val::Bool(b) => b,
                Val::Poison => true,
                other => {
                    return Err(Diagnostic::new(
                        "E0317",
                        o.value.span,
                        format!("`decay` is `true` or `false`, found {}", other.describe()),
                    ))
                }
            };
        }
        let what = if is_param { "`param`" } else { "`state`" };
        self.only_in(ctx, &[Body::Model, Body::Layer], what, span)?;
        let full = format!("{}{}", ctx.path, name.name);
        self.declare(&full, name.span)?;
        let shape = self.fixed_shape(ty, &ctx.env, &full)?;
        let init = match init {
            Some(e) => {
                let v = self.eval(e, &ctx.env)?;
                self.as_init(&v, e.span)?
            }
            None if is_param && shape.len() >= 2 => Init::XavierUniform { gain: 1.0 },
            None => Init::Zeros,
        };
        if let Init::Chunks(parts) = &init {
            let first = shape.first().copied().unwrap_or(1);
            if shape.is_empty() || first % parts.len() as i64 != 0 {
                return Err(Diagnostic::new(
                    "E0444",
                    span,
                    format!("`chunks` of {} parts needs a first dim divisible by {0}, found {first}", parts.len()),
                ));
            }
        }
        let t = Type::f32(shape.iter().map(|&d| Dim::konst(d)).collect());
        let v;
        if let Some(tm) = &self.teacher {
            // A teacher's parameters and states are frozen states read from its file.
            let init = Init::Load {
                path: tm.path.clone(),
                written: tm.written.clone(),
                tensor: full[tm.prefix.len()..].to_string(),
            };
            let idx = self.g.states.len();
            v = self.push(Op::State(idx as u32), vec![], Some(t), span)?;
            self.state_of.insert(v, idx);
            self.g.states.push(ir::StateDecl { name: full, shape, init, value: v, update: None, span });
        } else if is_param {
            let idx = self.g.params.len() as u32;
            v = self.push(Op::Param(idx), vec![], Some(t), span)?;
            self.g.params.push(ir::ParamDecl { name: full, shape, init, decay, value: v, update: None, span });
        } else {
            let idx = self.g.states.len();
            v = self.push(Op::State(idx as u32), vec![], Some(t), span)?;
            self.state_of.insert(v, idx);
            self.g.states.push(ir::StateDecl { name: full, shape, init, value: v, update: None, span });
        }
        set(&ctx.env, &name.name, Val::Tensor(v));
        Ok(())
    }

    /// A parameter or state shape: fixed positive numbers within the limits.
    fn fixed_shape(&mut self, ty: &TensorType, env: &Env, name: &str) -> R<Vec<i64>> {
        if ty.dtype == Some(ast::DType::I32) {
            return Err(Diagnostic::new("E0315", ty.span, "parameters and states are f32"));
        }
        let mut out = Vec::new();
        for d in &ty.dims {
            let ast::DimExpr::Expr(e) = d else {
                return Err(Diagnostic::new(
                    "E0313",
                    ty.span,
                    "a parameter needs a full shape; `...` is for fn arguments",
                ));
            };
            let v = self.eval(e, env)?;
            let dim = self.as_dim(&v, e.span)?;
            let Some(n) = dim.as_const() else {
                return Err(Diagnostic::new(
                    "E0320",
                    e.span,
                    format!("`{name}` needs a fixed size, found `{}`", dim.display(&self.g.symbols)),
                )
                .with_help("parameter shapes cannot use the batch symbol"));
            };
            if n < 1 {
                return Err(Diagnostic::new(
                    "E0320",
                    e.span,
                    format!("a dimension of `{name}` is {n}; it must be at least 1"),
                ));
            }
            out.push(n);
        }
        if out.len() > limits::MAX_RANK {
            return Err(Diagnostic::new(
                "E0314",
                ty.span,
                format!("rank {} is above the limit of {}", out.len(), limits::MAX_RANK),
            ));
        }
        let total = out.iter().try_fold(1i64, |a, &b| a.checked_mul(b));
        match total {
            Some(t) if t <= limits::MAX_TENSOR_ELEMENTS => Ok(out),
            _ => Err(Diagnostic::new(
                "E0321",
                ty.span,
                format!(
                    "`{name}` would have {} elements; the limit is {}",
                    total.map(|t| t.to_string()).unwrap_or_else(|| "more than 2^63".into()),
                    limits::MAX_TENSOR_ELEMENTS
                ),
            )),
        }
    }
}
