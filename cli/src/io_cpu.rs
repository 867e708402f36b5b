//! `io-vs-cpu`: a thread pool and the process pool on waiting tasks (a sleep stands for I/O)
//! and on computing tasks, with as many workers as CPUs and with four times as many. Python's
//! lesson (`multiprocessing.dummy`): threads suit waiting, processes computing, because of its
//! GIL. Rust has no GIL: here threads and processes both compute in parallel, and the
//! difference that remains is isolation and start-up cost.

use std::time::{Duration, Instant};

use serde::Serialize;
use shmpar::Pool;
use shmpar_cli::montecarlo::count_inside;

use crate::{CliResult, output};

/// One pool's times, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Row {
    demo: &'static str,
    pool: &'static str,
    workers: usize,
    tasks: usize,
    waiting_s: f64,
    computing_s: f64,
}

const WAIT: Duration = Duration::from_millis(10);

fn wait(_: u64) -> u64 {
    std::thread::sleep(WAIT);
    0
}

fn compute(i: u64) -> u64 {
    count_inside(i, 0..20_000_000)
}

/// `io-vs-cpu [--quick] [--json]`.
pub(crate) fn run(quick: bool, json: bool) -> CliResult {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tasks = if quick { 16 } else { 64 };
    let mut rows = Vec::new();
    for workers in [cpus, 4 * cpus] {
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .build()?;
        let time = |f: &dyn Fn()| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        };
        let run_threads = |f: fn(u64) -> u64| {
            threads.install(|| {
                use rayon::prelude::*;
                // u32 ranges are indexed, so with_max_len(1): one task per piece.
                (0..tasks as u32)
                    .into_par_iter()
                    .with_max_len(1)
                    .map(|i| f(u64::from(i)))
                    .sum::<u64>()
            });
        };
        rows.push(Row {
            demo: "io_vs_cpu",
            pool: "threads (rayon)",
            workers,
            tasks,
            waiting_s: time(&|| run_threads(wait)),
            computing_s: time(&|| run_threads(compute)),
        });
        let pool = Pool::new(workers)?;
        let opts = shmpar::MapOptions::default().chunksize(1);
        let mut failed = None;
        let mut run_pool = |f: fn(u64) -> u64| {
            if let Err(e) = pool.map_with(0..tasks as u64, f, &opts) {
                failed = Some(e);
            }
        };
        let waiting_s = {
            let t = Instant::now();
            run_pool(wait);
            t.elapsed().as_secs_f64()
        };
        let computing_s = {
            let t = Instant::now();
            run_pool(compute);
            t.elapsed().as_secs_f64()
        };
        if let Some(e) = failed {
            return Err(e.into());
        }
        rows.push(Row {
            demo: "io_vs_cpu",
            pool: "processes (shmpar)",
            workers,
            tasks,
            waiting_s,
            computing_s,
        });
    }
    if json {
        for r in &rows {
            output::json_line(r)?;
        }
        return Ok(());
    }
    println!(
        "{tasks} waiting tasks (a {} ms sleep each) and {tasks} computing tasks (20 million pi \
         samples each), {cpus} CPUs:\n",
        WAIT.as_millis()
    );
    let mut table = output::table(&["pool", "workers", "waiting", "computing"]);
    for r in &rows {
        table.add_row(vec![
            r.pool.to_string(),
            r.workers.to_string(),
            format!("{:.1}ms", r.waiting_s * 1e3),
            format!("{:.1}ms", r.computing_s * 1e3),
        ]);
    }
    println!("{table}");
    println!(
        "\nWaiting tasks finish sooner with more workers, CPUs or not: a sleeping worker uses no\n\
         CPU. Computing tasks stop getting faster at the number of CPUs. Without a GIL, Rust's\n\
         threads compute in parallel as processes do; processes add isolation (a crash costs\n\
         one task) at a small cost per task."
    );
    Ok(())
}
