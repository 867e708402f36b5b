//! Normalise every row of a matrix in place, in parallel: each worker writes only its rows.
use ndarray::{Axis, Ix2};
use shmpar::{Pool, SharedArray};

fn main() -> shmpar::Result<()> {
    let pool = Pool::new(2)?;
    let mut m = SharedArray::<f64, Ix2>::zeros((10_000, 100))?;
    m.view_mut()
        .indexed_iter_mut()
        .for_each(|((i, j), x)| *x = (i + j) as f64);
    pool.par_for_each_mut(&mut m, |mut rows| {
        for mut row in rows.axis_iter_mut(Axis(0)) {
            let norm = row.dot(&row).sqrt();
            if norm > 0.0 {
                row /= norm;
            }
        }
    })?;
    let worst = m
        .view()
        .axis_iter(Axis(0))
        .map(|r| (r.dot(&r) - 1.0).abs())
        .fold(0.0, f64::max);
    println!("every row has length 1 (largest error {worst:.1e})");
    Ok(())
}
