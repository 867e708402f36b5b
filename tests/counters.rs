//! N processes x M increments on one shared counter end exactly at N * M under ShmMutex and
//! under fetch_add. (The racy version loses updates: that is shown by the lost-update demo, not
//! asserted in a test, because how many are lost depends on the scheduler.)

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use shmpar::{CachePadded, Process, SharedValue, ShmMutex};

fn run_children(n: usize, body: impl Fn(usize) + Copy) {
    let kids: Vec<Process> = (0..n)
        // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
        .map(|i| unsafe { Process::fork(move || body(i)) }.unwrap())
        .collect();
    for k in kids {
        k.join().unwrap().into_result().unwrap();
    }
}

#[test]
fn shm_mutex_counts_exactly() {
    let _w = common::watchdog(120, "mutex counter");
    for (n, m) in [(1usize, 1000u64), (2, 20_000), (3, 10_000), (4, 5_000)] {
        let counter = SharedValue::new(ShmMutex::new(0u64)).unwrap();
        run_children(n, |_| {
            for _ in 0..m {
                *counter.lock().unwrap() += 1;
            }
        });
        assert_eq!(*counter.lock().unwrap(), n as u64 * m, "{n} x {m}");
    }
}

#[test]
fn fetch_add_counts_exactly() {
    let _w = common::watchdog(120, "atomic counter");
    for (n, m) in [(1usize, 1000u64), (2, 200_000), (4, 50_000), (8, 10_000)] {
        let counter = SharedValue::new(CachePadded::new(AtomicU64::new(0))).unwrap();
        run_children(n, |_| {
            for _ in 0..m {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert_eq!(counter.load(Ordering::Relaxed), n as u64 * m, "{n} x {m}");
    }
}

#[test]
fn padded_per_process_slots_then_one_sum() {
    let _w = common::watchdog(60, "local sums");
    let slots = SharedValue::new([
        CachePadded::new(AtomicU64::new(0)),
        CachePadded::new(AtomicU64::new(0)),
        CachePadded::new(AtomicU64::new(0)),
        CachePadded::new(AtomicU64::new(0)),
    ])
    .unwrap();
    run_children(4, |i| {
        let local: u64 = (0..100_000u64).map(|_| 1).sum();
        slots[i].store(local, Ordering::Relaxed);
    });
    assert_eq!(
        slots.iter().map(|s| s.load(Ordering::Relaxed)).sum::<u64>(),
        400_000
    );
}
