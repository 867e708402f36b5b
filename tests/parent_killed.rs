//! When the parent is SIGKILLed, its workers, its `Process` children and the fork server die
//! too (PR_SET_PDEATHSIG set from the long-lived fork thread, and from the server for its
//! children), even if the pool was created on a short-lived thread; nothing is left in
//! /dev/shm.

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
    let forked = std::thread::spawn(|| {
        Pool::builder()
            .workers(1)
            .start_method(shmpar::StartMethod::Fork)
            .build()
            .unwrap()
    })
    .join()
    .unwrap();
    let a = shmpar::SharedArray::from_array(&ndarray::Array1::from_elem(1 << 20, 1.0f64)).unwrap();
    assert_eq!(
        pool.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap(),
        (1 << 20) as f64
    );
    let child =
        shmpar::Process::start(|_: ()| std::thread::sleep(Duration::from_secs(60)), ()).unwrap();
    let server = common::ppid(pool.worker_pids()[0]).unwrap();
    let pids: Vec<String> = (pool.worker_pids().into_iter())
        .chain(forked.worker_pids())
        .chain([child.pid(), server])
        .map(|p| p.to_string())
        .collect();
    println!("PIDS {}", pids.join(" "));
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn workers_die_with_a_sigkilled_parent() {
    let _w = common::watchdog(60, "parent killed");
    let shm_before = common::dev_shm();
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
    // 2 workers, 1 directly forked worker, 1 started child, the fork server.
    assert_eq!(pids.len(), 5, "the child printed no pids");
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
        "orphaned workers, child or server: {pids:?}"
    );
    let left: Vec<_> = common::dev_shm()
        .into_iter()
        .filter(|e| !shm_before.contains(e))
        .collect();
    assert!(left.is_empty(), "segments left behind: {left:?}");
}
