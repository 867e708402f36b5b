//! Results stream: `imap` yields each result once it and those before it are done,
//! `imap_unordered` in finish order, background results arrive while slow tasks of the same
//! call still run, and the input is read through a sliding window.
//!
//! The time bounds here only tell streaming (milliseconds) from waiting for a whole batch
//! (seconds): they are loose on purpose, for a shared and noisy CI machine. The measured
//! latency is in `benches/pool.rs`.

mod common;

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use shmpar::Pool;

/// Sleeps `ms` milliseconds and returns it.
fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn warm_pool(workers: usize) -> Pool {
    let p = Pool::new(workers).unwrap();
    // Workers started and the dispatcher's first call made: the timings below are the engine's.
    assert_eq!(p.apply_async(1u32, |x| x + 1).get().unwrap(), 2);
    p
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
    let slow = p.map_async(vec![2000u64, 2000], sleepy);
    let fast = p.map_async(vec![0u64], sleepy);
    let t = Instant::now();
    // All three share the dispatcher's next call (or the fast one the call after the slow
    // pair, if the dispatcher took them first): then it waits for them.
    let got = fast.get().unwrap();
    let took = t.elapsed();
    assert_eq!(got, [0]);
    assert!(
        took < Duration::from_millis(2500),
        "fast result after {took:?}"
    );
    assert_eq!(slow.get().unwrap(), [2000, 2000]);
}

#[test]
fn apply_async_answers_each_task_as_it_finishes() {
    let _w = common::watchdog(60, "apply_async stream");
    let p = warm_pool(2);
    // Submitted together, so they share one call: the fast one must not wait for the slow.
    let mut pending: Vec<_> = [2000u64, 0, 2000]
        .into_iter()
        .map(|ms| p.apply_async(ms, sleepy))
        .collect();
    let t = Instant::now();
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
fn imap_unordered_comes_in_finish_order_across_the_whole_input() {
    let _w = common::watchdog(60, "finish order");
    let p = warm_pool(2);
    // One slow task first; with a sliding window, the 200 fast ones behind it are not held
    // back by it (a batch-by-batch imap returned them only after it).
    let input = std::iter::once(1500u64).chain(std::iter::repeat_n(0, 200));
    let order: Vec<u64> = p
        .imap_unordered(input, sleepy)
        .map(Result::unwrap)
        .collect();
    assert_eq!(order.len(), 201);
    let slow_at = order.iter().position(|&ms| ms == 1500).unwrap();
    assert!(slow_at > 100, "the slow task came {slow_at}th");
}
