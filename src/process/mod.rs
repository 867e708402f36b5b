//! `Process`: start a function in a clean child process, join it later (Python's
//! `Process(target=f, args=...)`); or fork a closure, for those who know fork's rules.

use std::fmt;
use std::fs::File;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::lifecycle::{self, Child, Role, code};
use crate::pool::chunk;
use crate::sys::{self, ExitStatus};

/// How a child process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// The function returned.
    Ok,
    /// The function panicked, with this message.
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

/// A child process running a function; `R` is what the function returns.
///
/// [`Process::start`] runs `f(args)` in a child forked by the fork server: a fresh copy of the
/// program that has run none of the caller's code, so the function may print, log, use rayon
/// or any lock. The arguments and the result travel serialised (serde), like Python's
/// `Process(target=f, args=...)`, and shared memory travels inside the arguments.
///
/// ```
/// use shmpar::Process;
///
/// fn square(x: u64) -> u64 {
///     println!("squaring {x} in process {}", std::process::id());
///     x * x
/// }
///
/// # fn main() -> shmpar::Result<()> {
/// let child = Process::start(square, 12)?;
/// assert_eq!(child.join_value()?, 144);
/// # Ok(())
/// # }
/// ```
///
/// A closure that captures nothing is a function too; one that captures cannot be sent (its
/// captures live in this process's memory): pass what it needs as `args` instead.
///
/// [`Process::fork`] (`unsafe`) forks the calling process instead, and runs a closure in the
/// child, which sees the parent's memory as it was at the fork.
///
/// # Lifetime
/// Dropping a `Process` that was not joined kills (SIGKILL) and reaps the child, so no zombie
/// and no orphan is left behind. A started child ([`Process::start`]) also dies with its
/// parent, even if the parent is SIGKILLed. A forked child ([`Process::fork`]) does not yet: if
/// the parent dies without dropping its `Process`, the child runs on (a known gap), so have it
/// watch for its parent where that matters.
///
/// So every `Process` behaves like Python's `daemon=True`: it never outlives the owner that
/// lets go of it. For `daemon=False` (the parent waits for the child before it ends), call
/// [`join`](Process::join) before the `Process` goes out of scope; a child cannot be left
/// running after its parent exits.
pub struct Process<R = ()> {
    child: Child,
    exit: Option<Exit>,
    /// Where the child leaves its panic message (and, for `start`, its result): a memfd.
    outbox: File,
    /// The serialised result of a child that returned.
    value: Option<Vec<u8>>,
    marker: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.child.pid())
            .field("exit", &self.exit)
            .finish_non_exhaustive()
    }
}

/// Outbox tags: the first byte of what the child leaves.
const RETURNED: u8 = 1;
const PANICKED: u8 = 2;

/// The exit code a child uses after a panic (as the Rust runtime does).
const PANIC_EXIT: i32 = 101;

/// What [`Process::start`] sends: the function, its arguments, and the parent's logger.
#[derive(Serialize, Deserialize)]
struct StartPayload {
    trampoline: u64,
    user_fn: u64,
    args: Vec<u8>,
    log: Option<crate::logging::LogSetup>,
    /// The shared objects the arguments name, (id, length, fingerprint): their descriptors
    /// follow the outbox's and the logger's.
    handles: Vec<crate::shm::handle::Handle>,
}

/// Runs `user_fn` (a `fn(A) -> R` at this process's address) on serialised `A`, giving
/// serialised `R`.
///
/// # Safety
/// `user_fn` must be a `fn(A) -> R` for this instantiation's `A` and `R`.
type StartTrampoline = unsafe fn(user_fn: usize, args: &[u8]) -> Vec<u8>;

unsafe fn run_start<A: DeserializeOwned, R: Serialize>(user_fn: usize, args: &[u8]) -> Vec<u8> {
    // SAFETY: `Process::start` encoded a `fn(A) -> R` with this trampoline.
    let f: fn(A) -> R = unsafe { std::mem::transmute(user_fn) };
    crate::shm::handle::clear_reason();
    let args: A = postcard::from_bytes(args).unwrap_or_else(|e| {
        panic!(
            "the process's arguments could not be read back: {}",
            crate::shm::handle::explain(e)
        )
    });
    postcard::to_stdvec(&f(args))
        .unwrap_or_else(|e| panic!("the process's result could not be serialised: {e}"))
}

/// The entry of a child started by [`Process::start`] (runs in the fork server's child).
fn start_main(payload: Vec<u8>, fds: Vec<OwnedFd>) {
    lifecycle::set_role(Role::Child);
    chunk::install_panic_hook();
    let mut fds = fds.into_iter();
    let (Ok(start), Some(outbox)) = (
        postcard::from_bytes::<StartPayload>(&payload),
        fds.next().map(File::from),
    ) else {
        sys::exit_now(1)
    };
    if let Some(setup) = start.log {
        match fds.next() {
            Some(fd) => crate::logging::adopt(setup, fd),
            None => sys::exit_now(1),
        }
    }
    for (&handle, fd) in start.handles.iter().zip(fds) {
        crate::shm::handle::receive(handle, fd);
    }
    // SAFETY: the parent encoded a `StartTrampoline` and the user's function from this same
    // executable.
    let trampoline: StartTrampoline =
        unsafe { std::mem::transmute(code::address(start.trampoline)) };
    let user_fn = code::address(start.user_fn);
    // SAFETY: `user_fn` has the type the trampoline was instantiated for.
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| unsafe {
        trampoline(user_fn, &start.args)
    }));
    leave(&outbox, outcome.map_err(|p| chunk::panic_message(&*p)))
}

/// Writes the outcome into the outbox and ends the child.
fn leave(outbox: &File, outcome: std::result::Result<Vec<u8>, String>) -> ! {
    let (tag, bytes, code) = match outcome {
        Ok(bytes) => (RETURNED, bytes, 0),
        Err(msg) => (PANICKED, msg.into_bytes(), PANIC_EXIT),
    };
    // The bytes first, the tag last: a tag means the bytes are whole. A failed write leaves
    // no tag, and the parent reports the exit code alone.
    if outbox.write_all_at(&bytes, 1).is_ok() {
        let _ = outbox.write_all_at(&[tag], 0);
    }
    sys::exit_now(code)
}

fn outbox() -> Result<File> {
    sys::memfd("shmpar-outbox", 0)
        .map(File::from)
        .map_err(|e| Error::io("could not create a child's outbox", e))
}

impl<R: Serialize + DeserializeOwned> Process<R> {
    /// Starts `f(args)` in a new process forked by the fork server, and returns at once.
    ///
    /// Fails with [`ErrorKind::InvalidInput`] if `args` cannot be serialised or `f` is not in
    /// the program's executable, [`ErrorKind::Unsupported`] inside a worker or child (and off
    /// Linux), and [`ErrorKind::Io`] if no process can be started.
    ///
    /// ```
    /// use shmpar::{Exit, Process};
    ///
    /// let child = Process::start(|(a, b): (u32, u32)| a + b, (2, 3))?;
    /// assert_eq!(child.join_value()?, 5);
    /// let child = Process::start(|name: String| -> u32 { panic!("no {name}") }, "luck".into())?;
    /// assert!(matches!(child.join()?, Exit::Panicked(m) if m.starts_with("no luck")));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn start<A>(f: fn(A) -> R, args: A) -> Result<Process<R>>
    where
        A: Serialize + DeserializeOwned + 'static,
    {
        // `value` lives until the child has its descriptors (the spawn below), so every shared
        // object the arguments name is alive while they are sent.
        let value = args;
        let args = crate::pool::Args::encode(&value, "the process's arguments")?;
        let log = crate::logging::inheritance();
        let payload = StartPayload {
            trampoline: code::offset(run_start::<A, R> as StartTrampoline as usize)?,
            user_fn: code::offset(f as usize)?,
            args: args.bytes,
            log: log.as_ref().map(|(setup, _)| *setup),
            handles: args.handles.iter().map(|h| h.handle()).collect(),
        };
        let payload = postcard::to_stdvec(&payload)
            .map_err(|e| Error::invalid(format!("could not encode the process's start: {e}")))?;
        let outbox = outbox()?;
        let mut fds = vec![outbox.as_fd()];
        fds.extend(log.as_ref().map(|(_, fd)| fd.as_fd()));
        fds.extend(args.handles.iter().map(|h| h.fd()));
        let child = lifecycle::server::spawn(start_main, &payload, &fds)?;
        drop(value);
        Ok(Process::new(child, outbox))
    }

    /// Waits for the child and returns what its function returned: an error of kind
    /// [`ErrorKind::WorkerPanicked`] (with the message) or [`ErrorKind::WorkerDied`] (with the
    /// exit code or signal) if it did not return.
    ///
    /// ```
    /// let child = shmpar::Process::start(|v: Vec<f64>| v.iter().sum::<f64>(), vec![1.0, 2.5])?;
    /// assert_eq!(child.join_value()?, 3.5);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn join_value(mut self) -> Result<R> {
        self.wait_exit()?.into_result()?;
        let bytes = self
            .value
            .take()
            .ok_or_else(|| Error::new(ErrorKind::WorkerDied, "the child ended without a result"))?;
        postcard::from_bytes(&bytes)
            .map_err(|e| Error::invalid(format!("the child's result could not be read back: {e}")))
    }
}

impl Process {
    /// Forks the calling process now and runs `f` in the child, which then leaves through
    /// `_exit` (no destructors, no atexit handlers, no flush of the parent's buffered output).
    /// The child sees the parent's memory as it was at the fork, a private copy, except for
    /// shared memory ([`SharedArray`](crate::SharedArray), [`SharedValue`](crate::SharedValue)),
    /// which stays live in both. Prefer [`Process::start`], which has none of these rules.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use shmpar::{Exit, Process, SharedValue};
    ///
    /// # fn main() -> shmpar::Result<()> {
    /// let hits = SharedValue::new(AtomicU64::new(0))?;
    /// let children: Vec<Process> = (0..4)
    ///     // SAFETY: the closure only adds to an atomic in shared memory.
    ///     .map(|_| unsafe { Process::fork(|| { hits.fetch_add(1, Ordering::Relaxed); }) })
    ///     .collect::<Result<_, _>>()?;
    /// for child in children {
    ///     assert_eq!(child.join()?, Exit::Ok);
    /// }
    /// assert_eq!(hits.load(Ordering::Relaxed), 4);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Safety
    /// After the fork, `f` and everything it captured exist twice: the parent drops its copy
    /// when this returns, while the child still uses its own. The caller must make sure that
    /// this cannot break an invariant another process relies on:
    /// - `f` must not use a guard, handle or token whose drop in the parent ends what the
    ///   child relies on (a moved [`ShmMutexGuard`](crate::ShmMutexGuard) unlocks in the
    ///   parent while the child still writes through it: a data race in shared memory);
    /// - `f` must not write shared memory that the parent or another process accesses at the
    ///   same time without synchronisation (atomics, a lock);
    /// - with other threads alive in the parent, `f` must take no lock they could have held at
    ///   the fork (stdout's, a `Mutex`, the logger's, rayon's pool): it would stay locked in
    ///   the child forever. Such a hang is not undefined behaviour, but it never ends.
    pub unsafe fn fork<F: FnOnce()>(f: F) -> Result<Process> {
        chunk::install_panic_hook();
        let outbox = outbox()?;
        let target = outbox
            .try_clone()
            .map_err(|e| Error::io("could not fork", e))?;
        let run = move || {
            let outcome = panic::catch_unwind(AssertUnwindSafe(f));
            if let Err(payload) = outcome {
                leave(&target, Err(chunk::panic_message(&*payload)))
            }
        };
        // SAFETY: the caller upholds `fork`'s contract for `f`; the rest of `run` writes a
        // memfd of our own and leaves through `_exit`.
        let child =
            unsafe { lifecycle::fork_here(run) }.map_err(|e| Error::io("could not fork", e))?;
        Ok(Process::new(child, outbox))
    }

    /// Ends the calling process at once with exit code `code`: no destructors, no atexit
    /// handlers, no flush of stdio buffers. This is how a forked child should stop early:
    /// `std::process::exit` flushes stdout, whose lock another thread of the parent may have
    /// held at the fork (the child then hangs), and writes the parent's buffered output twice.
    ///
    /// ```
    /// let child = shmpar::Process::start(|_: ()| -> () { shmpar::Process::exit(3) }, ())?;
    /// assert_eq!(child.join()?, shmpar::Exit::Exited(3));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn exit(code: i32) -> ! {
        sys::exit_now(code)
    }
}

impl<R> Process<R> {
    fn new(child: Child, outbox: File) -> Process<R> {
        Process {
            child,
            exit: None,
            outbox,
            value: None,
            marker: PhantomData,
        }
    }

    /// The child's process id.
    ///
    /// ```
    /// let child = shmpar::Process::start(|_: ()| {}, ())?;
    /// assert!(child.pid() > 0);
    /// # child.join()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn pid(&self) -> u32 {
        self.child.pid() as u32
    }

    /// Waits for the child to end and says how it ended.
    ///
    /// ```
    /// let child = shmpar::Process::start(|_: ()| -> () { std::process::abort() }, ())?;
    /// assert_eq!(child.join()?, shmpar::Exit::Signaled(6));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn join(mut self) -> Result<Exit> {
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> Result<Exit> {
        if let Some(exit) = self.exit.clone() {
            return Ok(exit);
        }
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io("could not wait for the child", e))?;
        Ok(self.record(status))
    }

    /// Waits at most `timeout`; `None` if the child still runs.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut child = shmpar::Process::start(|_: ()| std::thread::sleep(Duration::from_secs(10)), ())?;
    /// assert_eq!(child.join_timeout(Duration::from_millis(10))?, None);
    /// child.kill()?;
    /// assert_eq!(child.join_timeout(Duration::from_secs(5))?, Some(shmpar::Exit::Signaled(9)));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<Exit>> {
        if let Some(exit) = self.exit.clone() {
            return Ok(Some(exit));
        }
        // A timeout too long to add (`Duration::MAX`, "for ever") is a plain join.
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return self.wait_exit().map(Some);
        };
        let mut nap = Duration::from_micros(50);
        loop {
            match self.child.try_wait() {
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

    /// Sends SIGKILL to the child. No effect, and no error, once it has ended (joined or not);
    /// [`join`](Self::join) then says how it really ended.
    ///
    /// ```
    /// let mut child = shmpar::Process::start(|_: ()| -> () { loop { std::hint::spin_loop() } }, ())?;
    /// child.kill()?;
    /// assert_eq!(child.join()?, shmpar::Exit::Signaled(9));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn kill(&mut self) -> Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        self.child
            .kill()
            .map_err(|e| Error::io("could not kill the child", e))
    }

    /// Asks the child to stop with SIGTERM (Python's `terminate`): a child that does not
    /// handle it ends as [`Exit::Signaled(15)`](Exit::Signaled). No effect, and no error, once it
    /// has ended.
    ///
    /// ```
    /// let mut child = shmpar::Process::start(|_: ()| std::thread::sleep(std::time::Duration::from_secs(30)), ())?;
    /// child.terminate()?;
    /// assert_eq!(child.join()?, shmpar::Exit::Signaled(15));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn terminate(&mut self) -> Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        self.child
            .signal(sys::SIGTERM)
            .map_err(|e| Error::io("could not signal the child", e))
    }

    /// True while the child runs (Python's `is_alive`); once it has ended, its exit is kept
    /// for [`join`](Self::join).
    ///
    /// ```
    /// let mut child = shmpar::Process::start(|_: ()| {}, ())?;
    /// while child.is_alive()? {
    ///     std::thread::sleep(std::time::Duration::from_millis(1));
    /// }
    /// assert_eq!(child.join()?, shmpar::Exit::Ok);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn is_alive(&mut self) -> Result<bool> {
        Ok(self.join_timeout(Duration::ZERO)?.is_none())
    }

    fn record(&mut self, status: ExitStatus) -> Exit {
        // What the child left in its outbox (it wrote it before it exited).
        let mut left = Vec::new();
        let _ = std::io::Read::read_to_end(&mut (&self.outbox), &mut left);
        let exit = match (status, left.split_first()) {
            (ExitStatus::Exited(PANIC_EXIT), Some((&PANICKED, msg))) => {
                Exit::Panicked(String::from_utf8_lossy(msg).into_owned())
            }
            // The function returned and its whole result is here, whatever came after (a
            // SIGKILL on the way out, or a fork server that died before it could tell).
            (_, Some((&RETURNED, value))) => {
                self.value = Some(value.to_vec());
                Exit::Ok
            }
            (ExitStatus::Exited(0), _) => Exit::Ok,
            (ExitStatus::Exited(code), _) => Exit::Exited(code),
            (ExitStatus::Signaled(sig), _) => Exit::Signaled(sig),
        };
        self.exit = Some(exit.clone());
        exit
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        if self.exit.is_none() {
            // Not joined: kill and reap it. Errors mean it is already gone; nothing to report.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Exit {
    /// `Ok(())` for [`Exit::Ok`], else an error: `WorkerPanicked` with the message, or
    /// `WorkerDied` with the code or signal.
    ///
    /// ```
    /// let child = shmpar::Process::start(|_: ()| {}, ())?;
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
