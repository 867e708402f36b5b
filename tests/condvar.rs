//! Condvar across processes: no lost wake-up in a long ping-pong, and a timed wait that ends.

mod common;

use std::time::{Duration, Instant};

use shmpar::{Condvar, Process, SharedValue, ShmMutex, ShmSafe};

#[repr(C)]
struct Turn {
    /// Whose turn: even = the parent's, odd = the child's; counts the moves.
    moves: ShmMutex<u64>,
    changed: Condvar,
}

// SAFETY: a mutex of an integer and a condition variable: no pointers, no Drop.
unsafe impl ShmSafe for Turn {}

const ROUNDS: u64 = 2_000;

/// Takes every turn whose parity is `me`; false if a wait ran out (a lost wake-up).
fn play(turn: &Turn, me: u64) -> bool {
    for _ in 0..ROUNDS {
        let guard = turn.moves.lock().unwrap();
        let (mut moves, timed_out) = turn
            .changed
            .wait_while_timeout(guard, Duration::from_secs(10), |m| *m % 2 != me)
            .unwrap();
        if timed_out {
            return false;
        }
        *moves += 1;
        drop(moves);
        turn.changed.notify_all();
    }
    true
}

#[test]
fn ping_pong_between_processes_loses_no_wake_up() {
    let _w = common::watchdog(120, "condvar ping-pong");
    let turn = SharedValue::new(Turn {
        moves: ShmMutex::new(0),
        changed: Condvar::new(),
    })
    .unwrap();
    let child = Process::start(|t: SharedValue<Turn>| play(&t, 1), turn.clone()).unwrap();
    let t = Instant::now();
    assert!(play(&turn, 0), "the parent waited 10 s for a turn");
    assert!(
        child.join_value().unwrap(),
        "the child waited 10 s for a turn"
    );
    assert_eq!(*turn.moves.lock().unwrap(), 2 * ROUNDS);
    eprintln!("{} hand-overs in {:?}", 2 * ROUNDS, t.elapsed());
}

#[test]
fn a_wait_with_nobody_to_notify_times_out_and_relocks() {
    let _w = common::watchdog(60, "condvar timeout");
    let m = ShmMutex::new(5u32);
    let cv = Condvar::new();
    let t = Instant::now();
    let (guard, timed_out) = cv.wait_timeout(m.lock().unwrap(), Duration::from_millis(100));
    let guard = guard.unwrap();
    assert!(timed_out);
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(*guard, 5);
    // The mutex is held again: another lock attempt fails at once.
    assert!(m.try_lock().is_err());
}
