//! The `shmpar` command as a user meets it: `--help` for every command, clear errors for
//! misspelt flags and bad values, and `--json` lines that serde_json parses.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_shmpar");

fn shmpar(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run shmpar")
}

const COMMANDS: [&str; 15] = [
    "tour",
    "bench",
    "sum",
    "lost-update",
    "pi",
    "scaling",
    "log-demo",
    "npy-make",
    "npy-sum",
    "lock-holder-dies",
    "primes",
    "interleave",
    "pool-size",
    "io-vs-cpu",
    "ipc",
];

#[test]
fn every_command_has_help() {
    let _w = common::watchdog(60, "help");
    let top = shmpar(&["--help"]);
    assert!(top.status.success());
    let text = String::from_utf8_lossy(&top.stdout);
    for c in COMMANDS {
        assert!(
            text.contains(c),
            "top-level help does not list {c}:\n{text}"
        );
        let out = shmpar(&[c, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{c} --help failed");
        assert!(help.contains(&format!("Usage: shmpar {c}")), "{c}:\n{help}");
        let again = shmpar(&["help", c]);
        assert_eq!(
            again.stdout, out.stdout,
            "`help {c}` differs from `{c} --help`"
        );
    }
}

#[test]
fn a_misspelt_flag_fails_and_names_the_flag() {
    let _w = common::watchdog(60, "misspelt flag");
    // The case: `--size` for `--sizes` used to run the 512 MiB default.
    let out = shmpar(&["bench", "--size", "1K"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'--size'"), "{err}");
    assert!(err.contains("--sizes"), "no suggestion: {err}");
    assert!(out.stdout.is_empty(), "it ran anyway");
    let out = shmpar(&["lost-update", "--proc", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'--proc'"));
    let out = shmpar(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-command"));
}

#[test]
fn bad_and_missing_values_fail_and_say_which() {
    let _w = common::watchdog(60, "bad values");
    for (args, needle) in [
        (&["bench", "--sizes", "1Q"][..], "'1Q'"),
        (&["bench", "--sizes"][..], "--sizes"),
        (&["bench", "--workloads", "sum,bogus"][..], "bogus"),
        (&["bench", "--rounds", "0"][..], "--rounds"),
        (&["bench", "--start-method", "spawn"][..], "spawn"),
        (&["lost-update", "--procs", "0"][..], "--procs"),
        (&["lost-update", "--increments", "-5"][..], "-5"),
        (&["lost-update", "--increments", "1e3"][..], "1e3"),
        (&["pi", "--samples", "many"][..], "many"),
        (&["scaling", "--workload", "fft"][..], "fft"),
        (&["npy-make", "/tmp/x.npy", "--gib", "-1"][..], "-1"),
        (&["npy-sum"][..], "PATH"),
    ] {
        let out = shmpar(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?} does not name {needle}: {err}"
        );
    }
}

/// Every stdout line is one JSON object with these fields.
fn json_lines(args: &[&str], fields: &[&str]) -> Vec<serde_json::Value> {
    let out = shmpar(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: {e}: {l}")))
        .collect();
    assert!(!rows.is_empty(), "{args:?} printed nothing");
    for r in &rows {
        for f in fields {
            assert!(r.get(f).is_some(), "{args:?}: no {f} in {r}");
        }
    }
    rows
}

#[test]
fn json_output_parses() {
    let _w = common::watchdog(240, "json");
    let rows = json_lines(
        &[
            "lost-update",
            "--procs",
            "2",
            "--increments",
            "2000",
            "--json",
        ],
        &["way", "expected", "final", "lost", "lost_pct", "seconds"],
    );
    assert_eq!(rows.len(), 5);
    for r in &rows[1..] {
        assert_eq!(r["lost"], 0, "a correct way lost updates: {r}");
    }
    let rows = json_lines(
        &["pi", "--samples", "200000", "--json"],
        &["variant", "workers", "samples_per_s", "pi", "error"],
    );
    assert!(
        rows.iter()
            .all(|r| (r["pi"].as_f64().unwrap() - std::f64::consts::PI).abs() < 0.05)
    );
    let rows = json_lines(
        &[
            "bench",
            "--sizes",
            "1K,64K",
            "--workloads",
            "sum,minmax",
            "--rounds",
            "1",
            "--json",
        ],
        &["workload", "bytes", "variant", "median_s", "gbps"],
    );
    for v in ["serial", "rayon", "shmpar"] {
        assert_eq!(
            rows.iter().filter(|r| r["variant"] == v).count(),
            4,
            "{v}: 2 workloads x 2 sizes"
        );
    }
    let rows = json_lines(
        &["lock-holder-dies", "--json"],
        &["lock", "outcome", "seconds"],
    );
    assert!(
        rows.iter()
            .any(|r| r["outcome"].as_str().unwrap().contains("OwnerDied"))
    );
}

#[test]
fn bench_tails_report_p50_p99_and_max_for_both_variants() {
    let _w = common::watchdog(240, "tails");
    let args = [
        "bench",
        "--tails",
        "--sizes",
        "1K",
        "--workloads",
        "sum",
        "--rounds",
        "1",
    ];
    let rows: Vec<serde_json::Value> = json_lines(&[&args[..], &["--json"]].concat(), &[])
        .into_iter()
        .filter(|r| r["kind"] == "tails")
        .collect();
    assert_eq!(rows.len(), 6, "3 sizes x shmpar and rayon: {rows:?}");
    for r in &rows {
        let (p50, p99, max) = (
            r["p50_s"].as_f64().unwrap(),
            r["p99_s"].as_f64().unwrap(),
            r["max_s"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{r}");
        assert_eq!(r["calls"], 1000);
    }
}

#[test]
fn bench_can_time_the_caller_helping_beside_the_isolated_pool() {
    let _w = common::watchdog(240, "caller helps");
    let args = [
        "bench",
        "--caller-helps",
        "--sizes",
        "1K,64K",
        "--workloads",
        "sum",
        "--rounds",
        "1",
    ];
    let rows: Vec<serde_json::Value> = json_lines(&[&args[..], &["--json"]].concat(), &[])
        .into_iter()
        .filter(|r| r["variant"] == "shmpar+caller")
        .collect();
    assert_eq!(rows.len(), 2, "one per size: {rows:?}");
    assert!(rows.iter().all(|r| r["median_s"].as_f64().unwrap() > 0.0));
    let table = shmpar(&args);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("+caller vs serial"), "{text}");
}

#[test]
fn svg_plots_are_written() {
    let _w = common::watchdog(120, "svg");
    let dir = std::env::temp_dir().join(format!("shmpar-cli-svg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lost = dir.join("lost.svg");
    let bench = dir.join("bench.svg");
    let out = shmpar(&[
        "lost-update",
        "--procs",
        "2",
        "--increments",
        "2000",
        "--svg",
        lost.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let out = shmpar(&[
        "bench",
        "--sizes",
        "1K,64K",
        "--workloads",
        "sum",
        "--rounds",
        "1",
        "--svg",
        bench.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    for f in [&lost, &bench] {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.starts_with("<svg"), "{}", f.display());
        assert!(text.trim_end().ends_with("</svg>"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
