//! `apply_async` without a thread per task: one dispatcher thread per pool gathers the tasks
//! submitted while the pool is busy and runs them together, as one task-style call over all
//! the workers. Tasks of different types share a call: each carries its own runner (a
//! function that knows its argument and result types) and its function, as code offsets.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::run_tasks_with;
use crate::error::{Error, ErrorKind, Result};
use crate::lifecycle::code;
use crate::pool::PoolShared;
use crate::shm::handle::{self, Outgoing};

/// How long an idle dispatcher waits for more work before its thread ends (a later task
/// starts another).
const IDLE: Duration = Duration::from_secs(1);

/// A task of any type: its runner (`code` offset of a [`Runner`]), its function (`code`
/// offset), its serialised argument.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct AnyTask {
    runner: u64,
    user_fn: u64,
    arg: Vec<u8>,
}

/// Runs `user_fn`, a `fn(T) -> R` at this process's address, on a serialised `T`, giving a
/// serialised `R`.
///
/// # Safety
/// `user_fn` must be a `fn(T) -> R` for the `T` and `R` this runner was instantiated for.
type Runner = unsafe fn(user_fn: usize, arg: &[u8]) -> Vec<u8>;

/// What a job's outcome is handed to: its serialised result, or why there is none.
pub(super) type Reply = Box<dyn FnOnce(Result<Vec<u8>>) + Send>;

unsafe fn run_typed<T: DeserializeOwned, R: Serialize>(user_fn: usize, arg: &[u8]) -> Vec<u8> {
    // SAFETY: `task` encoded a `fn(T) -> R` with this runner.
    let f: fn(T) -> R = unsafe { std::mem::transmute(user_fn) };
    handle::clear_reason();
    let arg: T = postcard::from_bytes(arg).unwrap_or_else(|e| {
        panic!(
            "the task could not be decoded in the worker: {}",
            handle::explain(e)
        )
    });
    postcard::to_stdvec(&f(arg))
        .unwrap_or_else(|e| panic!("the task's result could not be serialised: {e}"))
}

/// The task function of the dispatcher's calls: runs one task of any type.
fn run_any(task: AnyTask) -> Vec<u8> {
    // SAFETY: `task` stored the offset of a `Runner` of this executable.
    let runner: Runner = unsafe { std::mem::transmute(code::address(task.runner)) };
    // SAFETY: the runner was instantiated for the function stored beside it.
    unsafe { runner(code::address(task.user_fn), &task.arg) }
}

/// One submitted task and where its result goes.
pub(crate) struct Job {
    task: AnyTask,
    /// The shared objects its argument names.
    handles: Vec<Outgoing>,
    reply: Reply,
    /// The argument itself, kept until its task has ended: while it lives, the objects it
    /// names stay alive in this process too, so the workers learn when they go.
    arg: Box<dyn Send>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

/// The pool's queue of submitted tasks, and whether a dispatcher thread serves it.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    jobs: VecDeque<Job>,
    dispatching: bool,
}

/// Submits `f(arg)`; `reply` gets its serialised result (or why there is none) on the
/// dispatcher. When the task cannot be submitted at all, the error comes back with the unused
/// `reply`, for the caller to answer with.
pub(super) fn submit<T, R>(
    shared: &Arc<PoolShared>,
    f: fn(T) -> R,
    arg: T,
    reply: Reply,
) -> std::result::Result<(), (Error, Reply)>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned,
{
    let method = shared.config().start_method_setting();
    let encoded = crate::pool::Args::encode(&arg, "the task's argument").and_then(|args| {
        let runner = code::offset_for(method, run_typed::<T, R> as Runner as usize)?;
        Ok((args, runner, code::offset_for(method, f as usize)?))
    });
    let (args, runner, user_fn) = match encoded {
        Ok(parts) => parts,
        Err(e) => return Err((e, reply)),
    };
    let job = Job {
        task: AnyTask {
            runner,
            user_fn,
            arg: args.bytes,
        },
        handles: args.handles,
        reply,
        arg: Box::new(arg),
    };
    *shared.pending_async.lock() += 1;
    let mut queue = shared.background.lock();
    queue.jobs.push_back(job);
    shared.background_ready.notify_one();
    if !queue.dispatching {
        queue.dispatching = true;
        let for_thread = Arc::clone(shared);
        let started = std::thread::Builder::new()
            .name("shmpar-dispatch".into())
            .spawn(move || dispatch(&for_thread));
        if let Err(e) = started {
            queue.dispatching = false;
            let job = queue.jobs.pop_back();
            drop(queue);
            if let Some(job) = job {
                let err = Error::io("could not start the apply_async dispatcher", e);
                finish(shared, job, Err(err));
            }
        }
    }
    Ok(())
}

/// The same error for every job of a batch.
fn all<T>(replies: &[T], error: Error) -> Vec<Result<Vec<u8>>> {
    (0..replies.len()).map(|_| Err(error.clone())).collect()
}

/// Hands a job its result and counts it done. A reply that panics (the user's callback or
/// `Deserialize`) costs only its own answer; the count goes down whatever happens.
fn finish(shared: &PoolShared, job: Job, result: Result<Vec<u8>>) {
    let Job { reply, arg, .. } = job;
    drop_quietly(arg);
    answer(shared, reply, result);
}

/// Calls one reply, catching its panic, and counts its job done.
fn answer(shared: &PoolShared, reply: Reply, result: Result<Vec<u8>>) {
    let _ = panic::catch_unwind(AssertUnwindSafe(move || reply(result)));
    *shared.pending_async.lock() -= 1;
    shared.async_done.notify_all();
}

/// Drops a job's argument; a `Drop` of the user's that panics must not stop the dispatcher.
fn drop_quietly<T>(value: T) {
    let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(value)));
}

thread_local! {
    /// On a dispatcher thread, where callbacks run, the pool it serves ([`pool_id`]): waiting
    /// there for one of that pool's background results would wait for itself.
    static ON_DISPATCHER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Names a pool for [`not_on_dispatcher`] (its shared state's address, never 0).
pub(crate) fn pool_id(shared: &Arc<PoolShared>) -> usize {
    Arc::as_ptr(shared) as usize
}

/// Fails with [`ErrorKind::InvalidInput`] on pool `pool`'s dispatcher thread (inside one of
/// its callbacks), where waiting for one of its background results would never end.
pub(crate) fn not_on_dispatcher(pool: usize, what: &str) -> Result<()> {
    if ON_DISPATCHER.with(|d| d.get()) == pool {
        return Err(Error::invalid(format!(
            "{what} cannot wait inside a callback: it runs on the thread that delivers the results"
        )));
    }
    Ok(())
}

/// The dispatcher: runs every queued job, a batch per call, until the queue has stayed empty
/// for `IDLE`; after the pool's shutdown, cancels what is left.
fn dispatch(shared: &Arc<PoolShared>) {
    ON_DISPATCHER.with(|d| d.set(pool_id(shared)));
    loop {
        let jobs: Vec<Job> = {
            let mut queue = shared.background.lock();
            if queue.jobs.is_empty() {
                let idle = shared.background_ready.wait_for(&mut queue, IDLE);
                if idle.timed_out() && queue.jobs.is_empty() {
                    queue.dispatching = false;
                    return;
                }
            }
            queue.jobs.drain(..).collect()
        };
        if jobs.is_empty() {
            continue;
        }
        let mut tasks = Vec::with_capacity(jobs.len());
        let mut handles = Vec::new();
        let mut replies = Vec::with_capacity(jobs.len());
        let mut args = Vec::with_capacity(jobs.len());
        for job in jobs {
            tasks.push(job.task);
            handles.extend(job.handles);
            replies.push(job.reply);
            args.push(job.arg);
        }
        // One call for the batch, spread over every worker; each task's outcome is its own.
        // Nothing that happens here may leave a job unanswered: a panic is caught too.
        let outcomes = panic::catch_unwind(AssertUnwindSafe(|| {
            run_tasks_with(shared, &tasks, run_any, 1, 0, handles)
        }));
        let results: Vec<Result<Vec<u8>>> = match outcomes {
            Ok(Ok(v)) if v.len() == replies.len() => v
                .into_iter()
                // Each job is a task of its own: its error names task 0, as a lone task.
                .map(|(r, _)| r.map_err(|e| e.with_task(0)))
                .collect(),
            Ok(Ok(_)) => all(
                &replies,
                Error::new(ErrorKind::WorkerDied, "a task was lost"),
            ),
            Ok(Err(e)) => all(&replies, e),
            Err(payload) => all(
                &replies,
                Error::new(
                    ErrorKind::WorkerPanicked,
                    format!(
                        "the apply_async dispatcher panicked: {}",
                        crate::pool::chunk::panic_message(&*payload)
                    ),
                ),
            ),
        };
        // The workers are done with the arguments' objects: they may go before the answers.
        drop_quietly(args);
        for (reply, result) in replies.into_iter().zip(results) {
            answer(shared, reply, result);
        }
    }
}
