//! Process lifecycle, in one place: how workers and children are started (the fork server or a
//! direct fork), what this process is (the user's main process, a pool worker, a child), and
//! how a started process is watched, signalled and reaped.
//!
//! # Start methods
//! - [`StartMethod::ForkServer`] (the default): on first need, shmpar execs a fresh copy of the
//!   running program (`/proc/self/exe`). A hook that runs before `main` (an `.init_array`
//!   entry) sees a marker in its environment and turns that copy into the *fork server*: a
//!   single-threaded process that holds no lock and has run none of the user's code. It forks
//!   every worker and child on request, so a task may print, log, use rayon or take any lock:
//!   nothing inherited can be held. Work travels as a function's offset in the executable plus
//!   serialised arguments; shared memory travels as file descriptors.
//! - [`StartMethod::Fork`]: a direct `fork` of the user's process (from one long-lived thread).
//!   The worker sees the parent's memory as it was at the fork (copy-on-write), which is cheap
//!   for a large read-only heap; but it also inherits every lock that another thread held at
//!   that instant, and statics as they were then.
//!
//! # Lifetimes
//! The fork server and every process started directly are SIGKILLed by the kernel when the
//! user's process dies (`PR_SET_PDEATHSIG`, set from a thread that lives as long as the
//! process); the server's children die with the server in the same way. Nothing is orphaned,
//! even after SIGKILL.

pub(crate) mod code;
pub(crate) mod forker;
pub(crate) mod server;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};

use crate::sys::{self, ExitStatus};

/// How a pool starts its worker processes (see
/// [`PoolBuilder::start_method`](crate::PoolBuilder::start_method)).
///
/// # What a worker started by the fork server sees
/// - the program's initial state: statics as they are before `main`, no thread of the caller,
///   no lock held; the constructors of the program's libraries have run, `main` has not;
/// - the environment, working directory, resource limits, CPU affinity and standard streams
///   the caller had when the server started (its first pool or `Process::start`): a later
///   `set_current_dir` or `set_var` in the caller is not seen, so pass paths and settings as
///   arguments (`worker_init_with`, task arguments);
/// - none of the caller's other open files;
/// - functions of the program's own executable only: a function of a library loaded with
///   `dlopen` cannot be found in a fresh exec (a clear error; use `Fork`).
///
/// The server refuses to start (an [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported)
/// error that names `Fork`) if a library's constructor started threads before `main`, since its
/// forks could then inherit held locks.
///
/// ```
/// use shmpar::{Pool, StartMethod};
///
/// let pool = Pool::builder().workers(1).start_method(StartMethod::Fork).build()?;
/// assert_eq!(pool.config().start_method_setting(), StartMethod::Fork);
/// # Ok::<(), shmpar::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartMethod {
    /// Workers are forked by a fork server, a fresh single-threaded exec of the program: they
    /// inherit no lock and no state from the user's process, so any code can run in a task.
    /// Everything a task needs reaches it through its arguments and shared arrays. The default.
    #[default]
    ForkServer,
    /// Workers are forked directly from the user's process. They see its memory as it was at
    /// the fork (statics, a large read-only heap) without a copy. The rules: another thread's
    /// lock held at the fork (stdout's, a `Mutex`, rayon's pool, the logger's) stays held in
    /// the worker forever, so with other threads running, tasks must compute on shared memory
    /// and atomics only: no printing, no logging, no rayon. State set up after the pool was
    /// built is not seen by its workers.
    ///
    /// A shared object (an array, a value, a queue) that a static held at the fork is a copy
    /// in each worker, unknown to the pool: once the parent drops or replaces it, the worker
    /// unmaps its memory and the copy points at nothing. A task must not reach a shared
    /// object through a static; pass it in the task's arguments (a handle), which works with
    /// either start method. (A known gap: this rule is not enforced, although choosing `Fork`
    /// is not `unsafe`.)
    Fork,
}

/// Bumped in the child after every fork (a `pthread_atfork` handler): per-thread caches of
/// kernel ids (a thread id) read before a fork are stale in the child.
static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);

/// Whether the handler that bumps `FORK_GENERATION` is registered: `NOT_YET`, `REGISTERING`
/// (some thread is doing it), `READY`, or `FAILED`. Not a `Once`: a process forked while
/// another thread was inside `Once::call_once` would find it "running" forever and hang.
static AT_FORK: AtomicU8 = AtomicU8::new(NOT_YET);
const NOT_YET: u8 = 0;
const REGISTERING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

unsafe extern "C" fn forked_child() {
    // ORDERING: runs in the child's only thread before anything else.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// How many forks separate this process from the first one of its line, or `None` while the
/// fork handler is not registered yet (it registers it if nobody has; it never waits: a
/// thread that finds another registering, or a child forked during it, gets `None`). A value
/// cached together with the generation is valid while the generation stays the same.
#[inline]
pub(crate) fn fork_generation() -> Option<u32> {
    // ORDERING: Acquire/Release on the state, so that READY is seen only after registration.
    let ready = match AT_FORK.load(Ordering::Acquire) {
        READY => true,
        NOT_YET
            if AT_FORK
                .compare_exchange(NOT_YET, REGISTERING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok() =>
        {
            let ok = sys::on_fork_in_child(forked_child).is_ok();
            AT_FORK.store(if ok { READY } else { FAILED }, Ordering::Release);
            ok
        }
        _ => false,
    };
    // ORDERING: the generation only changes in a fresh child, on its only thread.
    ready.then(|| FORK_GENERATION.load(Ordering::Relaxed))
}

/// What this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The user's process (or any process shmpar did not start).
    Main,
    /// Pool worker number `i`.
    Worker(usize),
    /// A [`Process`](crate::Process) child.
    Child,
}

const MAIN: usize = usize::MAX;
const CHILD: usize = usize::MAX - 1;

static ROLE: AtomicUsize = AtomicUsize::new(MAIN);

/// What this process is.
#[inline]
pub(crate) fn role() -> Role {
    // ORDERING: set once by a started process's only thread, before any user code runs.
    match ROLE.load(Ordering::Relaxed) {
        MAIN => Role::Main,
        CHILD => Role::Child,
        i => Role::Worker(i),
    }
}

/// A process, as a copy of its memory can tell it from itself: a value made here and read
/// in a forked copy says "not here". Pools, and the code a worker runs, use it to stop a copy
/// (the user's own fork) from touching what belongs to the original.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    pub(crate) pid: i32,
    /// Its fork generation (see [`fork_generation`]), when the fork handler is in place: a
    /// cheaper test than `getpid`.
    pub(crate) generation: Option<u32>,
}

impl Origin {
    pub(crate) fn here() -> Origin {
        Origin {
            pid: sys::pid(),
            generation: fork_generation(),
        }
    }

    /// True in the process that made this value, false in a forked copy of it.
    #[inline]
    pub(crate) fn is_here(&self) -> bool {
        match (self.generation, fork_generation()) {
            // A fork bumps the generation in the child only, and memory reaches other
            // processes only by fork.
            (Some(made), Some(now)) => made == now,
            _ => sys::pid() == self.pid,
        }
    }
}

/// True in a worker or child that shmpar started: the parent's registries, pools and locks
/// are not this process's to use.
#[inline]
pub(crate) fn in_child() -> bool {
    role() != Role::Main
}

/// Records what this process is; called once, first thing, in a started process.
pub(crate) fn set_role(role: Role) {
    let v = match role {
        Role::Main => MAIN,
        Role::Child => CHILD,
        Role::Worker(i) => i.min(CHILD - 1),
    };
    // ORDERING: see `role`.
    ROLE.store(v, Ordering::Relaxed);
}

impl Role {
    /// How log records name this process: "main", "child", or "w3" for worker 3.
    pub(crate) fn label(self) -> String {
        match self {
            Role::Main => "main".to_string(),
            Role::Child => "child".to_string(),
            Role::Worker(i) => format!("w{i}"),
        }
    }
}

/// A process this one started: forked directly (our child, reaped and signalled through a
/// pidfd taken at the fork, so never another process that got its pid after someone else
/// reaped it; by pid where pidfds are missing) or by the fork server (its child: watched
/// through a pidfd, its exit status asked of the server).
#[derive(Debug)]
pub(crate) struct Child {
    pid: i32,
    served: Option<Served>,
    /// A direct child's pidfd (`None` before Linux 5.4's `waitid(P_PIDFD)`, or if opening it
    /// failed).
    pidfd: Option<OwnedFd>,
}

#[derive(Debug)]
struct Served {
    pidfd: OwnedFd,
    server: Arc<server::Server>,
}

impl Child {
    /// A child forked directly by this process, called before anything can reap it (so the
    /// pidfd opened here is the child's).
    pub(crate) fn direct(pid: i32) -> Child {
        Child {
            pid,
            served: None,
            pidfd: sys::pidfd_open(pid).ok(),
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// How it ended, reaping it, or `None` while it runs. Call it until it gives `Some`, once:
    /// afterwards it is an error (the pid is gone).
    pub(crate) fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        match (&self.served, &self.pidfd) {
            (None, Some(fd)) => match sys::wait_pidfd(fd.as_fd(), false) {
                // Linux 5.3 has pidfds but not waitid(P_PIDFD): by pid, then.
                Err(e) if e.raw_os_error() == Some(sys::EINVAL) => sys::try_wait(self.pid),
                other => other,
            },
            (None, None) => sys::try_wait(self.pid),
            (Some(s), _) => {
                if !sys::wait_readable(s.pidfd.as_fd(), Some(std::time::Duration::ZERO))? {
                    return Ok(None);
                }
                s.server.exit_status(self.pid).map(Some)
            }
        }
    }

    /// Waits for it to end and reaps it.
    pub(crate) fn wait(&self) -> io::Result<ExitStatus> {
        match (&self.served, &self.pidfd) {
            (None, Some(fd)) => match sys::wait_pidfd(fd.as_fd(), true) {
                Ok(status) => status.ok_or_else(|| io::Error::other("waitid returned no child")),
                // Linux 5.3 has pidfds but not waitid(P_PIDFD): by pid, then.
                Err(e) if e.raw_os_error() == Some(sys::EINVAL) => sys::wait(self.pid),
                Err(e) => Err(e),
            },
            (None, None) => sys::wait(self.pid),
            (Some(s), _) => {
                sys::wait_readable(s.pidfd.as_fd(), None)?;
                s.server.exit_status(self.pid)
            }
        }
    }

    /// Sends SIGKILL (never to a recycled pid: every child is signalled through its pidfd,
    /// where the kernel has them).
    pub(crate) fn kill(&self) -> io::Result<()> {
        self.signal(sys::SIGKILL)
    }

    /// Sends `signal` (see [`kill`](Self::kill) for why it reaches this very process). A
    /// child that has already ended is no error: the signal has nothing left to do. (A direct
    /// child stays a zombie until we reap it and takes the signal; the fork server reaps its
    /// children at once, and their pidfds then say ESRCH.)
    pub(crate) fn signal(&self, signal: i32) -> io::Result<()> {
        let sent = match (&self.served, &self.pidfd) {
            (None, Some(fd)) => sys::pidfd_kill(fd.as_fd(), signal),
            (None, None) => sys::kill(self.pid, signal),
            (Some(s), _) => sys::pidfd_kill(s.pidfd.as_fd(), signal),
        };
        match sent {
            Err(e) if e.raw_os_error() == Some(sys::ESRCH) => Ok(()),
            other => other,
        }
    }
}

/// Forks a pool worker directly ([`StartMethod::Fork`]) from the forker thread, with the region
/// registry locked so that the fork and the regions it inherits are ordered (see
/// `shm::region`). The child runs `child_main(parent pid, fork_seq)`; the parent runs
/// `on_forked(child, fork_seq)`, still under the registry's lock, before this returns.
pub(crate) fn fork_worker<C, P>(child_main: C, on_forked: P) -> io::Result<()>
where
    C: FnOnce(i32, u64) -> std::convert::Infallible + Send + 'static,
    P: FnOnce(Child, u64) + Send + 'static,
{
    forker::run(move || {
        let parent = sys::pid();
        let reg = crate::shm::registry();
        let fork_seq = reg.next_id();
        // SAFETY: the child runs only `child_main`, which follows fork's rules (it takes no
        // lock another thread could hold, and leaves through `_exit`).
        match unsafe { sys::fork() } {
            Ok(sys::Forked::Child) => match child_main(parent, fork_seq) {},
            Ok(sys::Forked::Parent(pid)) => {
                on_forked(Child::direct(pid), fork_seq);
                drop(reg);
                Ok(())
            }
            Err(e) => Err(e),
        }
    })?
}

/// Forks the calling thread's process and runs `f` in the child, which leaves through
/// `_exit` (code 0 when `f` returns).
///
/// # Safety
/// See [`Process::fork`](crate::Process::fork): the child has only this thread, and `f`
/// (with everything it captured) now exists in both processes.
pub(crate) unsafe fn fork_here<F: FnOnce()>(f: F) -> io::Result<Child> {
    // SAFETY: the caller upholds the rules for the child (see above).
    match unsafe { sys::fork() }? {
        sys::Forked::Child => {
            set_role(Role::Child);
            f();
            sys::exit_now(0)
        }
        sys::Forked::Parent(pid) => Ok(Child::direct(pid)),
    }
}
