//! Row-major layouts: strides, gather offsets and convolution window maps, shared by the
//! reference interpreter and the host kernels of the code generator (which precompute
//! index tables from them).

use super::Window;

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// For each element of an output of `shape` (row-major), the source offset
/// `base + sum(idx[i] * src_strides[i])`.
pub fn gather_offsets(shape: &[usize], src_strides: &[usize], base: usize) -> Vec<usize> {
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let Some((&last, outer)) = shape.split_last() else {
        out.push(base);
        return out;
    };
    if n == 0 {
        return out;
    }
    // Row by row: `cur` is the offset of the row's first element, kept as the index
    // advances (a step adds a stride; a wrap takes back what the dim added).
    let ls = src_strides[outer.len()];
    let mut idx = vec![0usize; outer.len()];
    let mut cur = base;
    loop {
        out.extend((0..last).map(|k| cur + k * ls));
        let mut a = outer.len();
        loop {
            if a == 0 {
                return out;
            }
            a -= 1;
            idx[a] += 1;
            if idx[a] < outer[a] {
                cur += src_strides[a];
                break;
            }
            idx[a] = 0;
            cur -= (outer[a] - 1) * src_strides[a];
        }
    }
}

/// For each element of a tensor of shape `shape` (row-major), the offset in a tensor of
/// shape `within` of the element with the same index but along `axis`, where index i
/// goes to `start + i * step` (`step` may be negative: a reversed slice). A `Slice` reads
/// its source at these offsets; a `Pad` writes its operand to them.
pub fn strided_offsets(shape: &[usize], within: &[usize], axis: usize, start: i64, step: i64) -> Vec<usize> {
    let ws = strides(within);
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        let mut o = 0i64;
        for (d, (&i, &s)) in idx.iter().zip(&ws).enumerate() {
            let i = if d == axis { start + i as i64 * step } else { i as i64 };
            o += i * s as i64;
        }
        out.push(o as usize);
        for a in (0..shape.len()).rev() {
            idx[a] += 1;
            if idx[a] < shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    out
}

/// Calls `f(patch_offset, image_offset)` for every in-bounds pair of the window
/// mapping between an image `[N, C, H, W]` and its patches `[N, C, kh, kw, OH, OW]`.
pub fn im2col_map(img: &[usize], w: &Window, patches: &[usize], mut f: impl FnMut(usize, usize)) {
    let (nb, c, h, wd) = (img[0], img[1], img[2] as i64, img[3] as i64);
    let (oh, ow) = (patches[4], patches[5]);
    let (kh, kw) = (w.kh as usize, w.kw as usize);
    let mut o = 0;
    for b in 0..nb {
        for ch in 0..c {
            let base = (b * c + ch) * (h * wd) as usize;
            for i in 0..kh {
                for j in 0..kw {
                    for y in 0..oh {
                        let iy = (y * w.stride_h as usize + i) as i64 - w.pad_h as i64;
                        for x in 0..ow {
                            let ix = (x * w.stride_w as usize + j) as i64 - w.pad_w as i64;
                            if iy >= 0 && iy < h && ix >= 0 && ix < wd {
                                f(o, base + (iy * wd + ix) as usize);
                            }
                            o += 1;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row-by-row offsets equal `base + sum(idx[i] * src_strides[i])` at every index,
    /// for transposes, broadcasts (stride 0), slices and scalars.
    #[test]
    fn gather_offsets_match_their_definition() {
        for (shape, src, base) in [
            (vec![2, 3, 4], vec![1, 2, 6], 0),
            (vec![3, 1, 2, 2, 5, 7], vec![35, 0, 0, 0, 7, 1], 3),
            (vec![4, 5], vec![0, 1], 9),
            (vec![7], vec![2], 1),
            (vec![], vec![], 5),
            (vec![2, 0, 3], vec![1, 1, 1], 0),
        ] {
            let n: usize = shape.iter().product();
            let mut want = Vec::with_capacity(n);
            for k in 0..n {
                let (mut rest, mut off) = (k, base);
                for a in (0..shape.len()).rev() {
                    off += (rest % shape[a]) * src[a];
                    rest /= shape[a];
                }
                want.push(off);
            }
            assert_eq!(gather_offsets(&shape, &src, base), want, "{shape:?} {src:?}");
        }
    }
}
