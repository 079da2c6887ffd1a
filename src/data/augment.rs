//! Data augmentation: consumes a checked `settings::augment::Plan`, raw training rows and
//! the run's seed and epoch; produces the augmented rows of one batch, preprocessed.
//!
//! Each sample's random draws come from its own generator, keyed by (seed, epoch, row of
//! the data set) (`rng::sample_key`): the same sample in the same epoch is augmented the
//! same way whatever the batch size, the order of the batches or a `--resume` in between.
//! Augmentations run in the order listed, on the raw values (before the fitted
//! preprocessing, which is applied to the augmented rows after them, as torchvision
//! augments images before it normalizes them).
//!
//! Images are `[C, H, W]` row-major, one sample at a time; zero fill everywhere (a zero
//! of the raw data: black for IDX images scaled to [0, 1]).

use crate::rng::{sample_key, SplitMix64};
use crate::settings::augment::{Op, Plan};

use super::{Array, ArrayData, Preprocessor};

/// Mirrors the W axis.
pub fn flip_horizontal(img: &mut [f32], [c, h, w]: [usize; 3]) {
    for row in img.chunks_mut(w.max(1)).take(c * h) {
        row.reverse();
    }
}

/// Moves the image by `dy` rows down and `dx` columns right: `out[i][j] = img[i-dy][j-dx]`,
/// zero where that is outside the image.
pub fn shift(img: &[f32], [c, h, w]: [usize; 3], dy: i64, dx: i64) -> Vec<f32> {
    let mut out = vec![0.0f32; img.len()];
    let (hi, wi) = (h as i64, w as i64);
    for ch in 0..c {
        let base = ch * h * w;
        for i in 0..hi {
            let si = i - dy;
            if !(0..hi).contains(&si) {
                continue;
            }
            for j in 0..wi {
                let sj = j - dx;
                if (0..wi).contains(&sj) {
                    out[base + (i * wi + j) as usize] = img[base + (si * wi + sj) as usize];
                }
            }
        }
    }
    out
}

/// Pads the image by `padding` zeros on every side and takes the H x W window whose
/// top-left corner is (`top`, `left`) in the padded image (each in 0..=2·padding):
/// `out[i][j] = img[i + top - padding][j + left - padding]`.
pub fn crop(img: &[f32], shape: [usize; 3], padding: usize, top: usize, left: usize) -> Vec<f32> {
    shift(img, shape, padding as i64 - top as i64, padding as i64 - left as i64)
}

/// Rotates the image counter-clockwise by `degrees` about its centre ((H-1)/2, (W-1)/2),
/// bilinear, zero outside: `out[i][j]` is the image at x = cx + cos·(j-cx) − sin·(i-cy),
/// y = cy + sin·(j-cx) + cos·(i-cy) (x to the right, y down). 90 degrees on a square is
/// `out[i][j] = img[j][W-1-i]`, NumPy's `rot90`.
pub fn rotate(img: &[f32], [c, h, w]: [usize; 3], degrees: f64) -> Vec<f32> {
    let mut out = vec![0.0f32; img.len()];
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let (hi, wi) = (h as i64, w as i64);
    for ch in 0..c {
        let plane = &img[ch * h * w..(ch + 1) * h * w];
        let at = |y: i64, x: i64| -> f64 {
            if (0..hi).contains(&y) && (0..wi).contains(&x) {
                f64::from(plane[(y * wi + x) as usize])
            } else {
                0.0
            }
        };
        for i in 0..h {
            for j in 0..w {
                let (dy, dx) = (i as f64 - cy, j as f64 - cx);
                let x = cx + cos * dx - sin * dy;
                let y = cy + sin * dx + cos * dy;
                let (x0, y0) = (x.floor(), y.floor());
                let (fx, fy) = (x - x0, y - y0);
                let (x0, y0) = (x0 as i64, y0 as i64);
                let v = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                    + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
                out[ch * h * w + i * w + j] = v as f32;
            }
        }
    }
    out
}

/// A uniform integer in [-max, max].
fn offset(r: &mut SplitMix64, max: usize) -> i64 {
    r.below(2 * max as u64 + 1) as i64 - max as i64
}

/// Augments one sample in place with the draws of `r`.
pub fn sample(plan: &Plan, x: &mut [f32], r: &mut SplitMix64) {
    let shape = plan.image.unwrap_or([1, 1, x.len()]);
    for op in &plan.ops {
        match *op {
            Op::FlipHorizontal { p } => {
                if r.next_f64() < p {
                    flip_horizontal(x, shape);
                }
            }
            Op::Shift { max } => {
                let (dy, dx) = (offset(r, max), offset(r, max));
                x.copy_from_slice(&shift(x, shape, dy, dx));
            }
            Op::Crop { padding } => {
                let top = r.below(2 * padding as u64 + 1) as usize;
                let left = r.below(2 * padding as u64 + 1) as usize;
                x.copy_from_slice(&crop(x, shape, padding, top, left));
            }
            Op::Rotate { degrees } => {
                let angle = r.uniform(-degrees, degrees);
                x.copy_from_slice(&rotate(x, shape, angle));
            }
            Op::Noise { std } => {
                for v in x.iter_mut() {
                    *v += (std * r.normal()) as f32;
                }
            }
        }
    }
}

/// The augmented input of the training `rows` in epoch `epoch` (0-based): the rows of
/// `raw` (the input's unpreprocessed array), each augmented with its own draws, then
/// preprocessed by `pre` when it transforms this input.
pub fn batch(
    plan: &Plan,
    raw: &Array,
    rows: &[usize],
    seed: u64,
    epoch: u64,
    pre: &Preprocessor,
) -> Result<Array, String> {
    let mut out = raw.gather(rows);
    let ArrayData::F32(values) = &mut out.data else {
        return Err(format!("augment: the input `{}` is not f32", plan.input));
    };
    let d = raw.per_sample();
    if let Some([c, h, w]) = plan.image {
        if c * h * w != d {
            return Err(format!("augment: `{}` has {d} values per sample, not {c}x{h}x{w}", plan.input));
        }
    }
    for (x, &row) in values.chunks_mut(d.max(1)).zip(rows.iter().filter(|&&r| r < raw.rows())) {
        let mut r = SplitMix64::new(sample_key(seed, epoch, row as u64));
        sample(plan, x, &mut r);
    }
    if pre.input == plan.input {
        pre.apply_values(values)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S3: [usize; 3] = [1, 3, 3];
    fn img3() -> Vec<f32> {
        (1..=9).map(|v| v as f32).collect()
    }

    #[test]
    fn flip_of_a_3x3() {
        let mut x = img3();
        flip_horizontal(&mut x, S3);
        assert_eq!(x, vec![3., 2., 1., 6., 5., 4., 9., 8., 7.]);
        // Two channels flip separately.
        let mut y: Vec<f32> = (0..8).map(|v| v as f32).collect();
        flip_horizontal(&mut y, [2, 2, 2]);
        assert_eq!(y, vec![1., 0., 3., 2., 5., 4., 7., 6.]);
    }

    #[test]
    fn shift_by_one_fills_zeros() {
        assert_eq!(shift(&img3(), S3, 1, 0), vec![0., 0., 0., 1., 2., 3., 4., 5., 6.]);
        assert_eq!(shift(&img3(), S3, 0, -1), vec![2., 3., 0., 5., 6., 0., 8., 9., 0.]);
        assert_eq!(shift(&img3(), S3, -1, 1), vec![0., 4., 5., 0., 7., 8., 0., 0., 0.]);
        assert_eq!(shift(&img3(), S3, 3, 0), vec![0.0; 9]);
        assert_eq!(shift(&img3(), S3, 0, 0), img3());
    }

    #[test]
    fn crop_window_placement() {
        // Padding 1 gives a 5x5 padded image; the window at (0, 0) is the image moved one
        // down and right, (1, 1) the image itself, (2, 2) moved one up and left.
        assert_eq!(crop(&img3(), S3, 1, 0, 0), vec![0., 0., 0., 0., 1., 2., 0., 4., 5.]);
        assert_eq!(crop(&img3(), S3, 1, 1, 1), img3());
        assert_eq!(crop(&img3(), S3, 1, 2, 2), vec![5., 6., 0., 8., 9., 0., 0., 0., 0.]);
        assert_eq!(crop(&img3(), S3, 1, 0, 2), vec![0., 0., 0., 2., 3., 0., 5., 6., 0.]);
    }

    #[test]
    fn rotate_by_90_is_a_transposed_flip() {
        let x = img3();
        let r = rotate(&x, S3, 90.0);
        // np.rot90: out[i][j] = x[j][2 - i].
        let want = [3., 6., 9., 2., 5., 8., 1., 4., 7.];
        for (a, b) in r.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{r:?}");
        }
        let r = rotate(&x, S3, -90.0);
        let want = [7., 4., 1., 8., 5., 2., 9., 6., 3.];
        for (a, b) in r.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{r:?}");
        }
        let r = rotate(&x, S3, 0.0);
        assert_eq!(r, x);
        // A 4x4 image by 90: the centre (1.5, 1.5) is between pixels, still a permutation.
        let y: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let r = rotate(&y, [1, 4, 4], 90.0);
        for i in 0..4 {
            for j in 0..4 {
                assert!((r[i * 4 + j] - y[j * 4 + 3 - i]).abs() < 1e-4, "{r:?}");
            }
        }
    }

    #[test]
    fn rotate_by_45_interpolates_and_fills_zeros() {
        // A 3x3 image of ones turned by 45 degrees: the centre and the edge midpoints read
        // inside the image (1); a corner reads the source point (x, y) = (1, 1 - √2), of
        // which the fraction 2 - √2 lies inside: bilinear weight of the row y = 0.
        let r = rotate(&[1.0; 9], S3, 45.0);
        let corner = 2.0 - 2f32.sqrt();
        let want = [corner, 1.0, corner, 1.0, 1.0, 1.0, corner, 1.0, corner];
        for (a, b) in r.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{r:?}");
        }
    }

    #[test]
    fn noise_has_the_asked_moments() {
        let plan = Plan { input: "x".into(), image: None, ops: vec![Op::Noise { std: 0.5 }] };
        let mut x = vec![2.0f32; 100_000];
        let mut r = SplitMix64::new(3);
        sample(&plan, &mut x, &mut r);
        let n = x.len() as f64;
        let m = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let v = x.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / n;
        assert!((m - 2.0).abs() < 0.01, "mean {m}");
        assert!((v.sqrt() - 0.5).abs() < 0.01, "std {}", v.sqrt());
    }

    #[test]
    fn flip_probability_is_p() {
        let plan = Plan { input: "x".into(), image: Some(S3), ops: vec![Op::FlipHorizontal { p: 0.3 }] };
        let mut flips = 0;
        for row in 0..10_000u64 {
            let mut x = img3();
            sample(&plan, &mut x, &mut SplitMix64::new(sample_key(1, 0, row)));
            flips += usize::from(x[0] == 3.0);
        }
        assert!((flips as f64 / 10_000.0 - 0.3).abs() < 0.02, "{flips}");
    }

    #[test]
    fn shift_offsets_cover_the_range_uniformly() {
        let mut seen = [0usize; 5];
        let mut r = SplitMix64::new(9);
        for _ in 0..50_000 {
            let o = offset(&mut r, 2);
            assert!((-2..=2).contains(&o));
            seen[(o + 2) as usize] += 1;
        }
        assert!(seen.iter().all(|&k| (k as f64 / 10_000.0 - 1.0).abs() < 0.05), "{seen:?}");
    }

    #[test]
    fn a_batch_depends_on_seed_epoch_and_row_only() {
        let plan = Plan {
            input: "x".into(),
            image: Some(S3),
            ops: vec![Op::Shift { max: 1 }, Op::Noise { std: 0.1 }, Op::Rotate { degrees: 10.0 }],
        };
        let values: Vec<f32> = (0..45).map(|v| v as f32).collect();
        let raw = Array { shape: vec![5, 1, 3, 3], data: ArrayData::F32(values) };
        let none = Preprocessor::none();
        let all = batch(&plan, &raw, &[0, 1, 2, 3, 4], 7, 2, &none).unwrap_or_else(|e| panic!("{e}"));
        let part = batch(&plan, &raw, &[3, 1], 7, 2, &none).unwrap_or_else(|e| panic!("{e}"));
        let (ArrayData::F32(a), ArrayData::F32(p)) = (&all.data, &part.data) else { panic!("f32") };
        assert_eq!(&p[..9], &a[27..36]);
        assert_eq!(&p[9..], &a[9..18]);
        let other = batch(&plan, &raw, &[0, 1, 2, 3, 4], 7, 3, &none).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(other.data, all.data, "another epoch draws again");
        let again = batch(&plan, &raw, &[0, 1, 2, 3, 4], 7, 2, &none).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.data, all.data);
    }

    #[test]
    fn preprocessing_follows_augmentation() {
        let plan = Plan { input: "x".into(), image: Some([1, 1, 2]), ops: vec![Op::FlipHorizontal { p: 1.0 }] };
        let raw = Array { shape: vec![1, 1, 2], data: ArrayData::F32(vec![1.0, 5.0]) };
        let pre = Preprocessor {
            kind: super::super::PreprocessKind::Standardize,
            input: "x".into(),
            dim: 2,
            mean: vec![1.0, 3.0],
            scale: vec![2.0, 4.0],
            matrix: vec![],
        };
        let out = batch(&plan, &raw, &[0], 0, 0, &pre).unwrap_or_else(|e| panic!("{e}"));
        // Flipped [5, 1], then standardized per feature: (5-1)/2, (1-3)/4.
        assert_eq!(out.data, ArrayData::F32(vec![2.0, -0.5]));
    }
}
