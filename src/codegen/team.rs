//! The threads a step splits its large kernels and products across: one team of worker
//! threads per process, each spinning on its own job slot between jobs and parking only
//! after `SPIN` without one.
//!
//! A step calls split work tens of times in a millisecond (the LSTM's 40 recurrent
//! products of 30 us each). Posting a job of two parts to a spinning worker costs 0.6 us
//! here; waking a parked one and waiting for it cost 0.38 ms in this VM (`cargo bench
//! --bench team`), far more than splitting a small kernel saves. OpenMP's runtimes spin
//! for the same reason (`KMP_BLOCKTIME`, 200 ms by default); the team spins for 1 ms, so it
//! goes quiet soon after the steps stop, and a job that finds a worker parked does not
//! wait for it: the caller runs that share and sends the worker back to spinning (2.3 us
//! for the first split after a pause).
//!
//! Members draw parts from a counter, and a job no worker has taken when the caller runs
//! out of parts is revoked: a worker the system has not scheduled (more threads than
//! cores) delays nobody. Waits spin, then yield the core.
//!
//! One caller at a time owns the team; a second caller that finds it busy (two
//! executables stepped on two threads at once) runs all its parts itself, which gives
//! the same result (parts write disjoint outputs) without waiting. Posting a job
//! allocates nothing.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_millis(1);

/// The most workers the team starts, whatever the machine reports.
const MAX_WORKERS: usize = 63;

/// A job as a worker sees it: the caller's closure, alive while the worker holds the
/// job (`TAKEN`); the closure draws parts from the caller's counter until none is left.
type Job = *const (dyn Fn() + Sync);

/// A worker's slot states. The owner posts (`IDLE` -> `POSTED`), the worker takes
/// (`POSTED` -> `TAKEN`, by compare-and-swap) and reports (`TAKEN` -> `DONE`); an owner
/// that has run out of parts before a worker took its job revokes it (`POSTED` -> `IDLE`,
/// by compare-and-swap) instead of waiting for a thread the system has not scheduled.
const IDLE: u8 = 0;
const POSTED: u8 = 1;
const TAKEN: u8 = 2;
const DONE: u8 = 3;

struct Worker {
    state: AtomicU8,
    /// Set while the worker is parked (or about to park): posting must unpark it.
    parked: AtomicBool,
    /// Set (with an unpark) to send a parked worker back to spinning without a job.
    nudged: AtomicBool,
    job: UnsafeCell<Option<Job>>,
    thread: OnceLock<std::thread::Thread>,
}

// SAFETY: `job` is written only by the team's owner (under `Team::busy`) while the slot
// is `IDLE`, before it publishes `POSTED`, and read by the worker only after it has taken
// the job (`TAKEN`), until it publishes `DONE`; the closure behind the pointer is `Sync`
// and outlives the job (the owner waits for `DONE` of every job taken).
unsafe impl Sync for Worker {}

struct Team {
    workers: Vec<Worker>,
    /// Workers whose thread started (a failed spawn leaves the rest unused).
    live: AtomicUsize,
    busy: AtomicBool,
}

fn team() -> &'static Team {
    static TEAM: OnceLock<&'static Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = cores.saturating_sub(1).min(MAX_WORKERS);
        let workers = (0..n)
            .map(|_| Worker {
                state: AtomicU8::new(IDLE),
                parked: AtomicBool::new(false),
                nudged: AtomicBool::new(false),
                job: UnsafeCell::new(None),
                thread: OnceLock::new(),
            })
            .collect();
        let t: &'static Team =
            Box::leak(Box::new(Team { workers, live: AtomicUsize::new(0), busy: AtomicBool::new(false) }));
        let mut live = 0;
        for (i, w) in t.workers.iter().enumerate() {
            let spawned = std::thread::Builder::new().name(format!("nnc-worker-{i}")).spawn(move || work(w));
            match spawned {
                Ok(h) => {
                    let _ = w.thread.set(h.thread().clone());
                    live += 1;
                }
                Err(_) => break,
            }
        }
        t.live.store(live, Ordering::Release);
        t
    })
}

/// Waits until `ready()`: spinning first, then yielding the core (a caller or worker
/// that shares its core with others must let the thread it waits for run).
fn wait_until(ready: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        if spins < 20_000 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

thread_local! {
    static IN_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is one of the team's workers (allocation-free: tests
/// count the workers' allocations from a global allocator).
pub fn in_worker() -> bool {
    IN_WORKER.try_with(|c| c.get()).unwrap_or(false)
}

/// A worker's loop: wait for a job (spinning, then parked), take it, run it, report it.
fn work(w: &'static Worker) {
    IN_WORKER.with(|c| c.set(true));
    loop {
        let mut spins = 0u32;
        let mut since: Option<Instant> = None;
        loop {
            if w.state.load(Ordering::Acquire) == POSTED
                && w.state.compare_exchange(POSTED, TAKEN, Ordering::AcqRel, Ordering::Acquire).is_ok()
            {
                break;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(512) {
                let start = *since.get_or_insert_with(Instant::now);
                if start.elapsed() >= SPIN {
                    // `parked` is published before the state is read again, and the owner
                    // publishes `POSTED` before it reads `parked` (both SeqCst): one of
                    // the two sees the other, so no job waits for a worker that sleeps.
                    w.parked.store(true, Ordering::SeqCst);
                    while w.state.load(Ordering::SeqCst) != POSTED && !w.nudged.swap(false, Ordering::SeqCst) {
                        std::thread::park();
                    }
                    w.parked.store(false, Ordering::SeqCst);
                    since = None;
                }
            }
        }
        // SAFETY: the owner wrote the job before publishing `POSTED` (see `Worker`).
        if let Some(f) = unsafe { *w.job.get() } {
            // A job does not unwind (JIT code and the GEMM driver); if one ever did, the
            // owner must still be released, so the panic is caught here.
            // SAFETY: the closure is alive until this worker publishes `DONE`.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*f)() }));
        }
        w.state.store(DONE, Ordering::Release);
    }
}

/// Runs `f(0)`, ..., `f(parts - 1)`, spread over the calling thread and the team's
/// workers, and returns when all have run. Parts may run in any order and concurrently;
/// each runs exactly once. Members draw parts from a shared counter, so a worker the
/// system schedules late leaves its share to the others.
pub fn run(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    if parts <= 1 {
        if parts == 1 {
            f(0);
        }
        return;
    }
    let t = team();
    let helpers = t.live.load(Ordering::Acquire).min(parts - 1);
    if helpers == 0 || t.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        (0..parts).for_each(f);
        return;
    }
    let next = AtomicUsize::new(0);
    let job = || loop {
        let p = next.fetch_add(1, Ordering::Relaxed);
        if p >= parts {
            break;
        }
        f(p);
    };
    let job_ref: &(dyn Fn() + Sync) = &job;
    // SAFETY: only the lifetime is erased; below, this function revokes every job not
    // taken and waits for every job taken to be done, so the closure outlives its uses.
    let ptr: Job = unsafe { std::mem::transmute::<&(dyn Fn() + Sync), Job>(job_ref) };
    // A parked worker is not given the job: waking it takes longer than most jobs (a
    // futex wake and the scheduler, 0.4 ms in this VM, `cargo bench --bench team`). The
    // caller runs its share instead and sends it back to spinning afterwards, for the
    // jobs that follow.
    let workers = &t.workers[..helpers];
    let mut posted = [false; MAX_WORKERS];
    for (i, w) in workers.iter().enumerate() {
        if w.parked.load(Ordering::SeqCst) {
            continue;
        }
        // SAFETY: this thread owns the team (`busy`) and the slot is idle (the previous
        // owner left every slot idle), so nothing reads it now.
        unsafe { *w.job.get() = Some(ptr) };
        w.state.store(POSTED, Ordering::SeqCst);
        posted[i] = true;
        // The worker may have parked since the check above (it reads the state again
        // after publishing `parked`, so either it sees the job or this sees `parked`).
        if w.parked.load(Ordering::SeqCst) {
            if let Some(th) = w.thread.get() {
                th.unpark();
            }
        }
    }
    job();
    for (i, w) in workers.iter().enumerate() {
        if !posted[i] {
            w.nudged.store(true, Ordering::SeqCst);
            if let Some(th) = w.thread.get() {
                th.unpark();
            }
        } else if w.state.compare_exchange(POSTED, IDLE, Ordering::AcqRel, Ordering::Acquire).is_err() {
            wait_until(|| w.state.load(Ordering::Acquire) == DONE);
            w.state.store(IDLE, Ordering::Release);
        }
    }
    t.busy.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_part_runs_once() {
        for parts in [0, 1, 2, 3, 7, 64, 200] {
            let hits: Vec<AtomicU64> = (0..parts).map(|_| AtomicU64::new(0)).collect();
            run(parts, &|p| {
                hits[p].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{parts} parts");
        }
    }

    #[test]
    fn callers_on_several_threads_all_finish() {
        // Two threads share the team: one owns it, the other runs its parts itself.
        let total = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        run(4, &|p| {
                            total.fetch_add(p as u64 + 1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 200 * 10);
    }

    #[test]
    fn a_parked_worker_wakes_for_the_next_job() {
        let n = AtomicU64::new(0);
        run(2, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        std::thread::sleep(SPIN * 5);
        run(2, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 4);
    }
}
