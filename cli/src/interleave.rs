//! `interleave`: several processes print to one stdout at once. A line written in one
//! `write(2)` (Rust's `println!`: stdout is line-buffered) arrives whole; a line written in
//! pieces (`print!` and a flush, then the rest: what Python's `print(..., end="")` with a flush
//! does, or C's unbuffered stderr) tears and mixes with the others' (`Number: 1Number: 2`); the
//! logging funnel carries every record whole.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shmpar::Process;
use shmpar::logging::Mode;

use crate::{CliResult, InterleaveMode, output, peers};

/// One way's count, as `--json` prints it (and as the child run of the funnel prints it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    demo: String,
    way: String,
    procs: usize,
    lines: usize,
    /// Lines of the form `Number: <n>` (a line made of two processes' pieces can have that
    /// form too, so this counts well-formed lines).
    whole: usize,
    /// Lines that are not: torn pieces and mixtures.
    broken: usize,
}

const WAYS: [(InterleaveMode, &str); 3] = [
    (
        InterleaveMode::Split,
        "print! + flush, then println! (two writes)",
    ),
    (InterleaveMode::Whole, "println! (one write per line)"),
    (
        InterleaveMode::Funnel,
        "log::info! through the logging funnel",
    ),
];

/// Counts the whole lines of `text`.
fn count(text: &str, way: &str, procs: usize, lines: usize) -> Row {
    let whole = text
        .lines()
        .filter(|l| {
            l.strip_prefix("Number: ")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    Row {
        demo: "interleave".into(),
        way: way.into(),
        procs,
        lines,
        whole,
        broken: text.lines().count() - whole,
    }
}

/// Runs each way in a child run of this binary (its stdout captured, or its log file read).
pub(crate) fn measure(procs: usize, lines: usize) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let mut rows = Vec::new();
    for (mode, way) in WAYS {
        let name = format!("{mode:?}").to_lowercase();
        let out = peers::output_within(
            Command::new(std::env::current_exe()?).args([
                "interleave-one",
                &name,
                &procs.to_string(),
                &lines.to_string(),
            ]),
            &format!("the {name} run"),
            Duration::from_secs(120),
        )?;
        if !out.status.success() {
            return Err(format!(
                "the {name} run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        rows.push(count(&text, way, procs, lines));
    }
    Ok(rows)
}

/// `interleave [--procs N] [--lines M] [--json]`.
pub(crate) fn run(procs: usize, lines: usize, json: bool) -> CliResult {
    let rows = measure(procs, lines)?;
    if json {
        for r in &rows {
            output::json_line(r)?;
        }
        return Ok(());
    }
    println!("{procs} processes each write \"Number: <n>\" {lines} times to one output:\n");
    let mut table = output::table(&["way", "lines", "whole", "torn or mixed"]);
    for r in &rows {
        table.add_row(vec![
            r.way.clone(),
            (r.procs * r.lines).to_string(),
            r.whole.to_string(),
            r.broken.to_string(),
        ]);
    }
    println!("{table}");
    println!(
        "\nA write(2) of a line to a pipe (up to PIPE_BUF, 4 KiB) or to a file is not split, so a\n\
         line written at once arrives whole; a line written in pieces lets another process's\n\
         piece in between. The funnel sends each record through a shared-memory queue to one\n\
         writer."
    );
    Ok(())
}

fn write_numbers((lines, split): (usize, bool)) {
    let mut out = std::io::stdout();
    for i in 0..lines {
        if split {
            let _ = write!(out, "Number: ");
            let _ = out.flush();
            let _ = writeln!(out, "{i}");
        } else {
            let _ = writeln!(out, "Number: {i}");
        }
    }
    let _ = out.flush();
}

fn log_numbers(lines: usize) {
    for i in 0..lines {
        log::info!(target: "interleave", "Number: {i}");
    }
}

/// One way, in this process: starts `procs` writers and waits for them. The funnel's file is
/// copied to stdout at the end (its records carry a prefix, stripped here).
pub(crate) fn run_one(mode: InterleaveMode, procs: usize, lines: usize) -> CliResult {
    match mode {
        InterleaveMode::Split | InterleaveMode::Whole => {
            let split = mode == InterleaveMode::Split;
            let kids = (0..procs)
                .map(|_| Process::start(write_numbers, (lines, split)))
                .collect::<shmpar::Result<Vec<_>>>()?;
            for k in kids {
                k.join()?.into_result()?;
            }
        }
        InterleaveMode::Funnel => {
            let path =
                std::env::temp_dir().join(format!("shmpar-interleave-{}.log", std::process::id()));
            let guard = shmpar::logging::init_with(&path, log::LevelFilter::Info, Mode::Funnel)?;
            let kids = (0..procs)
                .map(|_| Process::start(log_numbers, lines))
                .collect::<shmpar::Result<Vec<_>>>()?;
            for k in kids {
                k.join()?.into_result()?;
            }
            drop(guard);
            let text = std::fs::read_to_string(&path)?;
            let _ = std::fs::remove_file(&path);
            let mut out = std::io::stdout().lock();
            for line in text.lines() {
                // A record ends with its message: keep from "Number: " on.
                let msg = line.find("Number: ").map_or(line, |at| &line[at..]);
                writeln!(out, "{msg}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_and_mixed_lines_are_counted() {
        let r = count("Number: 1\nNumber: Number: 2\n3\nNumber: 4\n", "x", 2, 2);
        assert_eq!((r.whole, r.broken), (2, 2));
    }
}
