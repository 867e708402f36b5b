//! Monte Carlo pi: the estimate is bitwise identical for 1, 2 and 4 workers, and within four
//! standard errors of pi (fixed seed).

mod common;

use shmpar::Pool;
use shmpar::montecarlo::estimate_pi;

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
