//! A float sum is bitwise identical for 1, 2, 3 and 8 workers, with or without the caller
//! helping, and from run to run: the chunk grid ignores the worker count and partials are
//! combined in chunk order.

mod common;

use ndarray::Ix1;
use shmpar::{Pool, SharedArray};

/// Values of wildly different magnitudes and signs, so that any change in the order of
/// additions changes the rounded result.
fn awkward(n: usize) -> SharedArray<f64, Ix1> {
    let mut a = SharedArray::<f64, Ix1>::zeros(n).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for x in a.as_slice_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mantissa = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        let exponent = (state % 40) as i32 - 20;
        *x = mantissa * 10f64.powi(exponent);
    }
    a
}

#[test]
fn float_sum_is_bitwise_identical_for_any_worker_count() {
    let _w = common::watchdog(120, "determinism");
    let a = awkward((1 << 20) + 13);
    let mut bits = Vec::new();
    for workers in [1, 2, 3, 8] {
        for caller in [false, true] {
            let pool = Pool::builder()
                .workers(workers)
                .caller_runs_chunks(caller)
                .build()
                .unwrap();
            for _run in 0..3 {
                let s = pool.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap();
                bits.push((workers, caller, s.to_bits()));
            }
        }
    }
    let first = bits[0].2;
    for (workers, caller, b) in &bits {
        assert_eq!(
            *b, first,
            "{workers} workers (caller helps: {caller}) gave a different sum"
        );
    }
    // And it is the sequential fold of the per-chunk sums, in chunk order.
    let rows = Pool::new(1).unwrap().config().chunk_bytes_setting() / 8;
    let expected = a
        .as_slice()
        .chunks(rows)
        .map(|c| ndarray::ArrayView1::from(c).sum())
        .reduce(|x, y| x + y)
        .unwrap();
    assert_eq!(first, expected.to_bits());
}

#[test]
fn the_grid_is_what_changes_the_bits() {
    // Two different chunk sizes are two different (documented) orders of addition.
    let a = awkward(1 << 18);
    let small = Pool::builder()
        .workers(2)
        .chunk_bytes(4096)
        .build()
        .unwrap();
    let s1 = small.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap();
    let s2 = small.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap();
    assert_eq!(s1.to_bits(), s2.to_bits());
}
