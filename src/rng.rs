//! Random numbers. Two kinds:
//! - the counter-based generator behind `Op::Rand` (dropout masks): element `i` of stream
//!   `s` at step `t` of a run with seed `seed` is a pure function of those four numbers,
//!   so a (seed, step) pair always gives the same mask, in any backend and any order;
//! - `SplitMix64`, a small sequential generator for initializers and synthetic data;
//!   data augmentation seeds one per (seed, epoch, sample) with `sample_key`, a pure
//!   function of those three counters.

/// The per-(seed, step, stream) key, mixed on the host once per step.
pub fn stream_key(seed: u64, step: u64, stream: u32) -> u32 {
    let mut s = SplitMix64::new(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(stream) << 32));
    (s.next_u64() >> 32) as u32
}

/// The seed of a training sample's augmentation draws in an epoch: a pure function of
/// (seed, epoch, row), so any batch order or a resumed run draws the same numbers.
pub fn sample_key(seed: u64, epoch: u64, row: u64) -> u64 {
    let mut s = SplitMix64::new(seed ^ 0x6175_676D_656E_7421); // "augment!"
    let a = s.next_u64();
    let mut s = SplitMix64::new(a ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let b = s.next_u64();
    SplitMix64::new(b ^ row.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// Uniform [0, 1) from a key and an element index: the murmur3 finalizer of
/// `index * golden ^ key`, keeping 24 bits (exact in f32). Only 32-bit integer multiply,
/// xor and shifts, so vector code can compute the same numbers.
pub fn uniform(key: u32, index: u32) -> f32 {
    let mut h = index.wrapping_mul(0x9E37_79B1) ^ key;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^= h >> 16;
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// SplitMix64 (Steele, Lea, Flood 2014): fast, full-period, good enough for
/// initialization and synthetic data.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }
    /// Standard normal by Box-Muller (one value per call; simple and deterministic).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // in (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The 64-bit FNV-1a hash, fed bytes in pieces: the one hash behind per-name seeds, the
/// data hash checkpoints record and the parameter hash ranks compare.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Adds bytes.
    pub fn eat(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash of everything eaten.
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// FNV-1a of a string: stable per-name seeds (adding a parameter does not change the
/// initial values of the others).
pub fn name_hash(s: &str) -> u64 {
    let mut h = Fnv::default();
    h.eat(s.as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_in_range_and_spread() {
        let k = stream_key(0, 0, 0);
        let n = 100_000;
        let xs: Vec<f32> = (0..n).map(|i| uniform(k, i)).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean: f64 = xs.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        let below: usize = xs.iter().filter(|&&x| x < 0.2).count();
        assert!((below as f64 / n as f64 - 0.2).abs() < 0.005);
        assert_ne!(stream_key(0, 0, 0), stream_key(0, 1, 0));
        assert_ne!(stream_key(0, 0, 0), stream_key(0, 0, 1));
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = SplitMix64::new(7);
        let xs: Vec<f64> = (0..100_000).map(|_| r.normal()).collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64;
        assert!(m.abs() < 0.02 && (v - 1.0).abs() < 0.02, "mean {m} var {v}");
    }
}
