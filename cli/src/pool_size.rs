//! `pool-size`: how the default pool size was chosen here (the CPUs online, the affinity mask,
//! the cgroup's CPU quota: `std::thread::available_parallelism` takes the smallest), and the
//! time of one computing workload for 1 to twice that many workers, so the cost of more
//! processes than CPUs shows.

use std::time::Instant;

use serde::Serialize;
use shmpar::Pool;
use shmpar_cli::montecarlo::estimate_pi;

use crate::{CliResult, output};

/// Where the default size comes from, as `--json` prints it (first line).
#[derive(Debug, Serialize)]
struct Sizing {
    demo: &'static str,
    cpus_online: usize,
    cpus_allowed: usize,
    /// The cgroup v2 quota in CPUs (`cpu.max`), if one is set.
    cgroup_quota: Option<f64>,
    available_parallelism: usize,
    default_workers: usize,
}

/// One size's time, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Row {
    demo: &'static str,
    workers: usize,
    seconds: f64,
    speedup: f64,
}

/// The cgroup v2 CPU quota of this process's own cgroup, in CPUs (`cpu.max` holds
/// "quota period", or "max" for none). A parent cgroup's quota, or cgroup v1's, is not read
/// here (the standard library's `available_parallelism` does read them).
fn cgroup_quota() -> Option<f64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let max = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cpu.max")).ok()?;
    let mut words = max.split_whitespace();
    let quota: f64 = words.next()?.parse().ok()?;
    let period: f64 = words.next()?.parse().ok()?;
    (period > 0.0).then_some(quota / period)
}

/// `pool-size [--quick] [--json]`.
pub(crate) fn run(quick: bool, json: bool) -> CliResult {
    let (online, allowed) = shmpar_cli::cpus()?;
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let default_workers = Pool::builder().build()?.workers();
    let sizing = Sizing {
        demo: "pool_size",
        cpus_online: online,
        cpus_allowed: allowed,
        cgroup_quota: cgroup_quota(),
        available_parallelism: available,
        default_workers,
    };
    let samples = if quick { 200_000_000 } else { 2_000_000_000 };
    let mut rows: Vec<Row> = Vec::new();
    for workers in 1..=2 * default_workers {
        let pool = Pool::new(workers)?;
        estimate_pi(&pool, samples / 100, 1)?; // warm
        let best = (0..3)
            .map(|_| {
                let t = Instant::now();
                estimate_pi(&pool, samples, 1).map(|_| t.elapsed().as_secs_f64())
            })
            .collect::<shmpar::Result<Vec<f64>>>()?
            .into_iter()
            .fold(f64::MAX, f64::min);
        let one = rows.first().map_or(best, |r| r.seconds);
        rows.push(Row {
            demo: "pool_size",
            workers,
            seconds: best,
            speedup: one / best,
        });
    }
    if json {
        output::json_line(&sizing)?;
        for r in &rows {
            output::json_line(r)?;
        }
        return Ok(());
    }
    println!(
        "CPUs online {online}, allowed by the affinity mask {allowed}, this cgroup's quota {}:\n\
         the default pool has {default_workers} worker{} (the smallest of the three).\n",
        sizing
            .cgroup_quota
            .map_or("none".to_string(), |q| format!("{q:.1} CPUs")),
        if default_workers == 1 { "" } else { "s" }
    );
    println!("Monte Carlo pi, {samples} samples, best of 3:\n");
    let mut table = output::table(&["workers", "time", "speed-up", "note"]);
    output::left(&mut table, 3);
    for r in &rows {
        table.add_row(vec![
            r.workers.to_string(),
            format!("{:.1}ms", r.seconds * 1e3),
            format!("{:.2}x", r.speedup),
            if r.workers == default_workers {
                "the default".to_string()
            } else if r.workers > default_workers {
                "more processes than CPUs".to_string()
            } else {
                String::new()
            },
        ]);
    }
    println!("{table}");
    println!(
        "\nPast the CPUs this process may use, processes take turns: the time stops falling and\n\
         switching costs a little. Try `taskset -c 0 shmpar pool-size`: the default becomes 1."
    );
    Ok(())
}
