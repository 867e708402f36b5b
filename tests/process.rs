//! Process: every way a child can end is reported, for started and forked children alike;
//! nothing is left behind.

mod common;

use std::time::Duration;

use shmpar::{ErrorKind, Exit, Process};

fn segfault() {
    // SAFETY: not safe: this test wants a real segmentation fault.
    unsafe { std::ptr::null_mut::<u32>().write_volatile(7) };
}

#[test]
fn every_outcome_of_a_started_child_is_reported() {
    let _w = common::watchdog(60, "started outcomes");
    assert_eq!(
        Process::start(|_: ()| {}, ()).unwrap().join().unwrap(),
        Exit::Ok
    );
    match Process::start(|n: u32| -> () { panic!("bad {n}") }, 42)
        .unwrap()
        .join()
        .unwrap()
    {
        Exit::Panicked(m) => assert!(m.starts_with("bad 42 (at tests/process.rs:"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        Process::start(|_: ()| -> () { Process::exit(3) }, ())
            .unwrap()
            .join()
            .unwrap(),
        Exit::Exited(3)
    );
    assert_eq!(
        Process::start(|_: ()| -> () { std::process::abort() }, ())
            .unwrap()
            .join()
            .unwrap(),
        Exit::Signaled(6)
    );
    assert_eq!(
        Process::start(|_: ()| segfault(), ())
            .unwrap()
            .join()
            .unwrap(),
        Exit::Signaled(11)
    );
    // join_value turns each into a typed error.
    let e = Process::start(|_: ()| -> u8 { panic!("no value") }, ())
        .unwrap()
        .join_value()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WorkerPanicked);
    let e = Process::start(|_: ()| -> u8 { std::process::abort() }, ())
        .unwrap()
        .join_value()
        .unwrap_err();
    assert_eq!((e.kind(), e.signal()), (ErrorKind::WorkerDied, Some(6)));
}

fn shout(words: Vec<String>) -> (usize, String) {
    // A child started by the fork server may print: it holds no lock of the test harness.
    println!("child {} prints {words:?}", std::process::id());
    eprintln!("and to stderr too");
    (words.len(), words.join(" ").to_uppercase())
}

#[test]
fn a_started_child_prints_and_returns_a_value() {
    let _w = common::watchdog(60, "started value");
    // A thread prints all the while, holding stdout's lock most of the time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                print!("");
                eprint!("");
            }
        })
    };
    for _ in 0..20 {
        let child = Process::start(shout, vec!["hello".into(), "world".into()]).unwrap();
        assert_eq!(child.join_value().unwrap(), (2, "HELLO WORLD".to_string()));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    noise.join().unwrap();
}

#[test]
fn every_outcome_of_a_forked_child_is_reported() {
    let _w = common::watchdog(60, "forked outcomes");
    // SAFETY: the closure captures nothing and returns.
    let child = unsafe { Process::fork(|| {}) }.unwrap();
    assert_eq!(child.join().unwrap(), Exit::Ok);
    // SAFETY: the closure captures nothing; the panic is caught in the child.
    match unsafe { Process::fork(|| panic!("bad {}", 42)) }
        .unwrap()
        .join()
        .unwrap()
    {
        Exit::Panicked(m) => assert!(m.starts_with("bad 42 (at tests/process.rs:"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Process::exit, not std::process::exit: the latter flushes stdout, whose lock another
    // test thread may hold at the fork.
    // SAFETY: the closure captures nothing and leaves through `_exit`.
    let child = unsafe { Process::fork(|| Process::exit(3)) }.unwrap();
    assert_eq!(child.join().unwrap(), Exit::Exited(3));
    // SAFETY: the closure captures nothing and aborts.
    let child = unsafe { Process::fork(|| std::process::abort()) }.unwrap();
    assert_eq!(child.join().unwrap(), Exit::Signaled(6));
    // SAFETY: the closure captures nothing and crashes its own process.
    let child = unsafe { Process::fork(segfault) }.unwrap();
    assert_eq!(child.join().unwrap(), Exit::Signaled(11));
}

#[test]
fn join_timeout_kill_and_drop() {
    let _w = common::watchdog(60, "process lifetime");
    let mut p = Process::start(|_: ()| std::thread::sleep(Duration::from_secs(30)), ()).unwrap();
    assert_eq!(p.join_timeout(Duration::from_millis(20)).unwrap(), None);
    p.kill().unwrap();
    assert_eq!(
        p.join_timeout(Duration::from_secs(5)).unwrap(),
        Some(Exit::Signaled(9))
    );
    // Dropped without join: killed and reaped, started or forked.
    let p = Process::start(|_: ()| std::thread::sleep(Duration::from_secs(30)), ()).unwrap();
    let pid = p.pid();
    drop(p);
    assert!(common::wait_gone(&[pid], Duration::from_secs(2)));
    // SAFETY: the closure captures nothing and sleeps.
    let p = unsafe { Process::fork(|| std::thread::sleep(Duration::from_secs(30))) }.unwrap();
    let pid = p.pid();
    drop(p);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn forked_children_see_a_snapshot_of_private_memory() {
    let mut local = vec![1, 2, 3];
    // SAFETY: the child reads its own copy of `local`, which the parent does not drop before
    // `join`.
    let child = unsafe {
        Process::fork(|| {
            assert_eq!(local, vec![1, 2, 3]);
        })
    }
    .unwrap();
    local.push(4); // the child never sees this
    assert_eq!(child.join().unwrap(), Exit::Ok);
}

/// Killing or terminating a child that has ended but was not joined yet does nothing and
/// succeeds (Python's `kill` and `terminate`; `std::process::Child::kill`), whichever process
/// reaped it (the fork server reaps the children it forked as soon as they end). The join then
/// reports how it really ended.
#[test]
fn kill_and_terminate_after_the_child_ended_succeed_and_change_nothing() {
    let _w = common::watchdog(60, "kill after the end");
    let started = Process::start(|_: ()| {}, ()).unwrap();
    // SAFETY: the child runs an empty closure, then `_exit`s.
    let forked = unsafe { Process::fork(|| {}) }.unwrap();
    for mut child in [started, forked] {
        std::thread::sleep(Duration::from_millis(300));
        child.kill().unwrap();
        child.terminate().unwrap();
        assert_eq!(child.join().unwrap(), Exit::Ok);
    }
}

/// `Duration::MAX` says "for ever": a plain join, not an overflow.
#[test]
fn join_timeout_for_ever_is_a_join() {
    let _w = common::watchdog(60, "join_timeout MAX");
    let mut child = Process::start(|_: ()| {}, ()).unwrap();
    assert_eq!(child.join_timeout(Duration::MAX).unwrap(), Some(Exit::Ok));
}
