//! How a queue's put, get and join wait for each other: a `Signal` is a sequence word that
//! the other side bumps after every commit (under the queue's lock), plus a count of sleepers.
//!
//! A waiter reads the word *under the lock* (so a commit after its look bumps it), lets the
//! lock go, and waits for the word to move: it spins briefly, then announces itself in
//! `waiters` and futex-waits on the value it saw. A committer bumps the word, then wakes the
//! sleepers if any are announced. Both sides use SeqCst: the waiter stores its announcement
//! then the kernel re-reads the word; the committer bumps the word then reads `waiters`. One
//! sees the other, so no wake-up is lost. The loom model at the end checks it with the queue's
//! lock and commits, threads standing in for processes.

use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::primitive::{AtomicU32, Ordering, fence, futex_wait, futex_wake};

/// How long a waiter spins (yielding the CPU) for the other side before it sleeps: a busy peer
/// answers within microseconds, far sooner than a futex wake-up arrives. The loom model does
/// not spin (each spin would be a step to explore).
const SPIN: Duration = if cfg!(loom) {
    Duration::ZERO
} else {
    Duration::from_micros(50)
};

/// A sequence word and its sleepers.
#[repr(C)]
pub(super) struct Signal {
    /// Bumped after every commit the waiters wait for (the futex word).
    word: AtomicU32,
    /// Waiters asleep (or about to sleep) on `word`.
    waiters: AtomicU32,
}

impl Signal {
    pub(super) fn new() -> Signal {
        Signal {
            word: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// The word now: read it under the queue's lock, before letting the lock go to wait.
    pub(super) fn seen(&self) -> u32 {
        // ORDERING: SeqCst; under the lock, so a commit after it bumps it.
        self.word.load(Ordering::SeqCst)
    }

    /// After a commit: moves the word on and wakes up to `count` of the sleepers (no system
    /// call when none sleeps).
    pub(super) fn bump_and_wake(&self, count: i32) {
        // ORDERING: SeqCst bump, then SeqCst read of the sleeper count; a waiter announces
        // itself (SeqCst), fences, then sleeps on the old value (the futex re-checks it). In
        // the single total order of SeqCst operations one of us sees the other's write. loom
        // models SeqCst accesses as AcqRel, too weak for this store-then-load pattern, so its
        // model gets the SeqCst fence that the real accesses already imply (a `lock xadd` is a
        // full barrier on x86; the hot path keeps it without an extra `mfence`).
        self.word.fetch_add(1, Ordering::SeqCst);
        if cfg!(loom) {
            fence(Ordering::SeqCst);
        }
        if self.waiters.load(Ordering::SeqCst) != 0 {
            futex_wake(&self.word, count);
        }
    }

    /// Moves the word on and wakes every sleeper (a close: everyone must look again).
    pub(super) fn wake_all(&self) {
        // ORDERING: SeqCst, as in `bump_and_wake`.
        self.word.fetch_add(1, Ordering::SeqCst);
        futex_wake(&self.word, i32::MAX);
    }

    /// Waits until the word moves on from `seen`. `wait`: `None` = do not wait (WouldBlock);
    /// `Some(None)` = as long as it takes; `Some(Some(t))` = until `t` (TimedOut). `poll`:
    /// wake up that often anyway, for the caller to look at something else. Returns Ok when
    /// the caller should look again.
    pub(super) fn wait_for_change(
        &self,
        seen: u32,
        wait: Option<Option<Instant>>,
        poll: Option<Duration>,
        busy: &str,
        too_long: &str,
    ) -> Result<()> {
        let Some(deadline) = wait else {
            return Err(Error::new(ErrorKind::WouldBlock, busy));
        };
        if self.spin_until_changed(seen, deadline) {
            return Ok(());
        }
        let Some(left) = crate::sync::remaining(deadline) else {
            return Err(Error::new(ErrorKind::TimedOut, too_long));
        };
        let sleep = match (left, poll) {
            (Some(l), Some(p)) => Some(l.min(p)),
            (l, p) => l.or(p),
        };
        // ORDERING: we announce ourselves, SeqCst fence (the kernel's futex_wait also issues a
        // full barrier before it re-reads `word`), then the kernel re-reads `word`; the other
        // side bumps `word`, then reads `waiters` (see `bump_and_wake`). This side sleeps
        // anyway: the fence costs nothing that matters.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        futex_wait(&self.word, seen, sleep);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    /// Spins until the word changes from `seen` or `SPIN` passes; true if it changed.
    fn spin_until_changed(&self, seen: u32, deadline: Option<Instant>) -> bool {
        let start = Instant::now();
        let mut i = 0u32;
        // ORDERING: Acquire: the change was made after a commit under the lock; the caller
        // then re-takes the lock anyway.
        while self.word.load(Ordering::Acquire) == seen {
            if SPIN.is_zero() {
                return false;
            }
            i += 1;
            if i % 32 == 0 {
                let now = Instant::now();
                if now - start >= SPIN || deadline.is_some_and(|d| now >= d) {
                    return false;
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        true
    }
}

#[cfg(all(test, loom))]
mod model {
    //! A queue of capacity 1 as the queue runs it: its cursor under the real `ShmMutex`, its
    //! two real `Signal`s, and the put and get steps of `Queue::put_until`/`get_until` (lock,
    //! look, commit or read the signal under the lock, unlock, wait or bump). The futex is
    //! modelled (see `primitive`): a lost wake-up is a deadlock loom reports.

    use super::*;
    use crate::sync::ShmMutex;
    use loom::sync::Arc;

    #[derive(Default, Clone, Copy)]
    struct Cursor {
        head: u64,
        tail: u64,
        slot: u64,
    }

    // SAFETY: plain integers.
    unsafe impl crate::ShmSafe for Cursor {}

    struct Lane {
        cursor: ShmMutex<Cursor>,
        not_empty: Signal,
        not_full: Signal,
    }

    fn put(q: &Lane, message: u64) {
        loop {
            let mut g = q.cursor.lock().unwrap();
            if g.tail - g.head < 1 {
                g.slot = message;
                g.tail += 1; // the commit
                drop(g);
                q.not_empty.bump_and_wake(1);
                return;
            }
            let seen = q.not_full.seen();
            drop(g);
            q.not_full
                .wait_for_change(seen, Some(None), None, "full", "full")
                .unwrap();
        }
    }

    fn get(q: &Lane) -> u64 {
        loop {
            let mut g = q.cursor.lock().unwrap();
            if g.head != g.tail {
                let message = g.slot;
                g.head += 1; // the commit
                drop(g);
                q.not_full.bump_and_wake(1);
                return message;
            }
            let seen = q.not_empty.seen();
            drop(g);
            q.not_empty
                .wait_for_change(seen, Some(None), None, "empty", "empty")
                .unwrap();
        }
    }

    #[test]
    fn a_full_queue_and_an_empty_one_wake_their_waiters_and_keep_the_order() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let q = Arc::new(Lane {
                cursor: ShmMutex::new(Cursor::default()),
                not_empty: Signal::new(),
                not_full: Signal::new(),
            });
            let producer = {
                let q = Arc::clone(&q);
                loom::thread::spawn(move || {
                    put(&q, 1);
                    put(&q, 2);
                })
            };
            assert_eq!(get(&q), 1);
            assert_eq!(get(&q), 2);
            producer.join().unwrap();
        });
    }
}
