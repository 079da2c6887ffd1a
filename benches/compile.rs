//! Compile-time benchmark: source text to checked IR (`nnc check`) for every example.
//! Target (issue 2): well under 50 ms each.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::Path;

fn compile_examples(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "nn"))
        .collect();
    files.sort();
    let mut group = c.benchmark_group("check");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable example");
        let name = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        group.bench_function(&name, |b| {
            b.iter(|| {
                let r = nnc::internals::pipeline::compile_source(&name, black_box(&text), Some(&dir));
                assert!(r.is_ok());
                r.ok().map(|c| c.programs.len())
            })
        });
    }
    group.finish();
}

/// Reverse-mode autodiff of the 16-block residual example (target: under 10 ms).
fn autodiff_residual(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let text = std::fs::read_to_string(dir.join("residual.nn")).expect("residual example");
    let compiled = nnc::internals::pipeline::compile_source("residual", &text, Some(&dir)).expect("compiles");
    let g = &compiled.programs[0].train;
    c.bench_function("autodiff/residual", |b| {
        b.iter(|| nnc::internals::autodiff::grad_program(black_box(g)).map(|r| r.graph.len()))
    });
}

criterion_group!(benches, compile_examples, autodiff_residual);
criterion_main!(benches);
