//! The fork server: both sides of it.
//!
//! # Starting it
//! On first need the user's process execs `/proc/self/exe` (the same file, even if it was
//! replaced or deleted on disk since) from the long-lived forker thread, with `MARKER` in the
//! environment (`"<socket fd>:<parent pid>"`) and one end of a socket pair left open across the
//! exec. Before `main` runs, [`before_main`] (an `.init_array` entry, so no program has to call
//! an init function) sees the marker, checks that its parent is the pid it names (a grandchild
//! that inherited the variable is not a server), removes the variable, and serves for the rest
//! of its life. The exec also gets one dummy argument: if the diversion ever failed in a test
//! binary, libtest would take it as a filter and run no test, rather than the suite again.
//!
//! # The protocol
//! One request at a time on a `SOCK_SEQPACKET` socket, each answered by one reply:
//!
//! | request                                  | reply                                        |
//! |------------------------------------------|----------------------------------------------|
//! | `SPAWN entry, len` + payload memfd + fds | `SPAWNED pid` + pidfd, or `FAILED errno`     |
//! | `STATUS pid`                             | `RUNNING`, `EXITED code`, `SIGNALED sig`, `UNKNOWN` |
//!
//! A spawned child maps nothing of the user's process: it reads its payload, takes its
//! descriptors, and runs `entry(payload, fds)` (a function of this executable, sent as its
//! offset), then leaves through `_exit`. The server reaps its children and keeps each exit
//! status until the user's process asks for it (after the child's pidfd became readable).
//!
//! # Dying
//! The server dies with the user's process (`PR_SET_PDEATHSIG` from the forker thread, and a
//! closed socket), and its children die with it. If the server is killed, its children die
//! too (a call reports them as dead workers), and the next spawn starts a new server.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Child, Role, Served, code, forker};
use crate::error::{Error, ErrorKind, Result};
use crate::sys::{self, ExitStatus};

/// The environment variable that turns an exec'd copy into a fork server.
const MARKER: &str = "SHMPAR_FORK_SERVER";
/// See the module docs: a libtest filter that matches no test.
const SAFETY_NET_ARG: &str = "--shmpar-fork-server-matches-no-test";
/// How long a new server may take to answer its first message.
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long one request may wait for its reply (a stopped server is then killed).
const REPLY_LIMIT: Duration = Duration::from_secs(10);

const SPAWN: u64 = 1;
const STATUS: u64 = 2;
const HELLO: u64 = 10;
const SPAWNED: u64 = 11;
const FAILED: u64 = 12;
const RUNNING: u64 = 13;
const EXITED: u64 = 14;
const SIGNALED: u64 = 15;
const UNKNOWN: u64 = 16;

/// A function a started process runs: its payload and descriptors. It may return (the
/// process then ends with code 0) or leave through `_exit` itself.
pub(crate) type Entry = fn(Vec<u8>, Vec<OwnedFd>);

/// A message: an operation and two numbers.
type Words = (u64, u64, u64);

fn encode(op: u64, a: u64, b: u64) -> [u8; 24] {
    let mut m = [0u8; 24];
    m[..8].copy_from_slice(&op.to_le_bytes());
    m[8..16].copy_from_slice(&a.to_le_bytes());
    m[16..].copy_from_slice(&b.to_le_bytes());
    m
}

fn decode(m: &[u8]) -> Option<Words> {
    let word =
        |i: usize| -> Option<u64> { Some(u64::from_le_bytes(m.get(i..i + 8)?.try_into().ok()?)) };
    Some((word(0)?, word(8)?, word(16)?))
}

// ---- The user's side ----

/// The running fork server, as the user's process sees it.
#[derive(Debug)]
pub(crate) struct Server {
    conn: Mutex<Conn>,
    dead: AtomicBool,
}

#[derive(Debug)]
struct Conn {
    sock: OwnedFd,
    process: std::process::Child,
    /// The server's pidfd: its death and our signals, never a recycled pid (a user's
    /// `waitpid(-1)` may reap it behind our back).
    pidfd: OwnedFd,
}

impl Conn {
    fn alive(&self) -> bool {
        matches!(
            sys::wait_readable(self.pidfd.as_fd(), Some(Duration::ZERO)),
            Ok(false)
        )
    }

    /// Kills and reaps the server (it is dead or useless to us).
    fn end(&mut self) {
        let _ = sys::pidfd_kill(self.pidfd.as_fd(), sys::SIGKILL);
        let _ = sys::wait_readable(self.pidfd.as_fd(), Some(Duration::from_secs(5)));
        // ECHILD if someone else reaped it: nothing left to do.
        let _ = self.process.try_wait();
    }
}

static CURRENT: Mutex<Option<Arc<Server>>> = Mutex::new(None);
static HOOK_RAN: AtomicBool = AtomicBool::new(false);

/// Starts a process that runs `entry(payload, fds)`, forked by the fork server (started now
/// if there is none, or if the last one died).
pub(crate) fn spawn(entry: Entry, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<Child> {
    if super::in_child() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "a worker or child process cannot start processes of its own",
        ));
    }
    if fds.len() + 1 > sys::MAX_FDS {
        return Err(Error::invalid("too many descriptors for one process"));
    }
    let entry = code::offset(entry as usize)?;
    let payload_fd = sys::memfd("shmpar-payload", payload.len() as u64)
        .map_err(|e| Error::io("could not create a process's payload", e))?;
    File::from(
        payload_fd
            .try_clone()
            .map_err(|e| Error::io("could not create a process's payload", e))?,
    )
    .write_all_at(payload, 0)
    .map_err(|e| Error::io("could not write a process's payload", e))?;
    let mut all = vec![payload_fd.as_fd()];
    all.extend_from_slice(fds);
    let mut last = None;
    for _ in 0..2 {
        let server = current()?;
        match server.spawn(entry, payload.len() as u64, &all) {
            Ok(child) => return Ok(child),
            Err(Failure::Refused(e)) => {
                return Err(Error::io("the fork server could not fork", e));
            }
            Err(Failure::Gone(e)) => {
                // It died (killed, or out of memory), or stopped answering: make sure it is
                // gone (with whatever it may have forked), and start a new one next round.
                server.dead.store(true, Ordering::Release); // ORDERING: read by `current`.
                server.conn.lock().end();
                last = Some(e);
            }
        }
    }
    Err(Error::io(
        "the fork server died twice in a row while starting a process",
        last.unwrap_or_else(|| std::io::Error::other("unknown")),
    ))
}

/// The live server, started if need be.
fn current() -> Result<Arc<Server>> {
    let mut cur = CURRENT.lock();
    // ORDERING: Acquire, paired with the Release store of whoever found it dead.
    if let Some(s) = cur.as_ref().filter(|s| !s.dead.load(Ordering::Acquire)) {
        return Ok(Arc::clone(s));
    }
    let server = Arc::new(start()?);
    *cur = Some(Arc::clone(&server));
    Ok(server)
}

fn start() -> Result<Server> {
    // ORDERING: set before `main` by this process's only thread.
    if !HOOK_RAN.load(Ordering::Relaxed) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "shmpar's pre-main hook did not run in this program, so it cannot start a fork \
             server; use StartMethod::Fork",
        ));
    }
    let (ours, theirs) = sys::socket_pair()
        .map_err(|e| Error::io("could not create the fork server's socket", e))?;
    let parent = sys::pid();
    let keep = theirs.as_raw_fd();
    let spawned = forker::run(move || {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("shmpar-fork-server")
            .arg(SAFETY_NET_ARG)
            .env(MARKER, format!("{keep}:{parent}"))
            .stdin(Stdio::null());
        // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
        // calls (prctl, getppid, fcntl).
        unsafe { cmd.pre_exec(move || sys::before_server_exec(parent, keep)) };
        let spawned = cmd.spawn();
        drop(theirs);
        spawned
    })
    .and_then(|r| r)
    .map_err(|e| Error::io("could not start the fork server", e))?;
    let mut process = spawned;
    // Our child, not reaped yet: the pidfd is that very process.
    let pidfd = match sys::pidfd_open(process.id() as i32) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = process.kill();
            let _ = process.wait();
            return Err(Error::io("could not watch the fork server (pidfd_open)", e));
        }
    };
    let mut conn = Conn {
        sock: ours,
        process,
        pidfd,
    };
    let mut buf = [0u8; 24];
    let hello = sys::recv_with_fds(conn.sock.as_fd(), &mut buf, Some(START_LIMIT));
    match (hello, decode(&buf)) {
        (Ok(Some((24, _))), Some((HELLO, _, 1))) => Ok(Server {
            conn: Mutex::new(conn),
            dead: AtomicBool::new(false),
        }),
        (Ok(Some((24, _))), Some((HELLO, _, threads))) => {
            conn.end();
            Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the fork server found {threads} threads before main: a constructor of a \
                     library started threads, so its forks could inherit held locks; use \
                     StartMethod::Fork"
                ),
            ))
        }
        (other, _) => {
            conn.end();
            let status = conn.process.try_wait();
            Err(Error::new(
                ErrorKind::Io,
                format!(
                    "the fork server did not start (its first answer: {other:?}; it ended: \
                     {status:?})"
                ),
            ))
        }
    }
}

/// Why a request failed.
enum Failure {
    /// The server is gone (or stopped answering): start another.
    Gone(std::io::Error),
    /// The server answered with an error (fork failed: out of processes or memory).
    Refused(std::io::Error),
}

impl Server {
    /// Sends one request and waits for its reply, watching the server.
    fn ask(
        &self,
        conn: &mut Conn,
        request: [u8; 24],
        fds: &[BorrowedFd<'_>],
    ) -> std::result::Result<(Words, Vec<OwnedFd>), Failure> {
        sys::send_with_fds(conn.sock.as_fd(), &request, fds).map_err(|e| {
            // A broken connection means the server is gone; anything else (no memory for the
            // message, say) is ours, and the server did nothing.
            match e.kind() {
                std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::NotConnected => Failure::Gone(e),
                _ => Failure::Refused(e),
            }
        })?;
        let started = Instant::now();
        let mut buf = [0u8; 24];
        loop {
            match sys::recv_with_fds(
                conn.sock.as_fd(),
                &mut buf,
                Some(Duration::from_millis(100)),
            ) {
                Ok(Some((24, fds))) => {
                    let reply = decode(&buf).ok_or_else(|| Failure::Gone(bad_reply()))?;
                    return Ok((reply, fds));
                }
                Ok(Some(_)) => return Err(Failure::Gone(bad_reply())),
                Ok(None) => {}
                Err(e) => return Err(Failure::Gone(e)),
            }
            if !conn.alive() {
                return Err(Failure::Gone(std::io::Error::other("the fork server died")));
            }
            if started.elapsed() > REPLY_LIMIT {
                // Stopped or stuck: a server that does not answer is as good as dead.
                conn.end();
                return Err(Failure::Gone(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the fork server did not answer for 10 s",
                )));
            }
        }
    }

    fn spawn(
        self: &Arc<Self>,
        entry: u64,
        len: u64,
        fds: &[BorrowedFd<'_>],
    ) -> std::result::Result<Child, Failure> {
        let mut conn = self.conn.lock();
        let ((op, a, _), mut got) = self.ask(&mut conn, encode(SPAWN, entry, len), fds)?;
        let pid = a as i32;
        match op {
            SPAWNED => {
                let pidfd = match got.pop() {
                    Some(fd) => fd,
                    // We are at our descriptor limit and the kernel dropped it: open our own.
                    // A known race: the server reaps its children as they end, so a child that
                    // ended at once is gone (this fails) or, after a pid wrap, `pid` could
                    // name another process; only at the descriptor limit.
                    None => sys::pidfd_open(pid).map_err(Failure::Refused)?,
                };
                Ok(Child {
                    pid,
                    served: Some(Served {
                        pidfd,
                        server: Arc::clone(self),
                    }),
                    pidfd: None,
                })
            }
            FAILED => Err(Failure::Refused(std::io::Error::from_raw_os_error(
                a as i32,
            ))),
            _ => Err(Failure::Gone(bad_reply())),
        }
    }

    /// How the ended child `pid` ended (its pidfd is readable). A child of a server that died
    /// before telling was killed with it.
    pub(crate) fn exit_status(&self, pid: i32) -> std::io::Result<ExitStatus> {
        // ORDERING: Acquire, paired with the Release store of whoever found it dead.
        if self.dead.load(Ordering::Acquire) {
            return Ok(ExitStatus::Signaled(sys::SIGKILL));
        }
        let started = Instant::now();
        loop {
            let mut conn = self.conn.lock();
            let reply = self.ask(&mut conn, encode(STATUS, pid as u64, 0), &[]);
            drop(conn);
            match reply {
                Ok(((EXITED, code, _), _)) => return Ok(ExitStatus::Exited(code as i32)),
                Ok(((SIGNALED, sig, _), _)) => return Ok(ExitStatus::Signaled(sig as i32)),
                Ok(((RUNNING, _, _), _)) if started.elapsed() < Duration::from_secs(1) => {
                    // The pidfd said it ended; the server reaps it in a moment.
                    std::thread::sleep(Duration::from_micros(100));
                }
                Ok(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the fork server knows no such child",
                    ));
                }
                Err(Failure::Gone(_) | Failure::Refused(_)) => {
                    self.dead.store(true, Ordering::Release); // ORDERING: see above.
                    return Ok(ExitStatus::Signaled(sys::SIGKILL));
                }
            }
        }
    }
}

fn bad_reply() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "a malformed reply from the fork server",
    )
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only a server found dead is dropped (the current one lives in `CURRENT`): reap it.
        self.conn.get_mut().end();
    }
}

// ---- The server's side ----

/// Runs before `main` in every process of a program linked with shmpar (see the module docs).
/// Returns at once unless this process is a fork server, which never returns.
pub(crate) fn before_main() {
    // ORDERING: this process's only thread, before `main`.
    HOOK_RAN.store(true, Ordering::Relaxed);
    let Some(value) = std::env::var_os(MARKER) else {
        return;
    };
    let Some((fd, parent)) = value.to_str().and_then(|v| {
        let (fd, parent) = v.split_once(':')?;
        Some((fd.parse::<RawFd>().ok()?, parent.parse::<i32>().ok()?))
    }) else {
        return;
    };
    if sys::parent_pid() != parent {
        return; // a later descendant that inherited the variable: run normally
    }
    // SAFETY: before `main`, in a process that has started no thread: nothing reads the
    // environment concurrently.
    unsafe { std::env::remove_var(MARKER) };
    serve(fd, parent)
}

fn serve(fd: RawFd, parent: i32) -> ! {
    super::set_role(Role::Child);
    sys::set_name("shmpar-server");
    sys::reset_signals();
    // Single-threaded, unless a library's constructor started threads before us: the parent
    // refuses such a server (its forks could inherit held locks).
    let threads = sys::thread_count().unwrap_or(1) as u64;
    // Hold nothing of the user's but the standard streams: a descriptor left open without
    // close-on-exec stays out of the server and every worker.
    let fd = sys::keep_only_fds(&[fd])[0];
    if sys::set_cloexec(fd, true).is_err() {
        sys::exit_now(1);
    }
    // SAFETY: `fd` is the socket the parent left open for us; nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    if sys::send_with_fds(
        sock.as_fd(),
        &encode(HELLO, sys::pid() as u64, threads),
        &[],
    )
    .is_err()
    {
        sys::exit_now(1);
    }
    let mut ended: std::collections::HashMap<i32, ExitStatus> = Default::default();
    let mut buf = [0u8; 24];
    loop {
        while let Some((pid, status)) = sys::reap_any() {
            ended.insert(pid, status);
        }
        let (request, fds) =
            match sys::recv_with_fds(sock.as_fd(), &mut buf, Some(Duration::from_millis(200))) {
                Ok(Some((24, fds))) => (decode(&buf), fds),
                Ok(Some(_)) | Err(_) => sys::exit_now(0), // closed: the user's process is gone
                Ok(None) => {
                    if sys::parent_pid() != parent {
                        sys::exit_now(0);
                    }
                    continue;
                }
            };
        let reply = match request {
            Some((SPAWN, entry, len)) => {
                let reply = spawn_child(&sock, entry, len, fds);
                if let Some((SPAWNED, pid, _)) = decode(&reply.0) {
                    // A status left over from an earlier child with the same (recycled) pid is
                    // not this one's.
                    ended.remove(&(pid as i32));
                }
                reply
            }
            Some((STATUS, pid, _)) => {
                let pid = pid as i32;
                let status = match ended.remove(&pid) {
                    Some(s) => Ok(Some(s)),
                    None => sys::try_wait(pid),
                };
                let reply = match status {
                    Ok(None) => encode(RUNNING, 0, 0),
                    Ok(Some(ExitStatus::Exited(c))) => encode(EXITED, c as u64, 0),
                    Ok(Some(ExitStatus::Signaled(s))) => encode(SIGNALED, s as u64, 0),
                    Err(_) => encode(UNKNOWN, 0, 0),
                };
                (reply, None)
            }
            _ => (encode(UNKNOWN, 0, 0), None),
        };
        let pidfd = reply.1.as_ref().map(|f| f.as_fd());
        if sys::send_with_fds(sock.as_fd(), &reply.0, pidfd.as_slice()).is_err() {
            sys::exit_now(0);
        }
    }
}

/// Forks a child that runs the requested entry; the reply and, on success, the child's pidfd.
fn spawn_child(
    sock: &OwnedFd,
    entry: u64,
    len: u64,
    mut fds: Vec<OwnedFd>,
) -> ([u8; 24], Option<OwnedFd>) {
    if fds.is_empty() {
        return (encode(FAILED, sys::EINVAL as u64, 0), None);
    }
    let server = sys::pid();
    // SAFETY: the server is single-threaded, so the child inherits no lock held elsewhere;
    // it leaves only through `_exit` (in `run_child`).
    match unsafe { sys::fork() } {
        Ok(sys::Forked::Child) => {
            // The socket is ours in this copy too; the child must not hold it.
            let raw = sock.as_raw_fd();
            let payload = fds.remove(0);
            run_child(server, raw, entry, len, payload, fds)
        }
        Ok(sys::Forked::Parent(pid)) => match sys::pidfd_open(pid) {
            Ok(pidfd) => (encode(SPAWNED, pid as u64, 0), Some(pidfd)),
            Err(e) => {
                let _ = sys::kill(pid, sys::SIGKILL);
                (
                    encode(FAILED, e.raw_os_error().unwrap_or(0) as u64, 0),
                    None,
                )
            }
        },
        Err(e) => (
            encode(FAILED, e.raw_os_error().unwrap_or(0) as u64, 0),
            None,
        ),
    }
}

/// A new child of the server: dies with it, reads its payload, runs its entry, and leaves.
fn run_child(
    server: i32,
    server_sock: RawFd,
    entry: u64,
    len: u64,
    payload: OwnedFd,
    fds: Vec<OwnedFd>,
) -> ! {
    // SAFETY: this copy of the server's socket is ours alone and is not used again here.
    drop(unsafe { OwnedFd::from_raw_fd(server_sock) });
    if !sys::die_with_parent(server) {
        sys::exit_now(0);
    }
    let mut bytes = vec![0u8; len as usize];
    if File::from(payload).read_exact_at(&mut bytes, 0).is_err() {
        sys::exit_now(1);
    }
    // SAFETY: `entry` is `code::offset` of an `Entry` taken in the user's process, which runs
    // this same executable, so `code::address` rebuilds that very function here.
    let entry: Entry = unsafe { std::mem::transmute::<usize, Entry>(code::address(entry)) };
    let ok = panic::catch_unwind(AssertUnwindSafe(|| entry(bytes, fds))).is_ok();
    // Nothing of the user's process runs here, so no other thread can hold these locks.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    sys::exit_now(if ok { 0 } else { 101 })
}
