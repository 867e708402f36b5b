//! `cargo run --release`: a short tour of shmpar, printing tables a person can read.
//! `shmpar help` lists the other commands; `shmpar help COMMAND` (or `--help`) explains one.

mod bench;
mod interleave;
mod io_cpu;
mod ipc;
mod laws;
mod logdemo;
mod lost_update;
mod measure;
mod npy;
mod output;
mod peers;
mod pi;
mod pool_size;
mod primes;
mod scaling;
mod tails;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shmpar::StartMethod;

/// shmpar's tour, the parallel-programming course's demos, and the bench report.
///
/// With no command: the tour (the main demos with short sizes, about a minute).
#[derive(Debug, Parser)]
#[command(name = "shmpar", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The main demos, with short sizes (the default command).
    Tour,
    /// The bench report: serial vs rayon vs shmpar on f64 workloads from 1 KiB to 512 MiB,
    /// beside numpy and Python's multiprocessing.
    Bench(BenchArgs),
    /// The sum alone: serial vs rayon vs shmpar.
    Sum(SumArgs),
    /// N processes x M increments of one shared counter, five ways: lost updates and the fixes.
    LostUpdate(LostUpdateArgs),
    /// Monte Carlo pi: serial, std threads, rayon, shmpar processes, numpy.
    Pi(PiArgs),
    /// Strong (Amdahl) and weak (Gustafson) scaling from 1 to N processes, Karp-Flatt, and an
    /// SVG plot.
    Scaling(ScalingArgs),
    /// N processes x M log records into one file, both logging modes: checks every line and
    /// prints records/s.
    LogDemo(LogDemoArgs),
    /// Writes a 1-D f64 .npy filled with 1.0 (by the pool's workers).
    NpyMake(NpyMakeArgs),
    /// Sums an f64 .npy (any size, even larger than RAM) with the pool. Do not write the file
    /// meanwhile.
    NpySum(NpySumArgs),
    /// A lock's holder is SIGKILLed: raw_sync and a plain pthread mutex time out, ShmMutex
    /// reports the dead owner at once.
    LockHolderDies(JsonArg),
    /// High Performance Python's prime verification: serial, a naive pool, a pool with a
    /// shared stop flag, and the early-stop search.
    Primes(QuickJson),
    /// Processes printing to one output: lines written in pieces tear and mix, whole lines
    /// and the logging funnel do not.
    Interleave(InterleaveArgs),
    /// How the default pool size is chosen (CPUs, affinity, cgroup quota) and the time of one
    /// workload for 1 to twice that many workers.
    PoolSize(QuickJson),
    /// A thread pool and the process pool on waiting tasks and on computing tasks.
    IoVsCpu(QuickJson),
    /// What moving a small message or 1 MiB between processes costs by each route (Queue,
    /// Pipe, an atomic, a shared array), beside Python's.
    Ipc(IpcArgs),
    /// One way of interleave in this process (interleave runs each in a fresh process).
    #[command(hide = true)]
    InterleaveOne {
        mode: InterleaveMode,
        procs: usize,
        lines: usize,
    },
    /// One mode of log-demo in this process (log-demo runs it in a fresh process per mode).
    #[command(hide = true)]
    LogDemoOne {
        mode: LogMode,
        procs: usize,
        lines: usize,
    },
}

/// `--json`: one JSON object per line instead of the tables.
#[derive(Debug, Args)]
struct JsonArg {
    /// Print one JSON object per line instead of the tables.
    #[arg(long)]
    json: bool,
}

/// `--quick` and `--json`.
#[derive(Debug, Args)]
struct QuickJson {
    /// Smaller sizes (what the tour runs).
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Debug, Args)]
struct InterleaveArgs {
    /// Writing processes.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    procs: u32,
    /// Lines per process.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..))]
    lines: u32,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Debug, Args)]
struct IpcArgs {
    /// Fewer round trips and payloads (what the tour runs).
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    json: JsonArg,
    /// Write the latencies and throughputs as SVG bars.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

/// How `interleave` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum InterleaveMode {
    /// `print!` and a flush, then `println!`: two writes per line.
    Split,
    /// `println!`: one write per line.
    Whole,
    /// `log::info!` through the logging funnel.
    Funnel,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Stop at 64 MiB (about 15 s).
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    json: JsonArg,
    /// Write the throughput against size, a line per variant and a panel per workload, as SVG.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Also time 1,000 consecutive sums at 4 KiB, 64 KiB and 1 MiB, shmpar beside rayon:
    /// the median, the 99th percentile and the worst call.
    #[arg(long)]
    tails: bool,
    /// Also time shmpar with the calling thread running chunks too (`caller_runs_chunks`):
    /// faster on small arrays when the pool has as many workers as CPUs, at the cost of crash
    /// isolation (a chunk that crashes then takes the caller with it).
    #[arg(long)]
    caller_helps: bool,
    /// The workloads to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    workloads: Vec<bench::Workload>,
    /// Array sizes, e.g. 1K,64K,1M,64M,512M (default: 1K,4K,64K,1M,64M,512M).
    #[arg(long, value_delimiter = ',', value_parser = parse_size, value_name = "LIST")]
    sizes: Vec<usize>,
    /// Interleaved rounds per cell (the median is reported).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// How the pool starts its workers.
    #[arg(long, value_enum, default_value_t = StartArg::ForkServer)]
    start_method: StartArg,
}

#[derive(Debug, Args)]
struct SumArgs {
    #[command(flatten)]
    json: JsonArg,
    /// Array sizes, e.g. 1K,64K,1M (default: 1K,64K,1M,64M,512M).
    #[arg(long, value_delimiter = ',', value_parser = parse_size, value_name = "LIST")]
    sizes: Vec<usize>,
    /// Interleaved rounds per cell (the median is reported).
    #[arg(long, default_value_t = 11, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

#[derive(Debug, Args)]
struct LostUpdateArgs {
    /// Processes (default: the number of CPUs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    procs: Option<u32>,
    /// Increments per process.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    increments: u64,
    #[command(flatten)]
    json: JsonArg,
    /// Write the lost updates and the time per increment of each way as an SVG bar chart.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PiArgs {
    /// Samples to throw.
    #[arg(long, default_value_t = 400_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Debug, Args)]
struct ScalingArgs {
    /// The largest number of processes (default: twice the CPUs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_procs: Option<u32>,
    /// What is scaled.
    #[arg(long, value_enum, default_value_t = scaling::ScalingWorkload::Pi)]
    workload: scaling::ScalingWorkload,
    /// Write the plot here.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    #[command(flatten)]
    json: JsonArg,
}

#[derive(Debug, Args)]
struct LogDemoArgs {
    /// Writing processes (default: the number of CPUs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    procs: Option<u32>,
    /// Records per process.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    lines: u32,
}

#[derive(Debug, Args)]
struct NpyMakeArgs {
    /// The file to write.
    path: PathBuf,
    /// Its size in GiB.
    #[arg(long, default_value_t = 8.0, value_parser = parse_gib)]
    gib: f64,
}

#[derive(Debug, Args)]
struct NpySumArgs {
    /// The file to sum (f64, any shape).
    path: PathBuf,
}

/// `--start-method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StartArg {
    /// Workers forked by a fork server, a clean copy of the program (the default).
    ForkServer,
    /// Workers forked from this process.
    Fork,
}

/// The logging modes of `log-demo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogMode {
    /// Through a shared-memory queue to one writer thread.
    Funnel,
    /// One write(2) per record on an O_APPEND file.
    Append,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Tour) {
        Command::Tour => tour(),
        Command::Bench(a) => bench::run(
            a.quick,
            a.json.json,
            &or_all(a.workloads),
            (!a.sizes.is_empty()).then_some(a.sizes),
            a.rounds as usize,
            match a.start_method {
                StartArg::ForkServer => StartMethod::ForkServer,
                StartArg::Fork => StartMethod::Fork,
            },
            bench::Extras {
                svg: a.svg.as_deref(),
                tails: a.tails,
                caller_helps: a.caller_helps,
            },
        ),
        Command::Sum(a) => bench::run(
            false,
            a.json.json,
            &[bench::Workload::Sum],
            Some(if a.sizes.is_empty() {
                vec![1 << 10, 64 << 10, 1 << 20, 64 << 20, 512 << 20]
            } else {
                a.sizes
            }),
            a.rounds as usize,
            StartMethod::default(),
            bench::Extras::default(),
        ),
        Command::LostUpdate(a) => lost_update::run(
            a.procs.map_or_else(cpus, |p| p as usize),
            a.increments,
            a.json.json,
            a.svg.as_deref(),
        ),
        Command::Pi(a) => pi::run(a.samples, a.json.json),
        Command::Scaling(a) => scaling::run(
            a.workload,
            a.max_procs.map(|p| p as usize),
            a.svg.as_deref(),
            a.json.json,
        ),
        Command::LogDemo(a) => {
            logdemo::run(a.procs.map_or_else(cpus, |p| p as usize), a.lines as usize)
        }
        Command::NpyMake(a) => npy::make(&a.path, a.gib),
        Command::NpySum(a) => npy::sum(&a.path),
        Command::LockHolderDies(a) => lost_update::holder_dies(a.json),
        Command::LogDemoOne { mode, procs, lines } => logdemo::run_one(mode, procs, lines),
        Command::Primes(a) => primes::run(a.quick, a.json.json),
        Command::Interleave(a) => interleave::run(a.procs as usize, a.lines as usize, a.json.json),
        Command::PoolSize(a) => pool_size::run(a.quick, a.json.json),
        Command::IoVsCpu(a) => io_cpu::run(a.quick, a.json.json),
        Command::Ipc(a) => ipc::run(a.quick, a.json.json, a.svg.as_deref()),
        Command::InterleaveOne { mode, procs, lines } => interleave::run_one(mode, procs, lines),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn or_all(workloads: Vec<bench::Workload>) -> Vec<bench::Workload> {
    if workloads.is_empty() {
        bench::Workload::ALL.to_vec()
    } else {
        workloads
    }
}

/// Parses "1K", "64M", "2G", or plain bytes (at least 8: one f64).
fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1usize << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let bytes = num
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a size (e.g. 4096, 1K, 64M, 2G)"))?;
    if bytes < 8 {
        return Err(format!("'{s}' is smaller than one f64 (8 bytes)"));
    }
    Ok(bytes)
}

/// Parses a positive, finite number of GiB.
fn parse_gib(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(g) if g.is_finite() && g > 0.0 => Ok(g),
        _ => Err(format!("'{s}' is not a positive number of GiB")),
    }
}

pub(crate) type CliResult = Result<(), Box<dyn std::error::Error>>;

/// `imap` over 0..10 where task 0 divides by zero and task 7 kills its own worker: the other
/// results arrive, in order (Python's Pool.map would raise, or hang).
fn pool_map_demo() -> CliResult {
    let pool = shmpar::Pool::new(2)?;
    let mut table = output::table(&["task", "result"]);
    output::left(&mut table, 1);
    for (task, result) in pool
        .imap(0..10i64, |x| {
            if x == 7 {
                std::process::abort(); // the worker dies: only this task fails
            }
            100 / x
        })
        .enumerate()
    {
        table.add_row(vec![
            task.to_string(),
            match result {
                Ok(v) => format!("100 / {task} = {v}"),
                Err(e) => e.to_string(),
            },
        ]);
    }
    println!("{table}");
    Ok(())
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
        bench::Extras::default(),
    )?;
    println!("\n== 2. Lost updates on a shared counter ==");
    lost_update::run(cpus().max(2), 200_000, false, None)?;
    println!("\n== 3. A lock's holder dies ==");
    lost_update::holder_dies(false)?;
    println!("\n== 4. Pool.map where one task fails ==");
    pool_map_demo()?;
    println!("\n== 5. Monte Carlo pi ==");
    pi::run(100_000_000, false)?;
    println!("\n== 6. Stopping early: High Performance Python's prime verification ==");
    primes::run(true, false)?;
    println!("\n== 7. Processes printing at once ==");
    interleave::run(4, 500, false)?;
    println!("\n== 8. How big a pool ==");
    pool_size::run(true, false)?;
    println!("\n== 9. Threads or processes: waiting and computing ==");
    io_cpu::run(true, false)?;
    println!("\n== 10. Moving data between processes ==");
    ipc::run(true, false, None)?;
    println!("\n== 11. The bench report, short ==");
    let sizes = vec![1 << 10, 4 << 10, 1 << 20, 64 << 20];
    bench::run(
        true,
        false,
        &bench::Workload::ALL,
        Some(sizes),
        3,
        StartMethod::default(),
        bench::Extras::default(),
    )?;
    Ok(())
}
