//! Elementwise arithmetic for Cranelift, written once for scalars (`f32`) and vectors
//! (`f32x4`): constants, comparisons as masks, selects, and the transcendental
//! functions as range reduction plus FMA polynomials (Cephes' single-precision
//! coefficients), with explicit handling of NaN, infinities and denormals.

#![allow(clippy::excessive_precision)] // coefficients as published / fitted

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;

/// Emits arithmetic on scalars or 4-lane vectors.
pub struct E<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    pub vec: bool,
}

/// A comparison result: an all-ones/all-zeros lane mask (vectors) or an i8 (scalars).
#[derive(Clone, Copy)]
pub struct Mask(Value);

impl<'a, 'b> E<'a, 'b> {
    pub fn fty(&self) -> Type {
        if self.vec {
            types::F32X4
        } else {
            types::F32
        }
    }
    fn ity(&self) -> Type {
        if self.vec {
            types::I32X4
        } else {
            types::I32
        }
    }
    fn little() -> MemFlagsData {
        MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
    }
    pub fn c(&mut self, v: f32) -> Value {
        let s = self.b.ins().f32const(v);
        if self.vec {
            self.b.ins().splat(types::F32X4, s)
        } else {
            s
        }
    }
    fn ci(&mut self, v: i32) -> Value {
        let s = self.b.ins().iconst(types::I32, i64::from(v));
        if self.vec {
            self.b.ins().splat(types::I32X4, s)
        } else {
            s
        }
    }
    /// Broadcasts a scalar f32 to the emitter's width.
    pub fn spread(&mut self, s: Value) -> Value {
        if self.vec {
            self.b.ins().splat(types::F32X4, s)
        } else {
            s
        }
    }
    pub fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fadd(a, b)
    }
    pub fn sub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fsub(a, b)
    }
    pub fn mul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmul(a, b)
    }
    pub fn div(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fdiv(a, b)
    }
    pub fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        self.b.ins().fma(a, b, c)
    }
    pub fn neg(&mut self, a: Value) -> Value {
        self.b.ins().fneg(a)
    }
    pub fn abs(&mut self, a: Value) -> Value {
        self.b.ins().fabs(a)
    }
    pub fn sqrt(&mut self, a: Value) -> Value {
        self.b.ins().sqrt(a)
    }
    pub fn cmp(&mut self, cc: FloatCC, a: Value, b: Value) -> Mask {
        let m = self.b.ins().fcmp(cc, a, b);
        Mask(m)
    }
    pub fn and(&mut self, a: Mask, b: Mask) -> Mask {
        Mask(self.b.ins().band(a.0, b.0))
    }
    pub fn or(&mut self, a: Mask, b: Mask) -> Mask {
        Mask(self.b.ins().bor(a.0, b.0))
    }
    /// `m ? a : b` lane by lane.
    pub fn sel(&mut self, m: Mask, a: Value, b: Value) -> Value {
        if self.vec {
            let fm = self.b.ins().bitcast(types::F32X4, Self::little(), m.0);
            self.b.ins().bitselect(fm, a, b)
        } else {
            self.b.ins().select(m.0, a, b)
        }
    }
    /// 1.0 where the mask is set, else 0.0.
    pub fn mask_to_f(&mut self, m: Mask) -> Value {
        let one = self.c(1.0);
        let zero = self.c(0.0);
        self.sel(m, one, zero)
    }
    fn nan_of(&mut self, x: Value) -> Mask {
        self.cmp(FloatCC::Unordered, x, x)
    }
    /// Horner's rule with FMA: c[0] x^n + ... + c[n].
    fn poly(&mut self, x: Value, c: &[f32]) -> Value {
        let mut acc = self.c(c[0]);
        for &k in &c[1..] {
            let kk = self.c(k);
            acc = self.fma(acc, x, kk);
        }
        acc
    }
    /// 2^n for integer lanes n in [-126, 127], as floats.
    fn pow2i(&mut self, n: Value) -> Value {
        let bias = self.ci(127);
        let e = self.b.ins().iadd(n, bias);
        let bits = self.b.ins().ishl_imm_u(e, 23);
        let fty = self.fty();
        self.b.ins().bitcast(fty, Self::little(), bits)
    }

    /// A constant (or a splat of one) that is not NaN.
    fn is_number_const(&self, v: Value) -> bool {
        use cranelift_codegen::ir::{InstructionData, Opcode, ValueDef};
        let dfg = &self.b.func.dfg;
        let ValueDef::Result(inst, _) = dfg.value_def(v) else { return false };
        match dfg.insts[inst] {
            InstructionData::UnaryIeee32 { opcode: Opcode::F32const, imm } => !imm.is_nan(),
            InstructionData::Unary { opcode: Opcode::Splat, arg } => self.is_number_const(arg),
            _ => false,
        }
    }
    /// `max`/`min` with NaN from either side. `bitselect(fcmp lt y x, x, y)` is one
    /// `maxps`, which returns y when either is NaN; a NaN in x needs a second select,
    /// unless x is a constant (ReLU's zero).
    pub fn max(&mut self, a: Value, b: Value) -> Value {
        let (x, y) = if self.is_number_const(a) { (a, b) } else { (b, a) };
        let lt = self.cmp(FloatCC::LessThan, y, x);
        let r = self.sel(lt, x, y);
        if self.is_number_const(x) {
            return r;
        }
        let nx = self.nan_of(x);
        self.sel(nx, x, r)
    }
    /// The same with `minps`: `bitselect(fcmp lt x y, x, y)`.
    pub fn min(&mut self, a: Value, b: Value) -> Value {
        let (x, y) = if self.is_number_const(a) { (a, b) } else { (b, a) };
        let lt = self.cmp(FloatCC::LessThan, x, y);
        let r = self.sel(lt, x, y);
        if self.is_number_const(x) {
            return r;
        }
        let nx = self.nan_of(x);
        self.sel(nx, x, r)
    }
    pub fn sign(&mut self, x: Value) -> Value {
        let zero = self.c(0.0);
        let one = self.c(1.0);
        let m1 = self.c(-1.0);
        let pos = self.cmp(FloatCC::GreaterThan, x, zero);
        let negm = self.cmp(FloatCC::LessThan, x, zero);
        let t = self.sel(negm, m1, zero);
        self.sel(pos, one, t)
    }

    /// e^x: n = round(x log2 e), r = x - n ln 2 (in two parts), a degree-5 polynomial,
    /// then 2^n applied in two halves so that results down to the smallest denormal and
    /// up to overflow are right. NaN stays NaN.
    pub fn exp(&mut self, x: Value) -> Value {
        let hi = self.c(89.0);
        let lo = self.c(-104.0);
        let over = self.cmp(FloatCC::GreaterThan, x, hi);
        let under = self.cmp(FloatCC::LessThan, x, lo);
        let xc = self.min(x, hi);
        let xc = self.max(xc, lo);
        let y = self.exp_core(xc, true);
        let inf = self.c(f32::INFINITY);
        let y = self.sel(over, inf, y);
        let zero = self.c(0.0);
        let y = self.sel(under, zero, y);
        let nan = self.nan_of(x);
        self.sel(nan, x, y)
    }

    /// e^x for x in [-104, 89], or NaN (which propagates: every step is arithmetic).
    /// `halves` applies 2^n in two steps, which results below 2^-126 (denormals) need;
    /// without it x must be at least -87.
    fn exp_core(&mut self, xc: Value, halves: bool) -> Value {
        let log2e = self.c(std::f32::consts::LOG2_E);
        let t = self.mul(xc, log2e);
        // n = round(t) by the magic-number trick: adding 1.5 * 2^23 rounds t to an integer
        // (to nearest even, as `nearest` does) in the low mantissa bits, which are n
        // itself once the magic's bits are subtracted. Four instructions where `nearest`
        // and a saturating conversion took nine; |t| <= 150 here.
        let magic = self.c(12_582_912.0);
        let tm = self.add(t, magic);
        let fx = self.sub(tm, magic);
        let c1 = self.c(-0.693_359_4);
        let c2 = self.c(2.121_944_4e-4);
        let r = self.fma(fx, c1, xc);
        let r = self.fma(fx, c2, r);
        let p = self
            .poly(r, &[1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1]);
        let r2 = self.mul(r, r);
        let one = self.c(1.0);
        let y = self.add(r, one);
        let y = self.fma(p, r2, y);
        let ity = self.ity();
        let tm_bits = self.b.ins().bitcast(ity, Self::little(), tm);
        let magic_bits = self.ci(0x4b40_0000);
        let n = self.b.ins().isub(tm_bits, magic_bits);
        if !halves {
            let s = self.pow2i(n);
            return self.mul(y, s);
        }
        let n1 = self.b.ins().sshr_imm_u(n, 1);
        let n2 = self.b.ins().isub(n, n1);
        let s1 = self.pow2i(n1);
        let s2 = self.pow2i(n2);
        let y = self.mul(y, s1);
        self.mul(y, s2)
    }

    /// ln x: x = m 2^e with m in [sqrt(1/2), sqrt 2), a degree-9 polynomial in m - 1.
    /// Denormals are scaled up first; log 0 = -inf, log of a negative = NaN, log inf = inf.
    pub fn log(&mut self, x: Value) -> Value {
        let fty = self.fty();
        let ity = self.ity();
        let tiny = self.c(f32::MIN_POSITIVE);
        let is_den = self.cmp(FloatCC::LessThan, x, tiny);
        let scale = self.c(8_388_608.0); // 2^23
        let xs = self.mul(x, scale);
        let xd = self.sel(is_den, xs, x);
        let bits = self.b.ins().bitcast(ity, Self::little(), xd);
        let e_raw = self.b.ins().ushr_imm_u(bits, 23);
        let bias = self.ci(126);
        let e_i = self.b.ins().isub(e_raw, bias);
        let e = self.b.ins().fcvt_from_sint(fty, e_i);
        let corr = self.c(23.0);
        let e_den = self.sub(e, corr);
        let mut e = self.sel(is_den, e_den, e);
        let mant_mask = self.ci(0x007f_ffff);
        let half_bits = self.ci(0x3f00_0000);
        let mb = self.b.ins().band(bits, mant_mask);
        let mb = self.b.ins().bor(mb, half_bits);
        let m = self.b.ins().bitcast(fty, Self::little(), mb); // [0.5, 1)
        let sqrth = self.c(std::f32::consts::FRAC_1_SQRT_2);
        let small = self.cmp(FloatCC::LessThan, m, sqrth);
        let one = self.c(1.0);
        let e_m1 = self.sub(e, one);
        e = self.sel(small, e_m1, e);
        let m2 = self.add(m, m);
        let a = self.sub(m2, one);
        let b = self.sub(m, one);
        let m = self.sel(small, a, b);
        let z = self.mul(m, m);
        let p = self.poly(
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
        let y = self.mul(p, m);
        let y = self.mul(y, z);
        let q1 = self.c(-2.121_944_4e-4);
        let y = self.fma(e, q1, y);
        let mhalf = self.c(-0.5);
        let y = self.fma(z, mhalf, y);
        let r = self.add(m, y);
        let q2 = self.c(0.693_359_4);
        let r = self.fma(e, q2, r);
        // Special cases.
        let zero = self.c(0.0);
        let is_zero = self.cmp(FloatCC::Equal, x, zero);
        let ninf = self.c(f32::NEG_INFINITY);
        let r = self.sel(is_zero, ninf, r);
        let inf = self.c(f32::INFINITY);
        let is_inf = self.cmp(FloatCC::Equal, x, inf);
        let r = self.sel(is_inf, inf, r);
        let neg = self.cmp(FloatCC::LessThan, x, zero);
        let nan = self.c(f32::NAN);
        let r = self.sel(neg, nan, r);
        let isnan = self.nan_of(x);
        self.sel(isnan, x, r)
    }

    /// tanh x: an odd polynomial below |x| = 0.625, else 1 - 2 / (e^{2|x|} + 1) with the
    /// sign of x. Above |x| = 10 tanh rounds to ±1, so 2|x| is clamped to 20 and e^{2|x|}
    /// needs no overflow or denormal handling; NaN propagates through both branches.
    pub fn tanh(&mut self, x: Value) -> Value {
        let ax = self.abs(x);
        let z = self.mul(x, x);
        let p = self.poly(z, &[-5.704_988_7e-3, 2.063_908_9e-2, -5.373_971_6e-2, 1.333_144_2e-1, -3.333_328_2e-1]);
        let pz = self.mul(p, z);
        let small = self.fma(pz, x, x);
        let two = self.c(2.0);
        let ax2 = self.mul(ax, two);
        let cap = self.c(20.0);
        let ax2 = self.min(ax2, cap);
        let e = self.exp_core(ax2, false);
        let one = self.c(1.0);
        let den = self.add(e, one);
        let q = self.div(two, den);
        let big = self.sub(one, q);
        let big = self.copysign(big, x);
        let lim = self.c(0.625);
        let is_small = self.cmp(FloatCC::LessThan, ax, lim);
        self.sel(is_small, small, big)
    }

    /// |m| with the sign of s (m >= 0 here): one and, one or.
    fn copysign(&mut self, m: Value, s: Value) -> Value {
        let ity = self.ity();
        let fty = self.fty();
        let mi = self.b.ins().bitcast(ity, Self::little(), m);
        let si = self.b.ins().bitcast(ity, Self::little(), s);
        let sign = self.ci(i32::MIN);
        let sb = self.b.ins().band(si, sign);
        let r = self.b.ins().bor(mi, sb);
        self.b.ins().bitcast(fty, Self::little(), r)
    }

    /// sigmoid x = 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) below, so both tails
    /// keep their relative precision (down to denormal results). e^-|x| is taken at
    /// -|x| clamped to -104, where it is already below half the smallest denormal; NaN
    /// propagates.
    pub fn sigmoid(&mut self, x: Value) -> Value {
        let ax = self.abs(x);
        let nax = self.neg(ax);
        let lo = self.c(-104.0);
        let nax = self.max(nax, lo);
        let e = self.exp_core(nax, true);
        let one = self.c(1.0);
        let den = self.add(one, e);
        let s = self.div(one, den);
        let es = self.mul(e, s);
        let zero = self.c(0.0);
        let neg = self.cmp(FloatCC::LessThan, x, zero);
        self.sel(neg, es, s)
    }

    /// erf x: x P(x^2) below |x| = 1; above, 1 - e^{-x^2} Q(1/|x|) / |x| with the sign
    /// of x (piecewise fits, see `erf_coefficients` in the tests). A NaN comes back as it
    /// came (its sign and payload are otherwise up to which NaN operand an instruction
    /// keeps, and `wide`'s 16-lane erf must give the same bits).
    pub fn erf(&mut self, x: Value) -> Value {
        let ax = self.abs(x);
        let z = self.mul(x, x);
        let p = self.poly(z, ERF_SMALL);
        let small = self.mul(p, x);
        // Large: erfc(a) = exp(-a^2) * R(t) / a with t = 1 / a. Above a = 4.5 erf rounds
        // to ±1, so a is clamped there: e^{-a^2} then needs no range handling, and NaN
        // propagates through every step.
        let cap = self.c(4.5);
        let ac = self.min(ax, cap);
        let one = self.c(1.0);
        let t = self.div(one, ac);
        let r1 = self.poly(t, ERFC_MID);
        let r2 = self.poly(t, ERFC_FAR);
        let two = self.c(2.0);
        let mid = self.cmp(FloatCC::LessThan, ac, two);
        let r = self.sel(mid, r1, r2);
        let zc = self.mul(ac, ac);
        let nz = self.neg(zc);
        let e = self.exp_core(nz, false);
        let er = self.mul(e, r);
        let erfc = self.mul(er, t);
        let big = self.sub(one, erfc);
        let big = self.copysign(big, x);
        let is_small = self.cmp(FloatCC::LessThan, ax, one);
        let y = self.sel(is_small, small, big);
        let nan = self.nan_of(x);
        self.sel(nan, x, y)
    }

    /// sin x or cos x, computed in f64 and rounded once to f32 (within 1 ulp of the
    /// correctly rounded result). The argument is reduced to r in [-π/4, π/4] and a
    /// quadrant: for |x| < 2^28 π/2 by Cody–Waite with 25 + 53 bits of π/2 (musl's
    /// `__rem_pio2f`); a vector with a larger (or infinite) lane takes a branch to the
    /// exact reduction of `reduce_exact`. Then musl's `__sindf`/`__cosdf` polynomials
    /// (errors below 2^-34). sin x = x below 2^-12 keeps the sign of zero.
    pub fn sin_cos(&mut self, x: Value, cos: bool) -> Value {
        let ax = self.abs(x);
        let lim = self.c(f32::from_bits(0x4dc9_0fdb)); // 2^28 π/2
        let big = self.cmp(FloatCC::GreaterThanOrEqual, ax, lim);
        let any = if self.vec { self.b.ins().vany_true(big.0) } else { big.0 };
        let fast = self.b.create_block();
        let slow = self.b.create_block();
        let join = self.b.create_block();
        let fty = self.fty();
        self.b.append_block_param(join, fty);
        self.b.ins().brif(any, slow, &[], fast, &[]);
        self.b.seal_block(fast);
        self.b.seal_block(slow);
        for (block, exact) in [(fast, false), (slow, true)] {
            self.b.switch_to_block(block);
            let y = self.sin_cos_lanes(x, cos, exact);
            self.b.ins().jump(join, &[cranelift_codegen::ir::BlockArg::Value(y)]);
        }
        self.b.seal_block(join);
        self.b.switch_to_block(join);
        let y = self.b.block_params(join)[0];
        if cos {
            return y;
        }
        let tiny = self.c(f32::from_bits(0x3980_0000)); // 2^-12
        let small = self.cmp(FloatCC::LessThan, ax, tiny);
        self.sel(small, x, y)
    }

    /// The f32 lanes widened to f64 (two halves for a vector), `sin_cos_f64`, narrowed.
    fn sin_cos_lanes(&mut self, x: Value, cos: bool, exact: bool) -> Value {
        if !self.vec {
            let d = self.b.ins().fpromote(types::F64, x);
            let y = self.sin_cos_f64(d, cos, exact);
            return self.b.ins().fdemote(types::F32, y);
        }
        let hi = shuffle_f32x4(self.b, x, x, [2, 3, 2, 3]);
        let mut halves = [x, hi];
        for h in &mut halves {
            let d = self.b.ins().fvpromote_low(*h);
            let y = self.sin_cos_f64(d, cos, exact);
            *h = self.b.ins().fvdemote(y);
        }
        shuffle_f32x4(self.b, halves[0], halves[1], [0, 1, 4, 5])
    }

    fn dty(&self) -> Type {
        if self.vec {
            types::F64X2
        } else {
            types::F64
        }
    }
    fn ity64(&self) -> Type {
        if self.vec {
            types::I64X2
        } else {
            types::I64
        }
    }
    fn dc(&mut self, v: f64) -> Value {
        let s = self.b.ins().f64const(v);
        if self.vec {
            self.b.ins().splat(types::F64X2, s)
        } else {
            s
        }
    }
    fn dci(&mut self, v: i64) -> Value {
        let s = self.b.ins().iconst(types::I64, v);
        if self.vec {
            self.b.ins().splat(types::I64X2, s)
        } else {
            s
        }
    }
    /// Horner's rule in f64 (highest power first).
    fn dpoly(&mut self, x: Value, c: &[f64]) -> Value {
        let mut acc = self.dc(c[0]);
        for &k in &c[1..] {
            let kk = self.dc(k);
            acc = self.b.ins().fma(acc, x, kk);
        }
        acc
    }

    /// sin or cos of f64 lanes `d` (widened f32s).
    fn sin_cos_f64(&mut self, d: Value, cos: bool, exact: bool) -> Value {
        let (r, q) = if exact { self.reduce_exact(d) } else { self.reduce_fast(d) };
        // cos x = sin(x + π/2): one more quadrant.
        let q = if cos {
            let one = self.dci(1);
            self.b.ins().iadd(q, one)
        } else {
            q
        };
        let b = &mut *self.b;
        let z = b.ins().fmul(r, r);
        let w = b.ins().fmul(z, z);
        // __sindf: (r + s (S1 + z S2)) + s w (S3 + z S4), s = z r.
        let s4 = self.dpoly(z, &[f64::from_bits(0x3ec6_cd87_8c3b_46a7), f64::from_bits(0xbf2a_00f9_e2ca_e774)]);
        let s2 = self.dpoly(z, &[f64::from_bits(0x3f81_1110_896e_fbb2), f64::from_bits(0xbfc5_5555_54cb_ac77)]);
        let b = &mut *self.b;
        let s = b.ins().fmul(z, r);
        let t = b.ins().fmul(s, s2);
        let t = b.ins().fadd(r, t);
        let sw = b.ins().fmul(s, w);
        let u = b.ins().fmul(sw, s4);
        let sin = b.ins().fadd(t, u);
        // __cosdf: ((1 + z C0) + w C1) + (w z)(C2 + z C3).
        let c3 = self.dpoly(z, &[f64::from_bits(0x3ef9_9342_e0ee_5069), f64::from_bits(0xbf56_c087_e80f_1e27)]);
        let c0 = self.dc(f64::from_bits(0xbfdf_ffff_fd0c_5e81));
        let c1 = self.dc(f64::from_bits(0x3fa5_5553_e105_3a42));
        let one = self.dc(1.0);
        let b = &mut *self.b;
        let a = b.ins().fmul(z, c0);
        let a = b.ins().fadd(one, a);
        let wc = b.ins().fmul(w, c1);
        let a = b.ins().fadd(a, wc);
        let wz = b.ins().fmul(w, z);
        let v = b.ins().fmul(wz, c3);
        let cosv = b.ins().fadd(a, v);
        // Quadrant q: odd takes the cosine polynomial, q & 2 flips the sign.
        let ity = self.ity64();
        let one_i = self.dci(1);
        let two_i = self.dci(2);
        let b = &mut *self.b;
        let odd = b.ins().band(q, one_i);
        let m = b.ins().ineg(odd); // all ones when odd
        let sb = b.ins().bitcast(ity, Self::little(), sin);
        let cb = b.ins().bitcast(ity, Self::little(), cosv);
        let pick_c = b.ins().band(cb, m);
        let pick_s = b.ins().band_not(sb, m);
        let y = b.ins().bor(pick_c, pick_s);
        let neg = b.ins().band(q, two_i);
        let neg = b.ins().ishl_imm_u(neg, 62);
        let y = b.ins().bxor(y, neg);
        let dty = self.dty();
        self.b.ins().bitcast(dty, Self::little(), y)
    }

    /// x = n π/2 + r for |x| < 2^28 π/2: n = round(x 2/π) by adding 1.5 2^52 (whose low
    /// mantissa bits are then n), r = x - n p1 - n p1t with p1 the first 25 bits of π/2
    /// (n p1 is exact) and p1t the rest.
    fn reduce_fast(&mut self, d: Value) -> (Value, Value) {
        let invpio2 = self.dc(f64::from_bits(0x3fe4_5f30_6dc9_c883));
        let toint = self.dc(6_755_399_441_055_744.0);
        let p1 = self.dc(f64::from_bits(0x3ff9_21fb_5000_0000));
        let p1t = self.dc(f64::from_bits(0x3e51_10b4_611a_6263));
        let ity = self.ity64();
        let b = &mut *self.b;
        let t = b.ins().fmul(d, invpio2);
        let t = b.ins().fadd(t, toint);
        let n = b.ins().fsub(t, toint);
        let q = b.ins().bitcast(ity, Self::little(), t);
        let a = b.ins().fmul(n, p1);
        let r = b.ins().fsub(d, a);
        let a = b.ins().fmul(n, p1t);
        let r = b.ins().fsub(r, a);
        (r, q)
    }

    /// The exact reduction, for any f32 x = m 2^e (m an integer below 2^24): x 2/π mod 4
    /// is the sum over 24-bit pieces P_j = d_j 2^(-24(j+1)) of 2/π of x P_j mod 4. Each
    /// product has at most 48 bits, so it is exact in f64, and so are its remainder mod 4
    /// and that remainder's integer and fractional parts. The integer parts are counted,
    /// the fractions summed in double-double. Nine pieces (216 bits) leave an absolute
    /// error below 2^-88 for x < 2^128. Infinities give NaN. The reduction runs on |x|
    /// (a negative product's remainder, 4 - |x P_j|, would round) and negates n and r after.
    fn reduce_exact(&mut self, x: Value) -> (Value, Value) {
        const PIECES: [u32; 9] =
            [0xa2f983, 0x6e4e44, 0x1529fc, 0x2757d1, 0xf534dd, 0xc0db62, 0x95993c, 0x439041, 0xfe5163];
        let ity = self.ity64();
        let dty = self.dty();
        let sign_bit = self.dci(i64::MIN);
        let xb = self.b.ins().bitcast(ity, Self::little(), x);
        let sign = self.b.ins().band(xb, sign_bit);
        let d = self.b.ins().fabs(x);
        let quarter = self.dc(0.25);
        let four = self.dc(4.0);
        let mut ints = self.dc(0.0);
        let mut hi = self.dc(0.0);
        let mut lo = self.dc(0.0);
        for (j, &p) in PIECES.iter().enumerate() {
            let pj = self.dc(f64::from(p) * 2f64.powi(-24 * (j as i32 + 1)));
            let b = &mut *self.b;
            let v = b.ins().fmul(d, pj);
            let q = b.ins().fmul(v, quarter);
            let q = b.ins().floor(q);
            let q4 = b.ins().fmul(q, four);
            let t = b.ins().fsub(v, q4); // [0, 4)
            let i = b.ins().floor(t);
            let f = b.ins().fsub(t, i);
            ints = b.ins().fadd(ints, i);
            // Two-sum: hi + f = s + err exactly.
            let s = b.ins().fadd(hi, f);
            let bb = b.ins().fsub(s, hi);
            let sb = b.ins().fsub(s, bb);
            let ea = b.ins().fsub(hi, sb);
            let eb = b.ins().fsub(f, bb);
            let err = b.ins().fadd(ea, eb);
            lo = b.ins().fadd(lo, err);
            hi = s;
        }
        let toint = self.dc(6_755_399_441_055_744.0);
        let pio2 = self.dc(std::f64::consts::FRAC_PI_2);
        let b = &mut *self.b;
        let t = b.ins().fadd(hi, toint);
        let n0 = b.ins().fsub(t, toint);
        let fr = b.ins().fsub(hi, n0);
        let fr = b.ins().fadd(fr, lo);
        let n = b.ins().fadd(ints, n0);
        // x < 0: -x = n π/2 + r gives x = (-n) π/2 + (-r).
        let negate = |b: &mut FunctionBuilder, v: Value| {
            let vb = b.ins().bitcast(ity, Self::little(), v);
            let vb = b.ins().bxor(vb, sign);
            b.ins().bitcast(dty, Self::little(), vb)
        };
        let fr = negate(b, fr);
        let n = negate(b, n);
        let n = b.ins().fadd(n, toint);
        let q = b.ins().bitcast(ity, Self::little(), n);
        let r = b.ins().fmul(fr, pio2);
        (r, q)
    }

    /// a^b as exp(b ln |a|), negative for a < 0 and odd integer b, NaN for a < 0 and
    /// non-integer b, and 1 for b = 0.
    pub fn pow(&mut self, a: Value, b: Value) -> Value {
        let aa = self.abs(a);
        let l = self.log(aa);
        let bl = self.mul(b, l);
        let mag = self.exp(bl);
        let zero = self.c(0.0);
        let half = self.c(0.5);
        let bi = self.b.ins().nearest(b);
        let is_int = self.cmp(FloatCC::Equal, bi, b);
        let hb = self.mul(b, half);
        let hbi = self.b.ins().nearest(hb);
        let is_even = self.cmp(FloatCC::Equal, hbi, hb);
        let neg_a = self.cmp(FloatCC::LessThan, a, zero);
        let nmag = self.neg(mag);
        let odd_neg = self.sel(is_even, mag, nmag);
        let nan = self.c(f32::NAN);
        let neg_res = self.sel(is_int, odd_neg, nan);
        let r = self.sel(neg_a, neg_res, mag);
        let one = self.c(1.0);
        let b0 = self.cmp(FloatCC::Equal, b, zero);
        self.sel(b0, one, r)
    }
}

// Least-squares fits on Chebyshev nodes in f64 (numpy), checked in f32 arithmetic:
// at most 2.3 ulp from erf over [0, 4.5] (see tests/jit.rs for the full-range check).

/// erf x / x as a polynomial in x^2 on [0, 1] (highest power first).
#[allow(clippy::approx_constant)] // the constant term is a fit, close to 2/sqrt(pi) by nature
pub const ERF_SMALL: &[f32] = &[
    -9.634_993e-6,
    1.125_464_1e-4,
    -8.482_507_5e-4,
    5.220_923e-3,
    -2.686_539_3e-2,
    1.128_378_2e-1,
    -3.761_263_8e-1,
    1.128_379_2,
];
/// erfc(a) a e^{a^2} as a polynomial in t = 1/a for a in [1, 2].
pub const ERFC_MID: &[f32] = &[
    -1.801_135_4e-2,
    1.352_517e-1,
    -4.461_231_5e-1,
    8.319_52e-1,
    -9.135_271e-1,
    4.858_889_3e-1,
    1.139_917_7e-1,
    -3.358_400_5e-1,
    1.065_166_8e-2,
    5.633_492e-1,
];
/// The same for a in [2, 12] (beyond, erf x rounds to 1).
pub const ERFC_FAR: &[f32] = &[
    9.418_779e-1,
    -2.838_111_6,
    3.487_952_2,
    -1.963_493_2,
    1.137_058_8e-1,
    4.232_622_7e-1,
    -2.193_919e-3,
    -2.817_810_8e-1,
    -1.932_369_6e-5,
    5.641_9e-1,
];

/// Four lanes picked from the concatenation of two f32x4 vectors (lanes 0-3 of `x`,
/// then 4-7 of `y`).
pub(super) fn shuffle_f32x4(b: &mut FunctionBuilder, x: Value, y: Value, lanes: [u8; 4]) -> Value {
    let little = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
    let bytes: Vec<u8> = lanes.iter().flat_map(|&l| (0..4).map(move |k| l * 4 + k)).collect();
    let mask = b.func.dfg.immediates.push(bytes.into());
    let xi = b.ins().bitcast(types::I8X16, little, x);
    let yi = b.ins().bitcast(types::I8X16, little, y);
    let r = b.ins().shuffle(xi, yi, mask);
    b.ins().bitcast(types::F32X4, little, r)
}
