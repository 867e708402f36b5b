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

/// Forks the test process with the C library's `fork` (not shmpar's), runs `child` in the copy
/// and leaves with its exit code; returns that code in the parent.
fn plain_fork(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child runs `child` (which only calls shmpar and allocates; glibc's malloc
    // is safe after fork) and leaves with `_exit`, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
        // SAFETY: ends the forked copy at once, without running the harness's code.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if std::time::Instant::now() > deadline {
            // SAFETY: our own child, still unreaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            panic!("the forked copy hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(libc::WIFEXITED(status), "the copy died: status {status:#x}");
    libc::WEXITSTATUS(status)
}

#[test]
fn a_forked_copy_of_a_pool_is_refused_and_leaves_the_pool_whole() {
    let _w = common::watchdog(120, "forked copy of a pool");
    let p = shmpar::Pool::new(2).unwrap();
    assert_eq!(p.map(0..10u32, |x| x * 2).unwrap().len(), 10);
    // The dispatcher is alive at the fork (it idles a second after a task): the copy gets its
    // `dispatching` flag but no thread.
    assert_eq!(p.apply_async(5u32, |x| x).get().unwrap(), 5);
    let pids = p.worker_pids();
    let code = plain_fork(|| {
        // A call from the copy is refused at once: it would post on the owner's control block.
        let refused = matches!(
            p.map(0..10u32, |x| x + 1),
            Err(e) if e.kind() == shmpar::ErrorKind::Unsupported
        );
        let async_refused = matches!(
            p.apply_async(1u32, |x| x).get(),
            Err(e) if e.kind() == shmpar::ErrorKind::Unsupported
        );
        // Neither terminating nor dropping the copy may stop or kill the owner's workers.
        // SAFETY: a bitwise copy of the pool in this process's own memory, consumed once; the
        // original is never used or dropped here (we leave with `_exit`).
        unsafe { std::ptr::read(&p) }.terminate();
        if refused && async_refused { 0 } else { 1 }
    });
    assert_eq!(code, 0, "the copy's calls were not refused");
    // The owner's pool is whole: same workers, and it still serves calls.
    assert_eq!(p.worker_pids(), pids);
    let out = p.map(0..1000u32, |x| x * 3).unwrap();
    assert!(
        out.iter()
            .enumerate()
            .all(|(i, r)| *r.as_ref().unwrap() == i as u32 * 3)
    );
}

#[test]
fn the_default_pool_refuses_a_copy_made_by_a_plain_fork() {
    let _w = common::watchdog(120, "global pool after fork");
    let g = shmpar::Pool::global().unwrap();
    assert_eq!(g.map(0..4u8, |x| x).unwrap().len(), 4);
    let code = plain_fork(|| match shmpar::Pool::global() {
        Err(e) if e.kind() == shmpar::ErrorKind::Unsupported => 0,
        Err(_) => 2,
        Ok(_) => 1,
    });
    assert_eq!(code, 0, "the copy got the parent's default pool");
    assert_eq!(g.map(0..4u8, |x| x + 1).unwrap().len(), 4);
}

/// The copy forked by a chunk run in the calling thread (its pid), -1 in the copy itself.
static FORKED_CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

#[test]
fn a_chunk_that_forks_in_the_calling_thread_does_not_corrupt_the_call() {
    let _w = common::watchdog(120, "fork inside a call");
    // The calling thread runs chunks too; one of its chunks forks, and the copy returns from
    // the chunk into the call. The owner's results must be right, and the copy's call fails.
    let p = shmpar::Pool::builder()
        .workers(1)
        .caller_runs_chunks(true)
        .build()
        .unwrap();
    let owner = std::process::id();
    let a = shmpar::SharedArray::from_array(&ndarray::Array1::from_iter(0..4096u64)).unwrap();
    let mut forks = 0;
    for _ in 0..20 {
        let total = p.par_reduce_with(
            &a,
            &owner,
            |owner: &u32, c| {
                // Only in the calling thread of the owner (workers are other processes), and
                // once per call.
                if std::process::id() == *owner && FORKED_CHILD.load(Ordering::SeqCst) == 0 {
                    // SAFETY: the copy continues in shmpar's own code, which refuses to go on
                    // with the call, and in the test below, which `_exit`s.
                    let pid = unsafe { libc::fork() };
                    if pid > 0 {
                        FORKED_CHILD.store(pid, Ordering::SeqCst);
                    } else if pid == 0 {
                        FORKED_CHILD.store(-1, Ordering::SeqCst);
                    }
                }
                c.iter().sum::<u64>()
            },
            |x, y| x + y,
        );
        let pid = FORKED_CHILD.swap(0, Ordering::SeqCst);
        if std::process::id() != owner {
            // The copy: its call must have failed rather than returned a result.
            let code = match total {
                Err(e) if e.kind() == shmpar::ErrorKind::Unsupported => 0,
                _ => 1,
            };
            // SAFETY: leave the copy at once.
            unsafe { libc::_exit(code) };
        }
        assert_eq!(total.unwrap(), 4095 * 4096 / 2);
        if pid > 0 {
            forks += 1;
            let mut status = 0;
            // SAFETY: our own child (forked by the chunk above).
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "{status:#x}"
            );
        }
    }
    assert!(forks > 0, "the calling thread never ran a chunk");
}

#[test]
fn a_task_that_forks_in_a_worker_does_not_corrupt_the_call() {
    let _w = common::watchdog(120, "fork in a worker's task");
    let p = shmpar::Pool::new(2).unwrap();
    for _ in 0..5 {
        // Task 37 forks inside its worker; the copy returns into the worker's loop with the
        // rest of the chunk. It must publish nothing and claim nothing more.
        let out = p
            .map_with(
                0..200u64,
                |x| {
                    if x == 37 {
                        // SAFETY: the copy returns into shmpar's task loop, which stops it.
                        unsafe { libc::fork() };
                    }
                    x * 7
                },
                &shmpar::MapOptions::new().chunksize(50),
            )
            .unwrap();
        let wrong: Vec<_> = out
            .iter()
            .enumerate()
            .filter(|(i, r)| r.as_ref().ok() != Some(&(*i as u64 * 7)))
            .collect();
        assert!(wrong.is_empty(), "{wrong:?}");
    }
    assert_eq!(p.worker_pids().len(), 2);
}
