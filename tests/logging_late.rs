//! `logging::init` after `Pool::new`: every worker's records reach the file, those of workers
//! that were already running (told with their next call), of replacements, and of children
//! started later. (Its own test binary: the logger is process-wide.)

mod common;

use std::time::Duration;

use shmpar::{MapOptions, Pool, Process, StartMethod};

fn task(i: u32) -> u32 {
    log::info!(target: "task", "task {i} ran");
    // Long enough that every worker of the pool takes some of the tasks.
    std::thread::sleep(Duration::from_millis(3));
    i
}

#[test]
fn init_after_the_pool_reaches_every_worker() {
    let _w = common::watchdog(60, "late logging");
    let path = std::env::temp_dir().join(format!("shmpar-late-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let pool = Pool::new(2).unwrap();
    let forked = Pool::builder()
        .workers(2)
        .start_method(StartMethod::Fork)
        .build()
        .unwrap();
    let first = pool.worker_pids();
    // A call before the logger exists: its records go nowhere, and nothing breaks.
    pool.map(0..4u32, |i| i).unwrap();
    let guard = shmpar::logging::init(&path, log::LevelFilter::Info).unwrap();
    let opts = MapOptions::new().chunksize(1);
    let out = pool.map_with(0..40u32, task, &opts).unwrap();
    assert!(out.iter().all(Result::is_ok));
    // A replacement worker logs too.
    common::sigkill(first[0]);
    assert!(common::wait_gone(&first[..1], Duration::from_secs(3)));
    loop {
        let out = pool.map_with(40..80u32, task, &opts).unwrap();
        if out.iter().all(Result::is_ok) {
            break;
        }
        // The kill was noticed during the call: its tasks failed; run them again.
    }
    // Workers forked directly before the logger existed get it the same way.
    let out = forked.map_with(80..90u32, task, &opts).unwrap();
    assert!(out.iter().all(Result::is_ok));
    drop(forked);
    let child = Process::start(
        |_: ()| log::info!(target: "child", "a started child logs"),
        (),
    )
    .unwrap();
    child.join().unwrap().into_result().unwrap();
    log::info!(target: "main", "the caller logs");
    let workers_now = pool.worker_pids();
    drop(pool);
    drop(guard);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    for i in 0..90 {
        assert!(
            text.contains(&format!("task {i} ran")),
            "task {i} missing:\n{text}"
        );
    }
    assert!(
        text.contains(" child INFO child: a started child logs"),
        "{text}"
    );
    assert!(text.contains(" main INFO main: the caller logs"), "{text}");
    // The records of the second batch came from the workers alive then, replacement included.
    for pid in workers_now {
        assert!(
            text.lines()
                .any(|l| l.split(' ').nth(1) == Some(&pid.to_string())),
            "worker {pid} logged nothing:\n{text}"
        );
    }
}
