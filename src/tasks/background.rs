//! `apply_async` without a thread per task: one dispatcher thread per pool gathers the tasks
//! submitted while the pool is idle and runs them together, as one task-style call over all
//! the workers; tasks submitted while that call runs join it as new chunks (a [`Feed`]), so
//! they start on the first idle worker. Tasks of different types share a call: each carries
//! its own runner (a function that knows its argument and result types) and its function, as
//! code offsets.
//!
//! A job is answered as soon as its chunk has finished, while the call still runs (the
//! engine's early hand-out), except a job whose reply is a user's callback: that one runs when
//! the call is over, where it may call the pool. `imap` feeds its window through here too.
//!
//! Two kinds of job wait for the next call instead of joining a running one: a job whose
//! argument names a shared object (workers receive new objects' descriptors between calls
//! only), and a job answered by a callback (a long call would hold its callback back).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::engine::{Feed, Run, run_tasks_with};
use crate::error::{Error, ErrorKind, Result};
use crate::lifecycle::code;
use crate::pool::PoolShared;
use crate::shm::handle::{self, Outgoing};

/// How long an idle dispatcher waits for more work before its thread ends (a later task
/// starts another).
const IDLE: Duration = Duration::from_secs(1);

/// Fewer jobs than workers: how long the dispatcher waits for the next one to arrive before it
/// starts the call (a loop of `apply_async` calls lands in one call, not the first task alone
/// in a call of its own, the others queued behind it), and the most it waits in all.
const GATHER: Duration = Duration::from_micros(100);
const GATHER_MOST: Duration = Duration::from_millis(2);

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

/// How a job runs and answers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Terms {
    /// Tasks per chunk; a batch runs at the smallest of its jobs'.
    pub(super) chunksize: usize,
    /// Times the task may run again after its worker died in it.
    pub(super) retries: u32,
    /// Answer as soon as the task's chunk has finished, while the batch's call still runs.
    /// Only for replies that merely pass the result on (a channel): a user's callback waits
    /// for the call's end, where it may call the pool.
    pub(super) early: bool,
}

impl Terms {
    /// One task, answered on a channel: `apply_async`, `map_async`.
    pub(super) const SINGLE: Terms = Terms {
        chunksize: 1,
        retries: 0,
        early: true,
    };
}

/// One submitted task and where its result goes.
pub(crate) struct Job {
    task: AnyTask,
    /// The shared objects its argument names.
    handles: Vec<Outgoing>,
    reply: Reply,
    terms: Terms,
    /// The argument itself, kept until the dispatcher's call that ran it is over (and any call
    /// that ran its tasks again): while it lives, the objects it names stay alive in this
    /// process too, so the workers learn when they go.
    arg: Box<dyn Send>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("task", &self.task)
            .field("terms", &self.terms)
            .finish_non_exhaustive()
    }
}

/// The pool's queue of submitted tasks, and whether a dispatcher thread serves it.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    jobs: VecDeque<Job>,
    dispatching: bool,
}

/// The job for `f(arg)`; `reply` gets its serialised result (or why there is none) on the
/// dispatcher. When the task cannot be encoded, the error comes back with the unused `reply`,
/// for the caller to answer with.
pub(super) fn job<T, R>(
    shared: &PoolShared,
    f: fn(T) -> R,
    arg: T,
    terms: Terms,
    reply: Reply,
) -> std::result::Result<Job, (Error, Reply)>
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
    Ok(Job {
        task: AnyTask {
            runner,
            user_fn,
            arg: args.bytes,
        },
        handles: args.handles,
        reply,
        terms,
        arg: Box::new(arg),
    })
}

/// Submits one task (see [`job`] and [`enqueue`]).
pub(super) fn submit<T, R>(
    shared: &Arc<PoolShared>,
    f: fn(T) -> R,
    arg: T,
    terms: Terms,
    reply: Reply,
) -> std::result::Result<(), (Error, Reply)>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned,
{
    enqueue(shared, vec![job(shared, f, arg, terms, reply)?]);
    Ok(())
}

/// Queues `jobs` together (a dispatcher that wakes takes them all into one call) and starts
/// the dispatcher if none serves the queue. Every job is answered, exactly once.
pub(super) fn enqueue(shared: &Arc<PoolShared>, jobs: Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    if !shared.owned_here() {
        // A forked copy: the queue, its dispatcher and the control block are the owner's
        // (its locks may even have been copied held). Answer without touching them.
        let err = Error::new(
            ErrorKind::Unsupported,
            "this pool belongs to the process that built it; a forked copy cannot use it \
             (build a pool in this process)",
        );
        for job in jobs {
            let Job { reply, arg, .. } = job;
            drop_quietly(arg);
            let err = err.clone();
            let _ = panic::catch_unwind(AssertUnwindSafe(move || reply(Err(err))));
        }
        return;
    }
    *shared.pending_async.lock() += jobs.len();
    let mut queue = shared.background.lock();
    queue.jobs.extend(jobs);
    // ORDERING: SeqCst, before `nudge_caller` reads whether the dispatcher sleeps inside a
    // call; it stores that, then reads this (see `Feed::has_more` below).
    shared.submitted.fetch_add(1, Ordering::SeqCst);
    shared.nudge_caller();
    shared.background_ready.notify_one();
    if !queue.dispatching {
        queue.dispatching = true;
        let for_thread = Arc::clone(shared);
        let started = std::thread::Builder::new()
            .name("shmpar-dispatch".into())
            .spawn(move || dispatch(&for_thread));
        if let Err(e) = started {
            queue.dispatching = false;
            let jobs: Vec<Job> = queue.jobs.drain(..).collect();
            drop(queue);
            let err = Error::io("could not start the apply_async dispatcher", e);
            for job in jobs {
                finish(shared, job, Err(err.clone()));
            }
        }
    }
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
    let mut seen;
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
            let gathering = Instant::now();
            while queue.jobs.len() < shared.workers_wanted && gathering.elapsed() < GATHER_MOST {
                let before = queue.jobs.len();
                shared.background_ready.wait_for(&mut queue, GATHER);
                if queue.jobs.len() == before {
                    break;
                }
            }
            // ORDERING: SeqCst, see `QueueFeed::has_more`; read under the queue's lock, under
            // which `enqueue` bumps it, so every job queued after the drain bumps it again.
            seen = shared.submitted.load(Ordering::SeqCst);
            queue.jobs.drain(..).collect()
        };
        if jobs.is_empty() {
            continue;
        }
        let chunksize = jobs.iter().map(|j| j.terms.chunksize).min().unwrap_or(1);
        let mut tasks = Vec::with_capacity(jobs.len());
        let mut handles = Vec::new();
        let mut book = Book::default();
        for job in jobs {
            tasks.push(job.task);
            handles.extend(job.handles);
            book.add(job.reply, job.terms, job.arg);
        }
        let book = RefCell::new(book);
        let mut feed = QueueFeed {
            shared,
            book: &book,
            seen,
        };
        // One call for the batch, spread over every worker; each task's outcome is its own.
        // Tasks submitted while it runs may join it. Nothing that happens here may leave a job
        // unanswered: a panic is caught too.
        let how = Run {
            chunksize,
            retries: &|i| book.borrow().terms[i].retries,
            // Every chunk is handed out as it finishes: channel replies answer at once,
            // callbacks wait in `late` for the call's end.
            early: true,
        };
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let feed: Option<&mut dyn Feed<AnyTask>> = Some(&mut feed);
            run_tasks_with(shared, &tasks, run_any, &how, handles, feed, &mut |i, r| {
                // Each job is a task of its own: its error names task 0, as a lone task.
                let r = r.map_err(|e| e.with_task(0));
                let mut book = book.borrow_mut();
                if book.terms[i].early {
                    if let Some(reply) = book.replies[i].take() {
                        drop(book);
                        answer(shared, reply, r);
                    }
                } else {
                    book.late.push((i, r));
                }
            })
        }));
        let failed = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(payload) => Some(Error::new(
                ErrorKind::WorkerPanicked,
                format!(
                    "the apply_async dispatcher panicked: {}",
                    crate::pool::chunk::panic_message(&*payload)
                ),
            )),
        };
        let Book {
            mut replies,
            args,
            late,
            ..
        } = book.into_inner();
        // The workers are done with the arguments' objects: they may go before the answers.
        drop_quietly(args);
        for (i, result) in late {
            if let Some(reply) = replies[i].take() {
                answer(shared, reply, result);
            }
        }
        // Whatever has no outcome yet (the call could not run, or was cut short) gets one.
        let lost = failed.unwrap_or_else(|| Error::new(ErrorKind::WorkerDied, "a task was lost"));
        for reply in replies.into_iter().flatten() {
            answer(shared, reply, Err(lost.clone()));
        }
    }
}

/// The jobs of one dispatcher call, by task index: the first batch, then the ones that joined.
#[derive(Default)]
struct Book {
    replies: Vec<Option<Reply>>,
    terms: Vec<Terms>,
    args: Vec<Box<dyn Send>>,
    /// Outcomes of finished jobs answered by a callback, which runs after the call.
    late: Vec<(usize, Result<Vec<u8>>)>,
}

impl Book {
    fn add(&mut self, reply: Reply, terms: Terms, arg: Box<dyn Send>) {
        self.replies.push(Some(reply));
        self.terms.push(terms);
        self.args.push(arg);
    }
}

/// The queue, as a [`Feed`] of the dispatcher's running call: jobs submitted meanwhile join
/// it, in queue order, up to the first that cannot: one whose argument names a shared object
/// (workers learn of a new object only between calls) or one answered by a user's callback
/// (which runs after the call); that one and those behind it wait for the next call. Once a
/// job of the call with a callback has finished, nothing more joins, so that the call ends
/// and the callback runs.
struct QueueFeed<'a> {
    shared: &'a Arc<PoolShared>,
    book: &'a RefCell<Book>,
    /// `submitted` when the queue was last looked at.
    seen: u64,
}

/// A task's serialised size is at most its argument's plus three varints (two code offsets
/// and the argument's length).
const TASK_OVERHEAD: usize = 30;

impl Feed<AnyTask> for QueueFeed<'_> {
    fn has_more(&self) -> bool {
        // ORDERING: SeqCst: the waiting caller announces itself on its bell then calls this; a
        // submitter bumps `submitted` then rings the bell (`enqueue`). One of the two
        // sees the other, so a task submitted as the dispatcher goes to sleep wakes it.
        self.shared.submitted.load(Ordering::SeqCst) != self.seen
            && self.book.try_borrow().is_ok_and(|b| b.late.is_empty())
    }

    fn take(
        &mut self,
        max_tasks: usize,
        max_chunks: usize,
        max_bytes: usize,
    ) -> (Vec<AnyTask>, usize) {
        let mut queue = self.shared.background.lock();
        // ORDERING: SeqCst, as in `has_more`; read under the queue's lock (see `dispatch`).
        self.seen = self.shared.submitted.load(Ordering::SeqCst);
        let (mut tasks, mut chunksize, mut bytes) = (Vec::new(), usize::MAX, 0);
        let mut book = self.book.borrow_mut();
        while let Some(job) = queue.jobs.front() {
            let size = job.task.arg.len() + TASK_OVERHEAD;
            let cs = chunksize.min(job.terms.chunksize.max(1));
            let fits = tasks.len() < max_tasks
                && bytes + size <= max_bytes
                && (tasks.len() + 1).div_ceil(cs) <= max_chunks;
            if !fits || !job.handles.is_empty() || !job.terms.early {
                break;
            }
            let job = queue.jobs.pop_front().expect("just looked");
            chunksize = cs;
            bytes += size;
            tasks.push(job.task);
            book.add(job.reply, job.terms, job.arg);
        }
        (tasks, chunksize.min(max_tasks.max(1)))
    }
}
