//! Numerical oracles: gradient checks (f64 central differences) of every example and
//! fixture, known-answer tests of the course formulas, second derivatives.

use nnc::gradcheck::{gradcheck, table, GradcheckOptions};
use nnc::pipeline;
use std::path::Path;

fn compile(path: &Path) -> nnc::ir::Program {
    let text = std::fs::read_to_string(path).expect("readable");
    match pipeline::compile_source(&path.display().to_string(), &text, path.parent()) {
        Ok(mut c) => c.programs.remove(0),
        Err(e) => panic!("{}", nnc::diagnostic::render(&e.diagnostics, &e.sources, Default::default())),
    }
}

fn check_file(path: &Path, opts: &GradcheckOptions) {
    let p = compile(path);
    for g in [&p.train, &p.eval] {
        if g.loss.is_none() {
            continue;
        }
        let reports = gradcheck(g, opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let worst = reports.iter().map(|r| r.max_rel_err).fold(0.0, f64::max);
        let checked: usize = reports.iter().map(|r| r.checked).sum();
        println!("{} ({:?}):\n{}", path.display(), g.mode, table(&reports, opts.tol));
        assert!(worst <= opts.tol, "{}: gradient check failed\n{}", path.display(), table(&reports, opts.tol));
        assert!(checked > 0, "{}: no coordinate was checked", path.display());
    }
}

#[test]
fn examples_gradcheck() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("examples").filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "nn")).collect();
    files.sort();
    let opts = GradcheckOptions { batch: 2, max_coords: 8, ..Default::default() };
    for f in files {
        check_file(&f, &opts);
    }
}
