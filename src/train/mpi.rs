//! The MPI communicator (feature `mpi`): rsmpi's `MPI_Allreduce` on `MPI_COMM_WORLD`,
//! with a watchdog that aborts the job when a collective waits longer than a timeout
//! (a rank that died or left the loop), so that no rank hangs.

use super::distributed::Communicator;
use ::mpi::collective::SystemOperation;
use ::mpi::environment::{Threading, Universe};
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::{Communicator as _, CommunicatorCollectives as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The exit code of a job the watchdog aborts.
pub const TIMEOUT_CODE: i32 = 75;

/// MPI, initialized once per process; dropping it finalizes MPI.
pub struct World {
    universe: Universe,
}

/// Initializes MPI (`MPI_Init_thread`, thread level multiple: the watchdog may call
/// `MPI_Abort` from its own thread). `None` when MPI was initialized already.
pub fn init() -> Result<World, String> {
    let (universe, _) =
        ::mpi::initialize_with_threading(Threading::Multiple).ok_or("MPI was initialized already in this process")?;
    Ok(World { universe })
}

impl World {
    pub fn rank(&self) -> usize {
        self.universe.world().rank().max(0) as usize
    }
    pub fn size(&self) -> usize {
        self.universe.world().size().max(1) as usize
    }
    /// A communicator over every rank. A collective that waits more than `timeout`
    /// calls `on_timeout` with a message (on the watchdog's thread), then aborts the job
    /// with `TIMEOUT_CODE`.
    pub fn communicator(&self, timeout: Duration, on_timeout: Box<dyn Fn(&str) + Send>) -> Mpi {
        let since = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let rank = self.rank();
        {
            let since = since.clone();
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(200).min(timeout));
                let s = since.load(Ordering::SeqCst);
                if s == 0 {
                    continue;
                }
                let waited = start.elapsed().as_millis() as u64 - s.min(start.elapsed().as_millis() as u64);
                if waited > timeout.as_millis() as u64 {
                    on_timeout(&format!(
                        "rank {rank}: a collective waited more than {} s for the other ranks (a rank died or \
                         stopped early); aborting the job",
                        timeout.as_secs_f64()
                    ));
                    abort(TIMEOUT_CODE);
                }
            });
        }
        Mpi { world: self.universe.world(), scratch32: Vec::new(), scratch64: Vec::new(), since, start }
    }
    /// Ends every rank of the job (`MPI_Abort`): for an error on one rank, which the
    /// others would otherwise wait for in their next collective.
    pub fn abort(&self, code: i32) -> ! {
        abort(code)
    }
}

fn abort(code: i32) -> ! {
    // SAFETY: MPI_Abort on MPI_COMM_WORLD, with MPI initialized at thread level multiple.
    unsafe {
        ::mpi::ffi::MPI_Abort(::mpi::ffi::RSMPI_COMM_WORLD, code);
    }
    std::process::exit(code)
}

/// `MPI_COMM_WORLD` as a `Communicator`.
pub struct Mpi {
    world: SimpleCommunicator,
    scratch32: Vec<f32>,
    scratch64: Vec<f64>,
    /// Milliseconds since `start` at which the running collective began (0: none).
    since: Arc<AtomicU64>,
    start: Instant,
}

impl Mpi {
    fn enter(&self) {
        self.since.store((self.start.elapsed().as_millis() as u64).max(1), Ordering::SeqCst);
    }
    fn leave(&self) {
        self.since.store(0, Ordering::SeqCst);
    }
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        self.world.rank().max(0) as usize
    }
    fn size(&self) -> usize {
        self.world.size().max(1) as usize
    }
    fn allreduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<(), String> {
        self.scratch32.clear();
        self.scratch32.extend_from_slice(buf);
        self.enter();
        self.world.all_reduce_into(&self.scratch32[..], buf, SystemOperation::sum());
        self.leave();
        Ok(())
    }
    fn allreduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<(), String> {
        self.scratch64.clear();
        self.scratch64.extend_from_slice(buf);
        self.enter();
        self.world.all_reduce_into(&self.scratch64[..], buf, SystemOperation::sum());
        self.leave();
        Ok(())
    }
}
