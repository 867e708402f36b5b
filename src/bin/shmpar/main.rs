//! `cargo run --release`: a short tour of shmpar, printing tables a person can read.
//!
//! Subcommands: `tour` (the default) and `sum [--sizes 1K,64K,...] [--rounds N]`.

mod lost_update;
mod measure;
mod peers;
mod pi;
mod sum;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("tour") => tour(),
        Some("sum") => sum_command(&args[1..]),
        Some("lost-update") => lost_update_command(&args[1..]),
        Some("pi") => {
            let samples: u64 = match flag(&args[1..], "--samples").map(str::parse).transpose() {
                Ok(s) => s.unwrap_or(400_000_000),
                Err(e) => {
                    eprintln!("error: --samples: {e}");
                    return ExitCode::from(2);
                }
            };
            pi::run(samples, args.iter().any(|a| a == "--json"))
        }
        Some("lock-holder-dies") => lost_update::holder_dies(args.iter().any(|a| a == "--json")),
        Some("-h" | "--help" | "help") => {
            println!("{}", USAGE);
            Ok(())
        }
        Some(other) => {
            eprintln!("unknown command '{other}'\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: shmpar [COMMAND]

commands:
  tour                 the main demos, with short sizes (default)
  sum [--rounds N] [--sizes 1K,64K,1M,64M,512M]
                       sum of an f64 array: serial vs rayon vs shmpar
  lost-update [--procs N] [--increments M] [--json]
                       N processes x M increments of one shared counter, five ways
                       (default: N = number of CPUs, M = 1000000)
  pi [--samples N] [--json]
                       Monte Carlo pi: serial, std threads, rayon, shmpar processes, numpy
                       (default N = 400000000)
  lock-holder-dies [--json]
                       a lock's holder is SIGKILLed: raw_sync and a plain pthread mutex
                       time out, ShmMutex reports the dead owner at once";

/// Parses "1K", "64M", "2G", or plain bytes.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1usize << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

pub(crate) type CliResult = Result<(), Box<dyn std::error::Error>>;

fn lost_update_command(args: &[String]) -> CliResult {
    let procs: usize = flag(args, "--procs")
        .map(str::parse)
        .transpose()?
        .unwrap_or_else(cpus);
    let increments: u64 = flag(args, "--increments")
        .map(str::parse)
        .transpose()?
        .unwrap_or(1_000_000);
    if procs == 0 || increments == 0 {
        return Err("--procs and --increments must be at least 1".into());
    }
    lost_update::run(procs, increments, args.iter().any(|a| a == "--json"))
}

/// `imap` over 0..10 where task 0 divides by zero and task 7 kills its own worker: the other
/// results arrive, in order (Python's Pool.map would raise, or hang).
fn pool_map_demo() -> CliResult {
    let pool = shmpar::Pool::new(2)?;
    println!("{:>5} | result", "task");
    println!("{}", "-".repeat(72));
    for (task, result) in pool
        .imap(0..10i64, |x| {
            if x == 7 {
                std::process::abort(); // the worker dies: only this task fails
            }
            100 / x
        })
        .enumerate()
    {
        match result {
            Ok(v) => println!("{task:>5} | 100 / {task} = {v}"),
            Err(e) => println!("{task:>5} | {e}"),
        }
    }
    Ok(())
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn sum_command(args: &[String]) -> CliResult {
    let sizes: Vec<usize> = match flag(args, "--sizes") {
        Some(list) => list
            .split(',')
            .map(|s| parse_size(s).ok_or(format!("bad size '{s}'")))
            .collect::<Result<_, _>>()?,
        None => vec![1 << 10, 64 << 10, 1 << 20, 64 << 20, 512 << 20],
    };
    let rounds: usize = flag(args, "--rounds")
        .map(str::parse)
        .transpose()?
        .unwrap_or(11);
    run_sum(&sizes, rounds)
}

fn run_sum(sizes: &[usize], rounds: usize) -> CliResult {
    // Our workers start before rayon's threads exist (forking with them alive is safe for
    // shmpar, but this keeps the comparison clean).
    let pool = shmpar::Pool::builder().build()?;
    let rayon_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(pool.workers())
        .build()?;
    println!(
        "Sum of an f64 array: serial (ndarray sum), rayon ({} threads, same chunks and kernel), shmpar ({} worker processes).",
        rayon_pool.current_num_threads(),
        pool.workers()
    );
    println!("Medians of {rounds} interleaved rounds; ratios > 1 mean shmpar is faster.\n");
    let rows = sum::measure(&pool, &rayon_pool, sizes, rounds)?;
    sum::print_table(&rows);
    Ok(())
}

fn tour() -> CliResult {
    println!(
        "shmpar tour: {} CPUs available\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("== 1. Summing 512 MiB of f64 ==");
    run_sum(&[512 << 20], 7)?;
    println!("\n== 2. Lost updates on a shared counter ==");
    lost_update::run(cpus().max(2), 200_000, false)?;
    println!("\n== 3. A lock's holder dies ==");
    lost_update::holder_dies(false)?;
    println!("\n== 4. Pool.map where one task fails ==");
    pool_map_demo()?;
    println!("\n== 5. Monte Carlo pi ==");
    pi::run(100_000_000, false)?;
    Ok(())
}
