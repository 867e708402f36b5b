//! Chunk affinity: each worker owns a stripe of chunks (worker `i` of `W` owns chunks `i`,
//! `i + W`, ...), runs its own before it steals, and so gets the same rows call after call.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use shmpar::Pool;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Chunk 0 is slow; chunks 1-3 are quick. Worker 1 owns chunks 1 and 3, so it runs 3 before it
/// steals 2 from busy worker 0. (With one shared counter, chunks went out in order: 2 before
/// 3.) Returns (chunk, pid, start) for each chunk.
fn one_call(pool: &Pool) -> Vec<(u64, u32, u128)> {
    let mut got = pool
        .par_reduce_range(
            4,
            |_, chunk| {
                let start = now_ns();
                std::thread::sleep(std::time::Duration::from_millis(if chunk == 0 {
                    300
                } else {
                    20
                }));
                vec![(chunk, std::process::id(), start)]
            },
            |mut a, b| {
                a.extend(b);
                a
            },
        )
        .unwrap();
    got.sort_unstable();
    got
}

#[test]
fn a_worker_runs_its_own_chunks_before_it_steals() {
    let _w = common::watchdog(60, "affinity");
    // A chunk per index; no caller stripe.
    let pool = Pool::builder().workers(2).chunk_bytes(8).build().unwrap();
    for _ in 0..3 {
        let got = one_call(&pool);
        assert_eq!(got.len(), 4);
        let (start2, start3) = (got[2].2, got[3].2);
        assert!(
            start3 < start2,
            "chunk 3 (worker 1's own) should start before chunk 2 (stolen): {got:?}"
        );
        // The worker that ran chunk 1 ran chunk 3 (its stripe), and it is not chunk 0's.
        assert_eq!(got[1].1, got[3].1, "{got:?}");
        assert_ne!(got[0].1, got[1].1, "{got:?}");
    }
}

#[test]
fn repeated_calls_give_each_worker_the_same_chunks() {
    let _w = common::watchdog(60, "affinity");
    let pool = Pool::builder().workers(2).chunk_bytes(8).build().unwrap();
    // Each chunk takes long enough that both workers are up and claiming when it starts.
    let owners = |pool: &Pool| {
        let mut got = pool
            .par_reduce_range(
                4,
                |_, chunk| {
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    vec![(chunk, std::process::id())]
                },
                |mut a, b| {
                    a.extend(b);
                    a
                },
            )
            .unwrap();
        got.sort_unstable();
        got.into_iter().map(|(_, pid)| pid).collect::<Vec<u32>>()
    };
    let first = owners(&pool);
    let same = (0..5).filter(|_| owners(&pool) == first).count();
    // Stripes: chunks 0 and 2 on one worker, 1 and 3 on the other, every time (a worker
    // descheduled for a whole chunk may lose one to stealing, hence 4 of 5).
    assert_eq!(first[0], first[2], "{first:?}");
    assert_eq!(first[1], first[3], "{first:?}");
    assert!(same >= 4, "only {same} of 5 calls matched {first:?}");
}

/// `Cpus_allowed_list` of a process, as /proc shows it ("0-1", "3").
fn cpus_allowed(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .unwrap();
    line.split_once(':').unwrap().1.trim().to_string()
}

#[test]
fn pinned_workers_each_stay_on_one_cpu() {
    let _w = common::watchdog(60, "pinning");
    let pool = Pool::builder()
        .workers(3)
        .pin_workers(true)
        .build()
        .unwrap();
    // A call first: every worker has started (and pinned itself) once it ran.
    let n = pool
        .par_reduce_range(3, |r, _| r.count(), |a, b| a + b)
        .unwrap();
    assert_eq!(n, 3);
    let cpus: Vec<String> = pool
        .worker_pids()
        .iter()
        .map(|&p| cpus_allowed(p))
        .collect();
    let mine = cpus_allowed(std::process::id());
    for (i, c) in cpus.iter().enumerate() {
        assert!(
            c.parse::<usize>().is_ok(),
            "worker {i} may run on {c}, not one CPU (this process: {mine})"
        );
    }
    if mine.contains('-') || mine.contains(',') {
        assert_ne!(
            cpus[0], cpus[1],
            "two CPUs here, but workers 0 and 1 share one"
        );
    }
    // Unpinned workers keep this process's mask.
    let free = Pool::builder().workers(1).build().unwrap();
    free.par_reduce_range(1, |r, _| r.count(), |a, b| a + b)
        .unwrap();
    assert_eq!(cpus_allowed(free.worker_pids()[0]), mine);
}
