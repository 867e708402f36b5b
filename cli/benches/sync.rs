//! Locks and counters. `cargo bench -p shmpar-cli --bench sync`.
//!
//! - uncontended lock + unlock: shmpar's robust `ShmMutex`, a process-shared pthread mutex
//!   (`shmpar_cli::PthreadMutex`), raw_sync's mutex, std's and parking_lot's (process-private,
//!   for scale), and an atomic `fetch_add`;
//! - contended: 2 processes x 100,000 increments of one shared counter, the five ways of the
//!   lost-update demo (each sample forks the two processes; the time runs from "go" to the
//!   last join).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion, criterion_group, criterion_main};
use raw_sync::locks::{LockImpl, LockInit, Mutex as RawSyncMutex};
use shmpar::{CachePadded, Process, SharedValue, ShmMutex, ShmSafe};
use shmpar_cli::PthreadMutex;

#[repr(C)]
struct RawSyncCell {
    lock: [AtomicU64; 8],
    value: CachePadded<AtomicU64>,
}

// SAFETY: atomics only; raw_sync initialises its pthread mutex in `lock`'s bytes in place.
unsafe impl ShmSafe for RawSyncCell {}

fn raw_sync_cell() -> SharedValue<RawSyncCell> {
    SharedValue::new(RawSyncCell {
        lock: Default::default(),
        value: CachePadded::new(AtomicU64::new(0)),
    })
    .unwrap()
}

fn raw_sync_lock(cell: &SharedValue<RawSyncCell>) -> Box<dyn LockImpl> {
    let p = cell.as_ptr();
    // SAFETY: the lock bytes live in shared memory as long as `cell`; the data pointer is the
    // counter beside them.
    let (lock, _) =
        unsafe { RawSyncMutex::new((*p).lock.as_ptr() as *mut u8, (*p).value.as_ptr().cast()) }
            .expect("raw_sync mutex");
    lock
}

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended_lock_unlock");
    let robust = SharedValue::new(ShmMutex::new(0u64)).unwrap();
    g.bench_function("shmpar_ShmMutex_robust", |b| {
        b.iter(|| *robust.lock().unwrap() += 1)
    });
    let plain = SharedValue::new(PthreadMutex::new(0u64)).unwrap();
    g.bench_function("pthread_process_shared", |b| {
        b.iter(|| *plain.lock().unwrap() += 1)
    });
    let cell = raw_sync_cell();
    let raw = raw_sync_lock(&cell);
    g.bench_function("raw_sync_Mutex", |b| {
        b.iter(|| {
            let guard = raw.lock().unwrap();
            // SAFETY: the data pointer is the counter; we hold the lock.
            unsafe { *(*guard).cast::<u64>() += 1 };
        })
    });
    let std_m = std::sync::Mutex::new(0u64);
    g.bench_function("std_Mutex", |b| b.iter(|| *std_m.lock().unwrap() += 1));
    let pl = parking_lot::Mutex::new(0u64);
    g.bench_function("parking_lot_Mutex", |b| b.iter(|| *pl.lock() += 1));
    let a = AtomicU64::new(0);
    g.bench_function("atomic_fetch_add", |b| {
        b.iter(|| a.fetch_add(1, Ordering::Relaxed))
    });
    g.finish();
}

const PROCS: usize = 2;
const INCREMENTS: u64 = 100_000;

/// Forks PROCS processes, one per CPU, releases them together, and times them to the last join.
fn race(body: impl Fn() + Copy) -> Duration {
    let go = SharedValue::new(AtomicU64::new(0)).unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kids: Vec<Process> = (0..PROCS)
        .map(|i| {
            let go = &go;
            // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
            unsafe {
                Process::fork(move || {
                    let _ = shmpar_cli::pin_to_cpu(i % cpus);
                    while go.load(Ordering::SeqCst) == 0 {
                        std::hint::spin_loop();
                    }
                    body();
                })
            }
            .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(5));
    let t = Instant::now();
    go.store(1, Ordering::SeqCst);
    for k in kids {
        k.join().unwrap().into_result().unwrap();
    }
    t.elapsed()
}

/// Times `body` raced by PROCS processes, once per iteration.
fn raced(b: &mut Bencher<'_>, body: impl Fn() + Copy) {
    b.iter_custom(|iters| (0..iters).map(|_| race(body)).sum());
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("contended_2_procs_x_100k");
    g.sample_size(10);
    let counter = SharedValue::new(CachePadded::new(AtomicU64::new(0))).unwrap();
    let locked = SharedValue::new(ShmMutex::new(0u64)).unwrap();
    let cell = raw_sync_cell();
    let raw = raw_sync_lock(&cell);
    let raw: &dyn LockImpl = &*raw;
    g.bench_function("racy_load_store", |b| {
        raced(b, || {
            for _ in 0..INCREMENTS {
                let v = counter.load(Ordering::Relaxed);
                counter.store(v + 1, Ordering::Relaxed);
            }
        })
    });
    g.bench_function("raw_sync_Mutex", |b| {
        raced(b, || {
            for _ in 0..INCREMENTS {
                let guard = raw.lock().unwrap();
                // SAFETY: the data pointer is the counter; we hold the lock.
                unsafe { *(*guard).cast::<u64>() += 1 };
            }
        })
    });
    g.bench_function("shmpar_ShmMutex", |b| {
        raced(b, || {
            for _ in 0..INCREMENTS {
                *locked.lock().unwrap() += 1;
            }
        })
    });
    g.bench_function("fetch_add", |b| {
        raced(b, || {
            for _ in 0..INCREMENTS {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    g.bench_function("local_then_one_add", |b| {
        raced(b, || {
            let mut local = 0u64;
            for _ in 0..INCREMENTS {
                local = black_box(local + 1);
            }
            counter.fetch_add(local, Ordering::Relaxed);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = uncontended, contended
}
criterion_main!(benches);
