//! One log file for the parent and every worker: `log::info!` from anywhere.
//!
//! `cargo run --release --example shared_log`, then read /tmp/shmpar-example.log.
use shmpar::Pool;

fn main() -> shmpar::Result<()> {
    let path = std::env::temp_dir().join("shmpar-example.log");
    // Before the pool: the workers inherit the logger when they are forked.
    let _guard = shmpar::logging::init(&path, log::LevelFilter::Info)?;
    log::info!("starting");
    let pool = Pool::new(2)?;
    let squares = pool.map(1..=8u64, |x| {
        log::info!("squaring {x}"); // written by the worker, with its pid and index
        x * x
    })?;
    log::info!(
        "done: {:?}",
        squares
            .iter()
            .map(|r| r.as_ref().copied().unwrap_or(0))
            .collect::<Vec<_>>()
    );
    println!("wrote {}", path.display());
    Ok(())
}
