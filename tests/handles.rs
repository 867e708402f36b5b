//! Shared objects travel to tasks and children as handles inside their arguments: a counter,
//! a lock, a queue, a pipe end, an event; into pool tasks, `par_*_with` parameters,
//! `Process::start` and `worker_init_with`, with either start method. A handle of the wrong
//! type is an error, and serialising a shared object outside a shmpar call is one too.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shmpar::{Event, MapOptions, Pipe, Pool, Process, Queue, SharedValue, ShmMutex, StartMethod};

const METHODS: [StartMethod; 2] = [StartMethod::ForkServer, StartMethod::Fork];

fn pool(method: StartMethod) -> Pool {
    Pool::builder()
        .workers(2)
        .start_method(method)
        .build()
        .unwrap()
}

#[test]
fn a_counter_and_a_lock_from_pool_tasks() {
    let _w = common::watchdog(60, "counter");
    for method in METHODS {
        let p = pool(method);
        let hits = SharedValue::new(AtomicU64::new(0)).unwrap();
        let total = SharedValue::new(ShmMutex::new(0u64)).unwrap();
        let tasks = (1..=200u64).map(|i| (i, hits.clone(), total.clone()));
        type Args = (u64, SharedValue<AtomicU64>, SharedValue<ShmMutex<u64>>);
        let out = p
            .map_with(
                tasks,
                |(i, hits, total): Args| {
                    hits.fetch_add(1, Ordering::Relaxed);
                    *total.lock().unwrap() += i;
                },
                &MapOptions::new().chunksize(7),
            )
            .unwrap();
        assert!(out.iter().all(Result::is_ok), "{method:?}");
        assert_eq!(hits.load(Ordering::Relaxed), 200, "{method:?}");
        assert_eq!(*total.lock().unwrap(), 200 * 201 / 2, "{method:?}");
    }
}

#[test]
fn parameters_of_a_reduction_carry_a_stop_flag() {
    let _w = common::watchdog(60, "stop flag");
    for method in METHODS {
        let p = pool(method);
        let stop = SharedValue::new(AtomicBool::new(false)).unwrap();
        // Every chunk past the one holding 5_000 sees the flag (chunks are taken in order by
        // the claim counter), so far fewer than all 10_000 indices are visited.
        let visited = p
            .par_reduce_range_with(
                1_000_000,
                &stop,
                |stop, range, _| {
                    if stop.load(Ordering::SeqCst) {
                        return 0;
                    }
                    if range.contains(&5_000) {
                        stop.store(true, Ordering::SeqCst);
                    }
                    range.end - range.start
                },
                |a, b| a + b,
            )
            .unwrap();
        assert!(stop.load(Ordering::SeqCst), "{method:?}");
        assert!(visited < 1_000_000, "{method:?}: visited {visited}");
    }
}

#[test]
fn a_queue_and_an_event_to_started_children() {
    let _w = common::watchdog(60, "queue and event");
    let q = Queue::<String>::new(16).unwrap();
    let go = SharedValue::new(Event::new()).unwrap();
    let children: Vec<Process<u32>> = (0..3u32)
        .map(|k| {
            Process::start(
                |(k, q, go): (u32, Queue<String>, SharedValue<Event>)| {
                    go.wait_timeout(Duration::from_secs(20));
                    q.put(&format!("child {k} was here")).unwrap();
                    k * 10
                },
                (k, q.clone(), go.clone()),
            )
            .unwrap()
        })
        .collect();
    go.set();
    let mut got: Vec<String> = (0..3)
        .map(|_| q.get_timeout(Duration::from_secs(20)).unwrap())
        .collect();
    got.sort();
    assert_eq!(
        got,
        ["child 0 was here", "child 1 was here", "child 2 was here"]
    );
    let values: Vec<u32> = children
        .into_iter()
        .map(|c| c.join_value().unwrap())
        .collect();
    assert_eq!(values, [0, 10, 20]);
}

#[test]
fn a_pipe_end_to_a_started_child() {
    let _w = common::watchdog(60, "pipe");
    let (mine, theirs) = Pipe::<u64>::new().unwrap();
    let child = Process::start(
        |end: shmpar::Connection<u64>| {
            while let Ok(x) = end.recv() {
                if x == 0 {
                    break;
                }
                end.send(&(x * x)).unwrap();
            }
        },
        theirs,
    )
    .unwrap();
    for x in 1..50u64 {
        mine.send(&x).unwrap();
        assert_eq!(mine.recv().unwrap(), x * x);
    }
    mine.send(&0).unwrap();
    child.join().unwrap().into_result().unwrap();
}

/// Counts worker starts in shared memory: the initializer's arguments carry the counter.
fn count_start(counter: &SharedValue<AtomicU32>, _index: usize) {
    counter.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn worker_init_with_a_shared_counter() {
    let _w = common::watchdog(60, "init handles");
    for method in METHODS {
        let starts = SharedValue::new(AtomicU32::new(0)).unwrap();
        let p = Pool::builder()
            .workers(3)
            .start_method(method)
            .worker_init_with(starts.clone(), count_start)
            .build()
            .unwrap();
        // `build` waits for every initializer.
        assert_eq!(starts.load(Ordering::SeqCst), 3, "{method:?}");
        // A replacement runs it too.
        let victim = p.worker_pids()[0];
        common::sigkill(victim);
        assert!(common::wait_gone(&[victim], Duration::from_secs(3)));
        // The death is noticed during a call; the replacement starts then, asynchronously.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while starts.load(Ordering::SeqCst) < 4 && std::time::Instant::now() < deadline {
            let _ = p.map(0..4u32, |x| {
                std::thread::sleep(Duration::from_millis(5));
                x
            });
        }
        assert_eq!(starts.load(Ordering::SeqCst), 4, "{method:?}");
        assert!(!p.worker_pids().contains(&victim));
    }
}

/// Serialises as a counter of one type and deserialises as another: what a hand-made payload
/// could claim.
struct Confused;

thread_local! {
    static VICTIM: std::cell::RefCell<Option<SharedValue<AtomicU64>>> = const { std::cell::RefCell::new(None) };
}

impl Serialize for Confused {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        VICTIM.with(|v| v.borrow().as_ref().unwrap().serialize(s))
    }
}

impl<'de> Deserialize<'de> for Confused {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SharedValue::<AtomicU32>::deserialize(d).map(|_| Confused)
    }
}

#[test]
fn a_handle_of_the_wrong_type_is_an_error() {
    let _w = common::watchdog(60, "wrong type");
    VICTIM.with(|v| *v.borrow_mut() = Some(SharedValue::new(AtomicU64::new(7)).unwrap()));
    let p = Pool::new(1).unwrap();
    let out = p.map([Confused], |_: Confused| 1u8).unwrap();
    let err = out[0].as_ref().unwrap_err();
    assert!(err.message().contains("another type"), "{err}");
}

#[test]
fn serialising_a_shared_object_elsewhere_is_an_error() {
    let v = SharedValue::new(AtomicU64::new(1)).unwrap();
    // (postcard keeps no message of a custom error; the reason is in the handle module's.)
    assert!(postcard::to_stdvec(&v).is_err());
    // ... and the same value still travels in a call afterwards.
    let p = Pool::new(1).unwrap();
    let out = p
        .map([v.clone()], |v: SharedValue<AtomicU64>| {
            v.fetch_add(1, Ordering::SeqCst)
        })
        .unwrap();
    assert_eq!(*out[0].as_ref().unwrap(), 1);
    assert_eq!(v.load(Ordering::SeqCst), 2);
}

#[test]
fn a_second_array_as_a_read_only_handle() {
    let _w = common::watchdog(60, "array handles");
    use ndarray::{Ix1, Ix2};
    use shmpar::{ArrayHandle, SharedArray};
    for method in METHODS {
        let p = pool(method);
        // The lookup table is made after the pool (direct forks did not inherit it either).
        let table = SharedArray::from_array(&ndarray::Array2::from_shape_fn((100, 3), |(i, j)| {
            (i * 3 + j) as u32
        }))
        .unwrap();
        let out = p
            .map(
                (0..100usize).map(|i| (i, table.handle())),
                |(i, t): (usize, ArrayHandle<'_, u32, Ix2>)| t.view().row(i).sum(),
            )
            .unwrap();
        for (i, r) in out.iter().enumerate() {
            assert_eq!(*r.as_ref().unwrap(), (9 * i + 3) as u32, "{method:?}");
        }
        // As the parameters of a reduction over another array.
        let weights = SharedArray::from_array(&ndarray::Array1::from_elem(1000, 0.5f64)).unwrap();
        let x = SharedArray::from_array(&ndarray::Array1::from_elem(1000, 4.0f64)).unwrap();
        let s = p
            .par_reduce_range_with(
                1000,
                &(x.handle(), weights.handle()),
                |(x, w): &(ArrayHandle<'_, f64, Ix1>, ArrayHandle<'_, f64, Ix1>), r, _| {
                    let (x, w) = (x.view(), w.view());
                    r.map(|i| x[i as usize] * w[i as usize]).sum::<f64>()
                },
                |a, b| a + b,
            )
            .unwrap();
        assert_eq!(s, 2000.0, "{method:?}");
    }
}

#[test]
fn a_barrier_and_a_semaphore_to_started_children() {
    let _w = common::watchdog(60, "barrier and semaphore");
    use shmpar::{Barrier, Semaphore};
    let barrier = SharedValue::new(Barrier::new(3)).unwrap();
    let permits = SharedValue::new(Semaphore::new(1)).unwrap();
    let inside = SharedValue::new(AtomicU32::new(0)).unwrap();
    type Kit = (
        SharedValue<Barrier>,
        SharedValue<Semaphore>,
        SharedValue<AtomicU32>,
    );
    let kids: Vec<Process<u32>> = (0..2)
        .map(|_| {
            Process::start(
                |(barrier, permits, inside): Kit| {
                    barrier.wait().unwrap();
                    // One at a time through the semaphore: never two inside.
                    let mut most = 0;
                    for _ in 0..200 {
                        permits.acquire().unwrap();
                        most = most.max(inside.fetch_add(1, Ordering::SeqCst) + 1);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        permits.release().unwrap();
                    }
                    most
                },
                (barrier.clone(), permits.clone(), inside.clone()),
            )
            .unwrap()
        })
        .collect();
    barrier.wait().unwrap();
    for k in kids {
        assert_eq!(k.join_value().unwrap(), 1);
    }
}

#[test]
fn a_queue_a_pipe_end_and_an_event_in_pool_tasks() {
    let _w = common::watchdog(60, "pool task handles");
    for method in METHODS {
        let p = pool(method);
        let q = Queue::<u32>::new(64).unwrap();
        let (mine, theirs) = Pipe::<u32>::new().unwrap();
        let seen = SharedValue::new(Event::new()).unwrap();
        type Kit = (u32, Queue<u32>, shmpar::Connection<u32>, SharedValue<Event>);
        let tasks = (0..20u32).map(|i| (i, q.clone(), theirs.clone(), seen.clone()));
        let out = p
            .map(tasks, |(i, q, end, seen): Kit| {
                q.put(&(i * 2)).unwrap();
                end.send(&i).unwrap();
                seen.set();
            })
            .unwrap();
        assert!(out.iter().all(Result::is_ok), "{method:?}");
        assert!(seen.is_set(), "{method:?}");
        let mut from_queue: Vec<u32> = (0..20).map(|_| q.get().unwrap()).collect();
        from_queue.sort_unstable();
        assert_eq!(from_queue, (0..20).map(|i| i * 2).collect::<Vec<_>>());
        let mut from_pipe: Vec<u32> = (0..20).map(|_| mine.recv().unwrap()).collect();
        from_pipe.sort_unstable();
        assert_eq!(from_pipe, (0..20).collect::<Vec<_>>());
    }
}

#[test]
fn a_replacement_that_joins_a_call_gets_its_handles() {
    let _w = common::watchdog(60, "replacement handles");
    for method in METHODS {
        let p = pool(method);
        let hits = SharedValue::new(AtomicU64::new(0)).unwrap();
        // Task 3 kills its worker; the replacement joins the same call and runs tasks that
        // name the counter.
        let tasks = (0..40u64).map(|i| (i, hits.clone()));
        let out = p
            .map_with(
                tasks,
                |(i, hits): (u64, SharedValue<AtomicU64>)| {
                    if i == 3 {
                        std::process::abort();
                    }
                    std::thread::sleep(Duration::from_millis(2));
                    hits.fetch_add(1, Ordering::SeqCst)
                },
                &MapOptions::new().chunksize(1),
            )
            .unwrap();
        let failed: Vec<usize> = (0..40).filter(|&i| out[i].is_err()).collect();
        assert_eq!(failed, [3], "{method:?}: {:?}", out[failed[0]]);
        assert_eq!(hits.load(Ordering::SeqCst), 39, "{method:?}");
    }
}

#[test]
fn handles_work_when_the_caller_helps() {
    let p = Pool::builder()
        .workers(1)
        .caller_runs_chunks(true)
        .chunk_bytes(64)
        .build()
        .unwrap();
    let seen = SharedValue::new(AtomicU64::new(0)).unwrap();
    let n = p
        .par_reduce_range_with(
            1000,
            &seen,
            |seen, r, _| {
                seen.fetch_add(r.end - r.start, Ordering::Relaxed);
                r.end - r.start
            },
            |a, b| a + b,
        )
        .unwrap();
    assert_eq!((n, seen.load(Ordering::Relaxed)), (1000, 1000));
}

/// Serialises a value it makes and drops at once: what the region's descriptor was must not
/// be reused for another object before it is sent.
struct Ephemeral;

impl Serialize for Ephemeral {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = SharedValue::new(AtomicU64::new(41)).unwrap();
        v.serialize(s)
        // `v` is dropped here, before the call sends anything.
    }
}

impl<'de> Deserialize<'de> for Ephemeral {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = SharedValue::<AtomicU64>::deserialize(d)?;
        assert_eq!(v.load(Ordering::SeqCst), 41);
        Ok(Ephemeral)
    }
}

#[test]
fn a_handle_outlives_the_object_it_was_made_from() {
    let _w = common::watchdog(60, "ephemeral");
    let p = Pool::new(1).unwrap();
    // Objects made right after take the descriptor numbers the dropped one freed.
    let others: Vec<_> = (0..8)
        .map(|i| SharedValue::new(AtomicU64::new(1000 + i)).unwrap())
        .collect();
    let out = p.map([Ephemeral, Ephemeral], |_: Ephemeral| 1u8).unwrap();
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    drop(others);
}

/// A permanent array for the revocation test: a handle to it may be kept (it is never
/// written), yet a worker's loan still ends with its call.
static TABLE: std::sync::OnceLock<shmpar::SharedArray<u64, ndarray::Ix1>> =
    std::sync::OnceLock::new();

thread_local! {
    static KEPT: std::cell::RefCell<Option<shmpar::ArrayHandle<'static, u64, ndarray::Ix1>>> =
        const { std::cell::RefCell::new(None) };
}

#[test]
fn an_array_lent_to_a_worker_is_gone_after_its_call() {
    let _w = common::watchdog(60, "revocation");
    use shmpar::ArrayHandle;
    let table = TABLE.get_or_init(|| {
        shmpar::SharedArray::from_array(&ndarray::Array1::from_elem(1000, 7u64)).unwrap()
    });
    let p = Pool::new(1).unwrap();
    // The first call keeps the handle in the worker (a 'static borrow makes that possible).
    let out = p
        .map(
            [table.handle()],
            |h: ArrayHandle<'static, u64, ndarray::Ix1>| {
                let first = h.view()[0];
                KEPT.with(|k| *k.borrow_mut() = Some(h));
                first
            },
        )
        .unwrap();
    assert_eq!(*out[0].as_ref().unwrap(), 7);
    // A later call reads the kept handle: the loan ended with the first call, so the read
    // faults (the worker dies, reported) rather than read memory its owner may now write.
    let out = p
        .map([0u8], |_| {
            KEPT.with(|k| k.borrow().as_ref().map(|h| h.view()[0]))
        })
        .unwrap();
    let err = out[0].as_ref().unwrap_err();
    assert_eq!(err.kind(), shmpar::ErrorKind::WorkerDied, "{err}");
    assert_eq!(err.signal(), Some(11));
}
