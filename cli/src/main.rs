//! `cargo run --release`: a short tour of shmpar, printing tables a person can read.
//!
//! Subcommands: `tour` (the default) and `sum [--sizes 1K,64K,...] [--rounds N]`.

mod bench;
mod laws;
mod logdemo;
mod lost_update;
mod measure;
mod npy;
mod peers;
mod pi;
mod scaling;

use shmpar::StartMethod;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("tour") => tour(),
        Some("sum") => sum_command(&args[1..]),
        Some("bench") => bench_command(&args[1..]),
        Some("scaling") => scaling_command(&args[1..]),
        Some("log-demo") => log_demo_command(&args[1..]),
        Some("npy-sum") if args.len() == 2 => npy::sum(&args[1]),
        Some("npy-make") if args.len() >= 2 => {
            match flag(&args[2..], "--gib").map(str::parse::<f64>).transpose() {
                Ok(gib) => npy::make(&args[1], gib.unwrap_or(8.0)),
                Err(e) => Err(format!("--gib: {e}").into()),
            }
        }
        Some("log-demo-one") if args.len() == 4 => match (args[2].parse(), args[3].parse()) {
            (Ok(procs), Ok(lines)) => logdemo::run_one(&args[1], procs, lines),
            _ => Err("log-demo-one MODE PROCS LINES".into()),
        },
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
  bench [--quick] [--json] [--workloads sum,dot,minmax,hist64] [--sizes 1K,...] [--rounds N]
        [--start-method fork-server|fork]
                       the bench report: four workloads at 1 KiB .. 512 MiB (--quick: up to
                       64 MiB), serial vs rayon vs shmpar, beside numpy and multiprocessing
  sum [--rounds N] [--sizes 1K,64K,1M,64M,512M]
                       the sum alone: serial vs rayon vs shmpar
  lost-update [--procs N] [--increments M] [--json]
                       N processes x M increments of one shared counter, five ways
                       (default: N = number of CPUs, M = 1000000)
  pi [--samples N] [--json]
                       Monte Carlo pi: serial, std threads, rayon, shmpar processes, numpy
                       (default N = 400000000)
  scaling [--max-procs N] [--workload pi|sum] [--svg FILE] [--json]
                       strong (Amdahl) and weak (Gustafson) scaling from 1 to N processes
                       (default: twice the CPUs), Karp-Flatt, and an SVG plot
  log-demo [--procs N] [--lines M]
                       N processes x M log records into one file, both logging modes:
                       checks every line and prints records/s (default: CPUs x 100000)
  npy-make PATH [--gib N]
                       writes a 1-D f64 .npy of N GiB (default 8) filled with 1.0
  npy-sum PATH         sums an f64 .npy (any size, even larger than RAM) with the pool
                       (do not write the file meanwhile)
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

fn sizes_flag(args: &[String]) -> Result<Option<Vec<usize>>, Box<dyn std::error::Error>> {
    flag(args, "--sizes")
        .map(|list| {
            list.split(',')
                .map(|s| parse_size(s).ok_or_else(|| format!("bad size '{s}'").into()))
                .collect()
        })
        .transpose()
}

fn sum_command(args: &[String]) -> CliResult {
    let sizes =
        sizes_flag(args)?.unwrap_or_else(|| vec![1 << 10, 64 << 10, 1 << 20, 64 << 20, 512 << 20]);
    let rounds: usize = flag(args, "--rounds")
        .map(str::parse)
        .transpose()?
        .unwrap_or(11);
    let json = args.iter().any(|a| a == "--json");
    bench::run(
        false,
        json,
        &[bench::Workload::Sum],
        Some(sizes),
        rounds,
        StartMethod::default(),
    )
}

fn log_demo_command(args: &[String]) -> CliResult {
    let procs: usize = flag(args, "--procs")
        .map(str::parse)
        .transpose()?
        .unwrap_or_else(cpus);
    let lines: usize = flag(args, "--lines")
        .map(str::parse)
        .transpose()?
        .unwrap_or(100_000);
    if procs == 0 || lines == 0 {
        return Err("--procs and --lines must be at least 1".into());
    }
    logdemo::run(procs, lines)
}

fn scaling_command(args: &[String]) -> CliResult {
    let workload = match flag(args, "--workload").unwrap_or("pi") {
        "pi" => scaling::ScalingWorkload::Pi,
        "sum" => scaling::ScalingWorkload::Sum,
        other => return Err(format!("unknown workload '{other}' (pi or sum)").into()),
    };
    let max_procs: Option<usize> = flag(args, "--max-procs").map(str::parse).transpose()?;
    let json = args.iter().any(|a| a == "--json");
    scaling::run(workload, max_procs, flag(args, "--svg"), json)
}

fn bench_command(args: &[String]) -> CliResult {
    let workloads = match flag(args, "--workloads") {
        Some(list) => bench::parse_workloads(list)?,
        None => bench::Workload::ALL.to_vec(),
    };
    let rounds: usize = flag(args, "--rounds")
        .map(str::parse)
        .transpose()?
        .unwrap_or(7);
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().any(|a| a == "--json");
    let method = match flag(args, "--start-method") {
        None | Some("fork-server") => StartMethod::ForkServer,
        Some("fork") => StartMethod::Fork,
        Some(other) => {
            return Err(format!("--start-method takes fork-server or fork, not {other}").into());
        }
    };
    bench::run(quick, json, &workloads, sizes_flag(args)?, rounds, method)
}

fn tour() -> CliResult {
    println!(
        "shmpar tour: {} CPUs available\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("== 1. Summing 512 MiB of f64 ==");
    bench::run(
        false,
        false,
        &[bench::Workload::Sum],
        Some(vec![512 << 20]),
        7,
        StartMethod::default(),
    )?;
    println!("\n== 2. Lost updates on a shared counter ==");
    lost_update::run(cpus().max(2), 200_000, false)?;
    println!("\n== 3. A lock's holder dies ==");
    lost_update::holder_dies(false)?;
    println!("\n== 4. Pool.map where one task fails ==");
    pool_map_demo()?;
    println!("\n== 5. Monte Carlo pi ==");
    pi::run(100_000_000, false)?;
    println!("\n== 6. The bench report, short ==");
    let sizes = vec![1 << 10, 4 << 10, 1 << 20, 64 << 20];
    bench::run(
        true,
        false,
        &bench::Workload::ALL,
        Some(sizes),
        3,
        StartMethod::default(),
    )?;
    Ok(())
}
