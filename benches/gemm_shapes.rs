//! The `gemm` crate at the MLP workload's shapes (issue 4: the large ones at 65% or more
//! of this CPU's 178 GFLOP/s fp32 peak per core, the N = 10 layer no slower than MKL's
//! 56 GFLOP/s), one thread, called as nnc's host code calls it (row-major, transposes as
//! strides). Criterion's throughput line is in "elements" = flops: read Gelem/s as
//! GFLOP/s. `n10_as_transposed` computes the same N = 10 product as Cᵀ = Bᵀ Aᵀ (M = 10),
//! the orientation nnc could choose instead.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// C[m, n] = op(A)[m, k] @ op(B)[k, n], every matrix stored row-major; `a_t` means A is
/// stored as [k, m], `b_t` B as [n, k].
fn matmul(c: &mut [f32], a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize), a_t: bool, b_t: bool) {
    let (a_rs, a_cs) = if a_t { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if b_t { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the slices hold m*k, k*n and m*n elements with these strides.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

fn shapes(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    group.sample_size(30);
    // (name, m, k, n, a_t, b_t, packed): the MLP step's products (batch 128); the LSTM
    // step's recurrent products (batch 32, hidden 128, 4 gates): forward h @ Wh and
    // backward dz @ Whᵀ, also with Wh stored transposed ("B copied", what nnc does when
    // many products read it); the CNN's per-image conv2 weight gradient dY[16, 196] @ Pᵀ
    // and the same product transposed; and `packed`: the crate told to pack every right
    // operand (`set_rhs_packing_threshold(0)`), which does not rescue the Bᵀ cases.
    let cases = [
        ("fwd1 128x784x512", 128, 784, 512, false, false, false),
        ("dW1 784x128x512 (A^T)", 784, 128, 512, true, false, false),
        ("fwd2 128x512x256", 128, 512, 256, false, false, false),
        ("dX2 128x256x512 (B^T)", 128, 256, 512, false, true, false),
        ("dW2 512x128x256 (A^T)", 512, 128, 256, true, false, false),
        ("fwd3 128x256x10", 128, 256, 10, false, false, false),
        ("dW3 256x128x10 (A^T)", 256, 128, 10, true, false, false),
        ("dX3 128x10x256 (B^T)", 128, 10, 256, false, true, false),
        ("lstm h@Wh 32x128x512", 32, 128, 512, false, false, false),
        ("lstm dz@Wh^T 32x512x128 (B^T)", 32, 512, 128, false, true, false),
        ("lstm dz@Wh^T 32x512x128 (B copied)", 32, 512, 128, false, false, false),
        ("dX2 128x256x512 (B copied)", 128, 256, 512, false, false, false),
        ("cnn dW2 16x196x72 (B^T)", 16, 196, 72, false, true, false),
        ("cnn dW2^T 72x196x16 (B^T)", 72, 196, 16, false, true, false),
        ("lstm dz@Wh^T 32x512x128 (B^T, packed)", 32, 512, 128, false, true, true),
        ("dX2 128x256x512 (B^T, packed)", 128, 256, 512, false, true, true),
    ];
    for (name, m, k, n, a_t, b_t, packed) in cases {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.01).collect();
        let mut out = vec![0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let old = gemm::get_rhs_packing_threshold();
        if packed {
            gemm::set_rhs_packing_threshold(0);
        }
        group.bench_function(name, |bch| bch.iter(|| matmul(&mut out, &a, &b, (m, k, n), a_t, b_t)));
        gemm::set_rhs_packing_threshold(old);
    }
    // fwd3 as Cᵀ[10, 128] = W3ᵀ[10, 256] @ Xᵀ[256, 128]: W3 is stored [256, 10] (so Aᵀ),
    // X [128, 256] (so Bᵀ); the result would be read transposed.
    let (m, k, n) = (10, 256, 128);
    let w: Vec<f32> = (0..k * m).map(|i| (i % 13) as f32 * 0.01).collect();
    let x: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.01).collect();
    let mut out = vec![0f32; m * n];
    group.throughput(Throughput::Elements((2 * m * k * n) as u64));
    group.bench_function("n10_as_transposed 10x256x128", |bch| {
        bch.iter(|| matmul(&mut out, &w, &x, (m, k, n), true, true))
    });
    group.finish();
}

criterion_group!(benches, shapes);
criterion_main!(benches);
