//! Data augmentation (the train block's `augment`): the plumbing from the setting to the
//! training batches. The augmentations themselves are unit-tested against hand-computed
//! images in `src/data/augment.rs`; the `--resume` bit-identity with augmentation on is in
//! `tests/train.rs`.
//!
//! Here: identity augmentations train bit for bit like none (so the augmented rows are
//! preprocessed exactly as the fitted rows are), real ones change training, scoring and
//! the epochs' validation rows are never augmented, `--set` and `tune` take the setting,
//! and augmentations that do not fit the input are refused.

use nnc::internals::train::session::{Progress, Quiet, Session};
use nnc::internals::train::trainer::prepare;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// The bundled 8x8 digits as a flat [B, 64] input read as [8, 8] images, standardized
/// per pixel (so the order of augmentation and preprocessing matters).
const DIGITS: &str = "model D {\n input x: [B, 64]\n input y: i32[B]\n layer a = Dense(64, 32)\n layer b = Dense(32, 10)\n output logits = b(relu(a(x)))\n loss = cross_entropy(logits, y)\n train { data = csv(\"examples/data/digits.csv.gz\")  preprocess = standardize  split = [0.7, 0.15, 0.15]\n optimizer = adam(lr = 0.01)  batch = 64  epochs = 2  seed = 4  augment_shape = [8, 8] AUG }\n}\n";

fn program(aug: &str) -> nnc::internals::ir::Program {
    let src = DIGITS.replace("AUG", aug);
    match nnc::internals::pipeline::compile_source("d.nn", &src, None) {
        Ok(mut c) => c.programs.remove(0),
        Err(e) => panic!("{}", nnc::internals::diagnostic::render(&e.diagnostics, &e.sources, Default::default())),
    }
}

fn compile_error(src: &str) -> String {
    match nnc::internals::pipeline::compile_source("m.nn", src, None) {
        Ok(_) => panic!("should not compile:\n{src}"),
        Err(e) => nnc::internals::diagnostic::render(&e.diagnostics, &e.sources, Default::default()),
    }
}

/// Trains `aug` from the same initialization; returns the parameters, the last epoch's
/// validation loss as the fit logged it, and the validation loss scored afterwards.
fn fit(aug: &str) -> (nnc::internals::tensors::TensorMap, f64, f64) {
    let p = program(aug);
    let prep = prepare(&p, Path::new(".")).expect("data");
    let (train, val) = (&prep.parts[0], &prep.parts[1]);
    let mut s = Session::new(&p, nnc::Backend::Jit, 1).expect("session");
    s.init(4, train.len()).expect("init");
    s.augment_from(&prep.raw, &prep.pre).expect("raw rows");
    struct Last(f64);
    impl nnc::internals::train::session::Observer for Last {
        fn epoch(
            &mut self,
            _: &Session,
            _: &Progress,
            row: &[(String, f64)],
            _: bool,
        ) -> Result<nnc::internals::train::session::Next, String> {
            self.0 = row.iter().find(|(k, _)| k == "val_loss").map(|(_, v)| *v).unwrap_or(f64::NAN);
            Ok(nnc::internals::train::session::Next::Continue)
        }
    }
    let mut last = Last(f64::NAN);
    s.fit(&prep.ds, train, Some(val), &mut Progress::default(), &AtomicBool::new(false), &mut last).expect("fit");
    let scored = s.score(&prep.ds, val).expect("score").loss;
    (s.tensors().expect("tensors"), last.0, scored)
}

#[test]
fn identity_augmentations_train_exactly_like_none() {
    let (plain, _, _) = fit("");
    // Two certain flips undo each other; noise of std 0 adds zeros; a zero shift moves
    // nothing: every batch is the preprocessed rows bit for bit.
    let (same, _, _) =
        fit("augment = [flip_horizontal(p = 1), noise(std = 0), flip_horizontal(p = 1), shift(max = 0)]");
    assert_eq!(plain, same);
    let (moved, _, _) = fit("augment = [shift(max = 1)]");
    assert_ne!(plain, moved, "shifted images train to other parameters");
}

#[test]
fn validation_and_scoring_are_never_augmented() {
    // Huge noise on the training rows: if it reached the validation rows, the logged
    // validation loss would differ from the loss of the same parameters scored on the
    // rows as they are.
    let (_, logged, scored) = fit("augment = [noise(std = 50), rotate(degrees = 30)]");
    assert_eq!(logged, scored);
    // And the scorer of an augmenting session sees exactly what a plain one sees.
    let (p, q) = (program(""), program("augment = noise(std = 50)"));
    let prep = prepare(&p, Path::new(".")).expect("data");
    let rows = &prep.parts[2];
    let mut a = Session::new(&p, nnc::Backend::Jit, 1).expect("session");
    let mut b = Session::new(&q, nnc::Backend::Jit, 1).expect("session");
    assert!(b.augments() && !a.augments());
    a.init(1, rows.len()).expect("init");
    b.init(1, rows.len()).expect("init");
    b.augment_from(&prep.raw, &prep.pre).expect("raw");
    let (x, y) = (a.score(&prep.ds, rows).expect("score"), b.score(&prep.ds, rows).expect("score"));
    assert_eq!(x.loss, y.loss);
    assert_eq!(x.values, y.values);
}

#[test]
fn preprocessing_without_the_raw_rows_is_refused() {
    let p = program("augment = [shift(max = 1)]");
    let prep = prepare(&p, Path::new(".")).expect("data");
    let mut s = Session::new(&p, nnc::Backend::Jit, 1).expect("session");
    s.init(0, prep.parts[0].len()).expect("init");
    let err = s
        .fit(&prep.ds, &prep.parts[0], None, &mut Progress::default(), &AtomicBool::new(false), &mut Quiet)
        .expect_err("augmenting standardized rows would be the wrong order");
    assert!(err.contains("raw rows"), "{err}");
}

#[test]
fn set_takes_augment_and_checks_it_against_the_input() {
    let cnn = Path::new("examples/mnist_cnn.nn");
    let sets = ["augment=[flip_horizontal(p = 0.5), crop(size = 28, padding = 4), rotate(degrees = 10)]".to_string()];
    match nnc::internals::pipeline::configure(cnn, &sets, None) {
        Ok(p) => {
            assert_eq!(p.settings.augment.len(), 3);
            assert_eq!(p.settings.augment[1].num("padding"), Some(4.0));
        }
        Err(_) => panic!("--set augment should configure mnist_cnn.nn"),
    }
    let bad = ["augment=[crop(size = 24, padding = 4)]".to_string()];
    match nnc::internals::pipeline::configure(cnn, &bad, None) {
        Err(nnc::internals::pipeline::ConfigureError::Set(m)) => assert!(m.contains("images are 28x28"), "{m}"),
        _ => panic!("a 24x24 crop does not fit a 28x28 input"),
    }
    // digits.nn's input is flat: image augmentations need `augment_shape`.
    let digits = Path::new("examples/digits.nn");
    match nnc::internals::pipeline::configure(digits, &["augment=shift(max = 1)".to_string()], None) {
        Err(nnc::internals::pipeline::ConfigureError::Set(m)) => assert!(m.contains("is a vector"), "{m}"),
        _ => panic!("shift on a flat input without augment_shape"),
    }
    let sets = ["augment=shift(max = 1)".to_string(), "augment_shape=[8, 8]".to_string()];
    assert!(nnc::internals::pipeline::configure(digits, &sets, None).is_ok());
    match nnc::internals::pipeline::configure(digits, &["augment=[mirror]".to_string()], None) {
        Err(nnc::internals::pipeline::ConfigureError::Set(m)) => {
            assert!(m.contains("unknown augmentation `mirror`"), "{m}")
        }
        _ => panic!("an unknown augmentation"),
    }
}

#[test]
fn bad_settings_point_at_the_setting() {
    let base = "model M {\n input x: [B, 1, 4, 4]\n input y: i32[B]\n layer fc = Dense(16, 2)\n output logits = fc(flatten(x))\n loss = cross_entropy(logits, y)\n train { data = npz(\"d.npz\")  SETTINGS }\n}\n";
    let cases = [
        ("augment = [noise(std = -1)]", "E0602"),
        ("augment = [noise]", "E0608"),
        ("augment = [flip_horizontal(p = 2)]", "E0602"),
        ("augment = [rotate(degrees = 200)]", "E0602"),
        ("augment = [shift(max = 1.5)]", "E0603"),
        ("augment = [blur(r = 1)]", "E0604"),
        ("augment = [noise(std = 0.1)]  augment_input = y", "E0616"),
        ("augment = [noise(std = 0.1)]  augment_input = z", "E0616"),
        ("augment = [crop(size = 5, padding = 1)]", "E0615"),
        ("augment = [shift(max = 1)]  augment_shape = [2, 2, 2, 2]", "E0601"),
        ("augment = [shift(max = 1)]  optimizer = lbfgs", "E0612"),
    ];
    for (settings, code) in cases {
        let err = compile_error(&base.replace("SETTINGS", settings));
        assert!(err.contains(code), "{settings}: expected {code}:\n{err}");
    }
    // A [B, H, W] input is one-channel images; a crop of its own size is fine.
    let ok = base
        .replace("[B, 1, 4, 4]", "[B, 4, 4]")
        .replace("SETTINGS", "augment = [crop(size = 4, padding = 1), flip_horizontal]");
    assert!(nnc::internals::pipeline::compile_source("m.nn", &ok, None).is_ok());
    // No float input to augment (ids only).
    let ids = "model E {\n input t: i32[B, 4]\n input y: i32[B]\n layer e = Embedding(10, 2)\n output logits = sum(e(t), 1)\n loss = cross_entropy(logits, y)\n train { data = npz(\"d.npz\")  augment = noise(std = 1) }\n}\n";
    assert!(compile_error(ids).contains("E0616"));
}

#[test]
fn tune_searches_augmentations_as_choices() {
    let src = DIGITS.replace("AUG", "").replace(
        "}\n}\n",
        "}\n tune { method = grid  augment = choice([[], [noise(std = 0.1)], [shift(max = 1), noise(std = 0.3)]]) }\n}\n",
    );
    let p = match nnc::internals::pipeline::compile_source("d.nn", &src, None) {
        Ok(mut c) => c.programs.remove(0),
        Err(e) => panic!("{}", nnc::internals::diagnostic::render(&e.diagnostics, &e.sources, Default::default())),
    };
    let t = p.settings.tune.expect("tune block");
    assert_eq!(
        t.space[0].dist,
        nnc::internals::ir::recipe::Dist::Choice(vec![
            "[]".into(),
            "[noise(std = 0.1)]".into(),
            "[shift(max = 1), noise(std = 0.3)]".into()
        ])
    );
    // An option that does not parse as a setting is refused where it is written.
    let bad = DIGITS.replace("AUG", "").replace("}\n}\n", "}\n tune { augment = choice([[noise(std = -1)]]) }\n}\n");
    assert!(compile_error(&bad).contains("`augment` cannot take this value"));
}
