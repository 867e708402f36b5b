//! `Barrier`: N processes wait until all N have arrived.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::remaining;
use super::value::ShmSafe;
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// A reusable barrier across processes: `wait` returns once `parties` processes have called
/// it. Lives in a [`SharedValue`](crate::SharedValue).
///
/// State: `(generation << 32) | arrived` in one word, changed only by compare-and-swap; the
/// last arrival starts the next generation and wakes everyone. A waiter that times out takes
/// its arrival back (unless the barrier opened meanwhile, which then counts as success), so a
/// missing or dead party costs a `TimedOut`, never a hang.
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
    /// The generation alone, as the futex word waiters sleep on.
    generation: AtomicU32,
    parties: u32,
}

// SAFETY: atomics and an integer: no pointers, no Drop.
unsafe impl ShmSafe for Barrier {}

impl Barrier {
    /// A barrier for `parties` processes (at least 1).
    ///
    /// ```
    /// let b = shmpar::SharedValue::new(shmpar::Barrier::new(1))?;
    /// assert!(b.wait()?); // one party: opens at once, and it is the leader
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub const fn new(parties: u32) -> Self {
        Barrier {
            state: AtomicU64::new(0),
            generation: AtomicU32::new(0),
            parties: if parties == 0 { 1 } else { parties },
        }
    }

    /// Waits for every party; returns true in exactly one of them (the last to arrive).
    /// Waits forever if a party never comes: prefer [`wait_timeout`](Self::wait_timeout)
    /// when a peer may die.
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

    fn wait_until(&self, deadline: Option<Instant>) -> Result<bool> {
        // ORDERING (every access to `state` and `generation`): AcqRel/Acquire so that what
        // each party wrote before arriving is visible to every party after the barrier opens.
        let mut s = self.state.load(Ordering::Acquire);
        let gen_ = loop {
            let (g, arrived) = ((s >> 32) as u32, s as u32);
            if arrived + 1 >= self.parties {
                let next = u64::from(g.wrapping_add(1)) << 32;
                match self
                    .state
                    .compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        self.generation.store(g.wrapping_add(1), Ordering::Release);
                        sys::futex_wake(&self.generation, i32::MAX);
                        return Ok(true);
                    }
                    Err(now) => s = now,
                }
            } else {
                match self.state.compare_exchange_weak(
                    s,
                    s + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break g,
                    Err(now) => s = now,
                }
            }
        };
        loop {
            if (self.state.load(Ordering::Acquire) >> 32) as u32 != gen_ {
                return Ok(false);
            }
            match remaining(deadline) {
                Some(left) => sys::futex_wait(&self.generation, gen_, left),
                None => return self.leave(gen_),
            }
        }
    }

    /// Takes back our arrival after a timeout, unless the barrier opened meanwhile.
    fn leave(&self, gen_: u32) -> Result<bool> {
        // ORDERING: as in `wait_until`.
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if (s >> 32) as u32 != gen_ {
                return Ok(false); // it opened just in time
            }
            match self
                .state
                .compare_exchange_weak(s, s - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Err(Error::new(
                        ErrorKind::TimedOut,
                        format!(
                            "only {} of {} parties reached the barrier",
                            s as u32, self.parties
                        ),
                    ));
                }
                Err(now) => s = now,
            }
        }
    }
}
