//! Logging in append mode (one write(2) per record): 4 processes x 10,000 records give exactly
//! 40,000 whole lines, each process's in its own order; pool workers' records arrive too.

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
    // Pool workers started by the fork server write through the descriptor they were sent.
    let pool = shmpar::Pool::new(2).unwrap();
    let out = pool
        .map(
            0..200u32,
            |t| log::info!(target: "pool", "task {t} of the pool"),
        )
        .unwrap();
    assert!(out.iter().all(Result::is_ok));
    drop(pool);
    let writers: Vec<Process> = (0..4usize)
        .map(|k| {
            Process::start(
                |k: usize| {
                    for i in 0..10_000 {
                        log::info!("{k} seq {i} {}", "z".repeat(i % 300));
                    }
                },
                k,
            )
            .unwrap()
        })
        .collect();
    for w in writers {
        w.join().unwrap().into_result().unwrap();
    }
    drop(guard);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    for t in 0..200 {
        assert!(
            text.contains(&format!("pool: task {t} of the pool\n")),
            "task {t}"
        );
    }
    let writers_only: String = text
        .lines()
        .filter(|l| !l.contains(" pool: "))
        .map(|l| format!("{l}\n"))
        .collect();
    let by_pid = logcheck::by_pid(&writers_only);
    assert_eq!(by_pid.len(), 4);
    for messages in by_pid.values() {
        assert_eq!(messages.len(), 10_000);
        for (i, m) in messages.iter().enumerate() {
            assert_eq!(m.split(' ').nth(2).unwrap().parse::<usize>().unwrap(), i);
        }
    }
}
