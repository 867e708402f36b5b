//! How much memory does a par_reduce over a 512 MiB array cost? The array once, in shared
//! memory, plus each process's small private memory: no copies.
//!
//! `cargo run --release --example peak_memory [MiB]`
use std::fs;

use ndarray::Ix1;
use shmpar::{Pool, SharedArray};

/// A "Name:   1234 kB" field of a /proc text file, in KiB.
fn kib(path: &str, field: &str) -> u64 {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// A field of /proc/<pid>/status in KiB.
fn status_kib(pid: &str, field: &str) -> u64 {
    kib(&format!("/proc/{pid}/status"), field)
}

/// System-wide shared memory (memfd and tmpfs pages) in KiB.
fn shmem_kib() -> u64 {
    kib("/proc/meminfo", "Shmem:")
}

fn main() -> shmpar::Result<()> {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let shmem_before = shmem_kib();
    let pool = Pool::new(2)?;
    let mut a = SharedArray::<f64, Ix1>::zeros(mib << 17)?;
    a.as_slice_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = (i % 100) as f64);
    let sum = pool.par_reduce(&a, |c| c.sum(), |x, y| x + y)?;
    let shmem = shmem_kib().saturating_sub(shmem_before);
    let array_kib = (a.size_bytes() / 1024) as u64;
    let me = std::process::id().to_string();
    let parent_private = status_kib(&me, "RssAnon:");
    let parent_hwm = status_kib(&me, "VmHWM:");
    let workers: Vec<(u32, u64, u64)> = pool
        .worker_pids()
        .iter()
        .map(|p| {
            (
                *p,
                status_kib(&p.to_string(), "RssAnon:"),
                status_kib(&p.to_string(), "RssShmem:"),
            )
        })
        .collect();
    let private_total = parent_private + workers.iter().map(|w| w.1).sum::<u64>();
    let total = shmem + private_total;
    println!("sum = {sum}");
    println!("array                         {:>8} MiB", array_kib / 1024);
    println!(
        "shared memory added (system)  {:>8.1} MiB",
        shmem as f64 / 1024.0
    );
    println!(
        "parent peak RSS (VmHWM)       {:>8.1} MiB  (counts the shared pages it touched)",
        parent_hwm as f64 / 1024.0
    );
    println!(
        "parent private memory         {:>8.1} MiB",
        parent_private as f64 / 1024.0
    );
    for (pid, anon, shm) in &workers {
        println!(
            "worker {pid:>7} private         {:>8.1} MiB  (maps {:.1} MiB of the shared array)",
            *anon as f64 / 1024.0,
            *shm as f64 / 1024.0
        );
    }
    println!(
        "total: shared + all private   {:>8.1} MiB = {:.3}x the array",
        total as f64 / 1024.0,
        total as f64 / array_kib as f64
    );
    Ok(())
}
