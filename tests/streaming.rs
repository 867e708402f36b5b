//! Results stream: `imap` yields each result once it and those before it are done,
//! `imap_unordered` in finish order, background results arrive while slow tasks of the same
//! call still run, and the input is read through a sliding window.
//!
//! The time bounds here only tell streaming (milliseconds) from waiting for a whole batch
//! (seconds): they are loose on purpose, for a shared and noisy CI machine. The measured
//! latency is in `benches/pool.rs`.

mod common;

use common::{sleepy, warm_pool};

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use shmpar::{ErrorKind, Event, Pool, SharedValue};

/// Holds the pool's dispatcher in a call (one task that waits for the returned event), so
/// that what is submitted next is queued together and lands in one call once the event is set.
fn hold_dispatcher(p: &Pool) -> (SharedValue<Event>, shmpar::AsyncResult<()>) {
    let started = SharedValue::new(Event::new()).unwrap();
    let release = SharedValue::new(Event::new()).unwrap();
    let gate = p.apply_async(
        (started.clone(), release.clone()),
        |(started, release): (SharedValue<Event>, SharedValue<Event>)| {
            started.set();
            assert!(release.wait_timeout(Duration::from_secs(30)));
        },
    );
    assert!(started.wait_timeout(Duration::from_secs(30)));
    (release, gate)
}

#[test]
fn imap_unordered_hands_out_a_fast_result_while_slow_tasks_run() {
    let _w = common::watchdog(60, "unordered first result");
    let p = warm_pool(2);
    let t = Instant::now();
    let mut it = p.imap_unordered(vec![2000u64, 0, 2000], sleepy);
    let first = it.next().unwrap().unwrap();
    let took = t.elapsed();
    assert_eq!(first, 0);
    assert!(
        took < Duration::from_millis(1000),
        "first result after {took:?}"
    );
    let mut rest: Vec<u64> = it.map(Result::unwrap).collect();
    rest.sort_unstable();
    assert_eq!(rest, [2000, 2000]);
}

#[test]
fn imap_yields_each_result_once_it_and_those_before_it_are_done() {
    let _w = common::watchdog(60, "ordered stream");
    let p = warm_pool(2);
    let t = Instant::now();
    // Task 0 fails at once (Python's course example); the others take 600 ms each.
    let f = |x: u64| -> u64 {
        assert!(x != 0, "task 0 fails");
        sleepy(600)
    };
    let mut at = Vec::new();
    for r in p.imap(0..6u64, f) {
        at.push((r.is_ok(), t.elapsed()));
    }
    assert!(!at[0].0 && at[1..].iter().all(|(ok, _)| *ok));
    // Task 0's error comes at once, not after the tasks that share its call.
    assert!(at[0].1 < Duration::from_millis(400), "{at:?}");
    // Tasks 1 and 2 finish together, 3 and 4 a round later: 4 before 5 is done.
    assert!(at[4].1 + Duration::from_millis(300) < at[5].1, "{at:?}");
    // Five 600 ms tasks on 2 workers: three rounds, not one batch after another.
    assert!(at[5].1 < Duration::from_millis(3000), "{at:?}");
}

#[test]
fn a_background_result_arrives_while_slow_tasks_of_its_call_run() {
    let _w = common::watchdog(60, "early answers");
    let p = warm_pool(2);
    let (release, gate) = hold_dispatcher(&p);
    let slow = p.map_async(vec![2000u64], sleepy);
    let fast = p.map_async(vec![0u64], sleepy);
    let t = Instant::now();
    // Both are queued behind the gate, so they share the next call, one per worker.
    release.set();
    gate.get().unwrap();
    let got = fast.get().unwrap();
    let took = t.elapsed();
    assert_eq!(got, [0]);
    // Answered after the whole call, it would take 2 s.
    assert!(
        took < Duration::from_millis(1000),
        "fast result after {took:?}"
    );
    assert_eq!(slow.get().unwrap(), [2000]);
}

#[test]
fn apply_async_answers_each_task_as_it_finishes() {
    let _w = common::watchdog(60, "apply_async stream");
    let p = warm_pool(2);
    let (release, gate) = hold_dispatcher(&p);
    let mut pending: Vec<_> = [2000u64, 0, 2000]
        .into_iter()
        .map(|ms| p.apply_async(ms, sleepy))
        .collect();
    let t = Instant::now();
    release.set();
    gate.get().unwrap();
    // They share one call: the fast one must not wait for the slow.
    let fast = pending.remove(1).get().unwrap();
    let took = t.elapsed();
    assert_eq!(fast, 0);
    assert!(
        took < Duration::from_millis(1000),
        "fast result after {took:?}"
    );
    for r in pending {
        assert_eq!(r.get().unwrap(), 2000);
    }
}

#[test]
fn a_burst_of_apply_async_calls_shares_one_call() {
    let _w = common::watchdog(60, "gather");
    let p = warm_pool(2);
    // Submitted in a tight loop to an idle dispatcher: the first task must not run alone,
    // with the fast one queued behind its 1.5 s. (The dispatcher waits 100 us for the next
    // arrival; a preempted submitter can miss that, so the bound allows one retry.)
    let fast_within = |limit: Duration| {
        let slow = p.apply_async(1500u64, sleepy);
        let fast = p.apply_async(0u64, sleepy);
        let t = Instant::now();
        fast.get().unwrap();
        let took = t.elapsed();
        slow.get().unwrap();
        took < limit
    };
    assert!(fast_within(Duration::from_millis(1000)) || fast_within(Duration::from_millis(1000)));
}

#[test]
fn imap_cannot_wait_in_a_callback_or_inside_a_call_of_its_pool() {
    let _w = common::watchdog(60, "imap where it cannot wait");
    static POOL: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();
    let p = POOL.get_or_init(|| Pool::new(2).unwrap());
    // In a callback: its tasks would wait for the dispatcher, which runs the callback.
    let (tx, rx) = std::sync::mpsc::channel();
    p.apply_async_callback(
        1u32,
        |x| x,
        move |_| {
            let got: Vec<_> = POOL.get().unwrap().imap(0..3u32, |x| x).collect();
            tx.send(
                got.into_iter()
                    .map(|r| r.map_err(|e| e.kind()))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        },
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        [Err(ErrorKind::InvalidInput)]
    );
    // Inside a call (its combine): the dispatcher would wait for the call lock we hold.
    let a = shmpar::SharedArray::from_array(&ndarray::Array1::from_elem(10_000, 1.0f64)).unwrap();
    let r = p.par_reduce(
        &a,
        |c| c.sum(),
        |x, y| {
            let mut it = POOL.get().unwrap().imap(0..3u32, |x| x);
            let e = it.next().unwrap().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            assert!(it.next().is_none());
            x + y
        },
    );
    assert_eq!(r.unwrap(), 10_000.0);
    // Outside both, the same pool serves imap.
    assert_eq!(
        p.imap(0..3u32, |x| x + 1)
            .map(Result::unwrap)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

#[test]
fn a_panicking_input_comes_after_every_result_before_it() {
    let _w = common::watchdog(60, "input panics");
    let p = warm_pool(2);
    let source = (0..20u32).inspect(|&i| assert!(i != 12, "the input fails at item 12"));
    let mut got = Vec::new();
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        for r in p.imap(source, |x| x * 3) {
            got.push(r.unwrap());
        }
    }));
    let msg = caught.expect_err("the input's panic reaches the caller");
    let text = (msg.downcast_ref::<&str>().copied())
        .or_else(|| msg.downcast_ref::<String>().map(String::as_str));
    assert_eq!(text, Some("the input fails at item 12"));
    assert_eq!(got, (0..12).map(|i| i * 3).collect::<Vec<_>>());
    // The pool serves the next call.
    assert_eq!(p.map(0..3u32, |x| x).unwrap().len(), 3);
}

#[test]
fn imap_unordered_hands_out_every_fast_result_of_a_window_while_a_slow_task_runs() {
    let _w = common::watchdog(60, "finish order");
    let p = warm_pool(2);
    // One slow task first, 100 fast ones behind it, all within one window (the default is
    // 128 on 2 workers): the fast ones come while the slow one still runs.
    let input = std::iter::once(1500u64).chain(std::iter::repeat_n(0, 100));
    let t = Instant::now();
    let mut it = p.imap_unordered(input, sleepy);
    for _ in 0..100 {
        assert_eq!(it.next().unwrap().unwrap(), 0);
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "100 fast results after {took:?}"
    );
    assert_eq!(it.next().unwrap().unwrap(), 1500);
    assert!(it.next().is_none());
}
