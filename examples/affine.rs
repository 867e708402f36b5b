//! `b = 2a + 1` over a 10,000 x 1,000 array, in parallel, reading one shared array and
//! writing another, with ndarray's `azip!` inside each chunk (no serial copy first).
use ndarray::{Ix2, azip};
use shmpar::{Pool, SharedArray};

fn main() -> shmpar::Result<()> {
    let pool = Pool::new(2)?;
    let a = SharedArray::from_array(&ndarray::Array2::from_shape_fn(
        (10_000, 1_000),
        |(i, j)| (i + j) as f64 / 1000.0,
    ))?;
    let mut b = SharedArray::<f64, Ix2>::zeros((10_000, 1_000))?;
    let t = std::time::Instant::now();
    pool.zip((&mut b, &a)).for_each(|(mut b, a)| {
        azip!((b in &mut b, &a in &a) *b = 2.0 * a + 1.0);
    })?;
    println!(
        "b = 2a + 1 over {} elements in {:.1} ms; b[[9999, 999]] = {}",
        b.len(),
        t.elapsed().as_secs_f64() * 1e3,
        b.view()[[9999, 999]]
    );
    Ok(())
}
