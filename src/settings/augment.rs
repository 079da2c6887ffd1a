//! The `augment` setting: its list of augmentations (`augment_spec`), and `plan`, which
//! checks them against the model's inputs (which input, what image shape) and gives the
//! `Plan` that the data layer runs on every training batch (`data::augment`).
//!
//! - The augmented input is the model's float input other than the labels `y`; with
//!   several, `augment_input = name` chooses.
//! - Its per-sample shape says what an image is: `[C, H, W]` (channels first) or `[H, W]`
//!   (one channel); `augment_shape = [C, H, W]` or `[H, W]` reads a flat `[B, D]` input as
//!   an image (D = C·H·W). Any other input is a vector, which takes `noise` only.
//! - `crop(size, padding)` pads and crops back to the image's own size: the data rows are
//!   bound to the model's input, so a window of another size would not fit it; `size` must
//!   be H = W (or 0: the image's size, for any H and W).

use super::values::{ArgSpec, Ty, INF, UNIT};
use crate::ir::recipe::{Choice, Lit, TrainSettings};

/// The labels input (`data::LABEL_INPUT`), never augmented.
const LABELS: &str = "y";

/// The augmentations and their arguments (docs/language.md, `augment`).
pub(super) fn augment_spec(name: &str) -> Option<Vec<ArgSpec>> {
    let pixels = Ty::Int(0, 1 << 16);
    Some(match name {
        "flip_horizontal" => vec![("p", UNIT, Some(Lit::Num(0.5)))],
        "shift" => vec![("max", pixels, None)],
        "crop" => vec![("size", pixels, Some(Lit::Num(0.0))), ("padding", pixels, Some(Lit::Num(0.0)))],
        "noise" => vec![("std", Ty::Num(0.0, INF), None)],
        "rotate" => vec![("degrees", Ty::Num(0.0, 180.0), None)],
        _ => return None,
    })
}
pub(super) const AUGMENT_NAMES: &str = "flip_horizontal, shift, crop, noise, rotate";

/// One augmentation, checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Mirror the W axis with probability `p`.
    FlipHorizontal { p: f64 },
    /// Move the image by integer offsets in [-max, max] per axis, zero fill.
    Shift { max: usize },
    /// Pad by `padding` (zeros), take a random window of the image's own size.
    Crop { padding: usize },
    /// Add N(0, std²) to every element.
    Noise { std: f64 },
    /// Bilinear rotation about the centre by a uniform angle in [-degrees, degrees],
    /// counter-clockwise for positive angles, zero fill.
    Rotate { degrees: f64 },
}

impl Op {
    pub fn is_image(&self) -> bool {
        !matches!(self, Op::Noise { .. })
    }
}

/// What to augment and how: the input, its image shape `[C, H, W]` (`None`: a vector),
/// the augmentations in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub input: String,
    pub image: Option<[usize; 3]>,
    pub ops: Vec<Op>,
}

/// A model input as `plan` sees it: name, whether it is f32, and the shape after the
/// batch dimension (`None`: not a fixed shape after a leading batch dimension).
#[derive(Clone, Debug, PartialEq)]
pub struct InputShape {
    pub name: String,
    pub float: bool,
    pub per_sample: Option<Vec<usize>>,
}

/// The inputs of a graph as `plan` needs them.
pub fn inputs_of(g: &crate::ir::Graph) -> Vec<InputShape> {
    g.inputs
        .iter()
        .filter(|i| !i.name.starts_with("hyper."))
        .map(|i| {
            let batched = i.ty.shape.first().is_some_and(|d| !d.is_const());
            let rest: Option<Vec<usize>> =
                i.ty.shape.iter().skip(1).map(|d| d.as_const().map(|c| c.max(0) as usize)).collect();
            InputShape {
                name: i.name.clone(),
                float: i.ty.dtype == crate::ir::DType::F32,
                per_sample: if batched { rest } else { None },
            }
        })
        .collect()
}

/// Where a problem with the `augment` settings is, for the diagnostic's location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// The k-th augmentation of the list.
    Item(usize),
    /// `augment_input`.
    Input,
    /// `augment_shape`.
    Shape,
    /// The `augment` setting as a whole.
    List,
}

/// Why the augmentations do not fit the model: E0615 (an augmentation or shape that does
/// not fit the input) or E0616 (which input).
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub code: &'static str,
    pub at: At,
    pub message: String,
    pub help: String,
}

fn problem(code: &'static str, at: At, message: String, help: impl Into<String>) -> Problem {
    Problem { code, at, message, help: help.into() }
}

fn op_of(c: &Choice) -> Op {
    let n = |k: &str| c.num(k).unwrap_or(0.0);
    match c.name.as_str() {
        "flip_horizontal" => Op::FlipHorizontal { p: n("p") },
        "shift" => Op::Shift { max: n("max") as usize },
        "crop" => Op::Crop { padding: n("padding") as usize },
        "rotate" => Op::Rotate { degrees: n("degrees") },
        _ => Op::Noise { std: n("std") },
    }
}

/// Checks the `augment` settings against the model's inputs; `None` when nothing is
/// augmented.
pub fn plan(s: &TrainSettings, inputs: &[InputShape]) -> Result<Option<Plan>, Problem> {
    if s.augment.is_empty() {
        return Ok(None);
    }
    let floats: Vec<&InputShape> = inputs.iter().filter(|i| i.float && i.name != LABELS).collect();
    let names = |v: &[&InputShape]| v.iter().map(|i| format!("`{}`", i.name)).collect::<Vec<_>>().join(", ");
    let input = match &s.augment_input {
        Some(name) => match inputs.iter().find(|i| &i.name == name) {
            Some(i) if i.float && i.name != LABELS => i,
            Some(_) => {
                return Err(problem(
                    "E0616",
                    At::Input,
                    format!("`augment_input = {name}`: the input `{name}` is not a float input of features"),
                    format!("augmentation changes float features; the float inputs are: {}", names(&floats)),
                ))
            }
            None => {
                return Err(problem(
                    "E0616",
                    At::Input,
                    format!("`augment_input = {name}`: the model has no input `{name}`"),
                    format!("the float inputs are: {}", names(&floats)),
                ))
            }
        },
        None => match floats.as_slice() {
            [one] => *one,
            [] => {
                return Err(problem(
                    "E0616",
                    At::List,
                    "`augment`: the model has no float input other than the labels `y` to augment".into(),
                    "augmentation changes float features (an i32 input holds ids or labels)",
                ))
            }
            _ => {
                return Err(problem(
                    "E0616",
                    At::List,
                    format!(
                        "`augment`: the model has several float inputs ({}); which one is augmented?",
                        names(&floats)
                    ),
                    format!("choose one with `augment_input = {}`", floats[0].name),
                ))
            }
        },
    };
    let Some(per) = &input.per_sample else {
        return Err(problem(
            "E0615",
            At::List,
            format!(
                "`augment`: the input `{}` has no fixed shape after a batch dimension (like `[B, 1, 28, 28]`)",
                input.name
            ),
            "augmented rows are fed from the data, one sample per row of the batch",
        ));
    };
    let d: usize = per.iter().product();
    let image = match &s.augment_shape {
        Some(sh) => {
            let want: usize = sh.iter().map(|&x| x as usize).product();
            if want != d {
                return Err(problem(
                    "E0615",
                    At::Shape,
                    format!(
                        "`augment_shape = {sh:?}` holds {want} values, but a sample of the input `{}` (shape {per:?}) holds {d}",
                        input.name
                    ),
                    "give the image's [C, H, W] or [H, W], whose product is the input's size",
                ));
            }
            match sh.as_slice() {
                [h, w] => Some([1, *h as usize, *w as usize]),
                [c, h, w] => Some([*c as usize, *h as usize, *w as usize]),
                _ => None,
            }
        }
        None => match per.as_slice() {
            [h, w] => Some([1, *h, *w]),
            [c, h, w] => Some([*c, *h, *w]),
            _ => None,
        },
    };
    let mut ops = Vec::new();
    for (k, c) in s.augment.iter().enumerate() {
        let op = op_of(c);
        match image {
            None if op.is_image() => return Err(problem(
                "E0615",
                At::Item(k),
                format!(
                    "`{}` is an image augmentation, but the input `{}` is a vector (samples of shape {per:?})",
                    c.name, input.name
                ),
                "image augmentations need an input of shape [B, C, H, W] or [B, H, W], or `augment_shape = [C, H, W]` \
                     for a flat input; a vector takes `noise` only",
            )),
            Some([_, h, w]) => {
                if let ("crop", Some(size)) = (c.name.as_str(), c.num("size")) {
                    let size = size as usize;
                    if size != 0 && (size != h || size != w) {
                        return Err(problem(
                            "E0615",
                            At::Item(k),
                            format!(
                                "`crop(size = {size})` does not fit the input `{}`: its images are {h}x{w}, and the crop \
                                 must give the model's own size",
                                input.name
                            ),
                            format!(
                                "the data rows have the input's shape, so a crop keeps it: write `crop(size = {h}, padding = 4)` \
                                 (pad, then crop back), as torchvision's RandomCrop({h}, padding = 4)"
                            ),
                        ));
                    }
                }
            }
            None => {}
        }
        ops.push(op);
    }
    Ok(Some(Plan { input: input.name.clone(), image, ops }))
}

/// The augmentations as written: `[flip_horizontal(p = 0.5), noise(std = 0.1)]`.
pub fn render(list: &[Choice]) -> String {
    format!("[{}]", list.iter().map(Choice::render).collect::<Vec<_>>().join(", "))
}
