//! The par_reduce family and its argument checks.

mod common;

use std::sync::LazyLock;

use ndarray::{Array1, Array2, Ix0, Ix1, Ix2, Ix3};
use shmpar::{ErrorKind, Pool, SharedArray};

static POOL: LazyLock<Pool> = LazyLock::new(|| {
    Pool::builder()
        .workers(2)
        .chunk_bytes(4096)
        .build()
        .unwrap()
});

#[test]
fn arrays_made_before_and_after_the_pool_are_shared_without_copies() {
    let _w = common::watchdog(60, "before/after");
    let mut before = SharedArray::<i64, Ix1>::zeros(10_000).unwrap();
    let pool = Pool::new(2).unwrap();
    let mut after = SharedArray::<i64, Ix1>::zeros(10_000).unwrap();
    for a in [&mut before, &mut after] {
        // Workers write in place; the parent sees it with no copy back.
        pool.par_for_each_mut(a, |mut c| c.fill(3)).unwrap();
        assert!(a.view().iter().all(|&x| x == 3));
        // The parent writes; the workers see it.
        a.as_slice_mut()[9_999] = 100;
        assert_eq!(
            pool.par_reduce(a, |c| c.sum(), |x, y| x + y).unwrap(),
            3 * 9_999 + 100
        );
    }
}

#[test]
fn reduce_with_params() {
    let a = SharedArray::from_array(&Array1::range(0.0, 1000.0, 1.0)).unwrap();
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Window {
        lo: f64,
        hi: f64,
    }
    let n = POOL
        .par_reduce_with(
            &a,
            &Window {
                lo: 100.0,
                hi: 200.0,
            },
            |w, c| c.iter().filter(|&&x| x >= w.lo && x < w.hi).count(),
            |x, y| x + y,
        )
        .unwrap();
    assert_eq!(n, 100);
}

#[test]
fn histogram_as_a_vec_result() {
    let a = SharedArray::from_array(&Array1::from_shape_fn(100_000, |i| (i % 64) as u8)).unwrap();
    let hist = POOL
        .par_reduce(
            &a,
            |c| {
                let mut h = vec![0u64; 64];
                c.iter().for_each(|&x| h[x as usize] += 1);
                h
            },
            |mut x, y| {
                x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
                x
            },
        )
        .unwrap();
    assert_eq!(hist.len(), 64);
    assert_eq!(hist.iter().sum::<u64>(), 100_000);
    assert!(hist.iter().all(|&n| n == 1562 || n == 1563));
}

#[test]
fn zip_dot_product_and_length_mismatch() {
    let x = SharedArray::from_array(&Array1::from_shape_fn(50_001, |i| i as f64)).unwrap();
    let y = SharedArray::from_array(&Array1::from_elem(50_001, 2.0)).unwrap();
    let dot = POOL
        .par_reduce_zip(&x, &y, |a, b| a.dot(&b), |p, q| p + q)
        .unwrap();
    assert_eq!(dot, 2.0 * (50_000.0 * 50_001.0 / 2.0));
    // Different element types and dimensions, same rows.
    let m = SharedArray::from_array(&Array2::from_elem((50_001, 3), 1u8)).unwrap();
    let total = POOL
        .par_reduce_zip(&x, &m, |a, b| a.len() + b.len(), |p, q| p + q)
        .unwrap();
    assert_eq!(total, 50_001 * 4);
    let short = SharedArray::<f64, Ix1>::zeros(10).unwrap();
    let err = POOL
        .par_reduce_zip(&x, &short, |a, b| a.dot(&b), |p, q| p + q)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn for_each_mut_with_params_on_2d() {
    let mut a = SharedArray::<f32, Ix2>::zeros((1001, 7)).unwrap();
    POOL.par_for_each_mut_with(&mut a, &0.5f32, |v, mut c| c.fill(*v))
        .unwrap();
    assert_eq!(a.view().sum(), 0.5 * 1001.0 * 7.0);
}

#[test]
fn reduce_over_a_range() {
    let sum = POOL
        .par_reduce_range(
            1_000_003,
            |r, _| r.map(|i| i % 7).sum::<u64>(),
            |a, b| a + b,
        )
        .unwrap();
    assert_eq!(sum, (0..1_000_003u64).map(|i| i % 7).sum::<u64>());
    // The chunk numbers are 0..nchunks, each once, in order.
    let chunks = POOL
        .par_reduce_range(
            100_000,
            |_, c| vec![c],
            |mut a, b| {
                a.extend(b);
                a
            },
        )
        .unwrap();
    assert_eq!(chunks, (0..chunks.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        POOL.par_reduce_range(0, |r, _| r.count(), |a, b| a + b)
            .unwrap(),
        0
    );
}

#[test]
fn zero_and_three_dimensional_arrays() {
    let mut s = SharedArray::<u16, Ix0>::zeros(()).unwrap();
    s.view_mut()[()] = 9;
    assert_eq!(POOL.par_reduce(&s, |c| c[()], |a, b| a + b).unwrap(), 9);
    let t = SharedArray::from_array(&ndarray::Array3::<i32>::ones((5, 6, 7))).unwrap();
    let n: Vec<usize> = POOL
        .par_reduce(
            &t,
            |c| vec![c.len()],
            |mut a, b| {
                a.extend(b);
                a
            },
        )
        .unwrap();
    assert_eq!(n.iter().sum::<usize>(), 210);
    let _unused: Option<SharedArray<u8, Ix3>> = None;
}

#[test]
fn oversized_params_and_results_are_errors() {
    let a = SharedArray::<u8, Ix1>::zeros(100).unwrap();
    let big = vec![1u8; 100_000];
    let err = POOL
        .par_reduce_with(&a, &big, |p, c| p.len() + c.len(), |x, y| x + y)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let small = Pool::builder()
        .workers(1)
        .result_bytes(1024)
        .build()
        .unwrap();
    let err = small
        .par_reduce(&a, |c| vec![0u64; 10_000 + c.len()], |x, _| x)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResultTooLarge, "{err}");
    // The pool still works.
    assert_eq!(
        small.par_reduce(&a, |c| c.len(), |x, y| x + y).unwrap(),
        100
    );
}

#[test]
fn bad_settings_are_invalid_input() {
    assert_eq!(Pool::new(0).unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(
        Pool::builder().chunk_bytes(0).build().unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        Pool::builder().max_chunks(0).build().unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        Pool::builder().result_bytes(1).build().unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let e = SharedArray::<f64, Ix2>::zeros((usize::MAX / 4, 3)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("does not fit"), "{e}");
}

#[test]
fn the_default_pool_and_free_function() {
    let a = SharedArray::from_array(&Array1::from_elem(12345, 1.0f64)).unwrap();
    assert_eq!(
        shmpar::par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap(),
        12345.0
    );
    let pool = Pool::global().unwrap();
    assert_eq!(
        pool.workers(),
        std::thread::available_parallelism().unwrap().get()
    );
}

#[test]
fn concurrent_callers_share_one_pool() {
    let _w = common::watchdog(60, "concurrent callers");
    let a = SharedArray::from_array(&Array1::from_elem(200_000, 1.0f64)).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..50 {
                    assert_eq!(
                        POOL.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap(),
                        200_000.0
                    );
                }
            });
        }
    });
}
