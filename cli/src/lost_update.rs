//! Lost updates on a shared counter, and the fixes: N processes x M increments, five ways.
//! Also what happens to each kind of lock when its holder is killed.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raw_sync::Timeout;
use raw_sync::locks::{LockImpl, LockInit, Mutex as RawSyncMutex};
use shmpar::{CachePadded, Event, LockError, Process, SharedValue, ShmMutex};
use shmpar_cli::PthreadMutex;

use crate::CliResult;

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

/// The five ways to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    Racy,
    RawSync,
    ShmMutex,
    FetchAdd,
    Local,
}

impl Way {
    pub(crate) const ALL: [Way; 5] = [
        Way::Racy,
        Way::RawSync,
        Way::ShmMutex,
        Way::FetchAdd,
        Way::Local,
    ];

    fn name(self) -> &'static str {
        match self {
            Way::Racy => "racy load + store",
            Way::RawSync => "raw_sync Mutex",
            Way::ShmMutex => "shmpar ShmMutex",
            Way::FetchAdd => "AtomicU64::fetch_add",
            Way::Local => "local, one add at end",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Way::Racy => "racy",
            Way::RawSync => "raw_sync_mutex",
            Way::ShmMutex => "shm_mutex",
            Way::FetchAdd => "fetch_add",
            Way::Local => "local_then_add",
        }
    }
}

/// One way's result.
pub(crate) struct Count {
    way: Way,
    expected: u64,
    counted: u64,
    elapsed: Duration,
}

/// A raw_sync mutex and the counter it guards, in one shared page.
#[repr(C)]
struct RawSyncCell {
    lock: [AtomicU64; 8],
    value: CachePadded<AtomicU64>,
}

// SAFETY: atomics only; raw_sync initialises its pthread mutex in `lock`'s bytes in place.
unsafe impl shmpar::ShmSafe for RawSyncCell {}

/// Counts with `procs` processes x `increments` each, all starting together.
pub(crate) fn count(way: Way, procs: usize, increments: u64) -> Fallible<Count> {
    // A spinning start line: each child says it is ready, then spins until the parent says go,
    // so that all of them are running, on different CPUs, when the race starts. (A child asleep
    // in a futex, or queued behind another on one CPU, can take milliseconds to run, and a short
    // run would be over before the next one began.)
    let ready = SharedValue::new(AtomicU64::new(0))?;
    let go = SharedValue::new(AtomicU64::new(0))?;
    let counter = SharedValue::new(CachePadded::new(AtomicU64::new(0)))?;
    let locked = SharedValue::new(ShmMutex::new(0u64))?;
    let raw = SharedValue::new(RawSyncCell {
        lock: Default::default(),
        value: CachePadded::new(AtomicU64::new(0)),
    })?;
    let raw_ptr = raw.as_ptr();
    // SAFETY: the lock bytes are ours, in shared memory, and outlive every process using them;
    // the data pointer is the counter beside them.
    let (raw_lock, _) = unsafe {
        RawSyncMutex::new(
            (*raw_ptr).lock.as_ptr() as *mut u8,
            (*raw_ptr).value.as_ptr().cast(),
        )
    }?;
    let raw_lock: &dyn LockImpl = &*raw_lock;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (ready, go, counter, locked) = (&ready, &go, &counter, &locked);
    let kids: Vec<Process> = (0..procs)
        .map(|i| {
            let count = move || {
                // One CPU each (round robin), so that they really run at the same time.
                let _ = shmpar_cli::pin_to_cpu(i % cpus);
                // ORDERING: SeqCst for both flags of the start line; nothing else is published.
                ready.fetch_add(1, Ordering::SeqCst);
                let waiting = Instant::now();
                while go.load(Ordering::SeqCst) == 0 && waiting.elapsed() < Duration::from_secs(30)
                {
                    std::hint::spin_loop();
                }
                match way {
                    Way::Racy => {
                        for _ in 0..increments {
                            // A read-modify-write in two steps: another process may write
                            // between them, and its update is then overwritten (lost).
                            let v = counter.load(Ordering::Relaxed);
                            counter.store(v + 1, Ordering::Relaxed);
                        }
                    }
                    Way::RawSync => {
                        for _ in 0..increments {
                            let guard = raw_lock.lock().expect("raw_sync lock");
                            // SAFETY: the data pointer is the counter; we hold the lock.
                            unsafe { *(*guard).cast::<u64>() += 1 };
                        }
                    }
                    Way::ShmMutex => {
                        for _ in 0..increments {
                            *locked.lock().expect("ShmMutex") += 1;
                        }
                    }
                    Way::FetchAdd => {
                        for _ in 0..increments {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Way::Local => {
                        let mut local = 0u64;
                        for _ in 0..increments {
                            local = black_box(local + 1);
                        }
                        counter.fetch_add(local, Ordering::Relaxed);
                    }
                }
            };
            // SAFETY: the children touch only shared memory (the counter, the locks, the start
            // flags) and CPU affinity, take no lock of this process's threads, and `_exit`.
            unsafe { Process::fork(count) }
        })
        .collect::<shmpar::Result<_>>()?;
    let waiting = Instant::now();
    // ORDERING: SeqCst, as in the children.
    while ready.load(Ordering::SeqCst) < procs as u64 {
        if waiting.elapsed() > Duration::from_secs(30) {
            return Err("the counting processes did not start".into());
        }
        std::thread::yield_now();
    }
    // While they spin, the scheduler spreads them over the CPUs (it takes a few ms).
    std::thread::sleep(Duration::from_millis(20));
    let t = Instant::now();
    go.store(1, Ordering::SeqCst);
    for k in kids {
        k.join()?.into_result()?;
    }
    let elapsed = t.elapsed();
    let counted = match way {
        Way::ShmMutex => *locked.lock().map_err(shmpar::Error::from)?,

        Way::RawSync => raw.value.load(Ordering::Relaxed),
        _ => counter.load(Ordering::Relaxed),
    };
    Ok(Count {
        way,
        expected: procs as u64 * increments,
        counted,
        elapsed,
    })
}

/// Runs the five ways and prints a table (or JSON lines).
pub(crate) fn run(procs: usize, increments: u64, json: bool) -> CliResult {
    let counts = Way::ALL
        .iter()
        .map(|&w| count(w, procs, increments))
        .collect::<Fallible<Vec<_>>>()?;
    let locked = counts
        .iter()
        .find(|c| c.way == Way::ShmMutex)
        .map_or(1.0, |c| c.elapsed.as_secs_f64());
    if !json {
        println!("{procs} processes x {increments} increments of one shared counter:\n");
        println!(
            "{:<22} | {:>10} {:>10} {:>10} {:>7} | {:>9} {:>9} {:>11}",
            "way", "expected", "final", "lost", "lost %", "time", "ns/incr", "vs ShmMutex"
        );
        println!("{}", "-".repeat(101));
    }
    for c in &counts {
        let lost = c.expected.saturating_sub(c.counted);
        let secs = c.elapsed.as_secs_f64();
        let ns = secs * 1e9 / c.expected as f64;
        if json {
            println!(
                "{{\"demo\":\"lost_update\",\"way\":\"{}\",\"procs\":{procs},\"increments\":{increments},\"expected\":{},\"final\":{},\"lost\":{lost},\"lost_pct\":{:.3},\"seconds\":{secs:.6},\"ns_per_increment\":{ns:.3},\"speed_vs_shm_mutex\":{:.3}}}",
                c.way.key(),
                c.expected,
                c.counted,
                100.0 * lost as f64 / c.expected as f64,
                locked / secs
            );
        } else {
            println!(
                "{:<22} | {:>10} {:>10} {:>10} {:>6.1}% | {:>7.1}ms {:>9.2} {:>10.1}x",
                c.way.name(),
                c.expected,
                c.counted,
                lost,
                100.0 * lost as f64 / c.expected as f64,
                secs * 1e3,
                ns,
                locked / secs
            );
        }
    }
    if !json {
        println!(
            "\nA lost update: two processes read the same value, both add one, and the second\n\
             write erases the first. A lock or an atomic add makes read-modify-write one step;\n\
             counting locally and adding once shares nothing, so it is fastest of all."
        );
    }
    Ok(())
}

/// What happened to one kind of lock when its holder was killed.
struct Outcome {
    lock: &'static str,
    what: String,
    took: Duration,
}

/// A child takes the lock and is SIGKILLed; then the parent tries to lock.
pub(crate) fn holder_dies(json: bool) -> CliResult {
    let wait = Duration::from_secs(1);
    let mut outcomes = Vec::new();

    // raw_sync: not robust.
    let raw = SharedValue::new(RawSyncCell {
        lock: Default::default(),
        value: CachePadded::new(AtomicU64::new(0)),
    })?;
    let p = raw.as_ptr();
    // SAFETY: as in `count`.
    let (raw_lock, _) =
        unsafe { RawSyncMutex::new((*p).lock.as_ptr() as *mut u8, (*p).value.as_ptr().cast()) }?;
    let raw_lock: &dyn LockImpl = &*raw_lock;
    let (took, locked) = kill_holder(
        || std::mem::forget(raw_lock.lock()),
        || raw_lock.try_lock(Timeout::Val(wait)).is_ok(),
    )?;
    outcomes.push(Outcome {
        lock: "raw_sync Mutex",
        what: if locked {
            "locked (unexpected)".into()
        } else {
            format!("timed out after {wait:?}; lock() would hang forever")
        },
        took,
    });

    // A process-shared pthread mutex without robustness.
    let plain = SharedValue::new(PthreadMutex::new(0u64))?;
    let (took, locked) = kill_holder(
        || std::mem::forget(plain.lock()),
        || plain.lock_timeout(wait).is_ok(),
    )?;
    outcomes.push(Outcome {
        lock: "pthread, not robust",
        what: if locked {
            "locked (unexpected)".into()
        } else {
            format!("timed out after {wait:?}; lock() would hang forever")
        },
        took,
    });

    // ShmMutex: robust. The child breaks the invariant a == b, then dies.
    let pair = SharedValue::new(ShmMutex::new([0u64; 2]))?;
    for _ in 0..1000 {
        let mut g = pair.lock().map_err(shmpar::Error::from)?;
        g[0] += 1;
        g[1] += 1;
    }
    let mut report = String::new();
    let (took, _) = kill_holder(
        || {
            let mut g = pair.lock().expect("lock");
            g[0] += 1; // half an update
            std::mem::forget(g);
        },
        || match pair.lock() {
            Err(LockError::OwnerDied(mut g)) => {
                let before = *g;
                g[1] = g[0];
                let repaired = g.mark_consistent().is_ok();
                report = format!(
                    "OwnerDied: found {before:?}, repaired to {:?}{}",
                    *g,
                    if repaired { ", marked consistent" } else { "" }
                );
                true
            }
            Ok(_) => {
                report = "locked with no report (unexpected)".into();
                true
            }
            Err(e) => {
                report = format!("{e}");
                false
            }
        },
    )?;
    let after = *pair.lock().map_err(shmpar::Error::from)?;
    report.push_str(&format!("; next lock works, counter {after:?} consistent"));
    outcomes.push(Outcome {
        lock: "shmpar ShmMutex",
        what: report,
        took,
    });

    if json {
        for o in &outcomes {
            println!(
                "{{\"demo\":\"lock_holder_dies\",\"lock\":\"{}\",\"outcome\":\"{}\",\"seconds\":{:.6}}}",
                o.lock,
                o.what.replace('"', "'"),
                o.took.as_secs_f64()
            );
        }
    } else {
        println!(
            "A child takes the lock and is SIGKILLed while holding it. Then we try to lock:\n"
        );
        println!("{:<20} | {:>10} | what happened", "lock", "time");
        println!("{}", "-".repeat(100));
        for o in &outcomes {
            println!(
                "{:<20} | {:>8.1}ms | {}",
                o.lock,
                o.took.as_secs_f64() * 1e3,
                o.what
            );
        }
    }
    Ok(())
}

/// Forks a child that runs `hold` (taking a lock and keeping it), kills it, then times `try`.
fn kill_holder(hold: impl FnOnce(), attempt: impl FnOnce() -> bool) -> Fallible<(Duration, bool)> {
    let held = SharedValue::new(Event::new())?;
    // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
    let mut child = unsafe {
        Process::fork(|| {
            hold();
            held.set();
            std::thread::sleep(Duration::from_secs(60));
        })
    }?;
    if !held.wait_timeout(Duration::from_secs(10)) {
        return Err("the child never took the lock".into());
    }
    child.kill()?;
    child.join()?;
    let t = Instant::now();
    let ok = attempt();
    Ok((t.elapsed(), ok))
}
