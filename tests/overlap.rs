//! Background tasks overlap: a task submitted while the dispatcher's call runs joins that call
//! and starts on the first idle worker, instead of waiting for the call's slowest task.
//!
//! The time bounds only tell "ran on an idle worker" (tens of milliseconds) from "waited for
//! the slow task" (a second or more): they are loose on purpose, for a noisy CI machine.

mod common;

use common::{sleepy, warm_pool};

use std::time::{Duration, Instant};

use shmpar::{MapOptions, Pool, SharedValue};

#[test]
fn a_task_submitted_during_a_call_runs_on_the_idle_worker() {
    let _w = common::watchdog(60, "idle worker");
    let p = warm_pool(2);
    let slow = p.apply_async(1500u64, sleepy);
    // The slow task's call is running on one worker; the other is idle.
    std::thread::sleep(Duration::from_millis(150));
    let t = Instant::now();
    let fast = p.apply_async(0u64, sleepy);
    assert_eq!(fast.get().unwrap(), 0);
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(700),
        "a task behind a running call waited {took:?} with a worker idle"
    );
    assert_eq!(slow.get().unwrap(), 1500);
}

#[test]
fn two_map_asyncs_share_the_workers() {
    let _w = common::watchdog(60, "two map_async");
    let p = warm_pool(2);
    let t = Instant::now();
    let long = p.map_async(vec![1500u64], sleepy);
    std::thread::sleep(Duration::from_millis(100));
    let short = p.map_async(vec![100u64; 4], sleepy);
    assert_eq!(short.get().unwrap(), vec![100; 4]);
    let took = t.elapsed();
    // Four 100 ms tasks on the one free worker: about 0.5 s; waiting for the long one: 1.9 s.
    assert!(took < Duration::from_millis(1200), "took {took:?}");
    assert_eq!(long.get().unwrap(), vec![1500]);
}

#[test]
fn an_unordered_window_refills_while_a_slow_task_runs() {
    let _w = common::watchdog(60, "unordered refill");
    let p = warm_pool(2);
    // A window of two: the slow task and one fast one are out; each fast result taken lets
    // the next item in, while the slow task still runs on the other worker.
    let opts = MapOptions::new().chunksize(1).read_ahead(2);
    let items = vec![1500u64, 30, 30, 30, 30, 30, 30, 30];
    let t = Instant::now();
    let mut fast_done = Vec::new();
    let mut slow = 0;
    for r in p.imap_unordered_with(items, sleepy, &opts) {
        match r.unwrap() {
            30 => fast_done.push(t.elapsed()),
            ms => slow = ms,
        }
    }
    assert_eq!((fast_done.len(), slow), (7, 1500));
    // Seven 30 ms tasks one after another on the free worker: about 0.25 s.
    let last_fast = *fast_done.last().unwrap();
    assert!(
        last_fast < Duration::from_millis(1000),
        "the fast tasks finished at {fast_done:?}"
    );
}

#[test]
fn tasks_from_many_threads_during_calls_all_come_back_right() {
    let _w = common::watchdog(120, "many threads");
    let p = warm_pool(2);
    let counter = SharedValue::new(std::sync::atomic::AtomicU64::new(0)).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let p = &p;
            let counter = counter.clone();
            s.spawn(move || {
                let mut pending = Vec::new();
                for i in 0..1500u64 {
                    let x = t * 1_000_000 + i;
                    if i % 100 == 7 {
                        // Some tasks name a shared object, some sleep: calls of every shape.
                        pending.push((
                            x,
                            p.apply_async(
                                (x, counter.clone()),
                                |(x, c): (u64, SharedValue<std::sync::atomic::AtomicU64>)| {
                                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    std::thread::sleep(Duration::from_millis(2));
                                    x * 3
                                },
                            ),
                        ));
                    } else {
                        pending.push((x, p.apply_async(x, |x: u64| x * 3)));
                    }
                    if i % 500 == 0 {
                        std::thread::sleep(Duration::from_millis(3));
                    }
                }
                for (x, r) in pending {
                    assert_eq!(r.get().unwrap(), x * 3);
                }
            });
        }
    });
    assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 4 * 15);
}

#[test]
fn a_worker_dying_in_a_joined_task_fails_that_task_alone() {
    let _w = common::watchdog(60, "death in a joined task");
    let p = warm_pool(2);
    let slow = p.apply_async(800u64, sleepy);
    std::thread::sleep(Duration::from_millis(100));
    // These join the running call; task 5 kills its worker.
    let joined: Vec<_> = (0..12u64)
        .map(|i| {
            p.apply_async(i, |i: u64| {
                if i == 5 {
                    std::process::abort();
                }
                i * 10
            })
        })
        .collect();
    for (i, r) in joined.into_iter().enumerate() {
        match r.get() {
            Ok(v) => assert_eq!(v, i as u64 * 10),
            Err(e) => {
                assert_eq!((i, e.kind()), (5, shmpar::ErrorKind::WorkerDied), "{e}");
            }
        }
    }
    assert_eq!(slow.get().unwrap(), 800);
}

#[test]
fn joined_tasks_that_fill_the_result_space_run_again_in_the_next_call() {
    let _w = common::watchdog(60, "joined results overflow");
    let p = Pool::builder()
        .workers(2)
        .result_bytes(64 << 10)
        .build()
        .unwrap();
    assert_eq!(p.apply_async(1u32, |x| x + 1).get().unwrap(), 2);
    let slow = p.apply_async(600u64, sleepy);
    std::thread::sleep(Duration::from_millis(100));
    // 40 results of 10 KiB: far more than one worker's 64 KiB in one call.
    let joined: Vec<_> = (0..40u32)
        .map(|i| p.apply_async(i, |i: u32| vec![i as u8; 10 << 10]))
        .collect();
    for (i, r) in joined.into_iter().enumerate() {
        assert_eq!(r.get().unwrap(), vec![i as u8; 10 << 10]);
    }
    assert_eq!(slow.get().unwrap(), 600);
}

#[test]
fn a_task_behind_a_callback_task_is_still_answered_early() {
    let _w = common::watchdog(60, "callback call");
    let p = warm_pool(2);
    let (tx, rx) = std::sync::mpsc::channel();
    p.apply_async_callback(1200u64, sleepy, move |r| tx.send(r.unwrap()).unwrap());
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    assert_eq!(p.apply_async(0u64, sleepy).get().unwrap(), 0);
    let took = t.elapsed();
    assert!(took < Duration::from_millis(700), "waited {took:?}");
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), 1200);
}
