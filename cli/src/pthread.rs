//! `PthreadMutex<T>`: the textbook process-shared pthread mutex, not robust.

use std::cell::UnsafeCell;
use std::fmt;
use std::io::{self, ErrorKind};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shmpar::ShmSafe;

use crate::sys::{self, Locked, RawMutex};

/// Set once the pthread mutex is initialised at its final address.
const READY: u32 = 0x5054_4d58;

/// A plain process-shared pthread mutex (`PTHREAD_PROCESS_SHARED`, *not* robust): the baseline
/// that [`ShmMutex`](shmpar::ShmMutex) is measured and demonstrated against.
///
/// If a process dies holding it, every other `lock` waits forever; only
/// [`lock_timeout`](Self::lock_timeout) returns. Prefer `ShmMutex` for real work. It must be
/// placed in shared memory with [`SharedValue::new`](shmpar::SharedValue::new), which
/// initialises it at its final address.
///
/// ```
/// use shmpar::SharedValue;
/// use shmpar_cli::PthreadMutex;
///
/// let m = SharedValue::new(PthreadMutex::new(0u64))?;
/// *m.lock()? += 1;
/// assert_eq!(*m.lock()?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[repr(C)]
pub struct PthreadMutex<T> {
    raw: UnsafeCell<RawMutex>,
    ready: AtomicU32,
    data: UnsafeCell<T>,
}

// SAFETY: the mutex serialises access to `data`; T is ShmSafe, hence Sync and position-free.
unsafe impl<T: ShmSafe + Send> Sync for PthreadMutex<T> {}
// SAFETY: as above.
unsafe impl<T: ShmSafe + Send> Send for PthreadMutex<T> {}

// SAFETY: a pthread mutex initialised in place, a flag and a ShmSafe value; no Drop is needed
// (pthread_mutex_destroy does nothing on Linux).
unsafe impl<T: ShmSafe + Send> ShmSafe for PthreadMutex<T> {
    unsafe fn init_in_place(this: *mut Self) -> shmpar::Result<()> {
        // SAFETY: the caller guarantees `this` is at its final address and unused.
        unsafe {
            T::init_in_place(UnsafeCell::raw_get(&raw const (*this).data))?;
            sys::mutex_init_not_robust(UnsafeCell::raw_get(&raw const (*this).raw))?;
            // ORDERING: Release: a process that sees READY sees the initialised mutex.
            (*this).ready.store(READY, Ordering::Release);
        }
        Ok(())
    }
}

impl<T> PthreadMutex<T> {
    /// A mutex around `value`, to be placed in shared memory with `SharedValue::new`.
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar_cli::PthreadMutex::new([0u8; 4]))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub const fn new(value: T) -> Self {
        PthreadMutex {
            raw: UnsafeCell::new(sys::RAW_MUTEX_ZERO),
            ready: AtomicU32::new(0),
            data: UnsafeCell::new(value),
        }
    }

    fn raw(&self) -> io::Result<*mut RawMutex> {
        // ORDERING: Acquire, paired with the Release store in `init_in_place`.
        if self.ready.load(Ordering::Acquire) == READY {
            Ok(self.raw.get())
        } else {
            Err(io::Error::new(
                ErrorKind::InvalidInput,
                "this PthreadMutex is not in shared memory: create it with SharedValue::new",
            ))
        }
    }

    fn finish(&self, locked: Locked) -> io::Result<PthreadMutexGuard<'_, T>> {
        match locked {
            Locked::Yes => Ok(PthreadMutexGuard {
                mutex: self,
                not_send: PhantomData,
            }),
            Locked::Busy => Err(io::Error::new(ErrorKind::WouldBlock, "the mutex is held")),
            Locked::TimedOut => Err(io::Error::new(
                ErrorKind::TimedOut,
                "the mutex stayed held until the timeout",
            )),
            Locked::Failed(e) => Err(e),
        }
    }

    /// Locks, waiting as long as it takes (forever, if the holder died).
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar_cli::PthreadMutex::new(1i32))?;
    /// *m.lock()? += 1;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn lock(&self) -> io::Result<PthreadMutexGuard<'_, T>> {
        let raw = self.raw()?;
        // SAFETY: initialised in place; lives as long as `self`.
        self.finish(unsafe { sys::mutex_lock(raw) })
    }

    /// Locks if free, else `WouldBlock`.
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar_cli::PthreadMutex::new(()))?;
    /// let _g = m.lock()?;
    /// assert_eq!(m.try_lock().unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock(&self) -> io::Result<PthreadMutexGuard<'_, T>> {
        let raw = self.raw()?;
        // SAFETY: as in `lock`.
        self.finish(unsafe { sys::mutex_try_lock(raw) })
    }

    /// Locks, giving up with `TimedOut` after `timeout` (monotonic clock).
    ///
    /// ```
    /// use std::time::Duration;
    /// let m = shmpar::SharedValue::new(shmpar_cli::PthreadMutex::new(()))?;
    /// assert!(m.lock_timeout(Duration::from_millis(5)).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> io::Result<PthreadMutexGuard<'_, T>> {
        let raw = self.raw()?;
        // SAFETY: as in `lock`.
        self.finish(unsafe { sys::mutex_lock_timeout(raw, timeout) })
    }
}

impl<T> fmt::Debug for PthreadMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PthreadMutex").finish_non_exhaustive()
    }
}

/// Holds a [`PthreadMutex`] locked; unlocks on drop.
pub struct PthreadMutexGuard<'a, T> {
    mutex: &'a PthreadMutex<T>,
    not_send: PhantomData<*const ()>,
}

impl<T> Deref for PthreadMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for PthreadMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the lock, and `&mut self` is unique.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for PthreadMutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this thread holds the mutex.
        unsafe { sys::mutex_unlock(self.mutex.raw.get()) };
    }
}

impl<T: fmt::Debug> fmt::Debug for PthreadMutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PthreadMutexGuard").field(&**self).finish()
    }
}
