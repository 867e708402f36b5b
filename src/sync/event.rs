//! `Event`: a flag processes can wait for.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::remaining;
use super::value::ShmSafe;
use crate::sys;

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
}

// SAFETY: one atomic: no pointers, no Drop.
unsafe impl ShmSafe for Event {}

impl Event {
    /// A cleared event.
    ///
    /// ```
    /// assert!(!shmpar::Event::new().is_set());
    /// ```
    pub const fn new() -> Self {
        Event {
            flag: AtomicU32::new(0),
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
        sys::futex_wake(&self.flag, i32::MAX);
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

    /// Waits until set. Waits forever if nobody sets it: prefer
    /// [`wait_timeout`](Self::wait_timeout) when the setter may die.
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

    /// Waits until set or `timeout` passes; true if it was set.
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
        while !self.is_set() {
            let Some(left) = remaining(deadline) else {
                return false;
            };
            sys::futex_wait(&self.flag, 0, left);
        }
        true
    }
}
