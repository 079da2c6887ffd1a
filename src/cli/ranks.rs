//! Running a command in this process alone or as one rank of an MPI job (`--distributed`
//! of `train`, `tune` and `cv`).

use super::*;

/// The error of `--distributed` in a build without MPI.
#[cfg(not(feature = "mpi"))]
pub(super) fn no_mpi() -> i32 {
    fail("`--distributed` needs nnc built with MPI: `cargo build --release --features mpi` (docs/distributed.md)")
}

/// Runs `body` in this process alone, or with `distributed` as one rank of an MPI job
/// (`tune` and `cv`; refused in a build without MPI).
pub(super) fn on_ranks(
    distributed: bool,
    timeout: Option<u64>,
    body: impl FnOnce(Option<&mut dyn crate::dist::comm::Communicator>) -> i32,
) -> i32 {
    if !distributed {
        return body(None);
    }
    #[cfg(feature = "mpi")]
    return with_world(timeout, |comm| body(Some(comm)));
    #[cfg(not(feature = "mpi"))]
    {
        let _ = timeout;
        no_mpi()
    }
}

/// Runs `body` as one rank of an MPI job: MPI first, a communicator whose collectives
/// abort the job after `timeout` seconds when given, and `MPI_Abort` when `body` fails
/// on this rank (so that no rank waits for it).
#[cfg(feature = "mpi")]
fn with_world(timeout: Option<u64>, body: impl FnOnce(&mut dyn crate::dist::comm::Communicator) -> i32) -> i32 {
    let world = match crate::dist::mpi::init() {
        Ok(w) => w,
        Err(m) => return fail(&m),
    };
    let timeout = timeout.map(|t| std::time::Duration::from_secs(t.max(1)));
    let mut comm = world.communicator(timeout, Box::new(|m: &str| errln!("error: {m}")));
    let code = body(&mut comm);
    if code != 0 && code != 130 {
        world.abort(code);
    }
    code
}
