//! The classic from the Python course: `imap` over tasks 0..10 where task 0 divides by zero.
//! In Python the whole `map` raises and every result is lost; here task 0 is an error and the
//! other nine results come back, in order.
//!
//! `cargo run --release --example pool_map`
use shmpar::Pool;

fn main() -> shmpar::Result<()> {
    let pool = Pool::new(2)?;
    for (task, result) in pool.imap(0..10i64, |x| 100 / x).enumerate() {
        match result {
            Ok(v) => println!("task {task}: 100 / {task} = {v}"),
            Err(e) => println!("task {task}: failed: {e}"),
        }
    }
    Ok(())
}
