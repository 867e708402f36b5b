//! The CLI crate's C library calls, all in one place: the textbook process-shared pthread
//! mutex (`PthreadMutex`), CPU pinning, and ending a peer's process group.

use std::io;
use std::mem::{self, MaybeUninit};
use std::time::Duration;

/// `-1` means failure with `errno`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The pthread mutex type, for [`PthreadMutex`](crate::PthreadMutex).
pub(crate) type RawMutex = libc::pthread_mutex_t;

/// An all-zero raw mutex, to be initialised in place by [`mutex_init`].
pub(crate) const RAW_MUTEX_ZERO: RawMutex = {
    // SAFETY: pthread_mutex_t is a plain C struct for which all-zero bytes are a valid value
    // (glibc's PTHREAD_MUTEX_INITIALIZER is all zero).
    unsafe { mem::zeroed() }
};

/// What a lock attempt came to.
#[derive(Debug)]
pub(crate) enum Locked {
    /// We hold it.
    Yes,
    /// `try_lock` found it held.
    Busy,
    /// The deadline passed.
    TimedOut,
    /// Anything else.
    Failed(io::Error),
}

fn locked_from(ret: libc::c_int) -> Locked {
    match ret {
        0 => Locked::Yes,
        libc::EBUSY => Locked::Busy,
        libc::ETIMEDOUT => Locked::TimedOut,
        e => Locked::Failed(io::Error::from_raw_os_error(e)),
    }
}

unsafe extern "C" {
    // glibc 2.30+: a timed lock on a chosen clock (the libc crate does not declare it).
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// Initialises a process-shared mutex that is *not* robust (for demonstrations only: if its
/// holder dies, every other locker waits forever).
///
/// # Safety
/// `m` points to writable memory for a mutex that no one uses yet and that stays at this
/// address.
pub(crate) unsafe fn mutex_init_not_robust(m: *mut RawMutex) -> io::Result<()> {
    let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `a` is a valid out pointer for the attribute object, initialised before use
    // and destroyed after; `m` is valid for writes by the caller's contract.
    unsafe {
        let a = attr.as_mut_ptr();
        let ret = libc::pthread_mutexattr_init(a);
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
        let mut ret = libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED);
        if ret == 0 {
            ret = libc::pthread_mutex_init(m, a);
        }
        libc::pthread_mutexattr_destroy(a);
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(ret))
        }
    }
}

/// Locks, waiting as long as it takes.
///
/// # Safety
/// `m` was initialised by [`mutex_init_not_robust`] and stays mapped.
pub(crate) unsafe fn mutex_lock(m: *mut RawMutex) -> Locked {
    // SAFETY: by the caller's contract.
    locked_from(unsafe { libc::pthread_mutex_lock(m) })
}

/// Locks if free.
///
/// # Safety
/// As [`mutex_lock`].
pub(crate) unsafe fn mutex_try_lock(m: *mut RawMutex) -> Locked {
    // SAFETY: by the caller's contract.
    locked_from(unsafe { libc::pthread_mutex_trylock(m) })
}

/// Locks, giving up after `timeout` measured on the monotonic clock (immune to changes of the
/// wall clock; sub-second timeouts are exact).
///
/// # Safety
/// As [`mutex_lock`].
pub(crate) unsafe fn mutex_lock_timeout(m: *mut RawMutex, timeout: Duration) -> Locked {
    let deadline = monotonic_after(timeout);
    // SAFETY: by the caller's contract; `deadline` is a normalised timespec.
    locked_from(unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, &deadline) })
}

/// Unlocks.
///
/// # Safety
/// The calling thread holds `m`.
pub(crate) unsafe fn mutex_unlock(m: *mut RawMutex) {
    // SAFETY: by the caller's contract. The only failure (EPERM: not the owner) cannot happen.
    unsafe { libc::pthread_mutex_unlock(m) };
}

/// The monotonic clock `d` from now, normalised (tv_nsec < 1e9).
fn monotonic_after(d: Duration) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let nanos = now.tv_nsec as u64 + u64::from(d.subsec_nanos());
    let secs = (now.tv_sec as u64)
        .saturating_add(d.as_secs())
        .saturating_add(nanos / 1_000_000_000)
        .min(i64::MAX as u64);
    libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    }
}

/// Restricts the calling thread (in a single-threaded child: the process) to one CPU.
pub(crate) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    if cpu >= mem::size_of::<libc::cpu_set_t>() * 8 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: `cpu` is within the set (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given.
    cvt(unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) }).map(drop)
}

/// CPUs online in the machine (`sysconf(_SC_NPROCESSORS_ONLN)`).
pub(crate) fn cpus_online() -> usize {
    // SAFETY: sysconf has no memory arguments and cannot fail for this name on Linux.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// CPUs this process may run on (its affinity mask).
pub(crate) fn cpus_allowed() -> io::Result<usize> {
    // SAFETY: an all-zero cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size given; 0 is this process.
    cvt(unsafe { libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set) })?;
    // SAFETY: `set` was filled in by the kernel above.
    Ok(unsafe { libc::CPU_COUNT(&set) } as usize)
}

/// Sends SIGKILL to every process in process group `group` (a peer started as the leader of a
/// group of its own, and what it started). Nothing happens once the group is empty (ESRCH):
/// a group's id is not given to a new process while any member of the group lives.
pub(crate) fn kill_group(group: u32) {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return;
    };
    if group <= 1 {
        return;
    }
    // SAFETY: kill has no memory arguments; a negative pid names the process group.
    let _ = unsafe { libc::kill(-group, libc::SIGKILL) };
}
