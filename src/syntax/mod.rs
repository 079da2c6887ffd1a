//! Parsing: `.nn` source text to `ast::File`.
//!
//! Three steps: `prepare` blanks comments and the newlines inside `( )` / `[ ]` (byte for
//! byte, so spans stay true) and enforces the size and nesting limits; pest parses with
//! `grammar/nn.pest`; `build` turns pest pairs into the AST, folding operator chains
//! iteratively under a depth limit. pest types never leave this module.

pub mod ast;
pub mod print;

use crate::diagnostic::{Diagnostic, FileId, Span};
use crate::limits;
use ast::*;
use pest::iterators::Pair;
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/nn.pest"]
struct NnParser;

/// Parses one source file. `file` is the id its spans will carry.
pub fn parse(source: &str, file: FileId) -> Result<ast::File, Diagnostic> {
    parse_at(source, file, 0)
}

/// `parse` of a piece of a file that starts at byte `offset` of it: the AST's spans are
/// positions in the whole file (the prelude parses its items one at a time). Diagnostics
/// of the piece itself (bracket balance, syntax errors) are positions in the piece.
pub fn parse_at(source: &str, file: FileId, offset: usize) -> Result<ast::File, Diagnostic> {
    let prepared = prepare(source, file)?;
    pest::set_call_limit(std::num::NonZeroUsize::new(limits::PARSER_CALL_LIMIT));
    let mut pairs = NnParser::parse(Rule::file, &prepared).map_err(|e| syntax_error(e, source, file))?;
    let b = Builder { file, offset };
    let file_pair = pairs.next().ok_or_else(|| Diagnostic::new("E0100", Span::new(file, 0, 0), "empty parse"))?;
    let mut items = Vec::new();
    for p in file_pair.into_inner() {
        match p.as_rule() {
            Rule::EOI | Rule::sep => {}
            _ => items.push(b.item(p)?),
        }
    }
    Ok(ast::File { items })
}

/// Parses a single expression (used for `--set key=value` on the command line).
pub fn parse_expr(source: &str, file: FileId) -> Result<Expr, Diagnostic> {
    let prepared = prepare(source, file)?;
    pest::set_call_limit(std::num::NonZeroUsize::new(limits::PARSER_CALL_LIMIT));
    let wrapped = prepared.to_string();
    let mut pairs = NnParser::parse(Rule::expr, &wrapped).map_err(|e| syntax_error(e, source, file))?;
    let p = pairs.next().ok_or_else(|| Diagnostic::new("E0100", Span::new(file, 0, 0), "expected an expression"))?;
    if p.as_span().end() != wrapped.trim_end().len() {
        let at = p.as_span().end();
        return Err(Diagnostic::new("E0100", Span::new(file, at, source.len()), "unexpected text after the value"));
    }
    Builder { file, offset: 0 }.expr(p)
}

/// Blanks comments, joins lines inside `( )` and `[ ]`, and checks the limits.
fn prepare(source: &str, file: FileId) -> Result<String, Diagnostic> {
    if source.len() > limits::MAX_SOURCE_BYTES {
        return Err(Diagnostic::new(
            "E0101",
            Span::new(file, 0, 0),
            format!("source file is {} bytes; the limit is {} bytes", source.len(), limits::MAX_SOURCE_BYTES),
        ));
    }
    let bytes = source.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut stack: Vec<(u8, usize)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    out.push(b' ');
                    i += 1;
                }
                continue;
            }
            b'"' => {
                out.push(c);
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    out.push(bytes[i]);
                    i += 1;
                }
                if i < bytes.len() && bytes[i] == b'"' {
                    out.push(b'"');
                    i += 1;
                } else {
                    let start = out.len() - 1 - (out.iter().rev().take_while(|&&b| b != b'"').count());
                    return Err(Diagnostic::new("E0110", Span::new(file, start, i), "unclosed string")
                        .with_label("this string never ends")
                        .with_help("strings end with `\"` on the same line"));
                }
                continue;
            }
            b'(' | b'[' | b'{' => {
                stack.push((c, i));
                if stack.len() > limits::MAX_NESTING {
                    return Err(Diagnostic::new(
                        "E0102",
                        Span::new(file, i, i + 1),
                        format!("brackets nested more than {} deep", limits::MAX_NESTING),
                    )
                    .with_label("too deep here")
                    .with_help("split the expression into named steps"));
                }
                out.push(c);
            }
            b')' | b']' | b'}' => {
                let want = match c {
                    b')' => b'(',
                    b']' => b'[',
                    _ => b'{',
                };
                match stack.pop() {
                    Some((open, _)) if open == want => {}
                    Some((open, at)) => {
                        return Err(Diagnostic::new(
                            "E0109",
                            Span::new(file, i, i + 1),
                            format!("`{}` does not close `{}`", c as char, open as char),
                        )
                        .with_label(format!("expected `{}`", closer(open)))
                        .with_note(Span::new(file, at, at + 1), format!("`{}` opened here", open as char)));
                    }
                    None => {
                        return Err(Diagnostic::new(
                            "E0109",
                            Span::new(file, i, i + 1),
                            format!("unmatched `{}`", c as char),
                        )
                        .with_label("nothing to close here"));
                    }
                }
                out.push(c);
            }
            b'\n' if matches!(stack.last(), Some((b'(' | b'[', _))) => out.push(b' '),
            b'\r' if matches!(stack.last(), Some((b'(' | b'[', _))) => out.push(b' '),
            _ => out.push(c),
        }
        i += 1;
    }
    if let Some(&(open, at)) = stack.last() {
        return Err(Diagnostic::new("E0109", Span::new(file, at, at + 1), format!("unclosed `{}`", open as char))
            .with_label(format!("this `{}` is never closed", open as char))
            .with_help(format!("add the matching `{}`", closer(open))));
    }
    // Only ASCII bytes were replaced by ASCII bytes, so the text is still UTF-8.
    String::from_utf8(out).map_err(|_| Diagnostic::new("E0103", Span::new(file, 0, 0), "source is not valid UTF-8"))
}

fn closer(open: u8) -> char {
    match open {
        b'(' => ')',
        b'[' => ']',
        _ => '}',
    }
}

fn rule_name(r: &Rule) -> Option<&'static str> {
    Some(match r {
        Rule::ident => "a name",
        Rule::number => "a number",
        Rule::string => "a string",
        Rule::expr | Rule::additive | Rule::multiplicative | Rule::unary | Rule::power | Rule::postfix => {
            "an expression"
        }
        Rule::cmp_op | Rule::add_op | Rule::mul_op | Rule::pow_op => "an operator",
        Rule::block => "`{`",
        Rule::shape | Rule::tensor_type => "a shape like `[B, 64]`",
        Rule::kind => "a kind (int, float, bool, fn, init, str, list)",
        Rule::dtype => "`f32` or `i32`",
        Rule::kw_model => "`model`",
        Rule::kw_layer => "`layer`",
        Rule::kw_fn => "`fn`",
        Rule::kw_use => "`use`",
        Rule::kw_in => "`in`",
        Rule::kw_else => "`else`",
        Rule::kw_training => "`training`",
        Rule::setting => "a setting `key = value`",
        Rule::arg_decl | Rule::arg_decls => "an argument declaration `name: type`",
        Rule::EOI => "end of file",
        Rule::sep => "a new line",
        Rule::range_op => "`..`",
        Rule::call => "`(`",
        Rule::index => "`[`",
        Rule::field => "`.`",
        Rule::ret_type => "`->`",
        Rule::named_arg => "an argument",
        Rule::slice | Rule::slice_bound => "a slice",
        Rule::dim => "a dimension",
        Rule::input_stmt
        | Rule::output_stmt
        | Rule::param_stmt
        | Rule::state_stmt
        | Rule::layer_stmt
        | Rule::loss_stmt
        | Rule::for_stmt
        | Rule::if_stmt
        | Rule::train_stmt
        | Rule::tune_stmt
        | Rule::update_stmt
        | Rule::teacher_stmt
        | Rule::assign_stmt
        | Rule::expr_stmt
        | Rule::fn_item => "a statement",
        Rule::model_item | Rule::layer_item | Rule::use_item => "an item (`model`, `layer`, `fn` or `use`)",
        _ => return None,
    })
}

fn syntax_error(e: pest::error::Error<Rule>, source: &str, file: FileId) -> Diagnostic {
    let (start, end) = match e.location {
        pest::error::InputLocation::Pos(p) => (p, p),
        pest::error::InputLocation::Span((s, e)) => (s, e),
    };
    let found = found_at(source, start);
    let end = if end > start {
        end
    } else if found == "end of line" || found.is_empty() {
        start
    } else {
        (start + found.len()).min(source.len())
    };
    let span = Span::new(file, start, end.max(start));
    match e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<&str> = positives.iter().filter_map(rule_name).collect();
            names.sort_unstable();
            names.dedup();
            let expected = match names.len() {
                0 => "something else".to_string(),
                1 => names[0].to_string(),
                n => format!("{} or {}", names[..n - 1].join(", "), names[n - 1]),
            };
            let found_desc = match found.as_str() {
                "" => "end of file".to_string(),
                "end of line" => "the end of the line".to_string(),
                f => format!("`{f}`"),
            };
            Diagnostic::new("E0100", span, format!("syntax error: expected {expected}, found {found_desc}"))
                .with_label(format!("expected {expected}"))
        }
        pest::error::ErrorVariant::CustomError { message } => {
            if message.contains("call limit") {
                Diagnostic::new("E0104", span, "the parser gave up: the input is too complex")
                    .with_help("split long expressions into named steps")
            } else {
                Diagnostic::new("E0100", span, format!("syntax error: {message}"))
            }
        }
    }
}

/// The token-ish text at a byte offset, for "found `...`".
fn found_at(source: &str, at: usize) -> String {
    let rest = source.get(at..).unwrap_or("");
    let mut it = rest.char_indices();
    let Some((_, c)) = it.next() else { return String::new() };
    if c == '\n' {
        return "end of line".to_string();
    }
    if c.is_alphanumeric() || c == '_' {
        return rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').take(24).collect();
    }
    c.to_string()
}

struct Builder {
    file: FileId,
    /// Where the parsed text starts in its file (`parse_at`).
    offset: usize,
}

type R<T> = Result<T, Diagnostic>;

fn bug(span: Span, what: &str) -> Diagnostic {
    Diagnostic::new("E0999", span, format!("internal parser error: {what}"))
}

impl Builder {
    fn span(&self, p: &Pair<Rule>) -> Span {
        Span::new(self.file, self.offset + p.as_span().start(), self.offset + p.as_span().end())
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        Ident { name: p.as_str().to_string(), span: self.span(&p) }
    }

    fn item(&self, p: Pair<Rule>) -> R<Item> {
        let span = self.span(&p);
        let rule = p.as_rule();
        let mut inner = p.into_inner();
        inner.next(); // the keyword
        match rule {
            Rule::use_item => {
                let s = inner.next().ok_or_else(|| bug(span, "use"))?;
                let text = s.as_str();
                Ok(Item::Use { path: text[1..text.len() - 1].to_string(), span })
            }
            Rule::model_item => {
                let name = self.ident(inner.next().ok_or_else(|| bug(span, "model name"))?);
                let (args, body) = self.args_and_body(span, inner, "model body")?;
                Ok(Item::Model(ModelDef { name, args, body, span }))
            }
            Rule::layer_item => {
                let name = self.ident(inner.next().ok_or_else(|| bug(span, "layer name"))?);
                let (args, body) = self.args_and_body(span, inner, "layer body")?;
                Ok(Item::Layer(LayerDef { name, args, body, span }))
            }
            Rule::fn_item => Ok(Item::Fn(self.fn_def(span, inner)?)),
            _ => Err(bug(span, "unknown item")),
        }
    }

    /// The optional `(args)` and the body of a `model` or `layer` item.
    fn args_and_body(&self, span: Span, inner: pest::iterators::Pairs<Rule>, what: &str) -> R<(Vec<ArgDecl>, Block)> {
        let mut args = Vec::new();
        let mut body = None;
        for q in inner {
            match q.as_rule() {
                Rule::arg_decls => args = self.arg_decls(q)?,
                Rule::block => body = Some(self.block(q)?),
                _ => {}
            }
        }
        Ok((args, body.ok_or_else(|| bug(span, what))?))
    }

    fn fn_def(&self, span: Span, mut inner: pest::iterators::Pairs<Rule>) -> R<FnDef> {
        let name = self.ident(inner.next().ok_or_else(|| bug(span, "fn name"))?);
        let mut args = Vec::new();
        let mut ret = None;
        let mut body = None;
        for q in inner {
            match q.as_rule() {
                Rule::arg_decls => args = self.arg_decls(q)?,
                Rule::ret_type => {
                    let t = q.into_inner().next().ok_or_else(|| bug(span, "return type"))?;
                    ret = Some(self.tensor_type(t)?);
                }
                Rule::block => body = Some(self.block(q)?),
                _ => {}
            }
        }
        let body = body.ok_or_else(|| bug(span, "fn body"))?;
        Ok(FnDef { name, args, ret, body, span })
    }

    fn arg_decls(&self, p: Pair<Rule>) -> R<Vec<ArgDecl>> {
        let mut out = Vec::new();
        for d in p.into_inner() {
            let span = self.span(&d);
            let mut inner = d.into_inner();
            let name = self.ident(inner.next().ok_or_else(|| bug(span, "arg name"))?);
            let t = inner.next().ok_or_else(|| bug(span, "arg type"))?;
            let ty = match t.as_rule() {
                Rule::kind => {
                    let k = match t.as_str() {
                        "int" => Kind::Int,
                        "float" => Kind::Float,
                        "bool" => Kind::Bool,
                        "fn" => Kind::Fn,
                        "init" => Kind::Init,
                        "str" => Kind::Str,
                        _ => Kind::List,
                    };
                    ArgType::Kind(k, self.span(&t))
                }
                _ => ArgType::Tensor(self.tensor_type(t)?),
            };
            let default = match inner.next() {
                Some(e) => Some(self.expr(e)?),
                None => None,
            };
            out.push(ArgDecl { name, ty, default, span });
        }
        Ok(out)
    }

    fn tensor_type(&self, p: Pair<Rule>) -> R<TensorType> {
        let span = self.span(&p);
        let mut dtype = None;
        let mut dims = Vec::new();
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::dtype => dtype = Some(if q.as_str() == "i32" { DType::I32 } else { DType::F32 }),
                Rule::shape => {
                    for d in q.into_inner() {
                        let inner = d.into_inner().next().ok_or_else(|| bug(span, "dim"))?;
                        dims.push(match inner.as_rule() {
                            Rule::ellipsis => DimExpr::Ellipsis(self.span(&inner)),
                            _ => DimExpr::Expr(self.expr(inner)?),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(TensorType { dtype, dims, span })
    }

    fn block(&self, p: Pair<Rule>) -> R<Block> {
        let span = self.span(&p);
        let mut stmts = Vec::new();
        for s in p.into_inner() {
            if s.as_rule() != Rule::sep {
                stmts.push(self.stmt(s)?);
            }
        }
        Ok(Block { stmts, span })
    }

    fn stmt(&self, p: Pair<Rule>) -> R<Stmt> {
        let span = self.span(&p);
        let rule = p.as_rule();
        let mut inner = p.into_inner();
        let mut next = |what: &str| inner.next().ok_or_else(|| bug(span, what));
        Ok(match rule {
            Rule::input_stmt => {
                next("kw")?;
                let name = self.ident(next("name")?);
                let ty = self.tensor_type(next("type")?)?;
                Stmt::Input { name, ty, span }
            }
            Rule::param_stmt | Rule::state_stmt => {
                next("kw")?;
                let name = self.ident(next("name")?);
                let ty = self.tensor_type(next("type")?)?;
                let (mut init, mut options) = (None, Vec::new());
                for q in inner {
                    if q.as_rule() == Rule::setting {
                        options.push(self.setting(q)?);
                    } else {
                        init = Some(self.expr(q)?);
                    }
                }
                if rule == Rule::param_stmt {
                    Stmt::Param { name, ty, init, options, span }
                } else {
                    Stmt::State { name, ty, init, options, span }
                }
            }
            Rule::layer_stmt => {
                next("kw")?;
                let name = self.ident(next("name")?);
                let value = self.expr(next("value")?)?;
                Stmt::Layer { name, value, span }
            }
            Rule::output_stmt => {
                next("kw")?;
                let name = self.ident(next("name")?);
                let value = match inner.next() {
                    Some(e) => Some(self.expr(e)?),
                    None => None,
                };
                Stmt::Output { name, value, span }
            }
            Rule::loss_stmt => {
                next("kw")?;
                Stmt::Loss { value: self.expr(next("value")?)?, span }
            }
            Rule::fn_item => {
                next("kw")?;
                Stmt::Fn(self.fn_def(span, inner)?)
            }
            Rule::for_stmt => {
                next("kw")?;
                let var = self.ident(next("var")?);
                next("in")?;
                let start = self.expr(next("start")?)?;
                next("..")?;
                let end = self.expr(next("end")?)?;
                let body = self.block(next("body")?)?;
                Stmt::For { var, start, end, body, span }
            }
            Rule::if_stmt => {
                next("kw")?;
                let mut cond_parts = next("cond")?.into_inner();
                let mut first = cond_parts.next().ok_or_else(|| bug(span, "cond"))?;
                let negated = first.as_rule() == Rule::not_op;
                if negated {
                    first = cond_parts.next().ok_or_else(|| bug(span, "cond"))?;
                }
                let cond = self.expr(first)?;
                let then = self.block(next("then")?)?;
                let otherwise = match inner.next() {
                    Some(_else_kw) => Some(self.block(inner.next().ok_or_else(|| bug(span, "else"))?)?),
                    None => None,
                };
                Stmt::If { negated, cond, then, otherwise, span }
            }
            Rule::train_stmt | Rule::tune_stmt => {
                let mut settings = Vec::new();
                for q in inner {
                    if q.as_rule() == Rule::setting {
                        settings.push(self.setting(q)?);
                    }
                }
                if rule == Rule::tune_stmt {
                    Stmt::Tune { settings, span }
                } else {
                    Stmt::Train { settings, span }
                }
            }
            Rule::update_stmt | Rule::assign_stmt => {
                let name = self.ident(next("name")?);
                let value = self.expr(next("value")?)?;
                if rule == Rule::update_stmt {
                    Stmt::Update { name, value, span }
                } else {
                    Stmt::Assign { name, value, span }
                }
            }
            Rule::teacher_stmt => {
                let name = self.ident(next("name")?);
                let model = self.expr(next("model")?)?;
                next("from")?;
                let path = self.expr(next("path")?)?;
                Stmt::Teacher { name, model, path, span }
            }
            Rule::expr_stmt => Stmt::Expr(self.expr(next("expr")?)?),
            _ => return Err(bug(span, "unknown statement")),
        })
    }

    fn too_deep(&self, span: Span) -> Diagnostic {
        Diagnostic::new("E0105", span, format!("expression nested more than {} levels deep", limits::MAX_EXPR_DEPTH))
            .with_help("split the expression into named steps")
    }

    /// Any expression-level rule. Binary chains are folded left to right in a loop.
    /// `key = value` (train and tune blocks, `param` options).
    fn setting(&self, q: Pair<Rule>) -> R<Setting> {
        let span = self.span(&q);
        let mut si = q.into_inner();
        let key = self.ident(si.next().ok_or_else(|| bug(span, "key"))?);
        let value = self.expr(si.next().ok_or_else(|| bug(span, "value"))?)?;
        Ok(Setting { key, value, span })
    }

    fn expr(&self, p: Pair<Rule>) -> R<Expr> {
        Ok(self.expr_d(p)?.0)
    }

    /// Returns the expression and its depth.
    fn expr_d(&self, p: Pair<Rule>) -> R<(Expr, usize)> {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::expr | Rule::additive | Rule::multiplicative => {
                let mut inner = p.into_inner();
                let (mut acc, mut depth) = self.expr_d(inner.next().ok_or_else(|| bug(span, "operand"))?)?;
                while let Some(op) = inner.next() {
                    let op_span = self.span(&op);
                    let bop = match op.as_str() {
                        "+" => BinOp::Add,
                        "-" => BinOp::Sub,
                        "*" => BinOp::Mul,
                        "/" => BinOp::Div,
                        "@" => BinOp::MatMul,
                        "<" => BinOp::Lt,
                        "<=" => BinOp::Le,
                        ">" => BinOp::Gt,
                        ">=" => BinOp::Ge,
                        "==" => BinOp::Eq,
                        _ => BinOp::Ne,
                    };
                    let (rhs, rd) = self.expr_d(inner.next().ok_or_else(|| bug(span, "rhs"))?)?;
                    depth = depth.max(rd) + 1;
                    if depth > limits::MAX_EXPR_DEPTH {
                        return Err(self.too_deep(span));
                    }
                    let s = acc.span.to(rhs.span);
                    acc = Expr {
                        kind: ExprKind::Binary { op: bop, op_span, lhs: Box::new(acc), rhs: Box::new(rhs) },
                        span: s,
                    };
                }
                Ok((acc, depth))
            }
            Rule::unary => {
                let mut negs = Vec::new();
                let mut operand = None;
                for q in p.into_inner() {
                    if q.as_rule() == Rule::neg {
                        negs.push(self.span(&q));
                    } else {
                        operand = Some(self.expr_d(q)?);
                    }
                }
                let (mut e, mut depth) = operand.ok_or_else(|| bug(span, "unary operand"))?;
                for s in negs.into_iter().rev() {
                    depth += 1;
                    if depth > limits::MAX_EXPR_DEPTH {
                        return Err(self.too_deep(span));
                    }
                    let sp = s.to(e.span);
                    e = Expr { kind: ExprKind::Neg(Box::new(e)), span: sp };
                }
                Ok((e, depth))
            }
            Rule::power => {
                // `a ^ -b ^ c` is `a ^ (-(b ^ c))`: `^` is right-associative and a minus
                // after `^` applies to everything to its right. Collect the operands with
                // their minus signs and operator spans, then fold from the right.
                let mut operands: Vec<(Vec<Span>, Expr, usize)> = Vec::new();
                let mut ops: Vec<Span> = Vec::new();
                let mut negs = Vec::new();
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::pow_op => ops.push(self.span(&q)),
                        Rule::neg => negs.push(self.span(&q)),
                        _ => {
                            let (e, d) = self.expr_d(q)?;
                            operands.push((std::mem::take(&mut negs), e, d));
                        }
                    }
                }
                let (last_negs, mut acc, mut depth) = operands.pop().ok_or_else(|| bug(span, "power"))?;
                let mut pending = last_negs;
                loop {
                    for s in pending.drain(..).rev() {
                        depth += 1;
                        let sp = s.to(acc.span);
                        acc = Expr { kind: ExprKind::Neg(Box::new(acc)), span: sp };
                    }
                    if depth > limits::MAX_EXPR_DEPTH {
                        return Err(self.too_deep(span));
                    }
                    let Some((negs_of_base, base, bd)) = operands.pop() else { break };
                    let op_span = ops.pop().unwrap_or(base.span);
                    depth = depth.max(bd) + 1;
                    let sp = base.span.to(acc.span);
                    acc = Expr {
                        kind: ExprKind::Binary { op: BinOp::Pow, op_span, lhs: Box::new(base), rhs: Box::new(acc) },
                        span: sp,
                    };
                    pending = negs_of_base;
                }
                Ok((acc, depth))
            }
            Rule::postfix => {
                let mut inner = p.into_inner();
                let (mut e, mut depth) = self.expr_d(inner.next().ok_or_else(|| bug(span, "primary"))?)?;
                for q in inner {
                    let qspan = self.span(&q);
                    let full = e.span.to(qspan);
                    depth += 1;
                    if depth > limits::MAX_EXPR_DEPTH {
                        return Err(self.too_deep(span));
                    }
                    e = match q.as_rule() {
                        Rule::call => {
                            let mut args = Vec::new();
                            for a in q.into_inner() {
                                let aspan = self.span(&a);
                                if a.as_rule() == Rule::named_arg {
                                    let mut ai = a.into_inner();
                                    let name = self.ident(ai.next().ok_or_else(|| bug(aspan, "arg"))?);
                                    let (value, d) = self.expr_d(ai.next().ok_or_else(|| bug(aspan, "arg"))?)?;
                                    depth = depth.max(d + 1);
                                    args.push(Arg { name: Some(name), value, span: aspan });
                                } else {
                                    let (value, d) = self.expr_d(a)?;
                                    depth = depth.max(d + 1);
                                    args.push(Arg { name: None, value, span: aspan });
                                }
                            }
                            Expr { kind: ExprKind::Call { callee: Box::new(e), args }, span: full }
                        }
                        Rule::index => {
                            let mut items = Vec::new();
                            for it in q.into_inner() {
                                let ispan = self.span(&it);
                                if it.as_rule() == Rule::slice {
                                    let mut bounds = Vec::new();
                                    for b in it.into_inner() {
                                        bounds.push(match b.into_inner().next() {
                                            Some(x) => Some(self.expr(x)?),
                                            None => None,
                                        });
                                    }
                                    let mut bi = bounds.into_iter();
                                    items.push(IndexItem::Slice {
                                        start: bi.next().flatten(),
                                        end: bi.next().flatten(),
                                        step: bi.next().flatten(),
                                        span: ispan,
                                    });
                                } else {
                                    let (x, d) = self.expr_d(it)?;
                                    depth = depth.max(d + 1);
                                    items.push(IndexItem::Expr(x));
                                }
                            }
                            Expr { kind: ExprKind::Index { base: Box::new(e), items }, span: full }
                        }
                        _ => {
                            let name = self.ident(q.into_inner().next().ok_or_else(|| bug(qspan, "field"))?);
                            Expr { kind: ExprKind::Field { base: Box::new(e), name }, span: full }
                        }
                    };
                    if depth > limits::MAX_EXPR_DEPTH {
                        return Err(self.too_deep(span));
                    }
                }
                Ok((e, depth))
            }
            Rule::number => {
                let text = p.as_str();
                let is_int = !text.contains(['.', 'e', 'E']);
                let v: f64 = text
                    .parse()
                    .map_err(|_| Diagnostic::new("E0106", span, format!("`{text}` is not a valid number")))?;
                if !v.is_finite() {
                    return Err(Diagnostic::new("E0106", span, format!("`{text}` is too large for a number")));
                }
                Ok((Expr { kind: ExprKind::Number(v, is_int), span }, 1))
            }
            Rule::string => {
                let t = p.as_str();
                Ok((Expr { kind: ExprKind::Str(t[1..t.len() - 1].to_string()), span }, 1))
            }
            Rule::kw_true => Ok((Expr { kind: ExprKind::Bool(true), span }, 1)),
            Rule::kw_false => Ok((Expr { kind: ExprKind::Bool(false), span }, 1)),
            Rule::kw_training => Ok((Expr { kind: ExprKind::Training, span }, 1)),
            Rule::ellipsis => Ok((Expr { kind: ExprKind::Ellipsis, span }, 1)),
            Rule::ident => Ok((Expr { kind: ExprKind::Name(p.as_str().to_string()), span }, 1)),
            Rule::paren => {
                let (e, d) = self.expr_d(p.into_inner().next().ok_or_else(|| bug(span, "paren"))?)?;
                // Keep the parenthesised span for better underlines.
                Ok((Expr { kind: e.kind, span }, d))
            }
            Rule::list => {
                let mut items = Vec::new();
                let mut depth = 1;
                for q in p.into_inner() {
                    let (e, d) = self.expr_d(q)?;
                    depth = depth.max(d + 1);
                    items.push(e);
                }
                Ok((Expr { kind: ExprKind::List(items), span }, depth))
            }
            Rule::repeat_list => {
                let mut inner = p.into_inner();
                let (a, da) = self.expr_d(inner.next().ok_or_else(|| bug(span, "repeat"))?)?;
                let (b, db) = self.expr_d(inner.next().ok_or_else(|| bug(span, "repeat"))?)?;
                Ok((Expr { kind: ExprKind::Repeat(Box::new(a), Box::new(b)), span }, da.max(db) + 1))
            }
            _ => Err(bug(span, "unknown expression")),
        }
    }
}
