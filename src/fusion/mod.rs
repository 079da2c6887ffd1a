//! Fusion: a concrete graph (every dim bound) to an ordered list of kernels.
//!
//! Every value either gets a buffer (it is *materialized*) or is computed inside the
//! loop of the kernel that needs it (*fused*). Elementwise ops, constants and the
//! broadcasts whose access pattern a loop can express (scalar, a row vector repeated
//! over rows, a column repeated over columns) are fused into their consumers when those
//! are elementwise too; a value with several users, an output, an update, or the input
//! of a matmul, reduction, reshape or data-movement op is materialized. A slice of the
//! last dim (step 1) read only by elementwise ops is fused too: the loop reads its
//! source through a row stride (an LSTM's gate slices). Reshapes and
//! `stop_gradient` are views: they share their input's buffer. A transpose of the last
//! two dims feeding a matmul costs nothing: the GEMM reads it through strides.
//!
//! `fuse_with` runs the steps in order, one file each: `materialize` (which values get a
//! buffer), `kernels` (one kernel per materialized value), then the sub-passes that
//! rewrite the kernel list: `epilogues::gemm_epilogues`, `chains`, `concats`,
//! `updates::sink_into_updates` (an option), `epilogues::tile_epilogues`, `rows`,
//! `updates::early_updates` and `buckets`. `schedule` holds the result's types,
//! `access` and `nodes` the queries the steps share, `describe` the text form.

mod access;
mod buckets;
mod chains;
mod concats;
mod describe;
mod epilogues;
mod kernels;
mod materialize;
mod nodes;
mod rows;
mod schedule;
#[cfg(test)]
mod testing;
mod updates;
mod uses;

pub use self::access::{broadcast_access, fusible_slice, loop_shape, regrouped_access, Access};
pub use self::buckets::BUCKET_BYTES;
pub use self::describe::describe;
pub use self::nodes::{flat_only, fused_nodes, reads};
pub use self::schedule::{Kernel, Schedule};
use crate::ir::Graph;

/// Choices of `fuse_with` that are off by default.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Run each optimizer update as the epilogue of its weight gradient's GEMM
    /// (`tile_epilogues`). Off by default: on the MLP workload (one thread, AVX-512
    /// machine) the fused GEMM and update took about 10% longer than the two kernels
    /// apart (Adam's update is bound by its square roots and divisions in 4-lane
    /// vectors, which fusion does not hide, and runs once per micro-tile). Also computes
    /// a gradient modified before its update (weight decay, clipping by value) inside
    /// the update (`sink_into_updates`), so that the update reads the product itself.
    pub updates_in_epilogues: bool,
}

/// `fuse_with` at the default options.
pub fn fuse(g: &Graph) -> Result<Schedule, String> {
    fuse_with(g, &Options::default())
}

/// Fuses a concrete graph into its kernels.
pub fn fuse_with(g: &Graph, opts: &Options) -> Result<Schedule, String> {
    let users = self::uses::users(g);
    let pinned = self::uses::pinned(g);
    let mat = self::materialize::materialized(g, &users, &pinned);
    let mut sched = self::kernels::schedule(g, mat, &users, &pinned)?;
    self::epilogues::gemm_epilogues(g, &mut sched, &users, &pinned);
    self::chains::merge_chains(g, &mut sched);
    self::concats::elide_concats(g, &mut sched, &pinned);
    if opts.updates_in_epilogues {
        self::updates::sink_into_updates(g, &mut sched, &users, &pinned);
    }
    self::epilogues::tile_epilogues(g, &mut sched, opts.updates_in_epilogues);
    self::rows::row_groups(g, &mut sched);
    self::updates::early_updates(g, &mut sched);
    self::buckets::buckets(g, &mut sched);
    Ok(sched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::testing::Builder;
    use crate::ir::{BinaryOp, Value};

    /// y = x @ w + bias, and the SGD update of w by a gradient `x2 @ d`.
    fn layer_and_update(b: &mut Builder) -> [Value; 4] {
        let x = b.input("x", &[4, 8]);
        let w = b.param("w", &[8, 16]);
        let p = b.matmul(x, w);
        let bias = b.param("bias", &[16]);
        let bb = b.broadcast(bias, &[4, 16]);
        let y = b.binary(BinaryOp::Add, p, bb);
        b.output("y", y);
        let x2 = b.input("x2", &[8, 4]);
        let d = b.input("d", &[4, 16]);
        let grad = b.matmul(x2, d);
        let lr = b.fill(0.1, &[8, 16]);
        let step = b.binary(BinaryOp::Mul, grad, lr);
        let w2 = b.binary(BinaryOp::Sub, w, step);
        b.update(w, w2);
        [p, y, grad, w2]
    }

    #[test]
    fn fuse_makes_the_bias_an_epilogue_and_keeps_the_update_apart() {
        let mut b = Builder::new();
        let [p, y, grad, w2] = layer_and_update(&mut b);
        let s = fuse(&b.g).expect("fuse");
        let [Kernel::MatMul { out, epilogue: Some(e), .. }, Kernel::MatMul { out: g, epilogue: None, .. }, update] =
            &s.kernels[..]
        else {
            panic!("{:?}", s.kernels)
        };
        assert_eq!((*out, e.outs(), *g), (p, vec![y], grad));
        assert_eq!(*update, Kernel::Elementwise { out: w2, rows: 8, cols: 16, also: vec![] });
        assert!(s.materialized[grad.as_u32() as usize]);
    }

    #[test]
    fn with_updates_in_epilogues_the_update_is_the_gradient_s_epilogue() {
        let mut b = Builder::new();
        let [_, _, grad, w2] = layer_and_update(&mut b);
        let s = fuse_with(&b.g, &Options { updates_in_epilogues: true }).expect("fuse");
        assert_eq!(s.kernels.len(), 2);
        let Kernel::MatMul { out, epilogue: Some(e), .. } = &s.kernels[1] else { panic!("{:?}", s.kernels) };
        assert_eq!((*out, e.outs()), (grad, vec![w2]));
    }
}
