//! The bench report: sum, dot product, min/max and a 64-bin histogram of f64 arrays, serial vs
//! rayon vs shmpar, with the same kernel per chunk, beside numpy and Python's multiprocessing.

use std::path::Path;
use std::time::Duration;

use indicatif::ProgressBar;
use ndarray::{ArrayView1, ArrayViewMut1, Ix1, azip};
use plotters::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use shmpar::{Pool, SharedArray, StartMethod};

use crate::measure::{self, Variant};
use crate::{CliResult, output, peers};

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Workload {
    /// The sum of an f64 array.
    Sum,
    /// The dot product of two f64 arrays.
    Dot,
    /// The min and the max of an f64 array.
    #[value(name = "minmax")]
    MinMax,
    /// A 64-bin histogram of f64 in [0, 1).
    Hist64,
    /// `b = 2a + 1`: one array read, another written.
    Affine,
}

impl Workload {
    pub(crate) const ALL: [Workload; 5] = [
        Workload::Sum,
        Workload::Dot,
        Workload::MinMax,
        Workload::Hist64,
        Workload::Affine,
    ];

    pub(crate) fn key(self) -> &'static str {
        match self {
            Workload::Sum => "sum",
            Workload::Dot => "dot",
            Workload::MinMax => "minmax",
            Workload::Hist64 => "hist64",
            Workload::Affine => "affine",
        }
    }

    /// Bytes moved (read or written) per byte of one array.
    fn arrays(self) -> usize {
        if matches!(self, Workload::Dot | Workload::Affine) {
            2
        } else {
            1
        }
    }
}

/// `b = 2a + 1`, serially (ndarray's `Zip`).
fn affine(b: &mut [f64], a: &[f64]) {
    ndarray::Zip::from(ArrayViewMut1::from(b))
        .and(ArrayView1::from(a))
        .for_each(|b, &a| *b = 2.0 * a + 1.0);
}

/// What every variant returns, so that they can be checked against each other.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Answer {
    Number(f64),
    Pair(f64, f64),
    Counts(Vec<u64>),
}

impl Answer {
    fn close_to(&self, other: &Answer) -> bool {
        let near = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
        match (self, other) {
            (Answer::Number(a), Answer::Number(b)) => near(*a, *b),
            (Answer::Pair(a, b), Answer::Pair(c, d)) => a == c && b == d,
            (Answer::Counts(a), Answer::Counts(b)) => a == b,
            _ => false,
        }
    }

    fn combine(self, other: Answer) -> Answer {
        match (self, other) {
            (Answer::Number(a), Answer::Number(b)) => Answer::Number(a + b),
            (Answer::Pair(a, b), Answer::Pair(c, d)) => Answer::Pair(a.min(c), b.max(d)),
            (Answer::Counts(mut a), Answer::Counts(b)) => {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                Answer::Counts(a)
            }
            (a, _) => a,
        }
    }
}

/// Min and max with eight independent lanes (vectorises; `f64::min` chains do not).
fn minmax(x: &[f64]) -> (f64, f64) {
    let mut lo = [f64::INFINITY; 8];
    let mut hi = [f64::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for j in 0..8 {
            lo[j] = if c[j] < lo[j] { c[j] } else { lo[j] };
            hi[j] = if c[j] > hi[j] { c[j] } else { hi[j] };
        }
    }
    for &v in chunks.remainder() {
        lo[0] = lo[0].min(v);
        hi[0] = hi[0].max(v);
    }
    (
        lo.iter().copied().fold(f64::INFINITY, f64::min),
        hi.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// 64 equal bins over [0, 1).
fn hist64(x: &[f64]) -> Vec<u64> {
    let mut h = vec![0u64; 64];
    for &v in x {
        h[((v * 64.0) as usize).min(63)] += 1;
    }
    h
}

/// The kernel of one chunk (or of the whole array, serially).
fn kernel(w: Workload, a: &[f64], b: &[f64]) -> Answer {
    match w {
        Workload::Sum => Answer::Number(ArrayView1::from(a).sum()),
        Workload::Dot => Answer::Number(ArrayView1::from(a).dot(&ArrayView1::from(b))),
        Workload::MinMax => {
            let (lo, hi) = minmax(a);
            Answer::Pair(lo, hi)
        }
        Workload::Hist64 => Answer::Counts(hist64(a)),
        // Measured apart (it writes an array): see `measure`.
        Workload::Affine => Answer::Number(0.0),
    }
}

/// One measured cell.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub(crate) workload: Workload,
    pub(crate) bytes: usize,
    pub(crate) variant: String,
    pub(crate) median: Duration,
}

impl Cell {
    pub(crate) fn gbps(&self) -> f64 {
        (self.bytes * self.workload.arrays()) as f64 / self.median.as_secs_f64() / 1e9
    }
}

/// Fills `a` with values in [0, 1) from a cheap hash (and touches every page before timing).
fn fill(a: &mut [f64], salt: u64) {
    for (i, x) in a.iter_mut().enumerate() {
        let mut h = (i as u64 ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
        *x = (h >> 11) as f64 / (1u64 << 53) as f64;
    }
}

/// The pools a bench run times.
#[derive(Clone, Copy)]
pub(crate) struct Pools<'a> {
    /// Made before `rayon`.
    pub(crate) pool: &'a Pool,
    /// The same size, its caller running chunks too (the "shmpar+caller" variant).
    pub(crate) helping: Option<&'a Pool>,
    pub(crate) rayon: &'a rayon::ThreadPool,
}

/// Measures every workload at every size, serial vs rayon vs shmpar (and shmpar with the caller
/// helping, if that pool is given).
pub(crate) fn measure(
    pools: Pools<'_>,
    workloads: &[Workload],
    sizes: &[usize],
    rounds: usize,
    progress: &ProgressBar,
) -> shmpar::Result<Vec<Cell>> {
    let (pool, rayon_pool) = (pools.pool, pools.rayon);
    let mut cells = Vec::new();
    let biggest = sizes.iter().max().copied().unwrap_or(0) / 8;
    let mut a_all = SharedArray::<f64, Ix1>::zeros(biggest)?;
    let mut b_all = SharedArray::<f64, Ix1>::zeros(biggest)?;
    fill(a_all.as_slice_mut(), 1);
    fill(b_all.as_slice_mut(), 2);
    let rows_per_chunk = (pool.config().chunk_bytes_setting() / 8).max(1);
    for &w in workloads {
        for &bytes in sizes {
            progress.set_message(format!("{} {}", w.key(), measure::human_bytes(bytes)));
            let n = bytes / 8;
            // Arrays of exactly this size (shmpar splits a whole SharedArray).
            let mut a = SharedArray::<f64, Ix1>::zeros(n)?;
            let mut b = SharedArray::<f64, Ix1>::zeros(n)?;
            a.as_slice_mut().copy_from_slice(&a_all.as_slice()[..n]);
            b.as_slice_mut().copy_from_slice(&b_all.as_slice()[..n]);
            // rayon gets the same chunks, but at least one piece per thread.
            let piece = rows_per_chunk.min(n.div_ceil(rayon_pool.current_num_threads()).max(1));
            let (sa, sb) = (a.as_slice(), b.as_slice());
            let shm = |pool: &Pool, w: Workload| -> Answer {
                let r = match w {
                    Workload::Sum => {
                        pool.par_reduce(&a, |c| Answer::Number(c.sum()), Answer::combine)
                    }
                    Workload::Dot => pool.par_reduce_zip(
                        &a,
                        &b,
                        |x, y| Answer::Number(x.dot(&y)),
                        Answer::combine,
                    ),
                    Workload::MinMax => pool.par_reduce(
                        &a,
                        |c| {
                            let (lo, hi) = minmax(c.as_slice().unwrap_or(&[]));
                            Answer::Pair(lo, hi)
                        },
                        Answer::combine,
                    ),
                    Workload::Hist64 => pool.par_reduce(
                        &a,
                        |c| Answer::Counts(hist64(c.as_slice().unwrap_or(&[]))),
                        Answer::combine,
                    ),
                    Workload::Affine => Ok(Answer::Number(0.0)),
                };
                r.unwrap_or(Answer::Number(f64::NAN))
            };
            let timings = if w == Workload::Affine {
                measure_affine(pool, rayon_pool, &a, rounds, bytes)?
            } else {
                let mut answers: Vec<Answer> = Vec::new();
                let mut variants = vec![
                    Variant {
                        name: "serial",
                        run: Box::new(|| kernel(w, sa, sb)),
                    },
                    Variant {
                        name: "rayon",
                        run: Box::new(|| {
                            rayon_pool.install(|| {
                                sa.par_chunks(piece)
                                    .zip(sb.par_chunks(piece))
                                    .map(|(x, y)| kernel(w, x, y))
                                    .reduce_with(Answer::combine)
                                    .unwrap_or(Answer::Number(0.0))
                            })
                        }),
                    },
                    Variant {
                        name: "shmpar",
                        run: Box::new(|| shm(pool, w)),
                    },
                ];
                if let Some(helping) = pools.helping {
                    variants.push(Variant {
                        name: "shmpar+caller",
                        run: Box::new(move || shm(helping, w)),
                    });
                }
                let min_sample = if bytes >= 64 << 20 {
                    Duration::ZERO
                } else {
                    Duration::from_millis(5)
                };
                let timings = measure::interleaved(&mut variants, rounds, min_sample, &mut answers);
                if let Some(first) = answers.first() {
                    for (t, ans) in timings.iter().zip(&answers) {
                        if !ans.close_to(first) {
                            progress.println(format!(
                                "warning: {} {} {}: {ans:?} differs from serial's {first:?}",
                                w.key(),
                                bytes,
                                t.name
                            ));
                        }
                    }
                }
                timings
            };
            for t in timings {
                cells.push(Cell {
                    workload: w,
                    bytes,
                    variant: t.name.to_string(),
                    median: t.median,
                });
            }
            progress.inc(1);
        }
    }
    Ok(cells)
}

/// `b = 2a + 1` three ways, each into its own output, interleaved; every output is checked.
fn measure_affine(
    pool: &Pool,
    rayon_pool: &rayon::ThreadPool,
    a: &SharedArray<f64, Ix1>,
    rounds: usize,
    bytes: usize,
) -> shmpar::Result<Vec<measure::Timing>> {
    let n = a.len();
    let sa = a.as_slice();
    let mut serial_out = vec![0.0f64; n];
    let mut rayon_out = ndarray::Array1::<f64>::zeros(n);
    let mut shm_out = SharedArray::<f64, Ix1>::zeros(n)?;
    let av = ArrayView1::from(sa);
    let mut answers: Vec<Answer> = Vec::new();
    let timings = {
        let (so, ro, mo) = (&mut serial_out, &mut rayon_out, &mut shm_out);
        let mut variants = vec![
            Variant {
                name: "serial",
                run: Box::new(|| {
                    affine(so, sa);
                    Answer::Number(0.0)
                }),
            },
            Variant {
                name: "rayon",
                run: Box::new(|| {
                    rayon_pool.install(
                        || ndarray::par_azip!((b in &mut *ro, &a in &av) *b = 2.0 * a + 1.0),
                    );
                    Answer::Number(0.0)
                }),
            },
            Variant {
                name: "shmpar",
                run: Box::new(|| {
                    let r = pool
                        .zip((&mut *mo, a))
                        .for_each(|(mut b, a)| azip!((b in &mut b, &a in &a) *b = 2.0 * a + 1.0));
                    Answer::Number(if r.is_ok() { 0.0 } else { f64::NAN })
                }),
            },
        ];
        let min_sample = if bytes >= 64 << 20 {
            Duration::ZERO
        } else {
            Duration::from_millis(5)
        };
        measure::interleaved(&mut variants, rounds, min_sample, &mut answers)
    };
    let expected = |i: usize| 2.0 * sa[i] + 1.0;
    let ok = (0..n).all(|i| {
        serial_out[i] == expected(i)
            && rayon_out[i] == expected(i)
            && shm_out.as_slice()[i] == expected(i)
    });
    if !ok || answers.iter().any(|a| *a != Answer::Number(0.0)) {
        eprintln!("warning: b = 2a + 1 at {bytes} bytes: a variant wrote a wrong value");
    }
    Ok(timings)
}

/// How long the Python peer may take before its cells are given up (the full report's sizes
/// take it about a minute on 2 cores).
const PEER_LIMIT: Duration = Duration::from_secs(900);

/// Python's figures for the same workloads, or why there are none.
fn python_cells(
    workloads: &[Workload],
    sizes: &[usize],
    procs: usize,
    progress: &ProgressBar,
) -> Result<Vec<Cell>, String> {
    progress.set_message("numpy and multiprocessing (Python)");
    let list: Vec<String> = sizes.iter().map(usize::to_string).collect();
    let keys: Vec<&str> = workloads.iter().map(|w| w.key()).collect();
    let args = [
        "--sizes".to_string(),
        list.join(","),
        "--procs".into(),
        procs.to_string(),
        "--workloads".into(),
        keys.join(","),
    ];
    let records: Vec<Record> = peers::python_records("bench_numpy.py", &args, PEER_LIMIT)?;
    Ok(records
        .into_iter()
        .map(|r| Cell {
            workload: r.workload,
            bytes: r.bytes,
            variant: r.variant,
            median: Duration::from_secs_f64(r.median_s),
        })
        .collect())
}

/// One cell as a JSON line: what `--json` prints, and what the Python peer writes (it leaves
/// out `gbps`).
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    workload: Workload,
    bytes: usize,
    variant: String,
    median_s: f64,
    #[serde(default, skip_deserializing)]
    gbps: f64,
}

/// Prints the tables (or JSON lines).
pub(crate) fn report(cells: &[Cell], python: &Result<Vec<Cell>, String>, json: bool) -> CliResult {
    let all: Vec<&Cell> = cells
        .iter()
        .chain(python.as_ref().map(|p| p.iter()).into_iter().flatten())
        .collect();
    if json {
        for c in &all {
            output::json_line(&Record {
                workload: c.workload,
                bytes: c.bytes,
                variant: c.variant.clone(),
                median_s: c.median.as_secs_f64(),
                gbps: c.gbps(),
            })?;
        }
        return Ok(());
    }
    let get = |w: Workload, b: usize, v: &str| {
        all.iter()
            .find(|c| c.workload == w && c.bytes == b && c.variant == v)
            .copied()
    };
    let mut sizes: Vec<usize> = cells.iter().map(|c| c.bytes).collect();
    sizes.dedup();
    sizes.sort_unstable();
    sizes.dedup();
    let py_shm = python.as_ref().ok().and_then(|p| {
        p.iter()
            .find(|c| c.variant.ends_with("shared_memory"))
            .map(|c| c.variant.clone())
    });
    let py_pickled = python.as_ref().ok().and_then(|p| {
        p.iter()
            .find(|c| c.variant.ends_with("pickled"))
            .map(|c| c.variant.clone())
    });
    for w in Workload::ALL
        .into_iter()
        .filter(|w| cells.iter().any(|c| c.workload == *w))
    {
        println!(
            "\n{} (median time per call; GB/s; ratios > 1: shmpar faster)",
            match w {
                Workload::Sum => "sum of f64",
                Workload::Dot => "dot product of two f64 arrays",
                Workload::MinMax => "min and max of f64",
                Workload::Hist64 => "64-bin histogram of f64 in [0, 1)",
                Workload::Affine => "b = 2a + 1 over f64 (one array read, one written)",
            }
        );
        let mut table = output::table(&[
            "size",
            "serial",
            "rayon",
            "shmpar",
            "serial GB/s",
            "rayon GB/s",
            "shmpar GB/s",
            "shmpar vs rayon",
            "vs serial",
            "numpy",
            "Pool shm",
            "Pool pickled",
            "vs Pool shm",
            "vs pickled",
        ]);
        for &b in &sizes {
            let t = |v: &str| get(w, b, v);
            let (s, r, m) = (t("serial"), t("rayon"), t("shmpar"));
            let (Some(s), Some(r), Some(m)) = (s, r, m) else {
                continue;
            };
            let py = |name: &Option<String>| name.as_deref().and_then(|n| get(w, b, n));
            let (np, ps, pp) = (get(w, b, "numpy serial"), py(&py_shm), py(&py_pickled));
            let time =
                |c: Option<&Cell>| c.map_or("-".to_string(), |c| measure::human_time(c.median));
            let ratio = |c: Option<&Cell>| {
                c.map_or("-".to_string(), |c| {
                    format!("{:.1}x", c.median.as_secs_f64() / m.median.as_secs_f64())
                })
            };
            table.add_row(vec![
                measure::human_bytes(b),
                measure::human_time(s.median),
                measure::human_time(r.median),
                measure::human_time(m.median),
                format!("{:.1}", s.gbps()),
                format!("{:.1}", r.gbps()),
                format!("{:.1}", m.gbps()),
                format!("{:.2}x", r.median.as_secs_f64() / m.median.as_secs_f64()),
                format!("{:.2}x", s.median.as_secs_f64() / m.median.as_secs_f64()),
                time(np),
                time(ps),
                time(pp),
                ratio(ps),
                ratio(pp),
            ]);
        }
        println!("{table}");
        caller_table(w, &sizes, &get);
    }
    // Memory bandwidth: the best read rate seen anywhere (sum, 64 MiB and up), and the share
    // of it each variant reaches on the largest array.
    let big: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.workload == Workload::Sum && c.bytes >= 64 << 20)
        .collect();
    if let Some(best) = big.iter().map(|c| c.gbps()).reduce(f64::max) {
        let largest = big.iter().map(|c| c.bytes).max().unwrap_or(0);
        let mut shares: Vec<String> = all
            .iter()
            .filter(|c| c.workload == Workload::Sum && c.bytes == largest)
            .map(|c| format!("{} {:.0}%", c.variant, 100.0 * c.gbps() / best))
            .collect();
        shares.sort();
        println!(
            "\nmemory bandwidth: best measured read {best:.1} GB/s (sum, {}); share reached: {}",
            measure::human_bytes(largest),
            shares.join(", ")
        );
    }
    if let Err(why) = python {
        println!("\n(Python columns skipped: {why})");
    }
    Ok(())
}

/// The "shmpar+caller" variant beside shmpar and serial, for workload `w`, if it was timed.
fn caller_table<'c>(
    w: Workload,
    sizes: &[usize],
    get: &dyn Fn(Workload, usize, &str) -> Option<&'c Cell>,
) {
    let mut table = output::table(&[
        "size",
        "shmpar",
        "shmpar+caller",
        "shmpar vs serial",
        "+caller vs serial",
    ]);
    let mut any = false;
    for &b in sizes {
        let (Some(s), Some(m), Some(h)) = (
            get(w, b, "serial"),
            get(w, b, "shmpar"),
            get(w, b, "shmpar+caller"),
        ) else {
            continue;
        };
        any = true;
        let vs = |c: &Cell| format!("{:.2}x", s.median.as_secs_f64() / c.median.as_secs_f64());
        table.add_row(vec![
            measure::human_bytes(b),
            measure::human_time(m.median),
            measure::human_time(h.median),
            vs(m),
            vs(h),
        ]);
    }
    if any {
        println!(
            "the caller running chunks too (caller_runs_chunks: no crash isolation for the caller):"
        );
        println!("{table}");
    }
}

/// `bench [--quick] [--json]`.
pub(crate) fn run(
    quick: bool,
    json: bool,
    workloads: &[Workload],
    sizes: Option<Vec<usize>>,
    rounds: usize,
    method: StartMethod,
    extras: Extras<'_>,
) -> CliResult {
    let sizes = sizes.unwrap_or_else(|| {
        let mut s = vec![1 << 10, 4 << 10, 64 << 10, 1 << 20, 64 << 20, 512 << 20];
        if quick {
            s.pop();
        }
        s
    });
    // Our workers start before rayon's threads exist.
    let pool = Pool::builder().start_method(method).build()?;
    let helping = if extras.caller_helps {
        let p = Pool::builder()
            .start_method(method)
            .workers(pool.workers())
            .caller_runs_chunks(true)
            .build()?;
        Some(p)
    } else {
        None
    };
    let rayon_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(pool.workers())
        .build()?;
    let progress = if json {
        ProgressBar::hidden()
    } else {
        output::progress((workloads.len() * sizes.len() + 1) as u64)
    };
    if !json {
        println!(
            "{} x f64 workloads: serial (one thread, best kernel), rayon ({} threads, same chunks and kernel), \
             shmpar ({} worker processes); medians of {rounds} interleaved rounds.",
            workloads.len(),
            rayon_pool.current_num_threads(),
            pool.workers()
        );
    }
    let pools = Pools {
        pool: &pool,
        helping: helping.as_ref(),
        rayon: &rayon_pool,
    };
    let cells = measure(pools, workloads, &sizes, rounds, &progress)?;
    let python = python_cells(workloads, &sizes, pool.workers(), &progress);
    progress.finish_and_clear();
    report(&cells, &python, json)?;
    if extras.tails {
        progress.set_message("tails: 1,000 consecutive calls");
        let tails = crate::tails::measure(&pool, &rayon_pool, &[4 << 10, 64 << 10, 1 << 20], 1000)?;
        crate::tails::report(&tails, json)?;
    }
    if let Some(path) = extras.svg {
        let all: Vec<&Cell> = cells
            .iter()
            .chain(python.as_ref().map(|p| p.iter()).into_iter().flatten())
            .collect();
        std::fs::write(path, render_svg(&all)?)?;
        if !json {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// What a bench run adds to its report.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Extras<'a> {
    /// Write the throughput plot here.
    pub(crate) svg: Option<&'a Path>,
    /// Time 1,000 consecutive calls at 4 KiB, 64 KiB and 1 MiB: p50, p99, max.
    pub(crate) tails: bool,
    /// Also time a pool whose caller runs chunks too ("shmpar+caller").
    pub(crate) caller_helps: bool,
}

/// Throughput against array size, one line per variant, one panel per workload (log-log).
pub(crate) fn render_svg(cells: &[&Cell]) -> Result<String, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| cells.iter().any(|c| c.workload == *w))
        .collect();
    let mut svg = String::new();
    {
        let height = 360 * workloads.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let panels = root.split_evenly((workloads.len().max(1), 1));
        for (panel, w) in panels.iter().zip(&workloads) {
            let mine: Vec<&&Cell> = cells.iter().filter(|c| c.workload == *w).collect();
            let (lo, hi) = mine.iter().fold((f64::MAX, 0f64), |(lo, hi), c| {
                (lo.min(c.bytes as f64), hi.max(c.bytes as f64))
            });
            let top = mine.iter().map(|c| c.gbps()).fold(0.0, f64::max) * 1.5;
            let bottom = mine
                .iter()
                .map(|c| c.gbps())
                .fold(f64::MAX, f64::min)
                .max(1e-4)
                / 1.5;
            let mut chart = ChartBuilder::on(panel)
                .caption(
                    format!("{}: throughput against array size", w.key()),
                    ("sans-serif", 18),
                )
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(
                    (lo / 1.5..hi * 1.5).log_scale(),
                    (bottom..top.max(bottom * 2.0)).log_scale(),
                )
                .map_err(|x| e(&x))?;
            chart
                .configure_mesh()
                .x_desc("bytes per array")
                .y_desc("GB/s")
                .x_label_formatter(&|b| measure::human_bytes(*b as usize))
                .draw()
                .map_err(|x| e(&x))?;
            let mut variants: Vec<&str> = mine.iter().map(|c| c.variant.as_str()).collect();
            variants.sort_unstable();
            variants.dedup();
            for (i, v) in variants.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let mut pts: Vec<(f64, f64)> = mine
                    .iter()
                    .filter(|c| c.variant == *v)
                    .map(|c| (c.bytes as f64, c.gbps()))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(|x| e(&x))?
                    .label(v.to_string())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                    .map_err(|x| e(&x))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|x| e(&x))?;
        }
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throughput_plot_has_a_panel_per_workload_and_a_line_per_variant() {
        let mut cells = Vec::new();
        for w in [Workload::Sum, Workload::Dot] {
            for v in ["serial", "rayon", "shmpar"] {
                for (i, bytes) in [1usize << 10, 1 << 20, 64 << 20].into_iter().enumerate() {
                    cells.push(Cell {
                        workload: w,
                        bytes,
                        variant: v.to_string(),
                        median: Duration::from_micros(10 * (i as u64 + 1)),
                    });
                }
            }
        }
        let refs: Vec<&Cell> = cells.iter().collect();
        let svg = render_svg(&refs).unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
        assert!(
            texts.iter().any(|t| t.contains("sum: throughput")),
            "{texts:?}"
        );
        assert!(texts.iter().any(|t| t.contains("dot: throughput")));
        assert!(texts.iter().any(|t| t.contains("shmpar")));
        let lines = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count();
        assert!(lines >= 6, "{lines} polylines: 2 workloads x 3 variants");
    }

    #[test]
    fn a_python_record_reads_back_and_a_bad_line_is_an_error() {
        let r: Record = serde_json::from_str(
            r#"{"workload": "minmax", "bytes": 1024, "variant": "numpy serial", "median_s": 1e-6}"#,
        )
        .unwrap();
        assert_eq!(r.workload, Workload::MinMax);
        assert_eq!(r.bytes, 1024);
        assert!(serde_json::from_str::<Record>(r#"{"workload": "sum"}"#).is_err());
    }
}
