//! `Event`: a flag processes can wait for.

use std::time::{Duration, Instant};

use super::value::ShmSafe;
use crate::primitive::{AtomicU32, Ordering};
use crate::wake::Signal;

/// A flag across processes (Python's `multiprocessing.Event`): `set` wakes every waiter.
/// Lives in a [`SharedValue`](crate::SharedValue).
///
/// ```
/// use std::time::Duration;
/// use shmpar::{Event, Process, SharedValue};
///
/// # fn main() -> shmpar::Result<()> {
/// let go = SharedValue::new(Event::new())?;
/// // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
/// let child = unsafe { Process::fork(|| assert!(go.wait_timeout(Duration::from_secs(10)))) }?;
/// go.set();
/// child.join()?.into_result()?;
/// # Ok(())
/// # }
/// ```
#[repr(C)]
#[derive(Debug, Default)]
pub struct Event {
    flag: AtomicU32,
    /// Bumped after every `set` (waiters wait on it: the crate's one spin-then-sleep wait,
    /// see `wake`; a `set` with no one asleep makes no system call).
    changed: Signal,
}

// SAFETY: three atomics: no pointers, no Drop.
unsafe impl ShmSafe for Event {}

impl Event {
    /// A cleared event.
    ///
    /// ```
    /// assert!(!shmpar::Event::new().is_set());
    /// ```
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Event {
            flag: AtomicU32::new(0),
            changed: Signal::new(),
        }
    }

    /// Under loom (whose atomics have no `const` constructor).
    #[cfg(loom)]
    pub fn new() -> Self {
        Event {
            flag: AtomicU32::new(0),
            changed: Signal::new(),
        }
    }

    /// Sets the flag and wakes every waiter.
    ///
    /// ```
    /// let e = shmpar::SharedValue::new(shmpar::Event::new())?;
    /// e.set();
    /// assert!(e.is_set());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn set(&self) {
        // ORDERING: Release: what the setter wrote before is visible to a waiter that sees it.
        self.flag.store(1, Ordering::Release);
        self.changed.bump_and_wake(i32::MAX);
    }

    /// Clears the flag.
    ///
    /// ```
    /// let e = shmpar::SharedValue::new(shmpar::Event::new())?;
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn clear(&self) {
        // ORDERING: Relaxed: clearing publishes nothing.
        self.flag.store(0, Ordering::Relaxed);
    }

    /// True if set.
    ///
    /// ```
    /// assert!(!shmpar::Event::new().is_set());
    /// ```
    pub fn is_set(&self) -> bool {
        // ORDERING: Acquire, paired with `set`.
        self.flag.load(Ordering::Acquire) != 0
    }

    /// Waits until set. A `set` while it waits wakes it even if a `clear` follows at once
    /// (as Python's `threading.Event.wait`; `multiprocessing.Event.wait` would miss it).
    /// Waits forever if nobody sets it: prefer [`wait_timeout`](Self::wait_timeout) when the
    /// setter may die.
    ///
    /// ```
    /// let e = shmpar::SharedValue::new(shmpar::Event::new())?;
    /// e.set();
    /// e.wait();
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Waits until set or `timeout` passes; true if it was set (or set and cleared again while
    /// it waited, as in [`wait`](Self::wait)).
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = shmpar::SharedValue::new(shmpar::Event::new())?;
    /// assert!(!e.wait_timeout(Duration::from_millis(5)));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Some(Instant::now() + timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        // Read once, before looking at the flag: the word moves only on a `set`, so a set at
        // any time after this (even one a `clear` followed, as with `threading.Event` in
        // Python) ends the wait; the Acquire that sees it publishes the setter's writes.
        let seen = self.changed.seen();
        loop {
            if self.is_set() || self.changed.changed(seen) {
                return true;
            }
            let waited = self.changed.wait_for_change(
                seen,
                Some(deadline),
                None,
                "not set",
                "not set in time",
            );
            if waited.is_err() {
                // Timed out (a set just now still counts).
                return self.is_set() || self.changed.changed(seen);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_set_then_clear_wakes_a_waiter_that_was_asleep() {
        let e = std::sync::Arc::new(Event::new());
        let waiter = {
            let e = std::sync::Arc::clone(&e);
            std::thread::spawn(move || e.wait_timeout(Duration::from_secs(30)))
        };
        // The waiter has read the signal and is asleep (or about to be) before the pulse.
        let start = Instant::now();
        while e.changed.sleepers() == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the waiter never slept"
            );
            std::thread::yield_now();
        }
        e.set();
        e.clear();
        assert!(waiter.join().unwrap(), "the pulse was missed");
    }
}

#[cfg(all(test, loom))]
mod model {
    //! `RUSTFLAGS="--cfg loom" cargo test --release --lib model::`: threads stand in for
    //! processes; the futex is modelled (see `primitive`), so a lost wake-up is a deadlock.

    use super::*;
    use crate::primitive::model;
    use loom::sync::Arc;

    #[test]
    fn a_set_wakes_every_waiter_and_publishes_the_setters_writes() {
        model(|| {
            let e = Arc::new((Event::new(), AtomicU32::new(0)));
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let e = Arc::clone(&e);
                    loom::thread::spawn(move || {
                        e.0.wait();
                        // ORDERING: Relaxed on purpose: only the event may publish it.
                        assert_eq!(e.1.load(Ordering::Relaxed), 7);
                    })
                })
                .collect();
            // ORDERING: as above.
            e.1.store(7, Ordering::Relaxed);
            e.0.set();
            for w in waiters {
                w.join().unwrap();
            }
        });
    }
}
