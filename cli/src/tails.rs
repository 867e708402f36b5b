//! `bench --tails`: 1,000 consecutive calls of one size, each timed, shmpar beside rayon in the
//! same run (alternating), and the median, the 99th percentile and the worst call of each: a
//! median hides the calls that had to wake a sleeping worker.

use std::time::Instant;

use ndarray::Ix1;
use rayon::prelude::*;
use serde::Serialize;
use shmpar::{Pool, SharedArray};

use crate::{CliResult, measure, output};

/// One variant at one size, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Tail {
    kind: &'static str,
    workload: &'static str,
    bytes: usize,
    variant: &'static str,
    calls: usize,
    p50_s: f64,
    p99_s: f64,
    max_s: f64,
}

fn percentiles(mut t: Vec<f64>) -> (f64, f64, f64) {
    t.sort_by(f64::total_cmp);
    let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), t[t.len() - 1])
}

/// Times `calls` consecutive sums of each size, shmpar and rayon alternating.
pub(crate) fn measure(
    pool: &Pool,
    rayon_pool: &rayon::ThreadPool,
    sizes: &[usize],
    calls: usize,
) -> shmpar::Result<Vec<Tail>> {
    let rows_per_chunk = (pool.config().chunk_bytes_setting() / 8).max(1);
    let mut out = Vec::new();
    for &bytes in sizes {
        let n = (bytes / 8).max(1);
        let mut a = SharedArray::<f64, Ix1>::zeros(n)?;
        a.as_slice_mut()
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = (i % 7) as f64);
        let piece = rows_per_chunk.min(n.div_ceil(rayon_pool.current_num_threads()).max(1));
        let slice = a.as_slice();
        let ours = || pool.par_reduce(&a, |c| c.sum(), |x, y| x + y);
        let theirs = || {
            rayon_pool.install(|| {
                slice
                    .par_chunks(piece)
                    .map(|c| c.iter().sum::<f64>())
                    .sum::<f64>()
            })
        };
        for _ in 0..calls / 10 {
            ours()?;
            theirs();
        }
        let (mut t_ours, mut t_theirs) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
        for _ in 0..calls {
            let t = Instant::now();
            std::hint::black_box(ours()?);
            t_ours.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            std::hint::black_box(theirs());
            t_theirs.push(t.elapsed().as_secs_f64());
        }
        for (variant, times) in [("shmpar", t_ours), ("rayon", t_theirs)] {
            let (p50, p99, max) = percentiles(times);
            out.push(Tail {
                kind: "tails",
                workload: "sum",
                bytes,
                variant,
                calls,
                p50_s: p50,
                p99_s: p99,
                max_s: max,
            });
        }
    }
    Ok(out)
}

/// Prints the tails (a table, or JSON lines).
pub(crate) fn report(tails: &[Tail], json: bool) -> CliResult {
    if json {
        for t in tails {
            output::json_line(t)?;
        }
        return Ok(());
    }
    let calls = tails.first().map_or(0, |t| t.calls);
    println!("\nsum of f64, {calls} consecutive calls each (p50, p99, worst call):");
    let mut table = output::table(&[
        "size",
        "shmpar p50",
        "p99",
        "max",
        "rayon p50",
        "p99",
        "max",
    ]);
    for pair in tails.chunks(2) {
        let [ours, theirs] = pair else { continue };
        let t = |s: f64| measure::human_time(std::time::Duration::from_secs_f64(s));
        table.add_row(vec![
            measure::human_bytes(ours.bytes),
            t(ours.p50_s),
            t(ours.p99_s),
            t(ours.max_s),
            t(theirs.p50_s),
            t(theirs.p99_s),
            t(theirs.max_s),
        ]);
    }
    println!("{table}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentiles;

    #[test]
    fn percentiles_of_a_known_list() {
        let (p50, p99, max) = percentiles((1..=1000).map(f64::from).collect());
        assert_eq!((p50, p99, max), (501.0, 990.0, 1000.0));
    }
}
