//! Prints an `ast::File` as indented text with every expression fully parenthesized
//! (`nnc ir --stage ast`): a readable check of how the parser grouped things.

use super::ast::*;
use std::fmt::Write;

pub fn print(f: &File) -> String {
    let mut out = String::new();
    for item in &f.items {
        match item {
            Item::Use { path, .. } => {
                let _ = writeln!(out, "use {path:?}");
            }
            Item::Model(m) => {
                if m.args.is_empty() {
                    let _ = writeln!(out, "model {}", m.name.name);
                } else {
                    let _ = writeln!(out, "model {}({})", m.name.name, args(&m.args));
                }
                block(&mut out, &m.body, 1);
            }
            Item::Layer(l) => {
                let _ = writeln!(out, "layer {}({})", l.name.name, args(&l.args));
                block(&mut out, &l.body, 1);
            }
            Item::Fn(d) => fn_def(&mut out, d, 0),
        }
    }
    out
}

fn args(a: &[ArgDecl]) -> String {
    a.iter()
        .map(|d| {
            let ty = match &d.ty {
                ArgType::Kind(k, _) => k.name().to_string(),
                ArgType::Tensor(t) => tensor_type(t),
            };
            match &d.default {
                Some(e) => format!("{}: {ty} = {}", d.name.name, expr(e)),
                None => format!("{}: {ty}", d.name.name),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn tensor_type(t: &TensorType) -> String {
    let dims: Vec<String> = t
        .dims
        .iter()
        .map(|d| match d {
            DimExpr::Ellipsis(_) => "...".to_string(),
            DimExpr::Expr(e) => expr(e),
        })
        .collect();
    let dt = match t.dtype {
        Some(DType::I32) => "i32",
        Some(DType::F32) => "f32",
        None => "",
    };
    format!("{dt}[{}]", dims.join(", "))
}

fn fn_def(out: &mut String, d: &FnDef, depth: usize) {
    let pad = "    ".repeat(depth);
    let ret = d.ret.as_ref().map(|t| format!(" -> {}", tensor_type(t))).unwrap_or_default();
    let _ = writeln!(out, "{pad}fn {}({}){ret}", d.name.name, args(&d.args));
    block(out, &d.body, depth + 1);
}

fn block(out: &mut String, b: &Block, depth: usize) {
    let pad = "    ".repeat(depth);
    for s in &b.stmts {
        match s {
            Stmt::Input { name, ty, .. } => {
                let _ = writeln!(out, "{pad}input {}: {}", name.name, tensor_type(ty));
            }
            Stmt::Param { name, ty, init, options, .. } | Stmt::State { name, ty, init, options, .. } => {
                let kw = if matches!(s, Stmt::Param { .. }) { "param" } else { "state" };
                let init = init.as_ref().map(|e| format!(" = {}", expr(e))).unwrap_or_default();
                let opts: String = options.iter().map(|o| format!(", {} = {}", o.key.name, expr(&o.value))).collect();
                let _ = writeln!(out, "{pad}{kw} {}: {}{init}{opts}", name.name, tensor_type(ty));
            }
            Stmt::Layer { name, value, .. } => {
                let _ = writeln!(out, "{pad}layer {} = {}", name.name, expr(value));
            }
            Stmt::Output { name, value, .. } => {
                let v = value.as_ref().map(|e| format!(" = {}", expr(e))).unwrap_or_default();
                let _ = writeln!(out, "{pad}output {}{v}", name.name);
            }
            Stmt::Loss { value, .. } => {
                let _ = writeln!(out, "{pad}loss = {}", expr(value));
            }
            Stmt::Fn(d) => fn_def(out, d, depth),
            Stmt::For { var, start, end, body, .. } => {
                let _ = writeln!(out, "{pad}for {} in {}..{}", var.name, expr(start), expr(end));
                block(out, body, depth + 1);
            }
            Stmt::If { negated, cond, then, otherwise, .. } => {
                let _ = writeln!(out, "{pad}if {}{}", if *negated { "!" } else { "" }, expr(cond));
                block(out, then, depth + 1);
                if let Some(o) = otherwise {
                    let _ = writeln!(out, "{pad}else");
                    block(out, o, depth + 1);
                }
            }
            Stmt::Train { settings, .. } | Stmt::Tune { settings, .. } => {
                let _ = writeln!(out, "{pad}{}", if matches!(s, Stmt::Tune { .. }) { "tune" } else { "train" });
                for st in settings {
                    let _ = writeln!(out, "{pad}    {} = {}", st.key.name, expr(&st.value));
                }
            }
            Stmt::Update { name, value, .. } => {
                let _ = writeln!(out, "{pad}{} <- {}", name.name, expr(value));
            }
            Stmt::Assign { name, value, .. } => {
                let _ = writeln!(out, "{pad}{} = {}", name.name, expr(value));
            }
            Stmt::Teacher { name, model, path, .. } => {
                let _ = writeln!(out, "{pad}{} = {} from {}", name.name, expr(model), expr(path));
            }
            Stmt::Expr(e) => {
                let _ = writeln!(out, "{pad}{}", expr(e));
            }
        }
    }
}

pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Number(v, is_int) => {
            if *is_int {
                format!("{}", *v as i64)
            } else {
                format!("{v:?}")
            }
        }
        ExprKind::Str(s) => format!("{s:?}"),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Training => "training".into(),
        ExprKind::Ellipsis => "...".into(),
        ExprKind::Name(n) => n.clone(),
        ExprKind::List(items) => format!("[{}]", items.iter().map(expr).collect::<Vec<_>>().join(", ")),
        ExprKind::Repeat(a, b) => format!("[{}; {}]", expr(a), expr(b)),
        ExprKind::Neg(x) => format!("(-{})", expr(x)),
        ExprKind::Binary { op, lhs: a, rhs: b, .. } => format!("({} {} {})", expr(a), op.symbol(), expr(b)),
        ExprKind::Call { callee, args } => {
            let a: Vec<String> = args
                .iter()
                .map(|a| match &a.name {
                    Some(n) => format!("{} = {}", n.name, expr(&a.value)),
                    None => expr(&a.value),
                })
                .collect();
            format!("{}({})", expr(callee), a.join(", "))
        }
        ExprKind::Index { base, items } => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| match i {
                    IndexItem::Expr(e) => expr(e),
                    IndexItem::Slice { start, end, step, .. } => {
                        let o = |e: &Option<Expr>| e.as_ref().map(expr).unwrap_or_default();
                        match step {
                            Some(_) => format!("{}:{}:{}", o(start), o(end), o(step)),
                            None => format!("{}:{}", o(start), o(end)),
                        }
                    }
                })
                .collect();
            format!("{}[{}]", expr(base), parts.join(", "))
        }
        ExprKind::Field { base, name } => format!("{}.{}", expr(base), name.name),
    }
}
