//! par_reduce equals the serial result for every element type, 1-D and 2-D, empty arrays,
//! single rows, fewer rows than workers, and odd sizes (property tests).

mod common;

use std::sync::LazyLock;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Ix1, Ix2};
use proptest::prelude::*;
use shmpar::{Element, Pool, SharedArray};

/// Four workers and tiny chunks, so that small arrays still split into many chunks and
/// several sizes have fewer rows than workers.
static POOL: LazyLock<Pool> = LazyLock::new(|| {
    Pool::builder()
        .workers(4)
        .chunk_bytes(24)
        .max_chunks(64)
        .build()
        .unwrap()
});

trait Exact: Element {
    fn from_small(v: u8) -> Self;
    fn widen(self) -> i128;
}

macro_rules! exact_int {
    ($($t:ty),*) => {$(
        impl Exact for $t {
            fn from_small(v: u8) -> Self { (v % 100) as $t }
            #[allow(clippy::cast_lossless)]
            fn widen(self) -> i128 { self as i128 }
        }
    )*};
}
exact_int!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

impl Exact for f32 {
    fn from_small(v: u8) -> Self {
        f32::from(v % 100) - 50.0
    }
    fn widen(self) -> i128 {
        self as i128
    }
}

impl Exact for f64 {
    fn from_small(v: u8) -> Self {
        f64::from(v % 100) - 50.0
    }
    fn widen(self) -> i128 {
        self as i128
    }
}

fn sum1<A: Exact>(c: ArrayView1<'_, A>) -> i128 {
    c.iter().map(|&x| x.widen()).sum()
}

fn sum2<A: Exact>(c: ArrayView2<'_, A>) -> (i128, usize) {
    (c.iter().map(|&x| x.widen()).sum(), c.nrows())
}

fn check_1d<A: Exact>(values: &[u8]) {
    let local: Array1<A> = values.iter().map(|&v| A::from_small(v)).collect();
    let shared = SharedArray::from_array(&local).unwrap();
    let expected: i128 = local.iter().map(|&x| x.widen()).sum();
    let got = POOL.par_reduce(&shared, sum1::<A>, |a, b| a + b).unwrap();
    assert_eq!(
        got,
        expected,
        "{} with {} elements",
        std::any::type_name::<A>(),
        values.len()
    );
}

fn check_2d<A: Exact>(values: &[u8], cols: usize) {
    let rows = values.len() / cols;
    let local = Array2::from_shape_fn((rows, cols), |(i, j)| A::from_small(values[i * cols + j]));
    let shared = SharedArray::from_array(&local).unwrap();
    let expected: i128 = local.iter().map(|&x| x.widen()).sum();
    let (got, rows_seen) = POOL
        .par_reduce(&shared, sum2::<A>, |a, b| (a.0 + b.0, a.1 + b.1))
        .unwrap();
    assert_eq!(
        got,
        expected,
        "{} {rows}x{cols}",
        std::any::type_name::<A>()
    );
    assert_eq!(rows_seen, rows, "every row is seen exactly once");
}

fn check_all(values: &[u8], cols: usize) {
    macro_rules! each { ($($t:ty),*) => {$( check_1d::<$t>(values); check_2d::<$t>(values, cols); )*} }
    each!(f32, f64, i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_type_and_shape(values in proptest::collection::vec(any::<u8>(), 0..300), cols in 1usize..6) {
        let _w = common::watchdog(120, "property test case");
        check_all(&values, cols);
    }
}

#[test]
fn edge_sizes() {
    let _w = common::watchdog(120, "edge sizes");
    // Empty, one element, fewer rows than workers, odd sizes around chunk boundaries.
    for n in [0usize, 1, 2, 3, 4, 5, 7, 31, 97, 1001] {
        let values: Vec<u8> = (0..n).map(|i| (i * 37 % 251) as u8).collect();
        check_all(&values, 1);
        if n >= 3 {
            check_all(&values[..n / 3 * 3], 3);
        }
    }
}

#[test]
fn empty_array_gives_map_one_empty_view() {
    let a = SharedArray::<f64, Ix1>::zeros(0).unwrap();
    let (sum, calls) = POOL
        .par_reduce(&a, |c| (c.sum(), 1u32), |x, y| (x.0 + y.0, x.1 + y.1))
        .unwrap();
    assert_eq!((sum, calls), (0.0, 1));
    let b = SharedArray::<f64, Ix2>::zeros((0, 4)).unwrap();
    let shape = POOL
        .par_reduce(&b, |c| c.shape().to_vec(), |x, _| x)
        .unwrap();
    assert_eq!(shape, vec![0, 4]);
}

#[test]
fn more_workers_than_rows() {
    let pool = Pool::new(8).unwrap();
    let a = SharedArray::from_array(&ndarray::arr2(&[[1.0, 2.0], [3.0, 4.0]])).unwrap();
    assert_eq!(
        pool.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap(),
        10.0
    );
}
