//! Nothing is left behind: no worker process after a pool is dropped (also when a test
//! panics), no /dev/shm entry, and worker mappings of dropped arrays are released.

mod common;

use std::time::Duration;

use ndarray::Ix1;
use shmpar::{Pool, SharedArray};

#[test]
fn drop_reaps_every_worker() {
    let _w = common::watchdog(60, "drop reaps");
    for workers in [1, 2, 5] {
        let pool = Pool::new(workers).unwrap();
        let pids = pool.worker_pids();
        assert_eq!(pids.len(), workers);
        assert!(pids.iter().all(|&p| !common::is_gone(p)));
        drop(pool);
        // Reaped synchronously by drop: not even a zombie remains.
        for p in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{p}")).exists(),
                "worker {p} left behind"
            );
        }
    }
}

#[test]
fn a_panicking_test_leaves_no_worker() {
    let _w = common::watchdog(60, "panic cleanup");
    let mut pids = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let pool = Pool::new(2).unwrap();
        pids = pool.worker_pids();
        panic!("the test body fails while the pool is alive");
    }));
    assert!(result.is_err());
    assert_eq!(pids.len(), 2);
    assert!(common::wait_gone(&pids, Duration::from_secs(2)));
}

#[test]
fn nothing_appears_in_dev_shm() {
    let _w = common::watchdog(60, "dev shm");
    let before = common::dev_shm();
    {
        let pool = Pool::new(2).unwrap();
        let mut a = SharedArray::<f64, Ix1>::zeros(1 << 20).unwrap();
        a.view_mut().fill(1.0);
        assert_eq!(
            pool.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap(),
            (1 << 20) as f64
        );
        let during: Vec<_> = common::dev_shm()
            .into_iter()
            .filter(|e| e.contains("shmpar"))
            .collect();
        assert!(
            during.is_empty(),
            "memfd regions have no /dev/shm name: {during:?}"
        );
    }
    let after: Vec<_> = common::dev_shm()
        .into_iter()
        .filter(|e| !before.contains(e) && e.contains("shmpar"))
        .collect();
    assert!(after.is_empty(), "{after:?}");
}

/// Counts a worker's mappings of memfd arrays (they show as "/memfd:shmpar-array").
fn array_maps(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("memfd:shmpar-array"))
        .count()
}

#[test]
fn workers_unmap_dropped_arrays() {
    let _w = common::watchdog(60, "unmap");
    // One array made before the pool (inherited by the workers), one after (sent to them).
    let before = SharedArray::<u8, Ix1>::zeros(1 << 20).unwrap();
    let pool = Pool::new(2).unwrap();
    let after = SharedArray::<u8, Ix1>::zeros(1 << 20).unwrap();
    for a in [&before, &after] {
        assert_eq!(
            pool.par_reduce(a, |c| c.len(), |x, y| x + y).unwrap(),
            1 << 20
        );
    }
    let pids = pool.worker_pids();
    let counted = |pid| array_maps(pid);
    let baseline: Vec<usize> = pids.iter().map(|&p| counted(p)).collect();
    assert!(baseline.iter().all(|&n| n >= 2), "{baseline:?}");
    drop(before);
    drop(after);
    // The workers hear of it at once (they are woken), not only at the next call.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let now: Vec<usize> = pids.iter().map(|&p| counted(p)).collect();
        if now.iter().zip(&baseline).all(|(n, b)| *n + 2 <= *b) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still mapped: {now:?} (was {baseline:?})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
