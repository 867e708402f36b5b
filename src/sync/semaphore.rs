//! `Semaphore`: a counter of permits across processes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::remaining;
use super::value::ShmSafe;
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// A counting semaphore across processes (Python's `multiprocessing.Semaphore`). Lives in a
/// [`SharedValue`](crate::SharedValue).
///
/// A process that dies holding a permit does not give it back: bound waits with
/// [`acquire_timeout`](Self::acquire_timeout) when a peer may die.
///
/// ```
/// use shmpar::{Semaphore, SharedValue};
///
/// let slots = SharedValue::new(Semaphore::new(2))?;
/// slots.acquire()?;
/// slots.acquire()?;
/// assert_eq!(slots.try_acquire().unwrap_err().kind(), shmpar::ErrorKind::WouldBlock);
/// slots.release()?;
/// assert!(slots.try_acquire().is_ok());
/// # Ok::<(), shmpar::Error>(())
/// ```
#[repr(C)]
#[derive(Debug)]
pub struct Semaphore {
    /// Free permits (the futex word).
    permits: AtomicU32,
    /// Processes asleep (or about to sleep) waiting for a permit.
    waiters: AtomicU32,
}

// SAFETY: two atomics: no pointers, no Drop.
unsafe impl ShmSafe for Semaphore {}

impl Semaphore {
    /// A semaphore with `permits` free permits.
    ///
    /// ```
    /// let s = shmpar::SharedValue::new(shmpar::Semaphore::new(1))?;
    /// assert_eq!(s.available(), 1);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub const fn new(permits: u32) -> Self {
        Semaphore {
            permits: AtomicU32::new(permits),
            waiters: AtomicU32::new(0),
        }
    }

    /// The free permits now (a snapshot).
    ///
    /// ```
    /// let s = shmpar::SharedValue::new(shmpar::Semaphore::new(3))?;
    /// s.acquire()?;
    /// assert_eq!(s.available(), 2);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn available(&self) -> u32 {
        // ORDERING: a snapshot; no data is published through it.
        self.permits.load(Ordering::Relaxed)
    }

    /// Takes a permit if one is free, else fails with [`ErrorKind::WouldBlock`].
    ///
    /// ```
    /// let s = shmpar::SharedValue::new(shmpar::Semaphore::new(0))?;
    /// assert!(s.try_acquire().is_err());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<()> {
        if self.take() {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::WouldBlock, "no permit is free"))
        }
    }

    /// Takes a permit, waiting as long as it takes.
    ///
    /// ```
    /// let s = shmpar::SharedValue::new(shmpar::Semaphore::new(1))?;
    /// s.acquire()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.acquire_until(None)
    }

    /// Takes a permit, failing with [`ErrorKind::TimedOut`] after `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let s = shmpar::SharedValue::new(shmpar::Semaphore::new(0))?;
    /// let err = s.acquire_timeout(Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(err.kind(), shmpar::ErrorKind::TimedOut);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
        self.acquire_until(Some(Instant::now() + timeout))
    }

    /// Gives a permit back and wakes one waiter. Fails with [`ErrorKind::InvalidInput`],
    /// changing nothing, when the count is already `u32::MAX` (more releases than the count
    /// can hold: like Python's `BoundedSemaphore`, a release too many is an error, and the
    /// count never wraps to zero).
    ///
    /// ```
    /// let s = shmpar::SharedValue::new(shmpar::Semaphore::new(0))?;
    /// s.release()?;
    /// assert_eq!(s.available(), 1);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        // ORDERING: SeqCst: we add a permit then read `waiters`; a waiter announces itself then
        // the kernel re-reads `permits` in futex_wait. One sees the other: no lost wake-up.
        // It also publishes what the releaser wrote to the next acquirer.
        let added = self
            .permits
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |p| p.checked_add(1));
        if added.is_err() {
            return Err(Error::invalid(
                "the semaphore already holds u32::MAX permits: a release too many",
            ));
        }
        // ORDERING: SeqCst, see above.
        if self.waiters.load(Ordering::SeqCst) != 0 {
            sys::futex_wake(&self.permits, 1);
        }
        Ok(())
    }

    fn take(&self) -> bool {
        // ORDERING: Acquire on success pairs with the releaser's SeqCst add.
        let mut p = self.permits.load(Ordering::Relaxed);
        while p > 0 {
            match self
                .permits
                .compare_exchange_weak(p, p - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => p = now,
            }
        }
        false
    }

    fn acquire_until(&self, deadline: Option<Instant>) -> Result<()> {
        loop {
            if self.take() {
                return Ok(());
            }
            let Some(left) = remaining(deadline) else {
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    "no permit became free in time",
                ));
            };
            // ORDERING: SeqCst, see `release`.
            self.waiters.fetch_add(1, Ordering::SeqCst);
            sys::futex_wait(&self.permits, 0, left);
            self.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
