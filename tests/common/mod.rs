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

/// The parent pid of `pid` (field 4 of /proc/<pid>/stat), if it runs.
pub fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// What the open descriptors of `pid` point to (`readlink /proc/<pid>/fd/*`).
pub fn open_files(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs this test binary again with only test `name`, the variables `env` set, its output
/// discarded, and waits at most `timeout`: `Some(success)`, or `None` if it had to be killed.
pub fn rerun_self(name: &str, env: &[(&str, &str)], timeout: Duration) -> Option<bool> {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The tests' own files and segments: nothing else maps or writes them while an array of
/// them lives, except the numpy processes run one at a time, which the tests wait for.
pub fn open_npy<A: shmpar::Element, D: ndarray::Dimension>(
    path: impl AsRef<std::path::Path>,
) -> shmpar::Result<shmpar::SharedArray<A, D>> {
    // SAFETY: see above.
    unsafe { shmpar::SharedArray::open_npy(path) }
}

pub fn create_npy<
    A: shmpar::Element,
    D: ndarray::Dimension,
    Sh: ndarray::IntoDimension<Dim = D>,
>(
    path: impl AsRef<std::path::Path>,
    shape: Sh,
) -> shmpar::Result<shmpar::SharedArray<A, D>> {
    // SAFETY: see `open_npy` above.
    unsafe { shmpar::SharedArray::create_npy(path, shape) }
}

pub fn open_named<A: shmpar::Element, D: ndarray::Dimension>(
    name: &str,
) -> shmpar::Result<shmpar::SharedArray<A, D>> {
    // SAFETY: see `open_npy` above.
    unsafe { shmpar::SharedArray::open_named(name) }
}

/// A task that sleeps `ms` milliseconds and returns it.
pub fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// A pool whose workers have started and whose dispatcher has made its first call, so that
/// the timings a test takes are the engine's.
pub fn warm_pool(workers: usize) -> shmpar::Pool {
    let p = shmpar::Pool::new(workers).unwrap();
    assert_eq!(p.apply_async(1u32, |x| x + 1).get().unwrap(), 2);
    p
}
