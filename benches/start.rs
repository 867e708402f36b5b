//! What starting workers costs, by start method and by the size of the caller's process:
//! `cargo bench --bench start`.
//!
//! - pool creation: `build` (every worker started and ready) plus drop, 2 workers;
//! - worker replacement: a 1-worker pool with `max_tasks_per_worker(1)`, so every call first
//!   replaces the worker that retired after the previous one; the time of one tiny call;
//! - a tiny call (1 KiB sum) and a 64 MiB sum on a warm pool, to show that calls cost the same
//!   whichever way the workers were started.
//!
//! Each is measured with the caller's process at about 10 MiB resident, then again after it
//! has touched 8 GiB of private heap (`SHMPAR_BENCH_HEAP_GIB` changes the size), for
//! `StartMethod::ForkServer` and `StartMethod::Fork` interleaved. A direct fork copies the
//! caller's page tables, so its cost grows with the heap; the fork server forks from a small
//! process whatever the caller's size. The summary prints medians, p99 and maxima of the
//! samples of one run, and the ratios between the two methods in that run.

use std::time::{Duration, Instant};

use criterion::Criterion;
use ndarray::Ix1;
use shmpar::{Pool, SharedArray, StartMethod};

const METHODS: [(StartMethod, &str); 2] = [
    (StartMethod::ForkServer, "fork_server"),
    (StartMethod::Fork, "fork"),
];

fn pool(method: StartMethod, workers: usize) -> Pool {
    Pool::builder()
        .workers(workers)
        .start_method(method)
        .build()
        .expect("pool")
}

fn create_once(method: StartMethod) -> Duration {
    let t = Instant::now();
    drop(pool(method, 2));
    t.elapsed()
}

fn replace_once(recycling: &Pool, tiny: &SharedArray<f64, Ix1>) -> Duration {
    let t = Instant::now();
    let s = recycling
        .par_reduce(tiny, |c| c.sum(), |a, b| a + b)
        .expect("call");
    let took = t.elapsed();
    assert_eq!(s, 128.0);
    took
}

fn call_once(pool: &Pool, a: &SharedArray<f64, Ix1>) -> Duration {
    let t = Instant::now();
    let s = pool.par_reduce(a, |c| c.sum(), |x, y| x + y).expect("call");
    let took = t.elapsed();
    assert_eq!(s, a.len() as f64);
    took
}

struct Stats {
    median: f64,
    p99: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p99: at(0.99),
        max: *v.last().unwrap(),
    }
}

fn fmt(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

/// One summary row per (measurement, method), samples interleaved between the methods.
fn summary(
    heap: &str,
    rows: &mut Vec<String>,
    tiny: &SharedArray<f64, Ix1>,
    big: &SharedArray<f64, Ix1>,
) {
    let recycling: Vec<Pool> = METHODS
        .iter()
        .map(|&(m, _)| {
            Pool::builder()
                .workers(1)
                .start_method(m)
                .max_tasks_per_worker(1)
                .build()
                .expect("pool")
        })
        .collect();
    let warm: Vec<Pool> = METHODS.iter().map(|&(m, _)| pool(m, 2)).collect();
    let mut samples: [[Vec<f64>; 4]; 2] = Default::default();
    for round in 0..200 {
        for (i, &(m, _)) in METHODS.iter().enumerate() {
            if round < 40 {
                samples[i][0].push(create_once(m).as_secs_f64() * 1e6);
            }
            samples[i][1].push(replace_once(&recycling[i], tiny).as_secs_f64() * 1e6);
            samples[i][2].push(call_once(&warm[i], tiny).as_secs_f64() * 1e6);
            if round < 20 {
                samples[i][3].push(call_once(&warm[i], big).as_secs_f64() * 1e6);
            }
        }
    }
    let names = [
        "create 2-worker pool",
        "replace a worker (tiny call)",
        "1 KiB sum, warm",
        "64 MiB sum, warm",
    ];
    for (k, name) in names.iter().enumerate() {
        let s: Vec<Stats> = (0..2).map(|i| stats(samples[i][k].clone())).collect();
        rows.push(format!(
            "{heap:>8} | {name:<28} | {:>10} {:>10} {:>10} | {:>10} {:>10} {:>10} | {:>6.2}x",
            fmt(s[0].median),
            fmt(s[0].p99),
            fmt(s[0].max),
            fmt(s[1].median),
            fmt(s[1].p99),
            fmt(s[1].max),
            s[1].median / s[0].median,
        ));
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
        .configure_from_args();
    let tiny = SharedArray::from_array(&ndarray::Array1::from_elem(128, 1.0f64)).expect("array");
    let big = SharedArray::from_array(&ndarray::Array1::from_elem(8 << 20, 1.0f64)).expect("array");
    let gib: usize = std::env::var("SHMPAR_BENCH_HEAP_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut rows = Vec::new();
    let mut heap: Vec<u8> = Vec::new();
    for (label, size) in [("10 MiB", 0usize), ("8 GiB", gib << 30)] {
        if size > 0 {
            // Touch every page: resident, private, copied (page tables) by every direct fork.
            heap = vec![1u8; size];
            std::hint::black_box(&heap);
        }
        let label = if size > 0 {
            format!("{gib} GiB")
        } else {
            label.to_string()
        };
        let mut g = c.benchmark_group(format!("start_{}", label.replace(' ', "")));
        for &(m, name) in &METHODS {
            g.bench_function(format!("create_pool/{name}"), |b| {
                b.iter_custom(|n| (0..n).map(|_| create_once(m)).sum())
            });
            let recycling = Pool::builder()
                .workers(1)
                .start_method(m)
                .max_tasks_per_worker(1)
                .build()
                .expect("pool");
            g.bench_function(format!("replace_worker/{name}"), |b| {
                b.iter_custom(|n| (0..n).map(|_| replace_once(&recycling, &tiny)).sum())
            });
        }
        g.finish();
        summary(&label, &mut rows, &tiny, &big);
    }
    drop(heap);
    c.final_summary();
    println!();
    println!(
        "start methods, one run (resident heap of the caller; medians, p99, max; last column: fork / fork server)"
    );
    println!(
        "{:>8} | {:<28} | {:>32} | {:>32} | {:>7}",
        "heap", "measurement", "fork server: median p99 max", "fork: median p99 max", "ratio"
    );
    println!("{}", "-".repeat(124));
    for r in rows {
        println!("{r}");
    }
}
