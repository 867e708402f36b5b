//! `ShmMutex<T>`: a robust, process-shared mutex protecting a value in shared memory.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::value::ShmSafe;
use crate::error::{Error, ErrorKind, Result};
use crate::sys::{self, Locked, RawMutex};

/// Set once the pthread mutex is initialised at its final address.
const ROBUST: u32 = 0x5348_4d52;
const NOT_ROBUST: u32 = 0x5348_4d4e;

/// A mutex that works across processes and survives a holder that dies.
///
/// It is a pthread mutex with `PTHREAD_PROCESS_SHARED` and `PTHREAD_MUTEX_ROBUST`. When a
/// process dies holding it (a panic that aborts, a segfault, SIGKILL), the kernel releases it,
/// and the next `lock` returns [`LockError::OwnerDied`] *with the guard*: like std's
/// poisoning, the caller must look, repair the data if needed, and call
/// [`ShmMutexGuard::mark_consistent`]. If it does not, the mutex becomes unrecoverable and every
/// later lock fails with [`ErrorKind::Unrecoverable`]; no lock ever hangs on a dead holder.
/// Python's `multiprocessing.Lock` and raw_sync's mutex deadlock instead.
///
/// It must live in shared memory: wrap it in a [`SharedValue`](crate::SharedValue), which
/// initialises it at its final address. (lock_api's `RawMutex` trait has no way to report a
/// dead owner, so the guard is shmpar's own.)
///
/// ```
/// use shmpar::{Process, SharedValue, ShmMutex};
///
/// # fn main() -> shmpar::Result<()> {
/// let total = SharedValue::new(ShmMutex::new(0u64))?;
/// let kids: Vec<Process> = (0..3)
///     .map(|_| Process::spawn(|| {
///         for _ in 0..1000 {
///             *total.lock().unwrap() += 1;
///         }
///     }))
///     .collect::<Result<_, _>>()?;
/// for k in kids {
///     k.join()?.into_result()?;
/// }
/// assert_eq!(*total.lock().unwrap(), 3000);
/// # Ok(())
/// # }
/// ```
#[repr(C)]
pub struct ShmMutex<T> {
    raw: UnsafeCell<RawMutex>,
    ready: AtomicU32,
    data: UnsafeCell<T>,
}

// SAFETY: the mutex serialises access to `data` across threads and processes; T is ShmSafe,
// hence Sync and free of process-local pointers.
unsafe impl<T: ShmSafe + Send> Sync for ShmMutex<T> {}
// SAFETY: as above.
unsafe impl<T: ShmSafe + Send> Send for ShmMutex<T> {}

// SAFETY: a pthread mutex in shared memory plus a ShmSafe value; the mutex is initialised at
// its final address by `init_in_place`, and needs no Drop (pthread_mutex_destroy is a no-op on
// Linux).
unsafe impl<T: ShmSafe + Send> ShmSafe for ShmMutex<T> {
    unsafe fn init_in_place(this: *mut Self) -> Result<()> {
        // SAFETY: the caller guarantees `this` is at its final address and unused.
        unsafe {
            T::init_in_place(UnsafeCell::raw_get(&raw const (*this).data))?;
            let robust = (*this).ready.load(Ordering::Relaxed) != NOT_ROBUST;
            let raw = UnsafeCell::raw_get(&raw const (*this).raw);
            if robust {
                sys::mutex_init(raw)
            } else {
                sys::mutex_init_not_robust(raw)
            }
            .map_err(|e| Error::io("could not initialise a process-shared mutex", e))?;
            // ORDERING: Release: a process that sees `ready` sees the initialised mutex.
            (*this)
                .ready
                .store(if robust { ROBUST } else { NOT_ROBUST }, Ordering::Release);
        }
        Ok(())
    }
}

impl<T> ShmMutex<T> {
    /// A mutex around `value`, to be placed in shared memory with
    /// [`SharedValue::new`](crate::SharedValue::new).
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new([0u32; 16]))?;
    /// m.lock().unwrap()[3] = 7;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub const fn new(value: T) -> Self {
        ShmMutex {
            raw: UnsafeCell::new(sys::RAW_MUTEX_ZERO),
            ready: AtomicU32::new(0),
            data: UnsafeCell::new(value),
        }
    }

    /// A mutex *without* robustness: the textbook process-shared mutex, for demonstrations and
    /// comparisons only. If its holder dies, `lock` waits forever and only
    /// [`lock_timeout`](Self::lock_timeout) returns.
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new_not_robust(0u8))?;
    /// *m.lock().unwrap() = 1;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub const fn new_not_robust(value: T) -> Self {
        ShmMutex {
            raw: UnsafeCell::new(sys::RAW_MUTEX_ZERO),
            ready: AtomicU32::new(NOT_ROBUST),
            data: UnsafeCell::new(value),
        }
    }

    fn raw(&self) -> Result<*mut RawMutex> {
        // ORDERING: Acquire, paired with the Release store in `init_in_place`.
        match self.ready.load(Ordering::Acquire) {
            ROBUST | NOT_ROBUST => Ok(self.raw.get()),
            _ => Err(Error::invalid(
                "this ShmMutex is not in shared memory: create it with SharedValue::new(ShmMutex::new(..))",
            )),
        }
    }

    fn finish(&self, locked: Locked) -> LockResult<'_, T> {
        let guard = |owner_died| ShmMutexGuard {
            mutex: self,
            owner_died,
            not_send: PhantomData,
        };
        match locked {
            Locked::Yes => Ok(guard(false)),
            Locked::OwnerDied => Err(LockError::OwnerDied(guard(true))),
            Locked::NotRecoverable => Err(LockError::Failed(Error::new(
                ErrorKind::Unrecoverable,
                "a holder died and the mutex was never marked consistent",
            ))),
            Locked::Busy => Err(LockError::Failed(Error::new(
                ErrorKind::WouldBlock,
                "the mutex is held",
            ))),
            Locked::TimedOut => Err(LockError::Failed(Error::new(
                ErrorKind::TimedOut,
                "the mutex stayed held until the timeout",
            ))),
            Locked::Failed(e) => Err(LockError::Failed(Error::io("could not lock", e))),
        }
    }

    /// Locks, waiting as long as it takes (never past a dead holder: see the type's docs).
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new(1i32))?;
    /// *m.lock().unwrap() += 1;
    /// assert_eq!(*m.lock().unwrap(), 2);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn lock(&self) -> LockResult<'_, T> {
        let raw = self.raw().map_err(LockError::Failed)?;
        // SAFETY: `raw` was initialised in place and lives as long as `self`.
        self.finish(unsafe { sys::mutex_lock(raw) })
    }

    /// Locks if nobody holds it; else fails with [`ErrorKind::WouldBlock`].
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new(()))?;
    /// let held = m.lock().unwrap();
    /// // The same thread may not lock it twice: a second attempt finds it held.
    /// assert_eq!(m.try_lock().unwrap_err().kind(), shmpar::ErrorKind::WouldBlock);
    /// drop(held);
    /// assert!(m.try_lock().is_ok());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn try_lock(&self) -> LockResult<'_, T> {
        let raw = self.raw().map_err(LockError::Failed)?;
        // SAFETY: as in `lock`.
        self.finish(unsafe { sys::mutex_try_lock(raw) })
    }

    /// Locks, giving up with [`ErrorKind::TimedOut`] after `timeout` (monotonic clock; exact
    /// for sub-second timeouts).
    ///
    /// ```
    /// use std::time::Duration;
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new(()))?;
    /// let _held = m.lock().unwrap();
    /// let err = m.lock_timeout(Duration::from_millis(20)).unwrap_err();
    /// assert_eq!(err.kind(), shmpar::ErrorKind::TimedOut);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<'_, T> {
        let raw = self.raw().map_err(LockError::Failed)?;
        // SAFETY: as in `lock`.
        self.finish(unsafe { sys::mutex_lock_timeout(raw, timeout) })
    }
}

impl<T> fmt::Debug for ShmMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmMutex")
            // ORDERING: a snapshot for display.
            .field("robust", &(self.ready.load(Ordering::Relaxed) == ROBUST))
            .finish_non_exhaustive()
    }
}

/// What [`ShmMutex::lock`] and friends return.
pub type LockResult<'a, T> = std::result::Result<ShmMutexGuard<'a, T>, LockError<'a, T>>;

/// Why a lock attempt did not simply succeed.
pub enum LockError<'a, T> {
    /// We hold the lock, but its previous holder died holding it: the data may be
    /// half-updated. Repair it if needed, then call
    /// [`mark_consistent`](ShmMutexGuard::mark_consistent).
    OwnerDied(ShmMutexGuard<'a, T>),
    /// No lock: unrecoverable, busy, timed out, or an OS error (see [`Error::kind`]).
    Failed(Error),
}

impl<'a, T> LockError<'a, T> {
    /// The kind: [`ErrorKind::OwnerDied`] for `OwnerDied`, else the error's kind.
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new(()))?;
    /// let _g = m.lock().unwrap();
    /// assert_eq!(m.try_lock().unwrap_err().kind(), shmpar::ErrorKind::WouldBlock);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            LockError::OwnerDied(_) => ErrorKind::OwnerDied,
            LockError::Failed(e) => e.kind(),
        }
    }

    /// The guard, if we hold the lock (the `OwnerDied` case).
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new(()))?;
    /// let _g = m.lock().unwrap();
    /// assert!(m.try_lock().unwrap_err().into_guard().is_none());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn into_guard(self) -> Option<ShmMutexGuard<'a, T>> {
        match self {
            LockError::OwnerDied(g) => Some(g),
            LockError::Failed(_) => None,
        }
    }
}

impl<T> fmt::Debug for LockError<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for LockError<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str(
                "the lock's previous holder died holding it; check the data, then mark_consistent()",
            ),
            LockError::Failed(e) => e.fmt(f),
        }
    }
}

impl<T> std::error::Error for LockError<'_, T> {}

impl<T> From<LockError<'_, T>> for Error {
    fn from(e: LockError<'_, T>) -> Error {
        match e {
            LockError::OwnerDied(_) => Error::new(
                ErrorKind::OwnerDied,
                "the lock's previous holder died holding it",
            ),
            LockError::Failed(e) => e,
        }
    }
}

/// Holds a [`ShmMutex`] locked; unlocks on drop. Not `Send`: a pthread mutex must be unlocked
/// by the thread that locked it.
pub struct ShmMutexGuard<'a, T> {
    mutex: &'a ShmMutex<T>,
    owner_died: bool,
    not_send: PhantomData<*const ()>,
}

impl<T> ShmMutexGuard<'_, T> {
    /// After [`LockError::OwnerDied`]: declares the data repaired, so the mutex works normally
    /// again. Without it, unlocking makes the mutex unrecoverable for everyone. A no-op on a
    /// guard from a normal lock.
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new(0u8))?;
    /// let mut g = m.lock().unwrap();
    /// g.mark_consistent()?; // nothing to do: nobody died
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn mark_consistent(&mut self) -> Result<()> {
        if !self.owner_died {
            return Ok(());
        }
        // SAFETY: we hold the mutex, acquired with EOWNERDEAD.
        unsafe { sys::mutex_consistent(self.mutex.raw.get()) }
            .map_err(|e| Error::io("could not mark the mutex consistent", e))?;
        self.owner_died = false;
        Ok(())
    }

    /// True if this guard came from [`LockError::OwnerDied`] and was not yet marked consistent.
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new(0u8))?;
    /// assert!(!m.lock().unwrap().owner_died());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl<T> Deref for ShmMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock, so no other thread or process accesses the data.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for ShmMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and `&mut self` makes this the only reference in this thread.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for ShmMutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: we hold the mutex. Unlocking cannot fail for its owner.
        unsafe { sys::mutex_unlock(self.mutex.raw.get()) };
    }
}

impl<T: fmt::Debug> fmt::Debug for ShmMutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmMutexGuard")
            .field("data", &**self)
            .field("owner_died", &self.owner_died)
            .finish()
    }
}

const _: () = {
    // The layout every process relies on: the mutex first, then the flag, then the data.
    assert!(std::mem::offset_of!(ShmMutex<u64>, raw) == 0);
    assert!(std::mem::offset_of!(ShmMutex<u64>, ready) == std::mem::size_of::<RawMutex>());
};
