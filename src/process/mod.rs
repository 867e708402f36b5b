//! `Process`: fork a closure now, join it later.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::pool::chunk;
use crate::sys::{self, ExitStatus, Forked};

/// How a child process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// The closure returned.
    Ok,
    /// The closure panicked, with this message.
    Panicked(String),
    /// The child called `exit` (or `_exit`) with this code.
    Exited(i32),
    /// A signal ended the child (SIGKILL = 9, SIGSEGV = 11, SIGABRT = 6, ...).
    Signaled(i32),
}

impl Exit {
    /// True for [`Exit::Ok`].
    ///
    /// ```
    /// assert!(shmpar::Exit::Ok.success());
    /// assert!(!shmpar::Exit::Signaled(9).success());
    /// ```
    pub fn success(&self) -> bool {
        matches!(self, Exit::Ok)
    }
}

/// A child process running a closure, forked from the calling thread.
///
/// The child sees the parent's memory as it was at the fork, a private copy, except for
/// shared memory ([`SharedArray`](crate::SharedArray), [`SharedValue`](crate::SharedValue)),
/// which stays live in both. It runs the closure and leaves through `_exit`, so the parent's
/// destructors, atexit handlers and buffered stdout are never run twice.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use shmpar::{Exit, Process, SharedValue};
///
/// # fn main() -> shmpar::Result<()> {
/// let hits = SharedValue::new(AtomicU64::new(0))?;
/// let children: Vec<Process> = (0..4)
///     .map(|_| Process::spawn(|| { hits.fetch_add(1, Ordering::Relaxed); }))
///     .collect::<Result<_, _>>()?;
/// for child in children {
///     assert_eq!(child.join()?, Exit::Ok);
/// }
/// assert_eq!(hits.load(Ordering::Relaxed), 4);
/// # Ok(())
/// # }
/// ```
///
/// # Forking with threads
/// Only the calling thread exists in the child. A lock that another thread of the parent held
/// at the fork (stdout's, a `Mutex`, the allocator's in some libcs, rayon's pool) stays locked
/// in the child forever. In a parent with other threads, the closure should compute on shared
/// memory and atomics and take no such lock; in a single-threaded parent anything goes.
///
/// # Lifetime
/// Dropping a `Process` that was not joined kills (SIGKILL) and reaps the child, so no zombie
/// and no orphan is left behind.
#[derive(Debug)]
pub struct Process {
    pid: i32,
    exit: Option<Exit>,
    panic_message: Option<File>,
}

impl Process {
    /// Forks now and runs `f` in the child.
    ///
    /// ```
    /// let child = shmpar::Process::spawn(|| panic!("in the child"))?;
    /// // The message, and where the panic happened.
    /// assert!(matches!(child.join()?, shmpar::Exit::Panicked(m) if m.starts_with("in the child (at ")));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn spawn<F: FnOnce()>(f: F) -> Result<Process> {
        chunk::install_panic_hook();
        let (read, write): (OwnedFd, OwnedFd) =
            sys::pipe().map_err(|e| Error::io("could not create a pipe for the child", e))?;
        // SAFETY: the child runs only the user's closure under a panic guard, then `_exit`;
        // the rules for what the closure may do after fork are documented on `Process`.
        match unsafe { sys::fork() } {
            Ok(Forked::Child) => {
                chunk::mark_worker();
                chunk::set_role(None);
                let fd = write.as_raw_fd();
                let outcome = panic::catch_unwind(AssertUnwindSafe(f));
                match outcome {
                    Ok(()) => sys::exit_now(0),
                    Err(payload) => {
                        let msg = chunk::panic_message(&*payload);
                        sys::write_all_raw(fd, msg.as_bytes());
                        sys::exit_now(PANIC_EXIT)
                    }
                }
            }
            Ok(Forked::Parent(pid)) => {
                drop(write);
                Ok(Process {
                    pid,
                    exit: None,
                    panic_message: Some(File::from(read)),
                })
            }
            Err(e) => Err(Error::io("could not fork", e)),
        }
    }

    /// Ends the calling process at once with exit code `code`: no destructors, no atexit
    /// handlers, no flush of stdio buffers. This is how a child should stop early:
    /// `std::process::exit` flushes stdout, whose lock another thread of the parent may have
    /// held at the fork (the child then hangs), and writes the parent's buffered output twice.
    ///
    /// ```
    /// let child = shmpar::Process::spawn(|| shmpar::Process::exit(3))?;
    /// assert_eq!(child.join()?, shmpar::Exit::Exited(3));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn exit(code: i32) -> ! {
        sys::exit_now(code)
    }

    /// The child's process id.
    ///
    /// ```
    /// let child = shmpar::Process::spawn(|| {})?;
    /// assert!(child.pid() > 0);
    /// # child.join()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the child to end and says how it ended.
    ///
    /// ```
    /// let child = shmpar::Process::spawn(|| std::process::abort())?;
    /// assert_eq!(child.join()?, shmpar::Exit::Signaled(6));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn join(mut self) -> Result<Exit> {
        if let Some(exit) = self.exit.clone() {
            return Ok(exit);
        }
        let status =
            sys::wait(self.pid).map_err(|e| Error::io("could not wait for the child", e))?;
        Ok(self.record(status))
    }

    /// Waits at most `timeout`; `None` if the child still runs.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut child = shmpar::Process::spawn(|| std::thread::sleep(Duration::from_secs(10)))?;
    /// assert_eq!(child.join_timeout(Duration::from_millis(10))?, None);
    /// child.kill()?;
    /// assert_eq!(child.join_timeout(Duration::from_secs(5))?, Some(shmpar::Exit::Signaled(9)));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<Exit>> {
        if let Some(exit) = self.exit.clone() {
            return Ok(Some(exit));
        }
        let deadline = Instant::now() + timeout;
        let mut nap = Duration::from_micros(50);
        loop {
            match sys::try_wait(self.pid) {
                Ok(Some(status)) => return Ok(Some(self.record(status))),
                Ok(None) => {}
                Err(e) => return Err(Error::io("could not wait for the child", e)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(nap.min(deadline - now));
            nap = (nap * 2).min(Duration::from_millis(5));
        }
    }

    /// Sends SIGKILL to the child (no effect once it has been joined).
    ///
    /// ```
    /// let mut child = shmpar::Process::spawn(|| loop { std::hint::spin_loop() })?;
    /// child.kill()?;
    /// assert_eq!(child.join()?, shmpar::Exit::Signaled(9));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn kill(&mut self) -> Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        sys::kill(self.pid, sys::SIGKILL).map_err(|e| Error::io("could not kill the child", e))
    }

    fn record(&mut self, status: ExitStatus) -> Exit {
        let exit = match status {
            ExitStatus::Exited(PANIC_EXIT) => {
                let mut msg = String::new();
                // The child wrote its message before exiting, so it is in the pipe now. A
                // child forked later may hold a copy of the write end, so read without waiting
                // for EOF: set O_NONBLOCK first.
                if let Some(mut f) = self.panic_message.take() {
                    set_nonblocking(&f);
                    let _ = f.read_to_string(&mut msg);
                }
                if msg.is_empty() {
                    Exit::Exited(PANIC_EXIT)
                } else {
                    Exit::Panicked(msg)
                }
            }
            ExitStatus::Exited(0) => Exit::Ok,
            ExitStatus::Exited(code) => Exit::Exited(code),
            ExitStatus::Signaled(sig) => Exit::Signaled(sig),
        };
        self.panic_message = None;
        self.exit = Some(exit.clone());
        exit
    }
}

/// Restricts the calling process (or thread) to CPU number `cpu`, e.g. one CPU per child so
/// that they really run at the same time. Fails with
/// [`ErrorKind::InvalidInput`] or [`ErrorKind::Io`] for a CPU this process may not use.
///
/// ```
/// let child = shmpar::Process::spawn(|| shmpar::pin_to_cpu(0).unwrap())?;
/// child.join()?.into_result()?;
/// # Ok::<(), shmpar::Error>(())
/// ```
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    sys::pin_to_cpu(cpu).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            Error::invalid(format!("CPU {cpu} is out of range"))
        } else {
            Error::io(format!("could not pin to CPU {cpu}"), e)
        }
    })
}

/// The exit code a child uses after a panic (as the Rust runtime does).
const PANIC_EXIT: i32 = 101;

fn set_nonblocking(f: &File) {
    sys::set_nonblocking(f.as_raw_fd());
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exit.is_none() {
            // Not joined: kill and reap it. Errors mean it is already gone; nothing to report.
            let _ = sys::kill(self.pid, sys::SIGKILL);
            let _ = sys::wait(self.pid);
        }
    }
}

impl Exit {
    /// `Ok(())` for [`Exit::Ok`], else an error: `WorkerPanicked` with the message, or
    /// `WorkerDied` with the code or signal.
    ///
    /// ```
    /// let child = shmpar::Process::spawn(|| {})?;
    /// child.join()?.into_result()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn into_result(self) -> Result<()> {
        match self {
            Exit::Ok => Ok(()),
            Exit::Panicked(msg) => Err(Error::new(ErrorKind::WorkerPanicked, msg)),
            Exit::Exited(code) => Err(Error::new(
                ErrorKind::WorkerDied,
                format!("the child exited with code {code}"),
            )),
            Exit::Signaled(sig) => {
                Err(Error::new(ErrorKind::WorkerDied, "the child was killed")
                    .with_signal(Some(sig)))
            }
        }
    }
}
