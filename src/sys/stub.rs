//! Platforms without an implementation: every call that would need the OS fails with
//! `Unsupported`, so the crate builds and says clearly why it cannot run.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use super::ExitStatus;

pub(crate) const SIGKILL: i32 = 9;

/// EINVAL, the errno of a bad argument.
pub(crate) const EINVAL: i32 = 22;
/// ESRCH, the errno of a signal to a process that has ended.
pub(crate) const ESRCH: i32 = 3;
/// Open flags: do not block (a FIFO), do not follow a final symbolic link.
pub(crate) const O_NONBLOCK: i32 = 0o4000;
/// See `O_NONBLOCK`.
pub(crate) const O_NOFOLLOW: i32 = 0o400000;

pub(crate) const SIGTERM: i32 = 15;

fn unsupported<T>() -> io::Result<T> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "shmpar supports Linux only",
    ))
}

pub(crate) fn memfd(_name: &str, _len: u64) -> io::Result<OwnedFd> {
    unsupported()
}

pub(crate) fn page_size() -> usize {
    4096
}

pub(crate) fn map_shared(_fd: BorrowedFd<'_>, _len: usize) -> io::Result<*mut u8> {
    unsupported()
}

/// # Safety
/// Never called: nothing is ever mapped on this platform.
pub(crate) unsafe fn unmap(_ptr: *mut u8, _len: usize) {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forked {
    Child,
    Parent(i32),
}

/// # Safety
/// Always fails; nothing to uphold.
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    unsupported()
}

pub(crate) fn exit_now(code: i32) -> ! {
    std::process::exit(code)
}

pub(crate) fn die_with_parent(_expected_parent: i32) -> bool {
    false
}

pub(crate) fn pid() -> i32 {
    std::process::id() as i32
}

pub(crate) fn parent_pid() -> i32 {
    0
}

pub(crate) fn try_wait(_pid: i32) -> io::Result<Option<ExitStatus>> {
    unsupported()
}

pub(crate) fn wait(_pid: i32) -> io::Result<ExitStatus> {
    unsupported()
}

pub(crate) fn kill(_pid: i32, _signal: i32) -> io::Result<()> {
    unsupported()
}

pub(crate) fn futex_wait(_word: &AtomicU32, _expected: u32, timeout: Option<Duration>) {
    std::thread::sleep(timeout.unwrap_or(Duration::from_millis(1)));
}

pub(crate) fn futex_wake(_word: &AtomicU32, _count: i32) {}

pub(crate) fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    unsupported()
}

pub(crate) fn send_message(
    _sock: BorrowedFd<'_>,
    _bytes: &[u8],
    _fd: Option<BorrowedFd<'_>>,
) -> io::Result<bool> {
    unsupported()
}

pub(crate) fn recv_message(
    _sock: RawFd,
    _buf: &mut [u8],
) -> io::Result<Option<(usize, Option<OwnedFd>)>> {
    unsupported()
}

pub(crate) fn keep_only_fds(keep: &[RawFd]) -> Vec<RawFd> {
    keep.to_vec()
}

pub(crate) fn thread_id() -> u32 {
    1
}

pub(crate) fn on_fork_in_child(_child: unsafe extern "C" fn()) -> io::Result<()> {
    unsupported()
}

pub(crate) fn thread_start() -> u32 {
    0
}

pub(crate) fn thread_is_dead(_tid: u32, _started: u32) -> bool {
    false
}

/// Never known to be stopped where /proc cannot be read.
pub(crate) fn process_stopped(_pid: i32) -> bool {
    false
}

pub(crate) fn shm_open(_name: &str, _create: bool) -> io::Result<OwnedFd> {
    unsupported()
}

pub(crate) fn shm_unlink(_name: &str) -> io::Result<()> {
    unsupported()
}

pub(crate) fn process_alive(_pid: i32) -> bool {
    false
}

pub(crate) fn random_128() -> io::Result<u128> {
    unsupported()
}

pub(crate) fn pidfd_open(_pid: i32) -> io::Result<OwnedFd> {
    unsupported()
}

pub(crate) fn pidfd_kill(_pidfd: BorrowedFd<'_>, _signal: i32) -> io::Result<()> {
    unsupported()
}

pub(crate) fn wait_readable(_fd: BorrowedFd<'_>, _timeout: Option<Duration>) -> io::Result<bool> {
    unsupported()
}

pub(crate) fn reap_any() -> Option<(i32, ExitStatus)> {
    None
}

pub(crate) fn set_cloexec(_fd: RawFd, _on: bool) -> io::Result<()> {
    unsupported()
}

pub(crate) const MAX_FDS: usize = 64;

pub(crate) fn send_with_fds(
    _sock: BorrowedFd<'_>,
    _bytes: &[u8],
    _fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    unsupported()
}

pub(crate) fn recv_with_fds(
    _sock: BorrowedFd<'_>,
    _buf: &mut [u8],
    _timeout: Option<Duration>,
) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    unsupported()
}

pub(crate) fn before_server_exec(_parent: i32, _keep: RawFd) -> io::Result<()> {
    unsupported()
}

pub(crate) fn set_name(_name: &str) {}

pub(crate) fn reset_signals() {}

pub(crate) fn protect_none(_ptr: *mut u8, _len: usize) {}

pub(crate) fn thread_count() -> Option<usize> {
    None
}

pub(crate) fn object_bounds(_addr: usize) -> Option<(usize, usize)> {
    None
}

pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    unsupported()
}

pub(crate) fn pin_to_cpu(_cpu: usize) -> io::Result<()> {
    unsupported()
}

pub(crate) fn advise_huge_pages(_ptr: *mut u8, _len: usize) {}
