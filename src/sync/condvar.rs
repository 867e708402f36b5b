//! `Condvar`: wait, with a [`ShmMutex`] held, until another process changes what it guards.

use std::time::{Duration, Instant};

use super::mutex::{LockResult, ShmMutexGuard};
use super::value::ShmSafe;
use crate::wake::Signal;

/// A condition variable across processes (Python's `multiprocessing.Condition`, split the
/// Rust way into a [`ShmMutex`](crate::ShmMutex) for the data and this for the waiting). Both
/// live in one [`SharedValue`](crate::SharedValue).
///
/// As with `std::sync::Condvar`, a wait can return without a notification (a spurious
/// wake-up): always wait in a loop on the condition itself, or use
/// [`wait_while_timeout`](Self::wait_while_timeout). Relocking after the wait can report
/// [`LockError::OwnerDied`](crate::LockError::OwnerDied) when a process died holding the
/// mutex.
///
/// ```
/// use std::time::Duration;
/// use shmpar::{Condvar, Process, SharedValue, ShmMutex, ShmSafe};
///
/// #[repr(C)]
/// struct Ready {
///     count: ShmMutex<u32>,
///     changed: Condvar,
/// }
/// // SAFETY: a mutex of an integer and a condition variable: no pointers, no Drop.
/// unsafe impl ShmSafe for Ready {}
///
/// # fn main() -> shmpar::Result<()> {
/// let ready = SharedValue::new(Ready { count: ShmMutex::new(0), changed: Condvar::new() })?;
/// let kids: Vec<Process> = (0..3)
///     .map(|_| {
///         let ready = ready.clone();
///         Process::start(
///             |ready: SharedValue<Ready>| {
///                 *ready.count.lock().unwrap() += 1;
///                 ready.changed.notify_all();
///             },
///             ready,
///         )
///     })
///     .collect::<Result<_, _>>()?;
/// let guard = ready.count.lock().unwrap();
/// let (guard, timed_out) = ready
///     .changed
///     .wait_while_timeout(guard, Duration::from_secs(10), |n| *n < 3)
///     .unwrap();
/// assert!(!timed_out);
/// assert_eq!(*guard, 3);
/// drop(guard);
/// for k in kids {
///     k.join()?.into_result()?;
/// }
/// # Ok(())
/// # }
/// ```
#[repr(C)]
#[derive(Debug, Default)]
pub struct Condvar {
    /// Bumped by every notification; a waiter sleeps while it still holds the value it read
    /// with the mutex held (the crate's one spin-then-sleep wait, see `wake`; a notification
    /// with no one asleep makes no system call).
    seq: Signal,
}

// SAFETY: two atomics: no pointers, no Drop.
unsafe impl ShmSafe for Condvar {}

impl Condvar {
    /// A condition variable nobody waits on.
    ///
    /// ```
    /// let cv = shmpar::Condvar::new();
    /// cv.notify_all(); // nobody to wake: nothing happens
    /// ```
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Condvar { seq: Signal::new() }
    }

    /// Under loom (whose atomics have no `const` constructor).
    #[cfg(loom)]
    pub fn new() -> Self {
        Condvar { seq: Signal::new() }
    }

    /// Unlocks `guard`'s mutex, sleeps until notified (or spuriously woken), and locks it
    /// again. Waits as long as that takes: use [`wait_timeout`](Self::wait_timeout) where the
    /// notifying process may die.
    ///
    /// ```
    /// use shmpar::{Condvar, ShmMutex};
    /// let (m, cv) = (ShmMutex::new(true), Condvar::new());
    /// let mut ready = m.lock().unwrap();
    /// while !*ready {
    ///     ready = cv.wait(ready).unwrap();
    /// }
    /// ```
    pub fn wait<'a, T>(&self, guard: ShmMutexGuard<'a, T>) -> LockResult<'a, T> {
        self.wait_until(guard, None).0
    }

    /// [`wait`](Self::wait) for at most `timeout`; the flag is true when the time ran out.
    ///
    /// ```
    /// use std::time::Duration;
    /// use shmpar::{Condvar, ShmMutex};
    /// let (m, cv) = (ShmMutex::new(()), Condvar::new());
    /// let (guard, timed_out) = cv.wait_timeout(m.lock().unwrap(), Duration::from_millis(5));
    /// assert!(guard.is_ok());
    /// assert!(timed_out);
    /// ```
    pub fn wait_timeout<'a, T>(
        &self,
        guard: ShmMutexGuard<'a, T>,
        timeout: Duration,
    ) -> (LockResult<'a, T>, bool) {
        self.wait_until(guard, Some(Instant::now() + timeout))
    }

    /// Waits while `condition` holds (checked with the mutex locked), for at most `timeout`;
    /// the flag is true when the time ran out with the condition still true.
    ///
    /// ```
    /// use std::time::Duration;
    /// use shmpar::{Condvar, ShmMutex};
    /// let (m, cv) = (ShmMutex::new(0u32), Condvar::new());
    /// let (n, timed_out) = cv.wait_while_timeout(m.lock().unwrap(), Duration::from_millis(5), |n| *n == 0).unwrap();
    /// assert!(timed_out && *n == 0);
    /// ```
    pub fn wait_while_timeout<'a, T>(
        &self,
        mut guard: ShmMutexGuard<'a, T>,
        timeout: Duration,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> std::result::Result<(ShmMutexGuard<'a, T>, bool), super::LockError<'a, T>> {
        let deadline = Instant::now() + timeout;
        while condition(&mut guard) {
            let (relocked, timed_out) = self.wait_until(guard, Some(deadline));
            guard = relocked?;
            if timed_out {
                let still = condition(&mut guard);
                return Ok((guard, still));
            }
        }
        Ok((guard, false))
    }

    fn wait_until<'a, T>(
        &self,
        guard: ShmMutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> (LockResult<'a, T>, bool) {
        // Read with the mutex held: a notifier changes the data under the mutex, then bumps
        // `seq`, so either we read the bumped value or the wait sees it move and does not
        // sleep. The mutex orders the data itself.
        let seen = self.seq.seen();
        let mutex = guard.mutex();
        drop(guard);
        let waited =
            self.seq
                .wait_for_change(seen, Some(deadline), None, "", "not notified in time");
        let timed_out = waited.is_err() || deadline.is_some_and(|d| Instant::now() >= d);
        (mutex.lock_until(None), timed_out)
    }

    /// Wakes at least one waiting process (or thread). Here it wakes every sleeper, which
    /// the spurious wake-ups every wait allows: between processes, a woken waiter that dies
    /// before it runs must not take the notification with it. Waiters that find nothing to
    /// do wait again.
    ///
    /// ```
    /// shmpar::Condvar::new().notify_one();
    /// ```
    pub fn notify_one(&self) {
        // Every sleeper wakes (allowed: a wait may return spuriously): a woken waiter that
        // died before it ran cannot swallow the notification while others sleep on.
        self.seq.bump_and_wake(i32::MAX);
    }

    /// Wakes every waiting process (and thread).
    ///
    /// ```
    /// shmpar::Condvar::new().notify_all();
    /// ```
    pub fn notify_all(&self) {
        self.seq.bump_and_wake(i32::MAX);
    }
}

#[cfg(all(test, loom))]
mod model {
    //! `RUSTFLAGS="--cfg loom" cargo test --release --lib model::`: threads stand in for
    //! processes; the futex is modelled (see `primitive`), so a lost wake-up is a deadlock.

    use super::*;
    use crate::ShmMutex;
    use crate::primitive::model;
    use loom::sync::Arc;

    #[test]
    fn a_notification_after_a_change_under_the_mutex_is_never_lost() {
        model(|| {
            let shared = Arc::new((ShmMutex::new(0u32), Condvar::new()));
            let notifier = {
                let shared = Arc::clone(&shared);
                loom::thread::spawn(move || {
                    *shared.0.lock().unwrap() = 1;
                    shared.1.notify_one();
                })
            };
            let mut g = shared.0.lock().unwrap();
            while *g == 0 {
                g = shared.1.wait(g).unwrap();
            }
            drop(g);
            notifier.join().unwrap();
        });
    }
}
