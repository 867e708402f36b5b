//! The Python peer scripts in cli/peers/ (each writes one JSON object per line, read back with
//! serde_json by the command that runs it).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
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
    let mut child = cmd
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
    // The pipes are read by threads, so a peer that writes much never blocks on them.
    fn reader(
        pipe: Option<impl std::io::Read + Send + 'static>,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let (out_t, err_t) = (reader(child.stdout.take()), reader(child.stderr.take()));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} did not finish within {limit:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{what} could not be waited for: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
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
