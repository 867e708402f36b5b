//! The demos' own code, apart from the library: what the `shmpar` command's tour, course
//! demos and bench report use that a program built on shmpar does not need.
//!
//! - [`montecarlo`]: Monte Carlo pi, the course's example, on a pool and across MPI ranks.
//! - [`PthreadMutex`]: the textbook process-shared pthread mutex (not robust), the baseline
//!   that shmpar's [`ShmMutex`](shmpar::ShmMutex) is measured and demonstrated against.
//! - [`pin_to_cpu`]: one CPU per process, to make a race visible.
//! - [`kill_process_group`]: ends a peer the demos started and everything it started.
//!
//! Linux only, like the demos.

pub mod montecarlo;
mod pthread;
mod sys;

pub use pthread::{PthreadMutex, PthreadMutexGuard};

/// CPUs online in the machine, and CPUs this process may run on (its affinity mask).
///
/// ```
/// let (online, allowed) = shmpar_cli::cpus().unwrap();
/// assert!(allowed >= 1 && allowed <= online);
/// ```
pub fn cpus() -> std::io::Result<(usize, usize)> {
    Ok((sys::cpus_online(), sys::cpus_allowed()?))
}

/// Restricts the calling process (or thread) to CPU number `cpu`, e.g. one CPU per child so
/// that they really run at the same time. Fails with `InvalidInput` for a CPU number past
/// what the kernel's CPU set holds, or the OS error for a CPU this process may not use.
///
/// ```
/// let child = shmpar::Process::start(|_: ()| shmpar_cli::pin_to_cpu(0).is_ok(), ())?;
/// assert!(child.join_value()?);
/// # Ok::<(), shmpar::Error>(())
/// ```
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    sys::pin_to_cpu(cpu)
}

/// Sends SIGKILL to every process in process group `group`: a peer that the demos started as
/// the leader of a group of its own (`CommandExt::process_group(0)`), and what it started.
/// Nothing happens once the group is empty, or for group 0 or 1.
///
/// ```
/// use std::os::unix::process::CommandExt;
/// let mut child = std::process::Command::new("sleep").arg("30").process_group(0).spawn()?;
/// shmpar_cli::kill_process_group(child.id());
/// assert!(!child.wait()?.success());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn kill_process_group(group: u32) {
    sys::kill_group(group)
}
