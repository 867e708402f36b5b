//! The crate's one error type.

use std::fmt;
use std::io;

/// What went wrong, for callers that want to react to it.
///
/// ```
/// use shmpar::{ErrorKind, Pool};
///
/// let err = Pool::new(0).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument was out of range: zero workers, a shape whose size overflows, arrays of
    /// different lengths, parameters too large to pass to the workers.
    InvalidInput,
    /// This platform has no implementation (shmpar needs Linux).
    Unsupported,
    /// The operating system refused a call (see [`std::error::Error::source`]).
    Io,
    /// The user's function panicked in a worker; the message and the chunk are in the error.
    WorkerPanicked,
    /// A worker process died (killed by a signal, aborted, or exited) while it ran a chunk.
    /// A fresh worker has taken its place.
    WorkerDied,
    /// A call took longer than the pool's `call_timeout`; the workers still running were killed
    /// and replaced.
    TimedOut,
    /// A chunk's result did not fit in the worker's result buffer
    /// (see [`PoolBuilder::result_bytes`](crate::PoolBuilder::result_bytes)).
    ResultTooLarge,
    /// A result could not be decoded in the parent (the type's `Serialize` and `Deserialize`
    /// disagree).
    Decode,
    /// A lock's previous holder died while holding it; the data may be half-updated.
    OwnerDied,
    /// A lock whose holder died was never marked consistent: it can never be locked again.
    Unrecoverable,
    /// A lock's holder panicked while holding it (std's poisoning); the data may be
    /// half-updated until someone marks it consistent.
    Poisoned,
    /// A non-blocking attempt found the resource busy (`try_lock`, `try_acquire`, a full or
    /// empty queue).
    WouldBlock,
    /// The queue or pipe was closed: no more messages will come.
    Closed,
    /// The pool was shut down (dropped or terminated) before this task or call ran.
    Cancelled,
    /// A [`Barrier`](crate::Barrier) was aborted or reset while this party waited, or is
    /// broken (after [`abort`](crate::Barrier::abort), until
    /// [`reset`](crate::Barrier::reset)).
    Broken,
    /// A bounded container has no room left for this entry (a
    /// [`SharedMap`](crate::SharedMap) at its entry or byte limit).
    Full,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Unsupported => "unsupported on this platform",
            ErrorKind::Io => "operating system error",
            ErrorKind::WorkerPanicked => "worker panicked",
            ErrorKind::WorkerDied => "worker process died",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::ResultTooLarge => "result too large",
            ErrorKind::Decode => "result could not be decoded",
            ErrorKind::OwnerDied => "the lock's previous holder died holding it",
            ErrorKind::Unrecoverable => "the lock is unrecoverable",
            ErrorKind::Poisoned => "a holder of the lock panicked while holding it",
            ErrorKind::WouldBlock => "would block",
            ErrorKind::Closed => "closed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Full => "full",
            ErrorKind::Broken => "the barrier is broken",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The error returned by every fallible shmpar call.
///
/// It carries a [`kind`](Error::kind) to match on, a message that says what happened, and for
/// faults in workers the chunk, the worker's pid and the signal that ended it.
///
/// ```
/// use shmpar::{ErrorKind, Pool, SharedArray};
/// use ndarray::Ix1;
///
/// # fn main() -> shmpar::Result<()> {
/// let pool = Pool::new(2)?;
/// let data = SharedArray::<f64, Ix1>::zeros(1000)?;
/// let err = pool
///     .par_reduce(&data, |_chunk| -> f64 { panic!("bad chunk") }, |a, b| a + b)
///     .unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::WorkerPanicked);
/// assert_eq!(err.chunk(), Some(0));
/// assert!(err.to_string().contains("bad chunk"));
/// # Ok(())
/// # }
/// ```
pub struct Error(Box<Inner>);

/// An error's contents, boxed so that a `Result<T, Error>` is about as small as `T` (a
/// `map` of many small results keeps one per task).
struct Inner {
    kind: ErrorKind,
    message: String,
    chunk: Option<usize>,
    task: Option<usize>,
    pid: Option<i32>,
    signal: Option<i32>,
    source: Option<io::Error>,
}

/// `std::result::Result` with shmpar's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Inner {
            kind,
            message: message.into(),
            chunk: None,
            task: None,
            pid: None,
            signal: None,
            source: None,
        }))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// An OS error, with what we were doing when it happened.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        let kind = if source.kind() == io::ErrorKind::Unsupported {
            ErrorKind::Unsupported
        } else {
            ErrorKind::Io
        };
        let mut err = Error::new(kind, context);
        err.0.source = Some(source);
        err
    }

    pub(crate) fn with_chunk(mut self, chunk: usize) -> Self {
        self.0.chunk = Some(chunk);
        self
    }

    pub(crate) fn with_task(mut self, task: usize) -> Self {
        self.0.task = Some(task);
        self
    }

    pub(crate) fn with_pid(mut self, pid: i32) -> Self {
        self.0.pid = Some(pid);
        self
    }

    pub(crate) fn with_signal(mut self, signal: Option<i32>) -> Self {
        self.0.signal = signal;
        self
    }

    /// What kind of failure this is.
    ///
    /// ```
    /// use shmpar::{ErrorKind, SharedArray};
    /// use ndarray::Ix1;
    ///
    /// let err = SharedArray::<f64, Ix1>::zeros(usize::MAX).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidInput);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The index of the chunk that failed, for worker faults.
    ///
    /// ```
    /// # use shmpar::{Pool, SharedArray};
    /// # use ndarray::Ix1;
    /// # let pool = Pool::new(1).unwrap();
    /// # let data = SharedArray::<u8, Ix1>::zeros(10).unwrap();
    /// let err = pool.par_reduce(&data, |_| -> u64 { panic!() }, |a, b| a + b).unwrap_err();
    /// assert_eq!(err.chunk(), Some(0));
    /// ```
    pub fn chunk(&self) -> Option<usize> {
        self.0.chunk
    }

    /// The index of the task (its position in the input) that failed, for `map` and friends.
    ///
    /// ```
    /// let pool = shmpar::Pool::new(1)?;
    /// let out = pool.map(vec![1u32, 0, 2], |x| 10 / x)?;
    /// assert_eq!(out[1].as_ref().unwrap_err().task(), Some(1));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn task(&self) -> Option<usize> {
        self.0.task
    }

    /// The pid of the worker process that failed, for worker faults.
    ///
    /// ```
    /// # use shmpar::{Pool, SharedArray};
    /// # use ndarray::Ix1;
    /// # let pool = Pool::new(1).unwrap();
    /// # let data = SharedArray::<u8, Ix1>::zeros(10).unwrap();
    /// let err = pool.par_reduce(&data, |_| -> u64 { panic!() }, |a, b| a + b).unwrap_err();
    /// assert!(err.pid().is_some());
    /// ```
    pub fn pid(&self) -> Option<i32> {
        self.0.pid
    }

    /// The signal that ended the worker, for [`ErrorKind::WorkerDied`].
    ///
    /// ```
    /// # use shmpar::{Pool, SharedArray};
    /// # use ndarray::Ix1;
    /// # let pool = Pool::new(1).unwrap();
    /// # let data = SharedArray::<u8, Ix1>::zeros(10).unwrap();
    /// let err = pool
    ///     .par_reduce(&data, |_| -> u64 { std::process::abort() }, |a, b| a + b)
    ///     .unwrap_err();
    /// assert_eq!(err.signal(), Some(6)); // SIGABRT
    /// ```
    pub fn signal(&self) -> Option<i32> {
        self.0.signal
    }

    /// The message alone, without the kind or the chunk (for a panic: the panic's message).
    ///
    /// ```
    /// # use shmpar::{Pool, SharedArray};
    /// # use ndarray::Ix1;
    /// # let pool = Pool::new(1).unwrap();
    /// # let data = SharedArray::<u8, Ix1>::zeros(10).unwrap();
    /// let err = pool.par_reduce(&data, |_| -> u64 { panic!("oops") }, |a, b| a + b).unwrap_err();
    /// assert!(err.message().starts_with("oops"));
    /// ```
    pub fn message(&self) -> &str {
        &self.0.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.kind)?;
        if let Some(task) = self.0.task {
            write!(f, " in task {task}")?;
        } else if let Some(chunk) = self.0.chunk {
            write!(f, " in chunk {chunk}")?;
        }
        if let Some(pid) = self.0.pid {
            write!(f, " (worker pid {pid}")?;
            if let Some(sig) = self.0.signal {
                write!(f, ", {}", crate::sys::signal_name(sig))?;
            }
            f.write_str(")")?;
        }
        if !self.0.message.is_empty() {
            write!(f, ": {}", self.0.message)?;
        }
        if let Some(source) = &self.0.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind)
            .field("message", &self.0.message);
        if let Some(chunk) = self.0.chunk {
            d.field("chunk", &chunk);
        }
        if let Some(task) = self.0.task {
            d.field("task", &task);
        }
        if let Some(pid) = self.0.pid {
            d.field("pid", &pid);
        }
        if let Some(signal) = self.0.signal {
            d.field("signal", &signal);
        }
        if let Some(source) = &self.0.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Clone for Error {
    /// A copy; an OS error source is copied as its kind and message.
    fn clone(&self) -> Error {
        Error(Box::new(Inner {
            kind: self.0.kind,
            message: self.0.message.clone(),
            chunk: self.0.chunk,
            task: self.0.task,
            pid: self.0.pid,
            signal: self.0.signal,
            source: (self.0.source)
                .as_ref()
                .map(|e| io::Error::new(e.kind(), e.to_string())),
        }))
    }
}

/// An OS error from your own code (an [`ShmSafe::init_in_place`](crate::ShmSafe::init_in_place)
/// that calls the C library, say): [`ErrorKind::Io`] (or [`ErrorKind::Unsupported`]), with the
/// `io::Error` as its [`source`](std::error::Error::source).
///
/// ```
/// let e = shmpar::Error::from(std::io::Error::from_raw_os_error(22));
/// assert_eq!(e.kind(), shmpar::ErrorKind::Io);
/// assert!(std::error::Error::source(&e).is_some());
/// ```
impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error::io(err.to_string(), err)
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        io::Error::other(err)
    }
}
