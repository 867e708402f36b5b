//! Logging from many processes into one file (funnel mode): 4 processes x 10,000 records give
//! exactly 40,000 whole lines, each process's in its own order; writers SIGKILLed in the middle
//! of a loop of writes leave only whole lines, and the others go on.

mod common;
#[path = "common/logcheck.rs"]
mod logcheck;

use std::time::Duration;

use shmpar::Process;

#[test]
fn many_processes_one_file() {
    let _w = common::watchdog(180, "logging");
    let path = std::env::temp_dir().join(format!("shmpar-log-test-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let guard = shmpar::logging::init(&path, log::LevelFilter::Info).unwrap();
    let writers: Vec<Process> = (0..4)
        .map(|k| {
            // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
            unsafe {
                Process::fork(move || {
                    for i in 0..10_000 {
                        log::info!(target: "writer", "{k} seq {i} {}", "x".repeat(i % 200));
                    }
                })
            }
            .unwrap()
        })
        .collect();
    // Victims: killed while they write as fast as they can.
    let mut victims = 0;
    for round in 0..5u64 {
        // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
        let mut v = unsafe { Process::fork(|| {
            for i in 0u64.. {
                log::warn!(target: "victim", "victim seq {i} {}", "y".repeat((i % 3000) as usize));
            }
        }) }
        .unwrap();
        std::thread::sleep(Duration::from_millis(20 + round * 7));
        v.kill().unwrap();
        v.join().unwrap();
        victims += 1;
    }
    for w in writers {
        w.join().unwrap().into_result().unwrap();
    }
    drop(guard);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let by_pid = logcheck::by_pid(&text);
    let mut writer_lines = 0;
    for (pid, messages) in &by_pid {
        let ours: Vec<&String> = messages
            .iter()
            .filter(|m| !m.starts_with("victim"))
            .collect();
        if ours.is_empty() {
            continue;
        }
        writer_lines += ours.len();
        assert_eq!(ours.len(), 10_000, "process {pid} lost records");
        for (i, m) in ours.iter().enumerate() {
            let seq: usize = m.split(' ').nth(2).unwrap().parse().unwrap();
            assert_eq!(seq, i, "process {pid}: records out of order");
        }
    }
    assert_eq!(writer_lines, 40_000);
    assert!(victims == 5 && by_pid.len() >= 4);
    assert_eq!(shmpar::logging::dropped(), 0);
}
