//! The reduce across ranks under `mpiexec` (feature `mpi`): bitwise the one-machine result for
//! 1, 2 and 3 ranks x 1 and 2 workers; pi identical for any rank count; a panicking rank ends
//! the job non-zero within 10 s leaving no process behind; a rank whose worker is SIGKILLed
//! reports WorkerDied and the job ends.
#![cfg(feature = "mpi")]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ndarray::Ix1;
use shmpar::{Pool, SharedArray};

const BIN: &str = env!("CARGO_BIN_EXE_shmpar-mpi");

/// One MPI job at a time: they share two cores, and the leftover checks look for any process
/// of this binary.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The launcher: `$SHMPAR_MPIEXEC` (CI runs these tests with MPICH's `mpiexec.mpich` and with
/// Open MPI's `mpiexec.openmpi`, each with and without its network transport forced), or
/// `mpiexec`. The transport is chosen by the MPI's own environment (`MPIR_CVAR_NOLOCAL=1` for
/// MPICH, `OMPI_MCA_btl=tcp,self` for Open MPI), which the launcher passes to the ranks.
fn launcher() -> String {
    std::env::var("SHMPAR_MPIEXEC").unwrap_or_else(|_| "mpiexec".into())
}

/// The rank counts to try: `$SHMPAR_MPI_RANKS` (comma-separated), or 1, 2 and 3 (fewer for a
/// launcher or transport that cannot run three ranks on this host).
fn rank_counts() -> Vec<usize> {
    std::env::var("SHMPAR_MPI_RANKS")
        .ok()
        .map(|v| {
            v.split(',')
                .map(|r| r.trim().parse().expect("SHMPAR_MPI_RANKS: numbers"))
                .collect()
        })
        .unwrap_or_else(|| vec![1, 2, 3])
}

/// Runs `mpiexec -n ranks shmpar-mpi args...`, killed after 60 s; (success, stdout+stderr, secs).
fn mpiexec(ranks: usize, args: &[&str]) -> (bool, String, f64) {
    let t = Instant::now();
    let mut child = Command::new(launcher())
        .args(["-n", &ranks.to_string(), BIN])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not run ({e}): apt-get install mpich", launcher()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mpiexec -n {ranks} {args:?} did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (status.success(), text, t.elapsed().as_secs_f64())
}

/// Checks that the job had `ranks` ranks of one MPI (every rank prints "MPI rank r of N:
/// <library>"), and, when `$SHMPAR_MPI_IMPL` names one ("MPICH" or "Open MPI"), that it is that
/// one: a binary built against one MPI and started by the other's launcher would run N jobs
/// of one rank each.
fn check_ranks(text: &str, ranks: usize) {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("MPI rank "))
        .collect();
    assert_eq!(lines.len(), ranks, "{text}");
    for l in &lines {
        assert!(l.contains(&format!(" of {ranks}: ")), "{l}\n{text}");
        if let Ok(want) = std::env::var("SHMPAR_MPI_IMPL") {
            assert!(
                l.contains(&want),
                "built against another MPI than {want}: {l}"
            );
        }
    }
}

fn result_bits(text: &str) -> String {
    text.lines()
        .find_map(|l| {
            l.split_once(" bits ")
                .filter(|_| l.starts_with("RESULT"))
                .map(|(_, b)| b.split(' ').next().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("no RESULT line in:\n{text}"))
}

fn value(i: u64) -> f64 {
    let mut h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 29;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn sum_is_bitwise_the_one_machine_result() {
    let _one_at_a_time = serial();
    let _w = common::watchdog(300, "mpi sum");
    let n = 3_000_007u64;
    let mut a = SharedArray::<f64, Ix1>::zeros(n as usize).unwrap();
    a.as_slice_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = value(i as u64));
    let one_machine = Pool::new(2)
        .unwrap()
        .par_reduce(&a, |c| c.sum(), |x, y| x + y)
        .unwrap();
    let expected = format!("{:016x}", one_machine.to_bits());
    for ranks in rank_counts() {
        for workers in ["1", "2"] {
            let (ok, text, _) = mpiexec(
                ranks,
                &["sum", "--elems", &n.to_string(), "--workers", workers],
            );
            assert!(ok, "{ranks} ranks x {workers} workers failed:\n{text}");
            check_ranks(&text, ranks);
            assert_eq!(
                result_bits(&text),
                expected,
                "{ranks} ranks x {workers} workers:\n{text}"
            );
        }
    }
}

#[test]
fn pi_is_identical_for_any_rank_count() {
    let _one_at_a_time = serial();
    let _w = common::watchdog(300, "mpi pi");
    let bits: Vec<String> = rank_counts()
        .into_iter()
        .map(|r| {
            let (ok, text, _) = mpiexec(r, &["pi", "--samples", "20000000", "--workers", "1"]);
            assert!(ok, "{text}");
            check_ranks(&text, r);
            result_bits(&text)
        })
        .collect();
    assert!(bits.windows(2).all(|w| w[0] == w[1]), "{bits:?}");
}

/// `DistArray::from_npy` under mpiexec: a 2-D f64 array split by rows into one `.npy` per
/// rank, blocks of unequal length; the distributed sum is the whole array's (integer values,
/// so exact in any order) and every rank reports the global shape.
#[test]
fn from_npy_sums_per_rank_files() {
    let _one_at_a_time = serial();
    let _w = common::watchdog(300, "mpi from_npy");
    let dir = std::env::temp_dir().join(format!("shmpar-mpi-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (rows, cols) = (100_003usize, 3usize);
    let expected = (0..(rows * cols) as u64).sum::<u64>() as f64;
    for ranks in rank_counts() {
        let prefix = dir.join(format!("part{ranks}"));
        // Rank r holds rows [cut(r), cut(r + 1)), uneven on purpose.
        let cut = |r: usize| rows * r * r / (ranks * ranks);
        for r in 0..ranks {
            let (lo, hi) = (cut(r), cut(r + 1));
            let mut block = common::create_npy::<f64, ndarray::Ix2, _>(
                format!("{}.{r}.npy", prefix.display()),
                (hi - lo, cols),
            )
            .unwrap();
            for (i, x) in block.as_slice_mut().iter_mut().enumerate() {
                *x = (lo * cols + i) as f64;
            }
        }
        let (ok, text, _) = mpiexec(
            ranks,
            &[
                "npy-sum",
                "--prefix",
                prefix.to_str().unwrap(),
                "--workers",
                "1",
            ],
        );
        assert!(ok, "{ranks} ranks:\n{text}");
        check_ranks(&text, ranks);
        assert_eq!(
            result_bits(&text),
            format!("{:016x}", expected.to_bits()),
            "{ranks} ranks:\n{text}"
        );
        assert_eq!(
            text.matches(&format!("of shape [{rows}, {cols}]")).count(),
            ranks,
            "{text}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Processes of the binary still running (zombies excluded).
fn leftovers() -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", BIN])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    out.split_whitespace()
        .filter(|p| !common::is_gone(p.parse().unwrap_or(0)))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_panicking_rank_ends_the_job_and_leaves_nothing() {
    let _one_at_a_time = serial();
    let _w = common::watchdog(120, "mpi panic");
    let (ok, text, secs) = mpiexec(2, &["sum", "--elems", "1000000", "--panic-rank", "1"]);
    assert!(!ok, "the job should fail:\n{text}");
    assert!(secs < 10.0, "took {secs:.1} s");
    assert!(text.contains("panics on purpose"), "{text}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(leftovers().is_empty(), "left behind: {:?}", leftovers());
}

#[test]
fn a_killed_worker_is_reported_and_the_job_ends() {
    let _one_at_a_time = serial();
    let _w = common::watchdog(120, "mpi worker death");
    let (ok, text, secs) = mpiexec(
        2,
        &[
            "sum",
            "--elems",
            "4000000",
            "--workers",
            "2",
            "--kill-worker-rank",
            "1",
        ],
    );
    assert!(!ok, "the job should fail:\n{text}");
    assert!(text.contains("WorkerDied"), "{text}");
    assert!(secs < 30.0);
    std::thread::sleep(Duration::from_millis(500));
    assert!(leftovers().is_empty(), "left behind: {:?}", leftovers());
}
