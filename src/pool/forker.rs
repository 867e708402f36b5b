//! One long-lived thread that does every fork of a worker.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, not the process. A
//! pool made on a short-lived thread (a test, the first caller of the default pool) would lose
//! its workers when that thread returned. Forking from a thread that lives as long as the
//! process ties the workers' lives to the process: they are SIGKILLed when it dies, even by
//! SIGKILL. The thread's stack (16 MiB, touched lazily) is the stack workers run user code on.

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender, SyncSender};

use super::worker::{WorkerStart, worker_main};
use crate::shm::registry;
use crate::sys::{self, Forked};

/// Called in the parent, with the region registry locked, right after the fork: the new
/// worker's pid and the first region id it did *not* inherit.
pub(crate) type OnForked = Box<dyn FnOnce(i32, u64) + Send>;

struct Request {
    start: WorkerStart,
    on_forked: OnForked,
    reply: SyncSender<io::Result<i32>>,
}

static FORKER: OnceLock<Sender<Request>> = OnceLock::new();

const STACK: usize = 16 << 20;

fn forker() -> &'static Sender<Request> {
    FORKER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        // If the thread cannot start, `rx` is dropped and every request fails cleanly.
        let _ = std::thread::Builder::new()
            .name("shmpar-forker".into())
            .stack_size(STACK)
            .spawn(move || {
                while let Ok(req) = rx.recv() {
                    serve(req);
                }
            });
        tx
    })
}

fn serve(req: Request) {
    let parent = sys::pid();
    let reg = registry();
    let fork_seq = reg.next_id();
    // SAFETY: the child runs only `worker_main`, which follows fork's rules (no lock another
    // thread could hold, leaves through `_exit`).
    match unsafe { sys::fork() } {
        Ok(Forked::Child) => worker_main(WorkerStart {
            parent,
            fork_seq,
            ..req.start
        }),
        Ok(Forked::Parent(pid)) => {
            (req.on_forked)(pid, fork_seq);
            drop(reg);
            let _ = req.reply.send(Ok(pid));
        }
        Err(e) => {
            drop(reg);
            let _ = req.reply.send(Err(e));
        }
    }
}

/// Forks a worker from the forker thread and returns its pid once `on_forked` has run.
pub(crate) fn spawn_worker(start: WorkerStart, on_forked: OnForked) -> io::Result<i32> {
    let (reply, answer) = mpsc::sync_channel(1);
    forker()
        .send(Request {
            start,
            on_forked,
            reply,
        })
        .map_err(|_| io::Error::other("the shmpar fork thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the shmpar fork thread did not answer"))?
}
