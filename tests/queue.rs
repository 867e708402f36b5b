//! Queue and Pipe across processes: FIFO, no loss and no duplicate under many producers and
//! consumers, close wakes blocked readers, and a killed consumer takes at most the message it
//! had already taken.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmpar::{CachePadded, ErrorKind, Pipe, Process, Queue, SharedValue};

#[test]
fn fifo_with_one_producer() {
    let _w = common::watchdog(60, "fifo");
    let q = Queue::<u64>::new(8).unwrap();
    // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
    let producer = unsafe {
        Process::fork(|| {
            for i in 0..10_000u64 {
                q.put(&i).unwrap();
            }
        })
    }
    .unwrap();
    for i in 0..10_000u64 {
        assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), i);
    }
    producer.join().unwrap().into_result().unwrap();
    assert!(q.is_empty());
}

/// Totals kept by the consumers: count, sum of ids, sum of squares, order violations.
#[repr(C)]
struct Tally {
    count: CachePadded<AtomicU64>,
    sum: CachePadded<AtomicU64>,
    squares: CachePadded<AtomicU64>,
    disorder: CachePadded<AtomicU64>,
}

// SAFETY: atomics only.
unsafe impl shmpar::ShmSafe for Tally {}

fn tally() -> SharedValue<Tally> {
    SharedValue::new(Tally {
        count: CachePadded::new(AtomicU64::new(0)),
        sum: CachePadded::new(AtomicU64::new(0)),
        squares: CachePadded::new(AtomicU64::new(0)),
        disorder: CachePadded::new(AtomicU64::new(0)),
    })
    .unwrap()
}

const PRODUCERS: u64 = 4;
const EACH: u64 = 100_000;

/// Message id: producer in the high bits, sequence in the low.
fn id(producer: u64, seq: u64) -> u64 {
    (producer << 32) | seq
}

/// Consumes until the queue is closed and empty, checking per-producer order.
fn consume(q: &Queue<u64>, t: &Tally) {
    let mut last = [None::<u64>; PRODUCERS as usize];
    loop {
        match q.get() {
            Ok(m) => {
                let (p, seq) = ((m >> 32) as usize, m & 0xffff_ffff);
                if last[p].is_some_and(|l| l >= seq) {
                    t.disorder.fetch_add(1, Ordering::Relaxed);
                }
                last[p] = Some(seq);
                // `count` last: a consumer killed between these adds leaves `count` short, so
                // the sums are compared only when every message was counted whole.
                t.sum.fetch_add(m, Ordering::Relaxed);
                t.squares.fetch_add(m.wrapping_mul(m), Ordering::Relaxed);
                t.count.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == ErrorKind::Closed => return,
            Err(e) => panic!("{e}"),
        }
    }
}

/// PRODUCERS processes, each putting its EACH messages in order.
fn spawn_producers(q: &Queue<u64>) -> Vec<Process> {
    (0..PRODUCERS)
        .map(|p| {
            // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
            unsafe {
                Process::fork(move || {
                    for s in 0..EACH {
                        q.put(&id(p, s)).unwrap();
                    }
                })
            }
            .unwrap()
        })
        .collect()
}

fn expected() -> (u64, u64, u64) {
    let mut sum = 0u64;
    let mut squares = 0u64;
    for p in 0..PRODUCERS {
        for s in 0..EACH {
            let m = id(p, s);
            sum = sum.wrapping_add(m);
            squares = squares.wrapping_add(m.wrapping_mul(m));
        }
    }
    (PRODUCERS * EACH, sum, squares)
}

#[test]
fn four_producers_four_consumers_no_loss_no_duplicate() {
    let _w = common::watchdog(300, "mpmc");
    let q = Queue::<u64>::new(256).unwrap();
    let t = tally();
    let producers = spawn_producers(&q);
    let consumers: Vec<Process> = (0..4)
        // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
        .map(|_| unsafe { Process::fork(|| consume(&q, &t)) }.unwrap())
        .collect();
    for p in producers {
        p.join().unwrap().into_result().unwrap();
    }
    q.close();
    for c in consumers {
        c.join().unwrap().into_result().unwrap();
    }
    let (count, sum, squares) = expected();
    assert_eq!(
        t.count.load(Ordering::Relaxed),
        count,
        "lost or duplicated messages"
    );
    assert_eq!(t.sum.load(Ordering::Relaxed), sum);
    assert_eq!(t.squares.load(Ordering::Relaxed), squares);
    assert_eq!(
        t.disorder.load(Ordering::Relaxed),
        0,
        "a producer's messages came out of order"
    );
}

#[test]
fn close_wakes_blocked_readers() {
    let _w = common::watchdog(60, "close");
    let q = Queue::<u8>::new(4).unwrap();
    let readers: Vec<Process> = (0..3)
        .map(|_| {
            // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
            unsafe {
                Process::fork(|| {
                    let t = Instant::now();
                    assert_eq!(q.get().unwrap_err().kind(), ErrorKind::Closed);
                    assert!(t.elapsed() < Duration::from_secs(5));
                })
            }
            .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    q.close();
    for r in readers {
        r.join().unwrap().into_result().unwrap();
    }
    assert_eq!(q.put(&1).unwrap_err().kind(), ErrorKind::Closed);
}

#[test]
fn a_killed_consumer_loses_nothing_for_the_others() {
    let _w = common::watchdog(300, "killed consumer");
    let q = Queue::<u64>::new(64).unwrap();
    let t = tally();
    let producers = spawn_producers(&q);
    let survivors: Vec<Process> = (0..2)
        // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
        .map(|_| unsafe { Process::fork(|| consume(&q, &t)) }.unwrap())
        .collect();
    // Victims: consumers killed at random moments (inside get, holding the lock, or between).
    for round in 0..20u64 {
        // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
        let mut victim = unsafe { Process::fork(|| consume(&q, &t)) }.unwrap();
        std::thread::sleep(Duration::from_micros(500 + round * 377 % 3000));
        victim.kill().unwrap();
        victim.join().unwrap();
    }
    for p in producers {
        p.join().unwrap().into_result().unwrap();
    }
    q.close();
    for c in survivors {
        c.join().unwrap().into_result().unwrap();
    }
    let (count, sum, squares) = expected();
    let got = t.count.load(Ordering::Relaxed);
    assert!(
        got <= count,
        "{} messages were delivered twice",
        got - count
    );
    // A victim killed right after taking a message, before counting it, took that one message
    // with it: at most one per victim, and never a duplicate.
    let missing = count - got;
    eprintln!("victims took {missing} message(s) with them");
    assert!(missing <= 20, "{missing} messages lost");
    let missing_sum = sum.wrapping_sub(t.sum.load(Ordering::Relaxed));
    if missing == 0 {
        assert_eq!(missing_sum, 0);
        assert_eq!(squares, t.squares.load(Ordering::Relaxed));
    }
    assert_eq!(t.disorder.load(Ordering::Relaxed), 0);
}

#[test]
fn pipe_round_trips_and_closes() {
    let _w = common::watchdog(60, "pipe");
    let (parent, child) = Pipe::<Vec<u32>>::new().unwrap();
    // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
    let kid = unsafe {
        Process::fork(|| {
            while let Ok(mut v) = child.recv() {
                v.reverse();
                child.send(&v).unwrap();
            }
        })
    }
    .unwrap();
    for n in 0..100u32 {
        parent.send(&(0..n).collect()).unwrap();
        assert_eq!(
            parent.recv_timeout(Duration::from_secs(10)).unwrap(),
            (0..n).rev().collect::<Vec<_>>()
        );
    }
    parent.close();
    kid.join().unwrap().into_result().unwrap();
}

#[test]
fn oversized_messages_are_refused_whole() {
    let q = Queue::<Vec<u8>>::with_message_bytes(2, 100).unwrap();
    assert_eq!(
        q.put(&vec![0; 1000]).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert!(q.is_empty());
}

/// A child holding the other end of a new pipe (room for `capacity` messages each way), which
/// has sent 1 (received here) and now sleeps.
fn a_child_that_sent_one(capacity: usize) -> (shmpar::Connection<u32>, Process) {
    let (mine, theirs) = Pipe::<u32>::with_capacity(capacity, 64).unwrap();
    let child = Process::start(
        |end: shmpar::Connection<u32>| {
            end.send(&1).unwrap();
            std::thread::sleep(Duration::from_secs(30));
        },
        theirs,
    )
    .unwrap();
    assert_eq!(mine.recv().unwrap(), 1);
    (mine, child)
}

/// Asserts that `call` fails with `Closed` within a second.
fn closed_within_a_second<T: std::fmt::Debug>(call: impl FnOnce() -> shmpar::Result<T>) {
    let t = Instant::now();
    let err = call().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn recv_returns_end_of_file_once_the_other_end_dies() {
    let _w = common::watchdog(60, "pipe eof");
    let (mine, mut child) = a_child_that_sent_one(64);
    child.kill().unwrap();
    closed_within_a_second(|| mine.recv());
    child.join().unwrap();
}

#[test]
fn a_one_way_pipe_reads_end_of_file_once_the_writer_dies() {
    let _w = common::watchdog(60, "one-way pipe eof");
    let (reader, writer) = Pipe::<u32>::one_way().unwrap();
    let mut child = Process::start(
        |w: shmpar::PipeWriter<u32>| {
            w.send(&7).unwrap();
            std::thread::sleep(Duration::from_secs(30));
        },
        writer,
    )
    .unwrap();
    assert_eq!(reader.recv().unwrap(), 7);
    child.kill().unwrap();
    closed_within_a_second(|| reader.recv());
    child.join().unwrap();
}

#[test]
fn a_one_way_pipe_carries_messages_to_a_reading_child() {
    let _w = common::watchdog(60, "one-way pipe to a child");
    let (reader, writer) = Pipe::<String>::one_way().unwrap();
    let child = Process::start(
        |r: shmpar::PipeReader<String>| {
            let mut n = 0u32;
            while let Ok(m) = r.recv() {
                assert_eq!(m, format!("message {n}"));
                n += 1;
            }
            n
        },
        reader,
    )
    .unwrap();
    for i in 0..500 {
        writer.send(&format!("message {i}")).unwrap();
    }
    writer.close();
    assert_eq!(child.join_value().unwrap(), 500);
}

/// Takes jobs until the queue closes; counts each, then marks it done.
fn finish_jobs((q, finished): (Queue<u64>, SharedValue<AtomicU64>)) {
    while let Ok(job) = q.get() {
        std::thread::sleep(Duration::from_micros(job % 200));
        // ORDERING: Relaxed: the count is published by task_done's lock.
        finished.fetch_add(1, Ordering::Relaxed);
        q.task_done().unwrap();
    }
}

#[test]
fn join_returns_once_every_message_is_marked_done() {
    let _w = common::watchdog(120, "queue join");
    let q = Queue::<u64>::new(32).unwrap();
    let finished = SharedValue::new(AtomicU64::new(0)).unwrap();
    let consumers: Vec<Process> = (0..3)
        .map(|_| Process::start(finish_jobs, (q.clone(), finished.clone())).unwrap())
        .collect();
    for round in 0..5u64 {
        for i in 0..200 {
            q.put(&(round * 1000 + i)).unwrap();
        }
        q.join_timeout(Duration::from_secs(30)).unwrap();
        // Not one message short: join waited for the last task_done.
        assert_eq!(finished.load(Ordering::Relaxed), (round + 1) * 200);
    }
    // More task_done calls than messages is an error, not a wrapped count.
    assert_eq!(q.task_done().unwrap_err().kind(), ErrorKind::InvalidInput);
    q.close();
    for c in consumers {
        c.join().unwrap().into_result().unwrap();
    }
}

#[test]
fn join_timeout_is_the_way_out_when_a_consumer_dies_with_its_message() {
    let _w = common::watchdog(60, "queue join dead consumer");
    let q = Queue::<u64>::new(4).unwrap();
    q.put(&1).unwrap();
    let dies = Process::start(
        |q: Queue<u64>| {
            let _job = q.get().unwrap();
            // Ends without task_done, as a crash would.
        },
        q.clone(),
    )
    .unwrap();
    dies.join().unwrap().into_result().unwrap();
    assert!(q.is_empty());
    let t = Instant::now();
    let err = q.join_timeout(Duration::from_millis(300)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    assert!(t.elapsed() >= Duration::from_millis(300));
    // Whoever knows the message is lost marks it done; then join returns.
    q.task_done().unwrap();
    q.join().unwrap();
}

#[test]
fn a_call_that_does_not_wait_still_reports_a_dead_writer() {
    let _w = common::watchdog(60, "pipe eof without a wait");
    let (reader, writer) = Pipe::<u32>::one_way().unwrap();
    let mut child = Process::start(
        |w: shmpar::PipeWriter<u32>| {
            w.send(&7).unwrap();
            std::thread::sleep(Duration::from_secs(30));
        },
        writer,
    )
    .unwrap();
    assert_eq!(reader.recv().unwrap(), 7);
    child.kill().unwrap();
    child.join().unwrap();
    // A polling loop of zero timeouts ends: end of file, not TimedOut forever.
    let err = reader.recv_timeout(Duration::ZERO).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    let err = reader.recv_timeout(Duration::from_micros(10)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
}

#[test]
fn send_fails_once_the_reading_end_dies_while_the_pipe_is_full() {
    let _w = common::watchdog(60, "pipe send to a dead reader");
    let (reader, writer) = Pipe::<u32>::one_way_with_capacity(4, 64).unwrap();
    let (started, started_tx) = Pipe::<()>::one_way().unwrap();
    // The child holds the reading end (once it has started) and never reads.
    let mut child = Process::start(
        |(r, started): (shmpar::PipeReader<u32>, shmpar::PipeWriter<()>)| {
            let _keep = r;
            started.send(&()).unwrap();
            std::thread::sleep(Duration::from_secs(30));
        },
        (reader, started_tx),
    )
    .unwrap();
    started.recv().unwrap();
    for i in 0..4 {
        writer.send(&i).unwrap();
    }
    child.kill().unwrap();
    // Full, and no one will ever read: Closed (a broken pipe), not a wait forever.
    closed_within_a_second(|| writer.send(&4));
    // A call that does not wait says the same.
    let err = writer.send_timeout(&4, Duration::ZERO).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    child.join().unwrap();
}

#[test]
fn a_connection_send_fails_once_the_other_end_dies() {
    let _w = common::watchdog(60, "connection send to a dead end");
    let (mine, mut child) = a_child_that_sent_one(2);
    mine.send(&10).unwrap();
    mine.send(&11).unwrap();
    child.kill().unwrap();
    closed_within_a_second(|| mine.send(&12));
    child.join().unwrap();
}

/// A message whose decoding panics (a `Deserialize` with a bug).
#[derive(Debug)]
struct Grenade;

impl serde::Serialize for Grenade {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(7)
    }
}

impl<'de> serde::Deserialize<'de> for Grenade {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("a Deserialize with a bug")
    }
}

#[test]
fn a_message_whose_decoding_panics_is_taken_and_the_queue_goes_on() {
    let _w = common::watchdog(60, "panicking decode");
    let q = Queue::<Grenade>::new(4).unwrap();
    q.put(&Grenade).unwrap();
    q.put(&Grenade).unwrap();
    let first = std::panic::catch_unwind(|| q.get());
    assert!(first.is_err(), "the decode's panic reaches the caller");
    // Taken, not left at the head to panic every later get; the lock was let go.
    assert_eq!(q.len(), 1);
    assert!(std::panic::catch_unwind(|| q.get()).is_err());
    assert_eq!(q.try_get().unwrap_err().kind(), ErrorKind::WouldBlock);
    q.put(&Grenade).unwrap();
    assert_eq!(q.len(), 1);
}

/// One side of a queue wakes one sleeper of the other side (`wake`) and kills it (`first`,
/// the first to sleep, so the first the futex wakes) before it can run. The second sleeper (a
/// thread running `second` with a 3 s deadline) must still see the change soon, not at its
/// deadline (or, without one, never). Ten rounds; a round where `first` finished before it
/// died leaves nothing to find (`second` times out).
fn a_woken_waiter_that_dies_strands_nothing(
    q: impl Fn() -> Queue<u64>,
    first: fn(Queue<u64>),
    second: fn(&Queue<u64>) -> shmpar::Result<()>,
    wake: fn(&Queue<u64>),
) {
    let mut stranded = Vec::new();
    for _ in 0..10 {
        let q = q();
        let mut first = Process::start(first, q.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        let second = {
            let q = q.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                second(&q).map(|()| t.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(150));
        wake(&q);
        first.kill().unwrap();
        first.join().unwrap();
        match second.join().unwrap() {
            Err(e) => assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}"),
            Ok(waited) if waited > Duration::from_secs(1) => stranded.push(waited),
            Ok(_) => {}
        }
    }
    assert!(
        stranded.is_empty(),
        "found only at the deadline: {stranded:?}"
    );
}

#[test]
fn a_woken_getter_that_dies_before_it_runs_does_not_strand_the_message() {
    let _w = common::watchdog(120, "woken getter dies");
    a_woken_waiter_that_dies_strands_nothing(
        || Queue::new(4).unwrap(),
        |q| drop(q.get()),
        |q| q.get_timeout(Duration::from_secs(3)).map(drop),
        |q| q.put(&1).unwrap(),
    );
}

#[test]
fn a_woken_putter_that_dies_before_it_runs_does_not_strand_the_room() {
    let _w = common::watchdog(120, "woken putter dies");
    a_woken_waiter_that_dies_strands_nothing(
        || {
            let q = Queue::new(1).unwrap();
            q.put(&0).unwrap();
            q
        },
        |q| drop(q.put(&1)),
        |q| q.put_timeout(&2, Duration::from_secs(3)),
        |q| assert_eq!(q.get().unwrap(), 0),
    );
}
