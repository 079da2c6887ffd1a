//! Data-parallel training: the communicator a session sums gradients through, the shard
//! of a global batch each rank takes, and an in-process group of communicators (threads)
//! for embedders and tests. The MPI communicator is `dist::mpi` (feature `mpi`).
//!
//! The step of a distributed session is one compiled graph
//! (`update::distributed_step_graph`): the forward and backward pass of the rank's share
//! of the loss, each gradient summed over ranks by an `Op::AllReduce`, and the update,
//! which every rank applies to the same summed gradient, so parameters stay equal on
//! every rank. Fusion groups the sums into buckets (`fusion::BUCKET_BYTES`) that start
//! as soon as their gradients are written, in place in the step's arena, and are waited
//! for just before the update reads them (`Communicator::start_sum`, `wait_sum`), so the
//! communication overlaps the rest of the backward pass. Any communicator works: an
//! embedder with its own transport implements `Communicator` and passes it to
//! `Session::distribute`. The two halves of the step are also public graphs
//! (`update::gradient_graph`, `update::update_graph`) for an embedder that runs
//! `forward_backward; allreduce; update` itself.

use crate::codegen::host::{Bucket, Collective};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// A group of ranks that sum buffers together. Every rank calls the same collectives in
/// the same order with buffers of the same length.
pub trait Communicator {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Replaces `buf` on every rank by the element-wise sum of every rank's `buf`.
    fn allreduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<(), String>;
    /// The same in f64 (counts, loss sums, flags, hashes).
    fn allreduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<(), String>;
    /// Starts summing every buffer of `bufs` over the ranks, in place, as bucket `bucket`
    /// of a step (the step's buckets are numbered from 0 in the order they start, the
    /// same on every rank). The buffers stay valid and untouched by the step until
    /// `wait_sum(bucket)` returns; the sums must be in them by then. The default sums
    /// now, blocking (no overlap with the rest of the step).
    fn start_sum(&mut self, bucket: u32, bufs: Bucket<'_>) -> Result<(), String> {
        let _ = bucket;
        for i in 0..bufs.len() {
            if let Some((p, n)) = bufs.buffer(i) {
                // SAFETY: a bucket's buffers are valid arena regions for the running step.
                self.allreduce_sum_f32(unsafe { std::slice::from_raw_parts_mut(p, n) })?;
            }
        }
        Ok(())
    }
    /// Returns when bucket `bucket`'s sums are in its buffers.
    fn wait_sum(&mut self, bucket: u32) -> Result<(), String> {
        let _ = bucket;
        Ok(())
    }
}

/// Where a step's collectives spent their time, in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct SumTimes {
    /// Inside `start_sum` (with overlap off: the whole blocking sum).
    pub start: f64,
    /// Inside `wait_sum`: the sums not hidden behind the backward pass.
    pub wait: f64,
}

/// A step's collectives (`codegen::host::Collective`) through a communicator: the
/// compiled step calls it at each bucket's start and wait. With `overlap` false every
/// bucket is summed, blocking, at its start (the measurement of what overlap hides).
/// The first error is kept; later collectives are skipped and the step's caller reports it.
pub struct Hook<'a> {
    pub comm: &'a mut dyn Communicator,
    pub overlap: bool,
    pub error: Option<String>,
    pub times: SumTimes,
}

impl Collective for Hook<'_> {
    fn start(&mut self, bucket: u32, bufs: Bucket<'_>) {
        if self.error.is_some() {
            return;
        }
        let t = Instant::now();
        let r = if self.overlap {
            self.comm.start_sum(bucket, bufs)
        } else {
            let mut r = Ok(());
            for i in 0..bufs.len() {
                if let Some((p, n)) = bufs.buffer(i) {
                    // SAFETY: a bucket's buffers are valid arena regions for the running step.
                    r = r.and_then(|_| self.comm.allreduce_sum_f32(unsafe { std::slice::from_raw_parts_mut(p, n) }));
                }
            }
            r
        };
        self.times.start += t.elapsed().as_secs_f64();
        if let Err(e) = r {
            self.error = Some(e);
        }
    }
    fn wait(&mut self, bucket: u32) {
        if self.error.is_some() || !self.overlap {
            return;
        }
        let t = Instant::now();
        let r = self.comm.wait_sum(bucket);
        self.times.wait += t.elapsed().as_secs_f64();
        if let Err(e) = r {
            self.error = Some(e);
        }
    }
}

/// The rows of a global batch that rank `rank` of `size` takes: a contiguous block,
/// `rows[rank * n / size .. (rank + 1) * n / size]`. Blocks are disjoint and cover the
/// batch; when `n` is not divisible by `size` their lengths differ by one (the first
/// ranks get the shorter ones); with fewer rows than ranks some blocks are empty.
pub fn shard(rows: &[usize], rank: usize, size: usize) -> &[usize] {
    &rows[block(rows.len(), rank, size)]
}

/// Rank `rank`'s block of `0..n` split into `size` contiguous blocks: `rank * n / size ..
/// (rank + 1) * n / size` (the blocks of `shard`).
pub fn block(n: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    let size = size.max(1);
    rank.min(size) * n / size..(rank.min(size) + 1).min(size) * n / size
}

/// Every rank's `mine`, in rank order, on every rank: the lengths are summed first (each
/// rank fills its own slot), then the bytes, six to an f64 (48-bit integers, exact in
/// f64) at each rank's offset of a zero buffer, so the sum is every rank's bytes
/// unchanged. Trials and folds run on several ranks send their results this way.
pub fn allgather_bytes(comm: &mut dyn Communicator, mine: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    const PER: usize = 6;
    let (rank, size) = (comm.rank(), comm.size());
    let mut lens = vec![0.0f64; size];
    lens[rank] = mine.len() as f64;
    comm.allreduce_sum_f64(&mut lens)?;
    let lens: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
    let words: Vec<usize> = lens.iter().map(|l| l.div_ceil(PER)).collect();
    let mut buf = vec![0.0f64; words.iter().sum()];
    let at: usize = words[..rank].iter().sum();
    for (k, piece) in mine.chunks(PER).enumerate() {
        let mut w = 0u64;
        for (i, &b) in piece.iter().enumerate() {
            w |= u64::from(b) << (8 * i);
        }
        buf[at + k] = w as f64;
    }
    comm.allreduce_sum_f64(&mut buf)?;
    let mut out = Vec::with_capacity(size);
    let mut at = 0;
    for (&len, &n) in lens.iter().zip(&words) {
        let mut bytes = Vec::with_capacity(n * PER);
        for &w in &buf[at..at + n] {
            let w = w as u64;
            bytes.extend((0..PER).map(|i| (w >> (8 * i)) as u8));
        }
        bytes.truncate(len);
        out.push(bytes);
        at += n;
    }
    Ok(out)
}

/// A little-endian encoding of results sent between ranks (`allgather_bytes`).
#[derive(Default)]
pub struct Wire(pub Vec<u8>);

impl Wire {
    pub fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    /// The bits, so every value (NaN included) arrives unchanged.
    pub fn f64(&mut self, x: f64) {
        self.u64(x.to_bits());
    }
    pub fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

/// Reads what `Wire` wrote, in the same order.
pub struct Unwire<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Unwire<'a> {
    pub fn new(bytes: &'a [u8]) -> Unwire<'a> {
        Unwire { bytes, at: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or("internal error: a rank's results end early")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    pub fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    pub fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_bits(self.u64()?))
    }
    pub fn str(&mut self) -> Result<String, String> {
        let n = self.u64()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| "internal error: a rank sent text that is not UTF-8".into())
    }
    pub fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u64()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    /// Whether everything was read.
    pub fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

/// FNV-1a over the bits of `values`: the parameter hash compared across ranks.
pub fn hash_f32<'a>(values: impl IntoIterator<Item = &'a [f32]>) -> u64 {
    let mut h = crate::rng::Fnv::default();
    for v in values {
        for x in v {
            h.eat(&x.to_bits().to_le_bytes());
        }
    }
    h.finish()
}

/// Whether every rank passed the same `x`. The value is sent as four 16-bit pieces with
/// their squares, all exact in f64: the pieces are equal on every rank exactly when
/// `size * sum(x^2) == sum(x)^2` for each (equality in Cauchy-Schwarz).
pub fn all_equal(comm: &mut dyn Communicator, x: u64) -> Result<bool, String> {
    let mut buf = [0.0f64; 8];
    for k in 0..4 {
        let piece = ((x >> (16 * k)) & 0xffff) as f64;
        buf[k] = piece;
        buf[4 + k] = piece * piece;
    }
    comm.allreduce_sum_f64(&mut buf)?;
    let n = comm.size() as f64;
    Ok((0..4).all(|k| n * buf[4 + k] == buf[k] * buf[k]))
}

/// One process, one rank: sums are the identity. A session given it runs the split step
/// (the same arithmetic as a distributed run's, on all rows).
pub struct Solo;

impl Communicator for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn allreduce_sum_f32(&mut self, _buf: &mut [f32]) -> Result<(), String> {
        Ok(())
    }
    fn allreduce_sum_f64(&mut self, _buf: &mut [f64]) -> Result<(), String> {
        Ok(())
    }
}

/// The shared state of a `Local` group: each rank's contribution to the current
/// collective, how many ranks have arrived and read, and a generation counter.
struct Shared {
    slots: Vec<Vec<f64>>,
    sum: Vec<f64>,
    arrived: usize,
    read: usize,
    generation: u64,
    /// Set when the ranks' buffer lengths differ: that collective fails on every rank.
    error: Option<String>,
}

/// In-process communicators, one per thread of a group: an embedder's data-parallel run
/// without MPI, and the test of the gradient arithmetic. Ranks sum in rank order, so
/// results do not depend on timing. A started bucket is summed at its wait, from a copy
/// of its buffers taken at the start, and the buffers hold NaN in between: a step that
/// read or wrote a gradient while its sum is in flight would show in its results.
pub struct Local {
    rank: usize,
    size: usize,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    /// Started buckets: (bucket, address, the buffer's values at the start).
    pending: Vec<(u32, usize, Vec<f32>)>,
}

impl Local {
    /// `size` communicators of one group (give one to each thread).
    pub fn group(size: usize) -> Vec<Local> {
        let size = size.max(1);
        let shared = Arc::new((
            Mutex::new(Shared {
                slots: vec![Vec::new(); size],
                sum: Vec::new(),
                arrived: 0,
                read: 0,
                generation: 0,
                error: None,
            }),
            Condvar::new(),
        ));
        (0..size).map(|rank| Local { rank, size, shared: shared.clone(), pending: Vec::new() }).collect()
    }

    fn reduce(&mut self, buf: &[f64]) -> Result<Vec<f64>, String> {
        let poisoned = |_| "a rank of the in-process group panicked".to_string();
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().map_err(poisoned)?;
        // A rank back early waits until every rank has read the previous result.
        while st.arrived == self.size {
            st = cv.wait(st).map_err(poisoned)?;
        }
        let generation = st.generation;
        st.slots[self.rank] = buf.to_vec();
        st.arrived += 1;
        if st.arrived == self.size {
            let n = st.slots[0].len();
            st.error = st
                .slots
                .iter()
                .any(|s| s.len() != n)
                .then(|| "ranks called a collective with buffers of different lengths".to_string());
            let mut sum = vec![0.0; n];
            for s in &st.slots {
                for (o, x) in sum.iter_mut().zip(s) {
                    *o += x;
                }
            }
            st.sum = sum;
            st.generation += 1;
            cv.notify_all();
        } else {
            while st.generation == generation {
                st = cv.wait(st).map_err(poisoned)?;
            }
        }
        let out = match &st.error {
            Some(e) => Err(e.clone()),
            None => Ok(st.sum.clone()),
        };
        st.read += 1;
        if st.read == self.size {
            st.read = 0;
            st.arrived = 0;
            cv.notify_all();
        }
        out
    }
}

impl Communicator for Local {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn allreduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<(), String> {
        // Summed in f64 and rounded once; MPI sums in f32 (the tolerance of
        // tests/distributed.rs covers both).
        let wide: Vec<f64> = buf.iter().map(|&x| f64::from(x)).collect();
        let sum = self.reduce(&wide)?;
        for (o, x) in buf.iter_mut().zip(sum) {
            *o = x as f32;
        }
        Ok(())
    }
    fn allreduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<(), String> {
        let sum = self.reduce(buf)?;
        buf.copy_from_slice(&sum);
        Ok(())
    }
    fn start_sum(&mut self, bucket: u32, bufs: Bucket<'_>) -> Result<(), String> {
        for i in 0..bufs.len() {
            if let Some((p, n)) = bufs.buffer(i) {
                // SAFETY: a bucket's buffers are valid arena regions for the running step.
                let b = unsafe { std::slice::from_raw_parts_mut(p, n) };
                self.pending.push((bucket, p as usize, b.to_vec()));
                b.fill(f32::NAN);
            }
        }
        Ok(())
    }
    fn wait_sum(&mut self, bucket: u32) -> Result<(), String> {
        let mine: Vec<(u32, usize, Vec<f32>)>;
        (mine, self.pending) = std::mem::take(&mut self.pending).into_iter().partition(|(b, _, _)| *b == bucket);
        for (_, addr, mut values) in mine {
            self.allreduce_sum_f32(&mut values)?;
            // SAFETY: the buffer is the one `start_sum` was given for this bucket of the
            // running step, which the step leaves alone until this wait returns.
            unsafe { std::slice::from_raw_parts_mut(addr as *mut f32, values.len()) }.copy_from_slice(&values);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_and_cover_the_batch() {
        let rows: Vec<usize> = (100..107).collect();
        let parts: Vec<&[usize]> = (0..3).map(|r| shard(&rows, r, 3)).collect();
        assert_eq!(parts, vec![&[100, 101][..], &[102, 103][..], &[104, 105, 106][..]]);
        let two: Vec<&[usize]> = (0..4).map(|r| shard(&rows[..2], r, 4)).collect();
        assert_eq!(two.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![0, 1, 0, 1]);
    }

    #[test]
    fn bytes_reach_every_rank_unchanged() {
        let handles: Vec<_> = Local::group(3)
            .into_iter()
            .map(|mut c| {
                std::thread::spawn(move || -> Result<Vec<Vec<u8>>, String> {
                    // Rank 1 sends nothing; the others lengths that are not multiples of 6.
                    let mine: Vec<u8> = match c.rank() {
                        0 => (0..=255).collect(),
                        1 => vec![],
                        _ => vec![255, 0, 7],
                    };
                    allgather_bytes(&mut c, &mine)
                })
            })
            .collect();
        for h in handles {
            let got = h.join().expect("rank thread").expect("gather");
            assert_eq!(got, vec![(0..=255).collect::<Vec<u8>>(), vec![], vec![255, 0, 7]]);
        }
        let mut w = Wire::default();
        w.f64(f64::NAN);
        w.str("val_f1 ✓");
        w.bytes(&[1, 2]);
        let mut r = Unwire::new(&w.0);
        assert!(r.f64().expect("f64").is_nan());
        assert_eq!(r.str().expect("str"), "val_f1 ✓");
        assert_eq!(r.bytes().expect("bytes"), vec![1, 2]);
        assert!(r.done());
        assert!(r.u64().is_err());
    }

    #[test]
    fn local_group_sums_in_every_rank() {
        let handles: Vec<_> = Local::group(3)
            .into_iter()
            .map(|mut c| {
                std::thread::spawn(move || -> Result<(Vec<Vec<f32>>, bool, bool), String> {
                    let mut out = Vec::new();
                    for round in 0..50 {
                        let mut b = vec![c.rank() as f32 + round as f32, 1.0];
                        c.allreduce_sum_f32(&mut b)?;
                        out.push(b);
                    }
                    let same = all_equal(&mut c, 0xdead_beef_1234_5678)?;
                    let rank = c.rank();
                    let differ = all_equal(&mut c, 1 << (20 * rank))?;
                    Ok((out, same, differ))
                })
            })
            .collect();
        for h in handles {
            let (out, same, differ) = h.join().expect("rank thread").expect("collectives");
            for (round, b) in out.iter().enumerate() {
                assert_eq!(b, &vec![3.0 + 3.0 * round as f32, 3.0]);
            }
            assert!(same);
            assert!(!differ);
        }
    }
}
