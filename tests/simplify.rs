//! `simplify` never changes a result beyond reassociation: random programs built to
//! contain foldable constants, identities, repeated subexpressions and sums of matrix
//! products give the same outputs, loss and gradients through the f32 interpreter before
//! and after simplification, and the simplified graphs pass the verifier.
//!
//! Most rewrites are exact. Two reassociate: a sum of a constant folds to one rounded
//! product, and a sum of matrix products becomes one product over a concatenation. So
//! each result is compared with the f64 interpreter's: the simplified graph may err by
//! 1e-5 of the tensor's largest magnitude (a few f32 roundings of the largest term),
//! plus four times the unsimplified f32 graph's own error on that tensor (how badly
//! conditioned it is: gradients that cancel to zero come out as rounding residues).

use nnc::internals::gradcheck::{random_inputs, random_params};
use nnc::internals::ir::Graph;
use nnc::internals::runtime::executable::concrete;
use nnc::internals::runtime::interp::{self, Feeds};

fn run(g: &Graph, inputs: &[interp::Tensor<f32>], params: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let feeds = Feeds { inputs: inputs.to_vec(), params: params.to_vec(), states: vec![], seed: 1, step: 0 };
    let r = interp::run(g, &feeds).expect("runs");
    let mut out: Vec<Vec<f32>> = g.outputs.iter().map(|(_, v)| r.get(*v).floats().to_vec()).collect();
    out.extend(g.loss.map(|l| r.get(l).floats().to_vec()));
    out
}

/// The unsimplified graph in f64, on the same (f32-rounded) inputs and parameters.
fn run64(g: &Graph, inputs: &[interp::Tensor<f32>], params: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let inputs: Vec<interp::Tensor<f64>> = inputs
        .iter()
        .map(|t| match &t.data {
            interp::Data::F(d) => interp::Tensor::f(t.shape.clone(), d.iter().map(|&x| f64::from(x)).collect()),
            interp::Data::I(d) => interp::Tensor::i(t.shape.clone(), d.clone()),
        })
        .collect();
    let params: Vec<Vec<f64>> = params.iter().map(|p| p.iter().map(|&x| f64::from(x)).collect()).collect();
    let feeds = Feeds { inputs, params, states: vec![], seed: 1, step: 0 };
    let r = interp::run(g, &feeds).expect("runs in f64");
    let mut out: Vec<Vec<f64>> = g.outputs.iter().map(|(_, v)| r.get(*v).floats().to_vec()).collect();
    out.extend(g.loss.map(|l| r.get(l).floats().to_vec()));
    out
}

#[test]
fn random_programs_keep_their_results() {
    let mut s: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |n: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % n
    };
    fn expr(depth: u32, next: &mut dyn FnMut(u64) -> u64) -> String {
        let leaves = ["a", "b", "(a @ w)", "(a * 1)", "(b + 0)", "ones([B, 4]) * 2", "-(-a)"];
        if depth == 0 {
            return leaves[next(leaves.len() as u64) as usize].to_string();
        }
        let x = expr(depth - 1, next);
        let y = expr(depth - 1, next);
        match next(15) {
            0 => format!("({x} + {y})"),
            1 => format!("({x} * {y} + {y} * {x})"),
            2 => format!("(exp({x}) - exp({x}))"),
            3 => format!("tanh({x} / 1)"),
            4 => format!("transpose(transpose({x}, [1, 0]), [1, 0])"),
            5 => format!("reshape(reshape({x}, [B * 4]), [B, 4])"),
            6 => format!("where(ones([B, 4]) > 0, {x}, {y})"),
            7 => format!("({x} + sum(ones([2, 4]) * 4, axis = 0))"),
            8 => format!("(({x}) @ w + sum({y}, axis = -1, keep = true))"),
            9 => format!("({x})[:, 0:4]"),
            10 => format!("maximum({x}, 0) * size({y})"),
            11 => format!("(sigmoid({x}) * (1 - sigmoid({x})))"),
            12 => format!("stop_gradient({x}) * {y}"),
            13 => format!("(({x}) @ w + ({y}) @ w + (a * {x}) @ w)"),
            _ => format!("(mean({x}, axis = 0, keep = true) - {y})"),
        }
    }
    let mut removed = 0;
    for i in 0..80 {
        let body = expr(1 + (i % 4) as u32, &mut next);
        let src = format!(
            "model R {{\n input a: [B, 4]\n input b: [B, 4]\n param w: [4, 4] = normal(0.5)\n output y = {body}\n loss = mean(y * y)\n}}\n"
        );
        let p = match nnc::internals::pipeline::compile_source("random.nn", &src, None) {
            Ok(mut c) => c.programs.remove(0),
            Err(e) => panic!(
                "program {i} does not compile:\n{src}\n{}",
                nnc::internals::diagnostic::render(&e.diagnostics, &e.sources, Default::default())
            ),
        };
        let grad = nnc::internals::autodiff::grad_program(&p.train).expect("grad").graph;
        for (what, g) in [("eval", &p.eval), ("grad", &grad)] {
            let g = concrete(g, 3).expect("bind");
            let simple = nnc::internals::simplify::simplify(&g);
            let errs = nnc::internals::ir::verify::verify(&simple);
            assert!(errs.is_empty(), "program {i} ({what}): {errs:?}\n{body}");
            removed += g.len() - simple.len();
            let inputs = random_inputs::<f32>(&g, 3, i).expect("inputs");
            let params: Vec<Vec<f32>> =
                random_params(&g, i).0.iter().map(|p| p.iter().map(|&x| x as f32).collect()).collect();
            let (want, got) = (run(&g, &inputs, &params), run(&simple, &inputs, &params));
            let exact = run64(&g, &inputs, &params);
            for (k, ((w, s), r)) in want.iter().zip(&got).zip(&exact).enumerate() {
                let scale = r.iter().fold(1e-3f64, |m, x| m.max(x.abs()));
                let f32_err = w.iter().zip(r).fold(0.0f64, |m, (a, x)| m.max((f64::from(*a) - x).abs()));
                let tol = 1e-5 * scale + 4.0 * f32_err;
                for (j, ((a, b), x)) in w.iter().zip(s).zip(r).enumerate() {
                    assert!(
                        a == b || (f64::from(*b) - x).abs() <= tol || (a.is_nan() && b.is_nan()),
                        "program {i} ({what}), result {k}[{j}]: {a} before, {b} after simplify (f64 {x}, scale {scale})\n{body}"
                    );
                }
            }
        }
    }
    assert!(removed > 500, "the generator should give the simplifier work, removed {removed} nodes");
}
