//! Packing a left operand stored across the vectors: the GEMM driver's left panels hold,
//! for each depth step, `MR` consecutive rows of the crate's frame (its vector dimension).
//! When the operand is stored with its depth contiguous instead (`dy @ Wᵀ`, the backward
//! product through a weight read as stored: rows of `W` along the vectors, each row
//! contiguous along the depth), the `gemm-common` routine gathers one float at a time.
//! Here the AVX-512 version moves 16 x 16 blocks through registers with the usual
//! three-stage transpose (64 shuffles per 256 floats): the MLP's `128x256 @ (512x256)ᵀ`
//! packs 512 x 256 floats a step.
//!
//! The same register transpose runs the host's transposes of two axes (`transpose`: an
//! attention's `Kᵀ`, [16, 256, 4, 32] read as [16, 4, 32, 256]), which an index map moved
//! one float at a time.
//!
//! The layout is the crate's (`gemm_common::pack_operands::pack_lhs`), so either routine
//! feeds the same microkernels; the tests compare the two bit for bit over every float a
//! microkernel reads (the crate also zeroes a partial panel's rows up to 64).

/// The panel width this routine packs (the AVX-512 microkernels' `MR`).
pub const MR: usize = 64;

/// Whether `pack_lhs_t` runs on this CPU (AVX-512F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Packs `m` rows by `k` depth steps of `src` (row `i`, depth `d` at `src[i * rs + d]`)
/// into panels of `MR` rows, `stride` floats apart: panel `p` holds at `d * MR + j` the
/// element of row `p * MR + j` and depth `d`, zeros past the last row up to a multiple of
/// 16 (the microkernels read whole vectors of a panel, no more than its rows need).
/// # Safety
/// The CPU must have AVX-512F (`available`); `src` must address every (row, depth) above,
/// and `dst` hold `m.div_ceil(MR)` panels of `stride >= k * MR` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn pack_lhs_t(m: usize, k: usize, dst: *mut f32, src: *const f32, rs: isize, stride: usize) {
    for panel in 0..m.div_ceil(MR) {
        let width = (m - panel * MR).min(MR);
        let psrc = src.wrapping_offset((panel * MR) as isize * rs);
        let pdst = dst.wrapping_add(panel * stride);
        for d0 in (0..k).step_by(16) {
            for i0 in (0..width).step_by(16) {
                let from = psrc.wrapping_offset(i0 as isize * rs + d0 as isize);
                // SAFETY: rows i0.. < width and depths d0.. < k exist in `src`; depths
                // d0.. of the panel lie in its `stride` floats, rows up to i0 + 16 <= MR
                // (those past `width` get zeros).
                unsafe { block(from, rs, (width - i0).min(16), (k - d0).min(16), pdst.add(d0 * MR + i0), MR, 16) };
            }
        }
    }
}

/// One 16 x 16 block through the registers: `n` source rows (`ss` apart) of `m` floats
/// become `m` destination rows (`ds` apart), each the `n` floats of one column, zeros
/// after them, of which the first `keep` are stored.
/// # Safety
/// AVX-512F; `src` holds the source rows, `dst` the first `keep` floats of each
/// destination row; `n`, `m` and `keep` at most 16.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn block(src: *const f32, ss: isize, n: usize, m: usize, dst: *mut f32, ds: usize, keep: usize) {
    use std::arch::x86_64::*;
    let mask = |n: usize| -> __mmask16 {
        if n >= 16 {
            0xFFFF
        } else {
            (1u16 << n) - 1
        }
    };
    let mut v = [_mm512_setzero_ps(); 16];
    for (i, x) in v.iter_mut().enumerate().take(n) {
        // SAFETY: source row i < n, its floats masked to the first m.
        *x = unsafe { _mm512_maskz_loadu_ps(mask(m), src.wrapping_offset(i as isize * ss)) };
    }
    for (j, x) in transpose16(v).iter().enumerate().take(m) {
        // SAFETY: destination row j < m, its floats masked to the first `keep`.
        unsafe { _mm512_mask_storeu_ps(dst.add(j * ds), mask(keep), *x) };
    }
}

/// `dst[r * cols + c] = src[c * cs + r]`: `src` holds `cols` rows of `rows` floats, `cs`
/// apart, `dst` gets their transpose, `rows` x `cols`, row-major. Slices too short for
/// that are left alone. 16 x 16 blocks through AVX-512 registers, edges with masks; a
/// blocked scalar loop on other CPUs.
pub fn transpose(src: &[f32], dst: &mut [f32], rows: usize, cols: usize, cs: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    let need = (cols - 1).checked_mul(cs).and_then(|x| x.checked_add(rows));
    match (need, rows.checked_mul(cols)) {
        (Some(a), Some(b)) if src.len() >= a && dst.len() >= b => {}
        _ => return,
    }
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX-512F is present; the lengths were checked above.
        return unsafe { transpose_avx512(src.as_ptr(), dst.as_mut_ptr(), rows, cols, cs) };
    }
    transpose_blocked(src, dst, rows, cols, cs);
}

/// `transpose` in 32 x 32 blocks of scalar moves (lengths checked there).
fn transpose_blocked(src: &[f32], dst: &mut [f32], rows: usize, cols: usize, cs: usize) {
    const B: usize = 32;
    for c0 in (0..cols).step_by(B) {
        for r0 in (0..rows).step_by(B) {
            for c in c0..(c0 + B).min(cols) {
                for r in r0..(r0 + B).min(rows) {
                    dst[r * cols + c] = src[c * cs + r];
                }
            }
        }
    }
}

/// `transpose` in 16 x 16 register blocks.
/// # Safety
/// AVX-512F; `src` holds `(cols - 1) * cs + rows` floats and `dst` `rows * cols`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_avx512(src: *const f32, dst: *mut f32, rows: usize, cols: usize, cs: usize) {
    for c0 in (0..cols).step_by(16) {
        let dc = (cols - c0).min(16);
        for r0 in (0..rows).step_by(16) {
            // SAFETY: source rows c0.. < cols with floats r0.. < rows; destination rows
            // r0.. < rows with columns c0.. < cols (as for this function).
            unsafe {
                block(src.add(c0 * cs + r0), cs as isize, dc, (rows - r0).min(16), dst.add(r0 * cols + c0), cols, dc)
            };
        }
    }
}

/// The 16 x 16 transpose: `v[r]` holds row `r`; the result's `c` holds column `c`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(v: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    // Pairs of rows interleaved within each 128-bit lane: [a0 b0 a1 b1], [a2 b2 a3 b3].
    let mut t = [_mm512_setzero_ps(); 16];
    for j in 0..8 {
        t[2 * j] = _mm512_unpacklo_ps(v[2 * j], v[2 * j + 1]);
        t[2 * j + 1] = _mm512_unpackhi_ps(v[2 * j], v[2 * j + 1]);
    }
    // Quads: u[4q + c] holds, in lane L, column 4L + c of rows 4q..4q+4.
    let mut u = [_mm512_setzero_ps(); 16];
    for q in 0..4 {
        let (t0, t1, t2, t3) = (t[4 * q], t[4 * q + 1], t[4 * q + 2], t[4 * q + 3]);
        let pd = |a: __m512, b: __m512, hi: bool| {
            let (a, b) = (_mm512_castps_pd(a), _mm512_castps_pd(b));
            _mm512_castpd_ps(if hi { _mm512_unpackhi_pd(a, b) } else { _mm512_unpacklo_pd(a, b) })
        };
        u[4 * q] = pd(t0, t2, false);
        u[4 * q + 1] = pd(t0, t2, true);
        u[4 * q + 2] = pd(t1, t3, false);
        u[4 * q + 3] = pd(t1, t3, true);
    }
    // Lanes gathered across the four quads: column 4L + c is lane L of u[c], u[4 + c],
    // u[8 + c], u[12 + c].
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let x0 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let y0 = _mm512_shuffle_f32x4::<0xDD>(u[c], u[4 + c]);
        let x1 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let y1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(x0, x1);
        out[8 + c] = _mm512_shuffle_f32x4::<0xDD>(x0, x1);
        out[4 + c] = _mm512_shuffle_f32x4::<0x88>(y0, y1);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(y0, y1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every edge (partial blocks on either side, one row, one column, rows further
    /// apart than their length) against the definition, on this CPU's path and the
    /// scalar one, never writing past the result.
    #[test]
    fn transposes_match_the_definition() {
        let cases = [
            (1usize, 1usize, 1usize),
            (1, 37, 1),
            (37, 1, 40),
            (16, 16, 16),
            (17, 15, 17),
            (33, 70, 50),
            (512, 256, 512),
            (100, 3, 100),
            (32, 256, 128),
        ];
        for &(rows, cols, cs) in &cases {
            let src: Vec<f32> = (0..(cols - 1) * cs + rows).map(|i| i as f32).collect();
            type Transpose = fn(&[f32], &mut [f32], usize, usize, usize);
            let paths: [(&str, Transpose); 2] = [("this CPU's", transpose), ("scalar", transpose_blocked)];
            for (path, f) in paths {
                let mut dst = vec![f32::NAN; rows * cols + 5];
                f(&src, &mut dst, rows, cols, cs);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(dst[r * cols + c], src[c * cs + r], "{path}: {rows}x{cols} ({cs}) at ({r}, {c})");
                    }
                }
                assert!(dst[rows * cols..].iter().all(|x| x.is_nan()), "{path}: {rows}x{cols}: wrote past the result");
            }
            // A source one float short is left alone.
            let mut dst = vec![f32::NAN; rows * cols];
            transpose(&src[..src.len() - 1], &mut dst, rows, cols, cs);
            assert!(dst.iter().all(|x| x.is_nan()));
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn matches_the_crates_packing() {
        if !available() {
            return;
        }
        for &(m, k, rs) in &[
            (1usize, 1usize, 1usize),
            (5, 3, 7),
            (16, 16, 16),
            (17, 33, 40),
            (64, 16, 64),
            (70, 45, 70),
            (130, 100, 131),
            (512, 256, 256),
        ] {
            let src: Vec<f32> = (0..m * rs + k).map(|i| i as f32 * 0.5 - 3.0).collect();
            let stride = k.next_multiple_of(16) * MR + 16;
            let panels = m.div_ceil(MR);
            let mut ours = vec![f32::NAN; panels * stride];
            let mut theirs = ours.clone();
            // SAFETY: AVX-512F is present; the buffers hold the source rows and the panels.
            unsafe {
                pack_lhs_t(m, k, ours.as_mut_ptr(), src.as_ptr(), rs as isize, stride);
                gemm_common::pack_operands::pack_lhs::<f32, 16, MR, _>(
                    gemm_common::simd::Avx512f,
                    m,
                    k,
                    gemm_common::Ptr(theirs.as_mut_ptr()),
                    gemm_common::Ptr(src.as_ptr() as *mut f32),
                    1,
                    rs as isize,
                    stride,
                );
            }
            for p in 0..panels {
                let read = (m - p * MR).min(MR).next_multiple_of(16);
                for d in 0..k {
                    for j in 0..read {
                        let i = p * stride + d * MR + j;
                        let (a, b) = (ours[i], theirs[i]);
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{m}x{k} (rows {rs} apart): panel {p} depth {d} row {j}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
