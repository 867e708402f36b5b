//! Lost updates on a shared counter, and the fixes: N processes x M increments, five ways.
//! Also what happens to each kind of lock when its holder is killed.

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use plotters::prelude::*;
use raw_sync::Timeout;
use raw_sync::locks::{LockImpl, LockInit, Mutex as RawSyncMutex};
use serde::Serialize;
use shmpar::{CachePadded, Event, LockError, Process, SharedValue, ShmMutex};
use shmpar_cli::PthreadMutex;

use crate::{CliResult, output};

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
/// A row as `--json` prints it.
#[derive(Debug, Serialize)]
struct Record {
    demo: &'static str,
    way: &'static str,
    procs: usize,
    increments: u64,
    expected: u64,
    #[serde(rename = "final")]
    counted: u64,
    lost: u64,
    lost_pct: f64,
    seconds: f64,
    ns_per_increment: f64,
    speed_vs_shm_mutex: f64,
}

pub(crate) fn run(procs: usize, increments: u64, json: bool, svg: Option<&Path>) -> CliResult {
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
    }
    let mut table = output::table(&[
        "way",
        "expected",
        "final",
        "lost",
        "lost %",
        "time",
        "ns/incr",
        "vs ShmMutex",
    ]);
    for c in &counts {
        let lost = c.expected.saturating_sub(c.counted);
        let secs = c.elapsed.as_secs_f64();
        let ns = secs * 1e9 / c.expected as f64;
        if json {
            output::json_line(&Record {
                demo: "lost_update",
                way: c.way.key(),
                procs,
                increments,
                expected: c.expected,
                counted: c.counted,
                lost,
                lost_pct: 100.0 * lost as f64 / c.expected as f64,
                seconds: secs,
                ns_per_increment: ns,
                speed_vs_shm_mutex: locked / secs,
            })?;
        } else {
            table.add_row(vec![
                c.way.name().to_string(),
                c.expected.to_string(),
                c.counted.to_string(),
                lost.to_string(),
                format!("{:.1}%", 100.0 * lost as f64 / c.expected as f64),
                format!("{:.1}ms", secs * 1e3),
                format!("{ns:.2}"),
                format!("{:.1}x", locked / secs),
            ]);
        }
    }
    if !json {
        println!("{table}");
        println!(
            "\nA lost update: two processes read the same value, both add one, and the second\n\
             write erases the first. A lock or an atomic add makes read-modify-write one step;\n\
             counting locally and adding once shares nothing, so it is fastest of all."
        );
    }
    if let Some(path) = svg {
        std::fs::write(path, render_svg(&counts, procs, increments)?)?;
        if !json {
            println!("wrote {}", path.display());
        }
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
            output::json_line(&HolderRecord {
                demo: "lock_holder_dies",
                lock: o.lock,
                outcome: &o.what,
                seconds: o.took.as_secs_f64(),
            })?;
        }
    } else {
        println!(
            "A child takes the lock and is SIGKILLed while holding it. Then we try to lock:\n"
        );
        let mut table = output::table(&["lock", "time", "what happened"]);
        output::left(&mut table, 2);
        for o in &outcomes {
            table.add_row(vec![
                o.lock.to_string(),
                format!("{:.1}ms", o.took.as_secs_f64() * 1e3),
                o.what.clone(),
            ]);
        }
        println!("{table}");
    }
    Ok(())
}

/// An outcome as `--json` prints it.
#[derive(Debug, Serialize)]
struct HolderRecord<'a> {
    demo: &'static str,
    lock: &'static str,
    outcome: &'a str,
    seconds: f64,
}

/// The lost updates (bars, % of the increments) and the time per increment (bars, ns) of each
/// way, side by side.
fn render_svg(counts: &[Count], procs: usize, increments: u64) -> Result<String, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let root = root
            .titled(
                &format!("{procs} processes x {increments} increments of one shared counter"),
                ("sans-serif", 20),
            )
            .map_err(|x| e(&x))?;
        let (left, right) = root.split_horizontally(500);
        let bars = |value: &dyn Fn(&Count) -> f64| -> Vec<output::Bar> {
            counts
                .iter()
                .enumerate()
                .map(|(i, c)| output::Bar {
                    label: c.way.name().into(),
                    value: Some(value(c)),
                    color: Palette99::pick(i).to_rgba(),
                })
                .collect()
        };
        let lost =
            bars(&|c| 100.0 * c.expected.saturating_sub(c.counted) as f64 / c.expected as f64);
        let ns = bars(&|c| c.elapsed.as_secs_f64() * 1e9 / c.expected as f64);
        output::hbars(&left, "updates lost", "% of the increments", &lost, 150)?;
        output::hbars(&right, "time per increment", "ns", &ns, 150)?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_chart_is_well_formed_and_names_every_way() {
        let counts: Vec<Count> = Way::ALL
            .iter()
            .enumerate()
            .map(|(i, &way)| Count {
                way,
                expected: 1000,
                counted: if i == 0 { 600 } else { 1000 },
                elapsed: Duration::from_micros(100 * (i as u64 + 1)),
            })
            .collect();
        let svg = render_svg(&counts, 2, 500).unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
        for way in Way::ALL {
            assert!(texts.iter().any(|t| t.contains(way.name())), "{texts:?}");
        }
        // Two panels of one bar per way (the backgrounds are rects too).
        let rects = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
        assert!(rects >= 2 * Way::ALL.len(), "{rects} rects");
    }
}
