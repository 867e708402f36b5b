//! Idle workers: who spins and who sleeps between calls. A worker spins only while calls come
//! quickly and it had work in the last one; a call wakes only the sleepers it needs.

mod common;

use std::time::{Duration, Instant};

use ndarray::Array1;
use shmpar::{Pool, SharedArray};

/// Back-to-back calls of one chunk each, for `for_how_long`: returns the CPU ticks each worker
/// used meanwhile.
fn ticks_during_one_chunk_calls(pool: &Pool, for_how_long: Duration) -> Vec<u64> {
    let a = SharedArray::from_array(&Array1::<f64>::from_elem(128, 1.0)).unwrap();
    // Settle: the first calls teach the workers who is needed.
    for _ in 0..1000 {
        pool.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap();
    }
    let pids = pool.worker_pids();
    let before: Vec<u64> = pids
        .iter()
        .map(|&p| common::cpu_ticks(p).unwrap())
        .collect();
    let start = Instant::now();
    while start.elapsed() < for_how_long {
        let s = pool.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap();
        assert_eq!(s, 128.0);
    }
    let after: Vec<u64> = pids
        .iter()
        .map(|&p| common::cpu_ticks(p).unwrap())
        .collect();
    after.iter().zip(&before).map(|(a, b)| a - b).collect()
}

/// The 64 KiB cliff: with one chunk per call, the second worker used to spin after
/// every call (each call woke it), sharing a CPU with the caller on a 2-CPU machine. Now it
/// finds nothing to do once, then sleeps through calls that do not need it.
#[test]
fn a_worker_that_a_call_does_not_need_sleeps_through_it() {
    let _w = common::watchdog(60, "idle worker");
    let pool = Pool::builder().workers(2).build().unwrap();
    let ticks = ticks_during_one_chunk_calls(&pool, Duration::from_millis(600));
    // 600 ms is 60 ticks of a CPU; a spinning worker takes a good share of one (about 40 on two
    // CPUs shared with the caller and the busy worker), a sleeping one nothing.
    let idle = *ticks.iter().min().unwrap();
    assert!(
        idle <= 6,
        "the unneeded worker used {idle} ticks of 60 ({ticks:?})"
    );
}

/// A worker spins only for the pool's spin time after a call; with calls far apart it sleeps
/// from the start of each wait.
#[test]
fn workers_do_not_spin_between_rare_calls() {
    let _w = common::watchdog(60, "rare calls");
    // A long spin makes the difference measurable: 20 ms after each of the calls 25 ms
    // apart would be 80% of a CPU per worker.
    let pool = Pool::builder()
        .workers(2)
        .spin(Duration::from_millis(20))
        .chunk_bytes(8)
        .build()
        .unwrap();
    let a = SharedArray::from_array(&Array1::<f64>::from_elem(2, 1.0)).unwrap();
    let pids = pool.worker_pids();
    let calls = 24;
    let mut before = Vec::new();
    for i in 0..calls {
        if i == 4 {
            // After a few calls the workers know the calls are rare.
            before = pids
                .iter()
                .map(|&p| common::cpu_ticks(p).unwrap())
                .collect();
        }
        assert_eq!(pool.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap(), 2.0);
        std::thread::sleep(Duration::from_millis(25));
    }
    let after: Vec<u64> = pids
        .iter()
        .map(|&p| common::cpu_ticks(p).unwrap())
        .collect();
    let used: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // 20 calls x 20 ms of spinning would be 40 ticks per worker.
    assert!(
        used.iter().all(|&t| t <= 8),
        "workers spun between rare calls: {used:?} ticks"
    );
}

/// A call that times out replaces the workers stuck in it, not the ones it never needed: those
/// were left asleep (their bells not rung) and never joined, which is healthy.
#[test]
fn a_time_out_spares_the_workers_the_call_did_not_need() {
    let _w = common::watchdog(60, "time-out spares the unneeded");
    let pool = Pool::builder()
        .workers(3)
        .call_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let a = SharedArray::from_array(&Array1::<f64>::from_elem(4, 1.0)).unwrap();
    // One-chunk calls: workers 1 and 2 find nothing to do, and go to sleep.
    for _ in 0..100 {
        pool.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    let before = pool.worker_pids();
    let err = pool
        .par_reduce(
            &a,
            |c| {
                std::thread::sleep(Duration::from_secs(30));
                c.sum()
            },
            |x, y| x + y,
        )
        .unwrap_err();
    assert_eq!(err.kind(), shmpar::ErrorKind::TimedOut, "{err}");
    // The pool still works, and only the worker that ran the chunk was replaced.
    assert_eq!(pool.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap(), 4.0);
    let after = pool.worker_pids();
    let kept = before.iter().filter(|p| after.contains(p)).count();
    assert_eq!(kept, 2, "before {before:?}, after {after:?}");
}
