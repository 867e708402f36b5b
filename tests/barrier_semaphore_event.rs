//! Barrier, Semaphore and Event across processes, with and without timeouts.

mod common;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmpar::{Barrier, ErrorKind, Event, Process, Semaphore, SharedValue};

#[test]
fn barrier_releases_all_parties_together() {
    let _w = common::watchdog(60, "barrier");
    let n = 4u32;
    let barrier = SharedValue::new(Barrier::new(n)).unwrap();
    let arrived = SharedValue::new(AtomicU32::new(0)).unwrap();
    let seen = SharedValue::new([AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)]).unwrap();
    let leaders = SharedValue::new(AtomicU32::new(0)).unwrap();
    let kids: Vec<Process> = (0..n - 1)
        .map(|i| {
            let (barrier, arrived, seen, leaders) = (&barrier, &arrived, &seen, &leaders);
            // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
            unsafe {
                Process::fork(move || {
                    // Three rounds: the barrier is reusable.
                    for round in 0..3 {
                        std::thread::sleep(Duration::from_millis(u64::from(i) * 10));
                        arrived.fetch_add(1, Ordering::SeqCst);
                        if barrier.wait_timeout(Duration::from_secs(10)).unwrap() {
                            leaders.fetch_add(1, Ordering::SeqCst);
                        }
                        // Everyone of this round arrived before anyone left.
                        seen[round].fetch_max(arrived.load(Ordering::SeqCst), Ordering::SeqCst);
                        assert!(arrived.load(Ordering::SeqCst) >= (round as u32 + 1) * n);
                    }
                })
            }
            .unwrap()
        })
        .collect();
    for round in 0..3u32 {
        arrived.fetch_add(1, Ordering::SeqCst);
        if barrier.wait_timeout(Duration::from_secs(10)).unwrap() {
            leaders.fetch_add(1, Ordering::SeqCst);
        }
        assert!(arrived.load(Ordering::SeqCst) >= (round + 1) * n);
    }
    for k in kids {
        k.join().unwrap().into_result().unwrap();
    }
    assert_eq!(leaders.load(Ordering::SeqCst), 3, "one leader per round");
}

#[test]
fn barrier_times_out_when_a_party_is_missing() {
    let _w = common::watchdog(60, "barrier timeout");
    let barrier = SharedValue::new(Barrier::new(3)).unwrap();
    // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
    let child = unsafe {
        Process::fork(|| {
            let err = barrier
                .wait_timeout(Duration::from_millis(300))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::TimedOut);
        })
    }
    .unwrap();
    let t = Instant::now();
    let err = barrier
        .wait_timeout(Duration::from_millis(300))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    assert!(t.elapsed() < Duration::from_secs(2));
    child.join().unwrap().into_result().unwrap();
    // Both took their arrivals back: a full set of three still opens it.
    let kids: Vec<Process> = (0..2)
        .map(|_| {
            // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
            unsafe {
                Process::fork(|| {
                    barrier.wait_timeout(Duration::from_secs(10)).unwrap();
                })
            }
            .unwrap()
        })
        .collect();
    barrier.wait_timeout(Duration::from_secs(10)).unwrap();
    for k in kids {
        k.join().unwrap().into_result().unwrap();
    }
}

#[test]
fn semaphore_bounds_concurrency() {
    let _w = common::watchdog(60, "semaphore");
    let slots = SharedValue::new(Semaphore::new(2)).unwrap();
    let inside = SharedValue::new(AtomicU64::new(0)).unwrap();
    let most = SharedValue::new(AtomicU64::new(0)).unwrap();
    let kids: Vec<Process> = (0..5)
        .map(|_| {
            // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
            unsafe {
                Process::fork(|| {
                    for _ in 0..20 {
                        slots.acquire_timeout(Duration::from_secs(10)).unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(200));
                        inside.fetch_sub(1, Ordering::SeqCst);
                        slots.release().unwrap();
                    }
                })
            }
            .unwrap()
        })
        .collect();
    for k in kids {
        k.join().unwrap().into_result().unwrap();
    }
    assert!(most.load(Ordering::SeqCst) <= 2);
    assert_eq!(slots.available(), 2);
    let empty = SharedValue::new(Semaphore::new(0)).unwrap();
    let t = Instant::now();
    assert_eq!(
        empty
            .acquire_timeout(Duration::from_millis(50))
            .unwrap_err()
            .kind(),
        ErrorKind::TimedOut
    );
    assert!(t.elapsed() >= Duration::from_millis(50));
}

#[test]
fn event_wakes_every_waiter() {
    let _w = common::watchdog(60, "event");
    let go = SharedValue::new(Event::new()).unwrap();
    let woke = SharedValue::new(AtomicU32::new(0)).unwrap();
    let kids: Vec<Process> = (0..3)
        .map(|_| {
            // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
            unsafe {
                Process::fork(|| {
                    assert!(go.wait_timeout(Duration::from_secs(10)));
                    woke.fetch_add(1, Ordering::SeqCst);
                })
            }
            .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(woke.load(Ordering::SeqCst), 0);
    go.set();
    for k in kids {
        k.join().unwrap().into_result().unwrap();
    }
    assert_eq!(woke.load(Ordering::SeqCst), 3);
    go.clear();
    assert!(!go.wait_timeout(Duration::from_millis(20)));
}

/// Waits at the barrier for up to 20 s; returns how that ended, as a kind (`None`: it opened).
fn wait_kind(barrier: SharedValue<Barrier>) -> Option<String> {
    match barrier.wait_timeout(Duration::from_secs(20)) {
        Ok(_) => None,
        Err(e) => Some(format!("{:?}", e.kind())),
    }
}

/// Starts `n` clean children waiting at the barrier, and waits until they all do (counted on
/// top of the parties already there).
fn waiting_children(barrier: &SharedValue<Barrier>, n: u32) -> Vec<Process<Option<String>>> {
    let already = barrier.n_waiting();
    let kids: Vec<Process<Option<String>>> = (0..n)
        .map(|_| Process::start(wait_kind, barrier.clone()).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while barrier.n_waiting() < already + n {
        assert!(Instant::now() < deadline, "the children never arrived");
        std::thread::sleep(Duration::from_millis(1));
    }
    kids
}

#[test]
fn abort_fails_every_waiter_and_every_later_wait_until_reset() {
    let _w = common::watchdog(60, "barrier abort");
    let barrier = SharedValue::new(Barrier::new(4)).unwrap();
    let kids = waiting_children(&barrier, 2);
    let t = Instant::now();
    barrier.abort();
    for k in kids {
        assert_eq!(k.join_value().unwrap().as_deref(), Some("Broken"));
    }
    // At once, not after their 20 s time-outs.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(barrier.is_broken());
    assert_eq!(barrier.wait().unwrap_err().kind(), ErrorKind::Broken);
    assert_eq!(
        barrier.n_waiting(),
        0,
        "the waiters took their arrivals back"
    );
    // Reset: a full set of parties passes again.
    barrier.reset();
    let kids = waiting_children(&barrier, 3);
    assert!(
        barrier.wait_timeout(Duration::from_secs(20)).unwrap(),
        "the last to arrive leads"
    );
    for k in kids {
        assert_eq!(k.join_value().unwrap(), None);
    }
}

#[test]
fn reset_fails_the_waiters_of_the_generation_it_ends_and_clears_a_dead_party() {
    let _w = common::watchdog(60, "barrier reset");
    let barrier = SharedValue::new(Barrier::new(3)).unwrap();
    // A party that dies while it waits stays counted...
    let mut dead = waiting_children(&barrier, 1);
    dead[0].kill().unwrap();
    let _ = dead.remove(0).join();
    assert_eq!(barrier.n_waiting(), 1);
    let kids = waiting_children(&barrier, 1);
    assert_eq!(barrier.n_waiting(), 2);
    // ...until a reset, which fails the live waiter (its generation did not open) and clears
    // the count.
    barrier.reset();
    for k in kids {
        assert_eq!(k.join_value().unwrap().as_deref(), Some("Broken"));
    }
    assert!(!barrier.is_broken());
    assert_eq!(barrier.n_waiting(), 0);
    let kids = waiting_children(&barrier, 2);
    assert!(barrier.wait_timeout(Duration::from_secs(20)).unwrap());
    for k in kids {
        assert_eq!(k.join_value().unwrap(), None);
    }
}

#[test]
fn releasing_past_the_largest_count_is_an_error_not_a_wrap_to_zero() {
    let s = SharedValue::new(Semaphore::new(u32::MAX - 1)).unwrap();
    s.release().unwrap();
    assert_eq!(s.available(), u32::MAX);
    let err = s.release().unwrap_err();
    assert_eq!(err.kind(), shmpar::ErrorKind::InvalidInput, "{err}");
    // The count is where it was: every permit is still there.
    assert_eq!(s.available(), u32::MAX);
    s.try_acquire().unwrap();
    assert_eq!(s.available(), u32::MAX - 1);
}
