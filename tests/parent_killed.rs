//! When the parent is SIGKILLed, its workers die too (PR_SET_PDEATHSIG set from the
//! long-lived fork thread), even if the pool was created on a short-lived thread.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use shmpar::Pool;

const CHILD_ENV: &str = "SHMPAR_TEST_PARENT_KILLED_CHILD";

/// Runs only as the re-executed child: makes a pool on a thread that then ends, prints the
/// worker pids and waits to be killed.
#[test]
fn child_role() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let pool = std::thread::spawn(|| Pool::new(2).unwrap()).join().unwrap();
    let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
    println!("PIDS {}", pids.join(" "));
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn workers_die_with_a_sigkilled_parent() {
    let _w = common::watchdog(60, "parent killed");
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "child_role", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut pids = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // The harness prints "test child_role ... " on the same line.
        if let Some((_, rest)) = line.split_once("PIDS ") {
            pids = rest.split(' ').map(|p| p.parse::<u32>().unwrap()).collect();
            break;
        }
    }
    assert_eq!(pids.len(), 2, "the child printed no pids");
    // The pool's creating thread has ended: the workers must still be alive.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        pids.iter().all(|&p| !common::is_gone(p)),
        "workers died with their creating thread"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        common::wait_gone(&pids, Duration::from_secs(3)),
        "orphaned workers: {pids:?}"
    );
}
