//! The MPI communicator (feature `mpi`): rsmpi's `MPI_Allreduce` on `MPI_COMM_WORLD`,
//! with a watchdog that aborts the job when a collective waits longer than a timeout
//! (a rank that died or left the loop), so that no rank hangs.

use super::distributed::Communicator;
use ::mpi::collective::SystemOperation;
use ::mpi::datatype::Equivalence;
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
    /// A communicator over every rank. With a `timeout`, a collective that waits longer
    /// calls `on_timeout` with a message (on the watchdog's thread), then aborts the job
    /// with `TIMEOUT_CODE`; without one, collectives wait as long as the other ranks take.
    pub fn communicator(&self, timeout: Option<Duration>, on_timeout: Box<dyn Fn(&str) + Send>) -> Mpi {
        let clock = Clock { since: Arc::new(AtomicU64::new(0)), start: Instant::now() };
        let rank = self.rank();
        if let Some(timeout) = timeout {
            let (since, start) = (clock.since.clone(), clock.start);
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
        Mpi { world: self.universe.world(), scratch32: Vec::new(), scratch64: Vec::new(), clock }
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
    clock: Clock,
}

/// When the running collective began, for the watchdog.
struct Clock {
    /// Milliseconds since `start` at which the running collective began (0: none).
    since: Arc<AtomicU64>,
    start: Instant,
}

/// `MPI_Allreduce` with `MPI_SUM` of `buf` in place (through a copy in `scratch`, which
/// keeps its capacity from call to call), the watchdog's clock running meanwhile.
fn allreduce_sum<T: Equivalence + Copy>(
    world: &SimpleCommunicator,
    clock: &Clock,
    scratch: &mut Vec<T>,
    buf: &mut [T],
) {
    scratch.clear();
    scratch.extend_from_slice(buf);
    clock.since.store((clock.start.elapsed().as_millis() as u64).max(1), Ordering::SeqCst);
    world.all_reduce_into(&scratch[..], buf, SystemOperation::sum());
    clock.since.store(0, Ordering::SeqCst);
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        self.world.rank().max(0) as usize
    }
    fn size(&self) -> usize {
        self.world.size().max(1) as usize
    }
    fn allreduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<(), String> {
        allreduce_sum(&self.world, &self.clock, &mut self.scratch32, buf);
        Ok(())
    }
    fn allreduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<(), String> {
        allreduce_sum(&self.world, &self.clock, &mut self.scratch64, buf);
        Ok(())
    }
}
