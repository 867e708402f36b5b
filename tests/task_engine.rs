//! The task engine's fixes: a task fails for size only when its own result is larger than the
//! result space; a time-out is `TimedOut` even before any chunk ran, and a stopped worker is
//! replaced; a call from `combine` is an error, not a deadlock.

mod common;

use std::time::{Duration, Instant};

use ndarray::Ix1;
use shmpar::{ErrorKind, MapOptions, Pool, SharedArray};

#[test]
fn many_small_results_never_fail_for_size() {
    let _w = common::watchdog(120, "result space");
    // 64 KiB of result space per worker: 200,000 results of ~5 bytes fill it many times over.
    let p = Pool::builder()
        .workers(2)
        .result_bytes(64 << 10)
        .build()
        .unwrap();
    let out = p.map(0..200_000u64, |x| x * 2).unwrap();
    let bad: Vec<_> = out
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .take(3)
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    assert!(
        out.iter()
            .enumerate()
            .all(|(i, r)| *r.as_ref().unwrap() == i as u64 * 2)
    );
    // Forty results of 20 KiB each with 64 KiB of space: each fits alone, so each arrives.
    let big = p
        .map_with(
            0..40u32,
            |i| vec![i as u8; 20 << 10],
            &MapOptions::new().chunksize(4),
        )
        .unwrap();
    assert!(
        big.iter().all(Result::is_ok),
        "{:?}",
        big.iter().find(|r| r.is_err())
    );
    // A result larger than the whole space fails alone, with the kind that says so.
    let huge = p
        .map(0..3u32, |i| {
            if i == 1 {
                vec![0u8; 100 << 10]
            } else {
                vec![1u8]
            }
        })
        .unwrap();
    assert_eq!(
        huge[1].as_ref().unwrap_err().kind(),
        ErrorKind::ResultTooLarge
    );
    assert!(huge[0].is_ok() && huge[2].is_ok());
}

#[test]
fn ten_million_tiny_results_arrive_without_an_error_five_times_over() {
    let _w = common::watchdog(600, "ten million results");
    // The case: `pool.map(0..10_000_000u64, |x| x * 2)` on 2 workers, at the default
    // result space, used to fail a different handful of tasks each run for room.
    let p = Pool::new(2).unwrap();
    for run in 0..5 {
        let out = p.map(0..10_000_000u64, |x| x * 2).unwrap();
        assert_eq!(out.len(), 10_000_000);
        let wrong = out
            .iter()
            .enumerate()
            .find(|&(i, r)| r.as_ref().ok() != Some(&(i as u64 * 2)));
        assert!(wrong.is_none(), "run {run}: {wrong:?}");
    }
}

#[test]
fn a_timeout_before_any_chunk_ran_is_timed_out_and_the_stopped_worker_is_replaced() {
    let _w = common::watchdog(60, "stopped worker");
    let p = Pool::builder()
        .workers(1)
        .call_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let a = SharedArray::<f64, Ix1>::zeros(1000).unwrap();
    let stopped = p.worker_pids()[0];
    let status = std::process::Command::new("kill")
        .args(["-STOP", &stopped.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t = Instant::now();
    let err = p.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // The stopped worker was killed and replaced: the next call works.
    assert_eq!(p.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap(), 0.0);
    assert!(!p.worker_pids().contains(&stopped));
}

#[test]
fn calling_the_pool_from_combine_is_an_error() {
    let _w = common::watchdog(60, "reentrant combine");
    static POOL: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();
    let p = POOL.get_or_init(|| Pool::new(2).unwrap());
    let a = SharedArray::from_array(&ndarray::Array1::from_elem(100_000, 1.0f64)).unwrap();
    let r = p.par_reduce(
        &a,
        |c| c.sum(),
        |x, y| {
            // A nested call on the same pool from `combine`, which runs while the call is open.
            let inner =
                POOL.get()
                    .unwrap()
                    .par_reduce_range(10, |r, _| r.end - r.start, |a, b| a + b);
            assert_eq!(inner.unwrap_err().kind(), ErrorKind::InvalidInput);
            x + y
        },
    );
    assert_eq!(r.unwrap(), 100_000.0);
}

#[test]
fn an_imap_error_names_its_input_index() {
    let _w = common::watchdog(60, "imap index");
    let p = Pool::new(2).unwrap();
    let opts = MapOptions::new().read_ahead(100);
    for unordered in [false, true] {
        let f = |x: u32| -> u32 {
            if x == 180 {
                panic!("task 180");
            }
            x
        };
        let results: Vec<_> = if unordered {
            p.imap_unordered(0..300u32, f).collect()
        } else {
            p.imap_with(0..300u32, f, &opts).collect()
        };
        let errs: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].task(), Some(180), "unordered: {unordered}");
    }
}

/// A value whose `Serialize` fails for 13 and panics for 17, and whose `Deserialize` fails
/// for 7.
#[derive(Debug, PartialEq)]
struct Picky(u32);

impl serde::Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 13 {
            return Err(serde::ser::Error::custom("13 will not be written"));
        }
        if self.0 == 17 {
            panic!("17 panics while it is written");
        }
        s.serialize_u32(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = <u32 as serde::Deserialize>::deserialize(d)?;
        if v == 7 {
            return Err(serde::de::Error::custom("7 will not be read"));
        }
        Ok(Picky(v))
    }
}

#[test]
fn a_failing_serialize_or_deserialize_fails_only_its_task() {
    let _w = common::watchdog(60, "picky");
    let p = Pool::new(2).unwrap();
    for chunksize in [1, 5, 40] {
        let out = p
            .map_with(0..40u32, Picky, &MapOptions::new().chunksize(chunksize))
            .unwrap();
        for (i, r) in out.iter().enumerate() {
            match i {
                7 => assert_eq!(r.as_ref().unwrap_err().kind(), ErrorKind::Decode),
                13 | 17 => assert_eq!(r.as_ref().unwrap_err().kind(), ErrorKind::WorkerPanicked),
                _ => assert_eq!(
                    r.as_ref().unwrap(),
                    &Picky(i as u32),
                    "chunksize {chunksize}"
                ),
            }
        }
    }
}

#[test]
fn a_dropped_pool_cancels_its_queued_tasks_and_join_waits_for_them() {
    let _w = common::watchdog(60, "shutdown");
    // Dropped: every queued task either ran or is Cancelled, never "WorkerDied".
    let p = Pool::new(1).unwrap();
    let slow = p.apply_async(200, |ms: u64| {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    });
    let queued: Vec<_> = (0..6u32)
        .map(|i| p.apply_async(i, |x: u32| x + 1))
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    drop(p);
    assert_eq!(slow.get().unwrap(), 200);
    let mut cancelled = 0;
    for q in queued {
        match q.get() {
            Ok(v) => assert!((1..=6).contains(&v)),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
                cancelled += 1;
            }
        }
    }
    eprintln!("{cancelled} of 6 queued tasks were cancelled");
    // Joined: every one runs.
    let p = Pool::new(2).unwrap();
    let pending: Vec<_> = (0..20u32)
        .map(|i| p.apply_async(i, |x: u32| x * 3))
        .collect();
    p.join();
    let all: Vec<u32> = pending.into_iter().map(|r| r.get().unwrap()).collect();
    assert_eq!(all, (0..20).map(|i| i * 3).collect::<Vec<_>>());
}

#[test]
fn terminate_stops_a_running_task_at_once() {
    let _w = common::watchdog(60, "terminate");
    let p = Pool::new(1).unwrap();
    let worker = p.worker_pids()[0];
    let slow = p.apply_async(30, |s: u64| std::thread::sleep(Duration::from_secs(s)));
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    p.terminate();
    let err = slow.get().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerDied, "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(common::wait_gone(&[worker], Duration::from_secs(2)));
}

/// The threads of this whole test process. Other tests run alongside (a watchdog and maybe a
/// dispatcher each), so a bound on growth allows a few; a thread per task would be hundreds.
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_thousand_apply_async_calls_use_few_threads_and_all_workers() {
    let _w = common::watchdog(120, "apply_async");
    let p = Pool::new(2).unwrap();
    let before = threads();
    let t = Instant::now();
    let pending: Vec<_> = (0..1000u64)
        .map(|i| {
            p.apply_async(i, |i: u64| {
                std::thread::sleep(Duration::from_millis(2));
                i * 2
            })
        })
        .collect();
    let during = threads();
    let values: Vec<u64> = pending.into_iter().map(|r| r.get().unwrap()).collect();
    let took = t.elapsed();
    assert_eq!(values, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
    assert!(
        during <= before + 8,
        "{before} threads before, {during} while 1,000 tasks were pending"
    );
    // 1,000 x 2 ms on 2 workers: about 1 s, not the 2 s of one task at a time.
    assert!(took < Duration::from_millis(1800), "took {took:?}");
    eprintln!("1,000 apply_async tasks of 2 ms on 2 workers: {took:?}, {during} threads");
}

#[test]
fn get_timeout_tells_not_ready_from_a_task_that_timed_out() {
    let _w = common::watchdog(60, "get_timeout");
    let p = Pool::builder()
        .workers(1)
        .call_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut r = p.apply_async(10, |s: u64| std::thread::sleep(Duration::from_secs(s)));
    let not_ready = r.get_timeout(Duration::from_millis(10)).unwrap_err();
    assert_eq!(
        (not_ready.kind(), not_ready.task()),
        (ErrorKind::TimedOut, None)
    );
    let timed_out = r.get_timeout(Duration::from_secs(20)).unwrap_err();
    assert_eq!(
        (timed_out.kind(), timed_out.task()),
        (ErrorKind::TimedOut, Some(0))
    );
    // The error stays; the task is not "lost".
    assert_eq!(r.get().unwrap_err().kind(), ErrorKind::TimedOut);
}

#[test]
fn map_async_returns_every_value_in_order_or_the_first_error() {
    let _w = common::watchdog(120, "map_async");
    let p = Pool::new(2).unwrap();
    let before = threads();
    let t = Instant::now();
    let squares = p.map_async(0..1000u64, |x| {
        std::thread::sleep(Duration::from_millis(2));
        x * x
    });
    // Runs alongside other background work, and the caller is free meanwhile.
    let other = p.apply_async(7u32, |x| x + 1);
    let during = threads();
    assert_eq!(
        squares.get().unwrap(),
        (0..1000u64).map(|x| x * x).collect::<Vec<_>>()
    );
    let took = t.elapsed();
    assert_eq!(other.get().unwrap(), 8);
    assert!(
        during <= before + 8,
        "{before} threads before, {during} during"
    );
    // 1,000 x 2 ms on 2 workers: about 1 s, not the 2 s of one task at a time.
    assert!(took < Duration::from_millis(1800), "took {took:?}");

    // The first failing task by input index, named by its index; the others still ran.
    let failing = p.map_async(vec![3u32, 0, 5, 0], |x| 30 / x);
    let err = failing.get().unwrap_err();
    assert_eq!(
        (err.kind(), err.task()),
        (ErrorKind::WorkerPanicked, Some(1)),
        "{err}"
    );

    // No items: an empty result at once.
    assert_eq!(
        p.map_async(Vec::<u8>::new(), |x| x).get().unwrap(),
        Vec::<u8>::new()
    );
}

#[test]
fn map_async_ends_with_an_error_when_the_pool_is_terminated() {
    let _w = common::watchdog(60, "map_async terminate");
    let p = Pool::new(1).unwrap();
    let slow = p.apply_async(300u64, |ms| std::thread::sleep(Duration::from_millis(ms)));
    let queued = p.map_async(0..4u32, |x| x);
    let mut queued_again = p.map_async(0..4u32, |x| x);
    std::thread::sleep(Duration::from_millis(50));
    p.terminate();
    assert!(slow.get().is_err());
    for err in [
        queued.get().unwrap_err(),
        queued_again
            .get_timeout(Duration::from_secs(10))
            .unwrap_err(),
    ] {
        assert!(
            matches!(err.kind(), ErrorKind::Cancelled | ErrorKind::WorkerDied),
            "{err}"
        );
        eprintln!("map_async after terminate: {err}");
    }
}

/// The state letter of process `pid` in /proc (`T` when stopped).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

#[test]
fn dropping_a_pool_with_a_stopped_worker_is_quick() {
    let _w = common::watchdog(60, "drop stopped");
    let p = Pool::new(2).unwrap();
    let pids = p.worker_pids();
    let status = std::process::Command::new("kill")
        .args(["-STOP", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t = Instant::now();
    while proc_state(pids[0]) != Some('T') {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the worker never stopped"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let t = Instant::now();
    drop(p);
    let took = t.elapsed();
    // It used to wait out a 2 s grace period for a worker that could never exit.
    assert!(took < Duration::from_millis(1000), "drop took {took:?}");
    assert!(common::wait_gone(&pids, Duration::from_secs(2)));
}

#[test]
fn apply_async_callback_is_called_once_per_task_even_when_one_panics() {
    let _w = common::watchdog(60, "callbacks");
    let p = Pool::new(2).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..200u32 {
        let tx = tx.clone();
        p.apply_async_callback(
            i,
            |x| {
                assert!(x != 13, "unlucky");
                x * 2
            },
            move |r| {
                // A callback that panics costs only itself.
                assert!(i != 77, "callback panics");
                tx.send((i, r)).unwrap();
            },
        );
    }
    drop(tx);
    // join returns only after every callback ran.
    p.join();
    let mut got: Vec<(u32, shmpar::Result<u32>)> = rx.try_iter().collect();
    got.sort_by_key(|(i, _)| *i);
    assert_eq!(
        got.len(),
        199,
        "every task but the one whose callback panicked"
    );
    for (i, r) in got {
        if i == 13 {
            let e = r.unwrap_err();
            assert_eq!(
                (e.kind(), e.task()),
                (ErrorKind::WorkerPanicked, Some(0)),
                "{e}"
            );
        } else {
            assert_eq!(r.unwrap(), i * 2);
        }
    }
}

#[test]
fn a_task_that_cannot_be_submitted_calls_its_callback_at_once() {
    let _w = common::watchdog(60, "callback submit error");
    let p = Pool::new(1).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let caller = std::thread::current().id();
    p.apply_async_callback(
        Picky(13),
        |x| x.0,
        move |r| {
            tx.send((std::thread::current().id(), r)).unwrap();
        },
    );
    // Already answered, on this thread, with the serialisation error.
    let (thread, r) = rx.try_recv().unwrap();
    assert_eq!(thread, caller);
    assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput);
    // A result that does not decode fails in the callback too, naming its task.
    let (tx, rx) = std::sync::mpsc::channel();
    p.apply_async_callback(7u32, Picky, move |r| tx.send(r).unwrap());
    p.join();
    let e = rx.try_recv().unwrap().unwrap_err();
    assert_eq!((e.kind(), e.task()), (ErrorKind::Decode, Some(0)), "{e}");
}

#[test]
fn a_callback_that_waits_for_the_same_pool_gets_an_error_not_a_deadlock() {
    let _w = common::watchdog(60, "callback waits");
    let p = Pool::new(1).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let later = std::sync::Arc::new(std::sync::Mutex::new(None));
    let for_callback = std::sync::Arc::clone(&later);
    // The callback's task runs in a call of its own (it says when it has started); the task
    // whose result the callback waits for is submitted after that and names a shared object,
    // so it cannot join the running call: it runs in the next call, after the callback.
    let started = shmpar::SharedValue::new(shmpar::Event::new()).unwrap();
    p.apply_async_callback(
        (200u64, started.clone()),
        |(ms, started): (u64, shmpar::SharedValue<shmpar::Event>)| {
            started.set();
            std::thread::sleep(Duration::from_millis(ms));
        },
        move |_| {
            let other: Option<shmpar::AsyncResult<u32>> = for_callback.lock().unwrap().take();
            tx.send(other.map(|o| o.get())).unwrap();
        },
    );
    assert!(started.wait_timeout(Duration::from_secs(20)));
    let named = started.clone();
    *later.lock().unwrap() =
        Some(p.apply_async(named, |_: shmpar::SharedValue<shmpar::Event>| 1u32));
    p.join();
    let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let e = got.expect("submitted before the callback ran").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

/// A value whose `Deserialize` panics for 9.
#[derive(Debug, serde::Serialize)]
struct Panicky(u32);

impl<'de> serde::Deserialize<'de> for Panicky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = <u32 as serde::Deserialize>::deserialize(d)?;
        assert!(v != 9, "9 panics while it is read");
        Ok(Panicky(v))
    }
}

#[test]
fn a_result_that_fails_to_decode_in_map_async_names_its_task() {
    let _w = common::watchdog(60, "map_async decode");
    let p = Pool::new(2).unwrap();
    let e = p.map_async(vec![1u32, 2, 7, 3], Picky).get().unwrap_err();
    assert_eq!((e.kind(), e.task()), (ErrorKind::Decode, Some(2)), "{e}");
    // A panicking `Deserialize` is a decoding error of its task too, and the callback runs.
    let e = p.map_async(vec![1u32, 9], Panicky).get().unwrap_err();
    assert_eq!((e.kind(), e.task()), (ErrorKind::Decode, Some(1)), "{e}");
    let (tx, rx) = std::sync::mpsc::channel();
    p.apply_async_callback(9u32, Panicky, move |r| tx.send(r.map(|v| v.0)).unwrap());
    p.join();
    let e = rx.try_recv().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode, "{e}");
}
