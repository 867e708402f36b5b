//! Two counters shared by every task of a pool: an atomic one and one behind a robust lock.
//! Each task gets its own handle to the same values in its arguments.
use std::sync::atomic::{AtomicU64, Ordering};

use shmpar::{Pool, SharedValue, ShmMutex};

type Counters = (u64, SharedValue<AtomicU64>, SharedValue<ShmMutex<u64>>);

fn count(task: Counters) {
    let (n, hits, total) = task;
    hits.fetch_add(1, Ordering::Relaxed);
    // The lock is robust: if a task died holding it, the next one would be told.
    *total.lock().expect("a task died holding the lock") += n;
}

fn main() -> shmpar::Result<()> {
    let pool = Pool::new(2)?;
    let hits = SharedValue::new(AtomicU64::new(0))?;
    let total = SharedValue::new(ShmMutex::new(0u64))?;
    let tasks = (1..=1000).map(|n| (n, hits.clone(), total.clone()));
    pool.map(tasks, count)?;
    println!(
        "{} tasks ran; their numbers add up to {}",
        hits.load(Ordering::Relaxed),
        *total.lock().expect("lock")
    );
    Ok(())
}
