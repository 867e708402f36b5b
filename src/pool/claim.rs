//! The claim counters: how chunks of a call are handed out, and every step of its protocol in
//! one place, so that the loom model below checks the code the pool runs.
//!
//! # Stripes (chunk affinity)
//! Each runner owns a *stripe*: with `S` stripes, runner `o` owns chunks `o`, `o + S`,
//! `o + 2S`, ... A runner claims from its own stripe first and steals from the others (in
//! order after its own) only when its stripe is empty. Repeated calls of one shape therefore
//! hand each worker the same rows, which are still in its core's cache (and, on a NUMA machine,
//! on its node), while a slow or dead runner's chunks are still taken by the others.
//!
//! A stripe's counter packs `(call sequence << 32) | k`, the number of its chunks claimed so
//! far. A claim is a compare-and-swap of `k` to `k + 1`, which succeeds only while the
//! sequence half is the call the runner works on and the chunk `o + k S` is below `nchunks`.
//! The parent:
//! - [`close`](Claims::close)s every stripe of the previous call before it writes anything of
//!   a new call (a runner late by a call could otherwise pair an old counter with the new
//!   `nchunks` and claim a chunk of the new call under the old sequence);
//! - [`open`](Claims::open)s the new call once its chunk slots are reset;
//! - may [`grow`](Claims::grow) a running call, and [`cancel`](Claims::cancel) one.
//!
//! Under `--cfg loom` the atomics are loom's, and the tests at the end run the protocol's
//! steps on threads standing in for the parent and the workers.

use crate::primitive::{AtomicU64, Ordering, fence};

#[inline]
pub(crate) fn pack(seq: u32, low: u32) -> u64 {
    (u64::from(seq) << 32) | u64::from(low)
}

#[inline]
pub(crate) fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// What every stripe shares: the call's chunk count and its cancellation (its own 128-byte
/// line, read by every claim, written when a call opens and when it is cancelled).
#[repr(C, align(128))]
pub(crate) struct ClaimLine {
    nchunks: AtomicU64,
    /// Chunks at or past this index are not claimed any more: `u64::MAX` while the call runs,
    /// lowered past a failed chunk (the chunks before it still run, so the call reports its
    /// lowest failing chunk whatever the timing), 0 when the whole call is stopped.
    limit: AtomicU64,
}

/// One runner's stripe counter, `(seq << 32) | chunks of the stripe claimed`, on its own
/// 128-byte line (its owner writes it at every claim).
#[repr(C, align(128))]
pub(crate) struct Stripe {
    next: AtomicU64,
}

impl ClaimLine {
    /// A line with no call (loom models; the pool's lives in zeroed shared memory).
    #[cfg(loom)]
    pub(crate) fn new() -> ClaimLine {
        ClaimLine {
            nchunks: AtomicU64::new(0),
            limit: AtomicU64::new(u64::MAX),
        }
    }
}

impl Stripe {
    /// A stripe with no call (loom models).
    #[cfg(loom)]
    pub(crate) fn new() -> Stripe {
        Stripe {
            next: AtomicU64::new(0),
        }
    }
}

/// The claim state of a pool: the shared line and one stripe per runner.
#[derive(Clone, Copy)]
pub(crate) struct Claims<'a> {
    line: &'a ClaimLine,
    stripes: &'a [Stripe],
}

/// What one stripe offers a claimer.
enum Take {
    Chunk(usize),
    /// Nothing left in this stripe: try the next.
    Empty,
    /// The call is cancelled or over: stop claiming.
    Over,
}

impl<'a> Claims<'a> {
    /// `stripes` must not be empty.
    pub(crate) fn new(line: &'a ClaimLine, stripes: &'a [Stripe]) -> Claims<'a> {
        debug_assert!(!stripes.is_empty());
        Claims { line, stripes }
    }

    /// The chunk `k` of stripe `o` is.
    #[inline]
    fn chunk_of(&self, o: usize, k: u32) -> u64 {
        o as u64 + u64::from(k) * self.stripes.len() as u64
    }

    /// The parent, before it writes anything of the call after `old_seq`: no claim of the old
    /// call succeeds from now on.
    pub(crate) fn close(&self, old_seq: u32) {
        // ORDERING: the stores, then a Release fence: the fence orders them before every later
        // store of the next call (the Relaxed resets of `limit`, `nchunks` and the chunk
        // slots); a claimer that Acquire-loads one of those synchronises with the fence, so its
        // CAS of a stripe finds this value or a later one. The stores themselves may be
        // Relaxed: the fence is what orders them (on x86 both are plain instructions; SeqCst
        // stores would cost an `xchg` each on every call). `u32::MAX` claimed chunks lies past
        // any chunk count, so a closed stripe offers nothing.
        for stripe in self.stripes {
            stripe
                .next
                .store(pack(old_seq, u32::MAX), Ordering::Relaxed);
        }
        fence(Ordering::Release);
    }

    /// The parent publishes call `seq` with `n` chunks, once their slots are reset (and after
    /// [`close`](Self::close)).
    pub(crate) fn open(&self, seq: u32, n: usize) {
        // ORDERING: Relaxed, published by the Release store of the call's `job.seq` (which a
        // worker Acquire-loads before it claims; the caller wrote them itself) and by the
        // stripes' Release stores below. A claimer that reads an older call's limit or count
        // first finds the stripe closed or of another call, thanks to `close`'s fence.
        self.line.limit.store(u64::MAX, Ordering::Relaxed);
        self.line.nchunks.store(n as u64, Ordering::Relaxed);
        for stripe in self.stripes {
            // ORDERING: Release: the call's description, slots and counters before it.
            stripe.next.store(pack(seq, 0), Ordering::Release);
        }
    }

    /// The parent adds chunks to the running call: `n` chunks in all, the new slots and input
    /// written before. Each stripe goes on into the new chunks it owns.
    pub(crate) fn grow(&self, n: usize) {
        // ORDERING: SeqCst (a Release): the new slots and their input before it; claimers
        // Acquire-load `nchunks`. SeqCst also orders it before the epoch bump that wakes idle
        // workers, who re-check with `has_more` after loading the epoch.
        self.line.nchunks.store(n as u64, Ordering::SeqCst);
    }

    /// Stops further claims of the current call.
    pub(crate) fn cancel(&self) {
        // ORDERING: SeqCst, paired with the claim loop's SeqCst load: a claimer that stored its
        // CLAIMING state (SeqCst) either sees the cancellation or is seen as busy by the
        // canceller's SeqCst loads of the workers' states.
        self.line.limit.store(0, Ordering::SeqCst);
    }

    /// Stops further claims of chunks `first` and beyond (a chunk before `first` failed the
    /// call); the chunks before still run.
    pub(crate) fn cancel_from(&self, first: usize) {
        // ORDERING: SeqCst, as in `cancel`; the minimum of every failure's.
        self.line.limit.fetch_min(first as u64, Ordering::SeqCst);
    }

    /// The first chunk no longer claimed (`u64::MAX`: no limit).
    pub(crate) fn limit(&self) -> u64 {
        // ORDERING: SeqCst, see `cancel`.
        self.line.limit.load(Ordering::SeqCst)
    }

    /// Whether the current call is cancelled, wholly or from some chunk on.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.limit() != u64::MAX
    }

    /// Whether chunk `i` of call `seq` has been claimed (the parent, while it holds the call).
    pub(crate) fn is_claimed(&self, seq: u32, i: usize) -> bool {
        let s = self.stripes.len();
        // ORDERING: SeqCst, like the parent's other loads while it waits.
        let (call, k) = unpack(self.stripes[i % s].next.load(Ordering::SeqCst));
        call == seq && (i / s) < k as usize
    }

    /// Whether every one of call `seq`'s `n` chunks has been claimed.
    pub(crate) fn all_claimed(&self, seq: u32, n: usize) -> bool {
        (0..self.stripes.len()).all(|o| {
            // ORDERING: SeqCst, as in `is_claimed`.
            let (call, k) = unpack(self.stripes[o].next.load(Ordering::SeqCst));
            call == seq && self.chunk_of(o, k) >= n as u64
        })
    }

    /// One past the highest chunk of call `seq` claimed so far (at most `n`): no chunk at or
    /// beyond it has been claimed.
    pub(crate) fn claimed_below(&self, seq: u32, n: usize) -> usize {
        let bound = (0..self.stripes.len())
            .map(|o| {
                // ORDERING: SeqCst, as in `is_claimed`.
                let (call, k) = unpack(self.stripes[o].next.load(Ordering::SeqCst));
                if call == seq && k > 0 {
                    self.chunk_of(o, k - 1) + 1
                } else {
                    0
                }
            })
            .max()
            .unwrap_or(0);
        bound.min(n as u64) as usize
    }

    /// Chunks in the current call.
    pub(crate) fn nchunks(&self) -> usize {
        // ORDERING: Relaxed: the parent reads what it stored; a runner (deciding whether its
        // chunk was the last) may read a smaller value while the call grows, which costs an
        // extra wake-up of the parent, never a lost one.
        self.line.nchunks.load(Ordering::Relaxed) as usize
    }

    /// Claims the next chunk of call `seq` for runner `me`: from its own stripe first, then
    /// from the others'. `None` when none is left (below the cancellation limit), the call is
    /// cancelled, or the pool has moved
    /// on to another call.
    #[inline]
    pub(crate) fn claim(&self, seq: u32, me: usize) -> Option<usize> {
        let s = self.stripes.len();
        for step in 0..s {
            match self.take(seq, (me + step) % s) {
                Take::Chunk(i) => return Some(i),
                Take::Empty => continue,
                Take::Over => return None,
            }
        }
        None
    }

    #[inline]
    fn take(&self, seq: u32, o: usize) -> Take {
        let stripe = &self.stripes[o];
        loop {
            let limit = self.limit();
            if limit == 0 {
                return Take::Over;
            }
            // ORDERING: Acquire, paired with the parent's Release store in `open`, which makes
            // the call's description and `nchunks` visible.
            let v = stripe.next.load(Ordering::Acquire);
            let (call, k) = unpack(v);
            if call != seq {
                return Take::Over;
            }
            // ORDERING: Acquire, paired with `grow` (the added chunks' input and slots) and,
            // through `close`'s fence, with the parent's close of an older call.
            let n = self.line.nchunks.load(Ordering::Acquire);
            let i = self.chunk_of(o, k);
            // A stripe's chunks only grow: past the limit, the rest of it is too.
            if i >= n || i >= limit {
                return Take::Empty;
            }
            // ORDERING: AcqRel so that a stripe's claims are totally ordered and each index is
            // taken once.
            if stripe
                .next
                .compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Take::Chunk(i as usize);
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
        let n = self.line.nchunks.load(Ordering::SeqCst).min(self.limit());
        (0..self.stripes.len()).any(|o| {
            // ORDERING: SeqCst, as above.
            let (call, k) = unpack(self.stripes[o].next.load(Ordering::SeqCst));
            call == seq && self.chunk_of(o, k) < n
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn block(n: usize) -> (ClaimLine, Vec<Stripe>) {
        let line = ClaimLine {
            nchunks: AtomicU64::new(0),
            limit: AtomicU64::new(u64::MAX),
        };
        let stripes = (0..n)
            .map(|_| Stripe {
                next: AtomicU64::new(0),
            })
            .collect();
        (line, stripes)
    }

    #[test]
    fn each_runner_takes_its_own_stripe_first_then_steals_in_order() {
        let (line, stripes) = block(3);
        let claims = Claims::new(&line, &stripes);
        claims.close(0);
        claims.open(1, 8);
        // Runner 1 owns 1, 4, 7; then steals from stripe 2 (2, 5), then stripe 0 (0, 3, 6).
        let got: Vec<usize> = std::iter::from_fn(|| claims.claim(1, 1)).collect();
        assert_eq!(got, [1, 4, 7, 2, 5, 0, 3, 6]);
        assert!(claims.all_claimed(1, 8));
        assert!(!claims.has_more(1));
        assert_eq!(claims.claimed_below(1, 8), 8);
        // Growth goes on in every stripe's own chunks.
        claims.grow(10);
        assert!(claims.has_more(1));
        assert!(!claims.is_claimed(1, 8));
        assert_eq!(claims.claim(1, 2), Some(8));
        assert_eq!(claims.claim(1, 2), Some(9));
        assert!(claims.is_claimed(1, 9));
        assert_eq!(claims.claim(1, 2), None);
        // A closed call offers nothing under its old sequence, and the next call starts over.
        claims.close(1);
        claims.open(2, 2);
        assert_eq!(claims.claim(1, 0), None);
        assert!(!claims.is_claimed(2, 0));
        assert_eq!(claims.claimed_below(2, 2), 0);
        assert_eq!(claims.claim(2, 0), Some(0));
        assert_eq!(claims.claimed_below(2, 2), 1);
        claims.cancel();
        assert_eq!(claims.claim(2, 1), None);
        assert!(!claims.has_more(2));
        // A failure in chunk 2 stops chunks 3 and on; those before it still go out.
        claims.close(2);
        claims.open(3, 6);
        assert_eq!(claims.claim(3, 2), Some(2));
        claims.cancel_from(3);
        let got: Vec<usize> = std::iter::from_fn(|| claims.claim(3, 0)).collect();
        assert_eq!(got, [0, 1]);
        assert!(!claims.has_more(3));
        assert!(claims.is_cancelled());
        claims.cancel_from(5); // a later failure does not raise the limit
        assert_eq!(claims.limit(), 3);
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

    /// A claim line and two stripes, as the pool's control block holds them.
    struct Block {
        line: ClaimLine,
        stripes: [Stripe; 2],
    }

    impl Block {
        fn new() -> Arc<Block> {
            Arc::new(Block {
                line: ClaimLine::new(),
                stripes: [Stripe::new(), Stripe::new()],
            })
        }

        fn claims(&self) -> Claims<'_> {
            Claims::new(&self.line, &self.stripes)
        }
    }

    /// Chunk 0 of call 1 is claimed and finished; the parent publishes call 2 (two chunks)
    /// while runner 0 of call 1 comes back to look for more (a wake-up, a growth it expects).
    /// Under call 1's sequence no chunk at or past call 1's one chunk may ever be claimed.
    fn late_worker_during_publish(publish: fn(Claims<'_>)) {
        model(move || {
            let block = Block::new();
            block.claims().open(1, 1);
            assert_eq!(block.claims().claim(1, 0), Some(0));
            let worker = {
                let block = Arc::clone(&block);
                thread::spawn(move || {
                    // Woken: it looks for more, then claims (the claim decides either way).
                    let _ = block.claims().has_more(1);
                    block.claims().claim(1, 0)
                })
            };
            publish(block.claims());
            let late = worker.join().unwrap();
            assert_eq!(late, None, "a worker of call 1 claimed a chunk of call 2");
        });
    }

    #[test]
    fn a_late_worker_never_claims_a_chunk_of_the_next_call() {
        late_worker_during_publish(|claims| {
            claims.close(1);
            claims.open(2, 2);
        });
    }

    /// The protocol before `close`: the parent wrote the new call's counters and then its
    /// stripes. The model finds the race (a worker of call 1 steals chunk 1 of call 2).
    #[test]
    #[should_panic(expected = "a worker of call 1 claimed a chunk of call 2")]
    fn the_old_protocol_lets_a_late_worker_claim_a_chunk_of_the_next_call() {
        late_worker_during_publish(|claims| claims.open(2, 2));
    }

    /// A worker claims while the parent grows the call and then cancels it: each chunk is
    /// claimed at most once (by the worker or by the parent, which also claims, as a caller
    /// that helps), and nothing past what was published.
    #[test]
    fn growth_and_cancellation_hand_each_chunk_out_once() {
        model(|| {
            let block = Block::new();
            block.claims().open(1, 1);
            let worker = {
                let block = Arc::clone(&block);
                thread::spawn(move || {
                    let claims = block.claims();
                    let mut got = Vec::new();
                    while let Some(i) = claims.claim(1, 0) {
                        got.push(i);
                    }
                    if claims.has_more(1) {
                        got.extend(claims.claim(1, 0));
                    }
                    got
                })
            };
            block.claims().grow(3);
            let mine = block.claims().claim(1, 1);
            block.claims().cancel();
            let mut all = worker.join().unwrap();
            all.extend(mine);
            all.sort_unstable();
            let len = all.len();
            all.dedup();
            assert_eq!(all.len(), len, "a chunk was claimed twice");
            assert!(all.iter().all(|&i| i < 3));
        });
    }

    /// Two runners claim three chunks from their own stripes and each other's: every chunk is
    /// taken exactly once, and the parent then sees them all claimed.
    #[test]
    fn stealing_takes_every_chunk_exactly_once() {
        model(|| {
            let block = Block::new();
            block.claims().open(1, 3);
            let thief = {
                let block = Arc::clone(&block);
                thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(i) = block.claims().claim(1, 1) {
                        got.push(i);
                    }
                    got
                })
            };
            let mut all = Vec::new();
            while let Some(i) = block.claims().claim(1, 0) {
                all.push(i);
            }
            all.extend(thief.join().unwrap());
            all.sort_unstable();
            assert_eq!(all, [0, 1, 2]);
            assert!(block.claims().all_claimed(1, 3));
            assert!(!block.claims().has_more(1));
        });
    }
}
