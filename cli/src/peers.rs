//! The Python peer scripts in cli/peers/ (each writes one JSON object per line, read back with
//! serde_json by the command that runs it).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The path of a peer script (next to the crate's manifest, as built).
pub(crate) fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name)
}

/// Runs a peer (or a child run of this binary: `what` names it in errors) to the end, or
/// kills it after `limit`: one that hangs (a process that died under it) costs its rows, not
/// the command.
pub(crate) fn output_within(
    cmd: &mut Command,
    what: &str,
    limit: Duration,
) -> Result<Output, String> {
    // In a process group of its own, so that what it started (Python's pool workers, a child
    // run's shmpar processes) goes with it. (A Ctrl-C at the terminal reaches this process,
    // not the peer's group; the peer ends when it next writes to the closed pipes.)
    let mut child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "{what} could not start: {} is not installed",
                cmd.get_program().to_string_lossy()
            ),
            _ => format!("{what} could not start: {e}"),
        })?;
    let group = child.id();
    // The pipes are read by threads, so a peer that writes much never blocks on them.
    fn reader(pipe: Option<impl std::io::Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send(buf);
        });
        rx
    }
    let (out_r, err_r) = (reader(child.stdout.take()), reader(child.stderr.take()));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > limit => {
                shmpar_cli::kill_process_group(group);
                let _ = child.wait();
                return Err(format!("{what} did not finish within {limit:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                shmpar_cli::kill_process_group(group);
                return Err(format!("{what} could not be waited for: {e}"));
            }
        }
    };
    // Whatever it left behind goes too (and with it any hold on the pipes); the pipes' ends
    // are read within a bound all the same.
    shmpar_cli::kill_process_group(group);
    let collect = |r: mpsc::Receiver<Vec<u8>>| r.recv_timeout(PIPE_DRAIN).unwrap_or_default();
    Ok(Output {
        status,
        stdout: collect(out_r),
        stderr: collect(err_r),
    })
}

/// How long the output of a peer that has exited may take to drain.
const PIPE_DRAIN: Duration = Duration::from_secs(10);

/// Runs the Python peer `script` (in cli/peers/) with `args` for at most `limit`, and returns
/// the records it wrote; or why there are none: python3 or numpy missing, the peer failed
/// (its last line of stderr), or it ran past `limit`.
pub(crate) fn python_records<T: serde::de::DeserializeOwned>(
    script_name: &str,
    args: &[String],
    limit: Duration,
) -> Result<Vec<T>, String> {
    let out = output_within(
        Command::new("python3").arg(script(script_name)).args(args),
        "the Python peer",
        limit,
    )?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(if err.contains("No module named 'numpy'") {
            "python3 has no numpy (pip install numpy)".into()
        } else {
            format!(
                "the Python peer failed: {}",
                err.lines().last().unwrap_or("")
            )
        });
    }
    records(&out.stdout, "the Python peer")
}

/// The records a peer wrote on `stdout`, one JSON object per non-blank line; `who` names the
/// peer in the error for a line that is not a record.
pub(crate) fn records<T: serde::de::DeserializeOwned>(
    stdout: &[u8],
    who: &str,
) -> Result<Vec<T>, String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .map_err(|e| format!("{who} wrote a line that is not a record ({e}): {l}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_peer_left_behind_holding_its_output_is_ended_with_it() {
        // The shell exits at once; the sleep it left holds stdout. Reading stdout to its end
        // used to wait the 30 s.
        let start = Instant::now();
        let out = output_within(
            Command::new("sh").args(["-c", "sleep 30 & echo hi"]),
            "the shell",
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_peer_past_its_limit_is_ended_with_what_it_started() {
        let dir = std::env::temp_dir().join(format!("shmpar-peers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let err = output_within(
            Command::new("sh").args(["-c", &script]),
            "the shell",
            Duration::from_millis(500),
        )
        .unwrap_err();
        assert!(err.contains("did not finish"), "{err}");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // The orphaned sleep is killed with its group (then reaped by init).
        let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
        let start = Instant::now();
        while proc.exists()
            && !std::fs::read_to_string(proc.join("stat")).is_ok_and(|s| s.contains(") Z"))
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the sleep lives on"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
