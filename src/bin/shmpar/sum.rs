//! The sum of an f64 array three ways: serially, with rayon, with shmpar's worker processes.

use std::time::Duration;

use ndarray::{ArrayView1, Ix1};
use rayon::prelude::*;
use shmpar::{Pool, SharedArray};

use crate::measure::{self, Timing, Variant};

/// One size's measurements.
pub(crate) struct SumRow {
    pub(crate) bytes: usize,
    pub(crate) timings: Vec<Timing>,
}

/// Measures the three sums at each size. `pool` must have been made before `rayon_pool`.
pub(crate) fn measure(
    pool: &Pool,
    rayon_pool: &rayon::ThreadPool,
    sizes: &[usize],
    rounds: usize,
) -> shmpar::Result<Vec<SumRow>> {
    let mut rows = Vec::new();
    for &bytes in sizes {
        let n = bytes / 8;
        let mut a = SharedArray::<f64, Ix1>::zeros(n)?;
        // Touch every page before timing (first touch runs far slower than a warm read).
        a.as_slice_mut()
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = (i % 1000) as f64 * 0.5);
        let rows_per_chunk = (pool.config().chunk_bytes_setting() / 8).max(1);
        // rayon gets the same chunks and kernel, but at least one piece per thread, so that it
        // really runs in parallel at small sizes.
        let piece = rows_per_chunk.min(n.div_ceil(rayon_pool.current_num_threads()).max(1));
        let slice = a.as_slice();
        let view = a.view();
        let mut variants = vec![
            Variant {
                name: "serial",
                run: Box::new(|| view.sum()),
            },
            Variant {
                name: "rayon",
                run: Box::new(|| {
                    rayon_pool.install(|| {
                        slice
                            .par_chunks(piece)
                            .map(|c| ArrayView1::from(c).sum())
                            .sum::<f64>()
                    })
                }),
            },
            Variant {
                name: "shmpar",
                run: Box::new(|| {
                    pool.par_reduce(&a, |c| c.sum(), |x, y| x + y)
                        .unwrap_or(f64::NAN)
                }),
            },
        ];
        let min_sample = if bytes >= 64 << 20 {
            Duration::ZERO
        } else {
            Duration::from_millis(5)
        };
        let timings = measure::interleaved(&mut variants, rounds, min_sample);
        drop(variants);
        rows.push(SumRow { bytes, timings });
    }
    Ok(rows)
}

/// Prints the rows as a table with throughput and ratios.
pub(crate) fn print_table(rows: &[SumRow]) {
    println!(
        "{:>9} | {:>10} {:>10} {:>10} | {:>8} {:>8} {:>8} | {:>13} {:>13}",
        "size",
        "serial",
        "rayon",
        "shmpar",
        "serial",
        "rayon",
        "shmpar",
        "shmpar/rayon",
        "shmpar/serial"
    );
    println!(
        "{:>9} | {:>32} | {:>26} | {:>13} {:>13}",
        "", "median time per call", "GB/s", "speed", "speed"
    );
    println!("{}", "-".repeat(104));
    for r in rows {
        let t: Vec<f64> = r.timings.iter().map(|t| t.median.as_secs_f64()).collect();
        let gbps = |s: f64| r.bytes as f64 / s / 1e9;
        println!(
            "{:>9} | {:>10} {:>10} {:>10} | {:>8.1} {:>8.1} {:>8.1} | {:>12.2}x {:>12.2}x",
            measure::human_bytes(r.bytes),
            measure::human_time(r.timings[0].median),
            measure::human_time(r.timings[1].median),
            measure::human_time(r.timings[2].median),
            gbps(t[0]),
            gbps(t[1]),
            gbps(t[2]),
            t[1] / t[2],
            t[0] / t[2],
        );
        let reference = r.timings[0].value;
        let close = |x: f64| (x - reference).abs() <= 1e-9 * reference.abs().max(1.0);
        for t in r.timings.iter().filter(|t| !close(t.value)) {
            println!(
                "           warning: {} gave {} but serial gave {reference}",
                t.name, t.value
            );
        }
    }
}
