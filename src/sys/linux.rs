//! Linux: memfd, fork, waitpid, shared futexes, fd passing over Unix sockets.
//!
//! Functions marked "async-signal-safe" are the ones a freshly forked child may call: they make
//! raw system calls and take no lock.

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use super::ExitStatus;

/// SIGKILL, for `kill`.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;

/// EINVAL, the errno of a bad argument.
pub(crate) const EINVAL: i32 = libc::EINVAL;
/// ESRCH, the errno of a signal to a process that has ended.
pub(crate) const ESRCH: i32 = libc::ESRCH;
/// Open flags: do not block (a FIFO), do not follow a final symbolic link.
pub(crate) const O_NONBLOCK: i32 = libc::O_NONBLOCK;
/// See `O_NONBLOCK`.
pub(crate) const O_NOFOLLOW: i32 = libc::O_NOFOLLOW;
/// SIGTERM, for `Process::terminate`.
pub(crate) const SIGTERM: i32 = libc::SIGTERM;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Creates an anonymous memory file (close-on-exec) of `len` bytes, zero-filled.
pub(crate) fn memfd(name: &str, len: u64) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is an open descriptor owned by us.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    Ok(fd)
}

/// The size of a memory page.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Maps `len` bytes of `fd` shared and writable. Async-signal-safe.
pub(crate) fn map_shared(fd: BorrowedFd<'_>, len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh mapping chosen by the kernel cannot alias any Rust object.
    let ptr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    advise_huge_pages(ptr.cast(), len);
    Ok(ptr.cast())
}

/// Mappings at least this long are advised to use huge pages (the x86-64 and arm64 size).
const HUGE_PAGE: usize = 2 << 20;

/// Asks for transparent huge pages on a large mapping (fewer TLB misses and page faults) where
/// the system allows them for shared memory (`shmem_enabled` of `advise` or more); elsewhere
/// the advice changes nothing, and a refusal is not an error. Async-signal-safe.
pub(crate) fn advise_huge_pages(ptr: *mut u8, len: usize) {
    if len >= HUGE_PAGE {
        // SAFETY: advice on a whole mapping of this process (the callers pass one they just
        // made, with its length); it changes no memory contents.
        let _ = unsafe { libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE) };
    }
}

/// Makes a mapping inaccessible: any later access faults (SIGSEGV) instead of reading memory
/// that is no longer lent to this process.
pub(crate) fn protect_none(ptr: *mut u8, len: usize) {
    // SAFETY: mprotect changes the protection of pages we mapped; no Rust reference is made
    // from it. A failure leaves the pages readable, which is reported by the caller's design
    // only as a weaker guarantee, so it is ignored here.
    unsafe { libc::mprotect(ptr.cast(), len, libc::PROT_NONE) };
}

/// Unmaps a mapping. Async-signal-safe.
///
/// # Safety
/// `ptr..ptr + len` must be a mapping that no live reference points into.
pub(crate) unsafe fn unmap(ptr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees nothing refers to the range any more. munmap of a range
    // that is partly unmapped is not an error, so there is nothing to report.
    unsafe { libc::munmap(ptr.cast(), len) };
}

/// The result of [`fork`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forked {
    /// We are the new child process.
    Child,
    /// We are the parent; the child has this pid.
    Parent(i32),
}

/// Forks the calling process.
///
/// # Safety
/// In the child only the calling thread exists; every lock another thread held stays held
/// forever. The child must call only async-signal-safe functions, memory allocation (glibc
/// makes malloc usable after fork), and code that takes no lock another thread could hold, and
/// must leave through [`exit_now`].
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: the caller upholds the rules for the child.
    let pid = cvt(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Forked::Child
    } else {
        Forked::Parent(pid)
    })
}

/// Ends this process at once: no destructors, no atexit handlers, no stdio flush (the parent's
/// buffered output would otherwise be written twice). Async-signal-safe.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Asks the kernel to SIGKILL this process when the thread that forked it ends, then checks
/// that the parent is still `expected_parent` (closing the race where it died before the
/// request). Returns false if the parent is already gone. Async-signal-safe.
pub(crate) fn die_with_parent(expected_parent: i32) -> bool {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and has no memory arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    parent_pid() == expected_parent
}

/// This process's id.
pub(crate) fn pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// The parent process's id. Async-signal-safe.
pub(crate) fn parent_pid() -> i32 {
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() }
}

fn decode_status(status: libc::c_int) -> ExitStatus {
    if libc::WIFSIGNALED(status) {
        ExitStatus::Signaled(libc::WTERMSIG(status))
    } else {
        ExitStatus::Exited(libc::WEXITSTATUS(status))
    }
}

/// Reaps `pid` if it has ended; `None` while it runs.
pub(crate) fn try_wait(pid: i32) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer.
    let ret = cvt(unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) })?;
    Ok((ret == pid).then(|| decode_status(status)))
}

/// Reaps the child a pidfd refers to if it has ended (`waitid(P_PIDFD)`, Linux 5.4+), or
/// `None` while it runs. Never another process that got its pid: once someone else reaped
/// it, this is ECHILD. `block`: wait for it to end.
pub(crate) fn wait_pidfd(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<ExitStatus>> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | if block { 0 } else { libc::WNOHANG };
        // SAFETY: `info` is a valid out pointer; the descriptor is a live pidfd.
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                flags,
            )
        };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid filled `info` for a child event (or left it zeroed: no child ended).
        let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(if code == libc::CLD_EXITED {
            ExitStatus::Exited(status)
        } else {
            ExitStatus::Signaled(status)
        }));
    }
}

/// Waits for `pid` to end and reaps it.
pub(crate) fn wait(pid: i32) -> io::Result<ExitStatus> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out pointer.
        match cvt(unsafe { libc::waitpid(pid, &mut status, 0) }) {
            Ok(_) => return Ok(decode_status(status)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Sends `signal` to `pid`.
pub(crate) fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    cvt(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// Sleeps while `*word == expected`, at most `timeout`. Spurious returns happen: the caller
/// re-checks its condition. Uses a shared (not process-private) futex so that any process
/// mapping the same memory can wake it. Async-signal-safe.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; FUTEX_WAIT only reads
    // it. The timeout pointer is null or points to a live timespec.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            ptr::null::<u32>(),
            0u32,
        )
    };
}

/// Wakes up to `count` processes sleeping in [`futex_wait`] on `word`. Async-signal-safe.
pub(crate) fn futex_wake(word: &AtomicU32, count: i32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE does not access it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            count,
            ptr::null::<libc::timespec>(),
            ptr::null::<u32>(),
            0u32,
        )
    };
}

/// A connected pair of datagram-preserving Unix sockets (close-on-exec).
pub(crate) fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair returned two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one message, with an optional file descriptor attached, without blocking.
/// Returns `Ok(false)` when the socket's buffer is full.
pub(crate) fn send_message(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<bool> {
    match sendmsg_fds(
        sock,
        bytes,
        fd.as_slice(),
        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
    ) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// Receives one message without blocking: `None` when none is waiting. An attached descriptor
/// comes back owned (close-on-exec).
pub(crate) fn recv_message(
    sock: RawFd,
    buf: &mut [u8],
) -> io::Result<Option<(usize, Option<OwnedFd>)>> {
    // SAFETY: the caller's socket, open for the duration of the call.
    let sock = unsafe { BorrowedFd::borrow_raw(sock) };
    Ok(recvmsg_fds(sock, buf)?.map(|(n, fds)| (n, fds.into_iter().next())))
}

/// In a freshly forked child: moves the descriptors `keep` to 3, 4, 5, ... (in order) and
/// closes every other descriptor above 2, so that a worker holds no pipe or socket of the
/// parent's open (a parent's subprocess would otherwise never see EOF on its stdin). Standard
/// input, output and error stay. Returns the new numbers. Async-signal-safe but for the
/// returned vector.
pub(crate) fn keep_only_fds(keep: &[RawFd]) -> Vec<RawFd> {
    const FIRST: RawFd = 3;
    let n = keep.len() as RawFd;
    // Copies at FIRST + n or above first, so that the moves below never overwrite a
    // descriptor still to be moved. Any failure ends the child: a worker on the wrong
    // descriptors would read one object as another.
    // SAFETY: F_DUPFD on descriptors this single-threaded child owns; the copies are closed
    // by the close_range below (they are all >= FIRST + n).
    let temps: Vec<RawFd> = keep
        .iter()
        .map(|&fd| unsafe { libc::fcntl(fd, libc::F_DUPFD, FIRST + n) })
        .collect();
    if temps.iter().any(|&t| t < 0) {
        exit_now(1);
    }
    for (i, &t) in temps.iter().enumerate() {
        let target = FIRST + i as RawFd;
        // SAFETY: dup2 onto a number this child may reuse; it clears FD_CLOEXEC on the copy,
        // which is what a worker wants (it never execs).
        if unsafe { libc::dup2(t, target) } != target {
            exit_now(1);
        }
    }
    for &fd in keep.iter().filter(|&&fd| fd < FIRST) {
        // The caller had closed a standard stream, so a kept descriptor landed there: give
        // that number back to /dev/null, or a print would write into it.
        // SAFETY: a static NUL-terminated path; open returns a fresh descriptor or -1.
        let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if null >= 0 {
            // SAFETY: both are descriptors of this child; `null` is closed right after.
            unsafe {
                libc::dup2(null, fd);
                libc::close(null);
            }
        }
    }
    close_from(FIRST + n);
    (0..n).map(|i| FIRST + i).collect()
}

/// Closes every descriptor from `first` up.
fn close_from(first: RawFd) {
    // SAFETY: close_range only closes descriptors; the caller owns every one of them and
    // refers to none of them again.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0u32) };
    if ret != 0 {
        // Kernels before 5.9: close one at a time, up to the descriptor limit.
        // SAFETY: sysconf has no preconditions.
        let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(64, 1 << 20) as RawFd;
        for fd in first..max {
            // SAFETY: as above; EBADF for descriptors that are not open is harmless.
            unsafe { libc::close(fd) };
        }
    }
}

/// The calling thread's kernel id (what `/proc/<tid>` names).
#[cfg_attr(loom, allow(dead_code))] // the loom model numbers its threads itself
pub(crate) fn thread_id() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// Registers `child` to run in the child process after every fork (pthread_atfork).
pub(crate) fn on_fork_in_child(child: unsafe extern "C" fn()) -> io::Result<()> {
    // SAFETY: registering a handler that is a plain function with no captured state.
    match unsafe { libc::pthread_atfork(None, None, Some(child)) } {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// The state letter /proc shows for thread or process `tid` (`R`, `S`, `T`, `Z`, ...), or
/// `None` when there is no such thread. Reads /proc, so it is for slow paths only.
fn proc_state(tid: u32) -> Option<u8> {
    let stat = std::fs::read(format!("/proc/{tid}/stat")).ok()?;
    // The state is the first field after the command name's closing parenthesis.
    let after = stat
        .iter()
        .rposition(|&b| b == b')')
        .map_or(&stat[..], |i| &stat[i + 1..]);
    after.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// `PF_EXITING` in the flags field of /proc/<tid>/stat: the task is inside `do_exit` and will
/// never run user code again.
const PF_EXITING: u64 = 0x4;

/// True when the kernel knows no task by this id (`kill(tid, 0)` fails with ESRCH; it takes a
/// thread's id as well as a process's). A task we may not signal exists.
fn task_gone(tid: u32) -> bool {
    // 0 and negative ids name process groups: never ask about those.
    let Some(tid) = i32::try_from(tid).ok().filter(|&t| t > 0) else {
        return false;
    };
    // SAFETY: kill with signal 0 sends nothing; it takes plain integers.
    let failed = unsafe { libc::kill(tid, 0) } != 0;
    failed && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// True only when the thread `tid` can never run again: the kernel knows no task by that id,
/// or it is a zombie, or it is exiting (`PF_EXITING`: a joined thread whose teardown has not
/// finished, which `pthread_join` does not wait for), or its /proc entry, once opened, says
/// the task is gone (ESRCH on the read: torn down between the open and the read). When
/// nothing can be learned (a /proc that cannot be read: no descriptors left, not mounted,
/// `hidepid`, which hides even some processes we may signal), the thread counts as alive: a
/// live holder's lock is never taken. Reads /proc, so it is for slow paths only.
///
/// `started`: the holder's start time as [`thread_start`] gave it (0 when unknown). A live
/// thread with the same id but another start time is a newcomer that got a dead holder's
/// recycled id: the holder is dead.
pub(crate) fn thread_is_dead(tid: u32, started: u32) -> bool {
    if task_gone(tid) {
        return true;
    }
    match std::fs::read(format!("/proc/{tid}/stat")) {
        Ok(stat) => {
            let fields = stat_fields(&stat);
            let state = fields.first().and_then(|f| f.first().copied());
            let flags = fields.get(6).and_then(|f| parse_u64(f));
            let start = fields.get(19).and_then(|f| parse_u64(f)).map(|s| s as u32);
            matches!(state, Some(b'Z' | b'X'))
                || flags.is_some_and(|f| f & PF_EXITING != 0)
                || (started != 0 && start.is_some_and(|s| s != started))
        }
        // Opened, then gone: a read of a task being torn down fails with ESRCH. (A hidden
        // task fails the open with ENOENT instead.)
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => true,
        // Not found: gone since the first look (the kernel says so now), or hidden from us.
        Err(e) if e.kind() == io::ErrorKind::NotFound => task_gone(tid),
        Err(_) => false,
    }
}

/// The fields of a /proc/<tid>/stat line after the command name's closing parenthesis: the
/// state is field 0, the flags field 6, the start time field 19.
fn stat_fields(stat: &[u8]) -> Vec<&[u8]> {
    let after = stat
        .iter()
        .rposition(|&b| b == b')')
        .map_or(stat, |i| &stat[i + 1..]);
    after
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
        .collect()
}

fn parse_u64(field: &[u8]) -> Option<u64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// The calling thread's start time (clock ticks after boot, low 32 bits), which tells it from
/// a later thread that gets its id; 0 when /proc cannot say. Reads /proc: call once per
/// thread and cache it.
#[cfg_attr(loom, allow(dead_code))] // the loom model has no start times
pub(crate) fn thread_start() -> u32 {
    std::fs::read("/proc/thread-self/stat")
        .ok()
        .and_then(|stat| parse_u64(stat_fields(&stat).get(19)?))
        .map_or(0, |s| (s as u32).max(1))
}

/// True when process `pid` is stopped by a signal (SIGSTOP and friends): it will not move
/// until someone continues it. A tracer's stop (`t`: a debugger) does not count. Reads /proc,
/// so it is for slow paths only.
pub(crate) fn process_stopped(pid: i32) -> bool {
    pid > 0 && proc_state(pid as u32) == Some(b'T')
}

/// Creates (exclusively, mode 0600) or opens the named POSIX shared memory segment `/name`.
pub(crate) fn shm_open(name: &str, create: bool) -> io::Result<OwnedFd> {
    let c = CString::new(format!("/{name}"))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let flags = if create {
        libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC
    } else {
        libc::O_RDWR | libc::O_CLOEXEC
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let fd = cvt(unsafe { libc::shm_open(c.as_ptr(), flags, 0o600) })?;
    // SAFETY: shm_open returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes the name `/name` (the memory stays while it is mapped).
pub(crate) fn shm_unlink(name: &str) -> io::Result<()> {
    let c = CString::new(format!("/{name}"))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    cvt(unsafe { libc::shm_unlink(c.as_ptr()) }).map(drop)
}

/// True while a process with this pid exists (a zombie counts as gone).
pub(crate) fn process_alive(pid: i32) -> bool {
    pid > 0 && !thread_is_dead(pid as u32, 0)
}

/// 16 random bytes from the kernel.
pub(crate) fn random_128() -> io::Result<u128> {
    let mut buf = [0u8; 16];
    // SAFETY: `buf` is a writable buffer of its length.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != 16 {
        return Err(io::Error::last_os_error());
    }
    Ok(u128::from_le_bytes(buf))
}

// ---- Process lifecycle: pidfds, the fork server's plumbing, code addresses ----

/// A descriptor that refers to process `pid` for as long as it is held, even after it ends
/// (Linux 5.3+): signals sent through it never reach a recycled pid.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a fresh descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns (close-on-exec).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` to the process a pidfd refers to. ESRCH once it has ended.
pub(crate) fn pidfd_kill(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with no siginfo (null) and no flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits until `fd` is readable (for a pidfd: the process has ended; for a socket: a message
/// or the peer's close), at most `timeout` (`None`: no limit). True when readable.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `p` is one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reaps any one ended child without waiting: its pid and status, or `None`.
/// Async-signal-safe.
pub(crate) fn reap_any() -> Option<(i32, ExitStatus)> {
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then(|| (pid, decode_status(status)))
}

/// Sets or clears close-on-exec on a descriptor.
pub(crate) fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number; EBADF is reported.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) }).map(drop)
}

/// Sends one message with descriptors attached, waiting for room.
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    sendmsg_fds(sock, bytes, fds, libc::MSG_NOSIGNAL)
}

/// The most descriptors one message carries.
pub(crate) const MAX_FDS: usize = 64;
/// Room for the control message of MAX_FDS descriptors (CMSG_SPACE(64 * 4) = 272 on 64-bit).
const FDS_CONTROL: usize = 320;

/// One `sendmsg` of `bytes` with `fds` attached (SCM_RIGHTS), retried on EINTR.
fn sendmsg_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    flags: libc::c_int,
) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut control = [0u64; FDS_CONTROL / 8];
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let data = mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(data) } as usize;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `control` has FDS_CONTROL >= CMSG_SPACE(MAX_FDS fds) aligned bytes, so the
        // first header and its data fit inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data) as _;
            let dst = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                ptr::write_unaligned(dst.add(i), fd.as_raw_fd());
            }
        }
    }
    loop {
        // SAFETY: `msg` points to live buffers for the duration of the call.
        let ret = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags) };
        if ret >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one message and its descriptors (close-on-exec), waiting at most `timeout`:
/// `Ok(None)` on time-out; a zero-length message means the peer closed its end.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Option<Duration>,
) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    if !wait_readable(sock, timeout)? {
        return Ok(None);
    }
    recvmsg_fds(sock, buf)
}

/// One `recvmsg` without blocking: `None` when nothing is waiting.
fn recvmsg_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; FDS_CONTROL / 8];
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = FDS_CONTROL as _;
    let n = loop {
        // SAFETY: `msg` points to live, writable buffers for the duration of the call.
        let n = unsafe {
            libc::recvmsg(
                sock.as_raw_fd(),
                &mut msg,
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
            )
        };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
        }
    };
    let mut fds = Vec::new();
    // SAFETY: recvmsg filled `msg`; the CMSG macros walk only inside msg_controllen bytes, and
    // each SCM_RIGHTS header holds (cmsg_len - CMSG_LEN(0)) / 4 descriptors that are now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / mem::size_of::<RawFd>();
                let src = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(ptr::read_unaligned(src.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    // A truncated message is an error; descriptors the kernel could not pass (this process at
    // its descriptor limit: MSG_CTRUNC) are simply missing, for the caller to notice.
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a message did not fit",
        ));
    }
    Ok(Some((n, fds)))
}

/// Prepares the exec'd copy that becomes the fork server, in the child between fork and exec
/// (async-signal-safe calls only): die when the forking thread ends, check that the parent is
/// still `parent` (it may have died before the request), and let `keep` survive the exec.
pub(crate) fn before_server_exec(parent: i32, keep: RawFd) -> io::Result<()> {
    if !die_with_parent(parent) {
        // No allocation between fork and exec: a plain error number.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    set_cloexec(keep, false)
}

/// Names the calling thread (what `ps` and `top` show), at most 15 bytes.
pub(crate) fn set_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// Gives every signal its default disposition and unblocks all of them, then ignores SIGPIPE
/// as Rust's `main` does: an exec'd copy inherits ignored signals and the blocked mask from
/// the caller (an ignored SIGCHLD would make the kernel reap children before anyone asks).
pub(crate) fn reset_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: setting a disposition to SIG_DFL has no memory arguments; EINVAL for
            // numbers that are not signals is harmless.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // SAFETY: an empty set, built by sigemptyset, unblocks everything; the other calls take
    // plain numbers.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// How many threads this process has (from /proc/self/status), if it can tell.
pub(crate) fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line["Threads:".len()..].trim().parse().ok()
}

/// Where the loaded object holding `addr` starts and ends in this process (for the main
/// executable: its image, whose layout is the same in every process that runs this file).
pub(crate) fn object_bounds(addr: usize) -> Option<(usize, usize)> {
    // SAFETY: an all-zero Dl_info is a valid out value.
    let mut info: libc::Dl_info = unsafe { mem::zeroed() };
    // SAFETY: dladdr only reads the loader's tables; `info` is a valid out pointer.
    if unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) } == 0 {
        return None;
    }
    let base = info.dli_fbase as usize;
    let mut found = (base, 0usize);
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid `dl_phdr_info` for the duration of the callback,
        // and `data` is the `(usize, usize)` below, alive for the whole iteration.
        unsafe {
            let found = &mut *data.cast::<(usize, usize)>();
            let info = &*info;
            let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
            let load = phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD);
            let lo = load.clone().map(|p| p.p_vaddr as usize).min();
            let hi = load.map(|p| (p.p_vaddr + p.p_memsz) as usize).max();
            if let (Some(lo), Some(hi)) = (lo, hi) {
                let start = info.dlpi_addr as usize + lo;
                let end = info.dlpi_addr as usize + hi;
                if start <= found.0 && found.0 < end || info.dlpi_addr as usize == found.0 {
                    *found = (found.0, end);
                    return 1;
                }
            }
            0
        }
    }
    // SAFETY: `visit` upholds dl_iterate_phdr's callback contract; `found` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut found as *mut (usize, usize)).cast()) };
    (found.1 > base).then_some(found)
}

/// An `.init_array` entry: the loader runs it before `main` in every process of a program
/// linked with shmpar (a plain binary, a test binary, a doctest), which is how an exec'd copy
/// becomes the fork server without the program calling anything.
#[used]
#[unsafe(link_section = ".init_array")]
static BEFORE_MAIN: extern "C" fn() = before_main;

extern "C" fn before_main() {
    // A panic cannot unwind out of an `extern "C"` function: it would abort. `before_main`
    // only returns or serves; it does not panic.
    crate::lifecycle::server::before_main();
}

/// The CPUs the calling thread may run on (its affinity mask), in increasing order.
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size given; 0 is this process.
    cvt(unsafe { libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set) })?;
    let bits = mem::size_of::<libc::cpu_set_t>() * 8;
    // SAFETY: `set` was filled in by the kernel above and every index is within it.
    Ok((0..bits)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Restricts the calling thread (in a single-threaded worker: the process) to one CPU.
pub(crate) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= mem::size_of::<libc::cpu_set_t>() * 8 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: an all-zero cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `cpu` is within the set (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given; 0 is the calling thread.
    cvt(unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) }).map(drop)
}
