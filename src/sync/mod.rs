//! Cross-process synchronisation: values in shared memory, a robust mutex, barrier, semaphore,
//! event, and padded atomics.
//!
//! Everything here lives in a [`SharedValue`] (or inside a type that does) and works between
//! any processes that map it: the parent, its [`Process`](crate::Process) children, pool
//! workers. All waits are futexes or pthread calls on shared (not process-private) memory.

mod barrier;
mod event;
mod mutex;
mod padded;
mod pthread;
mod semaphore;
mod value;

pub use barrier::Barrier;
pub use event::Event;
pub use mutex::{LockError, LockResult, ShmMutex, ShmMutexGuard};
pub use padded::CachePadded;
pub use pthread::{PthreadMutex, PthreadMutexGuard};
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
