//! Bad input is a clear error, never undefined behaviour or silent loss: shapes whose size
//! overflows behind a zero axis, a range of `u64::MAX` indices, a `.npy` too large to create.

mod common;

use ndarray::{Ix1, Ix2, Ix3};
use shmpar::{ErrorKind, Pool, SharedArray};

#[test]
fn a_zero_axis_does_not_hide_an_overflowing_shape() {
    for shape in [(0, usize::MAX), (usize::MAX, 0)] {
        let err = SharedArray::<u8, Ix2>::zeros(shape).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{shape:?}");
    }
    let err = SharedArray::<f64, Ix3>::zeros((0, 1 << 40, 1 << 40)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // Empty arrays that fit are fine, and stay empty.
    let a = SharedArray::<f64, Ix2>::zeros((0, 1000)).unwrap();
    assert_eq!(a.view().len(), 0);
    assert_eq!(a.shape(), &[0, 1000]);
}

#[test]
fn a_range_of_u64_max_indices_covers_every_index() {
    let _w = common::watchdog(60, "huge range");
    let pool = Pool::new(2).unwrap();
    // Each chunk reports its length (no chunk iterates): the lengths must add up to n exactly.
    for n in [u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) + 12_345] {
        let covered = pool
            .par_reduce_range(n, |r, _| r.end - r.start, |a, b| a + b)
            .unwrap();
        assert_eq!(covered, n, "n = {n}");
    }
}

#[test]
fn create_npy_refuses_a_huge_shape_before_touching_the_file() {
    let path = std::env::temp_dir().join(format!("shmpar-huge-{}.npy", std::process::id()));
    std::fs::write(&path, b"precious data").unwrap();
    for n in [usize::MAX, usize::MAX / 2, isize::MAX as usize] {
        // SAFETY: the test's own file; nothing maps it.
        let err = unsafe { SharedArray::<u8, Ix1>::create_npy(&path, n) }.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{n}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"precious data");
    std::fs::remove_file(&path).unwrap();
}
