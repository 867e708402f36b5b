//! bool and complex elements (numpy's b1, c8, c16): arrays, reductions, `.npy` files and
//! named segments; bytes that are not a bool are refused at open.

mod common;

use ndarray::{Array1, Ix1};
use num_complex::Complex;
use shmpar::{ErrorKind, Pool, SharedArray};

#[test]
fn bool_arrays_reduce_and_round_trip() {
    let _w = common::watchdog(60, "bool");
    let pool = Pool::new(2).unwrap();
    let a = SharedArray::from_array(&Array1::from_shape_fn(100_001, |i| i % 3 == 0)).unwrap();
    let trues = pool
        .par_reduce(&a, |c| c.iter().filter(|&&b| b).count(), |x, y| x + y)
        .unwrap();
    assert_eq!(trues, 33_334);
    let path = std::env::temp_dir().join(format!("shmpar-bool-{}.npy", std::process::id()));
    let mut f = common::create_npy::<bool, Ix1, _>(&path, 10).unwrap();
    f.as_slice_mut()[3] = true;
    drop(f);
    let back = common::open_npy::<bool, Ix1>(&path).unwrap();
    assert_eq!(back.view().iter().filter(|&&b| b).count(), 1);
    drop(back);
    // A byte that is not 0 or 1 is refused when the file is opened.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] = 7;
    std::fs::write(&path, &bytes).unwrap();
    let err = common::open_npy::<bool, Ix1>(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("bool"), "{err}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn complex_arrays_reduce_like_serial_and_round_trip() {
    let _w = common::watchdog(60, "complex");
    let pool = Pool::new(2).unwrap();
    let local = Array1::from_shape_fn(50_000, |i| Complex::new(i as f64, -(i as f64) / 2.0));
    let a = SharedArray::from_array(&local).unwrap();
    let ours = pool.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap();
    let serial = local.sum();
    assert!((ours - serial).norm() <= 1e-9 * serial.norm());
    let path = std::env::temp_dir().join(format!("shmpar-c8-{}.npy", std::process::id()));
    let mut f = common::create_npy::<Complex<f32>, Ix1, _>(&path, 4).unwrap();
    f.as_slice_mut()[2] = Complex::new(1.5, 2.5);
    drop(f);
    let back = common::open_npy::<Complex<f32>, Ix1>(&path).unwrap();
    assert_eq!(back.view()[2], Complex::new(1.5, 2.5));
    // The dtype is checked: c8 is not c16.
    assert!(common::open_npy::<Complex<f64>, Ix1>(&path).is_err());
    drop(back);
    std::fs::remove_file(&path).unwrap();
    // A named segment of c16.
    let named = SharedArray::<Complex<f64>, Ix1>::create_named(None, 8).unwrap();
    let name = named.name().unwrap().to_string();
    let again = common::open_named::<Complex<f64>, Ix1>(&name).unwrap();
    assert_eq!(again.len(), 8);
}

#[test]
fn numpy_reads_and_writes_them() {
    let _w = common::watchdog(60, "numpy elements");
    let ok = std::process::Command::new("python3")
        .args(["-c", "import numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: python3 with numpy is not available");
        return;
    }
    let dir = std::env::temp_dir();
    let ours = dir.join(format!("shmpar-ours-c16-{}.npy", std::process::id()));
    let theirs = dir.join(format!("shmpar-theirs-b1-{}.npy", std::process::id()));
    let mut a = common::create_npy::<Complex<f64>, Ix1, _>(&ours, 3).unwrap();
    a.as_slice_mut().copy_from_slice(&[
        Complex::new(1.0, 2.0),
        Complex::new(3.0, -1.0),
        Complex::new(0.5, 0.0),
    ]);
    drop(a);
    let script = format!(
        "import numpy as np\nz = np.load(r'{}')\nassert z.dtype == np.complex128, z.dtype\nprint(z.sum())\nnp.save(r'{}', np.array([True, False, True, True]))",
        ours.display(),
        theirs.display()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "(4.5+1j)");
    let b = common::open_npy::<bool, Ix1>(&theirs).unwrap();
    assert_eq!(b.view().to_vec(), [true, false, true, true]);
    drop(b);
    std::fs::remove_file(&ours).unwrap();
    std::fs::remove_file(&theirs).unwrap();
}
