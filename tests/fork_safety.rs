//! Creating a pool, and replacing a dead worker, is safe with either start method while the
//! parent has other threads that hold locks: one holds stdout, one stderr, one a std Mutex and the allocator, and a rayon
//! pool is busy. Repeated 100 times; a deadlock in a child would hang a call, and the
//! watchdog turns that into a failure.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ndarray::Ix1;
use rayon::prelude::*;
use shmpar::{ErrorKind, Pool, SharedArray, StartMethod};

fn busy_threads(stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let mut handles = Vec::new();
    let s = Arc::clone(stop);
    handles.push(std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(b"");
            std::thread::sleep(Duration::from_micros(50));
        }
    }));
    let s = Arc::clone(stop);
    handles.push(std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let _err = std::io::stderr().lock();
            std::thread::sleep(Duration::from_micros(50));
        }
    }));
    let s = Arc::clone(stop);
    handles.push(std::thread::spawn(move || {
        let m = Mutex::new(Vec::<String>::new());
        while !s.load(Ordering::Relaxed) {
            let mut g = m.lock().unwrap();
            g.push(format!("{:?}", std::time::Instant::now()));
            if g.len() > 1000 {
                g.clear();
            }
        }
    }));
    let s = Arc::clone(stop);
    handles.push(std::thread::spawn(move || {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let v: Vec<f64> = (0..100_000).map(f64::from).collect();
        while !s.load(Ordering::Relaxed) {
            let total: f64 = pool.install(|| v.par_iter().sum());
            assert!(total > 0.0);
        }
    }));
    handles
}

#[test]
fn pools_start_and_heal_while_threads_hold_locks() {
    start_and_heal(StartMethod::ForkServer);
}

#[test]
fn directly_forked_pools_start_and_heal_while_threads_hold_locks() {
    start_and_heal(StartMethod::Fork);
}

fn start_and_heal(method: StartMethod) {
    let _w = common::watchdog(300, "fork safety");
    let stop = Arc::new(AtomicBool::new(false));
    let threads = busy_threads(&stop);
    let mut a = SharedArray::<f64, Ix1>::zeros(100_000).unwrap();
    a.view_mut().fill(1.0);
    for round in 0..100 {
        let pool = Pool::builder()
            .workers(2)
            .start_method(method)
            .chunk_bytes(16 * 1024)
            .build()
            .unwrap();
        // Workers allocate and format (malloc after fork).
        let n = pool
            .par_reduce(&a, |c| format!("{}", c.sum()).len() + c.len(), |x, y| x + y)
            .unwrap();
        assert!(n >= 100_000, "round {round}");
        // A panic in a worker runs the panic machinery while stderr is locked elsewhere.
        let err = pool
            .par_reduce(&a, |_| -> u8 { panic!("boom") }, |x, _| x)
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::WorkerPanicked,
            "round {round}: {err}"
        );
        // Kill a worker: the replacement is forked while the threads hold their locks.
        let victim = pool.worker_pids()[round % 2];
        common::sigkill(victim);
        let s = loop {
            match pool.par_reduce(&a, |c| c.sum(), |x, y| x + y) {
                Ok(s) => break s,
                // The kill may land during this call: then it fails once, cleanly.
                Err(e) if e.kind() == ErrorKind::WorkerDied => continue,
                Err(e) => panic!("round {round}: {e}"),
            }
        };
        assert_eq!(s, 100_000.0, "round {round}");
        // Arrays made after the pool reach the (new) workers too.
        let b = SharedArray::from_array(&ndarray::Array1::from_elem(1000, 2u32)).unwrap();
        let t = pool
            .par_reduce(
                &b,
                |c| c.iter().map(|&x| u64::from(x)).sum::<u64>(),
                |x, y| x + y,
            )
            .unwrap();
        assert_eq!(t, 2000, "round {round}");
        let pids = pool.worker_pids();
        drop(pool);
        assert!(
            common::wait_gone(&pids, Duration::from_secs(2)),
            "round {round}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn children_make_arrays_while_another_thread_holds_the_registry() {
    let _w = common::watchdog(300, "children make regions");
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    // Creates and drops regions as fast as it can: the registry's lock is held often.
    let churn = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            drop(SharedArray::<u8, Ix1>::zeros(4096).unwrap());
        }
    });
    let npy = std::env::temp_dir().join(format!("shmpar-fork-{}.npy", std::process::id()));
    let shm_before = common::dev_shm();
    for round in 0..50 {
        // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
        let child = unsafe {
            shmpar::Process::fork(|| {
                let a = SharedArray::<f64, Ix1>::zeros(1000).unwrap();
                let b = common::create_npy::<f32, Ix1, _>(&npy, 10).unwrap();
                let c = SharedArray::<u8, Ix1>::create_named(None, 10).unwrap();
                drop((a, b, c));
            })
        }
        .unwrap();
        let mut child = child;
        let exit = child.join_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(
            exit,
            Some(shmpar::Exit::Ok),
            "round {round}: a child hung or failed"
        );
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    let _ = std::fs::remove_file(&npy);
    // A named segment made (and dropped) in a child is removed by that child.
    let left: Vec<_> = common::dev_shm()
        .into_iter()
        .filter(|e| !shm_before.contains(e))
        .collect();
    assert!(left.is_empty(), "segments left behind: {left:?}");
}
