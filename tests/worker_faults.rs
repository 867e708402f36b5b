//! A panic, an abort, a segfault or a SIGKILL in one chunk costs that chunk: the right error
//! comes back within seconds, the dead worker is replaced, and the next call succeeds.

mod common;

use std::time::{Duration, Instant};

use ndarray::Ix1;
use shmpar::{ErrorKind, Pool, SharedArray};

fn data() -> SharedArray<f64, Ix1> {
    let mut a = SharedArray::<f64, Ix1>::zeros(1 << 16).unwrap();
    a.view_mut().fill(1.0);
    a
}

/// A pool whose chunks are 8 KiB, so a 512 KiB array has 64 chunks.
fn pool(workers: usize) -> Pool {
    Pool::builder()
        .workers(workers)
        .chunk_bytes(8 * 1024)
        .build()
        .unwrap()
}

fn sum(pool: &Pool, a: &SharedArray<f64, Ix1>) -> f64 {
    pool.par_reduce(a, |c| c.sum(), |x, y| x + y).unwrap()
}

#[test]
fn panic_in_one_chunk_reports_message_and_chunk() {
    let _w = common::watchdog(60, "panic test");
    let pool = pool(2);
    let a = data();
    let seven = |c: ndarray::ArrayView1<'_, f64>| {
        if c.iter().any(|&x| x == 7.0) {
            panic!("found a seven");
        }
        c.sum()
    };
    assert_eq!(
        pool.par_reduce(&a, seven, |x, y| x + y).unwrap(),
        (1 << 16) as f64
    );
    let mut b = data();
    b.view_mut()[5 * 1024 + 3] = 7.0;
    // Chunks are 1024 rows: row 5 * 1024 + 3 is in chunk 5.
    let err = pool.par_reduce(&b, seven, |x, y| x + y).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerPanicked);
    assert_eq!(err.chunk(), Some(5));
    assert!(err.message().contains("found a seven"), "{err}");
    assert!(
        err.message().contains("worker_faults.rs"),
        "location missing: {err}"
    );
    assert!(
        pool.worker_pids().contains(&(err.pid().unwrap() as u32)),
        "a panic does not kill the worker"
    );
    assert_eq!(sum(&pool, &a), (1 << 16) as f64);
}

fn expect_death(kind_of_death: fn(ndarray::ArrayView1<'_, f64>) -> f64, signal: i32) {
    let _w = common::watchdog(60, "death test");
    for workers in [1, 2, 3] {
        let pool = pool(workers);
        let a = data();
        let before = pool.worker_pids();
        let t = Instant::now();
        let err = pool
            .par_reduce(&a, kind_of_death, |x, y| x + y)
            .unwrap_err();
        let took = t.elapsed();
        assert_eq!(err.kind(), ErrorKind::WorkerDied, "{err}");
        assert_eq!(err.signal(), Some(signal), "{err}");
        assert!(err.chunk().is_some());
        assert!(before.contains(&(err.pid().unwrap() as u32)), "{err}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
        // The pool is whole again and serves the next call.
        assert_eq!(sum(&pool, &a), (1 << 16) as f64);
        let after = pool.worker_pids();
        assert_eq!(after.len(), workers);
        assert!(!after.contains(&(err.pid().unwrap() as u32)));
        assert!(common::wait_gone(
            &[err.pid().unwrap() as u32],
            Duration::from_secs(2)
        ));
    }
}

#[test]
fn abort_reports_sigabrt() {
    expect_death(
        |c| {
            if !c.is_empty() {
                std::process::abort();
            }
            0.0
        },
        6,
    );
}

#[test]
fn segfault_reports_sigsegv() {
    expect_death(
        |c| {
            if !c.is_empty() {
                // SAFETY: not safe at all: this test wants a real segmentation fault.
                unsafe { std::ptr::null_mut::<f64>().write_volatile(1.0) };
            }
            0.0
        },
        11,
    );
}

#[test]
fn sigkill_mid_chunk_reports_sigkill() {
    let _w = common::watchdog(60, "sigkill test");
    let pool = pool(2);
    let a = data();
    let pids = pool.worker_pids();
    // Every chunk sleeps; kill a worker while it is inside one.
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        common::sigkill(pids[0]);
    });
    let t = Instant::now();
    let err = pool
        .par_reduce(
            &a,
            |c| {
                std::thread::sleep(Duration::from_millis(20));
                c.sum()
            },
            |x, y| x + y,
        )
        .unwrap_err();
    killer.join().unwrap();
    assert_eq!(err.kind(), ErrorKind::WorkerDied, "{err}");
    assert_eq!(err.signal(), Some(9));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(err.to_string().contains("SIGKILL"), "{err}");
    assert_eq!(sum(&pool, &a), (1 << 16) as f64);
}

#[test]
fn worker_killed_between_calls_costs_nothing() {
    let _w = common::watchdog(60, "idle death test");
    let pool = pool(2);
    let a = data();
    assert_eq!(sum(&pool, &a), (1 << 16) as f64);
    let victim = pool.worker_pids()[1];
    common::sigkill(victim);
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..5 {
        assert_eq!(sum(&pool, &a), (1 << 16) as f64);
    }
}

#[test]
fn call_timeout_kills_and_replaces() {
    let _w = common::watchdog(60, "timeout test");
    let pool = Pool::builder()
        .workers(2)
        .call_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let a = data();
    let t = Instant::now();
    let err = pool
        .par_reduce(
            &a,
            |_c| -> f64 {
                loop {
                    std::hint::spin_loop();
                }
            },
            |x, y| x + y,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(sum(&pool, &a), (1 << 16) as f64);
}

#[test]
fn caller_runs_chunks_still_reports_worker_faults() {
    let _w = common::watchdog(60, "caller helps");
    let pool = Pool::builder()
        .workers(2)
        .chunk_bytes(8 * 1024)
        .caller_runs_chunks(true)
        .build()
        .unwrap();
    let a = data();
    assert_eq!(sum(&pool, &a), (1 << 16) as f64);
    let err = pool
        .par_reduce(
            &a,
            |c| -> f64 { panic!("chunk of {}", c.len()) },
            |x, y| x + y,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerPanicked);
    assert_eq!(err.chunk(), Some(0));
    assert_eq!(sum(&pool, &a), (1 << 16) as f64);
}

/// Whatever the timing, a call reports its lowest failing chunk: a failure stops the chunks
/// after it, never those before (which may belong to a worker that has not woken yet).
#[test]
fn the_lowest_failing_chunk_is_reported_whatever_the_timing() {
    let _w = common::watchdog(60, "lowest failing chunk");
    let pool = Pool::builder()
        .workers(2)
        .chunk_bytes(8 * 1024)
        .build()
        .unwrap();
    let a = data();
    for _ in 0..50 {
        let err = pool
            .par_reduce(
                &a,
                |c| -> f64 { panic!("chunk of {}", c.len()) },
                |x, y| x + y,
            )
            .unwrap_err();
        assert_eq!(err.chunk(), Some(0), "{err}");
    }
    // Worker 1 owns chunks 1 and 3: chunk 3 fails while worker 0 is still in chunk 0; chunk
    // 2, which worker 1 then takes, fails too, and is the one reported. (Cancelling the whole
    // call at the first failure left chunk 2 unrun and reported chunk 3.)
    let per_index = Pool::builder().workers(2).chunk_bytes(8).build().unwrap();
    for _ in 0..3 {
        let err = per_index
            .par_reduce_range(
                4,
                |_, chunk| -> u64 {
                    match chunk {
                        0 => {
                            std::thread::sleep(Duration::from_millis(200));
                            0
                        }
                        1 => 1,
                        _ => panic!("chunk {chunk}"),
                    }
                },
                |x, y| x + y,
            )
            .unwrap_err();
        assert_eq!(err.chunk(), Some(2), "{err}");
    }
    assert_eq!(sum(&pool, &a), (1 << 16) as f64);
}

/// A call that times out replaces the worker stuck in it, not the idle ones that had nothing to
/// do in it.
#[test]
fn a_time_out_replaces_only_the_worker_stuck_in_the_call() {
    let _w = common::watchdog(60, "time-out spares the unneeded");
    let pool = Pool::builder()
        .workers(3)
        .call_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let a = SharedArray::from_array(&ndarray::Array1::<f64>::from_elem(4, 1.0)).unwrap();
    // One-chunk calls: workers 1 and 2 find nothing to do in them.
    for _ in 0..100 {
        sum(&pool, &a);
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
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    // The pool still works, and only the worker that ran the chunk was replaced.
    assert_eq!(sum(&pool, &a), 4.0);
    let after = pool.worker_pids();
    let kept = before.iter().filter(|p| after.contains(p)).count();
    assert_eq!(kept, 2, "before {before:?}, after {after:?}");
}
