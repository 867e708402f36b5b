//! Sum a large shared array with a pool of worker processes.
use ndarray::Ix1;
use shmpar::{Pool, SharedArray};

fn main() -> shmpar::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 20);
    let pool = Pool::new(2)?;
    let mut data = SharedArray::<f64, Ix1>::zeros(n)?;
    data.view_mut().fill(1.0);
    let sum = pool.par_reduce(&data, |chunk| chunk.sum(), |a, b| a + b)?;
    println!("sum of {n} ones = {sum}");
    Ok(())
}
