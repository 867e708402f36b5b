//! The task engine: runs serde tasks as task-style calls on the pool's workers.
//!
//! The tasks of a call are serialised into one shared input region that the workers map once
//! and keep; each worker serialises each task's outcome into its result arena and publishes it
//! *per task*, so when a worker dies the tasks it finished keep their results, the task it was
//! running fails alone (or is retried), and the tasks it had not started run again. A task
//! whose result does not fit in what is left of its worker's result space for this call runs
//! again in the next call (a fresh space); only a result larger than the whole space fails.
//!
//! A call of the background dispatcher can grow while it runs: tasks submitted meanwhile are
//! written past the ones already published and join the call as new chunks (a [`Feed`]), so
//! they start on the first idle worker instead of waiting for the call's slowest task.

use std::borrow::Cow;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{SliceOut, VecOut};
use super::{Outcome, TaskFn};
use crate::error::{Error, ErrorKind, Result};
use crate::pool::chunk::{ChunkFailure, ChunkInput, Trampoline, panic_message};
use crate::pool::control::ArrayDesc;
use crate::pool::{CallSpec, ChunkReport, ChunkState, Grid, PoolShared, Stream};
use crate::shm::Region;
use crate::shm::handle::{self, Outgoing};
use crate::sys::ExitStatus;

/// Every task serialised into one buffer: task `i` is `data[offsets[i]..offsets[i + 1]]`;
/// `handles`, the shared objects they name.
pub(super) struct Encoded {
    data: Vec<u8>,
    offsets: Vec<usize>,
    handles: Vec<Outgoing>,
}

impl Encoded {
    fn new<T: Serialize>(items: &[T]) -> Result<Encoded> {
        let (encoded, handles) = handle::collecting(|| {
            let mut out = Encoded {
                data: Vec::new(),
                offsets: Vec::with_capacity(items.len() + 1),
                handles: Vec::new(),
            };
            out.offsets.push(0);
            for t in items {
                out.push(t)?;
            }
            Ok::<_, Error>(out)
        });
        let mut encoded = encoded?;
        encoded.handles = handles;
        Ok(encoded)
    }

    /// Serialises one more task; on an error nothing is added.
    fn push<T: Serialize>(&mut self, t: &T) -> Result<()> {
        let at = self.data.len();
        match postcard::serialize_with_flavor(t, VecOut(&mut self.data)) {
            Ok(()) => {
                self.offsets.push(self.data.len());
                Ok(())
            }
            Err(e) => {
                self.data.truncate(at);
                Err(Error::invalid(format!(
                    "a task could not be serialised: {e}"
                )))
            }
        }
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Task `i`'s serialised length.
    fn size(&self, i: usize) -> usize {
        self.offsets[i + 1] - self.offsets[i]
    }

    fn get(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// One task still to run: its index in the call's input and the attempts already made.
#[derive(Debug, Clone, Copy)]
struct Pending {
    index: usize,
    attempt: u32,
}

/// Runs `f` on every item; returns each task's result.
pub(super) fn run_tasks<T, R>(
    shared: &Arc<PoolShared>,
    items: &[T],
    f: TaskFn<T, R>,
    chunksize: usize,
    retries: u32,
) -> Result<Vec<Result<R>>>
where
    T: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let mut results: Vec<Option<Result<R>>> = (0..items.len()).map(|_| None).collect();
    let how = Run {
        chunksize,
        retries: &|_| retries,
        early: false,
    };
    run_tasks_with(shared, items, f, &how, Vec::new(), None, &mut |i, r| {
        results[i] = Some(r);
    })?;
    Ok(results
        .into_iter()
        .map(|r| r.expect("every task resolved"))
        .collect())
}

/// How [`run_tasks_with`] runs its tasks.
pub(super) struct Run<'a> {
    pub(super) chunksize: usize,
    /// How many times task `i` may run again after its worker died in it.
    pub(super) retries: &'a dyn Fn(usize) -> u32,
    /// Hand out each chunk's outcomes as soon as the chunk has finished, while the call still
    /// runs (for streams); otherwise they come once the call is over.
    pub(super) early: bool,
}

/// Where [`run_tasks_with`] hands each task's outcome, exactly once: the task's index and its
/// result.
pub(super) type Deliver<'a, R> = &'a mut dyn FnMut(usize, Result<R>);

/// More tasks for a running call (the dispatcher's queue). Its tasks name no shared object:
/// the workers learn of those between calls only.
pub(super) trait Feed<T> {
    /// Whether tasks may have arrived since the last [`take`](Feed::take): a cheap check.
    fn has_more(&self) -> bool;

    /// Up to `max_tasks` tasks whose serialised forms take at most `max_bytes` in all, and
    /// the tasks per chunk for them, such that they fill at most `max_chunks` chunks. The
    /// tasks taken are numbered on from the ones before, in the order returned.
    fn take(&mut self, max_tasks: usize, max_chunks: usize, max_bytes: usize) -> (Vec<T>, usize);
}

/// Room left for tasks that join a running call, beyond the call's first tasks.
const GROW_TASKS: usize = 4096;
const GROW_BYTES: usize = 256 << 10;

/// Runs `f` on every item, handing each outcome to `deliver`; `handles`, the shared objects
/// named by arguments serialised beforehand (the background dispatcher's tasks); `feed`, tasks
/// that may join each call while it runs (numbered after `items`). An error only when the
/// pool cannot run the call at all: then the tasks not yet delivered have no outcome.
pub(super) fn run_tasks_with<T, R>(
    shared: &Arc<PoolShared>,
    items: &[T],
    f: TaskFn<T, R>,
    how: &Run<'_>,
    handles: Vec<Outgoing>,
    mut feed: Option<&mut dyn Feed<T>>,
    deliver: Deliver<'_, R>,
) -> Result<()>
where
    T: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let mut encoded = Encoded::new(items)?;
    encoded.handles.extend(handles);
    let mut pending: Vec<Pending> = (0..items.len())
        .map(|index| Pending { index, attempt: 0 })
        .collect();
    let max_chunks = shared.config().max_chunks_setting();
    let chunksize = how.chunksize.max(1);
    while !pending.is_empty() {
        let mut round = pending.len();
        let mut next = Vec::new();
        for batch in pending.chunks(max_chunks.saturating_mul(chunksize).max(1)) {
            let call = Batch {
                tasks: Cow::Borrowed(batch),
                chunksize,
            };
            let parts = Parts {
                encoded: &mut encoded,
                feed: feed.as_deref_mut(),
                deliver: &mut *deliver,
            };
            round += run_batch(shared, call, f, how, parts, &mut next)?;
        }
        if next.len() >= round && next.iter().all(|p| p.attempt == 0) {
            // Nothing ran at all (every worker gone and none could start): fail the rest.
            for p in next.drain(..) {
                let err = Error::new(ErrorKind::WorkerDied, "no worker could run the task");
                deliver(p.index, Err(err.with_task(p.index)));
            }
        }
        pending = next;
    }
    Ok(())
}

/// One call's first tasks, in chunk order.
struct Batch<'b> {
    tasks: Cow<'b, [Pending]>,
    chunksize: usize,
}

/// What a call shares with the rounds around it.
struct Parts<'a, 'f, 'd, T, R> {
    encoded: &'a mut Encoded,
    feed: Option<&'a mut (dyn Feed<T> + 'f)>,
    deliver: Deliver<'d, R>,
}

/// The caller's side of one streaming call: hands out finished chunks, adds fed ones.
struct TaskStream<'a, 'f, 'd, 'r, 'b, T, R> {
    parts: Parts<'a, 'f, 'd, T, R>,
    input: Input<'r>,
    /// The call's tasks, in chunk order; chunk `c` runs `tasks[chunks[c]]`. Copied only when
    /// tasks join.
    tasks: Cow<'b, [Pending]>,
    chunks: Vec<Range<usize>>,
    handed_out: Vec<bool>,
    early: bool,
}

impl<T: Serialize, R: DeserializeOwned> Stream for TaskStream<'_, '_, '_, '_, '_, T, R> {
    fn finished(&mut self, c: usize, report: ChunkReport<'_>) {
        if !self.early {
            return;
        }
        self.handed_out[c] = true;
        let tasks = &self.tasks[self.chunks[c].clone()];
        deliver_finished::<R>(&report, tasks, self.parts.deliver);
    }

    fn has_more(&self) -> bool {
        self.parts.feed.as_ref().is_some_and(|f| f.has_more())
    }

    fn more(&mut self, first: usize, room: usize) -> usize {
        debug_assert_eq!(first, self.chunks.len());
        let Some(feed) = self.parts.feed.as_deref_mut() else {
            return 0;
        };
        let (tasks_room, chunks_room, bytes_room) = self.input.room();
        let (items, chunksize) = feed.take(tasks_room, room.min(chunks_room), bytes_room);
        let chunksize = chunksize.max(1);
        let encoded = &mut *self.parts.encoded;
        let mut added = 0;
        let mut group: Vec<usize> = Vec::with_capacity(chunksize);
        for (k, item) in items.iter().enumerate() {
            // Numbered on from the tasks before: the feed's `take` says so.
            let index = encoded.len();
            match encoded.push(item) {
                Ok(()) => group.push(index),
                Err(e) => {
                    // An index is still used up, so that the later tasks keep their numbers.
                    encoded.offsets.push(encoded.data.len());
                    (self.parts.deliver)(index, Err(e.with_task(index)));
                }
            }
            if group.len() == chunksize || (k + 1 == items.len() && !group.is_empty()) {
                if !self.input.push_chunk(encoded, group.iter().copied()) {
                    // `take` keeps within the room it was given: unreachable, but never lose
                    // a task over it.
                    for &i in &group {
                        let err = Error::new(ErrorKind::Full, "no room left in the call's input");
                        (self.parts.deliver)(i, Err(err.with_task(i)));
                    }
                    group.clear();
                    continue;
                }
                let start = self.tasks.len();
                self.tasks
                    .to_mut()
                    .extend(group.drain(..).map(|index| Pending { index, attempt: 0 }));
                self.chunks.push(start..self.tasks.len());
                self.handed_out.push(false);
                added += 1;
            }
        }
        added
    }
}

/// One call over `batch`, which may grow while it runs (`parts.feed`): delivers what it can,
/// queues the rest in `next`. Returns how many tasks joined the call.
fn run_batch<T, R>(
    shared: &Arc<PoolShared>,
    batch: Batch<'_>,
    f: TaskFn<T, R>,
    how: &Run<'_>,
    parts: Parts<'_, '_, '_, T, R>,
    next: &mut Vec<Pending>,
) -> Result<usize>
where
    T: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    // Before the input lock: a task run by a helping caller that calls this pool must get an
    // error, not wait for the lock its own call holds.
    shared.not_inside_a_call()?;
    let mut slot = shared.task_input.lock();
    let n = batch.tasks.len();
    let chunksize = batch.chunksize;
    let nchunks = n.div_ceil(chunksize);
    let max_chunks = shared.config().max_chunks_setting();
    let bytes: usize = batch
        .tasks
        .iter()
        .map(|p| parts.encoded.size(p.index))
        .sum();
    let grows = parts.feed.is_some();
    let (task_cap, chunk_cap, data_cap) = if grows {
        (n + GROW_TASKS, max_chunks.max(nchunks), bytes + GROW_BYTES)
    } else {
        (n, nchunks, bytes)
    };
    let mut input = Input::open(&mut slot, task_cap, chunk_cap, data_cap)?;
    let mut chunks = Vec::with_capacity(nchunks);
    for c in 0..nchunks {
        let range = c * chunksize..((c + 1) * chunksize).min(n);
        let indices = batch.tasks[range.clone()].iter().map(|p| p.index);
        let pushed = input.push_chunk(parts.encoded, indices);
        debug_assert!(pushed, "the input was sized for the batch");
        chunks.push(range);
    }
    let region = input.region;
    let desc = ArrayDesc {
        region: region.id(),
        parent_addr: region.as_ptr() as u64,
        offset: 0,
        elem_size: 1,
        ndim: 1,
        shape: [region.len() as u64, 0, 0, 0, 0, 0, 0, 0],
        strides: [1, 0, 0, 0, 0, 0, 0, 0],
        axis: 0,
    };
    let handles = std::mem::take(&mut parts.encoded.handles);
    let spec = CallSpec {
        trampoline: map_chunk::<T, R> as Trampoline,
        user_fn: f as usize,
        arrays: &[(region, desc)],
        // One row per chunk: the trampoline finds a chunk's tasks in the input's chunk table.
        rows: chunk_cap,
        grid: Grid {
            nchunks,
            rows_per_chunk: 1,
        },
        params: &[],
        handles: &handles,
        keep_going: true,
    };
    let mut stream = TaskStream {
        parts,
        input,
        tasks: batch.tasks,
        chunks,
        handed_out: vec![false; nchunks],
        early: how.early,
    };
    let streaming = how.early || grows;
    let outcome = shared.call_tasks(&spec, streaming.then_some(&mut stream as &mut dyn Stream));
    let TaskStream {
        parts,
        tasks,
        chunks: ranges,
        handed_out,
        ..
    } = stream;
    parts.encoded.handles = handles;
    let deliver = parts.deliver;
    let joined = tasks.len() - n;
    let chunks = outcome?;
    for c in (0..chunks.nchunks()).filter(|&c| !handed_out[c]) {
        let report = chunks.report(c);
        let tasks = &tasks[ranges[c].clone()];
        let finished = deliver_finished::<R>(&report, tasks, deliver);
        let rest = &tasks[finished..];
        match report.state {
            ChunkState::Ok => {}
            // Out of result space for this call: the rest, from the task that did not fit, run
            // again in the next round, as if new.
            ChunkState::NotRun | ChunkState::Full => next.extend_from_slice(rest),
            ChunkState::Panicked => {
                let msg = String::from_utf8_lossy(report.bytes).into_owned();
                for p in rest {
                    let err = Error::new(ErrorKind::WorkerPanicked, msg.clone())
                        .with_task(p.index)
                        .with_pid(report.pid);
                    deliver(p.index, Err(err));
                }
            }
            ChunkState::TooLarge | ChunkState::Died => {
                let Some((current, after)) = rest.split_first() else {
                    continue;
                };
                // The task that was running: it may have had effects, so it runs again only
                // if the caller said tasks are idempotent (`retries`).
                if report.state == ChunkState::Died
                    && !report.timed_out
                    && current.attempt < (how.retries)(current.index)
                {
                    next.push(Pending {
                        index: current.index,
                        attempt: current.attempt + 1,
                    });
                } else {
                    deliver(current.index, Err(task_failure(&report, current.index)));
                }
                // The ones it never started run again, as if new.
                next.extend_from_slice(after);
            }
        }
    }
    Ok(joined)
}

/// Delivers the outcomes of the tasks of a chunk that finished: all of them for a chunk that
/// ran to the end, the first `progress` for one that stopped part-way. Returns how many.
fn deliver_finished<R: DeserializeOwned>(
    report: &ChunkReport<'_>,
    tasks: &[Pending],
    deliver: Deliver<'_, R>,
) -> usize {
    let finished = match report.state {
        ChunkState::Ok => tasks.len(),
        ChunkState::NotRun | ChunkState::Panicked => 0,
        _ => report.progress.min(tasks.len()),
    };
    // Each outcome is `[length: u32][bytes]`: one that fails to decode costs only its own
    // task. A `Deserialize` of the user's that panics fails its own task too, and never
    // unwinds through a call that is still running: the tasks are decoded under one
    // `catch_unwind` (cheaper than one per task), and after a panic the next task goes on.
    let mut bytes = report.bytes;
    let mut k = 0;
    while k < finished {
        let run = panic::catch_unwind(AssertUnwindSafe(|| {
            while k < finished {
                let p = tasks[k];
                let (one, rest) = match bytes.split_first_chunk::<4>() {
                    Some((len, rest)) if u32::from_le_bytes(*len) as usize <= rest.len() => {
                        rest.split_at(u32::from_le_bytes(*len) as usize)
                    }
                    _ => (&[][..], &[][..]),
                };
                bytes = rest;
                let outcome = match postcard::from_bytes::<Outcome<R>>(one) {
                    Ok(Outcome::Ok(r)) => Ok(r),
                    Ok(Outcome::Panicked(msg)) => Err(Error::new(ErrorKind::WorkerPanicked, msg)
                        .with_task(p.index)
                        .with_pid(report.pid)),
                    Err(e) => Err(undecodable(&e.to_string(), p.index)),
                };
                // `deliver` does not panic (the engine's own closures), so a panic here was
                // task `k`'s `Deserialize`.
                deliver(p.index, outcome);
                k += 1;
            }
        }));
        if let Err(payload) = run {
            // Task `k` panicked while it was read (`bytes` already points past it).
            let why = format!("it panicked: {}", panic_message(&*payload));
            deliver(tasks[k].index, Err(undecodable(&why, tasks[k].index)));
            k += 1;
        }
    }
    finished
}

/// A task's result that could not be decoded, and why.
fn undecodable(why: &str, task: usize) -> Error {
    Error::new(
        ErrorKind::Decode,
        format!("a task's result could not be decoded: {why}"),
    )
    .with_task(task)
}

fn task_failure(report: &ChunkReport<'_>, task: usize) -> Error {
    let err = if report.state == ChunkState::TooLarge {
        Error::new(
            ErrorKind::ResultTooLarge,
            "the task's serialised result did not fit in the worker's result space (raise PoolBuilder::result_bytes)",
        )
    } else if report.timed_out {
        Error::new(
            ErrorKind::TimedOut,
            "the call ran past the pool's call_timeout; the worker was replaced",
        )
    } else {
        let status = report
            .status
            .map_or_else(|| "died".to_string(), |s| s.to_string());
        Error::new(
            ErrorKind::WorkerDied,
            format!("the worker {status} while it ran this task"),
        )
        .with_signal(report.status.and_then(ExitStatus::signal))
    };
    err.with_task(task).with_pid(report.pid)
}

/// Writes one task's outcome as `[length: u32][postcard bytes]`, so that the parent can skip
/// an outcome it fails to decode without losing the ones after it. A result whose `Serialize`
/// fails becomes that task's error. Returns the bytes written.
#[inline(always)]
fn put_outcome<R: Serialize>(
    outcome: &Outcome<R>,
    out: &mut [u8],
    arena_len: usize,
) -> Result<usize, ChunkFailure> {
    let full = |outcome: &Outcome<R>| {
        // Too large for any result space, or only for what is left of this one?
        let need = postcard::to_stdvec(outcome).map_or(usize::MAX, |v| v.len() + 4);
        if need > arena_len {
            ChunkFailure::TooLarge
        } else {
            ChunkFailure::Full
        }
    };
    if out.len() < 4 {
        return Err(full(outcome));
    }
    let len = match postcard::serialize_with_flavor(outcome, SliceOut::new(&mut out[4..])) {
        Ok(used) => used,
        Err(postcard::Error::SerializeBufferFull) => return Err(full(outcome)),
        Err(e) => {
            let failed =
                Outcome::<R>::Panicked(format!("the task's result could not be serialised: {e}"));
            match postcard::serialize_with_flavor(&failed, SliceOut::new(&mut out[4..])) {
                Ok(used) => used,
                Err(_) => return Err(full(&failed)),
            }
        }
    };
    out[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(4 + len)
}

/// The shared input of a task-style call, in one region:
///
/// ```text
/// [task_cap][chunk_cap][task starts; task_cap + 1][chunk starts; chunk_cap + 1][task bytes]
/// ```
///
/// Task `i` is `bytes[task_starts[i]..task_starts[i + 1]]`; chunk `c` runs tasks
/// `chunk_starts[c]..chunk_starts[c + 1]`. Each entry is written once, before the chunk that
/// reads it is published, and never again during the call: so chunks can be added past the
/// published ones while workers read those.
struct Input<'r> {
    region: &'r Region,
    task_cap: usize,
    chunk_cap: usize,
    data_cap: usize,
    tasks: usize,
    chunks: usize,
    bytes: usize,
}

impl<'r> Input<'r> {
    fn data_at(task_cap: usize, chunk_cap: usize) -> usize {
        8 * (2 + (task_cap + 1) + (chunk_cap + 1))
    }

    /// An empty input with room for `task_cap` tasks of `data_cap` bytes in `chunk_cap`
    /// chunks, in the pool's input region (reused while it is large enough).
    ///
    /// The caller holds the pool's task-input lock (`slot` is behind it), taken before any
    /// call that uses the region and kept until the call is over: no runner reads it now.
    fn open(
        slot: &'r mut Option<Region>,
        task_cap: usize,
        chunk_cap: usize,
        data_cap: usize,
    ) -> Result<Input<'r>> {
        let need = Self::data_at(task_cap, chunk_cap) + data_cap;
        if slot.as_ref().is_none_or(|r| r.len() < need) {
            let size = need
                .max(64 << 10)
                .max(slot.as_ref().map_or(0, |r| r.len() * 2));
            *slot = Some(Region::new("shmpar-tasks", size)?);
        }
        let region = slot.as_ref().expect("just filled");
        let input = Input {
            region,
            task_cap,
            chunk_cap,
            data_cap: region.len() - Self::data_at(task_cap, chunk_cap),
            tasks: 0,
            chunks: 0,
            bytes: 0,
        };
        // SAFETY: the region holds at least `need` bytes, 8-aligned at its start (a mapping);
        // no runner reads it until the call is published (see above).
        unsafe {
            let words = region.as_ptr().cast::<u64>();
            words.write(task_cap as u64);
            words.add(1).write(chunk_cap as u64);
            input.task_starts().write(0);
            input.chunk_starts().write(0);
        }
        Ok(input)
    }

    fn task_starts(&self) -> *mut u64 {
        // SAFETY: within the region (see `data_at`).
        unsafe { self.region.as_ptr().cast::<u64>().add(2) }
    }

    fn chunk_starts(&self) -> *mut u64 {
        // SAFETY: within the region (see `data_at`).
        unsafe { self.task_starts().add(self.task_cap + 1) }
    }

    /// Room left: tasks, chunks, bytes.
    fn room(&self) -> (usize, usize, usize) {
        (
            self.task_cap - self.tasks,
            self.chunk_cap - self.chunks,
            self.data_cap - self.bytes,
        )
    }

    /// Writes one more chunk: the tasks `indices` of `encoded`; false, writing nothing, when
    /// they do not fit.
    fn push_chunk(
        &mut self,
        encoded: &Encoded,
        indices: impl Iterator<Item = usize> + Clone,
    ) -> bool {
        let (mut count, mut bytes, mut contiguous) = (0, 0, true);
        let mut first = None;
        for i in indices.clone() {
            let at = *first.get_or_insert(i);
            contiguous &= i == at + count;
            count += 1;
            bytes += encoded.size(i);
        }
        let (tasks_room, chunks_room, bytes_room) = self.room();
        if count > tasks_room || chunks_room == 0 || bytes > bytes_room {
            return false;
        }
        // SAFETY: every index and byte written lies within the capacities checked above, so
        // within the region; they lie past every entry of the chunks already published, which
        // runners may be reading, and no runner reads these until the chunk is published.
        unsafe {
            let data = self
                .region
                .as_ptr()
                .add(Self::data_at(self.task_cap, self.chunk_cap));
            match first {
                Some(first) if contiguous => {
                    // The usual case: one copy, the starts shifted to where the run lands.
                    let from = encoded.offsets[first];
                    let run = &encoded.data[from..encoded.offsets[first + count]];
                    std::ptr::copy_nonoverlapping(run.as_ptr(), data.add(self.bytes), run.len());
                    let starts = self.task_starts().add(self.tasks + 1);
                    for (k, &end) in encoded.offsets[first + 1..=first + count]
                        .iter()
                        .enumerate()
                    {
                        starts.add(k).write((end - from + self.bytes) as u64);
                    }
                    self.tasks += count;
                    self.bytes += run.len();
                }
                _ => {
                    for i in indices {
                        let t = encoded.get(i);
                        std::ptr::copy_nonoverlapping(t.as_ptr(), data.add(self.bytes), t.len());
                        self.bytes += t.len();
                        self.tasks += 1;
                        self.task_starts().add(self.tasks).write(self.bytes as u64);
                    }
                }
            }
            self.chunks += 1;
            self.chunk_starts()
                .add(self.chunks)
                .write(self.tasks as u64);
        }
        true
    }
}

/// Runs one chunk of tasks in a worker; publishes progress after each task.
///
/// # Safety
/// See [`Trampoline`]: `user_fn` is a `TaskFn<T, R>`; array 0 is the input region laid out by
/// [`Input`], with the chunk's entries written.
unsafe fn map_chunk<T: DeserializeOwned, R: Serialize>(
    input: &ChunkInput<'_>,
    out: &mut [u8],
) -> Result<usize, ChunkFailure> {
    // SAFETY: the parent stored a `TaskFn<T, R>` for this trampoline.
    let f: TaskFn<T, R> = unsafe { std::mem::transmute(input.user_fn) };
    let words = input.arrays[0].ptr.cast::<u64>();
    // SAFETY: the region starts with the capacities and the two tables (see `Input`), whose
    // entries for this chunk were written before it was published; `index` < `chunk_cap`.
    let (task_starts, tasks, data) = unsafe {
        let task_cap = words.read() as usize;
        let chunk_cap = words.add(1).read() as usize;
        let task_starts = words.add(2);
        let chunk_starts = task_starts.add(task_cap + 1);
        let first = chunk_starts.add(input.index).read() as usize;
        let end = chunk_starts.add(input.index + 1).read() as usize;
        let data = input.arrays[0].ptr.add(Input::data_at(task_cap, chunk_cap));
        (task_starts, first..end, data)
    };
    let mut written = 0;
    for (done, i) in tasks.enumerate() {
        // SAFETY: task `i` is in this chunk, so its entries `i` and `i + 1` exist and delimit
        // its bytes.
        let bytes = unsafe {
            let lo = task_starts.add(i).read() as usize;
            let hi = task_starts.add(i + 1).read() as usize;
            std::slice::from_raw_parts(data.add(lo), hi - lo)
        };
        let outcome = match panic::catch_unwind(AssertUnwindSafe(|| {
            crate::shm::handle::clear_reason();
            postcard::from_bytes::<T>(bytes).map(f)
        })) {
            Ok(Ok(r)) => Outcome::Ok(r),
            Ok(Err(e)) => Outcome::Panicked(format!(
                "the task could not be decoded in the worker: {}",
                crate::shm::handle::explain(e)
            )),
            Err(payload) => Outcome::Panicked(panic_message(&*payload)),
        };
        // A `Serialize` that panics fails its own task, like one that returns an error.
        let put = panic::catch_unwind(AssertUnwindSafe(|| {
            put_outcome(&outcome, &mut out[written..], input.arena_len)
        }))
        .unwrap_or_else(|payload| {
            let failed = Outcome::<R>::Panicked(format!(
                "the task's result could not be serialised: {}",
                panic_message(&*payload)
            ));
            put_outcome(&failed, &mut out[written..], input.arena_len)
        });
        written += put?;
        if !input.report(done + 1, written) {
            // A task forked and this is the copy: it runs no more of the chunk's tasks.
            break;
        }
    }
    Ok(written)
}
