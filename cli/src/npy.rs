//! `npy-sum PATH` and `npy-make PATH --gib N`: reduce a `.npy` file larger than RAM with the
//! pool, mapped MAP_SHARED (no load, no copy).

use std::path::Path;
use std::time::Instant;

use ndarray::{Ix1, IxDyn};
use shmpar::{Pool, SharedArray};

use crate::CliResult;

/// Creates a 1-D f64 `.npy` of `gib` GiB filled with 1.0 (written by the pool's workers).
pub(crate) fn make(path: &Path, gib: f64) -> CliResult {
    let n = (gib * (1u64 << 30) as f64 / 8.0) as usize;
    let t = Instant::now();
    // SAFETY: the demo's own file: the user names a path that nothing else maps.
    let mut a = unsafe { SharedArray::<f64, Ix1>::create_npy(path, n) }?;
    Pool::builder()
        .build()?
        .par_for_each_mut(&mut a, |mut c| c.fill(1.0))?;
    println!(
        "wrote {}: {n} f64 ({:.1} GiB) in {:.1} s",
        path.display(),
        n as f64 * 8.0 / (1u64 << 30) as f64,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Sums any f64 `.npy` (any number of axes) with the pool and prints the throughput.
pub(crate) fn sum(path: &Path) -> CliResult {
    // SAFETY: the demo only reads the file; the user is told (`help`) not to write it
    // meanwhile.
    let a = unsafe { SharedArray::<f64, IxDyn>::open_npy(path) }?;
    let pool = Pool::builder().build()?;
    let gib = a.size_bytes() as f64 / (1u64 << 30) as f64;
    println!(
        "{}: shape {:?}, {gib:.2} GiB, {} workers",
        path.display(),
        a.shape(),
        pool.workers()
    );
    for run in [
        "first (from disk or page cache)",
        "second (page cache warm)",
    ] {
        let t = Instant::now();
        let s = pool.par_reduce(&a, |c| c.sum(), |x, y| x + y)?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "  {run}: sum = {s}, {secs:.2} s, {:.2} GB/s",
            a.size_bytes() as f64 / secs / 1e9
        );
    }
    Ok(())
}
