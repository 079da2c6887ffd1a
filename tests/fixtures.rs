//! Data-driven tests: every `.nn` file under `tests/data/<stage>/{ok,err}/`.
//!
//! `ok` fixtures must compile; their printed output is snapshotted. `err` fixtures must
//! fail; their rendered diagnostics are snapshotted. Stages: `parse` (the AST printer)
//! and `lower` (the IR of both graphs).

use nnc::internals::diagnostic::{render, RenderOptions};
use nnc::internals::pipeline;
use std::path::Path;

fn name_of(path: &Path) -> String {
    // A stable name in diagnostics, whatever the checkout directory.
    let stage = path.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let file = path.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    format!("{stage}/{file}")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("fixture is readable UTF-8")
}

/// Compiles a fixture: Ok(printed IR) or Err(rendered diagnostics).
fn check_lower(path: &Path) -> Result<String, String> {
    let text = read(path);
    match pipeline::compile_source(&name_of(path), &text, path.parent()) {
        Ok(c) => {
            let mut out = String::new();
            for p in &c.programs {
                out.push_str(&format!("model {}\n", p.name));
                out.push_str(&nnc::internals::ir::print::print(&p.train));
                out.push_str(&nnc::internals::ir::print::print(&p.eval));
            }
            Ok(out)
        }
        Err(e) => Err(render(&e.diagnostics, &e.sources, RenderOptions { color: false })),
    }
}

fn check_parse(path: &Path) -> Result<String, String> {
    let text = read(path);
    match pipeline::parse_source(&name_of(path), &text) {
        Ok((_, ast)) => Ok(nnc::internals::syntax::print::print(&ast)),
        Err(e) => Err(render(&e.diagnostics, &e.sources, RenderOptions { color: false })),
    }
}

#[test]
fn lower_ok() {
    insta::glob!("data/lower/ok/*.nn", |path| {
        match check_lower(path) {
            Ok(ir) => insta::assert_snapshot!(ir),
            Err(d) => panic!("{} should compile:\n{d}", path.display()),
        }
    });
}

#[test]
fn lower_err() {
    insta::glob!("data/lower/err/*.nn", |path| {
        match check_lower(path) {
            Ok(_) => panic!("{} should fail to compile", path.display()),
            Err(d) => insta::assert_snapshot!(d),
        }
    });
}

#[test]
fn parse_ok() {
    insta::glob!("data/parse/ok/*.nn", |path| {
        match check_parse(path) {
            Ok(ast) => insta::assert_snapshot!(ast),
            Err(d) => panic!("{} should parse:\n{d}", path.display()),
        }
    });
}

#[test]
fn parse_err() {
    insta::glob!("data/parse/err/*.nn", |path| {
        match check_parse(path) {
            Ok(_) => panic!("{} should fail to parse", path.display()),
            Err(d) => insta::assert_snapshot!(d),
        }
    });
}

/// Every example of docs/language.md compiles, and its IR is snapshotted.
#[test]
fn examples_compile() {
    insta::glob!("../examples", "*.nn", |path| {
        match check_lower(path) {
            Ok(ir) => insta::assert_snapshot!(ir),
            Err(d) => panic!("{} should compile:\n{d}", path.display()),
        }
    });
}

/// The forward + backward graph (`nnc ir --stage grad`) of every single-op fixture.
#[test]
fn grad_stage() {
    insta::glob!("data/grad/*.nn", |path| {
        let text = read(path);
        let c = pipeline::compile_source(&name_of(path), &text, None)
            .unwrap_or_else(|e| panic!("{}", render(&e.diagnostics, &e.sources, RenderOptions { color: false })));
        let g = nnc::internals::autodiff::grad_program(&c.programs[0].train).expect("differentiable").graph;
        let errs = nnc::internals::ir::verify::verify(&g);
        assert!(errs.is_empty(), "{}: the verifier rejects the backward graph: {errs:?}", path.display());
        insta::assert_snapshot!(nnc::internals::ir::print::print(&g));
    });
}

/// The simplified training step (`nnc ir --stage opt`, batch 4) of each simplify fixture:
/// constants folded, identities applied, common subexpressions merged.
#[test]
fn simplify_stage() {
    insta::glob!("data/simplify/*.nn", |path| {
        let text = read(path);
        let c = pipeline::compile_source(&name_of(path), &text, None)
            .unwrap_or_else(|e| panic!("{}", render(&e.diagnostics, &e.sources, RenderOptions { color: false })));
        let p = &c.programs[0];
        let g = if p.train.loss.is_some() {
            pipeline::step_graph(p, 4).expect("step graph")
        } else {
            nnc::internals::runtime::executable::concrete(&p.eval, 4).expect("bind")
        };
        let s = nnc::internals::simplify::simplify(&g);
        let errs = nnc::internals::ir::verify::verify(&s);
        assert!(errs.is_empty(), "{}: the verifier rejects the simplified graph: {errs:?}", path.display());
        assert!(s.len() <= g.len());
        insta::assert_snapshot!(nnc::internals::ir::print::print(&s));
    });
}
