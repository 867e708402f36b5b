//! `Barrier`: N processes wait until all N have arrived.

use std::time::{Duration, Instant};

use super::value::ShmSafe;
use crate::error::{Error, ErrorKind, Result};
use crate::primitive::{AtomicU64, Ordering};
use crate::wake::Signal;

/// A reusable barrier across processes: `wait` returns once `parties` processes have called
/// it. Lives in a [`SharedValue`](crate::SharedValue).
///
/// A waiter that times out takes its arrival back (unless the barrier opened meanwhile, which
/// then counts as success), so a missing or dead party costs a `TimedOut`, never a hang.
/// Python's `abort` and `reset` are here too: [`abort`](Barrier::abort) breaks the barrier
/// (every waiter, and every later `wait`, fails with [`ErrorKind::Broken`]) until
/// [`reset`](Barrier::reset), which also fails the waiters of the generation it ends. A party
/// that died while it waited stays counted: `reset` is how to clear it.
///
/// State, in one word changed only by compare-and-swap: the generation, whether each of the
/// last 16 generations ended by a reset, the broken flag, and the arrivals. A waiter that
/// wakes to a later generation reads how its own ended from that history, so an open and a
/// reset can never be mistaken for one another (unless it slept through 16 later generations,
/// which it then takes as opened).
///
/// ```
/// use std::time::Duration;
/// use shmpar::{Barrier, Process, SharedValue};
///
/// # fn main() -> shmpar::Result<()> {
/// let barrier = SharedValue::new(Barrier::new(3))?;
/// let kids: Vec<Process> = (0..2)
///     // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
///     .map(|_| unsafe { Process::fork(|| { barrier.wait_timeout(Duration::from_secs(10)).unwrap(); }) })
///     .collect::<Result<_, _>>()?;
/// barrier.wait_timeout(Duration::from_secs(10))?;
/// for k in kids {
///     k.join()?.into_result()?;
/// }
/// # Ok(())
/// # }
/// ```
#[repr(C)]
#[derive(Debug)]
pub struct Barrier {
    state: AtomicU64,
    /// Bumped at every open, abort and reset: waiters wait on it (the crate's one
    /// spin-then-sleep wait, see `wake`).
    seq: Signal,
    parties: u32,
}

// SAFETY: atomics and an integer: no pointers, no Drop.
unsafe impl ShmSafe for Barrier {}

/// `parties`, clamped to 1..=MAX_PARTIES.
const fn clamp_parties(parties: u32) -> u32 {
    if parties == 0 {
        1
    } else if parties > MAX_PARTIES {
        MAX_PARTIES
    } else {
        parties
    }
}

/// The most parties a barrier takes.
const MAX_PARTIES: u32 = (1 << 24) - 1;
const ARRIVED: u64 = (1 << 24) - 1;
const BROKEN: u64 = 1 << 24;
const HISTORY_SHIFT: u32 = 25;
const HISTORY_LEN: u32 = 16;
const GEN_SHIFT: u32 = HISTORY_SHIFT + HISTORY_LEN;

/// One reading of the state word.
#[derive(Debug, Clone, Copy)]
struct State(u64);

impl State {
    fn generation(self) -> u32 {
        (self.0 >> GEN_SHIFT) as u32
    }

    fn arrived(self) -> u32 {
        (self.0 & ARRIVED) as u32
    }

    fn broken(self) -> bool {
        self.0 & BROKEN != 0
    }

    /// The next generation, none arrived, not broken; the ended one recorded as reset or not.
    fn next(self, reset: bool) -> State {
        let history = (self.0 >> HISTORY_SHIFT) & ((1 << HISTORY_LEN) - 1);
        let history = ((history << 1) | u64::from(reset)) & ((1 << HISTORY_LEN) - 1);
        let generation =
            u64::from(self.generation().wrapping_add(1)) & ((1 << (64 - GEN_SHIFT)) - 1);
        State((generation << GEN_SHIFT) | (history << HISTORY_SHIFT))
    }

    /// How generation `mine` ended, seen from this later one: true if by a reset.
    fn was_reset(self, mine: u32) -> bool {
        let mask = (1u32 << (64 - GEN_SHIFT)) - 1;
        let later = self.generation().wrapping_sub(mine) & mask;
        if later == 0 || later > HISTORY_LEN {
            return false;
        }
        (self.0 >> (HISTORY_SHIFT + later - 1)) & 1 != 0
    }
}

impl Barrier {
    /// A barrier for `parties` processes (at least 1, at most 16,777,215; other counts are
    /// clamped).
    ///
    /// ```
    /// let b = shmpar::SharedValue::new(shmpar::Barrier::new(1))?;
    /// assert!(b.wait()?); // one party: opens at once, and it is the leader
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    #[cfg(not(loom))]
    pub const fn new(parties: u32) -> Self {
        Barrier {
            state: AtomicU64::new(0),
            seq: Signal::new(),
            parties: clamp_parties(parties),
        }
    }

    /// Under loom (whose atomics have no `const` constructor).
    #[cfg(loom)]
    pub fn new(parties: u32) -> Self {
        Barrier {
            state: AtomicU64::new(0),
            seq: Signal::new(),
            parties: clamp_parties(parties),
        }
    }

    /// The number of parties it waits for.
    ///
    /// ```
    /// assert_eq!(shmpar::Barrier::new(3).parties(), 3);
    /// ```
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// How many parties wait now (Python's `n_waiting`).
    ///
    /// ```
    /// assert_eq!(shmpar::Barrier::new(3).n_waiting(), 0);
    /// ```
    pub fn n_waiting(&self) -> u32 {
        self.load().arrived()
    }

    /// True after [`abort`](Self::abort), until [`reset`](Self::reset).
    ///
    /// ```
    /// let b = shmpar::Barrier::new(2);
    /// b.abort();
    /// assert!(b.is_broken());
    /// b.reset();
    /// assert!(!b.is_broken());
    /// ```
    pub fn is_broken(&self) -> bool {
        self.load().broken()
    }

    fn load(&self) -> State {
        // ORDERING (every access to `state`): Acquire loads and AcqRel exchanges, so that what
        // each party wrote before arriving is visible to every party after the barrier opens.
        State(self.state.load(Ordering::Acquire))
    }

    /// Moves the state from `from` to `to`; the current state if another change came first.
    fn exchange(&self, from: State, to: State) -> std::result::Result<(), State> {
        // ORDERING: see `load`.
        (self.state)
            .compare_exchange_weak(from.0, to.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(State)
    }

    /// Wakes every waiter to look at the state again.
    fn wake_all(&self) {
        // Bumped after the state change it announces; a waiter that sees the bump re-reads
        // the state (Acquire) after it.
        self.seq.bump_and_wake(i32::MAX);
    }

    /// Waits for every party; returns true in exactly one of them (the last to arrive).
    /// Waits forever if a party never comes: prefer [`wait_timeout`](Self::wait_timeout)
    /// when a peer may die. Fails with [`ErrorKind::Broken`] if the barrier is broken, or is
    /// aborted or reset while this party waits.
    ///
    /// ```
    /// let b = shmpar::SharedValue::new(shmpar::Barrier::new(1))?;
    /// b.wait()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn wait(&self) -> Result<bool> {
        self.wait_until(None)
    }

    /// Like [`wait`](Self::wait), failing with [`ErrorKind::TimedOut`] after `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = shmpar::SharedValue::new(shmpar::Barrier::new(2))?;
    /// let err = b.wait_timeout(Duration::from_millis(20)).unwrap_err();
    /// assert_eq!(err.kind(), shmpar::ErrorKind::TimedOut);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_until(Some(Instant::now() + timeout))
    }

    /// Breaks the barrier (Python's `abort`): every party waiting now, and every later
    /// [`wait`](Self::wait), fails with [`ErrorKind::Broken`] until [`reset`](Self::reset).
    /// For a party that finds it cannot go on, so that the others need not wait for their
    /// time-outs.
    ///
    /// ```
    /// let b = shmpar::SharedValue::new(shmpar::Barrier::new(2))?;
    /// b.abort();
    /// assert_eq!(b.wait().unwrap_err().kind(), shmpar::ErrorKind::Broken);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn abort(&self) {
        let mut s = self.load();
        while !s.broken() {
            match self.exchange(s, State(s.0 | BROKEN)) {
                Ok(()) => break,
                Err(now) => s = now,
            }
        }
        self.wake_all();
    }

    /// Returns the barrier to its first state (Python's `reset`): not broken, nobody waiting.
    /// The parties waiting now fail with [`ErrorKind::Broken`]; a party that died while it
    /// waited is no longer counted.
    ///
    /// ```
    /// let b = shmpar::SharedValue::new(shmpar::Barrier::new(1))?;
    /// b.abort();
    /// b.reset();
    /// assert!(b.wait()?);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn reset(&self) {
        let mut s = self.load();
        loop {
            match self.exchange(s, s.next(true)) {
                Ok(()) => break,
                Err(now) => s = now,
            }
        }
        self.wake_all();
    }

    fn broken_error(&self) -> Error {
        Error::new(
            ErrorKind::Broken,
            "the barrier was aborted or reset (see Barrier::reset)",
        )
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<bool> {
        let mut s = self.load();
        let mine = loop {
            if s.broken() {
                return Err(self.broken_error());
            }
            if s.arrived() + 1 >= self.parties {
                match self.exchange(s, s.next(false)) {
                    Ok(()) => {
                        self.wake_all();
                        return Ok(true);
                    }
                    Err(now) => s = now,
                }
            } else {
                match self.exchange(s, State(s.0 + 1)) {
                    Ok(()) => break s.generation(),
                    Err(now) => s = now,
                }
            }
        };
        loop {
            // Read before the state, so that a change after this reading ends the wait below.
            let seen = self.seq.seen();
            let s = self.load();
            if s.generation() != mine {
                return if s.was_reset(mine) {
                    Err(self.broken_error())
                } else {
                    Ok(false)
                };
            }
            if s.broken() {
                return self.leave(mine, true);
            }
            let waited = self.seq.wait_for_change(
                seen,
                Some(deadline),
                None,
                "",
                "the barrier did not open",
            );
            if waited.is_err() {
                return self.leave(mine, false);
            }
        }
    }

    /// Takes back our arrival after a time-out or an abort, unless the generation ended
    /// meanwhile (then its outcome is ours).
    fn leave(&self, mine: u32, broken: bool) -> Result<bool> {
        let mut s = self.load();
        loop {
            if s.generation() != mine {
                return if s.was_reset(mine) {
                    Err(self.broken_error())
                } else {
                    Ok(false) // it opened just in time
                };
            }
            match self.exchange(s, State(s.0 - 1)) {
                Ok(()) if broken || s.broken() => return Err(self.broken_error()),
                Ok(()) => {
                    return Err(Error::new(
                        ErrorKind::TimedOut,
                        format!(
                            "only {} of {} parties reached the barrier",
                            s.arrived(),
                            self.parties
                        ),
                    ));
                }
                Err(now) => s = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{HISTORY_LEN, State};

    #[test]
    fn a_later_generation_tells_an_open_from_a_reset() {
        let g0 = State(0);
        let opened = g0.next(false);
        let reset = g0.next(true);
        assert!(!opened.was_reset(0) && reset.was_reset(0));
        // Several generations later, each one's ending is still known.
        let later = reset.next(false).next(true).next(false);
        assert!(later.was_reset(0) && !later.was_reset(1) && later.was_reset(2));
        assert!(!later.was_reset(3)); // its own generation: not ended
        let mut far = reset;
        for _ in 0..HISTORY_LEN {
            far = far.next(false);
        }
        assert!(!far.was_reset(0), "beyond the history: taken as opened");
    }

    #[test]
    fn the_generation_wraps_without_touching_the_other_fields() {
        let top = (1u64 << (64 - super::GEN_SHIFT)) - 1;
        let s = State(top << super::GEN_SHIFT);
        let n = s.next(true);
        assert_eq!(n.generation(), 0);
        assert!(n.was_reset(s.generation()));
        assert_eq!((n.arrived(), n.broken()), (0, false));
    }
}

#[cfg(all(test, loom))]
mod model {
    //! `RUSTFLAGS="--cfg loom" cargo test --release --lib model::`: threads stand in for
    //! processes; the futex is modelled (see `primitive`), so a lost wake-up is a deadlock.

    use super::*;
    use crate::primitive::{AtomicU32, model};
    use loom::sync::Arc;

    #[test]
    fn the_barrier_opens_once_for_both_with_one_leader_and_their_writes_published() {
        model(|| {
            let shared = Arc::new((Barrier::new(2), [AtomicU32::new(0), AtomicU32::new(0)]));
            let party = |me: usize| {
                let shared = Arc::clone(&shared);
                move || {
                    // ORDERING: Relaxed on purpose: only the barrier may publish them.
                    shared.1[me].store(1, Ordering::Relaxed);
                    let leader = shared.0.wait().unwrap();
                    assert_eq!(shared.1[1 - me].load(Ordering::Relaxed), 1);
                    leader
                }
            };
            let other = loom::thread::spawn(party(1));
            let mine = party(0)();
            let theirs = other.join().unwrap();
            assert!(mine ^ theirs, "exactly one leader");
        });
    }
}
