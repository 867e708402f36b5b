//! `Pool::zip`: 1 to 4 inputs and 1 or 2 outputs, over 1-D, 2-D and odd shapes, with chunk
//! grids of every size: every output element is written exactly once, with the value serial
//! ndarray computes; mismatched row counts are an error; indexed forms see their rows.

mod common;

use ndarray::{Array1, Array2, Ix1, Ix2, azip};
use proptest::prelude::*;
use shmpar::{ErrorKind, Pool, SharedArray};

fn pool(chunk_bytes: usize) -> Pool {
    Pool::builder()
        .workers(2)
        .chunk_bytes(chunk_bytes)
        .build()
        .unwrap()
}

fn filled2(rows: usize, cols: usize, seed: f64) -> SharedArray<f64, Ix2> {
    SharedArray::from_array(&Array2::from_shape_fn((rows, cols), |(i, j)| {
        seed + (i * 31 + j * 7) as f64 * 0.25
    }))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_output_element_is_written_once(
        rows in 0usize..300,
        cols in 1usize..7,
        chunk_bytes in prop::sample::select(vec![8usize, 24, 100, 4096, 1 << 20]),
    ) {
        let _w = common::watchdog(120, "zip property");
        let p = pool(chunk_bytes);
        let (a, b, c, d) = (
            filled2(rows, cols, 1.0),
            filled2(rows, cols, 2.0),
            filled2(rows, cols, 3.0),
            filled2(rows, cols, 4.0),
        );
        let (av, bv, cv, dv) = (a.view(), b.view(), c.view(), d.view());
        // Each output starts at zero and each write adds: a second write would show.
        let mut o1 = SharedArray::<f64, Ix2>::zeros((rows, cols)).unwrap();
        let mut o2 = SharedArray::<f64, Ix2>::zeros((rows, cols)).unwrap();

        p.zip((&mut o1, &a)).for_each(|(mut o, a)| azip!((o in &mut o, &a in &a) *o += a + 1.0)).unwrap();
        prop_assert_eq!(o1.view().to_owned(), &av + 1.0);

        o1.view_mut().fill(0.0);
        p.zip((&mut o1, &a, &b)).for_each(|(mut o, a, b)| azip!((o in &mut o, &a in &a, &b in &b) *o += a * b)).unwrap();
        prop_assert_eq!(o1.view().to_owned(), &av * &bv);

        o1.view_mut().fill(0.0);
        p.zip((&mut o1, &a, &b, &c, &d))
            .for_each(|(mut o, a, b, c, d)| azip!((o in &mut o, &a in &a, &b in &b, &c in &c, &d in &d) *o += a + 2.0 * b + 3.0 * c + 4.0 * d))
            .unwrap();
        prop_assert_eq!(o1.view().to_owned(), &av + &(&bv * 2.0) + &(&cv * 3.0) + &(&dv * 4.0));

        o1.view_mut().fill(0.0);
        p.zip((&mut o1, &mut o2, &a, &b, &c, &d))
            .for_each(|(mut o1, mut o2, a, b, c, d)| {
                azip!((o1 in &mut o1, o2 in &mut o2, &a in &a, &b in &b, &c in &c, &d in &d) {
                    *o1 += a + b;
                    *o2 += c * d;
                })
            })
            .unwrap();
        prop_assert_eq!(o1.view().to_owned(), &av + &bv);
        prop_assert_eq!(o2.view().to_owned(), &cv * &dv);

        // A reduction over two arrays, bitwise the serial fold in the same chunk grid order.
        let dot = p.zip((&a, &b)).reduce(|(a, b)| (&a * &b).sum(), |x, y| x + y).unwrap();
        let serial = (&av * &bv).sum();
        prop_assert!((dot - serial).abs() <= 1e-9 * serial.abs().max(1.0), "{} vs {}", dot, serial);
    }

    #[test]
    fn one_dimensional_and_indexed(n in 0usize..5000, chunk_bytes in prop::sample::select(vec![8usize, 64, 4096])) {
        let _w = common::watchdog(120, "zip 1-d");
        let p = pool(chunk_bytes);
        let mut out = SharedArray::<u64, Ix1>::zeros(n).unwrap();
        p.zip((&mut out,)).for_each_indexed(|rows, (mut o,)| {
            for (x, i) in o.iter_mut().zip(rows) {
                *x += (i as u64) * 3 + 1;
            }
        }).unwrap();
        prop_assert_eq!(out.view().to_owned(), Array1::from_shape_fn(n, |i| (i as u64) * 3 + 1));
        let covered = p.zip((&out,)).reduce_indexed(|rows, (o,)| {
            assert_eq!(rows.len(), o.len());
            rows.len()
        }, |a, b| a + b).unwrap();
        prop_assert_eq!(covered, n);
    }
}

#[test]
fn rows_must_match() {
    let p = pool(1 << 16);
    let a = SharedArray::<f32, Ix1>::zeros(10).unwrap();
    let mut b = SharedArray::<f32, Ix1>::zeros(11).unwrap();
    let err = p.zip((&mut b, &a)).for_each(|_| {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn a_panic_in_a_chunk_is_reported_and_the_rest_is_untouched_or_whole() {
    let p = pool(64);
    let mut o = SharedArray::<u8, Ix1>::zeros(1000).unwrap();
    let err = p
        .zip((&mut o,))
        .for_each_indexed(|rows, (mut o,)| {
            if rows.contains(&500) {
                panic!("row 500");
            }
            o.fill(1);
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerPanicked);
    assert!(err.message().contains("row 500"));
}

#[test]
fn results_may_be_ndarray_arrays() {
    // Per-chunk column sums as an `Array1`, combined in chunk order: ndarray's serde support
    // comes with shmpar, nothing to enable.
    let p = pool(1024);
    let a = filled2(500, 4, 0.0);
    let sums: Array1<f64> = p
        .zip((&a,))
        .reduce(|(a,)| a.sum_axis(ndarray::Axis(0)), |x, y| x + y)
        .unwrap();
    let serial = a.view().sum_axis(ndarray::Axis(0));
    for (x, y) in sums.iter().zip(&serial) {
        assert!((x - y).abs() <= 1e-9 * y.abs());
    }
}

#[test]
fn find_any_stops_the_call_early() {
    let _w = common::watchdog(60, "find_any");
    let p = pool(8 * 1024); // 1,024 chunks of 1,024 u64 (the grid's maximum)
    let a = SharedArray::from_array(&Array1::from_shape_fn(1 << 20, |i| i as u64)).unwrap();
    for target in [0u64, 5_000, 40_000] {
        let found = p
            .zip((&a,))
            .find_any(|rows, (a,)| {
                a.iter()
                    .zip(rows)
                    .find(|(x, _)| **x == 5_000 || **x == 40_000 || **x == 0)
                    .map(|(x, _)| *x)
            })
            .unwrap()
            .unwrap();
        // Several chunks hold a match; the one that stopped the call says where it was.
        assert!(
            found.rows.contains(&(found.value as usize)),
            "{target}: {found:?}"
        );
        assert!(found.chunks_run < found.chunks, "no early stop: {found:?}");
    }
    // Nothing to find: every chunk runs, and the answer is None.
    let none = p
        .zip((&a,))
        .find_any(|_, (a,)| a.iter().find(|&&x| x == u64::MAX).copied())
        .unwrap();
    assert_eq!(none, None);
    assert!(
        p.zip((&a,))
            .any(|(a,)| a.iter().any(|&x| x == 1_000_000))
            .unwrap()
    );
    assert!(
        !p.zip((&a,))
            .any(|(a,)| a.iter().any(|&x| x > 1 << 20))
            .unwrap()
    );
    // The pool serves normal calls afterwards.
    let s = p.zip((&a,)).reduce(|(a,)| a.sum(), |x, y| x + y).unwrap();
    assert_eq!(s, (1u64 << 20) * ((1 << 20) - 1) / 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Axis-1 splits, strided and reversed slices, and transposes (Fortran-order views) give
    /// serial ndarray's answer, bitwise, for 1, 2 and 3 workers.
    #[test]
    fn views_along_any_axis_equal_serial_bitwise(
        rows in 1usize..120,
        cols in 1usize..90,
        step in 1isize..4,
        reverse in any::<bool>(),
        chunk_bytes in prop::sample::select(vec![8usize, 200, 4096]),
    ) {
        let _w = common::watchdog(120, "views");
        // Integers in f64: every order of summing gives the same bits, so the pool's chunked
        // fold must equal ndarray's serial sum exactly.
        let a = SharedArray::from_array(&Array2::from_shape_fn((rows, cols), |(i, j)| {
            ((i * 7 + j * 3) % 101) as f64
        }))
        .unwrap();
        let step = if reverse { -step } else { step };
        let info = ndarray::s![..;step, cols / 3..];
        let serial_slice = a.view().slice(info).sum();
        let serial_cols = a.view().sum_axis(ndarray::Axis(0)).to_vec();
        let serial = a.view().sum();
        let mut answers = Vec::new();
        for workers in [1, 2, 3] {
            let p = Pool::builder().workers(workers).chunk_bytes(chunk_bytes).build().unwrap();
            let by_cols = p
                .zip((a.along(ndarray::Axis(1)),))
                .reduce(|(v,)| v.sum_axis(ndarray::Axis(0)).to_vec(), |mut x, y| { x.extend(y); x })
                .unwrap();
            prop_assert_eq!(&by_cols, &serial_cols);
            let sliced = p.zip((a.slice(info),)).reduce(|(v,)| v.sum(), |x, y| x + y).unwrap();
            prop_assert_eq!(sliced.to_bits(), serial_slice.to_bits());
            let sliced_cols = p
                .zip((a.slice(info).along(ndarray::Axis(1)),))
                .reduce(|(v,)| v.sum(), |x, y| x + y)
                .unwrap();
            prop_assert_eq!(sliced_cols.to_bits(), serial_slice.to_bits());
            let t = p.zip((a.t(),)).reduce(|(v,)| v.sum(), |x, y| x + y).unwrap();
            prop_assert_eq!(t.to_bits(), serial.to_bits());
            // Random floats: not exact, but the same bits for every number of workers.
            let f = p
                .zip((a.t(),))
                .reduce(|(v,)| v.iter().map(|x| (x * 0.37).sin()).sum::<f64>(), |x, y| x + y)
                .unwrap();
            answers.push(f.to_bits());
        }
        prop_assert!(answers.windows(2).all(|w| w[0] == w[1]));
    }
}

#[test]
fn writable_views_write_their_own_indices() {
    let p = pool(256);
    let mut a = SharedArray::<u32, Ix2>::zeros((64, 50)).unwrap();
    // Reversed rows, every third, split by columns: each element written once.
    p.zip((a.slice_mut(ndarray::s![..;-3, ..]).along(ndarray::Axis(1)),))
        .for_each(|(mut v,)| v.map_inplace(|x| *x += 1))
        .unwrap();
    let mut expected = Array2::<u32>::zeros((64, 50));
    expected.slice_mut(ndarray::s![..;-3, ..]).fill(1);
    assert_eq!(a.view(), expected);
    // An axis the view does not have is an error, not a panic.
    let err = p
        .zip((a.along(ndarray::Axis(5)),))
        .reduce(|(v,)| v.len(), |x, y| x + y)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}
