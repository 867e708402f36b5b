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

/// Runs `mpiexec -n ranks shmpar-mpi args...`, killed after 60 s; (success, stdout+stderr, secs).
fn mpiexec(ranks: usize, args: &[&str]) -> (bool, String, f64) {
    let t = Instant::now();
    let mut child = Command::new("mpiexec")
        .args(["-n", &ranks.to_string(), BIN])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpiexec runs (apt-get install mpich)");
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
    for ranks in [1, 2, 3] {
        for workers in ["1", "2"] {
            let (ok, text, _) = mpiexec(
                ranks,
                &["sum", "--elems", &n.to_string(), "--workers", workers],
            );
            assert!(ok, "{ranks} ranks x {workers} workers failed:\n{text}");
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
    let bits: Vec<String> = [1, 2, 3]
        .iter()
        .map(|&r| {
            let (ok, text, _) = mpiexec(r, &["pi", "--samples", "20000000", "--workers", "1"]);
            assert!(ok, "{text}");
            result_bits(&text)
        })
        .collect();
    assert!(bits.windows(2).all(|w| w[0] == w[1]), "{bits:?}");
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
