//! The same reduce across machines, under `mpiexec -n N`: one rank per node, each rank's pool
//! of forked workers reducing its block, MPI combining the partials.
//!
//! ```sh
//! cargo build --release --features mpi --bin shmpar-mpi
//! mpiexec -n 2 target/release/shmpar-mpi sum --elems 67108864 --workers 1
//! mpiexec -n 2 target/release/shmpar-mpi pi --samples 1000000000
//! ```
//!
//! `npy-sum --prefix P` sums a distributed f64 array whose rank-`r` block is the file
//! `P.r.npy` (`DistArray::from_npy`: any number of axes, blocks of any number of rows).
//!
//! Prints per-rank and global throughput, and on rank 0 a `RESULT` line with the value and its
//! bits. `--panic-rank R` makes rank R panic (the job then ends through MPI_Abort);
//! `--kill-worker-rank R` SIGKILLs one of rank R's workers during its reduce (that rank reports
//! WorkerDied and ends the job).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use shmpar::Pool;
use shmpar::mpi::rsmpi::traits::*;
use shmpar::mpi::{DistArray, abort_on_panic, par_reduce};
use shmpar_cli::montecarlo::estimate_pi_mpi as estimate_pi;

fn flag<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// The value of global element `i`: in [0, 1), the same on every rank and in the tests.
fn value(i: u64) -> f64 {
    let mut h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 29;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().cloned().unwrap_or_else(|| "sum".into());
    let workers: usize = flag(&args, "--workers").unwrap_or(2);
    // The pool first: fork before MPI starts.
    let pool = match Pool::new(workers) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(universe) = shmpar::mpi::rsmpi::initialize() else {
        eprintln!("error: MPI could not start");
        return ExitCode::FAILURE;
    };
    let world = universe.world();
    abort_on_panic(&world);
    let (rank, size) = (world.rank(), world.size());
    // Which MPI this binary was built against, and how many ranks it sees: an MPICH binary run
    // by Open MPI's launcher (or the reverse) starts N independent single-rank jobs.
    println!(
        "MPI rank {rank} of {size}: {}",
        shmpar::mpi::rsmpi::environment::library_version()
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("")
    );
    if flag::<i32>(&args, "--panic-rank") == Some(rank) {
        panic!("rank {rank} panics on purpose (--panic-rank)");
    }
    let result = match mode.as_str() {
        "sum" => run_sum(&world, &pool, &args),
        "pi" => run_pi(&world, &pool, &args),
        "npy-sum" => run_npy_sum(&world, &pool, &args),
        other => Err(format!("unknown mode '{other}' (sum, pi or npy-sum)")),
    };
    if let Err(e) = result {
        eprintln!("rank {rank}/{size}: error: {e}");
        // The other ranks may be waiting in a collective call: end them all, after giving the
        // launcher a moment to forward the message (MPI_Abort tears the job down at once).
        std::thread::sleep(Duration::from_millis(200));
        world.abort(2);
    }
    ExitCode::SUCCESS
}

fn run_sum(world: &impl Communicator, pool: &Pool, args: &[String]) -> Result<(), String> {
    let n: usize = flag(args, "--elems").unwrap_or(1 << 24);
    let rank = world.rank();
    let mut a = DistArray::<f64>::zeros(world, pool, [n]).map_err(|e| e.to_string())?;
    let offset = a.row_offset() as u64;
    let local = a.block().len();
    a.block_mut()
        .as_slice_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = value(offset + i as u64));
    let killer = (flag::<i32>(args, "--kill-worker-rank") == Some(rank)).then(|| {
        let victim = pool.worker_pids()[0];
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let _ = std::process::Command::new("kill")
                .args(["-9", &victim.to_string()])
                .status();
        })
    });
    // Warm (workers fault in their page tables), then time.
    let slow = killer.is_some();
    let map: fn(ndarray::ArrayView<'_, f64, ndarray::IxDyn>) -> f64 = if slow {
        |c| {
            std::thread::sleep(Duration::from_millis(5));
            c.sum()
        }
    } else {
        |c| c.sum()
    };
    par_reduce(world, pool, &a, map, |x, y| x + y).map_err(|e| format!("{e} [{:?}]", e.kind()))?;
    world.barrier();
    let t = Instant::now();
    let local_sum = pool
        .par_reduce(a.block(), map, |x, y| x + y)
        .map_err(|e| e.to_string())?;
    let local_secs = t.elapsed().as_secs_f64();
    world.barrier();
    let t = Instant::now();
    let sum = par_reduce(world, pool, &a, map, |x, y| x + y)
        .map_err(|e| format!("{e} [{:?}]", e.kind()))?;
    let secs = t.elapsed().as_secs_f64();
    if let Some(k) = killer {
        let _ = k.join();
    }
    // The combining cost: the global time beyond the slowest rank's local reduce.
    let mut locals = vec![0f64; world.size() as usize];
    world.all_gather_into(&local_secs, &mut locals[..]);
    let slowest = locals.iter().copied().fold(0.0, f64::max);
    println!(
        "rank {rank}/{}: rows {}..{}, local sum {local_sum:.6}, local {:.2} GB/s",
        world.size(),
        offset,
        offset as usize + local,
        (local * 8) as f64 / local_secs / 1e9
    );
    if rank == 0 {
        println!(
            "global: {n} f64 in {:.2} ms, {:.2} GB/s; combining (all-gather and fold, beyond the slowest rank) {:.1} us",
            secs * 1e3,
            (n * 8) as f64 / secs / 1e9,
            (secs - slowest).max(0.0) * 1e6
        );
        println!("RESULT sum {sum} bits {:016x}", sum.to_bits());
    }
    Ok(())
}

fn run_npy_sum(world: &impl Communicator, pool: &Pool, args: &[String]) -> Result<(), String> {
    let prefix: String = flag(args, "--prefix").ok_or("npy-sum needs --prefix P")?;
    let path = format!("{prefix}.{}.npy", world.rank());
    // SAFETY: the test writes each rank's file before the job starts and nothing writes it
    // while the job runs.
    let a = unsafe { DistArray::<f64>::from_npy(world, pool, &path) }
        .map_err(|e| format!("{path}: {e}"))?;
    let sum = par_reduce(world, pool, &a, |c| c.sum(), |x, y| x + y)
        .map_err(|e| format!("{e} [{:?}]", e.kind()))?;
    println!(
        "rank {}/{}: {path}: rows {}..{} of shape {:?}",
        world.rank(),
        world.size(),
        a.row_offset(),
        a.row_offset() + a.block().shape()[0],
        a.global_shape()
    );
    if world.rank() == 0 {
        println!("RESULT npy-sum {sum} bits {:016x}", sum.to_bits());
    }
    Ok(())
}

fn run_pi(world: &impl Communicator, pool: &Pool, args: &[String]) -> Result<(), String> {
    let samples: u64 = flag(args, "--samples").unwrap_or(200_000_000);
    let t = Instant::now();
    let e = estimate_pi(world, pool, samples, 42).map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    if world.rank() == 0 {
        println!(
            "global: {samples} samples in {:.2} s, {:.3e} samples/s on {} ranks",
            secs,
            samples as f64 / secs,
            world.size()
        );
        println!(
            "RESULT pi {} bits {:016x} inside {}",
            e.pi,
            e.pi.to_bits(),
            e.inside
        );
    }
    Ok(())
}
