//! Monte Carlo pi with `rand`: each chunk's generator is positioned at its first row in one
//! ChaCha8 stream, so the estimate is the same for 1, 2 or 3 workers and any chunk size.
use rand::Rng;
use shmpar::Pool;

/// Samples `rows` of the stream `seed`: two f64 (four 32-bit words) per sample.
fn inside(seed: &u64, rows: std::ops::Range<u64>, _chunk: u64) -> u64 {
    let mut rng = shmpar::random::rows_rng(*seed, rows.start, 4);
    rows.filter(|_| {
        let (x, y): (f64, f64) = (rng.random(), rng.random());
        x * x + y * y < 1.0
    })
    .count() as u64
}

fn main() -> shmpar::Result<()> {
    let samples = 20_000_000u64;
    for (workers, chunk_bytes) in [(1, 256 << 10), (2, 256 << 10), (3, 8 << 10)] {
        let pool = Pool::builder()
            .workers(workers)
            .chunk_bytes(chunk_bytes)
            .build()?;
        let t = std::time::Instant::now();
        let hits = pool.par_reduce_range_with(samples, &42u64, inside, |a, b| a + b)?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{workers} worker(s), {:>3} KiB chunks: pi ~ {:.8} ({hits} of {samples} inside), {:.2e} samples/s",
            chunk_bytes >> 10,
            4.0 * hits as f64 / samples as f64,
            samples as f64 / secs
        );
    }
    Ok(())
}
