//! Monte Carlo pi: the estimate is bitwise identical for 1, 2 and 4 workers, and within four
//! standard errors of pi (fixed seed).

#[path = "../../tests/common/mod.rs"]
mod common;

use shmpar::Pool;
use shmpar_cli::montecarlo::estimate_pi;

#[test]
fn the_estimate_does_not_depend_on_the_number_of_workers() {
    let _w = common::watchdog(120, "pi determinism");
    let samples = 20_000_003;
    let estimates: Vec<_> = [1, 2, 4]
        .into_iter()
        .map(|w| estimate_pi(&Pool::new(w).unwrap(), samples, 2024).unwrap())
        .collect();
    assert!(estimates.windows(2).all(|w| w[0] == w[1]), "{estimates:?}");
    assert_eq!(estimates[0].pi.to_bits(), estimates[2].pi.to_bits());
    // Another chunk grid too: the count is an integer sum of per-sample results.
    let other = Pool::builder()
        .workers(3)
        .chunk_bytes(12_345)
        .build()
        .unwrap();
    assert_eq!(estimate_pi(&other, samples, 2024).unwrap(), estimates[0]);
}

#[test]
fn the_error_is_within_four_standard_errors() {
    let _w = common::watchdog(120, "pi accuracy");
    let pool = Pool::new(2).unwrap();
    for seed in [1u64, 42, 7777] {
        let e = estimate_pi(&pool, 10_000_000, seed).unwrap();
        let err = (e.pi - std::f64::consts::PI).abs();
        assert!(
            err < 4.0 * e.std_error,
            "seed {seed}: pi = {}, error {err:.2e}, 4 sigma = {:.2e}",
            e.pi,
            4.0 * e.std_error
        );
    }
}

/// `rand`'s ChaCha8 positioned by rows: the same count for any workers and chunk grid.
fn chacha_inside(seed: &u64, rows: std::ops::Range<u64>, _chunk: u64) -> u64 {
    use rand::Rng;
    let mut rng = shmpar::random::rows_rng(*seed, rows.start, 4);
    rows.filter(|_| {
        let (x, y): (f64, f64) = (rng.random(), rng.random());
        x * x + y * y < 1.0
    })
    .count() as u64
}

#[test]
fn a_rand_stream_positioned_by_rows_gives_the_same_estimate_for_any_split() {
    let _w = common::watchdog(120, "rand pi");
    let mut counts = Vec::new();
    for workers in [1, 2, 3] {
        for chunk_bytes in [8, 1000, 64 << 10, 1 << 20] {
            let pool = shmpar::Pool::builder()
                .workers(workers)
                .chunk_bytes(chunk_bytes)
                .build()
                .unwrap();
            counts.push(
                pool.par_reduce_range_with(300_001, &5u64, chacha_inside, |a, b| a + b)
                    .unwrap(),
            );
        }
    }
    assert!(counts.windows(2).all(|w| w[0] == w[1]), "{counts:?}");
    let pi = 4.0 * counts[0] as f64 / 300_001.0;
    assert!((pi - std::f64::consts::PI).abs() < 0.02, "{pi}");
}
