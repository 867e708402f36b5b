//! High Performance Python's prime verification: look for a factor of a large number in
//! parallel, and stop every worker as soon as one finds it, through a shared flag.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use shmpar::{Pool, SharedValue};

/// What every chunk gets: the number, the stop flag, and where to leave a factor.
type Search = (u64, SharedValue<AtomicBool>, SharedValue<AtomicU64>);

/// Trial division by the odd numbers 3 + 2k for k in `range`; checks the flag every 10,000
/// candidates. Returns how many candidates it tried.
fn search(job: &Search, range: std::ops::Range<u64>, _chunk: u64) -> u64 {
    let (n, stop, factor) = job;
    let mut tried = 0;
    for k in range {
        if tried % 10_000 == 0 && stop.load(Ordering::Relaxed) {
            break;
        }
        let d = 3 + 2 * k;
        tried += 1;
        if n % d == 0 {
            factor.store(d, Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
            break;
        }
    }
    tried
}

fn main() -> shmpar::Result<()> {
    let pool = Pool::new(2)?;
    // A prime, then a product of two primes whose smaller factor comes early.
    for n in [1_000_000_000_000_000_003u64, 100_000_007 * 9_999_999_967] {
        let stop = SharedValue::new(AtomicBool::new(false))?;
        let factor = SharedValue::new(AtomicU64::new(0))?;
        let odd_candidates = (n as f64).sqrt() as u64 / 2 + 1;
        let started = std::time::Instant::now();
        let tried = pool.par_reduce_range_with(
            odd_candidates,
            &(n, stop.clone(), factor.clone()),
            search,
            |a, b| a + b,
        )?;
        match factor.load(Ordering::Relaxed) {
            0 if n % 2 != 0 => println!("{n} is prime: {tried} divisions"),
            d => println!(
                "{n} = {d} x {}: stopped after {tried} of {odd_candidates} divisions",
                n / d
            ),
        }
        println!("  ({:.2} s)", started.elapsed().as_secs_f64());
    }
    Ok(())
}
