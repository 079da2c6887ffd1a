//! The JIT's transcendental functions (exp, log, tanh, sigmoid, erf, sin, cos) against
//! f64 references, in ulps of the f32
//! result, over the whole f32 range: every exponent is sampled, plus ±0, ±inf, NaN, the
//! denormals and the values around each function's thresholds.

use nnc::internals::codegen::CodegenOptions;
use nnc::internals::runtime::executable::{concrete, Executable};

/// Runs `fname(x)` for every x through a compiled kernel.
fn jit(fname: &str, xs: &[f32]) -> Vec<f32> {
    let src = format!("model M {{\n input x: [B]\n output y = {fname}(x)\n}}\n");
    let p = nnc::internals::pipeline::compile_source("m.nn", &src, None).expect("compiles").programs.remove(0);
    let g = concrete(&p.eval, xs.len()).expect("bind");
    let mut exe =
        Executable::new(&g, &CodegenOptions { verify: true, threads: 1, keep_denormals: true, ..Default::default() })
            .expect("jit");
    exe.set_input_f32(0, xs).expect("input");
    exe.run(0, 0);
    exe.output("y").expect("y").to_vec()
}

/// Inputs: special values, and for each of the 254 normal exponents and the denormals,
/// a spread of mantissas, both signs.
fn inputs() -> Vec<f32> {
    let mut v =
        vec![0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE, f32::MAX, f32::MIN, 1e-45];
    let mut s: u32 = 12345;
    for e in 0..255u32 {
        for _ in 0..24 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let bits = (e << 23) | (s >> 9);
            v.push(f32::from_bits(bits));
            v.push(-f32::from_bits(bits));
        }
    }
    // Dense around zero and the usual working range.
    for i in 0..4000 {
        let x = (i as f32 - 2000.0) / 100.0;
        v.push(x);
    }
    v
}

/// Distance in ulps between f32 `got` and the f64 reference (rounded to f32).
fn ulps(got: f32, want: f64) -> f64 {
    let w = want as f32;
    if w.is_nan() || got.is_nan() {
        return if w.is_nan() && got.is_nan() { 0.0 } else { f64::INFINITY };
    }
    if w.is_infinite() || got.is_infinite() {
        return if w == got { 0.0 } else { f64::INFINITY };
    }
    let key = |x: f32| {
        let b = x.to_bits() as i64;
        if b < 0x8000_0000 {
            b
        } else {
            -(b - 0x8000_0000)
        }
    };
    (key(got) - key(w)).unsigned_abs() as f64
}

fn check(fname: &str, f: impl Fn(f64) -> f64, max_ulps: f64, domain: impl Fn(f32) -> bool) {
    let xs: Vec<f32> = inputs().into_iter().filter(|&x| domain(x)).collect();
    let ys = jit(fname, &xs);
    let mut worst = (0.0, 0.0f32);
    for (&x, &y) in xs.iter().zip(&ys) {
        let u = ulps(y, f(f64::from(x)));
        if u > worst.0 {
            worst = (u, x);
        }
    }
    assert!(
        worst.0 <= max_ulps,
        "{fname}: {} ulps at x = {:e} (got {:e}, want {:e})",
        worst.0,
        worst.1,
        jit(fname, &[worst.1])[0],
        f(f64::from(worst.1))
    );
    println!("{fname}: at most {} ulps over {} inputs", worst.0, xs.len());
}

#[test]
fn exp_ulps() {
    check("exp", f64::exp, 4.0, |_| true);
}

#[test]
fn log_ulps() {
    check("log", f64::ln, 4.0, |_| true);
}

#[test]
fn tanh_ulps() {
    check("tanh", f64::tanh, 4.0, |_| true);
}

#[test]
fn sigmoid_ulps() {
    check("sigmoid", |x| 1.0 / (1.0 + (-x).exp()), 4.0, |_| true);
}

#[test]
fn erf_ulps() {
    check("erf", nnc::internals::runtime::erf64, 4.0, |_| true);
}

/// sin and cos over every exponent up to f32::MAX: above 2^28 π/2 a vector takes the
/// exact reduction (the huge lanes of `inputs` are mixed with small ones in a vector,
/// so both paths run on small arguments too), plus arguments next to multiples of π/2
/// (the f32 neighbours of k π/2 for k up to 2^20), where the reduction cancels most,
/// and a million random f32s.
#[test]
fn sin_cos_ulps() {
    check("sin", f64::sin, 1.0, |_| true);
    check("cos", f64::cos, 1.0, |_| true);
    let mut near = Vec::new();
    for k in (1..1u64 << 20).step_by(997).chain([1, 2, 3, 4, 355, 710, 103_993, 1 << 19]) {
        let x = (k as f64 * std::f64::consts::FRAC_PI_2) as f32;
        for y in [x, f32::from_bits(x.to_bits() + 1), f32::from_bits(x.to_bits() - 1)] {
            near.push(y);
            near.push(-y);
        }
    }
    // The worst case of the f32 reduction, 16367173 · 2^72, lies 2^-29.2 from a multiple
    // of π/2 (so 95 bits of 2/π cancel); then the two sides of the fast path's bound.
    let worst = 16_367_173.0 * 2f32.powi(72);
    // And 2^20 random bit patterns (every sign and exponent).
    let mut s: u32 = 7;
    for _ in 0..1 << 20 {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let x = f32::from_bits(s);
        if x.is_finite() {
            near.push(x);
        }
    }
    near.extend([worst, -worst, f32::from_bits(0x4dc9_0fdb), f32::from_bits(0x4dc9_0fda), 1e22, 1e38]);
    for (fname, f) in [("sin", f64::sin as fn(f64) -> f64), ("cos", f64::cos)] {
        let ys = jit(fname, &near);
        for (&x, &y) in near.iter().zip(&ys) {
            let u = ulps(y, f(f64::from(x)));
            assert!(u <= 1.0, "{fname}({x:e}) = {y:e}, want {:e}: {u} ulps", f(f64::from(x)));
        }
    }
    // sin keeps the sign of zero; cos of ±0 is 1; infinities and NaN give NaN.
    let y = jit("sin", &[0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
    assert!(y[0] == 0.0 && y[0].is_sign_positive() && y[1] == 0.0 && y[1].is_sign_negative());
    assert!(y[2..].iter().all(|v| v.is_nan()));
    let y = jit("cos", &[0.0, -0.0, f32::INFINITY, f32::NAN]);
    assert!(y[0] == 1.0 && y[1] == 1.0 && y[2].is_nan() && y[3].is_nan());
}

#[test]
fn round_floor_ceil_are_exact() {
    // Ties go to even (as NumPy and PyTorch): the dense grid holds every x.5 in [-20, 20].
    check("round", f64::round_ties_even, 0.0, |_| true);
    check("floor", f64::floor, 0.0, |_| true);
    check("ceil", f64::ceil, 0.0, |_| true);
    assert_eq!(jit("round", &[0.5, 1.5, 2.5, -0.5, -2.5, 8388609.0]), vec![0.0, 2.0, 2.0, -0.0, -2.0, 8388609.0]);
}

/// By default a step flushes denormals (FTZ and DAZ, as XLA's CPU client does) and gives
/// the caller's floating-point mode back; `keep_denormals` computes them exactly.
#[test]
fn denormals_flushed_by_default_and_mode_restored() {
    let src = "model M {\n input x: [B]\n output y = x * 1e-30\n output z = x * 1e30\n}\n";
    let p = nnc::internals::pipeline::compile_source("m.nn", src, None).expect("compiles").programs.remove(0);
    let g = concrete(&p.eval, 4).expect("bind");
    let xs = [1e-10f32, 1.0, 1e-39, -1e-39];
    let run = |keep_denormals: bool| {
        let mut exe = Executable::new(&g, &CodegenOptions { keep_denormals, ..Default::default() }).expect("jit");
        exe.set_input_f32(0, &xs).expect("input");
        let before = 1e-39f32 * std::hint::black_box(0.5f32);
        exe.run(0, 0);
        let after = 1e-39f32 * std::hint::black_box(0.5f32);
        assert_eq!(before.to_bits(), after.to_bits(), "the caller's mode is restored");
        assert!(after > 0.0, "the caller computes denormals");
        (exe.output("y").expect("y").to_vec(), exe.output("z").expect("z").to_vec())
    };
    let (y, z) = run(false);
    assert_eq!(y[0], 0.0, "1e-40 flushed to zero");
    assert_eq!(&z[2..], &[0.0, 0.0], "denormal operands read as zero");
    let (y, z) = run(true);
    assert_eq!(y[0], 1e-10f32 * 1e-30f32);
    assert_eq!(&z[2..], &[1e-39f32 * 1e30f32, -1e-39f32 * 1e30f32]);
}

/// `max` and `min` propagate a NaN from either operand and order infinities, both with
/// a constant operand (one `maxps`/`minps`) and with two variables (plus a NaN select),
/// in the vector loop and the scalar tail (23 elements: 5 vectors and 3 scalars).
#[test]
fn max_min_nan_from_either_side() {
    let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1.5, -2.5, 1e-40];
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for &a in &special {
        for &b in &special {
            xs.push(a);
            ys.push(b);
        }
    }
    xs.truncate(61);
    ys.truncate(61);
    let want = |f: &dyn Fn(f32, f32) -> f32, y: &dyn Fn(usize) -> f32| -> Vec<f32> {
        xs.iter().enumerate().map(|(i, &x)| f(x, y(i))).collect()
    };
    let fmax = |a: f32, b: f32| if a.is_nan() || b.is_nan() { f32::NAN } else { a.max(b) };
    let fmin = |a: f32, b: f32| if a.is_nan() || b.is_nan() { f32::NAN } else { a.min(b) };
    let cases: Vec<(&str, Vec<f32>)> = vec![
        ("relu(x)", want(&fmax, &|_| 0.0)),
        ("max(0.5, x)", want(&fmax, &|_| 0.5)),
        ("min(x, -1.0)", want(&fmin, &|_| -1.0)),
        ("min(2.0, x)", want(&fmin, &|_| 2.0)),
        ("max(x, y)", want(&fmax, &|i| ys[i])),
        ("min(y, x)", want(&fmin, &|i| ys[i])),
    ];
    for (expr, want) in cases {
        let src = format!("model M {{\n input x: [B]\n input y: [B]\n output z = {expr}\n}}\n");
        let p = nnc::internals::pipeline::compile_source("m.nn", &src, None).expect("compiles").programs.remove(0);
        let g = concrete(&p.eval, xs.len()).expect("bind");
        let mut exe = Executable::new(
            &g,
            &CodegenOptions { verify: true, threads: 1, keep_denormals: true, ..Default::default() },
        )
        .expect("jit");
        exe.set_input_f32(0, &xs).expect("x");
        exe.set_input_f32(1, &ys).expect("y");
        exe.run(0, 0);
        let got = exe.output("z").expect("z").to_vec();
        for i in 0..xs.len() {
            let same = (got[i].is_nan() && want[i].is_nan()) || got[i] == want[i];
            assert!(same, "{expr} at x = {}, y = {}: got {}, want {}", xs[i], ys[i], got[i], want[i]);
        }
    }
}
