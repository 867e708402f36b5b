//! Producers and consumers with a poison pill, like the Python course's prime finder: two
//! producers put numbers on a queue, three consumers test them for primality and put the
//! primes on a second queue; each consumer stops at its poison pill.
//!
//! `cargo run --release --example queue`
use shmpar::{Process, Queue};

/// What travels on the work queue: a number to test, or the signal to stop.
#[derive(serde::Serialize, serde::Deserialize)]
enum Job {
    Test(u64),
    Stop,
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

fn main() -> shmpar::Result<()> {
    const CONSUMERS: usize = 3;
    let work = Queue::<Job>::new(256)?;
    let primes = Queue::<u64>::new(4096)?;

    let producers: Vec<Process> = [(1u64, 50_000u64), (50_000, 100_000)]
        .into_iter()
        .map(|(lo, hi)| {
            let work = &work;
            // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
            unsafe {
                Process::fork(move || {
                    for n in lo..hi {
                        work.put(&Job::Test(n)).unwrap();
                    }
                })
            }
        })
        .collect::<shmpar::Result<_>>()?;
    let consumers: Vec<Process> = (0..CONSUMERS)
        .map(|_| {
            // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
            unsafe {
                Process::fork(|| {
                    while let Ok(Job::Test(n)) = work.get() {
                        if is_prime(n) {
                            primes.put(&n).unwrap();
                        }
                    }
                })
            }
        })
        .collect::<shmpar::Result<_>>()?;

    // Collect primes while the others work, so that the result queue never fills up.
    let mut found = Vec::new();
    let drain = |found: &mut Vec<u64>| {
        while let Ok(p) = primes.try_get() {
            found.push(p);
        }
    };
    let wait = std::time::Duration::from_millis(1);
    for mut p in producers {
        while p.join_timeout(wait)?.is_none() {
            drain(&mut found);
        }
        p.join()?.into_result()?;
    }
    for _ in 0..CONSUMERS {
        work.put(&Job::Stop)?; // one poison pill per consumer
    }
    for mut c in consumers {
        while c.join_timeout(wait)?.is_none() {
            drain(&mut found);
        }
        c.join()?.into_result()?;
    }
    drain(&mut found);
    found.sort_unstable();
    println!(
        "{} primes below 100000; the last five: {:?}",
        found.len(),
        &found[found.len() - 5..]
    );
    Ok(())
}
