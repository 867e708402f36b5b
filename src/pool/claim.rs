//! The claim counter: how chunks of a call are handed out, and every step of its protocol in
//! one place, so that the loom model below checks the code the pool runs.
//!
//! `next` packs `(call sequence << 32) | next chunk index`. A runner claims by compare-and-swap
//! on `next`, which succeeds only while the sequence half is the call it works on and the
//! index is below `nchunks`. The parent:
//! - [`close`](ClaimLine::close)s the previous call's counter before it writes anything of a
//!   new call (a runner late by a call could otherwise pair the old `next` with the new
//!   `nchunks` and claim a chunk of the new call under the old sequence);
//! - [`open`](ClaimLine::open)s the new call once its chunk slots are reset;
//! - may [`grow`](ClaimLine::grow) a running call, and [`cancel`](ClaimLine::cancel) one.
//!
//! Under `--cfg loom` the atomics are loom's, and the tests at the end run the protocol's
//! steps on threads standing in for the parent and the workers.

use crate::primitive::{AtomicU32, AtomicU64, Ordering, fence};

#[inline]
pub(crate) fn pack(seq: u32, low: u32) -> u64 {
    (u64::from(seq) << 32) | u64::from(low)
}

#[inline]
pub(crate) fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// The claim counter of the control block (its own 128-byte line: every claim writes it).
#[repr(C, align(128))]
pub(crate) struct ClaimLine {
    /// `(seq << 32) | next chunk index`.
    next: AtomicU64,
    nchunks: AtomicU64,
    /// Set when the call has failed or is being stopped: no new chunk is claimed.
    cancelled: AtomicU32,
}

impl ClaimLine {
    /// A counter with no call (loom models; the pool's lives in zeroed shared memory).
    #[cfg(loom)]
    pub(crate) fn new() -> ClaimLine {
        ClaimLine {
            next: AtomicU64::new(0),
            nchunks: AtomicU64::new(0),
            cancelled: AtomicU32::new(0),
        }
    }

    /// The parent, before it writes anything of the call after `old_seq`: no claim of the old
    /// call succeeds from now on.
    pub(crate) fn close(&self, old_seq: u32) {
        // ORDERING: the store, then a Release fence: the fence orders the store before every
        // later store of the next call (the Relaxed resets of `cancelled`, `nchunks` and the
        // chunk slots); a claimer that Acquire-loads one of those synchronises with the fence,
        // so its CAS of `next` finds this value or a later one. The store itself may be
        // Relaxed: the fence is what orders it (on x86 both are plain instructions; a SeqCst
        // store would cost an `xchg` on every call).
        self.next.store(pack(old_seq, u32::MAX), Ordering::Relaxed);
        fence(Ordering::Release);
    }

    /// The parent publishes call `seq` with `n` chunks, once their slots are reset (and after
    /// [`close`](Self::close)).
    pub(crate) fn open(&self, seq: u32, n: usize) {
        // ORDERING: both published by the Release store of `next` (claimers Acquire-load it).
        self.cancelled.store(0, Ordering::Relaxed);
        self.nchunks.store(n as u64, Ordering::Relaxed);
        // ORDERING: Release: the call's description, slots and counters before it.
        self.next.store(pack(seq, 0), Ordering::Release);
    }

    /// The parent adds chunks to the running call: `n` chunks in all, the new slots and input
    /// written before.
    pub(crate) fn grow(&self, n: usize) {
        // ORDERING: SeqCst (a Release): the new slots and their input before it; claimers
        // Acquire-load `nchunks`. SeqCst also orders it before the epoch bump that wakes idle
        // workers, who re-check with `has_more` after loading the epoch.
        self.nchunks.store(n as u64, Ordering::SeqCst);
    }

    /// Stops further claims of the current call.
    pub(crate) fn cancel(&self) {
        // ORDERING: SeqCst, paired with the claim loop's SeqCst load: a claimer that stored its
        // CLAIMING state (SeqCst) either sees the cancellation or is seen as busy by the
        // canceller's SeqCst loads of the workers' states.
        self.cancelled.store(1, Ordering::SeqCst);
    }

    /// Whether the current call is cancelled.
    pub(crate) fn is_cancelled(&self) -> bool {
        // ORDERING: SeqCst, see `cancel`.
        self.cancelled.load(Ordering::SeqCst) != 0
    }

    /// How many of call `seq`'s `n` chunks have been claimed (the parent, while it holds the
    /// call).
    pub(crate) fn claimed(&self, seq: u32, n: usize) -> usize {
        // ORDERING: SeqCst, like the parent's other loads while it waits.
        let (s, next) = unpack(self.next.load(Ordering::SeqCst));
        if s == seq { (next as usize).min(n) } else { 0 }
    }

    /// Chunks in the current call.
    pub(crate) fn nchunks(&self) -> usize {
        // ORDERING: Relaxed: the parent reads what it stored; a runner (deciding whether its
        // chunk was the last) may read a smaller value while the call grows, which costs an
        // extra wake-up of the parent, never a lost one.
        self.nchunks.load(Ordering::Relaxed) as usize
    }

    /// Claims the next chunk of call `seq`: `None` when none is left, the call is cancelled, or
    /// the pool has moved on to another call.
    #[inline]
    pub(crate) fn claim(&self, seq: u32) -> Option<usize> {
        loop {
            if self.is_cancelled() {
                return None;
            }
            // ORDERING: Acquire, paired with the parent's Release store of `next` in `open`,
            // which makes the call's description and `nchunks` visible.
            let v = self.next.load(Ordering::Acquire);
            let (s, idx) = unpack(v);
            // ORDERING: Acquire, paired with `grow` (the added chunks' input and slots) and,
            // through `close`'s fence, with the parent's close of an older call.
            let n = self.nchunks.load(Ordering::Acquire);
            if s != seq || u64::from(idx) >= n {
                return None;
            }
            // ORDERING: AcqRel so that claims are totally ordered and each index is taken once.
            if self
                .next
                .compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Some(idx as usize);
            }
        }
    }

    /// Whether call `seq` has chunks left to claim (a worker that went idle, woken by the
    /// epoch, looks before it sleeps again). A stale answer costs one empty pass of the claim
    /// loop, whose CAS decides.
    pub(crate) fn has_more(&self, seq: u32) -> bool {
        // ORDERING: SeqCst: the parent grows `nchunks` (SeqCst) before it bumps the epoch, and
        // this runs after the worker loaded the epoch (SeqCst): either it sees the growth, or
        // the epoch has moved and the worker's wait returns at once.
        let (s, next) = unpack(self.next.load(Ordering::SeqCst));
        s == seq
            && u64::from(next) < self.nchunks.load(Ordering::SeqCst)
            && self.cancelled.load(Ordering::SeqCst) == 0
    }
}

#[cfg(all(test, loom))]
mod model {
    //! `RUSTFLAGS="--cfg loom" cargo test --release --lib claim::model`: threads stand in for
    //! the parent and the workers; loom runs every interleaving (and every weak-memory outcome
    //! it models) of the steps below.

    use super::*;
    use crate::primitive::model;
    use loom::sync::Arc;
    use loom::thread;

    /// Chunk 0 of call 1 is claimed and finished; the parent publishes call 2 (two chunks)
    /// while a worker of call 1 comes back to look for more (a wake-up, a growth it expects).
    /// Under call 1's sequence no index at or past call 1's one chunk may ever be claimed.
    fn late_worker_during_publish(publish: fn(&ClaimLine)) {
        model(move || {
            let claim = Arc::new(ClaimLine::new());
            claim.open(1, 1);
            assert_eq!(claim.claim(1), Some(0));
            let worker = {
                let claim = Arc::clone(&claim);
                thread::spawn(move || {
                    // Woken: it looks for more, then claims (the claim decides either way).
                    let _ = claim.has_more(1);
                    claim.claim(1)
                })
            };
            publish(&claim);
            let late = worker.join().unwrap();
            assert_eq!(late, None, "a worker of call 1 claimed a chunk of call 2");
        });
    }

    #[test]
    fn a_late_worker_never_claims_a_chunk_of_the_next_call() {
        late_worker_during_publish(|claim| {
            claim.close(1);
            claim.open(2, 2);
        });
    }

    /// The protocol before `close`: the parent wrote the new call's counters and then its
    /// `next`. The model finds the race (a worker of call 1 claims chunk 1 of call 2).
    #[test]
    #[should_panic(expected = "a worker of call 1 claimed a chunk of call 2")]
    fn the_old_protocol_lets_a_late_worker_claim_a_chunk_of_the_next_call() {
        late_worker_during_publish(|claim| claim.open(2, 2));
    }

    /// A worker claims while the parent grows the call and then cancels it: each chunk is
    /// claimed at most once (by the worker or by the parent, which also claims, as a caller
    /// that helps), and nothing past what was published.
    #[test]
    fn growth_and_cancellation_hand_each_chunk_out_once() {
        model(|| {
            let claim = Arc::new(ClaimLine::new());
            claim.open(1, 1);
            let worker = {
                let claim = Arc::clone(&claim);
                thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(i) = claim.claim(1) {
                        got.push(i);
                    }
                    if claim.has_more(1) {
                        got.extend(claim.claim(1));
                    }
                    got
                })
            };
            claim.grow(2);
            let mine = claim.claim(1);
            claim.cancel();
            let mut all = worker.join().unwrap();
            all.extend(mine);
            all.sort_unstable();
            let len = all.len();
            all.dedup();
            assert_eq!(all.len(), len, "a chunk was claimed twice");
            assert!(all.iter().all(|&i| i < 2));
        });
    }
}
