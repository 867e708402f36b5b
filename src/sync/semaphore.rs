//! `Semaphore`: a counter of permits across processes.

use std::time::{Duration, Instant};

use super::value::ShmSafe;
use crate::error::{Error, ErrorKind, Result};
use crate::primitive::{AtomicU32, Ordering};
use crate::wake::Signal;

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
    /// Free permits.
    permits: AtomicU32,
    /// Bumped after every release (acquirers wait on it: the crate's one spin-then-sleep
    /// wait, see `wake`).
    released: Signal,
}

// SAFETY: three atomics: no pointers, no Drop.
unsafe impl ShmSafe for Semaphore {}

impl Semaphore {
    /// A semaphore with `permits` free permits.
    ///
    /// ```
    /// let s = shmpar::SharedValue::new(shmpar::Semaphore::new(1))?;
    /// assert_eq!(s.available(), 1);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    #[cfg(not(loom))]
    pub const fn new(permits: u32) -> Self {
        Semaphore {
            permits: AtomicU32::new(permits),
            released: Signal::new(),
        }
    }

    /// Under loom (whose atomics have no `const` constructor).
    #[cfg(loom)]
    pub fn new(permits: u32) -> Self {
        Semaphore {
            permits: AtomicU32::new(permits),
            released: Signal::new(),
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

    /// Gives a permit back and wakes the waiters (one of them takes it). Fails with [`ErrorKind::InvalidInput`],
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
        // ORDERING: Release: what the releaser wrote before is visible to the acquirer that
        // takes this permit (its Acquire CAS). The bump after it wakes a waiter (see `wake`).
        let added = self
            .permits
            .fetch_update(Ordering::Release, Ordering::Relaxed, |p| p.checked_add(1));
        if added.is_err() {
            return Err(Error::invalid(
                "the semaphore already holds u32::MAX permits: a release too many",
            ));
        }
        // Every sleeper wakes and one takes the permit: a woken waiter that died before its
        // take cannot swallow the wake-up and leave the permit free while others sleep on.
        self.released.bump_and_wake(i32::MAX);
        Ok(())
    }

    fn take(&self) -> bool {
        // ORDERING: Acquire on success pairs with the releaser's Release add.
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
            // Read before looking for a permit: a release after the look moves it on.
            let seen = self.released.seen();
            if self.take() {
                return Ok(());
            }
            self.released.wait_for_change(
                seen,
                Some(deadline),
                None,
                "no permit is free",
                "no permit became free in time",
            )?;
        }
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
    fn a_release_wakes_a_waiting_acquirer_and_publishes_its_writes() {
        model(|| {
            let s = Arc::new((Semaphore::new(0), AtomicU32::new(0)));
            let waiter = {
                let s = Arc::clone(&s);
                loom::thread::spawn(move || {
                    s.0.acquire().unwrap();
                    // ORDERING: Relaxed on purpose: only the permit may publish it.
                    assert_eq!(s.1.load(Ordering::Relaxed), 7);
                })
            };
            // ORDERING: as above.
            s.1.store(7, Ordering::Relaxed);
            s.0.release().unwrap();
            waiter.join().unwrap();
            assert_eq!(s.0.available(), 0);
        });
    }

    #[test]
    fn two_releases_wake_two_waiters() {
        model(|| {
            let s = Arc::new(Semaphore::new(0));
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let s = Arc::clone(&s);
                    loom::thread::spawn(move || s.acquire().unwrap())
                })
                .collect();
            s.release().unwrap();
            s.release().unwrap();
            for w in waiters {
                w.join().unwrap();
            }
        });
    }
}
