//! `PoolBuilder`: the pool's settings, by value, each with a documented default.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::control::MAX_CHUNKS;
use super::worker::{InitCode, InitTrampoline};
use super::{Args, Pool};
use crate::error::{Error, ErrorKind, Result};
use crate::lifecycle::{StartMethod, code};
use crate::shm::handle::Handle;

/// Settings for a [`Pool`]. Every setting has a default; `build` checks them all.
///
/// ```
/// use shmpar::Pool;
///
/// let pool = Pool::builder().workers(2).chunk_bytes(1 << 20).build()?;
/// assert_eq!(pool.workers(), 2);
/// # Ok::<(), shmpar::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    workers: Option<usize>,
    spin: Duration,
    caller_runs_chunks: bool,
    chunk_bytes: usize,
    max_chunks: usize,
    result_bytes: usize,
    call_timeout: Option<Duration>,
    init: Option<Init>,
    max_tasks_per_worker: Option<u64>,
    start_method: StartMethod,
    start_timeout: Duration,
    pin_workers: bool,
}

/// A worker initializer as the builder holds it: the trampoline, the user's function, and the
/// serialised arguments (or why they could not be serialised).
#[derive(Debug, Clone)]
struct Init {
    trampoline: InitTrampoline,
    user_fn: usize,
    args: std::result::Result<Vec<u8>, String>,
    /// The shared objects the arguments name, (id, length, fingerprint) and a descriptor of
    /// our own for each: every worker, replacements included, gets them at its start, even if
    /// the user drops the objects meanwhile.
    handles: Arc<Vec<(Handle, OwnedFd)>>,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder::new()
    }
}

impl PoolBuilder {
    /// The default settings (see each method).
    ///
    /// ```
    /// let pool = shmpar::PoolBuilder::new().build()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn new() -> PoolBuilder {
        PoolBuilder {
            workers: None,
            spin: Duration::from_micros(50),
            caller_runs_chunks: false,
            chunk_bytes: 256 * 1024,
            max_chunks: 1024,
            result_bytes: 16 << 20,
            call_timeout: None,
            init: None,
            max_tasks_per_worker: None,
            start_method: StartMethod::default(),
            start_timeout: Duration::from_secs(60),
            pin_workers: false,
        }
    }

    /// Number of worker processes. Default: `std::thread::available_parallelism()`, which
    /// respects CPU affinity and cgroup quotas. Zero is an error at `build`.
    ///
    /// ```
    /// let pool = shmpar::Pool::builder().workers(3).build()?;
    /// assert_eq!(pool.workers(), 3);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// How long an idle worker, and a waiting caller, spin (yielding the CPU often) before they
    /// sleep on a futex. Spinning makes back-to-back calls cost about a microsecond instead of
    /// a futex wake-up (5-45 µs); zero saves CPU between rare calls. Default: 50 µs.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = shmpar::Pool::builder().spin(Duration::ZERO).build()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Whether the calling thread also runs chunks while it waits. Faster on small inputs, but
    /// a chunk that crashes then crashes the caller. Default: false (every chunk runs in a
    /// worker, so nothing a user function does can kill the caller).
    ///
    /// ```
    /// let pool = shmpar::Pool::builder().caller_runs_chunks(true).build()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn caller_runs_chunks(mut self, yes: bool) -> Self {
        self.caller_runs_chunks = yes;
        self
    }

    /// Target size of one chunk in bytes (whole rows along axis 0; at least one row). The chunk
    /// grid depends only on the array's shape and on `chunk_bytes` and `max_chunks`, never on
    /// the number of workers, so results are bitwise identical for any pool size.
    /// Default: 256 KiB. Zero is an error at `build`.
    ///
    /// ```
    /// let pool = shmpar::Pool::builder().chunk_bytes(1 << 20).build()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes;
        self
    }

    /// The most chunks one call is split into; above it chunks grow. Default: 1024.
    ///
    /// ```
    /// let pool = shmpar::Pool::builder().max_chunks(64).build()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn max_chunks(mut self, n: usize) -> Self {
        self.max_chunks = n;
        self
    }

    /// Room for one call's serialised results in each worker (shared memory, touched only as
    /// far as used). A larger total fails that call with
    /// [`ErrorKind::ResultTooLarge`](crate::ErrorKind::ResultTooLarge). Default: 16 MiB.
    ///
    /// ```
    /// let pool = shmpar::Pool::builder().result_bytes(64 << 20).build()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn result_bytes(mut self, bytes: usize) -> Self {
        self.result_bytes = bytes;
        self
    }

    /// The longest a call may run. Past it, the workers still running its chunks are killed
    /// and replaced, and the call fails with [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut).
    /// Default: none.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = shmpar::Pool::builder().call_timeout(Duration::from_secs(60)).build()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// A function each worker runs once, with its index, before its first chunk (and again in
    /// a replacement worker). Default: none.
    ///
    /// `build` waits until every worker has run it. If it panics, `build` fails with
    /// [`ErrorKind::WorkerPanicked`](crate::ErrorKind::WorkerPanicked) and its message; if a
    /// replacement's initializer keeps failing later, the pool stops starting workers after a
    /// few tries (with a growing pause between them) and its calls fail with that error.
    ///
    /// ```
    /// let pool = shmpar::Pool::builder().worker_init(|_index| { /* set up a C library */ }).build()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn worker_init(mut self, init: fn(usize)) -> Self {
        self.init = Some(Init {
            trampoline: init_plain,
            user_fn: init as usize,
            args: Ok(Vec::new()),
            handles: Arc::default(),
        });
        self
    }

    /// Like [`worker_init`](Self::worker_init), with arguments (Python's `initializer` and
    /// `initargs`): `args` is serialised once and each worker gets its own copy. A worker
    /// started by the fork server has none of the parent's state, so this is how it learns a
    /// path, a seed or a setting.
    ///
    /// ```
    /// let pool = shmpar::Pool::builder()
    ///     .workers(2)
    ///     .worker_init_with(String::from("model.bin"), |path, index| {
    ///         assert_eq!(path, "model.bin");
    ///         let _ = index; // load `path` into a static of this worker, say
    ///     })
    ///     .build()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn worker_init_with<A>(mut self, args: A, init: fn(&A, usize)) -> Self
    where
        A: Serialize + DeserializeOwned + 'static,
    {
        let encoded = Args::encode(&args, "the worker_init arguments").and_then(|a| {
            let handles = (a.handles.iter())
                .map(|h| {
                    let fd = h.fd().try_clone_to_owned().map_err(|e| {
                        Error::io("could not keep a shared object for worker_init", e)
                    })?;
                    Ok((h.handle(), fd))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((a.bytes, handles))
        });
        let (args, handles) = match encoded {
            Ok((bytes, handles)) => (Ok(bytes), handles),
            Err(e) => (Err(e.to_string()), Vec::new()),
        };
        self.init = Some(Init {
            trampoline: init_with::<A>,
            user_fn: init as usize,
            args,
            handles: Arc::new(handles),
        });
        self
    }

    /// How workers are started: [`StartMethod::ForkServer`] (the default) or
    /// [`StartMethod::Fork`]; see [`StartMethod`] for what each means for the code in tasks.
    ///
    /// ```
    /// use shmpar::{Pool, StartMethod};
    /// let pool = Pool::builder().workers(1).start_method(StartMethod::Fork).build()?;
    /// assert_eq!(pool.map(1..4u32, |x| x * 2)?.into_iter().collect::<Result<Vec<_>, _>>()?, [2, 4, 6]);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = method;
        self
    }

    /// How long `build` waits for each worker to start and run its initializer before it fails
    /// with [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut) (an initializer that hangs, a
    /// worker stopped with SIGSTOP). Default: 60 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = shmpar::Pool::builder().start_timeout(Duration::from_secs(5)).build()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn start_timeout(mut self, limit: Duration) -> Self {
        self.start_timeout = limit;
        self
    }

    pub(crate) fn start_timeout_setting(&self) -> Duration {
        self.start_timeout
    }

    /// Whether each worker stays on one CPU: worker `i` on the `i`-th CPU this process may use
    /// (counting round when there are more workers than CPUs). A pinned worker keeps its
    /// caches, and on a machine with several memory nodes its node, from call to call (each
    /// worker gets the same chunks call after call, see [`Pool`]); the scheduler can no longer
    /// move it off a CPU that something else needs, so pin only when the workers have the
    /// machine (or their CPUs) to themselves. Default: false.
    ///
    /// The CPUs are those of the building thread's affinity mask when the pool is built; a worker
    /// whose CPU cannot be set (a mask changed since) runs unpinned.
    ///
    /// ```
    /// let pool = shmpar::Pool::builder().workers(2).pin_workers(true).build()?;
    /// assert_eq!(pool.workers(), 2);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn pin_workers(mut self, yes: bool) -> Self {
        self.pin_workers = yes;
        self
    }

    pub(crate) fn pin_workers_setting(&self) -> bool {
        self.pin_workers
    }

    /// The start method setting (see [`start_method`](Self::start_method)).
    ///
    /// ```
    /// assert_eq!(shmpar::PoolBuilder::new().start_method_setting(), shmpar::StartMethod::ForkServer);
    /// ```
    pub fn start_method_setting(&self) -> StartMethod {
        self.start_method
    }

    /// Replace each worker after it has run this many chunks (Python's `maxtasksperchild`):
    /// bounds what a leaky C library can accumulate. Default: never. Zero is an error at
    /// `build`.
    ///
    /// ```
    /// let pool = shmpar::Pool::builder().max_tasks_per_worker(1000).build()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn max_tasks_per_worker(mut self, n: u64) -> Self {
        self.max_tasks_per_worker = Some(n);
        self
    }

    /// Starts the workers.
    ///
    /// Fails with [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a zero
    /// setting, [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) off Linux or inside a
    /// worker, and [`ErrorKind::Io`](crate::ErrorKind::Io) if the system refuses a fork or memory.
    ///
    /// ```
    /// use shmpar::{ErrorKind, Pool};
    /// assert_eq!(Pool::builder().chunk_bytes(0).build().unwrap_err().kind(), ErrorKind::InvalidInput);
    /// ```
    pub fn build(self) -> Result<Pool> {
        if self.chunk_bytes == 0 {
            return Err(Error::invalid("chunk_bytes must be at least 1"));
        }
        if self.max_chunks == 0 || self.max_chunks > MAX_CHUNKS as usize {
            return Err(Error::invalid(format!(
                "max_chunks must be between 1 and {MAX_CHUNKS}, not {}",
                self.max_chunks
            )));
        }
        if self.max_tasks_per_worker == Some(0) {
            return Err(Error::invalid("max_tasks_per_worker must be at least 1"));
        }
        if self.result_bytes < 64 {
            return Err(Error::invalid("result_bytes must be at least 64"));
        }
        if self.result_bytes > u32::MAX as usize {
            // Task results are framed with a 32-bit length.
            return Err(Error::invalid("result_bytes must be at most 4 GiB - 1"));
        }
        self.init_setting()?;
        if crate::lifecycle::in_child() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "a pool cannot be created inside a worker or a forked child",
            ));
        }
        Pool::start(self)
    }

    /// The number of workers this builder will start.
    pub(crate) fn resolved_workers(&self) -> Result<usize> {
        match self.workers {
            Some(0) => Err(Error::invalid("a pool needs at least one worker")),
            Some(n) if n > 4096 => Err(Error::invalid(format!("{n} workers is more than 4096"))),
            Some(n) => Ok(n),
            None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        }
    }

    /// The spin setting.
    pub(crate) fn spin_setting(&self) -> Duration {
        self.spin
    }

    pub(crate) fn caller_runs_setting(&self) -> bool {
        self.caller_runs_chunks
    }

    /// The chunk size setting (see [`chunk_bytes`](Self::chunk_bytes)).
    ///
    /// ```
    /// assert_eq!(shmpar::PoolBuilder::new().chunk_bytes_setting(), 256 * 1024);
    /// ```
    pub fn chunk_bytes_setting(&self) -> usize {
        self.chunk_bytes
    }

    /// The chunk count limit (see [`max_chunks`](Self::max_chunks)).
    ///
    /// ```
    /// assert_eq!(shmpar::PoolBuilder::new().max_chunks_setting(), 1024);
    /// ```
    pub fn max_chunks_setting(&self) -> usize {
        self.max_chunks
    }

    pub(crate) fn result_bytes_setting(&self) -> usize {
        self.result_bytes
    }

    pub(crate) fn call_timeout_setting(&self) -> Option<Duration> {
        self.call_timeout
    }

    /// The initializer in the form the workers of this start method take.
    pub(crate) fn init_setting(&self) -> Result<Option<InitCode>> {
        let Some(init) = &self.init else {
            return Ok(None);
        };
        let args = init.args.clone().map_err(Error::invalid)?;
        Ok(Some(InitCode {
            trampoline: code::offset_for(self.start_method, init.trampoline as usize)?,
            user_fn: code::offset_for(self.start_method, init.user_fn)?,
            args,
            handles: init.handles.iter().map(|(h, _)| *h).collect(),
        }))
    }

    /// The descriptors of the shared objects the initializer's arguments name, in the order
    /// of [`InitCode::handles`].
    pub(crate) fn init_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.init
            .iter()
            .flat_map(|i| i.handles.iter().map(|(_, fd)| fd.as_fd()))
            .collect()
    }

    pub(crate) fn max_tasks_setting(&self) -> Option<u64> {
        self.max_tasks_per_worker
    }
}

/// See [`InitTrampoline`]: `user_fn` is a `fn(usize)`.
unsafe fn init_plain(user_fn: usize, _args: &[u8], index: usize) {
    // SAFETY: `worker_init` encoded a `fn(usize)` with this trampoline.
    let f: fn(usize) = unsafe { std::mem::transmute(user_fn) };
    f(index)
}

/// See [`InitTrampoline`]: `user_fn` is a `fn(&A, usize)`, `args` a serialised `A`.
unsafe fn init_with<A: DeserializeOwned>(user_fn: usize, args: &[u8], index: usize) {
    // SAFETY: `worker_init_with` encoded a `fn(&A, usize)` with this trampoline.
    let f: fn(&A, usize) = unsafe { std::mem::transmute(user_fn) };
    crate::shm::handle::clear_reason();
    let args: A = postcard::from_bytes(args).unwrap_or_else(|e| {
        panic!(
            "the worker_init arguments could not be read back: {}",
            crate::shm::handle::explain(e)
        )
    });
    f(&args, index)
}
