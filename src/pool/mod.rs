//! The pool of persistent forked workers.

mod builder;
mod call;
pub(crate) mod chunk;
pub(crate) mod claim;
pub(crate) mod control;
mod mail;
mod worker;

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use crate::lifecycle::Origin;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use builder::PoolBuilder;
pub(crate) use call::{Args, CallSpec, ChunkReport, ChunkState, Finished, Grid, Joining, Stream};
use control::{Control, IDLE, INIT_FAILED, Layout, READY, STARTING, pack};
use mail::Mail;
use worker::{Boot, WorkerStart};

use crate::error::{Error, ErrorKind, Result};
use crate::lifecycle::{self, Child, StartMethod};
use crate::shm::handle::{Handle, Outgoing};
use crate::shm::{Region, RegionInfo, RegionWatcher, registry};
use crate::sys;

/// Workers that die before they are ready, in a row, after which the pool stops starting them.
const MAX_START_FAILURES: u32 = 5;

/// A pool of persistent worker processes, forked once and kept, that run the chunks of
/// [`par_reduce`](Pool::par_reduce) and friends over [`SharedArray`](crate::SharedArray)s.
///
/// ```
/// use ndarray::Ix1;
/// use shmpar::{Pool, SharedArray};
///
/// # fn main() -> shmpar::Result<()> {
/// let pool = Pool::new(2)?;
/// let mut data = SharedArray::<f64, Ix1>::zeros(1_000_000)?;
/// data.view_mut().fill(0.5);
/// let sum = pool.par_reduce(&data, |chunk| chunk.sum(), |a, b| a + b)?;
/// assert_eq!(sum, 500_000.0);
/// # Ok(())
/// # }
/// ```
///
/// # Faults
/// A panic in a worker comes back as [`ErrorKind::WorkerPanicked`] with the message and the
/// chunk; a worker that aborts, segfaults or is killed comes back as [`ErrorKind::WorkerDied`]
/// with its pid and signal, and a fresh worker takes its place. The parent watches its workers
/// while it waits, so no call hangs when one dies, and the pool serves the next call.
///
/// A failed chunk stops the chunks after it from starting; the chunks before it still run, so
/// the error is the lowest failing chunk whatever the timing (and a failure in the last chunk
/// comes back only once the chunks before it have run).
///
/// # Lifetime of the workers
/// Dropping the pool stops and reaps every worker. If the parent process dies, even by SIGKILL,
/// the kernel kills the fork server and the workers (`PR_SET_PDEATHSIG`, set from a thread
/// that lives as long as the process), and a sleeping worker also checks its parent every
/// 100 ms.
///
/// # What runs in a worker
/// By default ([`StartMethod::ForkServer`](crate::StartMethod::ForkServer)) a worker is forked
/// by the fork server, a clean single-threaded copy of the program: a task may print, log, use
/// rayon or take any lock, whatever the caller's other threads hold. It sees none of the
/// caller's memory but the shared arrays of the call and what travels in the arguments. With
/// [`StartMethod::Fork`](crate::StartMethod::Fork), workers are forked from the caller
/// itself, with that method's rules.
///
/// # Which worker runs which chunk
/// Chunk `i` of every call goes first to worker `i mod workers`; with
/// [`PoolBuilder::caller_runs_chunks`] the caller is one more runner, and chunk `i` goes first
/// to runner `i mod (workers + 1)`, the caller being the last. A runner runs its own chunks,
/// then takes those of one that has not got to them yet. Repeated calls over the same array
/// therefore find each chunk in the cache of the worker that read it last time (and, on a
/// machine with several memory nodes, pages that a
/// [`par_for_each_mut`](Pool::par_for_each_mut) first wrote there on that worker's node),
/// while a slow or busy worker never holds a call up. [`PoolBuilder::pin_workers`] keeps each
/// worker on one CPU as well. Which worker ran a chunk never changes a result: the partials are
/// combined in chunk order.
pub struct Pool {
    shared: Arc<PoolShared>,
}

pub(crate) struct PoolShared {
    config: PoolBuilder,
    pub(crate) workers_wanted: usize,
    /// The CPUs workers are pinned to, worker `i` to `pinned[i % len]` (empty: not pinned).
    pinned: Vec<usize>,
    control: Control,
    arenas: Vec<Region>,
    calls: Mutex<CallState>,
    /// Tasks submitted with `apply_async`, for the dispatcher (see `tasks::background`).
    pub(crate) background: Mutex<crate::tasks::BackgroundQueue>,
    pub(crate) background_ready: parking_lot::Condvar,
    /// Bumped (SeqCst) each time tasks are queued for the dispatcher, which looks at it before
    /// it sleeps inside a call (tasks may join the running call).
    pub(crate) submitted: std::sync::atomic::AtomicU64,
    /// The process that built the pool: the only one that may call it or shut it down.
    pub(crate) creator: Origin,
    /// Set when the pool starts to shut down: a running call takes no more tasks, and a call
    /// that takes the call lock after it is refused (`Cancelled`), so that what is still
    /// queued is cancelled, not run.
    closing: std::sync::atomic::AtomicBool,
    /// `apply_async` tasks submitted and not finished (see [`Pool::join`]).
    pub(crate) pending_async: Mutex<usize>,
    pub(crate) async_done: parking_lot::Condvar,
    /// The thread that holds `calls` (see `call::CallLock`), 0 for none.
    calls_owner: std::sync::atomic::AtomicUsize,
    workers: Mutex<Vec<Worker>>,
    /// The serialised inputs of task-style calls (`map` and friends), reused between calls;
    /// held from filling it to the end of the call.
    pub(crate) task_input: Mutex<Option<Region>>,
    /// Workers that failed to start, in a row, and the last failure: a replacement storm ends
    /// with an error instead of forking forever.
    start_failures: Mutex<StartFailures>,
    /// Owns the block `control` points into; kept last so that it is unmapped after
    /// everything that uses it.
    control_region: Region,
}

#[derive(Default)]
struct StartFailures {
    in_a_row: u32,
    last: Option<(ErrorKind, String)>,
}

pub(crate) struct CallState {
    seq: u32,
    caller_arena: Vec<u8>,
}

/// The parent's record of one worker process.
struct Worker {
    child: Child,
    alive: bool,
    /// The first region id this worker did not inherit at fork.
    fork_seq: u64,
    sock: OwnedFd,
    /// Regions sent to it as descriptors.
    received: HashSet<u64>,
    /// Shared objects whose descriptors it holds for handles (an array may be both).
    received_handles: HashSet<u64>,
    /// Its logger writes where this process's does (inherited, or sent as mail).
    log_synced: bool,
    /// Mail not yet written because the socket was full.
    queue: VecDeque<(Mail, Option<OwnedFd>)>,
    mail_seq: u64,
}

impl Worker {
    fn has(&self, id: u64) -> bool {
        id < self.fork_seq || self.received.contains(&id)
    }

    /// Queues a message; the caller flushes.
    fn post(&mut self, mail: Mail, fd: Option<OwnedFd>) {
        self.queue.push_back((mail, fd));
    }

    /// Writes queued mail until the socket is full; true when the queue is empty.
    fn flush(&mut self) -> bool {
        while let Some((mail, fd)) = self.queue.front() {
            match sys::send_message(
                self.sock.as_fd(),
                &mail.encode(),
                fd.as_ref().map(|f| f.as_fd()),
            ) {
                Ok(true) => {
                    self.queue.pop_front();
                    self.mail_seq += 1;
                }
                Ok(false) => return false,
                // The worker is gone (EPIPE/ECONNRESET): its mail no longer matters.
                Err(_) => {
                    self.queue.clear();
                    return true;
                }
            }
        }
        true
    }
}

impl Pool {
    /// A pool of `workers` worker processes with default settings.
    ///
    /// Fails with [`ErrorKind::InvalidInput`] for zero workers.
    ///
    /// ```
    /// let pool = shmpar::Pool::new(2)?;
    /// assert_eq!(pool.workers(), 2);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn new(workers: usize) -> Result<Pool> {
        PoolBuilder::new().workers(workers).build()
    }

    /// A builder to choose the number of workers and the pool's other settings.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = shmpar::Pool::builder()
    ///     .workers(2)
    ///     .spin(Duration::from_micros(20))
    ///     .caller_runs_chunks(true)
    ///     .build()?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    /// The number of worker processes.
    ///
    /// ```
    /// let pool = shmpar::Pool::new(3)?;
    /// assert_eq!(pool.workers(), 3);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn workers(&self) -> usize {
        self.shared.workers_wanted
    }

    /// The process ids of the live workers, for monitoring or setting limits (`prlimit`,
    /// cgroups). A worker that died and was replaced has a new pid.
    ///
    /// ```
    /// let pool = shmpar::Pool::new(2)?;
    /// assert_eq!(pool.worker_pids().len(), 2);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        if !self.shared.owned_here() {
            // A forked copy: the workers are the owner's, and its lock may have been copied
            // held.
            return Vec::new();
        }
        self.shared
            .workers
            .lock()
            .iter()
            .filter(|w| w.alive)
            .map(|w| w.child.pid() as u32)
            .collect()
    }

    /// The settings this pool was built with.
    ///
    /// ```
    /// let pool = shmpar::Pool::new(1)?;
    /// assert_eq!(pool.config().chunk_bytes_setting(), 256 * 1024);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn config(&self) -> &PoolBuilder {
        &self.shared.config
    }

    /// The process-wide default pool, made on first use with default settings
    /// (one worker per available CPU). It lives until the process ends.
    ///
    /// ```
    /// let pool = shmpar::Pool::global()?;
    /// assert!(pool.workers() >= 1);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn global() -> Result<&'static Pool> {
        if crate::lifecycle::in_child() {
            // The parent's pool is not this process's to use (its workers are the parent's
            // children), and its lazy initialisation may have been copied half-done.
            return Err(Error::new(
                ErrorKind::Unsupported,
                "the default pool cannot be used inside a worker or a forked child",
            ));
        }
        // Whose default pool it is, in atomics that a fork copies whole (the `OnceLock` below
        // may be copied mid-initialisation, and waiting on it in the copy never ends). A copy
        // made by the user's own fork, after this process claimed the pool, is refused before
        // it looks at the lock.
        static OWNER_PID: AtomicI32 = AtomicI32::new(0);
        static OWNER_GENERATION: AtomicU32 = AtomicU32::new(u32::MAX);
        // ORDERING: Acquire, paired with the Release of the claim below: the generation
        // stored before it is seen with it.
        let owner = OWNER_PID.load(Ordering::Acquire);
        if owner == 0 {
            let me = Origin::here();
            // ORDERING: published by the Release CAS that follows. Two threads of this
            // process that race here may store different generations (`None` while another
            // registers the fork handler, `Some` after): either tells this process from a
            // copy (`Origin::is_here` falls back to the pid).
            OWNER_GENERATION.store(me.generation.unwrap_or(u32::MAX), Ordering::Relaxed);
            let _ = OWNER_PID.compare_exchange(0, me.pid, Ordering::Release, Ordering::Relaxed);
        } else {
            let creator = Origin {
                pid: owner,
                // ORDERING: see above.
                generation: match OWNER_GENERATION.load(Ordering::Relaxed) {
                    u32::MAX => None,
                    g => Some(g),
                },
            };
            if !creator.is_here() {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "the default pool belongs to the process that made it; a forked copy \
                     cannot use it (build a pool in this process)",
                ));
            }
        }
        static GLOBAL: OnceLock<std::result::Result<Pool, (ErrorKind, String)>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                PoolBuilder::new()
                    .build()
                    .map_err(|e| (e.kind(), e.to_string()))
            })
            .as_ref()
            .map_err(|(kind, msg)| {
                Error::new(*kind, format!("the default pool could not start: {msg}"))
            })
    }

    pub(crate) fn shared(&self) -> &Arc<PoolShared> {
        &self.shared
    }

    fn start(config: PoolBuilder) -> Result<Pool> {
        let workers = config.resolved_workers()?;
        // A stripe of chunks per worker, and one for a caller that helps (see `claim`).
        let stripes = workers + usize::from(config.caller_runs_setting());
        let layout = Layout::new(workers, stripes, config.max_chunks_setting())
            .ok_or_else(|| Error::invalid("the pool's control block would not fit in memory"))?;
        let control_region = Region::new("shmpar-control", layout.total)?;
        // SAFETY: the region is fresh (zero-filled), page-aligned, `layout.total` bytes long, and
        // is kept in `PoolShared` after every user of `control`.
        let control = unsafe { Control::new(control_region.as_ptr(), layout) };
        let pinned = if config.pin_workers_setting() {
            sys::allowed_cpus().map_err(|e| Error::io("could not read the CPUs to pin to", e))?
        } else {
            Vec::new()
        };
        let arenas = (0..workers)
            .map(|_| Region::new("shmpar-results", config.result_bytes_setting()))
            .collect::<Result<Vec<_>>>()?;
        chunk::install_panic_hook();
        let shared = Arc::new(PoolShared {
            config,
            workers_wanted: workers,
            pinned,
            control,
            arenas,
            calls_owner: std::sync::atomic::AtomicUsize::new(0),
            creator: Origin::here(),
            pending_async: Mutex::new(0),
            background: Mutex::new(Default::default()),
            background_ready: parking_lot::Condvar::new(),
            submitted: std::sync::atomic::AtomicU64::new(0),
            closing: std::sync::atomic::AtomicBool::new(false),
            async_done: parking_lot::Condvar::new(),
            calls: Mutex::new(CallState {
                seq: 0,
                caller_arena: Vec::new(),
            }),
            workers: Mutex::new(Vec::with_capacity(workers)),
            task_input: Mutex::new(None),
            start_failures: Mutex::new(StartFailures::default()),
            control_region,
        });
        let weak: std::sync::Weak<dyn RegionWatcher> = Arc::downgrade(&shared) as _;
        registry().watch(weak);
        let pool = Pool { shared };
        for i in 0..workers {
            // On failure `pool` drops here and reaps the workers already started.
            pool.shared.spawn(&pool.shared, i, Joining::NONE)?;
        }
        for i in 0..workers {
            pool.shared.wait_started(i)?;
        }
        Ok(pool)
    }
}

impl PoolShared {
    /// True in the process that built the pool; false in a forked copy, which must not call
    /// it, shut it down or read its results.
    #[inline]
    pub(crate) fn owned_here(&self) -> bool {
        self.creator.is_here()
    }

    /// The settings the pool was built with.
    pub(crate) fn config(&self) -> &PoolBuilder {
        &self.config
    }

    /// Starts worker `index` (a first start, or a replacement in the same slot), by the pool's
    /// start method. It is registered (alive) when this returns; it may still be running its
    /// initializer (see [`wait_started`](Self::wait_started)). `regions`: those of a call in
    /// progress, which a replacement joins at once (a worker forked directly inherits them).
    fn spawn(&self, this: &Arc<PoolShared>, index: usize, call: Joining<'_>) -> Result<()> {
        let regions = call.regions;
        // ORDERING: Relaxed: set once, before the shutdown's wake-up.
        if self.control.header().wake.shutdown.load(Ordering::Relaxed) != 0 {
            return Err(Error::new(
                ErrorKind::Cancelled,
                "the pool is shutting down",
            ));
        }
        self.pause_before_start()?;
        let (parent_end, child_end) =
            sys::socket_pair().map_err(|e| Error::io("could not create a worker's socket", e))?;
        let slot = self.control.worker(index);
        // ORDERING: the fork (or the server's request) that follows publishes these to the
        // child. `arena_used` is left as the parent set it: a replacement continues after its
        // predecessor's results.
        slot.current.store(pack(0, IDLE), Ordering::SeqCst);
        slot.mail_seq.store(0, Ordering::SeqCst);
        slot.ready.store(STARTING, Ordering::SeqCst);
        let arena = &self.arenas[index];
        let register = {
            let shared = Arc::clone(this);
            let received_handles: HashSet<u64> = call.handles.iter().map(|h| h.id).collect();
            move |child: Child, fork_seq: u64, received: HashSet<u64>, log_synced: bool| {
                let mut workers = shared.workers.lock();
                // Terminated while this one was starting: it must not run anything. (Under
                // the workers lock, which `terminate` holds while it kills.)
                // ORDERING: Relaxed: `terminate` stores it before it takes the workers lock.
                if shared
                    .control
                    .header()
                    .wake
                    .shutdown
                    .load(Ordering::Relaxed)
                    != 0
                {
                    let _ = child.kill();
                }
                let w = Worker {
                    child,
                    alive: true,
                    fork_seq,
                    sock: parent_end,
                    received,
                    received_handles,
                    log_synced,
                    queue: VecDeque::new(),
                    mail_seq: 0,
                };
                if index < workers.len() {
                    workers[index] = w;
                } else {
                    workers.push(w);
                }
            }
        };
        match self.config.start_method_setting() {
            StartMethod::Fork => {
                let start = WorkerStart {
                    control: self.control,
                    index: index as u32,
                    arena: arena.as_ptr(),
                    arena_len: arena.len(),
                    sock: child_end.as_raw_fd(),
                    parent: 0,   // filled in at the fork
                    fork_seq: 0, // filled in at the fork
                    spin: self.config.spin_setting(),
                    pin: self.worker_cpu(index),
                    init: self.config.init_setting()?,
                    max_tasks: self.config.max_tasks_setting(),
                    mapped: Vec::new(),
                };
                // Read before the fork: a logger installed after it is sent by mail.
                let log_synced = crate::logging::active();
                let init_fds: Vec<RawFd> = (self.config.init_fds().iter())
                    .map(|fd| fd.as_raw_fd())
                    .collect();
                // The shared objects of a call in progress, which a replacement joins.
                let call_handles: Vec<(Handle, RawFd)> = (call.handles.iter())
                    .map(|h| (h.handle(), h.fd().as_raw_fd()))
                    .collect();
                let result = lifecycle::fork_worker(
                    move |parent, fork_seq| {
                        // Moved whole: the struct, not its fields, is `Send`.
                        let start = start;
                        // Hold nothing of the parent's open files but the standard streams, the
                        // socket and the initializer's shared objects.
                        let mut keep = vec![start.sock];
                        keep.extend(init_fds.iter().copied());
                        keep.extend(call_handles.iter().map(|&(_, fd)| fd));
                        let kept = sys::keep_only_fds(&keep);
                        let handles = (start.init.iter().flat_map(|i| i.handles.iter().copied()))
                            .chain(call_handles.iter().map(|&(h, _)| h));
                        for (handle, &fd) in handles.zip(&kept[1..]) {
                            // SAFETY: `keep_only_fds` made this descriptor for us alone.
                            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                            crate::shm::handle::receive(handle, fd);
                        }
                        worker::worker_main(WorkerStart {
                            parent,
                            fork_seq,
                            sock: kept[0],
                            ..start
                        })
                    },
                    move |child, fork_seq| register(child, fork_seq, HashSet::new(), log_synced),
                );
                drop(child_end);
                result.map_err(|e| Error::io("could not fork a worker process", e))
            }
            StartMethod::ForkServer => {
                let layout = self.control.layout();
                let mut boot = Boot {
                    index: index as u32,
                    max_workers: layout.max_workers as u64,
                    n_stripes: layout.n_stripes as u64,
                    max_chunks: layout.max_chunks as u64,
                    arena_len: arena.len() as u64,
                    spin_ns: self.config.spin_setting().as_nanos().min(u64::MAX as u128) as u64,
                    pin: self.worker_cpu(index).map(|cpu| cpu as u64),
                    init: self.config.init_setting()?,
                    max_tasks: self.config.max_tasks_setting(),
                    regions: regions
                        .iter()
                        .map(|r| (r.id(), r.map_len() as u64))
                        .collect(),
                    handles: call.handles.iter().map(|h| h.handle()).collect(),
                    log: None,
                };
                let log = crate::logging::inheritance();
                boot.log = log.as_ref().map(|(setup, _)| *setup);
                let payload = postcard::to_stdvec(&boot).map_err(|e| {
                    Error::invalid(format!("could not encode a worker's start: {e}"))
                })?;
                let mut fds = vec![self.control_region.fd(), arena.fd(), child_end.as_fd()];
                fds.extend(log.as_ref().map(|(_, fd)| fd.as_fd()));
                fds.extend(self.config.init_fds());
                fds.extend(call.handles.iter().map(|h| h.fd()));
                fds.extend(regions.iter().map(|r| r.fd()));
                let child = lifecycle::server::spawn(worker::served_main, &payload, &fds)?;
                drop(child_end);
                let received = regions.iter().map(|r| r.id()).collect();
                register(child, 0, received, log.is_some());
                Ok(())
            }
        }
    }

    /// Refuses to start another worker once `MAX_START_FAILURES` in a row failed to start, and
    /// pauses (10 ms, doubling) after each such failure: a broken initializer costs a few
    /// forks and a clear error, not a storm.
    fn pause_before_start(&self) -> Result<()> {
        let failures = self.start_failures.lock();
        if failures.in_a_row >= MAX_START_FAILURES {
            let (kind, msg) = failures
                .last
                .clone()
                .unwrap_or((ErrorKind::WorkerDied, "no reason recorded".into()));
            return Err(Error::new(
                kind,
                format!(
                    "the pool stopped starting workers: {} in a row failed to start; the last: \
                     {msg}",
                    failures.in_a_row
                ),
            ));
        }
        let pause = match failures.in_a_row {
            0 => Duration::ZERO,
            n => Duration::from_millis(10 << (n - 1)),
        };
        drop(failures);
        std::thread::sleep(pause);
        Ok(())
    }

    /// Records how worker `index`, which has just been reaped with `status`, ended: one that
    /// never became ready counts towards `MAX_START_FAILURES`; one that did resets the count.
    fn note_exit(&self, index: usize, status: sys::ExitStatus) {
        let slot = self.control.worker(index);
        // ORDERING: Acquire, paired with the worker's Release store (it is dead now).
        let ready = slot.ready.load(Ordering::Acquire);
        let mut failures = self.start_failures.lock();
        if ready == READY {
            failures.in_a_row = 0;
            return;
        }
        failures.in_a_row += 1;
        failures.last = Some(self.start_failure(index, ready, status));
    }

    /// Why worker `index` did not start: its initializer's panic, or how it ended.
    fn start_failure(
        &self,
        index: usize,
        ready: u32,
        status: sys::ExitStatus,
    ) -> (ErrorKind, String) {
        if ready == INIT_FAILED {
            // ORDERING: published by the Acquire load of `ready` in the caller.
            let len = self
                .control
                .worker(index)
                .init_message
                .load(Ordering::Relaxed) as usize;
            let arena = &self.arenas[index];
            let len = len.min(arena.len());
            // SAFETY: the worker wrote `len` bytes (at most the arena's length) at the end of
            // its arena before it published INIT_FAILED, and it is gone now.
            let bytes =
                unsafe { std::slice::from_raw_parts(arena.as_ptr().add(arena.len() - len), len) };
            (
                ErrorKind::WorkerPanicked,
                format!(
                    "worker_init panicked in worker {index}: {}",
                    String::from_utf8_lossy(bytes)
                ),
            )
        } else {
            (
                ErrorKind::WorkerDied,
                format!("worker {index} {status} before it was ready"),
            )
        }
    }

    /// Waits until worker `index` has run its initializer: an error if the initializer
    /// panicked or the worker died first, or after the pool's start timeout.
    fn wait_started(&self, index: usize) -> Result<()> {
        let started = Instant::now();
        let limit = self.config.start_timeout_setting();
        let mut nap = Duration::from_micros(20);
        loop {
            // ORDERING: Acquire, paired with the worker's Release store.
            if self.control.worker(index).ready.load(Ordering::Acquire) == READY {
                return Ok(());
            }
            let ended = {
                let mut workers = self.workers.lock();
                let w = &mut workers[index];
                match w.child.try_wait() {
                    Ok(None) => None,
                    Ok(Some(status)) => Some(status),
                    Err(_) => Some(sys::ExitStatus::Exited(-1)),
                }
                .inspect(|_| w.alive = false)
            };
            if let Some(status) = ended {
                self.note_exit(index, status);
                // ORDERING: Acquire, as above.
                let ready = self.control.worker(index).ready.load(Ordering::Acquire);
                let (kind, msg) = self.start_failure(index, ready, status);
                return Err(Error::new(kind, msg));
            }
            if started.elapsed() > limit {
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    format!("worker {index} did not finish starting within {limit:?}"),
                ));
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }

    /// Makes sure every live worker maps each of `regions` before a call uses them, and holds
    /// the descriptor of each shared object in `handles` (valid during the call: the caller
    /// borrows the objects).
    fn share_regions(&self, regions: &[&Region], handles: &[Outgoing]) -> Result<()> {
        let mut workers = self.workers.lock();
        let mut sent = false;
        if crate::logging::active() {
            // `logging::init` came after these workers started: tell them.
            for w in workers.iter_mut().filter(|w| w.alive && !w.log_synced) {
                if let Some((setup, fd)) = crate::logging::inheritance() {
                    w.post(
                        Mail::Log {
                            setup: setup.to_words(),
                        },
                        Some(fd),
                    );
                    w.log_synced = true;
                    sent = true;
                }
            }
        }
        for w in workers.iter_mut().filter(|w| w.alive) {
            for r in regions {
                if !w.has(r.id()) {
                    let fd = r
                        .fd()
                        .try_clone_to_owned()
                        .map_err(|e| Error::io("could not duplicate a region's descriptor", e))?;
                    w.post(
                        Mail::Map {
                            id: r.id(),
                            len: r.map_len() as u64,
                            fingerprint: 0,
                        },
                        Some(fd),
                    );
                    w.received.insert(r.id());
                    sent = true;
                }
            }
            // A shared object's descriptor goes to every worker that has not received it, even
            // one forked after the object existed: handles resolve through descriptors only.
            for h in handles {
                if !w.received_handles.contains(&h.id) {
                    let fd = h
                        .fd()
                        .try_clone_to_owned()
                        .map_err(|e| Error::io("could not duplicate a region's descriptor", e))?;
                    w.post(
                        Mail::Map {
                            id: h.id,
                            len: h.len,
                            fingerprint: h.fingerprint,
                        },
                        Some(fd),
                    );
                    w.received_handles.insert(h.id);
                    sent = true;
                }
            }
        }
        if !sent && workers.iter().all(|w| w.queue.is_empty()) {
            return Ok(());
        }
        // Deliver everything: a worker drains its socket when it wakes up, and no call of this
        // pool runs now (the caller holds the call lock), so every live worker drains soon.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut pending = false;
            for (i, w) in workers.iter_mut().enumerate() {
                if w.alive {
                    pending |= !w.flush();
                    // ORDERING: Release, paired with the worker's Acquire load before it reads
                    // its socket.
                    self.control
                        .worker(i)
                        .mail_seq
                        .store(w.mail_seq, Ordering::Release);
                }
            }
            self.wake_workers();
            if !pending {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::Io,
                    "a worker did not read its messages for 10 s",
                ));
            }
            for w in workers.iter_mut().filter(|w| w.alive) {
                if let Ok(Some(_)) = w.child.try_wait() {
                    w.alive = false;
                    w.queue.clear();
                }
            }
            drop(workers);
            std::thread::sleep(Duration::from_micros(100));
            workers = self.workers.lock();
        }
    }

    /// Bumps the epoch and wakes sleeping workers.
    fn wake_workers(&self) {
        self.control.header().wake.epoch.bump_and_wake(i32::MAX);
    }

    /// The CPU worker `index` is pinned to, if the pool pins.
    fn worker_cpu(&self, index: usize) -> Option<usize> {
        (!self.pinned.is_empty()).then(|| self.pinned[index % self.pinned.len()])
    }

    fn shutdown(&self) {
        // ORDERING: SeqCst, read by a waiting caller before it lets tasks join its call.
        self.closing.store(true, Ordering::SeqCst);
        // Calls in progress (an `apply_async` on another thread) finish first.
        let _calls = self.calls.lock();
        // ORDERING: Relaxed: the SeqCst epoch bump in `wake_workers` publishes it.
        self.control
            .header()
            .wake
            .shutdown
            .store(1, Ordering::Relaxed);
        self.wake_workers();
        let mut workers = self.workers.lock();
        let deadline = Instant::now() + Duration::from_secs(2);
        for w in workers.iter_mut().filter(|w| w.alive) {
            loop {
                match w.child.try_wait() {
                    // A stopped worker will not exit by itself: no point waiting for it.
                    Ok(None)
                        if Instant::now() < deadline && !sys::process_stopped(w.child.pid()) =>
                    {
                        std::thread::sleep(Duration::from_micros(200))
                    }
                    Ok(None) => {
                        // Busy in a long chunk, stopped, or stuck: it has no more work to do.
                        let _ = w.child.kill();
                        let _ = w.child.wait();
                        break;
                    }
                    // Reaped now, or already reaped by someone else (ECHILD).
                    Ok(Some(_)) | Err(_) => break,
                }
            }
            w.alive = false;
        }
    }
}

impl RegionWatcher for PoolShared {
    fn region_dropped(&self, info: RegionInfo) {
        let mut workers = self.workers.lock();
        let mut any = false;
        for (i, w) in workers.iter_mut().enumerate().filter(|(_, w)| w.alive) {
            // Its own mapping or descriptor (sent), and the copy it inherited at a direct fork:
            // a region can be both (sent again as a handle), and each goes.
            let sent = w.received.remove(&info.id) | w.received_handles.remove(&info.id);
            let inherited = info.id < w.fork_seq;
            if !sent && !inherited {
                continue;
            }
            if sent {
                w.post(Mail::ForgetMapped { id: info.id }, None);
            }
            if inherited {
                w.post(
                    Mail::ForgetInherited {
                        addr: info.addr as u64,
                        len: info.len as u64,
                    },
                    None,
                );
            }
            // A full socket keeps the rest queued; the next call delivers it.
            w.flush();
            // ORDERING: Release, paired with the worker's Acquire load of `mail_seq`.
            self.control
                .worker(i)
                .mail_seq
                .store(w.mail_seq, Ordering::Release);
            any = true;
        }
        drop(workers);
        if any {
            self.wake_workers();
        }
    }
}

impl Pool {
    /// Waits for every task submitted with [`apply_async`](Pool::apply_async) to finish, then
    /// stops the workers (Python's `close()` followed by `join()`: the pool is consumed, so
    /// nothing new can be submitted). Dropping a pool instead cancels the queued tasks.
    ///
    /// ```
    /// let pool = shmpar::Pool::new(2)?;
    /// let pending: Vec<_> = (0..8u64).map(|i| pool.apply_async(i, |x: u64| x * x)).collect();
    /// pool.join();
    /// let squares: Vec<u64> = pending.into_iter().map(|p| p.get().unwrap()).collect();
    /// assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49]);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn join(self) {
        if !self.shared.owned_here() {
            // A forked copy waits for nothing: the tasks are the owner's.
            return;
        }
        let mut pending = self.shared.pending_async.lock();
        while *pending > 0 {
            self.shared.async_done.wait(&mut pending);
        }
        drop(pending);
        // `self` drops here: the workers stop.
    }

    /// Stops the workers at once (SIGKILL; Python's `terminate()`): a task that was running
    /// fails with [`ErrorKind::WorkerDied`], and tasks that had not started (queued
    /// `apply_async` tasks, or the unstarted part of a call, which no replacement worker picks
    /// up) with [`ErrorKind::Cancelled`]. Which of the two a task gets depends on how far it
    /// was when the signal came, so match both where it does not matter.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = shmpar::Pool::new(1)?;
    /// let slow = pool.apply_async(30, |s: u64| std::thread::sleep(Duration::from_secs(s)));
    /// let queued = pool.apply_async(1, |x: u32| x);
    /// std::thread::sleep(Duration::from_millis(100));
    /// pool.terminate();
    /// assert!(slow.get().is_err());
    /// assert!(matches!(queued.get(), Ok(1) | Err(_)));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn terminate(self) {
        if !self.shared.owned_here() {
            // A forked copy must not stop the owner's workers (dropping it leaves them too).
            return;
        }
        // No replacement for the workers killed below; the queued calls see it and cancel.
        // ORDERING: Relaxed: read under the call lock by later calls, and by `spawn`.
        self.shared
            .control
            .header()
            .wake
            .shutdown
            .store(1, Ordering::Relaxed);
        // A caller that helps with chunks claims no more of them.
        self.shared.control.claims().cancel();
        for w in self.shared.workers.lock().iter().filter(|w| w.alive) {
            // A worker already gone is what we want anyway.
            let _ = w.child.kill();
        }
        // `self` drops here: queued calls are cancelled, the killed workers reaped.
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if !self.shared.owned_here() {
            // A forked copy of the pool (the user's own fork, or a child that returned into
            // code that drops it): the workers, the control block and the dispatcher belong
            // to the process that built it. Shutting down or reaping here would stop that
            // process's workers; leave everything as it is (this copy's memory goes with it).
            std::mem::forget(Arc::clone(&self.shared));
            return;
        }
        self.shared.shutdown();
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers())
            .field("pids", &self.worker_pids())
            .field("config", &self.shared.config)
            .finish()
    }
}
