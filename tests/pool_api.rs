//! The multiprocessing-style API: map / imap / imap_unordered / apply_async, chunksize,
//! max_tasks_per_worker, the initializer, per-task faults and retries.

mod common;

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shmpar::{ErrorKind, MapOptions, Pool, SharedValue, StartMethod};

fn pool(workers: usize) -> Pool {
    Pool::new(workers).unwrap()
}

#[test]
fn map_and_imap_keep_input_order() {
    let _w = common::watchdog(120, "order");
    let p = pool(3);
    for chunksize in [1, 3, 7, 1000] {
        let opts = MapOptions::new().chunksize(chunksize);
        let out = p.map_with(0..500u64, |x| x * 3, &opts).unwrap();
        assert_eq!(
            out.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            (0..500).map(|x| x * 3).collect::<Vec<_>>()
        );
        let lazy: Vec<u64> = p
            .imap_with(0..500u64, |x| x + 1, &opts)
            .map(Result::unwrap)
            .collect();
        assert_eq!(lazy, (1..=500).collect::<Vec<_>>());
    }
    assert!(p.map(Vec::<u8>::new(), |x| x).unwrap().is_empty());
}

#[test]
fn imap_reads_ahead_a_bounded_amount_of_an_endless_input() {
    let _w = common::watchdog(60, "read-ahead");
    let p = pool(2);
    let pulled = Cell::new(0u64);
    let source = (0u64..).inspect(|_| pulled.set(pulled.get() + 1));
    let opts = MapOptions::new().read_ahead(100);
    let first: Vec<u64> = p
        .imap_with(source, |x| x * x, &opts)
        .take(250)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first[249], 249 * 249);
    // A sliding window: never more than `read_ahead` inputs beyond the results taken.
    assert!(
        pulled.get() <= 250 + 100,
        "read {} inputs for 250 results",
        pulled.get()
    );
}

#[test]
fn imap_unordered_returns_every_result_once() {
    let _w = common::watchdog(60, "unordered");
    let p = pool(3);
    let got: Vec<u32> = p
        .imap_unordered(0..2000u32, |x| {
            if x % 7 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            x
        })
        .map(Result::unwrap)
        .collect();
    assert_eq!(got.len(), 2000);
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 2000);
}

#[test]
fn apply_async_runs_in_the_background() {
    let _w = common::watchdog(60, "apply_async");
    let p = pool(2);
    let handles: Vec<_> = (0..5u64)
        .map(|i| p.apply_async(i, |x: u64| x * 10))
        .collect();
    let values: Vec<u64> = handles.into_iter().map(|h| h.get().unwrap()).collect();
    assert_eq!(values, [0, 10, 20, 30, 40]);
    let failing = p.apply_async(9, |x: u32| -> u32 { panic!("async {x}") });
    let err = failing.get().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerPanicked);
    assert!(err.message().starts_with("async 9"));
}

#[test]
fn chunksize_groups_tasks_on_one_worker() {
    let _w = common::watchdog(60, "chunksize");
    let p = pool(2);
    let pids = p
        .map_with(
            0..64u32,
            |_| std::process::id(),
            &MapOptions::new().chunksize(64),
        )
        .unwrap();
    let distinct: HashSet<u32> = pids.into_iter().map(Result::unwrap).collect();
    assert_eq!(distinct.len(), 1, "one chunk runs on one worker");
}

#[test]
fn max_tasks_per_worker_replaces_workers() {
    let _w = common::watchdog(60, "recycling");
    let p = Pool::builder()
        .workers(2)
        .max_tasks_per_worker(3)
        .build()
        .unwrap();
    let before: HashSet<u32> = p.worker_pids().into_iter().collect();
    let pids: HashSet<u32> = p
        .map_with(
            0..30u32,
            |_| std::process::id(),
            &MapOptions::new().chunksize(1),
        )
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // 30 one-task chunks, at most 3 per worker: at least 10 different workers ran them.
    assert!(pids.len() >= 10, "only {} workers ran 30 tasks", pids.len());
    let _ = p.map(0..4u32, |x| x).unwrap();
    let after: HashSet<u32> = p.worker_pids().into_iter().collect();
    assert!(
        before.is_disjoint(&after),
        "the first workers were recycled"
    );
    assert!(common::wait_gone(
        &before.into_iter().collect::<Vec<_>>(),
        Duration::from_secs(2)
    ));
}

static INIT_RUNS: OnceLock<SharedValue<AtomicU64>> = OnceLock::new();
static WORKER_TAG: AtomicU64 = AtomicU64::new(0);

#[test]
fn the_initializer_runs_once_per_worker_before_its_tasks() {
    let _w = common::watchdog(60, "initializer");
    INIT_RUNS.get_or_init(|| SharedValue::new(AtomicU64::new(0)).unwrap());
    // The counter reaches the workers through a static filled before the pool: that needs
    // StartMethod::Fork (copy-on-write inheritance).
    let p = Pool::builder()
        .workers(3)
        .start_method(StartMethod::Fork)
        .worker_init(|index| {
            INIT_RUNS.get().unwrap().fetch_add(1, Ordering::SeqCst);
            WORKER_TAG.store(index as u64 + 1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let tags = p
        .map(0..300u32, |_| WORKER_TAG.load(Ordering::SeqCst))
        .unwrap();
    assert!(
        tags.iter().all(|t| matches!(t, Ok(1..=3))),
        "a task ran before its worker's initializer"
    );
    // Each worker runs it as it starts (asynchronously): wait for all three, then make sure
    // none ran it twice.
    let runs = || INIT_RUNS.get().unwrap().load(Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while runs() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = p.map(0..300u32, |x| x).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(runs(), 3, "once per worker");
}

#[test]
fn a_failing_task_fails_alone() {
    let _w = common::watchdog(120, "task faults");
    let p = pool(2);
    for chunksize in [1, 4, 100] {
        let opts = MapOptions::new().chunksize(chunksize);
        // Task 3 panics, task 5 aborts, task 7 is SIGKILLed: everything else arrives.
        let out = p
            .map_with(
                0..20u32,
                |x| {
                    match x {
                        3 => panic!("task three"),
                        5 => std::process::abort(),
                        7 => {
                            let _ = std::process::Command::new("kill")
                                .args(["-9", &std::process::id().to_string()])
                                .status();
                            std::thread::sleep(Duration::from_secs(10));
                        }
                        _ => {}
                    }
                    x * 2
                },
                &opts,
            )
            .unwrap();
        for (i, r) in out.iter().enumerate() {
            match i {
                3 => {
                    let e = r.as_ref().unwrap_err();
                    assert_eq!((e.kind(), e.task()), (ErrorKind::WorkerPanicked, Some(3)));
                    assert!(e.message().starts_with("task three"));
                }
                5 => assert_eq!(
                    r.as_ref().unwrap_err().signal(),
                    Some(6),
                    "chunksize {chunksize}"
                ),
                7 => assert_eq!(
                    r.as_ref().unwrap_err().signal(),
                    Some(9),
                    "chunksize {chunksize}"
                ),
                _ => assert_eq!(
                    *r.as_ref().unwrap(),
                    i as u32 * 2,
                    "chunksize {chunksize}, task {i}"
                ),
            }
        }
        // The pool serves the next call, whole.
        assert_eq!(
            p.map(0..10u32, |x| x)
                .unwrap()
                .into_iter()
                .filter(Result::is_ok)
                .count(),
            10
        );
        assert_eq!(p.worker_pids().len(), 2);
    }
}

#[test]
fn retries_rerun_idempotent_tasks_whose_worker_died() {
    let _w = common::watchdog(120, "retries");
    // The attempt counter travels to the tasks as a handle, with either start method.
    for method in [StartMethod::ForkServer, StartMethod::Fork] {
        let attempts = SharedValue::new(AtomicU64::new(0)).unwrap();
        let p = Pool::builder()
            .workers(2)
            .start_method(method)
            .build()
            .unwrap();
        let flaky = |(x, attempts): (u32, SharedValue<AtomicU64>)| {
            // Dies on its first two attempts, then succeeds.
            if x == 1 && attempts.fetch_add(1, Ordering::SeqCst) < 2 {
                std::process::abort();
            }
            x + 100
        };
        let tasks = || (0..4u32).map(|x| (x, attempts.clone()));
        let out = p
            .map_with(tasks(), flaky, &MapOptions::new().chunksize(1).retries(2))
            .unwrap();
        assert_eq!(
            out.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [100, 101, 102, 103],
            "{method:?}"
        );
        attempts.store(0, Ordering::SeqCst);
        let out = p
            .map_with(tasks(), flaky, &MapOptions::new().chunksize(1).retries(1))
            .unwrap();
        assert_eq!(
            out[1].as_ref().unwrap_err().kind(),
            ErrorKind::WorkerDied,
            "{method:?}: two deaths, one retry"
        );
        assert_eq!(*out[2].as_ref().unwrap(), 102);
    }
}

#[test]
fn result_space_is_reused_call_after_call() {
    let _w = common::watchdog(120, "arena reuse");
    // 4 KiB of results per worker: any leak of arena space between calls overflows quickly.
    let p = Pool::builder()
        .workers(2)
        .result_bytes(4096)
        .build()
        .unwrap();
    let a = shmpar::SharedArray::from_array(&ndarray::Array1::from_elem(100_000, 1.0f64)).unwrap();
    for round in 0..300 {
        let out = p
            .map_with(0..200u64, |x| x, &MapOptions::new().chunksize(8))
            .unwrap();
        if let Some(Err(e)) = out.iter().find(|r| r.is_err()) {
            panic!("round {round}: {e}");
        }
        assert_eq!(
            p.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap(),
            100_000.0,
            "round {round}"
        );
    }
}
