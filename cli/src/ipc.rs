//! `ipc`: what it costs to move something between processes, by each route: the one-way
//! latency of a small message (half a round trip, median) and the throughput of 1 MiB
//! payloads, through a `Queue`, a `Pipe`, a `SharedValue` atomic (small messages only) and a
//! `SharedArray` read in place by a pool task through its handle; beside Python's Queue,
//! Pipe, Manager and shared_memory when python3 is here.

use std::hint::spin_loop;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ndarray::Ix1;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use shmpar::{ArrayHandle, Connection, Pipe, Pool, Process, Queue, SharedArray, SharedValue};

use crate::{CliResult, output, peers};

const MIB: usize = 1 << 20;
/// The longest any one step may take: a child that died (or a stuck peer) ends the demo with
/// an error instead of a hang.
const STEP: Duration = Duration::from_secs(30);

/// One route, as `--json` prints it (and as the Python peer writes it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    #[serde(default = "python")]
    peer: String,
    route: String,
    /// One-way latency of a small message, µs (`None`: the route does not carry one).
    small_us: Option<f64>,
    /// 1 MiB payloads per second, in GB/s (`None`: the route does not carry one).
    mib_gbps: Option<f64>,
}

fn python() -> String {
    "python".into()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `rounds` round trips; half the median, in µs.
fn one_way_us(
    rounds: usize,
    mut round_trip: impl FnMut() -> shmpar::Result<()>,
) -> shmpar::Result<f64> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        round_trip()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times) / 2.0 * 1e6)
}

fn queue_echo((inbox, outbox, n): (Queue<u64>, Queue<u64>, usize)) {
    for _ in 0..n {
        let Ok(v) = inbox.get_timeout(STEP) else {
            return;
        };
        if outbox.put_timeout(&v, STEP).is_err() {
            return;
        }
    }
}

/// A 1 MiB payload's type: a `Vec<u8>` (serde sees a sequence of `u8`, one at a time) or a
/// `serde_bytes::ByteBuf` (serde sees bytes, copied whole).
trait Payload: Serialize + serde::de::DeserializeOwned + 'static {
    fn of(bytes: Vec<u8>) -> Self;
    fn size(&self) -> usize;
}

impl Payload for Vec<u8> {
    fn of(bytes: Vec<u8>) -> Self {
        bytes
    }
    fn size(&self) -> usize {
        self.len()
    }
}

impl Payload for ByteBuf {
    fn of(bytes: Vec<u8>) -> Self {
        ByteBuf::from(bytes)
    }
    fn size(&self) -> usize {
        self.as_slice().len()
    }
}

fn queue_drain<M: Payload>((inbox, ack, n): (Queue<M>, Queue<u64>, usize)) {
    let mut bytes = 0u64;
    for _ in 0..n {
        let Ok(m) = inbox.get_timeout(STEP) else {
            return;
        };
        bytes += m.size() as u64;
    }
    let _ = ack.put_timeout(&bytes, STEP);
}

fn pipe_echo((end, n): (Connection<u64>, usize)) {
    for _ in 0..n {
        let Ok(v) = end.recv_timeout(STEP) else {
            return;
        };
        if end.send_timeout(&v, STEP).is_err() {
            return;
        }
    }
}

fn pipe_drain<M: Payload>((end, n): (Connection<M>, usize)) {
    let mut bytes = 0u64;
    for _ in 0..n {
        let Ok(m) = end.recv_timeout(STEP) else {
            return;
        };
        bytes += m.size() as u64;
    }
    let _ = end.send_timeout(&M::of(bytes.to_le_bytes().to_vec()), STEP);
}

/// 1 MiB payloads through a Queue, then through a Pipe, as `M`: GB/s for each.
fn payload_gbps<M: Payload>(payloads: usize) -> shmpar::Result<(f64, f64)> {
    let gbps = |secs: f64| ((payloads - 1) * MIB) as f64 / secs / 1e9;
    let payload = M::of(vec![1u8; MIB]);

    let payload_q = Queue::<M>::with_message_bytes(4, MIB + 16)?;
    let ack = Queue::<u64>::new(1)?;
    let child = Process::start(queue_drain::<M>, (payload_q.clone(), ack.clone(), payloads))?;
    // The child is up once it takes the first payload; the clock starts after it.
    payload_q.put_timeout(&payload, STEP)?;
    let t = Instant::now();
    for _ in 1..payloads {
        payload_q.put_timeout(&payload, STEP)?;
    }
    if ack.get_timeout(STEP)? != (payloads * MIB) as u64 {
        return Err(stray("the Queue's reader counted other bytes"));
    }
    let queue = gbps(t.elapsed().as_secs_f64());
    child.join()?.into_result()?;

    let (mine, theirs) = Pipe::<M>::with_capacity(4, MIB + 16)?;
    let child = Process::start(pipe_drain::<M>, (theirs, payloads))?;
    mine.send_timeout(&payload, STEP)?;
    let t = Instant::now();
    for _ in 1..payloads {
        mine.send_timeout(&payload, STEP)?;
    }
    mine.recv_timeout(STEP)?;
    let pipe = gbps(t.elapsed().as_secs_f64());
    child.join()?.into_result()?;
    Ok((queue, pipe))
}

/// Spins (yielding now and then) until `word` holds `value`; false after `STEP`.
fn spin_until(word: &AtomicU64, value: u64) -> bool {
    let start = Instant::now();
    let mut spins = 0u32;
    // ORDERING: Acquire, paired with the other side's Release store: a ping-pong of two words;
    // nothing else is published.
    while word.load(Ordering::Acquire) != value {
        spins += 1;
        if spins % 64 == 0 {
            if start.elapsed() > STEP {
                return false;
            }
            std::thread::yield_now();
        } else {
            spin_loop();
        }
    }
    true
}

/// Answers each ping `i` with pong `i`.
fn atomic_echo((ping, pong, n): (SharedValue<AtomicU64>, SharedValue<AtomicU64>, u64)) {
    for i in 1..=n {
        if !spin_until(&ping, i) {
            return;
        }
        // ORDERING: Release, paired with the parent's Acquire in `spin_until`.
        pong.store(i, Ordering::Release);
    }
}

fn read_payload(a: ArrayHandle<'_, u8, Ix1>) -> u64 {
    a.view().iter().map(|&b| u64::from(b)).sum()
}

fn echo_task(x: u64) -> u64 {
    x
}

/// An error of the demo itself (a peer that stopped answering).
fn stray(what: &str) -> shmpar::Error {
    shmpar::Error::from(std::io::Error::other(what.to_string()))
}

/// Measures the Rust routes (each child's `Drop` kills it if a step fails).
pub(crate) fn measure(rounds: usize, payloads: usize) -> shmpar::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let row = |route: &str, small: Option<f64>, gbps: Option<f64>| Row {
        peer: "shmpar".into(),
        route: route.into(),
        small_us: small,
        mib_gbps: gbps,
    };
    // The first payload is sent before the clock starts (it waits for the child to start).
    let gbps = |secs: f64| ((payloads - 1) * MIB) as f64 / secs / 1e9;
    let (queue_vec, pipe_vec) = payload_gbps::<Vec<u8>>(payloads)?;
    let (queue_buf, pipe_buf) = payload_gbps::<ByteBuf>(payloads)?;

    // Queue.
    let (inbox, outbox) = (Queue::<u64>::new(4)?, Queue::<u64>::new(4)?);
    let child = Process::start(queue_echo, (inbox.clone(), outbox.clone(), rounds))?;
    let small = one_way_us(rounds, || {
        inbox.put_timeout(&1, STEP)?;
        outbox.get_timeout(STEP).map(drop)
    })?;
    child.join()?.into_result()?;
    rows.push(row("Queue", Some(small), Some(queue_vec)));
    rows.push(row("Queue, ByteBuf payloads", None, Some(queue_buf)));

    // Pipe.
    let (mine, theirs) = Pipe::<u64>::new()?;
    let child = Process::start(pipe_echo, (theirs, rounds))?;
    let small = one_way_us(rounds, || {
        mine.send_timeout(&1, STEP)?;
        mine.recv_timeout(STEP).map(drop)
    })?;
    child.join()?.into_result()?;
    rows.push(row("Pipe", Some(small), Some(pipe_vec)));
    rows.push(row("Pipe, ByteBuf payloads", None, Some(pipe_buf)));

    // A SharedValue atomic: a ping-pong of two words.
    let ping = SharedValue::new(AtomicU64::new(0))?;
    let pong = SharedValue::new(AtomicU64::new(0))?;
    let child = Process::start(atomic_echo, (ping.clone(), pong.clone(), rounds as u64))?;
    let mut i = 0u64;
    let small = one_way_us(rounds, || {
        i += 1;
        // ORDERING: Release, paired with the child's Acquire in `spin_until`.
        ping.store(i, Ordering::Release);
        if spin_until(&pong, i) {
            Ok(())
        } else {
            Err(stray("the atomic's partner stopped answering"))
        }
    })?;
    child.join()?.into_result()?;
    rows.push(row("SharedValue atomic (spinning)", Some(small), None));

    // A SharedArray written in place and read by a pool task through its handle; the small
    // message is a pool task's round trip.
    let pool = Pool::new(1)?;
    let small = one_way_us(rounds, || pool.apply_async(1u64, echo_task).get().map(drop))?;
    let mut array = SharedArray::<u8, Ix1>::zeros(MIB)?;
    pool.try_map([array.handle()], read_payload)?; // the worker maps the array
    let t = Instant::now();
    for k in 1..payloads {
        array.as_slice_mut().fill(k as u8);
        pool.try_map([array.handle()], read_payload)?;
    }
    rows.push(row(
        "SharedArray handle, pool task",
        Some(small),
        Some(gbps(t.elapsed().as_secs_f64())),
    ));
    Ok(rows)
}

/// Python's rows, or why there are none.
fn python_rows(rounds: usize, payloads: usize) -> Result<Vec<Row>, String> {
    let args = [
        "--rounds".to_string(),
        rounds.to_string(),
        "--payloads".into(),
        payloads.to_string(),
    ];
    peers::python_records("ipc.py", &args, Duration::from_secs(120))
}

/// Bars of each route's latency and throughput.
fn render_svg(rows: &[Row]) -> Result<String, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 80 + 40 * rows.len() as u32))
            .into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let (left, right) = root.split_horizontally(500);
        let bars = |value: fn(&Row) -> Option<f64>| -> Vec<output::Bar> {
            rows.iter()
                .map(|r| output::Bar {
                    label: format!("{} {}", r.peer, r.route),
                    value: value(r),
                    color: if r.peer == "shmpar" { BLUE } else { RED }.mix(0.7),
                })
                .collect()
        };
        output::hbars(
            &left,
            "small message, one way",
            "µs",
            &bars(|r| r.small_us),
            210,
        )?;
        output::hbars(&right, "1 MiB payloads", "GB/s", &bars(|r| r.mib_gbps), 210)?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

/// `ipc [--quick] [--json] [--svg FILE]`.
pub(crate) fn run(quick: bool, json: bool, svg: Option<&Path>) -> CliResult {
    let (rounds, payloads) = if quick { (500, 16) } else { (5_000, 128) };
    let mut rows = measure(rounds, payloads)?;
    let python = python_rows(rounds.min(2_000), payloads.min(64));
    if let Ok(p) = &python {
        rows.extend(p.iter().cloned());
    }
    if json {
        for r in &rows {
            output::json_line(r)?;
        }
    } else {
        println!(
            "Moving data between two processes ({rounds} small round trips, {payloads} payloads \
             of 1 MiB):\n"
        );
        let mut table = output::table(&["", "route", "small message, one way", "1 MiB payloads"]);
        output::left(&mut table, 1);
        for r in &rows {
            table.add_row(vec![
                r.peer.clone(),
                r.route.clone(),
                r.small_us.map_or("-".into(), |v| format!("{v:.2} µs")),
                r.mib_gbps.map_or("-".into(), |v| format!("{v:.2} GB/s")),
            ]);
        }
        println!("{table}");
        if let Err(why) = &python {
            println!("\n(Python rows skipped: {why})");
        }
        println!(
            "\nA message through a queue or a pipe is serialised, copied in and copied out (a\n\
             Vec<u8> payload byte by byte, as serde sees a sequence of u8; a\n\
             serde_bytes::ByteBuf whole, as pickle copies bytes); an\n\
             atomic in shared memory moves one word with no copy and no system call while both\n\
             sides spin; an array in shared memory is read where it lies, so 1 MiB costs one\n\
             write and one read, not a copy through a channel."
        );
    }
    if let Some(path) = svg {
        std::fs::write(path, render_svg(&rows)?)?;
        if !json {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
