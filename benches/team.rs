//! What splitting work across the team of worker threads costs (`codegen::team`): a job
//! of two empty parts while the worker spins (the case inside a step, where jobs come
//! microseconds apart), and the same after the worker has parked (the first split after
//! a pause of more than the team's 1 ms spin).

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn team(c: &mut Criterion) {
    let mut group = c.benchmark_group("team");
    let noop = |p: usize| {
        black_box(p);
    };
    nnc::internals::codegen::team::run(2, &noop); // start the worker
    group.bench_function("two_parts_spinning", |b| b.iter(|| nnc::internals::codegen::team::run(2, &noop)));
    group.bench_function("two_parts_after_park", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                std::thread::sleep(Duration::from_millis(3));
                let t = Instant::now();
                nnc::internals::codegen::team::run(2, &noop);
                total += t.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, team);
criterion_main!(benches);
