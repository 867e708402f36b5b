//! Sharing arrays with numpy and with files: named segments a real Python process attaches
//! to, `.npy` files numpy wrote, clear errors for bad files, no segment left behind.
//! The tests that need numpy print why and pass when `python3` has no numpy.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use ndarray::{Ix1, Ix2};
use shmpar::{ErrorKind, Pool, Process, SharedArray, SharedValue};

fn numpy() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: python3 with numpy is not available (pip install numpy)");
    }
    ok
}

fn python(code: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", code])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("shmpar-test-{}-{name}", std::process::id()))
}

#[test]
fn numpy_reads_our_named_segment_and_writes_back() {
    let _w = common::watchdog(120, "named segment with numpy");
    if !numpy() {
        return;
    }
    let mut a = SharedArray::<f64, Ix2>::create_named(None, (4, 3)).unwrap();
    a.view_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = i as f64);
    let name = a.name().unwrap().to_string();
    let out = python(&format!(
        r#"
import sys
import numpy as np
from multiprocessing import shared_memory, resource_tracker
shm = shared_memory.SharedMemory(name="{name}")
if sys.version_info < (3, 13):
    resource_tracker.unregister(shm._name, "shared_memory")  # do not unlink ours at exit
a = np.ndarray((4, 3), dtype=np.float64, buffer=shm.buf, offset={off})
print(a.sum())
a[3, 2] = 1000.0
del a
shm.close()
"#,
        off = shmpar::NAMED_OFFSET
    ));
    assert_eq!(out, "66.0", "numpy saw our data");
    assert_eq!(a.view()[[3, 2]], 1000.0, "we see numpy's write");
    drop(a);
    assert!(
        !std::path::Path::new(&format!("/dev/shm/{name}")).exists(),
        "removed with its owner"
    );
}

#[test]
fn our_reduce_of_a_numpy_npy_equals_numpys_sum() {
    let _w = common::watchdog(120, "npy with numpy");
    if !numpy() {
        return;
    }
    let path = temp("numpy.npy");
    let numpy_sum = python(&format!(
        "import numpy as np\na = np.random.default_rng(5).random((1000, 37))\nnp.save(r'{}', a)\nprint(repr(float(a.sum())))",
        path.display()
    ));
    let a = common::open_npy::<f64, Ix2>(&path).unwrap();
    assert_eq!(a.shape(), &[1000, 37]);
    let pool = Pool::new(2).unwrap();
    let ours = pool.par_reduce(&a, |c| c.sum(), |x, y| x + y).unwrap();
    let theirs: f64 = numpy_sum.parse().unwrap();
    assert!(
        (ours - theirs).abs() <= 1e-9 * theirs.abs(),
        "{ours} vs numpy {theirs}"
    );
    // And numpy reads what we write into a .npy.
    let ours_path = temp("ours.npy");
    let mut b = common::create_npy::<i32, Ix1, _>(&ours_path, 10).unwrap();
    b.as_slice_mut()
        .copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    drop(b);
    assert_eq!(
        python(&format!(
            "import numpy as np\nprint(np.load(r'{}').sum())",
            ours_path.display()
        )),
        "55"
    );
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&ours_path).unwrap();
}

#[test]
fn bad_npy_files_are_clear_errors_at_open() {
    let path = temp("bad.npy");
    // A good file, then cut short.
    common::create_npy::<f64, Ix1, _>(&path, 1000).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(2000).unwrap();
    drop(f);
    let err = common::open_npy::<f64, Ix1>(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("truncated"), "{err}");
    // The right size, the wrong dtype.
    common::create_npy::<f32, Ix1, _>(&path, 10).unwrap();
    let err = common::open_npy::<f64, Ix1>(&path).unwrap_err();
    assert!(err.to_string().contains("'<f4'"), "{err}");
    // The wrong number of axes.
    let err = common::open_npy::<f32, Ix2>(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // Fortran order, and not an .npy at all.
    let mut f = std::fs::File::create(&path).unwrap();
    let mut dict = "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }".to_string();
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    f.write_all(b"\x93NUMPY\x01\x00").unwrap();
    f.write_all(&(dict.len() as u16).to_le_bytes()).unwrap();
    f.write_all(dict.as_bytes()).unwrap();
    f.write_all(&[0u8; 32]).unwrap();
    drop(f);
    assert!(
        common::open_npy::<f64, Ix2>(&path)
            .unwrap_err()
            .to_string()
            .contains("Fortran")
    );
    std::fs::write(&path, b"hello").unwrap();
    assert!(
        common::open_npy::<f64, Ix1>(&path)
            .unwrap_err()
            .to_string()
            .contains("magic")
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn name_collisions_and_stale_segments() {
    let _w = common::watchdog(60, "stale segments");
    let name = format!("shmpar-test-{}", std::process::id());
    let a = SharedArray::<u8, Ix1>::create_named(Some(&name), 10).unwrap();
    let err = SharedArray::<u8, Ix1>::create_named(Some(&name), 10).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(
        common::open_named::<u16, Ix1>(&name).is_err(),
        "wrong dtype"
    );
    drop(a);
    // An owner SIGKILLed before it could drop its segment leaves it behind...
    let made = SharedValue::new(shmpar::Event::new()).unwrap();
    let stale = format!("shmpar-stale-{}", std::process::id());
    // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
    let mut owner = unsafe {
        Process::fork(|| {
            let seg = SharedArray::<f64, Ix1>::create_named(Some(&stale), 100).unwrap();
            made.set();
            std::thread::sleep(Duration::from_secs(60));
            drop(seg);
        })
    }
    .unwrap();
    assert!(made.wait_timeout(Duration::from_secs(10)));
    owner.kill().unwrap();
    owner.join().unwrap();
    assert!(std::path::Path::new(&format!("/dev/shm/{stale}")).exists());
    // ...until cleanup_stale finds its owner gone.
    assert!(shmpar::cleanup_stale().unwrap() >= 1);
    assert!(!std::path::Path::new(&format!("/dev/shm/{stale}")).exists());
    let ours: Vec<String> = common::dev_shm()
        .into_iter()
        .filter(|n| n.contains(&std::process::id().to_string()))
        .collect();
    assert!(ours.is_empty(), "left behind: {ours:?}");
}

/// `cleanup_stale` reads every entry of /dev/shm, where anyone may put anything: a FIFO (which
/// a plain open waits on for ever, no writer ever coming) and a link to one are passed over.
#[test]
fn cleanup_stale_passes_over_a_fifo_and_a_link_to_one() {
    let _w = common::watchdog(60, "cleanup_stale and a FIFO");
    let fifo = format!("/dev/shm/shmpar-test-fifo-{}", std::process::id());
    let link = format!("{fifo}-link");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    let cleaned = shmpar::cleanup_stale();
    std::fs::remove_file(&fifo).unwrap();
    std::fs::remove_file(&link).unwrap();
    cleaned.unwrap();
}
