//! The course's lessons, checked through each demo's `--json` output: the early stop runs
//! fewer chunks than the naive pool and finds the same answers; the funnel's lines are all
//! whole; the default pool size follows the affinity mask; threads and processes both finish.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_shmpar");

fn json_rows(cmd: &mut Command) -> Vec<Value> {
    let out = cmd.output().expect("run shmpar");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn the_early_stop_runs_fewer_chunks_and_finds_the_same_answers() {
    let _w = common::watchdog(240, "primes");
    let rows = json_rows(Command::new(BIN).args(["primes", "--quick", "--json"]));
    let numbers: Vec<u64> = rows.iter().map(|r| r["number"].as_u64().unwrap()).collect();
    let mut distinct = numbers.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{rows:?}");
    for n in distinct {
        let of = |variant: &str| {
            rows.iter()
                .find(|r| r["number"] == n && r["variant"] == variant)
                .unwrap_or_else(|| panic!("no {variant} row for {n}"))
        };
        let (serial, naive, flag, find) = (
            of("serial"),
            of("naive pool"),
            of("pool + stop flag"),
            of("find_any (early stop)"),
        );
        // The same answer: no factor for a prime, else a factor that divides it (the naive pool
        // combines the smallest, as the serial search finds).
        assert_eq!(naive["factor"], serial["factor"], "{n}");
        for r in [flag, find] {
            match r["factor"].as_u64() {
                Some(d) => assert_eq!(n % d, 0, "{n}: {r}"),
                None => assert!(serial["factor"].is_null(), "{n}: {r}"),
            }
        }
        let run = |r: &Value| r["chunks_run"].as_u64();
        let naive_run = run(naive).unwrap();
        assert_eq!(
            Some(naive_run),
            naive["chunks"].as_u64(),
            "naive runs every chunk"
        );
        // The early factor (100,003) is in the first chunk: both early-stop ways skip chunks.
        if serial["factor"].as_u64() == Some(100_003) {
            assert!(run(flag).unwrap() < naive_run, "flag: {flag}");
            assert!(
                run(find).unwrap() < find["chunks"].as_u64().unwrap(),
                "find_any: {find}"
            );
        }
    }
}

#[test]
fn funnel_lines_are_all_whole_and_split_writes_are_counted() {
    let _w = common::watchdog(120, "interleave");
    let rows = json_rows(Command::new(BIN).args([
        "interleave",
        "--procs",
        "4",
        "--lines",
        "500",
        "--json",
    ]));
    assert_eq!(rows.len(), 3);
    for r in &rows {
        let whole = r["whole"].as_u64().unwrap();
        let broken = r["broken"].as_u64().unwrap();
        if r["way"].as_str().unwrap().contains("funnel")
            || r["way"].as_str().unwrap().starts_with("println!")
        {
            assert_eq!((whole, broken), (2000, 0), "{r}");
        } else {
            // How many tear depends on timing; every line ends in one newline, so the count of
            // lines, whole or not, is exact.
            assert_eq!(whole + broken, 2000, "{r}");
        }
    }
}

#[test]
fn the_default_pool_size_follows_the_affinity_mask() {
    // Under `taskset -c <one CPU>` the default pool has one worker.
    let _w = common::watchdog(240, "pool-size");
    let has_taskset = Command::new("taskset").arg("-V").output().is_ok();
    if !has_taskset {
        eprintln!("skipped: taskset (util-linux) is not installed");
        return;
    }
    let rows =
        json_rows(Command::new("taskset").args(["-c", "0", BIN, "pool-size", "--quick", "--json"]));
    let sizing = &rows[0];
    assert_eq!(sizing["cpus_allowed"], 1, "{sizing}");
    assert_eq!(sizing["default_workers"], 1, "{sizing}");
    // Then 1 and 2 workers, timed.
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows[1..]
            .iter()
            .all(|r| r["seconds"].as_f64().unwrap() > 0.0)
    );
}

#[test]
fn threads_and_processes_run_waiting_and_computing_tasks() {
    let _w = common::watchdog(240, "io-vs-cpu");
    let rows = json_rows(Command::new(BIN).args(["io-vs-cpu", "--quick", "--json"]));
    assert_eq!(rows.len(), 4, "two pools x two sizes");
    for r in &rows {
        let workers = r["workers"].as_u64().unwrap() as f64;
        let tasks = r["tasks"].as_u64().unwrap() as f64;
        // Sleeping tasks take at least their waves of 10 ms.
        let waves = (tasks / workers).ceil();
        assert!(
            r["waiting_s"].as_f64().unwrap() >= 0.010 * waves * 0.9,
            "{r}"
        );
        assert!(r["computing_s"].as_f64().unwrap() > 0.0, "{r}");
    }
}

#[test]
fn the_ipc_table_has_every_route() {
    let _w = common::watchdog(240, "ipc");
    let rows = json_rows(Command::new(BIN).args(["ipc", "--quick", "--json"]));
    let has = |peer: &str, route: &str| {
        rows.iter()
            .find(|r| r["peer"] == peer && r["route"].as_str().unwrap().starts_with(route))
            .unwrap_or_else(|| panic!("no {peer} {route} in {rows:?}"))
    };
    for route in ["Queue", "Pipe", "SharedArray handle"] {
        let r = has("shmpar", route);
        assert!(r["small_us"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["mib_gbps"].as_f64().unwrap() > 0.0, "{r}");
    }
    for route in ["Queue, ByteBuf", "Pipe, ByteBuf"] {
        let r = has("shmpar", route);
        assert!(
            r["small_us"].is_null() && r["mib_gbps"].as_f64().unwrap() > 0.0,
            "{r}"
        );
    }
    let atomic = has("shmpar", "SharedValue atomic");
    assert!(atomic["small_us"].as_f64().unwrap() > 0.0 && atomic["mib_gbps"].is_null());
    if Command::new("python3").arg("-V").output().is_ok() {
        for route in ["Queue", "Manager Queue", "Pipe", "shared_memory"] {
            has("python", route);
        }
    }
}
