//! The `multiprocessing.Pool` API on shmpar's workers: `map`, `imap`, `imap_unordered`,
//! `apply_async`, `apply_async_callback`, `map_async`.
//!
//! Tasks and results are serde types. The inputs of a batch are serialised into one shared
//! region that the workers map once and keep; each worker serialises each task's outcome into
//! its result arena and publishes it *per task*, so when a worker dies the tasks it finished
//! keep their results, the task it was running fails alone (or is retried), and the tasks it
//! had not started run elsewhere.

mod background;
mod engine;
mod options;
mod wire;

pub(crate) use background::Queue as BackgroundQueue;
use engine::run_tasks;
pub use options::MapOptions;

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Pool;
use crate::error::{Error, ErrorKind, Result};
use crate::pool::chunk::panic_message;

/// The error in one task's slot of [`Pool::map`] and friends: an [`Error`] whose
/// [`task`](Error::task) is the task's index in the input.
///
/// ```
/// let pool = shmpar::Pool::new(1)?;
/// let out: Vec<Result<u8, shmpar::TaskError>> = pool.map(vec![1u8, 0], |x| 1 / x)?;
/// assert_eq!(out[1].as_ref().unwrap_err().task(), Some(1));
/// # Ok::<(), shmpar::Error>(())
/// ```
pub type TaskError = Error;

/// A task's function: a function pointer, valid in the workers (see
/// [`par_reduce`](Pool::par_reduce) for why it cannot capture).
type TaskFn<T, R> = fn(T) -> R;

/// What a worker reports for one task.
#[derive(Serialize, Deserialize)]
enum Outcome<R> {
    Ok(R),
    Panicked(String),
}

impl Pool {
    /// Runs `f` on every item in the workers and returns the results in input order (Python's
    /// `Pool.map`). One task failing (a panic, or its worker dying) gives an error in that
    /// task's slot; every other task still returns its result, and the pool serves the next
    /// call. The outer `Result` fails only if the pool itself cannot run (no worker could start).
    ///
    /// There is no separate `starmap`: Python's `starmap(f, [(a, b), ...])` is a `map` over
    /// tuples whose closure takes the tuple apart, as in the second example. `f` cannot capture
    /// (see [`par_reduce`](Pool::par_reduce) for why); what it needs goes in the items.
    ///
    /// ```
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = shmpar::Pool::new(2)?;
    /// let out = pool.map(0..10u32, |x| 100 / x)?; // task 0 divides by zero
    /// assert!(out[0].is_err());
    /// assert_eq!(out[1].as_ref().ok(), Some(&100));
    /// assert_eq!(out[9].as_ref().ok(), Some(&11));
    ///
    /// // Python's starmap: several arguments per task, as a tuple.
    /// let powers = pool.try_map(vec![(2u64, 10u32), (3, 4)], |(base, exp)| base.pow(exp))?;
    /// assert_eq!(powers, vec![1024, 81]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn map<T, R>(
        &self,
        items: impl IntoIterator<Item = T>,
        f: TaskFn<T, R>,
    ) -> Result<Vec<Result<R>>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map_with(items, f, &MapOptions::new())
    }

    /// Like [`map`](Pool::map), but all or nothing (joblib's `Parallel`): every result in
    /// input order, or the first failure in input order. Every task runs either way; a failed
    /// task does not stop the others.
    ///
    /// ```
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = shmpar::Pool::new(2)?;
    /// assert_eq!(pool.try_map(1..5u32, |x| x * 10)?, [10, 20, 30, 40]);
    /// let err = pool.try_map(0..5u32, |x| 100 / x).unwrap_err();
    /// assert_eq!((err.kind(), err.task()), (shmpar::ErrorKind::WorkerPanicked, Some(0)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_map<T, R>(
        &self,
        items: impl IntoIterator<Item = T>,
        f: TaskFn<T, R>,
    ) -> Result<Vec<R>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map(items, f)?.into_iter().collect()
    }

    /// [`map`](Pool::map) with options: chunk size, retries of idempotent tasks.
    ///
    /// # Result space
    /// Each worker keeps a call's results in its result space
    /// ([`PoolBuilder::result_bytes`](crate::PoolBuilder::result_bytes)). When it fills, the
    /// tasks not yet done run again in a later round of the same `map`, so no result is lost
    /// for room; the task whose result did not fit has run once already and runs again (give
    /// tasks with side effects room enough, or make them idempotent). Only a result larger
    /// than the whole space fails, with
    /// [`ErrorKind::ResultTooLarge`](crate::ErrorKind::ResultTooLarge).
    ///
    /// ```
    /// use shmpar::MapOptions;
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = shmpar::Pool::new(2)?;
    /// let squares = pool.map_with(0..1000u64, |x| x * x, &MapOptions::new().chunksize(50))?;
    /// assert_eq!(*squares[999].as_ref().unwrap(), 998_001);
    /// # Ok(())
    /// # }
    /// ```
    pub fn map_with<T, R>(
        &self,
        items: impl IntoIterator<Item = T>,
        f: TaskFn<T, R>,
        options: &MapOptions,
    ) -> Result<Vec<Result<R>>>
    where
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let items: Vec<T> = items.into_iter().collect();
        let chunksize = options.chunksize_for(items.len(), self.workers());
        run_tasks(
            self.shared(),
            &items,
            f,
            chunksize,
            options.retries_setting(),
        )
    }

    /// A lazy [`map`](Pool::map) (Python's `imap`): each result comes, in input order, as soon
    /// as its task and every task before it have finished, while later tasks still run. The
    /// input is read through a sliding window, at most `read_ahead` items (see
    /// [`MapOptions::read_ahead`]) beyond the results taken, so an endless iterator works.
    ///
    /// The tasks run in the background on the pool's dispatcher, alongside
    /// [`apply_async`](Pool::apply_async)'s, so the items must be `Send + 'static`. A panic in
    /// the input iterator reaches the caller after every result from before it. As each
    /// result is taken the window refills, and the new tasks join the dispatcher's running
    /// call, so a slow task holds back only the results after it, never the free workers;
    /// items that name a shared object wait for the next call (see
    /// [`apply_async`](Pool::apply_async)).
    ///
    /// ```
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = shmpar::Pool::new(2)?;
    /// let first: Vec<u64> = pool
    ///     .imap(0u64.., |x| x * 2) // endless input
    ///     .take(5)
    ///     .map(|r| r.unwrap())
    ///     .collect();
    /// assert_eq!(first, [0, 2, 4, 6, 8]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn imap<I, T, R>(&self, items: I, f: TaskFn<T, R>) -> Imap<'_, I::IntoIter, T, R>
    where
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
    {
        self.imap_with(items, f, &MapOptions::new().chunksize(1))
    }

    /// [`imap`](Pool::imap) with options.
    ///
    /// ```
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = shmpar::Pool::new(2)?;
    /// let opts = shmpar::MapOptions::new().chunksize(4).read_ahead(64);
    /// let n = pool.imap_with(0..1000u32, |x| x + 1, &opts).filter(|r| r.is_ok()).count();
    /// assert_eq!(n, 1000);
    /// # Ok(())
    /// # }
    /// ```
    pub fn imap_with<I, T, R>(
        &self,
        items: I,
        f: TaskFn<T, R>,
        options: &MapOptions,
    ) -> Imap<'_, I::IntoIter, T, R>
    where
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
    {
        Imap::new(self, items.into_iter(), f, options, false)
    }

    /// Like [`imap`](Pool::imap), but the results come in the order the tasks finished, not
    /// the input order; an error still names its input index ([`Error::task`]). Every result
    /// comes exactly once.
    ///
    /// ```
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = shmpar::Pool::new(2)?;
    /// let mut got: Vec<u32> = pool.imap_unordered(0..100u32, |x| x).map(|r| r.unwrap()).collect();
    /// got.sort();
    /// assert_eq!(got, (0..100).collect::<Vec<_>>());
    /// # Ok(())
    /// # }
    /// ```
    pub fn imap_unordered<I, T, R>(&self, items: I, f: TaskFn<T, R>) -> Imap<'_, I::IntoIter, T, R>
    where
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
    {
        self.imap_unordered_with(items, f, &MapOptions::new().chunksize(1))
    }

    /// [`imap_unordered`](Pool::imap_unordered) with options: a small
    /// [`read_ahead`](MapOptions::read_ahead) keeps few items in flight, and the window
    /// refills as each result is taken, while slower tasks still run.
    ///
    /// ```
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = shmpar::Pool::new(2)?;
    /// let opts = shmpar::MapOptions::new().read_ahead(4);
    /// let mut got: Vec<u32> = pool
    ///     .imap_unordered_with(0..20u32, |x| x * x, &opts)
    ///     .map(|r| r.unwrap())
    ///     .collect();
    /// got.sort();
    /// assert_eq!(got, (0..20).map(|x| x * x).collect::<Vec<_>>());
    /// # Ok(())
    /// # }
    /// ```
    pub fn imap_unordered_with<I, T, R>(
        &self,
        items: I,
        f: TaskFn<T, R>,
        options: &MapOptions,
    ) -> Imap<'_, I::IntoIter, T, R>
    where
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
    {
        Imap::new(self, items.into_iter(), f, options, true)
    }

    /// Runs one task in the background and returns a handle to its result (Python's
    /// `apply_async`). Tasks submitted while the pool is idle are gathered and run together,
    /// spread over every worker, by one dispatcher thread per pool (not a thread per task);
    /// tasks submitted while the dispatcher's call runs join it and start on the first free
    /// worker. Two kinds wait for the next call instead: a task whose argument names a shared
    /// object (the workers receive new objects between calls), and one answered by a callback
    /// ([`apply_async_callback`](Pool::apply_async_callback)). A pool with a
    /// [`call_timeout`](crate::PoolBuilder::call_timeout) never grows a running call (the
    /// timeout counts from the call's start).
    ///
    /// The argument comes first and the function last, as in [`map`](Pool::map) and
    /// [`imap`](Pool::imap) (and rayon), not in Python's order. Several arguments travel as a
    /// tuple; the function must not capture anything (put a shared object, such as a
    /// [`SharedValue`](crate::SharedValue) or an [`ArrayHandle`](crate::ArrayHandle), in the
    /// argument instead).
    ///
    /// ```
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = shmpar::Pool::new(2)?;
    /// let pending = pool.apply_async((3, 4), |(a, b): (u64, u64)| a.pow(b as u32));
    /// // ... other work ...
    /// assert_eq!(pending.get()?, 81);
    /// # Ok(())
    /// # }
    /// ```
    pub fn apply_async<T, R>(&self, arg: T, f: TaskFn<T, R>) -> AsyncResult<R>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let reply = Box::new(move |result: Result<Vec<u8>>| {
            let _ = tx.send(decode_async::<R>(result, 0));
        });
        // The job owns `arg` (and so any handle's descriptors) until its task has ended.
        let terms = background::Terms::SINGLE;
        if let Err((e, reply)) = background::submit(self.shared(), f, arg, terms, reply) {
            reply(Err(e));
        }
        AsyncResult {
            rx,
            value: None,
            pool: background::pool_id(self.shared()),
        }
    }

    /// Runs `f(arg)` in the background and hands its outcome to `callback` (Python's
    /// `apply_async` with `callback` and `error_callback`, in one closure). The callback is
    /// called exactly once, with the value or the error: on the pool's dispatcher thread once
    /// the task has ended, or at once on this thread if the task could not be submitted.
    ///
    /// The callback holds up the other background results while it runs: keep it short, and
    /// send the value elsewhere (a channel) for real work. A callback that panics loses only
    /// its own result. [`Pool::join`] returns after every callback has run. A callback cannot
    /// wait for another of the pool's background results
    /// ([`AsyncResult::get`] says [`ErrorKind::InvalidInput`]): chain work by submitting it.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// let pool = shmpar::Pool::new(2)?;
    /// let (tx, rx) = mpsc::channel();
    /// for i in 0..4u64 {
    ///     let tx = tx.clone();
    ///     pool.apply_async_callback(i, |x| x * 10, move |r| tx.send(r.unwrap()).unwrap());
    /// }
    /// pool.join();
    /// let mut got: Vec<u64> = rx.try_iter().collect();
    /// got.sort();
    /// assert_eq!(got, [0, 10, 20, 30]);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn apply_async_callback<T, R, C>(&self, arg: T, f: TaskFn<T, R>, callback: C)
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        C: FnOnce(Result<R>) + Send + 'static,
    {
        let reply = Box::new(move |result: Result<Vec<u8>>| {
            callback(decode_async::<R>(result, 0));
        });
        // A callback runs once the batch's call is over, where it may call the pool.
        let terms = background::Terms {
            early: false,
            ..background::Terms::SINGLE
        };
        if let Err((e, reply)) = background::submit(self.shared(), f, arg, terms, reply) {
            reply(Err(e));
        }
    }

    /// Runs `f` on every item in the background and returns one handle to all the results, in
    /// input order (Python's `map_async`). The tasks join the same queue as
    /// [`apply_async`](Pool::apply_async)'s, so they run alongside other background work,
    /// spread over every worker, without a thread of their own.
    ///
    /// [`get`](AsyncResult::get) returns every value, or the error of the first task (by input
    /// index, which [`Error::task`] names) that failed; it answers once every task has ended.
    /// For each task's own outcome, use [`map`](Pool::map) or [`imap`](Pool::imap).
    ///
    /// ```
    /// let pool = shmpar::Pool::new(2)?;
    /// let squares = pool.map_async(0..10u64, |x| x * x);
    /// // ... other work ...
    /// assert_eq!(squares.get()?, (0..10).map(|x| x * x).collect::<Vec<u64>>());
    ///
    /// let failing = pool.map_async(vec![1u32, 0, 2], |x| 10 / x);
    /// assert_eq!(failing.get().unwrap_err().task(), Some(1));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn map_async<T, R>(
        &self,
        items: impl IntoIterator<Item = T>,
        f: TaskFn<T, R>,
    ) -> AsyncResult<Vec<R>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items: Vec<T> = items.into_iter().collect();
        let (tx, rx) = mpsc::channel();
        let gather = Arc::new(parking_lot::Mutex::new(Gather {
            slots: (0..items.len()).map(|_| None).collect(),
            left: items.len(),
            tx,
        }));
        gather.lock().send_if_done();
        let mut jobs = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let for_reply = Arc::clone(&gather);
            let reply = Box::new(move |result: Result<Vec<u8>>| {
                for_reply.lock().put(i, decode_async::<R>(result, i));
            });
            let terms = background::Terms::SINGLE;
            match background::job(self.shared(), f, item, terms, reply) {
                Ok(job) => jobs.push(job),
                // Never queued: it names its input, as a task's own error does.
                Err((e, reply)) => reply(Err(e.with_task(i))),
            }
        }
        // Queued together, so that one call runs them all.
        background::enqueue(self.shared(), jobs);
        AsyncResult {
            rx,
            value: None,
            pool: background::pool_id(self.shared()),
        }
    }
}

/// A background task's serialised result, decoded. The task's own error (one that names a
/// task, or a result that does not decode) names `task`; a pool-wide one names none.
fn decode_async<R: DeserializeOwned>(result: Result<Vec<u8>>, task: usize) -> Result<R> {
    match result {
        // A `Deserialize` of the user's that panics is a decoding failure of this task alone.
        Ok(bytes) => {
            match panic::catch_unwind(AssertUnwindSafe(|| postcard::from_bytes::<R>(&bytes))) {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(Error::new(
                    ErrorKind::Decode,
                    format!("a task's result could not be decoded: {e}"),
                )
                .with_task(task)),
                Err(payload) => Err(Error::new(
                    ErrorKind::Decode,
                    format!(
                        "decoding a task's result panicked: {}",
                        panic_message(&*payload)
                    ),
                )
                .with_task(task)),
            }
        }
        Err(e) if e.task().is_some() => Err(e.with_task(task)),
        Err(e) => Err(e),
    }
}

/// The results of [`Pool::map_async`] as they arrive, sent on when the last one has.
struct Gather<R> {
    slots: Vec<Option<Result<R>>>,
    left: usize,
    tx: mpsc::Sender<Result<Vec<R>>>,
}

impl<R> Gather<R> {
    fn put(&mut self, i: usize, value: Result<R>) {
        // Once answered, the slots are gone and nothing more is expected.
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        if slot.replace(value).is_none() {
            self.left -= 1;
            self.send_if_done();
        }
    }

    /// Once every slot is filled: all the values, or the first error by input index.
    fn send_if_done(&mut self) {
        if self.left != 0 {
            return;
        }
        // Every slot is filled (`left` is 0).
        let all: Result<Vec<R>> = std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .collect();
        // The receiver may be gone: nobody wants the results any more.
        let _ = self.tx.send(all);
    }
}

/// The pending result of [`Pool::apply_async`] or [`Pool::map_async`].
#[derive(Debug)]
pub struct AsyncResult<R> {
    rx: mpsc::Receiver<Result<R>>,
    value: Option<Result<R>>,
    /// The pool that delivers it (see `background::not_on_dispatcher`).
    pool: usize,
}

impl<R> AsyncResult<R> {
    /// Waits for the result. Inside a callback of the same pool
    /// ([`apply_async_callback`](Pool::apply_async_callback)) it fails with
    /// [`ErrorKind::InvalidInput`] instead of waiting forever, unless the result is already there.
    ///
    /// ```
    /// let pool = shmpar::Pool::new(1)?;
    /// assert_eq!(pool.apply_async(5, |x: i32| -x).get()?, -5);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn get(mut self) -> Result<R> {
        if let Some(v) = self.value.take() {
            return v;
        }
        if let Err(e) = background::not_on_dispatcher(self.pool, "AsyncResult::get") {
            // Only what has already arrived can be had here.
            return self.rx.try_recv().unwrap_or(Err(e));
        }
        self.rx.recv().unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::WorkerDied,
                "the background task was lost",
            ))
        })
    }

    /// Waits at most `timeout`; fails with [`ErrorKind::TimedOut`] if the result is not ready
    /// (the handle stays usable: call again later). Telling that apart from a task that ran
    /// past the pool's `call_timeout` (also `TimedOut`): only the task's own error names its
    /// task ([`Error::task`] is `Some(0)`), and it stays: every later `get` returns it again.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = shmpar::Pool::new(1)?;
    /// let mut slow = pool.apply_async(300, |ms: u64| { std::thread::sleep(Duration::from_millis(ms)); ms });
    /// assert_eq!(slow.get_timeout(Duration::from_millis(1)).unwrap_err().kind(), shmpar::ErrorKind::TimedOut);
    /// assert_eq!(slow.get_timeout(Duration::from_secs(30))?, 300);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<R> {
        if let Some(v) = self.value.take() {
            return self.keep_error(v);
        }
        match self.rx.recv_timeout(timeout) {
            Ok(v) => self.keep_error(v),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::new(
                ErrorKind::TimedOut,
                "the result is not ready yet",
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::new(
                ErrorKind::WorkerDied,
                "the background task was lost",
            )),
        }
    }

    /// An error stays for the next `get`/`get_timeout` too (a value is handed over once).
    fn keep_error(&mut self, v: Result<R>) -> Result<R> {
        if let Err(e) = &v {
            self.value = Some(Err(e.clone()));
        }
        v
    }

    /// True when the result is ready (`get` will not wait).
    ///
    /// ```
    /// let pool = shmpar::Pool::new(1)?;
    /// let mut r = pool.apply_async(1, |x: u8| x);
    /// while !r.ready() { std::thread::yield_now(); }
    /// assert_eq!(r.get()?, 1);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn ready(&mut self) -> bool {
        if self.value.is_none() {
            if let Ok(v) = self.rx.try_recv() {
                self.value = Some(v);
            }
        }
        self.value.is_some()
    }
}

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`].
///
/// Its tasks run in the background, on the pool's dispatcher (as
/// [`apply_async`](Pool::apply_async)'s do), at most `read_ahead` of them ahead of the results
/// taken: each result can be taken as soon as its task (and, for `imap`, every task before it)
/// has finished. Dropping the iterator early leaves the tasks already submitted to run to their
/// end; [`Pool::join`] waits for them.
pub struct Imap<'p, I, T, R> {
    pool: &'p Pool,
    source: I,
    f: TaskFn<T, R>,
    terms: background::Terms,
    /// Tasks submitted and not yet returned, at most.
    window: usize,
    unordered: bool,
    /// Input items taken (and submitted) so far.
    taken: usize,
    /// Results returned so far.
    returned: usize,
    exhausted: bool,
    /// The input iterator's panic, raised once every result from before it has come.
    source_panic: Option<Box<dyn std::any::Any + Send>>,
    tx: mpsc::Sender<(usize, Result<Vec<u8>>)>,
    rx: mpsc::Receiver<(usize, Result<Vec<u8>>)>,
    /// Results that arrived and were not returned yet, by input index.
    arrived: BTreeMap<usize, Result<Vec<u8>>>,
    /// Set when the iterator was used where it cannot wait: it has said so and ends.
    stopped: bool,
}

impl<'p, I, T, R> Imap<'p, I, T, R>
where
    I: Iterator<Item = T>,
    T: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned,
{
    fn new(
        pool: &'p Pool,
        source: I,
        f: TaskFn<T, R>,
        options: &MapOptions,
        unordered: bool,
    ) -> Self {
        let chunksize = options.chunksize_setting().unwrap_or(1).max(1);
        let (tx, rx) = mpsc::channel();
        Imap {
            pool,
            source,
            f,
            terms: background::Terms {
                chunksize,
                retries: options.retries_setting(),
                early: true,
            },
            window: options.read_ahead_for(chunksize, pool.workers()),
            unordered,
            taken: 0,
            returned: 0,
            exhausted: false,
            source_panic: None,
            tx,
            rx,
            arrived: BTreeMap::new(),
            stopped: false,
        }
    }

    /// Submits input items until `window` tasks are out or the input ends, all in one go (so
    /// that they share a call).
    fn refill(&mut self) {
        let mut jobs = Vec::new();
        while !self.exhausted && self.taken - self.returned < self.window {
            // A panicking input ends the input; the panic is raised after the results before it.
            let item = match panic::catch_unwind(AssertUnwindSafe(|| self.source.next())) {
                Ok(Some(item)) => item,
                Ok(None) => {
                    self.exhausted = true;
                    break;
                }
                Err(payload) => {
                    self.exhausted = true;
                    self.source_panic = Some(payload);
                    break;
                }
            };
            let index = self.taken;
            self.taken += 1;
            let tx = self.tx.clone();
            let reply = Box::new(move |result: Result<Vec<u8>>| {
                // The iterator may be gone: then nobody wants the result.
                let _ = tx.send((index, result));
            });
            match background::job(self.pool.shared(), self.f, item, self.terms, reply) {
                Ok(job) => jobs.push(job),
                Err((e, reply)) => reply(Err(e.with_task(0))),
            }
        }
        background::enqueue(self.pool.shared(), jobs);
    }
}

impl<I, T, R> Iterator for Imap<'_, I, T, R>
where
    I: Iterator<Item = T>,
    T: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        if self.stopped {
            return None;
        }
        let shared = self.pool.shared();
        // Its tasks run on the dispatcher, in calls of their own: waiting for them there (in a
        // callback) or inside a call on this pool (its combine) would wait for itself.
        let stuck = background::not_on_dispatcher(background::pool_id(shared), "an imap")
            .and_then(|()| shared.not_inside_a_call());
        if let Err(e) = stuck {
            self.stopped = true;
            return Some(Err(e));
        }
        let mut refilled = false;
        loop {
            if let Some((index, result)) = self.ready_one() {
                self.returned += 1;
                // Every error names its input, even a pool-wide one (the task was cancelled).
                return Some(decode_async(result, index).map_err(|e| e.with_task(index)));
            }
            if !refilled {
                // Only now: a result that has arrived does not wait for a slow input.
                self.refill();
                refilled = true;
                continue;
            }
            if self.returned == self.taken {
                if let Some(payload) = self.source_panic.take() {
                    panic::resume_unwind(payload);
                }
                return None;
            }
            // Every submitted task is answered exactly once (the dispatcher's promise), and we
            // hold a sender: the wait ends with a result, never with a disconnection.
            let arrived = self.rx.recv().expect("the iterator holds a sender");
            self.arrived.insert(arrived.0, arrived.1);
        }
    }
}

impl<I, T, R> Imap<'_, I, T, R> {
    /// The next result that may be returned, if it has arrived: the next in input order, or
    /// (unordered) the first to arrive.
    fn ready_one(&mut self) -> Option<(usize, Result<Vec<u8>>)> {
        while let Ok((index, result)) = self.rx.try_recv() {
            self.arrived.insert(index, result);
        }
        if self.unordered {
            self.arrived.pop_first()
        } else {
            let result = self.arrived.remove(&self.returned)?;
            Some((self.returned, result))
        }
    }
}

impl<I, T, R> std::fmt::Debug for Imap<'_, I, T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("taken", &self.taken)
            .field("returned", &self.returned)
            .field("exhausted", &self.exhausted)
            .field("unordered", &self.unordered)
            .finish_non_exhaustive()
    }
}
