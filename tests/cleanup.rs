//! Nothing is left behind: no worker process after a pool is dropped (also when a test
//! panics), no /dev/shm entry, and worker mappings of dropped arrays are released.

mod common;

use std::time::Duration;

use ndarray::Ix1;
use shmpar::{Pool, SharedArray};

#[test]
fn drop_reaps_every_worker() {
    let _w = common::watchdog(60, "drop reaps");
    for workers in [1, 2, 5] {
        let pool = Pool::new(workers).unwrap();
        let pids = pool.worker_pids();
        assert_eq!(pids.len(), workers);
        assert!(pids.iter().all(|&p| !common::is_gone(p)));
        drop(pool);
        // Reaped synchronously by drop: not even a zombie remains.
        for p in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{p}")).exists(),
                "worker {p} left behind"
            );
        }
    }
}

#[test]
fn a_panicking_test_leaves_no_worker() {
    let _w = common::watchdog(60, "panic cleanup");
    let mut pids = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let pool = Pool::new(2).unwrap();
        pids = pool.worker_pids();
        panic!("the test body fails while the pool is alive");
    }));
    assert!(result.is_err());
    assert_eq!(pids.len(), 2);
    assert!(common::wait_gone(&pids, Duration::from_secs(2)));
}

#[test]
fn nothing_appears_in_dev_shm() {
    let _w = common::watchdog(60, "dev shm");
    let before = common::dev_shm();
    {
        let pool = Pool::new(2).unwrap();
        let mut a = SharedArray::<f64, Ix1>::zeros(1 << 20).unwrap();
        a.view_mut().fill(1.0);
        assert_eq!(
            pool.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap(),
            (1 << 20) as f64
        );
        // Only what appeared during the test counts (other programs may use /dev/shm).
        let during: Vec<_> = common::dev_shm()
            .into_iter()
            .filter(|e| !before.contains(e))
            .collect();
        assert!(
            during.is_empty(),
            "memfd regions have no /dev/shm name: {during:?}"
        );
    }
    let after: Vec<_> = common::dev_shm()
        .into_iter()
        .filter(|e| !before.contains(e) && e.contains("shmpar"))
        .collect();
    assert!(after.is_empty(), "{after:?}");
}

/// The inodes of the memfd mappings in a process's address space.
fn memfd_inodes(pid: &str) -> Vec<(u64, u64, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("/memfd:"))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let (lo, hi) = range.split_once('-')?;
            let inode = f.nth(3)?.to_string();
            Some((
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
                inode,
            ))
        })
        .collect()
}

/// The memfd inode behind an address of this process.
fn inode_at(addr: *const u8) -> String {
    let a = addr as u64;
    memfd_inodes("self")
        .into_iter()
        .find(|(lo, hi, _)| (*lo..*hi).contains(&a))
        .map(|(_, _, inode)| inode)
        .expect("the array is a memfd mapping")
}

fn maps_inode(pid: u32, inode: &str) -> bool {
    memfd_inodes(&pid.to_string())
        .iter()
        .any(|(_, _, i)| i == inode)
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn workers_unmap_dropped_arrays() {
    let _w = common::watchdog(60, "unmap");
    // One array made before the pool (inherited by the workers), one after (sent to them).
    let before = SharedArray::<u8, Ix1>::zeros(1 << 20).unwrap();
    let pool = Pool::new(2).unwrap();
    let after = SharedArray::<u8, Ix1>::zeros(1 << 20).unwrap();
    for a in [&before, &after] {
        assert_eq!(
            pool.par_reduce(a, |c| c.len(), |x, y| x + y).unwrap(),
            1 << 20
        );
    }
    let inodes = [
        inode_at(before.as_slice().as_ptr()),
        inode_at(after.as_slice().as_ptr()),
    ];
    let pids = pool.worker_pids();
    // Every worker maps both (a worker that ran no chunk maps the new one when it wakes).
    wait_until("every worker maps both arrays", || {
        pids.iter()
            .all(|&p| inodes.iter().all(|i| maps_inode(p, i)))
    });
    drop(before);
    drop(after);
    // The workers hear of it at once (they are woken), not only at the next call.
    wait_until("no worker maps either array", || {
        pids.iter()
            .all(|&p| inodes.iter().all(|i| !maps_inode(p, i)))
    });
}

#[test]
fn shutdown_never_kills_a_process_that_took_a_reaped_workers_pid() {
    let _w = common::watchdog(60, "recycled worker pid");
    let p = shmpar::Pool::builder()
        .workers(1)
        .start_method(shmpar::StartMethod::Fork)
        .build()
        .unwrap();
    assert_eq!(p.map(0..2u8, |x| x).unwrap().len(), 2);
    let pid = p.worker_pids()[0] as i32;
    // A stray reaper in the program: the worker dies and is reaped behind the pool's back.
    // SAFETY: plain syscalls on our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    // SAFETY: as above; `status` is a valid out pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    // The kernel hands its pid to a new child of ours (needs root: skipped otherwise).
    if std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).is_err() {
        eprintln!("skipped: /proc/sys/kernel/ns_last_pid is not writable here");
        return;
    }
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    if sleeper.id() as i32 != pid {
        eprintln!("skipped: another process took pid {pid} first");
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        return;
    }
    drop(p);
    let alive = sleeper.try_wait().map(|s| s.is_none());
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(
        matches!(alive, Ok(true)),
        "the pool's shutdown signalled or reaped the process that got its dead worker's pid: {alive:?}"
    );
}
