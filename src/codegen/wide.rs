//! 16-lane transcendentals: exp, log, tanh, sigmoid and erf over n contiguous f32 in
//! place, with AVX-512, for the JIT's elementwise kernels to call on strips (`elementwise`
//! strip-mines a kernel with transcendental nodes when `available()`).
//!
//! Cranelift emits 128-bit vectors only; these functions are the same computations as
//! `math.rs` emits (the same constants, the same operations in the same order, FMA exactly
//! where `math.rs` uses `fma`, comparisons as the same ordered predicates and selects as
//! blends), so their results are bit-identical to the JIT's 4-lane and scalar code, under
//! either floating-point mode (MXCSR's FTZ and DAZ apply to EVEX code as to SSE). The
//! tests (`tests/wide.rs`) compare them bit for bit against the JIT's own code.
//!
//! Square root and division are not here: Adam's update, the kernel they weigh on, runs
//! at its memory floor in 4 lanes, and strips of them were twice as slow
//! (`examples/adam_lanes.rs`, docs/gemm.md).
//!
//! Each function is `extern "C" fn(*mut f32, usize)` (the JIT calls it by address), never
//! panics and never allocates; the caller guarantees AVX-512F and AVX-512DQ (`available`).

#![allow(clippy::excessive_precision)] // the coefficients of math.rs, as written there

/// A host transcendental: `f(p, n)` replaces `p[0..n]` by `f(p[i])`.
pub type WideFn = unsafe extern "C" fn(*mut f32, usize);

/// Whether this CPU runs the functions of this module (AVX-512F and DQ).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512dq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Which function: the unary ops that have one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    Exp,
    Log,
    Tanh,
    Sigmoid,
    Erf,
}

impl Func {
    /// The function's address (only called when `available()`).
    pub fn address(self) -> WideFn {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Func::Exp => x86::nnc_wide_exp,
                Func::Log => x86::nnc_wide_log,
                Func::Tanh => x86::nnc_wide_tanh,
                Func::Sigmoid => x86::nnc_wide_sigmoid,
                Func::Erf => x86::nnc_wide_erf,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            unsupported
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe extern "C" fn unsupported(_: *mut f32, _: usize) {}

/// Applies `f` to `xs` in place (tests, and callers outside the JIT). Panics never; a CPU
/// without AVX-512 gets `false` and `xs` untouched.
pub fn apply(f: Func, xs: &mut [f32]) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: the CPU has the features the function needs (checked above), and the pointer
    // and length describe `xs`.
    unsafe { (f.address())(xs.as_mut_ptr(), xs.len()) };
    true
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::math::{ERFC_FAR, ERFC_MID, ERF_SMALL};
    use std::arch::x86_64::*;

    type V = __m512;
    type M = __mmask16;

    // Every helper is `#[inline]` with the module's features, so it inlines into the
    // strip loops. The helpers mirror `math::E`'s methods of the same names.

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn c(v: f32) -> V {
        _mm512_set1_ps(v)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn ci(v: i32) -> __m512i {
        _mm512_set1_epi32(v)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn add(a: V, b: V) -> V {
        _mm512_add_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn sub(a: V, b: V) -> V {
        _mm512_sub_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn mul(a: V, b: V) -> V {
        _mm512_mul_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn div(a: V, b: V) -> V {
        _mm512_div_ps(a, b)
    }
    /// a * b + c, one rounding (`fma`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn fma(a: V, b: V, c: V) -> V {
        _mm512_fmadd_ps(a, b, c)
    }
    /// `fneg`: the sign bit flipped.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn neg(a: V) -> V {
        _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), ci(i32::MIN)))
    }
    /// `fabs`: the sign bit cleared.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn abs(a: V) -> V {
        _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), ci(i32::MAX)))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn lt(a: V, b: V) -> M {
        _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn gt(a: V, b: V) -> M {
        _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn eq(a: V, b: V) -> M {
        _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn nan_of(x: V) -> M {
        _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x)
    }
    /// `m ? a : b` lane by lane.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn sel(m: M, a: V, b: V) -> V {
        _mm512_mask_blend_ps(m, b, a)
    }
    /// `E::min(x, k)` for a constant k: `k < x ? k : x` (x's NaN kept).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn min_c(x: V, k: f32) -> V {
        let k = c(k);
        sel(lt(k, x), k, x)
    }
    /// `E::max(x, k)` for a constant k: `x < k ? k : x` (x's NaN kept).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn max_c(x: V, k: f32) -> V {
        let k = c(k);
        sel(lt(x, k), k, x)
    }
    /// Horner's rule with FMA: c[0] x^n + ... + c[n].
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn poly(x: V, cs: &[f32]) -> V {
        let mut acc = c(cs[0]);
        for &k in &cs[1..] {
            acc = fma(acc, x, c(k));
        }
        acc
    }
    /// 2^n for integer lanes n in [-126, 127].
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn pow2i(n: __m512i) -> V {
        let e = _mm512_add_epi32(n, ci(127));
        _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e))
    }
    /// |m| with the sign of s.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn copysign(m: V, s: V) -> V {
        let sb = _mm512_and_si512(_mm512_castps_si512(s), ci(i32::MIN));
        _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(m), sb))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn exp_core(xc: V, halves: bool) -> V {
        let t = mul(xc, c(std::f32::consts::LOG2_E));
        let magic = c(12_582_912.0);
        let tm = add(t, magic);
        let fx = sub(tm, magic);
        let r = fma(fx, c(-0.693_359_4), xc);
        let r = fma(fx, c(2.121_944_4e-4), r);
        let p =
            poly(r, &[1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1]);
        let r2 = mul(r, r);
        let y = add(r, c(1.0));
        let y = fma(p, r2, y);
        let n = _mm512_sub_epi32(_mm512_castps_si512(tm), ci(0x4b40_0000));
        if !halves {
            return mul(y, pow2i(n));
        }
        let n1 = _mm512_srai_epi32::<1>(n);
        let n2 = _mm512_sub_epi32(n, n1);
        let y = mul(y, pow2i(n1));
        mul(y, pow2i(n2))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn exp(x: V) -> V {
        let over = gt(x, c(89.0));
        let under = lt(x, c(-104.0));
        let xc = min_c(x, 89.0);
        let xc = max_c(xc, -104.0);
        let y = exp_core(xc, true);
        let y = sel(over, c(f32::INFINITY), y);
        let y = sel(under, c(0.0), y);
        sel(nan_of(x), x, y)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn log(x: V) -> V {
        let is_den = lt(x, c(f32::MIN_POSITIVE));
        let xs = mul(x, c(8_388_608.0));
        let xd = sel(is_den, xs, x);
        let bits = _mm512_castps_si512(xd);
        let e_raw = _mm512_srli_epi32::<23>(bits);
        let e_i = _mm512_sub_epi32(e_raw, ci(126));
        let e = _mm512_cvtepi32_ps(e_i);
        let e_den = sub(e, c(23.0));
        let e = sel(is_den, e_den, e);
        let mb = _mm512_and_si512(bits, ci(0x007f_ffff));
        let mb = _mm512_or_si512(mb, ci(0x3f00_0000));
        let m = _mm512_castsi512_ps(mb);
        let small = lt(m, c(std::f32::consts::FRAC_1_SQRT_2));
        let one = c(1.0);
        let e_m1 = sub(e, one);
        let e = sel(small, e_m1, e);
        let m2 = add(m, m);
        let a = sub(m2, one);
        let b = sub(m, one);
        let m = sel(small, a, b);
        let z = mul(m, m);
        let p = poly(
            m,
            &[
                7.037_683_6e-2,
                -1.151_461e-1,
                1.167_699_9e-1,
                -1.242_014_1e-1,
                1.424_932_3e-1,
                -1.666_805_8e-1,
                2.000_071_5e-1,
                -2.499_999_4e-1,
                3.333_333_1e-1,
            ],
        );
        let y = mul(p, m);
        let y = mul(y, z);
        let y = fma(e, c(-2.121_944_4e-4), y);
        let y = fma(z, c(-0.5), y);
        let r = add(m, y);
        let r = fma(e, c(0.693_359_4), r);
        let zero = c(0.0);
        let r = sel(eq(x, zero), c(f32::NEG_INFINITY), r);
        let inf = c(f32::INFINITY);
        let r = sel(eq(x, inf), inf, r);
        let r = sel(lt(x, zero), c(f32::NAN), r);
        sel(nan_of(x), x, r)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn tanh(x: V) -> V {
        let ax = abs(x);
        let z = mul(x, x);
        let p = poly(z, &[-5.704_988_7e-3, 2.063_908_9e-2, -5.373_971_6e-2, 1.333_144_2e-1, -3.333_328_2e-1]);
        let pz = mul(p, z);
        let small = fma(pz, x, x);
        let two = c(2.0);
        let ax2 = mul(ax, two);
        let ax2 = min_c(ax2, 20.0);
        let e = exp_core(ax2, false);
        let one = c(1.0);
        let den = add(e, one);
        let q = div(two, den);
        let big = sub(one, q);
        let big = copysign(big, x);
        let is_small = lt(ax, c(0.625));
        sel(is_small, small, big)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn sigmoid(x: V) -> V {
        let ax = abs(x);
        let nax = neg(ax);
        let nax = max_c(nax, -104.0);
        let e = exp_core(nax, true);
        let one = c(1.0);
        let den = add(one, e);
        let s = div(one, den);
        let es = mul(e, s);
        let neg_x = lt(x, c(0.0));
        sel(neg_x, es, s)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn erf(x: V) -> V {
        let ax = abs(x);
        let z = mul(x, x);
        let p = poly(z, ERF_SMALL);
        let small = mul(p, x);
        let ac = min_c(ax, 4.5);
        let one = c(1.0);
        let t = div(one, ac);
        let r1 = poly(t, ERFC_MID);
        let r2 = poly(t, ERFC_FAR);
        let mid = lt(ac, c(2.0));
        let r = sel(mid, r1, r2);
        let zc = mul(ac, ac);
        let nz = neg(zc);
        let e = exp_core(nz, false);
        let er = mul(e, r);
        let erfc = mul(er, t);
        let big = sub(one, erfc);
        let big = copysign(big, x);
        let is_small = lt(ax, one);
        let y = sel(is_small, small, big);
        sel(nan_of(x), x, y)
    }

    /// Applies `f` to p[0..n] in place: 16 lanes at a time, the tail under a mask (masked
    /// lanes are neither read from memory nor written).
    ///
    /// # Safety
    /// The CPU has AVX-512F and DQ; p[0..n] is valid for reads and writes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn strip(p: *mut f32, n: usize, f: impl Fn(V) -> V) {
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n elements from p are in bounds.
            unsafe {
                let q = p.add(i);
                _mm512_storeu_ps(q, f(_mm512_loadu_ps(q)));
            }
            i += 16;
        }
        if i < n {
            let m: M = ((1u32 << (n - i)) - 1) as M;
            // SAFETY: only the n - i lanes in the mask are touched, and they are in bounds;
            // masked loads and stores do not fault on the other lanes.
            unsafe {
                let q = p.add(i);
                _mm512_mask_storeu_ps(q, m, f(_mm512_maskz_loadu_ps(m, q)));
            }
        }
    }

    macro_rules! entry {
        ($name:ident, $inner:ident, $f:ident) => {
            #[target_feature(enable = "avx512f,avx512dq")]
            unsafe fn $inner(p: *mut f32, n: usize) {
                // SAFETY: forwarded from the entry point's contract.
                unsafe { strip(p, n, |x| $f(x)) }
            }
            /// The function over p[0..n] in place.
            ///
            /// # Safety
            /// The CPU has AVX-512F and DQ (`available`); p[0..n] is valid for reads and
            /// writes (p may dangle when n = 0).
            pub unsafe extern "C" fn $name(p: *mut f32, n: usize) {
                // SAFETY: the caller's contract above.
                unsafe { $inner(p, n) }
            }
        };
    }
    entry!(nnc_wide_exp, exp_strip, exp);
    entry!(nnc_wide_log, log_strip, log);
    entry!(nnc_wide_tanh, tanh_strip, tanh);
    entry!(nnc_wide_sigmoid, sigmoid_strip, sigmoid);
    entry!(nnc_wide_erf, erf_strip, erf);
}
