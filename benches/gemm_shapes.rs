//! Matrix products at the MLP workload's shapes (issue 4: the large ones at 65% or more
//! of this CPU's 178 GFLOP/s fp32 peak per core, the N = 10 layer no slower than MKL's
//! 56 GFLOP/s), one thread, called as nnc's host code calls them (row-major, transposes
//! as strides): each shape through `gemm::gemm`, then through nnc's own driver over the
//! crate's microkernels (`nnc driver`, src/codegen/gemm.rs, which nnc's steps use; its
//! result is checked against the crate's). Criterion's throughput line is in
//! "elements" = flops: read Gelem/s as GFLOP/s. `n10_as_transposed` computes the same
//! N = 10 product as Cᵀ = Bᵀ Aᵀ (M = 10); the `n10 ...` lines call the crate's AVX-512
//! kernels directly in three ways (the experiments behind the driver's choices).

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

/// `matmul` through nnc's own driver over the crate's microkernels (src/codegen/gemm.rs),
/// with a workspace sized once.
fn driver(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    a_t: bool,
    b_t: bool,
    ws: &mut Vec<f32>,
) {
    use nnc::internals::codegen::gemm;
    let p = gemm::Product::row_major((m, k, n), a.as_ptr(), a_t, b.as_ptr(), b_t, c.as_mut_ptr());
    let len = gemm::workspace_len(&p);
    if ws.len() < len {
        ws.resize(len, 0.0);
    }
    // SAFETY: the slices hold m*k, k*n and m*n elements with these strides, ws `len`.
    unsafe { gemm::run(&p, ws.as_mut_ptr(), ws.len()) }
}

fn shapes(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    group.sample_size(30);
    // (name, m, k, n, a_t, b_t, packed): the MLP step's products (batch 128); the LSTM
    // step's recurrent products (batch 32, hidden 128, 4 gates): forward h @ Wh and
    // backward dz @ Whᵀ, also with Wh stored transposed ("B copied", what nnc does when
    // many products read it), and the same at hidden 512 (a 4 MB Wh, rows 8 KB apart); the CNN's per-image conv2 weight gradient dY[16, 196] @ Pᵀ
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
        ("lstm512 h@Wh 32x512x2048", 32, 512, 2048, false, false, false),
        ("lstm512 dz@Wh^T 32x2048x512 (B^T)", 32, 2048, 512, false, true, false),
        ("lstm512 dz@Wh^T 32x2048x512 (B copied)", 32, 2048, 512, false, false, false),
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
        if !packed {
            let want = out.clone();
            let mut ws = vec![0f32; 0];
            group.bench_function(format!("{name} nnc driver"), |bch| {
                bch.iter(|| driver(&mut out, &a, &b, (m, k, n), a_t, b_t, &mut ws))
            });
            // Dot products sum in another order than the crate's kernels.
            for (x, y) in out.iter().zip(&want) {
                assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{name}: the driver gives {x}, the crate {y}");
            }
        }
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
    n10_microkernels(&mut group);
    group.finish();
}

/// The crate's microkernel signature (`gemm_common::microkernel::MicroKernelFn<f32>`).
type Microkernel = unsafe fn(
    usize,
    usize,
    usize,
    *mut f32,
    *const f32,
    *const f32,
    isize,
    isize,
    isize,
    isize,
    isize,
    f32,
    f32,
    u8,
    bool,
    bool,
    bool,
    *const f32,
);

/// One call of microkernel `f`: dst (m x n) = lhs (m x k, rows contiguous, columns
/// `lhs_cs` apart) @ rhs (element (i, j) at `i * rhs_rs + j * rhs_cs`), overwriting dst.
#[allow(clippy::too_many_arguments)]
fn ukr(
    f: Microkernel,
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_cs, dst_rs): (isize, isize),
    lhs: *const f32,
    lhs_cs: isize,
    rhs: *const f32,
    (rhs_rs, rhs_cs): (isize, isize),
) {
    // SAFETY: the callers pass pointers to buffers of these shapes and strides.
    unsafe {
        f(
            m,
            n,
            k,
            dst,
            lhs,
            rhs,
            dst_cs,
            dst_rs,
            lhs_cs,
            rhs_rs,
            rhs_cs,
            0.0,
            1.0,
            0,
            false,
            false,
            false,
            std::ptr::null(),
        )
    }
}

/// The N = 10 product through the crate's own AVX-512 microkernels, called directly
/// (issue 4's plan for the N = 10 target): with the 10 outputs as the kernel's rows (W3ᵀ
/// packed to 16 rows, then x1x6 kernels over the activations as they are stored), and
/// with the 128 batch rows as the kernel's rows (x4 kernels), which needs the activations
/// packed in 64-row panels first; `x4 kernels only` times the kernels on pre-packed
/// panels. Both give the crate's result exactly (asserted).
fn n10_microkernels(group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>) {
    use gemm_f32::microkernel::avx512f::f32 as uk;
    if !std::arch::is_x86_feature_detected!("avx512f") {
        return;
    }
    let (m, k, n) = (128usize, 256usize, 10usize);
    let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 13) as f32 * 0.01 - 0.05).collect();
    let w: Vec<f32> = (0..k * n).map(|i| ((i * 104_729) % 7) as f32 * 0.01 - 0.03).collect();
    let mut want = vec![0f32; m * n];
    matmul(&mut want, &x, &w, (m, k, n), false, false);
    let mut c = vec![0f32; m * n];
    let mut packed_w = vec![0f32; k * 16];
    let mut rows_10 = |c: &mut [f32]| {
        for kk in 0..k {
            packed_w[kk * 16..kk * 16 + n].copy_from_slice(&w[kk * n..kk * n + n]);
        }
        for j in (0..m).step_by(uk::NR) {
            let nb = uk::NR.min(m - j);
            // dst: column j.. of the [10, 128] column-major result (C row-major); lhs 16 x k
            // packed; rhs the activations' rows j.. (k contiguous).
            ukr(
                uk::UKR[0][nb - 1],
                (n, nb, k),
                c[j * n..].as_mut_ptr(),
                (n as isize, 1),
                packed_w.as_ptr(),
                16,
                x[j * k..].as_ptr(),
                (1, k as isize),
            );
        }
    };
    rows_10(&mut c);
    assert_eq!(c, want, "x1x6 microkernels");
    group.throughput(criterion::Throughput::Elements((2 * m * k * n) as u64));
    group.bench_function("n10 x1x6 microkernels (W3 packed)", |bch| bch.iter(|| rows_10(&mut c)));

    let mut panels = vec![0f32; m * k];
    let pack = |panels: &mut [f32]| {
        for i in 0..m {
            let (p, r) = (i / 64, i % 64);
            for kk in 0..k {
                panels[p * 64 * k + kk * 64 + r] = x[i * k + kk];
            }
        }
    };
    let kernels = |c: &mut [f32], panels: &[f32]| {
        for p in 0..m / 64 {
            for j in (0..n).step_by(uk::NR) {
                let nb = uk::NR.min(n - j);
                // dst: rows p*64.. of the row-major [128, 10] result; lhs a 64 x k panel;
                // rhs W3's columns j.. .
                let dst = c[p * 64 * n + j..].as_mut_ptr();
                ukr(
                    uk::UKR[3][nb - 1],
                    (64, nb, k),
                    dst,
                    (1, n as isize),
                    panels[p * 64 * k..].as_ptr(),
                    64,
                    w[j..].as_ptr(),
                    (n as isize, 1),
                );
            }
        }
    };
    pack(&mut panels);
    kernels(&mut c, &panels);
    assert_eq!(c, want, "x4 microkernels");
    group.bench_function("n10 x4 microkernels, activations packed by a loop", |bch| {
        bch.iter(|| {
            pack(&mut panels);
            kernels(&mut c, &panels)
        })
    });
    group.bench_function("n10 x4 microkernels only (panels ready)", |bch| bch.iter(|| kernels(&mut c, &panels)));

    // Dot products along k: the crate's horizontal kernels (4 x 4 outputs each) on the
    // activations' rows and W3's columns, copied contiguous first.
    let mut wt = vec![0f32; n * k];
    for kk in 0..k {
        for j in 0..n {
            wt[j * k + kk] = w[kk * n + j];
        }
    }
    let dots = |c: &mut [f32]| {
        for i in (0..m).step_by(uk::H_M) {
            for j in (0..n).step_by(uk::H_N) {
                let (mb, nb) = (uk::H_M.min(m - i), uk::H_N.min(n - j));
                // SAFETY: the blocks lie inside x, wt and c.
                unsafe {
                    uk::H_UKR[mb - 1][nb - 1](
                        k,
                        c[i * n + j..].as_mut_ptr(),
                        x[i * k..].as_ptr(),
                        wt[j * k..].as_ptr(),
                        1,
                        n as isize,
                        k as isize,
                        k as isize,
                        0.0,
                        1.0,
                        0,
                        false,
                        false,
                        false,
                    )
                };
            }
        }
    };
    dots(&mut c);
    for (a, b) in c.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "horizontal kernels: {a} vs {b}");
    }
    group.bench_function("n10 horizontal kernels (W3 transposed ready)", |bch| bch.iter(|| dots(&mut c)));
}

criterion_group!(benches, shapes);
criterion_main!(benches);
