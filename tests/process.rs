//! Process: every way a child can end is reported; nothing is left behind.

mod common;

use std::time::Duration;

use shmpar::{Exit, Process};

#[test]
fn every_outcome_is_reported() {
    let _w = common::watchdog(60, "process outcomes");
    assert_eq!(Process::spawn(|| {}).unwrap().join().unwrap(), Exit::Ok);
    match Process::spawn(|| panic!("bad {}", 42))
        .unwrap()
        .join()
        .unwrap()
    {
        Exit::Panicked(m) => assert!(m.starts_with("bad 42 (at tests/process.rs:"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Process::exit, not std::process::exit: the latter flushes stdout, whose lock another
    // test thread may hold at the fork.
    assert_eq!(
        Process::spawn(|| Process::exit(3)).unwrap().join().unwrap(),
        Exit::Exited(3)
    );
    assert_eq!(
        Process::spawn(|| std::process::abort())
            .unwrap()
            .join()
            .unwrap(),
        Exit::Signaled(6)
    );
    let segv = Process::spawn(|| {
        // SAFETY: not safe: this test wants a real segmentation fault.
        unsafe { std::ptr::null_mut::<u32>().write_volatile(7) };
    });
    assert_eq!(segv.unwrap().join().unwrap(), Exit::Signaled(11));
}

#[test]
fn join_timeout_kill_and_drop() {
    let _w = common::watchdog(60, "process lifetime");
    let mut p = Process::spawn(|| std::thread::sleep(Duration::from_secs(30))).unwrap();
    assert_eq!(p.join_timeout(Duration::from_millis(20)).unwrap(), None);
    p.kill().unwrap();
    assert_eq!(
        p.join_timeout(Duration::from_secs(5)).unwrap(),
        Some(Exit::Signaled(9))
    );
    // Dropped without join: killed and reaped.
    let p = Process::spawn(|| std::thread::sleep(Duration::from_secs(30))).unwrap();
    let pid = p.pid();
    drop(p);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn children_see_a_snapshot_of_private_memory() {
    let mut local = vec![1, 2, 3];
    let child = Process::spawn(|| {
        assert_eq!(local, vec![1, 2, 3]);
    })
    .unwrap();
    local.push(4); // the child never sees this
    assert_eq!(child.join().unwrap(), Exit::Ok);
}
