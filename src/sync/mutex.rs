//! `ShmMutex<T>`: a robust, process-shared mutex protecting a value in shared memory.
//!
//! # The lock word
//! One `AtomicU32` futex word (shared, not process-private): `0` when free, else the kernel
//! thread id of the owner, with bit 31 (`WAITERS`) set when someone may sleep on it.
//!
//! | word            | meaning                                  |
//! |-----------------|------------------------------------------|
//! | `0`             | free                                     |
//! | `tid`           | held by thread `tid`, nobody waiting     |
//! | `tid \| WAITERS` | held by `tid`, unlock must wake a waiter |
//!
//! Lock is one compare-and-swap `0 -> tid`; unlock one swap to `0` (plus a futex wake when
//! `WAITERS` was set). A waiter that has slept without progress checks whether the owner thread
//! still exists (`/proc/<tid>/stat`: gone, or a zombie); if not, it takes the word over with a
//! compare-and-swap and reports [`LockError::OwnerDied`]. The second word, `state`, remembers
//! whether the data was left inconsistent by a dead owner and whether the mutex became
//! unrecoverable. Owner death is therefore found by the next locker within milliseconds, and
//! no lock waits forever on a dead thread.

use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use super::value::ShmSafe;
use crate::error::{Error, ErrorKind, Result};
use crate::primitive::{AtomicU32, Ordering, futex_wait, futex_wake};
use crate::sys;

/// Set in the lock word when a waiter may be asleep on it.
const WAITERS: u32 = 1 << 31;
/// The owner's thread id (Linux thread ids are below 2^22).
const TID: u32 = !WAITERS;

/// `state` values.
const CONSISTENT: u32 = 0;
/// A dead owner's successor holds the lock and has not said the data is repaired.
const INCONSISTENT: u32 = 1;
/// A successor unlocked without repairing: the mutex is dead for good.
const UNRECOVERABLE: u32 = 2;
/// A holder panicked while holding it: every locker learns it until one marks the data
/// consistent (std's poisoning, which also persists).
const POISONED: u32 = 3;

/// Spins before the first sleep (a short critical section usually ends within them; the loom
/// model spins little, so that it reaches the sleeping path).
const SPINS: u32 = if cfg!(loom) { 2 } else { 100 };
/// First and longest sleep between two checks of the owner's life.
const FIRST_CHECK: Duration = Duration::from_millis(1);
const LAST_CHECK: Duration = Duration::from_millis(50);

thread_local! {
    /// (thread id, its start time, fork generation they were read in), 0 for none.
    static TID_CACHE: Cell<(u32, u32, u32)> = const { Cell::new((0, 0, u32::MAX)) };
}

/// This thread's id, cached once the fork handler exists: `gettid` is a system call, too slow
/// for every lock, and a cached id must be dropped in a forked child (the handler bumps the
/// generation there).
#[cfg(not(loom))]
#[inline]
fn current_tid() -> u32 {
    current_thread().0
}

/// This thread's id and start time ([`sys::thread_start`]), cached as [`current_tid`] is.
#[cfg(not(loom))]
#[inline]
fn current_thread() -> (u32, u32) {
    let generation = crate::lifecycle::fork_generation();
    TID_CACHE.with(|c| {
        let (tid, start, seen) = c.get();
        if Some(seen) == generation && tid != 0 {
            return (tid, start);
        }
        let (tid, start) = (sys::thread_id() & TID, sys::thread_start());
        if let Some(generation) = generation {
            c.set((tid, start, generation));
        }
        (tid, start)
    })
}

/// Under loom there is no start time to read.
#[cfg(loom)]
fn current_thread() -> (u32, u32) {
    (current_tid(), 0)
}

/// Under loom every model thread runs on one OS thread: each gets an id of its own here.
#[cfg(loom)]
fn current_tid() -> u32 {
    loom::thread_local! {
        static ID: u32 = {
            loom::lazy_static! {
                static ref NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
            }
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        };
    }
    ID.with(|id| *id)
}

/// A mutex that works across processes and survives a holder that dies.
///
/// When a process (or thread) dies holding it (a panic that aborts, a segfault, SIGKILL, the
/// OOM killer), the next `lock` finds out within milliseconds and returns
/// [`LockError::OwnerDied`] *with the guard*: like std's poisoning, the caller must look,
/// repair the data if needed, and call [`ShmMutexGuard::mark_consistent`]. If it does not, the
/// mutex becomes unrecoverable and every later lock fails with [`ErrorKind::Unrecoverable`];
/// no lock ever hangs on a dead holder. A holder that panics (and unwinds) poisons it, as
/// std's `Mutex` does: every later lock returns [`LockError::Poisoned`] with the guard until
/// one of them calls `mark_consistent`. Python's `multiprocessing.Lock` and raw_sync's mutex
/// deadlock instead.
///
/// It is a futex word holding the owner's thread id (see the module source for the state
/// table): an uncontended lock and unlock are one atomic instruction each. It must live in
/// memory that every user maps: a [`SharedValue`](crate::SharedValue) (lock_api's `RawMutex`
/// trait has no way to report a dead owner, so the guard is shmpar's own).
///
/// ```
/// use shmpar::{Process, SharedValue, ShmMutex};
///
/// # fn main() -> shmpar::Result<()> {
/// let total = SharedValue::new(ShmMutex::new(0u64))?;
/// let kids: Vec<Process> = (0..3)
///     // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
///     .map(|_| unsafe { Process::fork(|| {
///         for _ in 0..1000 {
///             *total.lock().unwrap() += 1;
///         }
///     }) })
///     .collect::<Result<_, _>>()?;
/// for k in kids {
///     k.join()?.into_result()?;
/// }
/// assert_eq!(*total.lock().unwrap(), 3000);
/// # Ok(())
/// # }
/// ```
///
/// # Limits
/// Owners are recognised by kernel thread id and start time (read once per thread from
/// /proc). Processes that share the mutex must be in the same pid namespace. A dead owner
/// whose id the kernel has already given to a new thread is told from it by the start time,
/// except when both started within the same clock tick (10 ms; a reuse needs the whole id
/// space to wrap first: 32,768 new threads where `pid_max` is 32768) or when /proc could
/// not give the owner's start time; then it is taken for alive until that thread ends.
#[repr(C)]
pub struct ShmMutex<T> {
    word: AtomicU32,
    state: AtomicU32,
    /// The holder thread's start time ([`sys::thread_start`]), 0 while free or unknown: a
    /// live thread that got a dead holder's recycled id has another one.
    owner_start: AtomicU32,
    robust: bool,
    data: UnsafeCell<T>,
}

// SAFETY: the mutex serialises access to `data` across threads and processes; T is ShmSafe,
// hence Sync and free of process-local pointers.
unsafe impl<T: ShmSafe + Send> Sync for ShmMutex<T> {}
// SAFETY: as above.
unsafe impl<T: ShmSafe + Send> Send for ShmMutex<T> {}

// SAFETY: two atomics, a flag and a ShmSafe value: no pointers, no Drop. The inner value is set
// up in place.
unsafe impl<T: ShmSafe + Send> ShmSafe for ShmMutex<T> {
    unsafe fn init_in_place(this: *mut Self) -> Result<()> {
        // SAFETY: the caller guarantees `this` is at its final address and unused.
        unsafe { T::init_in_place(UnsafeCell::raw_get(&raw const (*this).data)) }
    }
}

impl<T> ShmMutex<T> {
    /// A mutex around `value`. Place it in shared memory with
    /// [`SharedValue::new`](crate::SharedValue::new) to share it between processes.
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new([0u32; 16]))?;
    /// m.lock().unwrap()[3] = 7;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        ShmMutex {
            word: AtomicU32::new(0),
            state: AtomicU32::new(CONSISTENT),
            owner_start: AtomicU32::new(0),
            robust: true,
            data: UnsafeCell::new(value),
        }
    }

    /// Under loom: the model's threads have no kernel ids to watch, so it is not robust.
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        ShmMutex {
            word: AtomicU32::new(0),
            state: AtomicU32::new(CONSISTENT),
            owner_start: AtomicU32::new(0),
            robust: false,
            data: UnsafeCell::new(value),
        }
    }

    /// Locks, waiting as long as it takes (never past a dead holder: see the type's docs).
    /// Locking again from the thread that holds it fails with
    /// [`ErrorKind::InvalidInput`] instead of deadlocking.
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new(1i32))?;
    /// *m.lock().unwrap() += 1;
    /// assert_eq!(*m.lock().unwrap(), 2);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    #[inline]
    pub fn lock(&self) -> LockResult<'_, T> {
        self.lock_until(None)
    }

    /// Locks; if the previous holder died (or panicked) holding it, runs `repair` on the data
    /// first and marks the lock consistent (for structures whose every change commits with one store,
    /// where a dead holder leaves at most some bookkeeping to redo).
    pub(crate) fn lock_repairing(
        &self,
        repair: impl FnOnce(&mut ShmMutexGuard<'_, T>),
    ) -> Result<ShmMutexGuard<'_, T>> {
        match self.lock() {
            Ok(g) => Ok(g),
            // A holder that panicked may have stopped between stores, as a dead one may.
            Err(LockError::OwnerDied(mut g) | LockError::Poisoned(mut g)) => {
                repair(&mut g);
                g.mark_consistent()?;
                Ok(g)
            }
            Err(LockError::Failed(e)) => Err(e),
        }
    }

    /// Locks if nobody holds it; else fails with [`ErrorKind::WouldBlock`]. A dead holder is
    /// taken over at once ([`LockError::OwnerDied`]).
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new(()))?;
    /// let held = m.lock().unwrap();
    /// assert_eq!(m.try_lock().unwrap_err().kind(), shmpar::ErrorKind::WouldBlock);
    /// drop(held);
    /// assert!(m.try_lock().is_ok());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn try_lock(&self) -> LockResult<'_, T> {
        let me = current_tid();
        // ORDERING: as in `lock`; Acquire on failure too: seeing the holder's id, we also see
        // at least the previous holder's clearing of `owner_start` (see `unlock`), so the start
        // time read next is this holder's or 0, never its predecessor's.
        let v = match self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Acquire)
        {
            Ok(_) => return self.acquired(false),
            Err(v) => v,
        };
        if self.robust && v & TID != me && self.holder_is_dead(v) {
            if let Some(r) = self.take_over(v, me) {
                return r;
            }
        }
        Err(LockError::Failed(Error::new(
            ErrorKind::WouldBlock,
            "the mutex is held",
        )))
    }

    /// Locks, giving up with [`ErrorKind::TimedOut`] after `timeout` (monotonic clock; exact
    /// for sub-second timeouts).
    ///
    /// ```
    /// use std::time::Duration;
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new(()))?;
    /// let _held = m.lock().unwrap();
    /// // The same thread: an error at once, not a deadlock.
    /// assert!(m.lock_timeout(Duration::from_millis(20)).is_err());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<'_, T> {
        self.lock_until(Some(Instant::now() + timeout))
    }

    /// The fast path: one compare-and-swap; the rest is in `lock_slow`.
    #[inline]
    pub(super) fn lock_until(&self, deadline: Option<Instant>) -> LockResult<'_, T> {
        let me = current_tid();
        // ORDERING: Acquire on success: what the previous owner wrote is visible to us.
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return self.acquired(false);
        }
        self.lock_slow(me, deadline)
    }

    #[cold]
    fn lock_slow(&self, me: u32, deadline: Option<Instant>) -> LockResult<'_, T> {
        let mut spins = 0;
        let mut check_after = FIRST_CHECK;
        loop {
            // ORDERING: Relaxed: the CAS that acquires has Acquire.
            let v = self.word.load(Ordering::Relaxed);
            if v == 0 {
                // We may have slept, so others may sleep too: keep WAITERS set, so that our
                // unlock wakes one of them.
                let want = if spins < SPINS { me } else { me | WAITERS };
                // ORDERING: Acquire on success, as in `lock`.
                if self
                    .word
                    .compare_exchange(0, want, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return self.acquired(false);
                }
                continue;
            }
            if v & TID == me {
                return Err(LockError::Failed(Error::invalid(
                    "this thread already holds the mutex (locking it again would deadlock)",
                )));
            }
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            if v & WAITERS == 0 {
                // ORDERING: Relaxed: only announces a sleeper; the futex re-checks the value.
                if self
                    .word
                    .compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
            }
            let left = match super::remaining(deadline) {
                Some(left) => left,
                None => {
                    return Err(LockError::Failed(Error::new(
                        ErrorKind::TimedOut,
                        "the mutex stayed held until the timeout",
                    )));
                }
            };
            let nap = if self.robust {
                Some(left.map_or(check_after, |l| l.min(check_after)))
            } else {
                left
            };
            let asleep = Instant::now();
            futex_wait(&self.word, v | WAITERS, nap);
            // Slept a whole nap with the same owner: is the owner still alive?
            // ORDERING: Acquire, see `try_lock`.
            let now = self.word.load(Ordering::Acquire);
            if self.robust
                && now != 0
                && now & TID == v & TID
                && asleep.elapsed() >= check_after
                && self.holder_is_dead(now)
            {
                if let Some(r) = self.take_over(now, me) {
                    return r;
                }
            }
            if asleep.elapsed() >= check_after {
                check_after = (check_after * 2).min(LAST_CHECK);
            }
        }
    }

    /// Whether the holder recorded in `word` (loaded with Acquire) can never unlock: see
    /// [`sys::thread_is_dead`]; its start time tells it from a newcomer with its id.
    #[cold]
    fn holder_is_dead(&self, word: u32) -> bool {
        // ORDERING: Relaxed, after the Acquire load of `word` (see `try_lock`).
        let started = self.owner_start.load(Ordering::Relaxed);
        sys::thread_is_dead(word & TID, started)
    }

    /// Takes the word over from a dead owner (`seen` is the word we saw); `None` if it changed.
    #[cold]
    fn take_over(&self, seen: u32, me: u32) -> Option<LockResult<'_, T>> {
        // ORDERING: Acquire: the dead owner's writes (as far as they got) are visible.
        self.word
            .compare_exchange(
                seen,
                me | (seen & WAITERS),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()?;
        // ORDERING: Relaxed: `state` is only touched by the lock's holder.
        if self.state.load(Ordering::Relaxed) == UNRECOVERABLE {
            return Some(self.acquired(false));
        }
        self.state.store(INCONSISTENT, Ordering::Relaxed);
        Some(self.acquired(true))
    }

    /// We hold the word: hand out a guard, unless the mutex is unrecoverable.
    #[inline]
    fn acquired(&self, owner_died: bool) -> LockResult<'_, T> {
        // ORDERING: Relaxed: read by waiters after an Acquire load of the word that shows us
        // (or a later holder); until it lands they read 0 (unknown), which only means they
        // fall back to the thread id alone.
        self.owner_start
            .store(current_thread().1, Ordering::Relaxed);
        let mut guard = ShmMutexGuard {
            mutex: self,
            owner_died,
            poisoned: false,
            panicking_at_lock: std::thread::panicking(),
            not_send: PhantomData,
        };
        // ORDERING: Relaxed: `state` is only written by the lock's holder, and we hold it.
        match self.state.load(Ordering::Relaxed) {
            CONSISTENT => Ok(guard),
            _ if owner_died => Err(LockError::OwnerDied(guard)),
            POISONED => {
                guard.poisoned = true;
                Err(LockError::Poisoned(guard))
            }
            _ => {
                // Unrecoverable (or a holder that died after a takeover it never repaired).
                self.state.store(UNRECOVERABLE, Ordering::Relaxed);
                drop(guard);
                Err(LockError::Failed(Error::new(
                    ErrorKind::Unrecoverable,
                    "a holder died and the mutex was never marked consistent",
                )))
            }
        }
    }

    /// `owner_died`: the guard took over from a dead holder and was not marked consistent;
    /// `panicking`: the holder is unwinding from a panic.
    #[inline]
    fn unlock(&self, owner_died: bool, panicking: bool) {
        // ORDERING: Relaxed, published by the Release swap below: whoever sees the next
        // holder's id sees 0 or that holder's start, never ours.
        self.owner_start.store(0, Ordering::Relaxed);
        if owner_died {
            // Unlocked without mark_consistent: nobody may trust the data again.
            // ORDERING: published by the Release swap below.
            self.state.store(UNRECOVERABLE, Ordering::Relaxed);
        } else if panicking {
            // The panic may have cut an update short: the next locker must know.
            // ORDERING: published by the Release swap below.
            self.state.store(POISONED, Ordering::Relaxed);
        }
        // ORDERING: Release: our writes to the data are visible to the next owner.
        if self.word.swap(0, Ordering::Release) & WAITERS != 0 {
            futex_wake(&self.word, 1);
        }
    }
}

impl<T> fmt::Debug for ShmMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmMutex")
            .field("robust", &self.robust)
            // ORDERING: a snapshot for display.
            .field("held_by", &(self.word.load(Ordering::Relaxed) & TID))
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
    /// We hold the lock, but a holder panicked while holding it (std's poisoning): the data
    /// may be half-updated. It stays poisoned, for every locker, until one calls
    /// [`mark_consistent`](ShmMutexGuard::mark_consistent).
    Poisoned(ShmMutexGuard<'a, T>),
    /// No lock: unrecoverable, busy, timed out, or an OS error (see [`Error::kind`]).
    Failed(Error),
}

impl<'a, T> LockError<'a, T> {
    /// The kind: [`ErrorKind::OwnerDied`] for `OwnerDied`, [`ErrorKind::Poisoned`] for
    /// `Poisoned`, else the error's kind.
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
            LockError::Poisoned(_) => ErrorKind::Poisoned,
            LockError::Failed(e) => e.kind(),
        }
    }

    /// The guard, if we hold the lock (the `OwnerDied` and `Poisoned` cases).
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new(()))?;
    /// let _g = m.lock().unwrap();
    /// assert!(m.try_lock().unwrap_err().into_guard().is_none());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn into_guard(self) -> Option<ShmMutexGuard<'a, T>> {
        match self {
            LockError::OwnerDied(g) | LockError::Poisoned(g) => Some(g),
            LockError::Failed(_) => None,
        }
    }
}

impl<T> fmt::Debug for LockError<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::Poisoned(_) => f.write_str("Poisoned(..)"),
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
            LockError::Poisoned(_) => f.write_str(
                "a holder of the lock panicked while holding it; check the data, then mark_consistent()",
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
            LockError::Poisoned(_) => Error::new(
                ErrorKind::Poisoned,
                "a holder of the lock panicked while holding it",
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
    /// From [`LockError::Poisoned`], not yet marked consistent.
    poisoned: bool,
    /// The thread was already unwinding when it locked (a `Drop` that locks): only a panic
    /// that starts while the lock is held poisons it (std's rule).
    panicking_at_lock: bool,
    not_send: PhantomData<*const ()>,
}

impl<'a, T> ShmMutexGuard<'a, T> {
    /// The mutex this guard holds (for [`Condvar`](super::Condvar), which unlocks and relocks).
    pub(super) fn mutex(&self) -> &'a ShmMutex<T> {
        self.mutex
    }

    /// After [`LockError::OwnerDied`] or [`LockError::Poisoned`]: declares the data repaired,
    /// so the mutex works normally again. Without it, unlocking after `OwnerDied` makes the
    /// mutex unrecoverable for everyone, and after `Poisoned` leaves it poisoned. A no-op on a
    /// guard from a normal lock.
    ///
    /// ```
    /// let m = shmpar::SharedValue::new(shmpar::ShmMutex::new(0u8))?;
    /// let mut g = m.lock().unwrap();
    /// g.mark_consistent()?; // nothing to do: nobody died
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn mark_consistent(&mut self) -> Result<()> {
        if self.owner_died || self.poisoned {
            // ORDERING: Relaxed: published to the next owner by the unlock's Release swap.
            self.mutex.state.store(CONSISTENT, Ordering::Relaxed);
            self.owner_died = false;
            self.poisoned = false;
        }
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
    #[inline]
    fn drop(&mut self) {
        let panicked_while_held = !self.panicking_at_lock && std::thread::panicking();
        self.mutex.unlock(self.owner_died, panicked_while_held);
    }
}

impl<T: fmt::Debug> fmt::Debug for ShmMutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmMutexGuard")
            .field("data", &**self)
            .field("owner_died", &self.owner_died)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

#[cfg(not(loom))]
const _: () = {
    // The layout every process relies on: the futex word first, then the state, then the data.
    assert!(std::mem::offset_of!(ShmMutex<u64>, word) == 0);
    assert!(std::mem::offset_of!(ShmMutex<u64>, state) == 4);
    assert!(std::mem::offset_of!(ShmMutex<u64>, owner_start) == 8);
    assert!(std::mem::offset_of!(ShmMutex<u64>, data) == 16);
};

#[cfg(all(test, loom))]
mod model {
    //! `RUSTFLAGS="--cfg loom" cargo test --release --lib model::`: threads stand in for
    //! processes; the futex is modelled (see `primitive`), so a lost wake-up is a deadlock.

    use super::*;
    use crate::primitive::model;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU32 as LoomU32;

    /// A counter whose increment is a load and a store (Relaxed): without mutual exclusion
    /// two increments can interleave, and without the lock's Acquire/Release a locker can
    /// read a stale value; either loses an increment.
    struct Counter(LoomU32);

    // SAFETY: an atomic; the models never put it in shared memory.
    unsafe impl ShmSafe for Counter {}

    fn increment(m: &ShmMutex<Counter>) {
        let g = m.lock().unwrap();
        // ORDERING: Relaxed on purpose: only the lock may order these.
        let v = g.0.load(Ordering::Relaxed);
        g.0.store(v + 1, Ordering::Relaxed);
    }

    #[test]
    fn lockers_exclude_each_other_publish_their_writes_and_lose_no_wake_up() {
        model(|| {
            let m = Arc::new(ShmMutex::new(Counter(LoomU32::new(0))));
            let other = {
                let m = Arc::clone(&m);
                loom::thread::spawn(move || increment(&m))
            };
            increment(&m);
            other.join().unwrap();
            let g = m.lock().unwrap();
            assert_eq!(g.0.load(Ordering::Relaxed), 2);
        });
    }

    #[test]
    fn try_lock_never_enters_while_held() {
        model(|| {
            let m = Arc::new(ShmMutex::new(Counter(LoomU32::new(0))));
            let other = {
                let m = Arc::clone(&m);
                loom::thread::spawn(move || {
                    if let Ok(g) = m.try_lock() {
                        let v = g.0.load(Ordering::Relaxed);
                        g.0.store(v + 1, Ordering::Relaxed);
                    }
                })
            };
            increment(&m);
            other.join().unwrap();
            let n = m.lock().unwrap().0.load(Ordering::Relaxed);
            assert!(n == 1 || n == 2, "{n}");
        });
    }
}
