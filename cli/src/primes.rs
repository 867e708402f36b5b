//! `primes`: High Performance Python's prime verification. Trial division of a few large
//! numbers by their odd candidates, four ways: serially; a naive pool whose chunks all run to
//! the end; a pool whose chunks share a stop flag (a `SharedValue<AtomicBool>` handle in their
//! argument) and stop once one finds a factor; and the numeric API's early stop
//! (`Zip::find_any`), where chunks not yet started never run.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use ndarray::Ix1;
use serde::Serialize;
use shmpar::{Pool, SharedArray, SharedValue};

use crate::{CliResult, output};

/// The odd candidates a row of the early-stop search covers.
const BLOCK: u64 = 1 << 16;

/// One way's result on one number.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    demo: &'static str,
    number: u64,
    variant: &'static str,
    /// The factor found, or none: prime. The serial search and the naive pool give the
    /// smallest; the early-stop ways give the first found, which may be another.
    factor: Option<u64>,
    seconds: f64,
    /// Chunks that started dividing (serial: 1); `None` for a search that found nothing,
    /// which ran every chunk.
    chunks_run: Option<u64>,
    /// Chunks in the call (`None`: as above).
    chunks: Option<u64>,
}

/// The numbers: a prime (every way must try every candidate), and composites whose smaller
/// factor comes early, in the middle, and last (near the square root). Quick: about 10^16
/// (50 million candidates); full: about 10^18 (500 million).
fn numbers(quick: bool) -> Vec<u64> {
    if quick {
        vec![
            10_000_000_000_000_061,
            100_003 * 99_999_999_977,
            49_999_991 * 200_000_033,
            99_999_989 * 100_000_007,
        ]
    } else {
        vec![
            1_000_000_000_000_000_003,
            100_003 * 9_999_999_999_971,
            499_999_993 * 2_000_000_011,
            999_999_937 * 1_000_000_007,
        ]
    }
}

/// Odd candidates 3, 5, 7, ... up to the square root: candidate `k` is `3 + 2k`.
fn candidates(n: u64) -> u64 {
    // (+2: the float square root may fall a little short; `first_factor` stops at d * d > n.)
    ((n as f64).sqrt() as u64 + 2).div_ceil(2)
}

/// The first odd factor among candidates `range`, checking `stop` every 4,096 candidates.
fn first_factor(n: u64, range: Range<u64>, stop: Option<&AtomicBool>) -> Option<u64> {
    for k in range {
        if k % 4096 == 0 && stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return None;
        }
        let d = 3 + 2 * k;
        if d * d > n {
            return None;
        }
        if n % d == 0 {
            return Some(d);
        }
    }
    None
}

/// What every chunk of the parallel variants gets: the number, the stop flag (or none: the
/// naive pool), and counts of the chunks called and of those that divided.
type Job = (
    u64,
    Option<SharedValue<AtomicBool>>,
    SharedValue<AtomicU64>,
    SharedValue<AtomicU64>,
);

fn chunk_search(job: &Job, range: Range<u64>, _chunk: u64) -> Option<u64> {
    let (n, stop, called, ran) = job;
    // ORDERING: Relaxed: a statistic, read after the call returned.
    called.fetch_add(1, Ordering::Relaxed);
    let stop = stop.as_deref();
    if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
        return None;
    }
    // ORDERING: Relaxed: a statistic, read after the call returned.
    ran.fetch_add(1, Ordering::Relaxed);
    let found = first_factor(*n, range, stop);
    if let (Some(_), Some(s)) = (found, stop) {
        // ORDERING: Relaxed: the flag only tells other chunks to stop; the answer travels in
        // the call's result.
        s.store(true, Ordering::Relaxed);
    }
    found
}

/// The early-stop search: row `b` of `numbers` covers candidates `b * BLOCK ..`, and every row
/// holds the number under test (the search function gets nothing but rows and views).
fn block_search(rows: Range<usize>, (numbers,): (ndarray::ArrayView1<'_, u64>,)) -> Option<u64> {
    let n = *numbers.first()?;
    let (lo, hi) = (rows.start as u64 * BLOCK, rows.end as u64 * BLOCK);
    first_factor(n, lo..hi.min(candidates(n)), None)
}

fn min_factor(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Runs the four ways on each number.
pub(crate) fn measure(quick: bool) -> shmpar::Result<Vec<Row>> {
    let pool = Pool::new(
        std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2),
    )?;
    // Rows of BLOCK candidates, 4 rows (262,144 candidates) per chunk.
    let search_pool = Pool::builder()
        .workers(pool.workers())
        .chunk_bytes(32)
        .build()?;
    let mut rows = Vec::new();
    for n in numbers(quick) {
        let cands = candidates(n);
        let t = Instant::now();
        let factor = first_factor(n, 0..cands, None);
        rows.push(Row {
            demo: "primes",
            number: n,
            variant: "serial",
            factor,
            seconds: t.elapsed().as_secs_f64(),
            chunks_run: Some(1),
            chunks: Some(1),
        });
        for (variant, flag) in [("naive pool", false), ("pool + stop flag", true)] {
            let ran = SharedValue::new(AtomicU64::new(0))?;
            let called = SharedValue::new(AtomicU64::new(0))?;
            let stop = flag
                .then(|| SharedValue::new(AtomicBool::new(false)))
                .transpose()?;
            let t = Instant::now();
            let factor = pool.par_reduce_range_with(
                cands,
                &(n, stop, called.clone(), ran.clone()),
                chunk_search,
                min_factor,
            )?;
            rows.push(Row {
                demo: "primes",
                number: n,
                variant,
                factor,
                seconds: t.elapsed().as_secs_f64(),
                // ORDERING: Relaxed: every chunk's increment happened before the call returned.
                chunks_run: Some(ran.load(Ordering::Relaxed)),
                chunks: Some(called.load(Ordering::Relaxed)),
            });
        }
        let blocks = SharedArray::<u64, Ix1>::from_array(&ndarray::Array1::from_elem(
            cands.div_ceil(BLOCK) as usize,
            n,
        ))?;
        let t = Instant::now();
        let found = search_pool.zip((&blocks,)).find_any(block_search)?;
        let seconds = t.elapsed().as_secs_f64();
        rows.push(Row {
            demo: "primes",
            number: n,
            variant: "find_any (early stop)",
            factor: found.as_ref().map(|f| f.value),
            seconds,
            chunks_run: found.as_ref().map(|f| f.chunks_run as u64),
            chunks: found.as_ref().map(|f| f.chunks as u64),
        });
    }
    Ok(rows)
}

/// `primes [--json] [--quick]`.
pub(crate) fn run(quick: bool, json: bool) -> CliResult {
    let rows = measure(quick)?;
    if json {
        for r in &rows {
            output::json_line(r)?;
        }
        return Ok(());
    }
    let mut table = output::table(&[
        "number",
        "variant",
        "answer",
        "time",
        "vs serial",
        "chunks run",
    ]);
    output::left(&mut table, 1);
    output::left(&mut table, 2);
    let mut serial = 0.0;
    for r in &rows {
        if r.variant == "serial" {
            serial = r.seconds;
        }
        table.add_row(vec![
            r.number.to_string(),
            r.variant.to_string(),
            match r.factor {
                Some(d) => format!("{d} x {}", r.number / d),
                None => "prime".into(),
            },
            format!("{:.1}ms", r.seconds * 1e3),
            format!("{:.2}x", serial / r.seconds),
            match (r.chunks_run, r.chunks) {
                (Some(run), Some(all)) => format!("{run} of {all}"),
                _ => "all".into(),
            },
        ]);
    }
    println!("Trial division by the odd numbers up to the square root:\n\n{table}");
    println!(
        "\nThe naive pool runs every chunk to the end, so a factor found early saves nothing; a\n\
         shared stop flag (a SharedValue<AtomicBool> handle in each chunk's argument) lets the\n\
         other chunks give up, and find_any does not even start the chunks after a find. A\n\
         prime has no early exit: every way tries every candidate."
    );
    Ok(())
}
