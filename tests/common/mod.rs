//! Helpers shared by the integration tests: a watchdog that turns a hang into a failure, and
//! checks that processes are gone.
#![allow(dead_code, unreachable_pub)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Aborts the whole test process if it is still alive after `secs` seconds: a hang becomes a
/// loud failure instead of a stuck CI. Dropping the guard disarms it.
pub struct Watchdog {
    _disarm: mpsc::Sender<()>,
}

pub fn watchdog(secs: u64, what: &'static str) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs)) {
            eprintln!("watchdog: '{what}' still running after {secs} s: aborting the test process");
            std::process::abort();
        }
    });
    Watchdog { _disarm: tx }
}

/// True when `pid` no longer runs: no such process, or a zombie (reparented to an init that
/// has not reaped it yet).
pub fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.trim_start().starts_with('Z') || rest.trim_start().starts_with('X')
            })
            .unwrap_or(false),
    }
}

/// Waits up to `timeout` for every pid to be gone.
pub fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pids.iter().all(|&p| is_gone(p)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Entries of /dev/shm (empty if it does not exist).
pub fn dev_shm() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Sends SIGKILL to a process.
pub fn sigkill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}
