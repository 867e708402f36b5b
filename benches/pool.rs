//! The multiprocessing-style API: `cargo bench --bench pool`.
//!
//! - per-task overhead of `Pool::map` on a trivial function, 100,000 tasks, chunksize 1 and the
//!   default chunk size;
//! - `imap` over 100,000 trivial tasks (chunksize 1), per task;
//! - `imap_unordered`'s first-result latency: one task that returns at once among slow ones,
//!   the time from the call to its result;
//! - `apply_async` throughput: 10,000 trivial tasks submitted, then every result taken;
//! - `Queue` round-trip latency (a ping-pong between two processes) and messages per second
//!   (one producer process, the parent consuming).
//!
//! At the end, if `python3` is on the PATH, the same workloads run under Python's
//! `multiprocessing` (benches/peers/mp_pool.py) and a side-by-side table is printed, with
//! shmpar's medians measured in this same run.

use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shmpar::{MapOptions, Pool, Process, Queue};

const TASKS: u64 = 100_000;
const ROUNDTRIPS: u64 = 20_000;
const MESSAGES: u64 = 100_000;
const ASYNC_TASKS: u64 = 10_000;
/// The slow tasks' length in the first-result benchmark.
const SLOW_MS: u64 = 100;

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn imap_once(pool: &Pool) -> Duration {
    let t = Instant::now();
    let mut last = 0;
    for r in pool.imap(0..TASKS, |x| x + 1) {
        last = r.expect("imap");
    }
    let took = t.elapsed();
    assert_eq!(last, TASKS);
    took
}

/// From the call to the first result, a task that returns at once, while one slow task per
/// worker runs (the slow ones are waited for after the clock stops).
fn first_result_once(pool: &Pool) -> Duration {
    let mut input = vec![SLOW_MS; pool.workers()];
    input.insert(pool.workers() / 2, 0);
    let t = Instant::now();
    let mut it = pool.imap_unordered(input, sleep_ms);
    let first = it.next().expect("a result").expect("imap");
    let took = t.elapsed();
    assert_eq!(first, 0, "the quick task comes first");
    assert_eq!(it.count(), pool.workers());
    took
}

/// Tasks per second of `apply_async`: submit them all, then take every result.
fn apply_async_once(pool: &Pool) -> f64 {
    let t = Instant::now();
    let pending: Vec<_> = (0..ASYNC_TASKS)
        .map(|i| pool.apply_async(i, |x| x + 1))
        .collect();
    let mut sum = 0;
    for p in pending {
        sum += p.get().expect("apply_async");
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(sum, ASYNC_TASKS * (ASYNC_TASKS + 1) / 2);
    ASYNC_TASKS as f64 / secs
}

fn map_once(pool: &Pool, chunksize: Option<usize>) -> Duration {
    let opts = chunksize.map_or_else(MapOptions::new, |c| MapOptions::new().chunksize(c));
    let t = Instant::now();
    let out = pool.map_with(0..TASKS, |x| x + 1, &opts).expect("map");
    let took = t.elapsed();
    assert_eq!(*out.last().unwrap().as_ref().unwrap(), TASKS);
    took
}

/// Mean time of one round trip parent -> child -> parent through two queues.
fn roundtrip_once() -> Duration {
    let ping = Queue::<u64>::new(16).unwrap();
    let pong = Queue::<u64>::new(16).unwrap();
    // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
    let child = unsafe {
        Process::fork(|| {
            for _ in 0..ROUNDTRIPS {
                let m = ping.get().unwrap();
                pong.put(&m).unwrap();
            }
        })
    }
    .unwrap();
    ping.put(&0).unwrap();
    pong.get().unwrap(); // the child is running
    let t = Instant::now();
    for i in 1..ROUNDTRIPS {
        ping.put(&i).unwrap();
        assert_eq!(pong.get().unwrap(), i);
    }
    let took = t.elapsed() / (ROUNDTRIPS - 1) as u32;
    child.join().unwrap().into_result().unwrap();
    took
}

/// Messages per second from one producer process to the parent.
fn throughput_once() -> f64 {
    let q = Queue::<u64>::new(1024).unwrap();
    let t = Instant::now();
    // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
    let child = unsafe {
        Process::fork(|| {
            for i in 0..MESSAGES {
                q.put(&i).unwrap();
            }
        })
    }
    .unwrap();
    for _ in 0..MESSAGES {
        q.get().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    child.join().unwrap().into_result().unwrap();
    MESSAGES as f64 / secs
}

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let pool = Pool::builder().build().expect("pool");
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .configure_from_args();
    {
        let mut g = c.benchmark_group("map_100k_trivial_tasks");
        g.throughput(Throughput::Elements(TASKS));
        g.bench_function("chunksize_1", |b| {
            b.iter_custom(|n| (0..n).map(|_| map_once(&pool, Some(1))).sum())
        });
        g.bench_function("default_chunksize", |b| {
            b.iter_custom(|n| (0..n).map(|_| map_once(&pool, None)).sum())
        });
        g.bench_function("imap_chunksize_1", |b| {
            b.iter_custom(|n| (0..n).map(|_| imap_once(&pool)).sum())
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("background");
        g.bench_function("imap_unordered_first_result", |b| {
            b.iter_custom(|n| (0..n).map(|_| first_result_once(&pool)).sum())
        });
        g.throughput(Throughput::Elements(ASYNC_TASKS));
        g.bench_function("apply_async_10k", |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| Duration::from_secs_f64(ASYNC_TASKS as f64 / apply_async_once(&pool)))
                    .sum()
            })
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("queue");
        g.bench_function("roundtrip", |b| {
            b.iter_custom(|n| (0..n).map(|_| roundtrip_once()).sum())
        });
        g.throughput(Throughput::Elements(MESSAGES));
        g.bench_function("one_producer_100k_messages", |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| Duration::from_secs_f64(MESSAGES as f64 / throughput_once()))
                    .sum()
            })
        });
        g.finish();
    }
    c.final_summary();
    compare_with_python(&pool);
}

/// Runs the Python peer and prints both side by side.
fn compare_with_python(pool: &Pool) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers/mp_pool.py");
    // Warm, then medians of five runs each.
    map_once(pool, Some(1));
    let map_us = |c| {
        median(
            (0..5)
                .map(|_| map_once(pool, c).as_secs_f64() / TASKS as f64 * 1e6)
                .collect(),
        )
    };
    let ours = [
        ("map_per_task", "chunksize 1", map_us(Some(1))),
        ("map_per_task", "default chunksize", map_us(None)),
        (
            "imap_per_task",
            "chunksize 1",
            median(
                (0..5)
                    .map(|_| imap_once(pool).as_secs_f64() / TASKS as f64 * 1e6)
                    .collect(),
            ),
        ),
        (
            "imap_first_result",
            "",
            median(
                (0..5)
                    .map(|_| first_result_once(pool).as_secs_f64() * 1e6)
                    .collect(),
            ),
        ),
        (
            "apply_async_per_s",
            "",
            median((0..5).map(|_| apply_async_once(pool)).collect()),
        ),
        (
            "queue_roundtrip",
            "",
            median(
                (0..5)
                    .map(|_| roundtrip_once().as_secs_f64() * 1e6)
                    .collect(),
            ),
        ),
        (
            "queue_messages_per_s",
            "",
            median((0..5).map(|_| throughput_once()).collect()),
        ),
    ];
    println!(
        "\nshmpar vs Python multiprocessing ({} workers, same machine, same run):",
        pool.workers()
    );
    let output = Command::new("python3")
        .arg(script)
        .args([
            "--tasks",
            &TASKS.to_string(),
            "--roundtrips",
            &ROUNDTRIPS.to_string(),
            "--messages",
            &MESSAGES.to_string(),
            "--async-tasks",
            &ASYNC_TASKS.to_string(),
            "--slow-ms",
            &SLOW_MS.to_string(),
        ])
        .output();
    let python: Vec<(String, String, f64)> = match output {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                Some((
                    v["metric"].as_str()?.to_string(),
                    v["chunksize"].as_str().unwrap_or_default().to_string(),
                    v["value"].as_f64()?,
                ))
            })
            .collect(),
        _ => {
            println!("(python3 is not available: the Python column is skipped)");
            Vec::new()
        }
    };
    println!(
        "{:<24} {:<18} | {:>14} {:>14} | {:>12}",
        "metric", "", "shmpar", "python", "shmpar gain"
    );
    println!("{}", "-".repeat(90));
    for (metric, variant, ours) in ours {
        let py = python
            .iter()
            .find(|(m, v, _)| m == metric && v == variant)
            .map(|p| p.2);
        let (unit, gain) = match metric {
            "queue_messages_per_s" => ("msg/s", py.map(|p| ours / p)),
            "apply_async_per_s" => ("task/s", py.map(|p| ours / p)),
            _ => ("us", py.map(|p| p / ours)),
        };
        println!(
            "{:<24} {:<18} | {:>11.3} {unit:<2} {:>11} {unit:<2} | {:>11}",
            metric,
            variant,
            ours,
            py.map_or("-".into(), |p| format!("{p:.3}")),
            gain.map_or("-".into(), |g| format!("{g:.1}x")),
        );
    }
    let joblib = python
        .iter()
        .find(|(m, v, _)| m == "map_per_task" && v == "joblib");
    let default = ours
        .iter()
        .find(|(m, v, _)| *m == "map_per_task" && *v == "default chunksize");
    match (joblib, default) {
        (Some(j), Some(d)) => println!(
            "joblib (loky, its automatic batches) map per task: {:.3} us; shmpar's default \
             chunksize {:.3} us: {:.1}x",
            j.2,
            d.2,
            j.2 / d.2
        ),
        _ => println!("(joblib is not installed: no joblib row)"),
    }
}
