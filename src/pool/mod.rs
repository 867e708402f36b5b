//! The pool of persistent forked workers.

mod builder;
mod call;
pub(crate) mod chunk;
pub(crate) mod control;
mod forker;
mod mail;
mod worker;

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use builder::PoolBuilder;
pub(crate) use call::{CallSpec, ChunkReport, ChunkState, Finished, Grid};
use control::{Control, IDLE, Layout, pack};
use mail::Mail;
use worker::WorkerStart;

use crate::error::{Error, ErrorKind, Result};
use crate::shm::{Region, RegionInfo, RegionWatcher, registry};
use crate::sys;

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
/// # Lifetime of the workers
/// Dropping the pool stops and reaps every worker. If the parent process dies, even by SIGKILL,
/// the kernel kills the workers (`PR_SET_PDEATHSIG`, set from a thread that lives as long as the
/// process), and a sleeping worker also checks its parent every 100 ms.
///
/// # Fork safety
/// Workers are forked from a dedicated thread and run code that takes no lock another thread
/// of the parent could hold: creating a pool while other threads run (a rayon pool, a thread
/// printing to stdout) is safe. User functions run in those workers, so they must not use
/// stdout, rayon, or any lock of the parent's either; compute on the data and return.
pub struct Pool {
    shared: Arc<PoolShared>,
}

pub(crate) struct PoolShared {
    config: PoolBuilder,
    pub(crate) workers_wanted: usize,
    control: Control,
    arenas: Vec<Region>,
    calls: Mutex<CallState>,
    workers: Mutex<Vec<Worker>>,
    /// The serialised inputs of task-style calls (`map` and friends), reused between calls;
    /// held from filling it to the end of the call.
    pub(crate) task_input: Mutex<Option<Region>>,
    /// Owns the block `control` points into; kept last so that it is unmapped after
    /// everything that uses it.
    #[expect(dead_code, reason = "held for ownership only")]
    control_region: Region,
}

struct CallState {
    seq: u32,
    caller_arena: Vec<u8>,
}

/// The parent's record of one worker process.
struct Worker {
    pid: i32,
    alive: bool,
    /// The first region id this worker did not inherit at fork.
    fork_seq: u64,
    sock: OwnedFd,
    /// Regions sent to it as descriptors.
    received: HashSet<u64>,
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
        self.shared
            .workers
            .lock()
            .iter()
            .filter(|w| w.alive)
            .map(|w| w.pid as u32)
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
        if crate::shm::region::in_forked_child() {
            // The parent's pool is not this process's to use (its workers are the parent's
            // children), and its lazy initialisation may have been copied half-done.
            return Err(Error::new(
                ErrorKind::Unsupported,
                "the default pool cannot be used inside a worker or a forked child",
            ));
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

    pub(crate) fn shared_clone(&self) -> Arc<PoolShared> {
        Arc::clone(&self.shared)
    }

    fn start(config: PoolBuilder) -> Result<Pool> {
        let workers = config.resolved_workers()?;
        let layout = Layout::new(workers, config.max_chunks_setting())
            .ok_or_else(|| Error::invalid("the pool's control block would not fit in memory"))?;
        let control_region = Region::new("shmpar-control", layout.total)?;
        // SAFETY: the region is fresh (zero-filled), page-aligned, `layout.total` bytes long, and
        // is kept in `PoolShared` after every user of `control`.
        let control = unsafe { Control::new(control_region.as_ptr(), layout) };
        let arenas = (0..workers)
            .map(|_| Region::new("shmpar-results", config.result_bytes_setting()))
            .collect::<Result<Vec<_>>>()?;
        chunk::install_panic_hook();
        let shared = Arc::new(PoolShared {
            config,
            workers_wanted: workers,
            control,
            arenas,
            calls: Mutex::new(CallState {
                seq: 0,
                caller_arena: Vec::new(),
            }),
            workers: Mutex::new(Vec::with_capacity(workers)),
            task_input: Mutex::new(None),
            control_region,
        });
        let weak: std::sync::Weak<dyn RegionWatcher> = Arc::downgrade(&shared) as _;
        registry().watch(weak);
        let pool = Pool { shared };
        for i in 0..workers {
            // On failure `pool` drops here and reaps the workers already started.
            pool.shared.spawn(&pool.shared, i)?;
        }
        Ok(pool)
    }
}

impl PoolShared {
    /// The settings the pool was built with.
    pub(crate) fn config(&self) -> &PoolBuilder {
        &self.config
    }

    /// Forks worker `index` (a first start, or a replacement in the same slot).
    fn spawn(&self, this: &Arc<PoolShared>, index: usize) -> Result<()> {
        // ORDERING: Relaxed: set once, before the shutdown's wake-up.
        if self.control.header().wake.shutdown.load(Ordering::Relaxed) != 0 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "the pool is shutting down",
            ));
        }
        let (parent_end, child_end) =
            sys::socket_pair().map_err(|e| Error::io("could not create a worker's socket", e))?;
        let slot = self.control.worker(index);
        // ORDERING: the fork that follows publishes these to the child. `arena_used` is left
        // as the parent set it: a replacement continues after its predecessor's results.
        slot.current.store(pack(0, IDLE), Ordering::SeqCst);
        slot.mail_seq.store(0, Ordering::SeqCst);
        let arena = &self.arenas[index];
        let start = WorkerStart {
            control: self.control,
            index: index as u32,
            arena: arena.as_ptr(),
            arena_len: arena.len(),
            sock: child_end.as_raw_fd(),
            parent: 0,   // filled in by the forker
            fork_seq: 0, // filled in by the forker
            spin: self.config.spin_setting(),
            init: self.config.init_setting(),
            max_tasks: self.config.max_tasks_setting(),
        };
        let shared = Arc::clone(this);
        let on_forked: forker::OnForked = Box::new(move |pid, fork_seq| {
            let mut workers = shared.workers.lock();
            let w = Worker {
                pid,
                alive: true,
                fork_seq,
                sock: parent_end,
                received: HashSet::new(),
                queue: VecDeque::new(),
                mail_seq: 0,
            };
            if index < workers.len() {
                workers[index] = w;
            } else {
                workers.push(w);
            }
        });
        let result = forker::spawn_worker(start, on_forked);
        drop(child_end);
        result
            .map(drop)
            .map_err(|e| Error::io("could not fork a worker process", e))
    }

    /// Makes sure every live worker maps each of `regions` before a call uses them.
    fn share_regions(&self, regions: &[&Region]) -> Result<()> {
        let mut workers = self.workers.lock();
        let mut sent = false;
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
                        },
                        Some(fd),
                    );
                    w.received.insert(r.id());
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
                if let Ok(Some(_)) = sys::try_wait(w.pid) {
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
        let wake = &self.control.header().wake;
        // ORDERING: SeqCst: we bump then read `sleepers`; a worker announces itself then
        // re-reads `epoch`. One of us sees the other, so no wake-up is lost.
        wake.epoch.fetch_add(1, Ordering::SeqCst);
        if wake.sleepers.load(Ordering::SeqCst) != 0 {
            sys::futex_wake(&wake.epoch, i32::MAX);
        }
    }

    fn shutdown(&self) {
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
                match sys::try_wait(w.pid) {
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_micros(200))
                    }
                    Ok(None) => {
                        // Busy in a long chunk, or stuck: it has no more work to do.
                        let _ = sys::kill(w.pid, sys::SIGKILL);
                        let _ = sys::wait(w.pid);
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
            let mail = if w.received.remove(&info.id) {
                Mail::ForgetMapped { id: info.id }
            } else if info.id < w.fork_seq {
                Mail::ForgetInherited {
                    addr: info.addr as u64,
                    len: info.len as u64,
                }
            } else {
                continue;
            };
            w.post(mail, None);
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

impl Drop for Pool {
    fn drop(&mut self) {
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
