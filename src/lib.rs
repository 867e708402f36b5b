//! shmpar splits large [`ndarray`] workloads across forked worker processes that share one
//! memory-mapped buffer: thread-level speed, process-level isolation.
//!
//! ```
//! use ndarray::Ix1;
//! use shmpar::{Pool, SharedArray};
//!
//! # fn main() -> shmpar::Result<()> {
//! let pool = Pool::new(2)?; // two worker processes, forked once and kept
//! let mut data = SharedArray::<f64, Ix1>::zeros(1 << 20)?; // in shared memory
//! data.view_mut().fill(1.0);
//! let sum = pool.par_reduce(&data, |chunk| chunk.sum(), |a, b| a + b)?;
//! assert_eq!(sum, (1 << 20) as f64);
//! # Ok(())
//! # }
//! ```
//!
//! # What you get
//! - [`SharedArray`]: an ndarray in a `MAP_SHARED` memfd mapping that workers read and write
//!   in place, with no copy, whether made before or after the pool.
//! - [`Pool`]: persistent worker processes, forked by a fork server from a clean copy of the
//!   program ([`StartMethod`]), so a task may print, log, use rayon or any library.
//!   [`Pool::par_reduce`], [`Pool::par_reduce_with`], [`Pool::par_reduce_zip`],
//!   [`Pool::par_for_each_mut`], [`Pool::par_reduce_range`], and the free function
//!   [`par_reduce`] on a default pool.
//! - [`Pool::zip`]: up to six arrays split on the same rows, read and written, reduced, or
//!   searched with an early stop ([`Zip::find_any`]); [`SharedView`]s choose slices, a
//!   transpose or another axis to split, with no copy.
//! - Handles: a [`SharedValue`], [`Queue`], [`SharedMap`], [`Connection`] or [`ArrayHandle`] travels to a
//!   task or child inside its serialised arguments and arrives as the same shared object.
//! - Faults cost one chunk: a panic, an abort, a segfault or a SIGKILL in a worker becomes an
//!   [`Error`] with a matchable [`ErrorKind`], the dead worker is replaced, and the pool goes on.
//! - The `multiprocessing.Pool` API on the same workers: [`Pool::map`], [`Pool::imap`],
//!   [`Pool::imap_unordered`], [`Pool::apply_async`]; one failing task costs only its own
//!   result. [`Queue`] and [`Pipe`] pass messages between processes; a [`SharedMap`] is a
//!   bounded map of serde keys and values that several processes share (the Manager's dict).
//! - [`Process`]: start a function with serialised arguments in a clean child
//!   ([`Process::start`]), join it for its value or how it ended (panicked, exit code,
//!   signal); or fork a closure ([`Process::fork`], `unsafe`).
//! - Cross-process sync in shared memory ([`SharedValue`]): a robust [`ShmMutex`] that
//!   reports a dead holder instead of hanging, [`Barrier`], [`Semaphore`], [`Event`], atomics,
//!   [`CachePadded`].
//! - Determinism: the chunk grid ignores the number of workers and partials are combined in
//!   chunk order, so float results are bitwise identical for any pool size.
//!
//! # Platform support
//! Linux only (memfd, futex, `PR_SET_PDEATHSIG`). Elsewhere the crate builds and every call
//! fails with [`ErrorKind::Unsupported`].

mod error;
mod lifecycle;
pub mod logging;
#[cfg(feature = "mpi")]
pub mod mpi;
mod pool;
mod primitive;
mod process;
mod queue;
#[cfg(feature = "rand")]
pub mod random;
mod reduce;
mod shared_map;
mod shm;
mod sync;
mod sys;
mod tasks;
mod wake;

pub use error::{Error, ErrorKind, Result};
pub use lifecycle::StartMethod;
pub use pool::{Pool, PoolBuilder};
pub use process::{Exit, Process};
pub use queue::{Connection, Pipe, PipeReader, PipeWriter, Queue};
pub use reduce::{Found, Zip, ZipArrays, ZipPart, par_reduce};
pub use shared_map::SharedMap;
pub use shm::{
    ArrayHandle, Element, NAMED_OFFSET, SharedArray, SharedView, SharedViewMut, cleanup_stale,
};
pub use sync::{
    Barrier, CachePadded, Condvar, Event, LockError, LockResult, Semaphore, SharedValue, ShmMutex,
    ShmMutexGuard, ShmSafe,
};
pub use tasks::{AsyncResult, Imap, MapOptions, TaskError};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The migration page's examples (docs/migration.md), compiled and run as doctests.
#[doc = include_str!("../docs/migration.md")]
#[cfg(doctest)]
pub struct MigrationDoctests;
