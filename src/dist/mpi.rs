//! The MPI communicator (feature `mpi`): rsmpi's `MPI_Allreduce` on `MPI_COMM_WORLD`,
//! and `MPI_Iallreduce` for the buckets of a step's gradient sums (started without
//! waiting, finished by `MPI_Wait`), with a watchdog that aborts the job when a
//! collective waits longer than a timeout (a rank that died or left the loop), so that no
//! rank hangs.

use super::comm::Communicator;
use crate::codegen::host::Bucket;
use ::mpi::collective::SystemOperation;
use ::mpi::datatype::Equivalence;
use ::mpi::environment::{Threading, Universe};
use ::mpi::raw::AsRaw as _;
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
        Mpi {
            world: self.universe.world(),
            scratch32: Vec::new(),
            scratch64: Vec::new(),
            clock,
            sends: Vec::new(),
            used: 0,
            requests: Vec::new(),
        }
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
    /// The send buffers of started sums: a copy of each gradient (rsmpi exposes no
    /// `MPI_IN_PLACE`; the sum is received in the gradient's own buffer). Reused step
    /// after step: `used` of them are in flight.
    sends: Vec<Vec<f32>>,
    used: usize,
    /// The started sums' requests, with their buckets.
    requests: Vec<(u32, ::mpi::ffi::MPI_Request)>,
}

/// When the running collective began, for the watchdog.
struct Clock {
    /// Milliseconds since `start` at which the running collective began (0: none).
    since: Arc<AtomicU64>,
    start: Instant,
}

impl Clock {
    fn enter(&self) {
        self.since.store((self.start.elapsed().as_millis() as u64).max(1), Ordering::SeqCst);
    }
    fn leave(&self) {
        self.since.store(0, Ordering::SeqCst);
    }
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
    clock.enter();
    world.all_reduce_into(&scratch[..], buf, SystemOperation::sum());
    clock.leave();
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
    fn start_sum(&mut self, bucket: u32, bufs: Bucket<'_>) -> Result<(), String> {
        // One rank: the sums are the buffers already.
        if self.size() == 1 {
            return Ok(());
        }
        for i in 0..bufs.len() {
            let Some((p, n)) = bufs.buffer(i) else { continue };
            let count =
                i32::try_from(n).map_err(|_| format!("a gradient of {n} values is too large for one MPI call"))?;
            if self.used == self.sends.len() {
                self.sends.push(Vec::new());
            }
            let send = &mut self.sends[self.used];
            send.clear();
            // SAFETY: a bucket's buffers are valid arena regions for the running step.
            send.extend_from_slice(unsafe { std::slice::from_raw_parts(p, n) });
            self.used += 1;
            // SAFETY: `send` stays allocated and unchanged, and the step leaves `p`'s
            // buffer alone, until `wait_sum` waits for the request; MPI's default error
            // handler aborts the job on failure.
            let request = unsafe {
                let mut request = ::mpi::ffi::RSMPI_REQUEST_NULL;
                ::mpi::ffi::MPI_Iallreduce(
                    send.as_ptr().cast(),
                    p.cast(),
                    count,
                    ::mpi::ffi::RSMPI_FLOAT,
                    ::mpi::ffi::RSMPI_SUM,
                    self.world.as_raw(),
                    &mut request,
                );
                request
            };
            self.requests.push((bucket, request));
        }
        Ok(())
    }
    fn wait_sum(&mut self, bucket: u32) -> Result<(), String> {
        self.clock.enter();
        for (b, request) in self.requests.iter_mut() {
            if *b == bucket {
                // SAFETY: a request `start_sum` made and nobody waited for yet.
                unsafe {
                    ::mpi::ffi::MPI_Wait(request, ::mpi::ffi::RSMPI_STATUS_IGNORE);
                }
            }
        }
        self.clock.leave();
        self.requests.retain(|(b, _)| *b != bucket);
        if self.requests.is_empty() {
            self.used = 0;
        }
        Ok(())
    }
    fn allreduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<(), String> {
        allreduce_sum(&self.world, &self.clock, &mut self.scratch64, buf);
        Ok(())
    }
}
