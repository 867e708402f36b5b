//! Two processes add one to a shared counter a million times each. Without a lock, updates
//! are lost; with a lock or an atomic add, none are.
//!
//! `cargo run --release --example lost_update`
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use shmpar::{Process, SharedValue, ShmMutex};

const PROCS: usize = 2;
const INCREMENTS: u64 = 1_000_000;

/// Runs `body` in PROCS processes, one per CPU, started together, and returns the elapsed time.
fn race(body: impl Fn() + Copy) -> shmpar::Result<f64> {
    let go = SharedValue::new(AtomicU64::new(0))?;
    let kids: Vec<Process> = (0..PROCS)
        .map(|i| {
            let go = &go;
            // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
            unsafe {
                Process::fork(move || {
                    let _ = shmpar_cli::pin_to_cpu(
                        i % std::thread::available_parallelism().map_or(1, |n| n.get()),
                    );
                    while go.load(Ordering::SeqCst) == 0 {
                        std::hint::spin_loop();
                    }
                    body();
                })
            }
        })
        .collect::<shmpar::Result<_>>()?;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let t = Instant::now();
    go.store(1, Ordering::SeqCst);
    for k in kids {
        k.join()?.into_result()?;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn main() -> shmpar::Result<()> {
    let expected = PROCS as u64 * INCREMENTS;

    let racy = SharedValue::new(AtomicU64::new(0))?;
    let secs = race(|| {
        for _ in 0..INCREMENTS {
            let v = racy.load(Ordering::Relaxed); // read...
            racy.store(v + 1, Ordering::Relaxed); // ...then write: another process may have written in between
        }
    })?;
    let got = racy.load(Ordering::Relaxed);
    println!(
        "no lock:    {got:>8} of {expected} ({:.1}% lost) in {:.1} ms",
        100.0 * (expected - got) as f64 / expected as f64,
        secs * 1e3
    );

    let locked = SharedValue::new(ShmMutex::new(0u64))?;
    let secs = race(|| {
        for _ in 0..INCREMENTS {
            *locked.lock().unwrap() += 1;
        }
    })?;
    println!(
        "ShmMutex:   {:>8} of {expected} in {:.1} ms",
        *locked.lock().unwrap(),
        secs * 1e3
    );

    let atomic = SharedValue::new(AtomicU64::new(0))?;
    let secs = race(|| {
        for _ in 0..INCREMENTS {
            atomic.fetch_add(1, Ordering::Relaxed);
        }
    })?;
    println!(
        "fetch_add:  {:>8} of {expected} in {:.1} ms",
        atomic.load(Ordering::Relaxed),
        secs * 1e3
    );
    Ok(())
}
