//! The classic from the Python course: `imap` over tasks 0..10, each taking a second, where
//! task 0 divides by zero. In Python the first `next()` raises and the loop is over; here task
//! 0 is an error and the other nine results come back, in order, each printed as soon as it
//! and those before it are done (two at a time on two workers: about 5 s in all, as Python).
//!
//! `cargo run --release --example pool_map`
use std::time::{Duration, Instant};

use shmpar::Pool;

fn slow_divide(x: i64) -> i64 {
    if x != 0 {
        std::thread::sleep(Duration::from_secs(1));
    }
    100 / x
}

fn main() -> shmpar::Result<()> {
    let pool = Pool::new(2)?;
    let start = Instant::now();
    for (task, result) in pool.imap(0..10i64, slow_divide).enumerate() {
        let at = start.elapsed().as_secs_f64();
        match result {
            Ok(v) => println!("{at:6.2} s  task {task}: 100 / {task} = {v}"),
            Err(e) => println!("{at:6.2} s  task {task}: failed: {e}"),
        }
    }
    println!("{:6.2} s  all done", start.elapsed().as_secs_f64());
    Ok(())
}
