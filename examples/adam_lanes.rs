//! Adam's update over one [784 x 512] parameter (401,408 f32: the MLP workload's k20; then
//! [512 x 256], k16, and 32 Ki values, which stay in L2) in
//! three ways, to see whether the square root and division or the memory traffic bound it
//! (issue 16): `x4` is the JIT's 4-lane loop (SSE `sqrtps`/`divps`), `x16` the same loop
//! in 16 lanes (AVX-512), `strips` the 4-lane loop with the square root and the division
//! done 16 lanes at a time over strips of 256 values in scratch (what `elementwise`'s
//! strips would do). Each reads p, g, m, v and writes p, m, v (11 MiB for k20). All three give the
//! same bits (checked). `floor` is `x4` with multiplications in place of the square
//! root and the division: the time of the loads and stores alone. Run: `cargo run --release --example adam_lanes`.

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;

    pub const B1: f32 = 0.9;
    pub const B2: f32 = 0.999;
    pub const RBC2: f32 = 1.0 / 0.3; // 1 / sqrt(bc2), a loop invariant
    pub const EPS: f32 = 1e-8;
    pub const RATE: f32 = 1e-3; // lr / bc1

    /// 4 lanes, one fused loop (n a multiple of 4).
    pub fn x4(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        // SAFETY: SSE2 is baseline on x86_64; every index is < n.
        unsafe {
            for i in (0..p.len()).step_by(4) {
                let gv = _mm_loadu_ps(g.as_ptr().add(i));
                let nm = _mm_add_ps(
                    _mm_mul_ps(_mm_loadu_ps(m.as_ptr().add(i)), _mm_set1_ps(B1)),
                    _mm_mul_ps(gv, _mm_set1_ps(1.0 - B1)),
                );
                let g2 = _mm_mul_ps(gv, gv);
                let nv = _mm_add_ps(
                    _mm_mul_ps(_mm_loadu_ps(v.as_ptr().add(i)), _mm_set1_ps(B2)),
                    _mm_mul_ps(g2, _mm_set1_ps(1.0 - B2)),
                );
                let den = _mm_add_ps(_mm_mul_ps(_mm_sqrt_ps(nv), _mm_set1_ps(RBC2)), _mm_set1_ps(EPS));
                let q = _mm_div_ps(nm, den);
                let np = _mm_sub_ps(_mm_loadu_ps(p.as_ptr().add(i)), _mm_mul_ps(_mm_set1_ps(RATE), q));
                _mm_storeu_ps(p.as_mut_ptr().add(i), np);
                _mm_storeu_ps(m.as_mut_ptr().add(i), nm);
                _mm_storeu_ps(v.as_mut_ptr().add(i), nv);
            }
        }
    }

    /// The memory floor: `x4` with the square root and the division replaced by
    /// multiplications (same loads and stores; wrong values, timing only).
    pub fn floor(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        // SAFETY: SSE2 is baseline on x86_64; every index is < n.
        unsafe {
            for i in (0..p.len()).step_by(4) {
                let gv = _mm_loadu_ps(g.as_ptr().add(i));
                let nm = _mm_add_ps(
                    _mm_mul_ps(_mm_loadu_ps(m.as_ptr().add(i)), _mm_set1_ps(B1)),
                    _mm_mul_ps(gv, _mm_set1_ps(1.0 - B1)),
                );
                let g2 = _mm_mul_ps(gv, gv);
                let nv = _mm_add_ps(
                    _mm_mul_ps(_mm_loadu_ps(v.as_ptr().add(i)), _mm_set1_ps(B2)),
                    _mm_mul_ps(g2, _mm_set1_ps(1.0 - B2)),
                );
                let den = _mm_add_ps(_mm_mul_ps(nv, _mm_set1_ps(RBC2)), _mm_set1_ps(EPS));
                let q = _mm_mul_ps(nm, den);
                let np = _mm_sub_ps(_mm_loadu_ps(p.as_ptr().add(i)), _mm_mul_ps(_mm_set1_ps(RATE), q));
                _mm_storeu_ps(p.as_mut_ptr().add(i), np);
                _mm_storeu_ps(m.as_mut_ptr().add(i), nm);
                _mm_storeu_ps(v.as_mut_ptr().add(i), nv);
            }
        }
    }

    /// 16 lanes, one fused loop (n a multiple of 16).
    #[target_feature(enable = "avx512f")]
    pub fn x16(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        // SAFETY: the caller checked AVX-512F; every index is < n.
        unsafe {
            for i in (0..p.len()).step_by(16) {
                let gv = _mm512_loadu_ps(g.as_ptr().add(i));
                let nm = _mm512_add_ps(
                    _mm512_mul_ps(_mm512_loadu_ps(m.as_ptr().add(i)), _mm512_set1_ps(B1)),
                    _mm512_mul_ps(gv, _mm512_set1_ps(1.0 - B1)),
                );
                let g2 = _mm512_mul_ps(gv, gv);
                let nv = _mm512_add_ps(
                    _mm512_mul_ps(_mm512_loadu_ps(v.as_ptr().add(i)), _mm512_set1_ps(B2)),
                    _mm512_mul_ps(g2, _mm512_set1_ps(1.0 - B2)),
                );
                let den = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(nv), _mm512_set1_ps(RBC2)), _mm512_set1_ps(EPS));
                let q = _mm512_div_ps(nm, den);
                let np = _mm512_sub_ps(_mm512_loadu_ps(p.as_ptr().add(i)), _mm512_mul_ps(_mm512_set1_ps(RATE), q));
                _mm512_storeu_ps(p.as_mut_ptr().add(i), np);
                _mm512_storeu_ps(m.as_mut_ptr().add(i), nm);
                _mm512_storeu_ps(v.as_mut_ptr().add(i), nv);
            }
        }
    }

    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    unsafe fn sqrt16(a: *mut f32, n: usize) {
        for i in (0..n).step_by(16) {
            // SAFETY: a[0..n] valid, n a multiple of 16.
            unsafe { _mm512_storeu_ps(a.add(i), _mm512_sqrt_ps(_mm512_loadu_ps(a.add(i)))) }
        }
    }

    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    unsafe fn div16(a: *mut f32, b: *const f32, n: usize) {
        for i in (0..n).step_by(16) {
            // SAFETY: a[0..n], b[0..n] valid, n a multiple of 16.
            unsafe { _mm512_storeu_ps(a.add(i), _mm512_div_ps(_mm512_loadu_ps(a.add(i)), _mm512_loadu_ps(b.add(i)))) }
        }
    }

    /// Strips of 256: stage 0 stores nv to scratch s0, sqrt16(s0); stage 1 recomputes nm,
    /// stores it to s1 and den to s2, div16(s1, s2); stage 2 computes and stores the outputs.
    pub fn strips(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let mut s0 = [0f32; 256];
        let mut s1 = [0f32; 256];
        let mut s2 = [0f32; 256];
        let n = p.len();
        let (p, g, m, v) = (p.as_mut_ptr(), g.as_ptr(), m.as_mut_ptr(), v.as_mut_ptr());
        // SAFETY: AVX-512F checked by the caller; every index is < n, strips of 256 | n.
        unsafe {
            for c0 in (0..n).step_by(256) {
                let len = 256.min(n - c0);
                let nmv = |i: usize| {
                    let gv = _mm_loadu_ps(g.add(i));
                    let nm = _mm_add_ps(
                        _mm_mul_ps(_mm_loadu_ps(m.add(i)), _mm_set1_ps(B1)),
                        _mm_mul_ps(gv, _mm_set1_ps(1.0 - B1)),
                    );
                    let g2 = _mm_mul_ps(gv, gv);
                    let nv = _mm_add_ps(
                        _mm_mul_ps(_mm_loadu_ps(v.add(i)), _mm_set1_ps(B2)),
                        _mm_mul_ps(g2, _mm_set1_ps(1.0 - B2)),
                    );
                    (nm, nv)
                };
                for j in (0..len).step_by(4) {
                    let (_, nv) = nmv(c0 + j);
                    _mm_storeu_ps(s0.as_mut_ptr().add(j), nv);
                }
                sqrt16(s0.as_mut_ptr(), len);
                for j in (0..len).step_by(4) {
                    let (nm, _) = nmv(c0 + j);
                    let den =
                        _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(s0.as_ptr().add(j)), _mm_set1_ps(RBC2)), _mm_set1_ps(EPS));
                    _mm_storeu_ps(s1.as_mut_ptr().add(j), nm);
                    _mm_storeu_ps(s2.as_mut_ptr().add(j), den);
                }
                div16(s1.as_mut_ptr(), s2.as_ptr(), len);
                for j in (0..len).step_by(4) {
                    let i = c0 + j;
                    let (nm, nv) = nmv(i);
                    let q = _mm_loadu_ps(s1.as_ptr().add(j));
                    let np = _mm_sub_ps(_mm_loadu_ps(p.add(i)), _mm_mul_ps(_mm_set1_ps(RATE), q));
                    _mm_storeu_ps(p.add(i), np);
                    _mm_storeu_ps(m.add(i), nm);
                    _mm_storeu_ps(v.add(i), nv);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn main() {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        println!("no AVX-512F: nothing to compare");
        return;
    }
    for n in [784 * 512, 512 * 256, 32 * 1024] {
        run(n);
    }
}

#[cfg(target_arch = "x86_64")]
fn run(n: usize) {
    use std::time::Instant;
    let init = |k: u32| -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(k) % 1000) as f32 * 1e-3).collect()
    };
    let g = init(1);
    type F = fn(&mut [f32], &[f32], &mut [f32], &mut [f32]);
    // SAFETY: AVX-512F checked above.
    let x16: F = |p, g, m, v| unsafe { imp::x16(p, g, m, v) };
    let ways: [(&str, F); 4] = [("x4", imp::x4), ("x16", x16), ("strips", imp::strips), ("floor", imp::floor)];
    let mut outs = Vec::new();
    for (name, f) in ways {
        let (mut p, mut m, mut v) = (init(2), init(3), init(4));
        f(&mut p, &g, &mut m, &mut v);
        outs.push((p.clone(), m.clone(), v.clone()));
        let mut times = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            for _ in 0..50 {
                f(&mut p, &g, &mut m, &mut v);
            }
            times.push(t.elapsed().as_secs_f64() / 50.0 * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!("{name:7} median {:.4} ms  min {:.4} ms per update of {n} values", times[3], times[0]);
    }
    let same = outs[..3].iter().all(|o| o.0.iter().zip(&outs[0].0).all(|(a, b)| a.to_bits() == b.to_bits()));
    println!("bit-identical first updates: {same}\n");
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("x86_64 only");
}
