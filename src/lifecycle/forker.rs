//! One long-lived thread that does every fork and exec of this process.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, not the process. A
//! pool made on a short-lived thread (a test, the first caller of the default pool) would lose
//! its workers (or its fork server) when that thread returned. Forking from a thread that lives
//! as long as the process ties the children's lives to the process: they are SIGKILLed when it
//! dies, even by SIGKILL. The thread's stack (16 MiB, touched lazily) is the stack that workers
//! forked directly ([`StartMethod::Fork`](super::StartMethod::Fork)) run user code on.

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender};

type Job = Box<dyn FnOnce() + Send>;

static FORKER: OnceLock<Sender<Job>> = OnceLock::new();

const STACK: usize = 16 << 20;

fn forker() -> &'static Sender<Job> {
    FORKER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        // If the thread cannot start, `rx` is dropped and every request fails cleanly.
        let _ = std::thread::Builder::new()
            .name("shmpar-forker".into())
            .stack_size(STACK)
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    // A panicking job must not end this thread: every process it started would
                    // be SIGKILLed with it (their parent-death signal follows this thread).
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        tx
    })
}

/// Runs `job` on the forker thread and returns its result. A job that forks must leave the
/// child only through `_exit` (the child never returns into this function).
pub(crate) fn run<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let (reply, answer) = mpsc::sync_channel(1);
    forker()
        .send(Box::new(move || {
            let _ = reply.send(job());
        }))
        .map_err(|_| io::Error::other("the shmpar fork thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the shmpar fork thread did not answer"))
}
