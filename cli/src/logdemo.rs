//! `log-demo`: N processes x M records into one file, then the file is checked and the rate
//! printed, for each logging mode (each mode runs in a fresh process: a logger is installed
//! once per process).

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use shmpar::Process;
use shmpar::logging::Mode;

use crate::{CliResult, LogMode, output, peers};

/// One mode's figures, as the child run prints them (one JSON line) for the parent's table.
#[derive(Debug, Serialize, Deserialize)]
struct Row {
    mode: String,
    records: usize,
    records_per_s: f64,
    whole_lines: usize,
    lost: usize,
}

/// How long one mode's child run may take before the demo gives up on it (it takes under a
/// second for the default size).
const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs both modes (each in a child run of this binary) and prints a table.
pub(crate) fn run(procs: usize, lines: usize) -> CliResult {
    println!("{procs} processes x {lines} records into one file:\n");
    let mut table = output::table(&["mode", "records", "records/s", "whole lines", "lost"]);
    for mode in ["funnel", "append"] {
        let out = peers::output_within(
            Command::new(std::env::current_exe()?).args([
                "log-demo-one",
                mode,
                &procs.to_string(),
                &lines.to_string(),
            ]),
            &format!("the {mode} run"),
            RUN_LIMIT,
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "the {mode} run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let row: Row = serde_json::from_str(text.trim())
            .map_err(|e| format!("the {mode} run printed no record ({e}): {text}"))?;
        table.add_row(vec![
            row.mode,
            row.records.to_string(),
            format!("{:.0}", row.records_per_s),
            row.whole_lines.to_string(),
            row.lost.to_string(),
        ]);
    }
    println!("{table}");
    println!(
        "\nfunnel: records go through a shared-memory queue to one writer thread (whole lines even\n\
         when a writer is SIGKILLed); append: one write(2) per record on an O_APPEND file."
    );
    Ok(())
}

/// One mode, in this process: writes, checks, prints its row as one JSON line.
pub(crate) fn run_one(mode: LogMode, procs: usize, lines: usize) -> CliResult {
    let mode = match mode {
        LogMode::Funnel => Mode::Funnel,
        LogMode::Append => Mode::Append,
    };
    let path = std::env::temp_dir().join(format!("shmpar-log-demo-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let guard = shmpar::logging::init_with(&path, log::LevelFilter::Info, mode)?;
    let t = Instant::now();
    let kids: Vec<Process> = (0..procs)
        .map(|k| {
            // SAFETY: the child runs only this closure, then `_exit`s. It calls `log::info!`
            // while the parent's log-writer thread runs: the child's logger takes no lock that
            // thread may hold at the fork, since a record goes into a shared-memory queue (the
            // funnel: its lock lives in shared memory, where the parent's thread releases it)
            // or straight to the file with one write(2) (append mode); formatting allocates,
            // and glibc's malloc resets its locks in a forked child. Everything else it
            // touches is its own copy of what it captured.
            unsafe {
                Process::fork(move || {
                    for i in 0..lines {
                        log::info!(target: "demo", "process {k} record {i}");
                    }
                })
            }
        })
        .collect::<shmpar::Result<_>>()?;
    for k in kids {
        k.join()?.into_result()?;
    }
    drop(guard); // the last records reach the file
    let secs = t.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&path)?;
    std::fs::remove_file(&path)?;
    // Every line whole and in order per process.
    let mut next: HashMap<&str, usize> = HashMap::new();
    let mut whole = 0;
    for l in text.lines() {
        let Some((_, msg)) = l.split_once(" demo: ") else {
            continue;
        };
        let mut words = msg.split(' ');
        let (Some(k), Some(i)) = (words.nth(1), words.nth(1)) else {
            continue;
        };
        let expect = next.entry(k).or_insert(0);
        if i.parse::<usize>().ok() == Some(*expect) {
            *expect += 1;
            whole += 1;
        }
    }
    let total = procs * lines;
    output::json_line(&Row {
        mode: format!("{mode:?}").to_lowercase(),
        records: total,
        records_per_s: total as f64 / secs,
        whole_lines: whole,
        lost: total - whole,
    })
}
