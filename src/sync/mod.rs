//! Cross-process synchronisation: values in shared memory, a robust mutex and its condition
//! variable, barrier, semaphore, event, and padded atomics.
//!
//! Everything here lives in a [`SharedValue`] (or inside a type that does) and works between
//! any processes that map it: the parent, its [`Process`](crate::Process) children, pool
//! workers. All waits are futexes on shared (not process-private) memory.
//!
//! # Counters and memory orderings
//! An atomic in a `SharedValue` behaves across processes exactly as across threads (the
//! processes share the physical memory, and the CPU's ordering rules apply to it).
//! - A pure counter (how many, how much) needs only `Ordering::Relaxed`: `fetch_add` is atomic
//!   at any ordering, so no increment is lost, and a final read after `join` sees every one
//!   (`join` waits for the child's exit, which orders everything it did before).
//! - A flag or counter that *publishes* other data ("item 7 is ready") needs `Release` on the
//!   write and `Acquire` on the read, so that the data is visible once the flag is.
//! - A hot counter that several processes write should sit on its own cache line
//!   ([`CachePadded`]): otherwise neighbours' writes bounce the line between CPUs (false
//!   sharing). Fastest of all is a local count per process, added to the shared one once.

mod barrier;
mod condvar;
mod event;
mod mutex;
mod padded;
mod semaphore;
mod value;

pub use barrier::Barrier;
pub use condvar::Condvar;
pub use event::Event;
pub use mutex::{LockError, LockResult, ShmMutex, ShmMutexGuard};
pub use padded::CachePadded;
pub use semaphore::Semaphore;
pub use value::{SharedValue, ShmSafe};

use std::time::{Duration, Instant};

/// The time left until `deadline`, or `None` once it has passed.
pub(crate) fn remaining(deadline: Option<Instant>) -> Option<Option<Duration>> {
    match deadline {
        None => Some(None),
        Some(d) => d
            .checked_duration_since(Instant::now())
            .filter(|r| !r.is_zero())
            .map(Some),
    }
}
