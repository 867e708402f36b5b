//! Logging in append mode (one write(2) per record): 4 processes x 10,000 records give exactly
//! 40,000 whole lines, each process's in its own order.

mod common;
#[path = "common/logcheck.rs"]
mod logcheck;

use shmpar::Process;
use shmpar::logging::Mode;

#[test]
fn append_mode_keeps_records_whole() {
    let _w = common::watchdog(180, "append logging");
    let path = std::env::temp_dir().join(format!("shmpar-log-append-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let guard = shmpar::logging::init_with(&path, log::LevelFilter::Info, Mode::Append).unwrap();
    let writers: Vec<Process> = (0..4)
        .map(|k| {
            // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
            unsafe {
                Process::fork(move || {
                    for i in 0..10_000 {
                        log::info!("{k} seq {i} {}", "z".repeat(i % 300));
                    }
                })
            }
            .unwrap()
        })
        .collect();
    for w in writers {
        w.join().unwrap().into_result().unwrap();
    }
    drop(guard);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let by_pid = logcheck::by_pid(&text);
    assert_eq!(by_pid.len(), 4);
    for messages in by_pid.values() {
        assert_eq!(messages.len(), 10_000);
        for (i, m) in messages.iter().enumerate() {
            assert_eq!(m.split(' ').nth(2).unwrap().parse::<usize>().unwrap(), i);
        }
    }
}
