//! One call on the pool: publish it, let the caller help if asked, wait while watching the
//! workers, and turn the chunk slots into results or the first error in chunk order.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;
use serde::Serialize;

use super::chunk::{self, Trampoline};
use super::control::{
    ArrayDesc, CALLER, CLAIMING, DIED, FULL, IDLE, JobDesc, KEEP_GOING, MAX_ARRAYS, OK, PANICKED,
    PARAMS_CAP, PENDING, READY, STOPPED, STREAM, TOO_LARGE, unpack,
};
use super::{CallState, PoolShared};
use crate::error::{Error, ErrorKind, Result};
use crate::lifecycle::code;
use crate::shm::Region;
use crate::shm::handle::{self, Outgoing};
use crate::sys::{self, ExitStatus};

/// How often a waiting caller checks that its workers live.
const CHECK_EVERY: Duration = Duration::from_millis(2);

/// How a call's rows are split: `nchunks` chunks of `rows_per_chunk` rows (the last may be
/// shorter). Depends only on the data's shape and the pool's chunk settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grid {
    pub(crate) nchunks: usize,
    pub(crate) rows_per_chunk: usize,
}

impl Grid {
    /// The grid for `rows` rows of `row_bytes` bytes each. An empty input is one empty chunk.
    pub(crate) fn new(
        rows: usize,
        row_bytes: usize,
        chunk_bytes: usize,
        max_chunks: usize,
    ) -> Grid {
        if rows == 0 {
            return Grid {
                nchunks: 1,
                rows_per_chunk: 0,
            };
        }
        let mut rows_per_chunk = (chunk_bytes / row_bytes.max(1)).max(1);
        let mut nchunks = rows.div_ceil(rows_per_chunk);
        if nchunks > max_chunks {
            rows_per_chunk = rows.div_ceil(max_chunks);
            nchunks = rows.div_ceil(rows_per_chunk);
        }
        Grid {
            nchunks,
            rows_per_chunk,
        }
    }
}

/// Everything one call needs.
pub(crate) struct CallSpec<'a> {
    pub(crate) trampoline: Trampoline,
    pub(crate) user_fn: usize,
    pub(crate) arrays: &'a [(&'a Region, ArrayDesc)],
    pub(crate) rows: usize,
    pub(crate) grid: Grid,
    pub(crate) params: &'a [u8],
    /// The shared objects the parameters or tasks name: sent to every worker before the call.
    pub(crate) handles: &'a [Outgoing],
    /// Task-style call: a failed chunk does not cancel the others.
    pub(crate) keep_going: bool,
}

/// The pool's call lock, held by one thread for one call; it knows its holder so that a
/// call from inside a call (its `combine`) is an error rather than a wait for itself.
pub(crate) struct CallLock<'p> {
    guard: MutexGuard<'p, CallState>,
    owner: &'p AtomicUsize,
}

impl std::ops::Deref for CallLock<'_> {
    type Target = CallState;

    fn deref(&self) -> &CallState {
        &self.guard
    }
}

impl std::ops::DerefMut for CallLock<'_> {
    fn deref_mut(&mut self) -> &mut CallState {
        &mut self.guard
    }
}

impl Drop for CallLock<'_> {
    fn drop(&mut self) {
        // ORDERING: Relaxed: only the holder's own thread compares it with itself; the mutex
        // orders everything else.
        self.owner.store(0, Ordering::Relaxed);
    }
}

/// A number that tells this thread from every other live one: the address of a thread-local.
fn this_thread() -> usize {
    thread_local! {
        static ME: u8 = const { 0 };
    }
    ME.with(|m| m as *const u8 as usize)
}

impl PoolShared {
    /// Takes the call lock: an error if this very thread holds it already (a call made from
    /// `combine`, which runs while its call still holds the results).
    fn lock_calls(&self) -> Result<CallLock<'_>> {
        self.not_inside_a_call()?;
        let guard = self.calls.lock();
        // ORDERING: Relaxed: equal to this thread's number only if this thread stored it (see
        // `CallLock::drop`).
        self.calls_owner.store(this_thread(), Ordering::Relaxed);
        Ok(CallLock {
            guard,
            owner: &self.calls_owner,
        })
    }
}

impl PoolShared {
    /// An error if this thread is inside a call on this pool (its `combine`, or a task run by
    /// a helping caller): a nested call would wait for itself. Checked before any of the
    /// pool's locks is taken.
    pub(crate) fn not_inside_a_call(&self) -> Result<()> {
        if !self.owned_here() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "this pool belongs to the process that built it; a forked copy cannot use it \
                 (build a pool in this process)",
            ));
        }
        // ORDERING: Relaxed: equal only if this thread stored it (see `CallLock::drop`).
        if self.calls_owner.load(Ordering::Relaxed) == this_thread() {
            return Err(Error::invalid(
                "a call on a pool from inside one of its own calls (its combine function, say) \
                 would wait for itself; use another pool for the inner call",
            ));
        }
        Ok(())
    }
}

/// What a worker that joins a call in progress must have: the call's arrays and the shared
/// objects its arguments name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Joining<'a> {
    pub(crate) regions: &'a [&'a Region],
    pub(crate) handles: &'a [Outgoing],
}

impl Joining<'_> {
    /// For a worker that starts between calls.
    pub(crate) const NONE: Joining<'static> = Joining {
        regions: &[],
        handles: &[],
    };
}

/// Serialised arguments and the shared objects they name (see `shm::handle`).
#[derive(Debug, Default)]
pub(crate) struct Args {
    pub(crate) bytes: Vec<u8>,
    pub(crate) handles: Vec<Outgoing>,
}

impl Args {
    /// Serialises `value`, collecting the shared objects in it; `what` names it in errors.
    pub(crate) fn encode<P: Serialize>(value: &P, what: &str) -> Result<Args> {
        let (bytes, handles) = handle::collecting(|| postcard::to_stdvec(value));
        let bytes =
            bytes.map_err(|e| Error::invalid(format!("{what} could not be serialised: {e}")))?;
        Ok(Args { bytes, handles })
    }
}

/// A finished call whose every chunk succeeded; holds the call lock so that the results stay
/// in place while the caller decodes them.
pub(crate) struct Finished<'p> {
    shared: &'p PoolShared,
    calls: CallLock<'p>,
    nchunks: usize,
}

impl Finished<'_> {
    pub(crate) fn nchunks(&self) -> usize {
        self.nchunks
    }

    /// The serialised result of chunk `i`.
    pub(crate) fn result(&self, i: usize) -> &[u8] {
        self.shared.chunk_bytes(i, &self.calls)
    }

    /// An error in a forked copy of the process that made the call: its results lie in shared
    /// memory that the owner's next call reuses, so the copy must stop reading them.
    pub(crate) fn still_ours(&self) -> Result<()> {
        if self.shared.owned_here() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Unsupported,
                "the process forked while it read a call's results; the forked copy cannot \
                 use them",
            ))
        }
    }

    /// Rows in each chunk (the last may have fewer).
    pub(crate) fn rows_per_chunk(&self) -> usize {
        // SAFETY: we hold the call lock, so the description is the finished call's.
        unsafe { self.shared.control.read_job() }.rows_per_chunk as usize
    }

    /// True if some chunk asked the call to stop.
    pub(crate) fn ran_any_stop(&self) -> bool {
        (0..self.nchunks).any(|i| self.ran(i) == Some(true))
    }

    /// Whether chunk `i` ran to the end (`Some(true)` if it asked the call to stop), or never
    /// ran (`None`: the call stopped first).
    pub(crate) fn ran(&self, i: usize) -> Option<bool> {
        // ORDERING: SeqCst, like every state load; the call is over.
        match self.shared.control.chunk(i).state.load(Ordering::SeqCst) {
            OK => Some(false),
            STOPPED => Some(true),
            _ => None,
        }
    }
}

/// The caller's side of a streaming task-style call ([`PoolShared::call_tasks`]): it takes
/// each chunk's result while the call runs, and may add chunks to the running call.
///
/// Both methods run on the waiting caller's thread, inside the call: they must not panic (the
/// process aborts: unwinding would release the call while workers still write into it) and
/// must not call the pool.
pub(crate) trait Stream {
    /// Chunk `c` finished without a failure (state [`ChunkState::Ok`]): called as soon as the
    /// waiting caller sees it, at most once per chunk.
    fn finished(&mut self, c: usize, report: ChunkReport<'_>);

    /// Whether work may have arrived since the last [`more`](Stream::more): a cheap check,
    /// made before the waiting caller sleeps (a submitter wakes it with
    /// [`PoolShared::nudge_caller`] after this starts to return true).
    fn has_more(&self) -> bool {
        false
    }

    /// Writes the input of at most `room` chunks more, numbered from `first`, where the call's
    /// trampoline finds them, and returns how many it wrote: they join the running call.
    fn more(&mut self, first: usize, room: usize) -> usize {
        let _ = (first, room);
        0
    }
}

/// The waiting caller's record of the chunks it has handed out early.
struct Early<'c, 'f> {
    stream: &'f mut dyn Stream,
    /// The call's state, for the caller's own arena (the caller holds the call lock).
    calls: &'c CallState,
    seen: Vec<bool>,
    /// A chunk came back `FULL`: some runner's result space is used up for this call.
    full: bool,
    /// Every chunk below this one has been seen.
    low: usize,
    /// `done` at the last look.
    last_done: u32,
}

/// A worker that died while it worked on the call.
#[derive(Debug, Clone, Copy)]
struct Death {
    pid: i32,
    status: ExitStatus,
    chunk: Option<usize>,
}

#[derive(Debug, Default)]
struct Waited {
    deaths: Vec<Death>,
    timed_out: bool,
    spawn_error: Option<Error>,
    keep_going: bool,
    /// A worker died between claiming a chunk and saying which: in a keep-going call, the
    /// call ends only once every live worker is idle and every chunk is claimed.
    unattributed: bool,
}

impl PoolShared {
    /// Runs one call to completion; the first failed chunk (in chunk order) is the error.
    pub(crate) fn call<'p>(self: &'p Arc<Self>, spec: &CallSpec<'_>) -> Result<Finished<'p>> {
        debug_assert!(!spec.keep_going);
        let (seq, n, waited, calls) = self.run(spec, None)?;
        self.outcome(seq, n, waited, calls)
    }

    /// Runs a task-style call to completion and reports every chunk, failed or not.
    ///
    /// `stream`, if given, is handed each chunk that finished without a failure as soon as
    /// the waiting caller sees it (in such a call every finished chunk wakes the caller), and
    /// asked for more chunks while the call runs (see [`Stream`]); the final report covers
    /// every chunk, added ones too.
    pub(crate) fn call_tasks<'p>(
        self: &'p Arc<Self>,
        spec: &CallSpec<'_>,
        early: Option<&mut dyn Stream>,
    ) -> Result<TaskChunks<'p>> {
        debug_assert!(spec.keep_going);
        let (seq, n, waited, calls) = self.run(spec, early)?;
        if !self.control.claims().all_claimed(seq, n) && waited.spawn_error.is_some() {
            return Err(waited
                .spawn_error
                .unwrap_or_else(|| Error::invalid("unreachable")));
        }
        Ok(TaskChunks {
            shared: self,
            calls,
            n,
            seq,
            waited,
        })
    }

    /// Publishes a call, lets the caller help, waits for it.
    fn run<'p>(
        self: &'p Arc<Self>,
        spec: &CallSpec<'_>,
        early: Option<&mut dyn Stream>,
    ) -> Result<(u32, usize, Waited, CallLock<'p>)> {
        let n = spec.grid.nchunks;
        if spec.params.len() > PARAMS_CAP {
            return Err(Error::invalid(format!(
                "the parameters take {} bytes serialised; at most {PARAMS_CAP} can be passed \
                 (put large data in a SharedArray)",
                spec.params.len()
            )));
        }
        if spec.arrays.len() > MAX_ARRAYS {
            return Err(Error::invalid("too many arrays in one call"));
        }
        debug_assert!(n >= 1 && n <= self.control.layout().max_chunks);
        let regions: Vec<&Region> = spec.arrays.iter().map(|(r, _)| *r).collect();
        let mut calls = self.lock_calls()?;
        // ORDERING: Relaxed: `shutdown` sets it under the call lock (which we hold now);
        // `terminate` sets it without, so a helping caller and `spawn` look again later.
        // `closing`: SeqCst, paired with `shutdown`'s store before it waits for the call lock:
        // a call that wins the lock after that is refused, not run.
        if self.control.header().wake.shutdown.load(Ordering::Relaxed) != 0
            || self.closing.load(Ordering::SeqCst)
        {
            return Err(Error::new(
                ErrorKind::Cancelled,
                "the pool was shut down before this call ran",
            ));
        }
        if self.config.max_tasks_setting().is_some() {
            // Recycled workers leave between calls: reap them, so that `start_missing`
            // replaces them before publishing.
            self.reap_exited();
        }
        self.start_missing()?;
        self.share_regions(&regions, spec.handles)?;
        // Close the previous call's stripes before anything of this call is written
        // (see `claim`): a worker still in that call cannot take a chunk of this one.
        let hdr = self.control.header();
        self.control.claims().close(calls.seq);
        calls.seq = calls.seq.wrapping_add(1).max(1);
        let seq = calls.seq;

        let method = self.config.start_method_setting();
        let mut desc = JobDesc {
            trampoline: code::offset_for(method, spec.trampoline as usize)?,
            flags: if spec.keep_going { KEEP_GOING } else { 0 }
                | if early.is_some() { STREAM } else { 0 },
            user_fn: code::offset_for(method, spec.user_fn)?,
            rows_per_chunk: spec.grid.rows_per_chunk as u64,
            total_rows: spec.rows as u64,
            n_arrays: spec.arrays.len() as u64,
            params_len: spec.params.len() as u64,
            ..JobDesc::default()
        };
        for (dst, (_, src)) in desc.arrays.iter_mut().zip(spec.arrays) {
            *dst = *src;
        }
        // SAFETY: we hold the call lock and the previous call is over, so no worker reads the
        // description or the parameters until we publish below.
        unsafe {
            self.control.write_job(desc);
            std::ptr::copy_nonoverlapping(
                spec.params.as_ptr(),
                self.control.params_ptr(),
                spec.params.len(),
            );
        }
        for i in 0..n {
            // Published by `open` below.
            self.control.chunk(i).reset();
        }
        for i in 0..self.workers_wanted {
            // ORDERING: published by the Release stores in `open` below. Every worker's last
            // store of it for the previous call came before that call's chunks were published.
            self.control
                .worker(i)
                .arena_used
                .store(0, Ordering::Relaxed);
        }
        // ORDERING: published by the Release stores in `open` and of `job.seq`.
        hdr.done.done.store(0, Ordering::Relaxed);
        // `open` before `job.seq`, so a worker that sees the new call also sees its stripes
        // (claims Acquire-load them).
        self.control.claims().open(seq, n);
        // ORDERING: Release, see above.
        hdr.job.seq.store(u64::from(seq), Ordering::Release);
        self.wake_workers();

        // The caller cannot decode handles (it sends them, it does not receive them): with
        // handles in the call, the workers run every chunk.
        if self.config.caller_runs_setting() && spec.handles.is_empty() {
            self.help(seq, &mut calls);
            if !self.owned_here() {
                // A chunk run here forked, and this is the copy: the call, its workers and its
                // results are the other process's. Touch nothing more.
                std::mem::forget(calls);
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "the process forked inside a call on this pool; the forked copy cannot \
                     finish it",
                ));
            }
        }
        let joining = Joining {
            regions: &regions,
            handles: spec.handles,
        };
        let mut early = early.map(|stream| Early {
            stream,
            calls: &calls,
            seen: vec![false; n],
            full: false,
            low: 0,
            last_done: 0,
        });
        let mut n = n;
        let waited = self.wait(seq, &mut n, spec.keep_going, joining, early.as_mut());
        drop(early);
        Ok((seq, n, waited, calls))
    }

    /// The caller runs chunks itself until none is left.
    fn help(&self, seq: u32, calls: &mut CallState) {
        let len = self.config.result_bytes_setting();
        if calls.caller_arena.len() != len {
            calls.caller_arena = vec![0; len];
        }
        let mut runner = chunk::Runner {
            who: CALLER,
            arena: &mut calls.caller_arena,
            used: 0,
            used_word: None,
            full: false,
            owner: Some(&self.creator),
        };
        let mut call = None;
        while let Some(i) = chunk::claim_next(&self.control, seq, CALLER) {
            // ORDERING: Relaxed: a hint; `terminate` also cancels the claims (SeqCst).
            if self.control.header().wake.shutdown.load(Ordering::Relaxed) != 0 {
                // Terminated: this chunk and the rest are left to the call's end.
                break;
            }
            let call = call.get_or_insert_with(|| {
                let regions = super::worker::Regions {
                    mapped: &HashMap::new(),
                    inherited_below: u64::MAX,
                };
                // SAFETY: we wrote the description and `params_len` bytes of parameters under
                // the call lock, which we still hold.
                unsafe {
                    let job = self.control.read_job();
                    let params = std::slice::from_raw_parts(
                        self.control.params_ptr(),
                        job.params_len as usize,
                    );
                    chunk::CallView {
                        arrays: super::worker::resolve(&job, &regions),
                        job,
                        params,
                    }
                }
            });
            // SAFETY: we claimed chunk `i`; arrays resolve to our own addresses; the arena is
            // ours.
            unsafe { chunk::run_chunk(&self.control, call, i, &mut runner) };
            if runner.forked() {
                // The chunk forked and this is the copy: it claims and publishes nothing more.
                break;
            }
        }
    }

    /// True when every chunk is final, or the call is cancelled (from some chunk on: then every
    /// chunk before the limit is final too) and no live worker is still in it.
    fn is_finished(&self, seq: u32, n: usize, waited: &Waited) -> bool {
        let hdr = self.control.header();
        // ORDERING: SeqCst loads pair with the workers' SeqCst `done` increment and state
        // stores, after our announcement on the bell (no missed wake-up).
        if hdr.done.done.load(Ordering::SeqCst) as usize >= n
            && (0..n).all(|i| self.control.chunk(i).state.load(Ordering::SeqCst) != PENDING)
        {
            return true;
        }
        let limit = self.control.claims().limit();
        if limit != u64::MAX {
            // Cancelled from chunk `limit` on: the chunks before it still run (so that the
            // lowest failing chunk is the one reported), and no worker may still be inside.
            let below = usize::try_from(limit).map_or(n, |l| l.min(n));
            // ORDERING: SeqCst, as above.
            return (0..below)
                .all(|i| self.control.chunk(i).state.load(Ordering::SeqCst) != PENDING)
                && self.no_live_worker_in(seq);
        }
        if waited.unattributed {
            return self.control.claims().all_claimed(seq, n) && self.no_live_worker_in(seq);
        }
        false
    }

    fn no_live_worker_in(&self, seq: u32) -> bool {
        let workers = self.workers.lock();
        workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.alive)
            .all(|(i, _)| {
                // ORDERING: SeqCst, paired with the workers' SeqCst stores of `current`.
                let (s, state) = unpack(self.control.worker(i).current.load(Ordering::SeqCst));
                s != seq || state == IDLE
            })
    }

    fn cancel(&self) {
        self.control.claims().cancel();
    }

    /// Waits for the call to finish: spins for the pool's spin time, then sleeps on the
    /// `parent` bell (see `chunk::wake_parent`), checking every `CHECK_EVERY` that every
    /// worker lives and replacing the dead.
    fn wait(
        self: &Arc<Self>,
        seq: u32,
        n: &mut usize,
        keep_going: bool,
        call: Joining<'_>,
        mut early: Option<&mut Early<'_, '_>>,
    ) -> Waited {
        let hdr = self.control.header();
        let spin = self.config.spin_setting();
        let timeout = self.config.call_timeout_setting();
        let started = Instant::now();
        let mut last_check = started;
        let mut out = Waited {
            keep_going,
            ..Waited::default()
        };
        let mut spins = 0u32;
        loop {
            if self.is_finished(seq, *n, &out) {
                return out;
            }
            spins = spins.wrapping_add(1);
            if spins % 16 != 0 {
                std::hint::spin_loop();
                continue;
            }
            if let Some(early) = early.as_deref_mut() {
                if early.stream.has_more() && self.may_grow(*n, &out, early) {
                    *n = self.grow(*n, early);
                }
                // One load of `done` when nothing has finished since the last look.
                self.hand_out_finished(seq, *n, early);
            }
            let now = Instant::now();
            if now - last_check >= CHECK_EVERY {
                self.check_workers(seq, &mut out, call);
                last_check = now;
            }
            if let Some(limit) = timeout {
                if !out.timed_out && now - started >= limit {
                    out.timed_out = true;
                    self.cancel();
                    self.kill_workers_in(seq);
                }
            }
            if now - started < spin {
                std::thread::yield_now();
                continue;
            }
            // Sleep on the bell (`wake::Bell`): a runner publishes its chunk's state, then rings
            // (see `chunk::publish`), and a submitter bumps what the stream's `has_more` loads,
            // then rings (`nudge_caller`). The re-check runs after our announcement.
            hdr.done.parent.sleep_unless(
                || {
                    // A streaming caller also stays up for a chunk counted in `done` since its
                    // last hand-out: its runner may have rung before our announcement.
                    let more = early.as_deref().is_some_and(|e| {
                        (e.stream.has_more() && self.may_grow(*n, &out, e))
                            || hdr.done.done.load(Ordering::SeqCst) != e.last_done
                    });
                    more || self.is_finished(seq, *n, &out)
                },
                Some(CHECK_EVERY),
            );
        }
    }

    /// Whether chunks may still join the running call: not after it was cancelled, nor once the
    /// pool is closing, nor when the pool has a call timeout (it counts from the call's start,
    /// which would be unfair to a task that joined late), nor past the chunk slots, nor once a
    /// runner's result space is full for this call (new tasks get fresh space in the next).
    fn may_grow(&self, n: usize, waited: &Waited, early: &Early<'_, '_>) -> bool {
        let hdr = self.control.header();
        // ORDERING: SeqCst loads, like the others of the wait; a cancellation that lands after
        // this look makes the added chunks NotRun, which the caller runs again.
        n < self.control.layout().max_chunks
            && !early.full
            && !waited.timed_out
            && !self.closing.load(Ordering::SeqCst)
            && self.config.call_timeout_setting().is_none()
            && !self.control.claims().is_cancelled()
            && hdr.wake.shutdown.load(Ordering::SeqCst) == 0
    }

    /// Lets the stream add chunks to the running call; returns the new chunk count.
    ///
    /// The added slots are reset, then `nchunks` grows (SeqCst, so Release: a claimer
    /// Acquire-loads it before it reads a chunk's input), then the workers are woken: one
    /// that left the claim loop before the growth sees the epoch move and claims again (see
    /// `worker::more_to_claim`).
    fn grow(&self, n: usize, early: &mut Early<'_, '_>) -> usize {
        let room = self.control.layout().max_chunks - n;
        let added = match panic::catch_unwind(AssertUnwindSafe(|| early.stream.more(n, room))) {
            Ok(added) => added.min(room),
            Err(_) => {
                eprintln!("shmpar: adding chunks to a running call panicked; aborting");
                std::process::abort();
            }
        };
        if added == 0 {
            return n;
        }
        for i in n..n + added {
            // Published by `grow` below; no runner touches these slots before: they lie past
            // the claim limit.
            self.control.chunk(i).reset();
        }
        early.seen.resize(n + added, false);
        // The slots above and the stream's input are published by the growth (see `claim`).
        self.control.claims().grow(n + added);
        self.wake_workers();
        n + added
    }

    /// Wakes a caller that waits on a streaming call so that it asks its stream for more
    /// (call after the stream's `has_more` has started to return true).
    pub(crate) fn nudge_caller(&self) {
        chunk::wake_parent(&self.control);
    }

    /// Hands `early` every chunk that has finished without a failure since its last look. Only
    /// claimed chunks can be final, so the scan ends past the highest claimed one; it starts at
    /// the first chunk not yet handed out, and runs only when `done` has moved since a scan
    /// that accounted for every chunk `done` counted.
    fn hand_out_finished(&self, seq: u32, n: usize, early: &mut Early<'_, '_>) {
        let hdr = self.control.header();
        // ORDERING: SeqCst, like the other loads of the wait. A runner counts a chunk in `done`
        // *before* it stores the chunk's state (see `chunk::publish`), so a scan may see the
        // count and not yet the state: `last_done` moves only when the scan saw as many final
        // states as `done` counts, and otherwise the next look scans again.
        let done = hdr.done.done.load(Ordering::SeqCst);
        if done == early.last_done {
            return;
        }
        let claimed = self.control.claims().claimed_below(seq, n);
        while early.low < n && early.seen[early.low] {
            early.low += 1;
        }
        // Every chunk below `low` was handed out, so it is final.
        let mut final_states = early.low;
        for i in early.low..claimed {
            if early.seen[i] {
                final_states += 1;
                continue;
            }
            let slot = self.control.chunk(i);
            // ORDERING: SeqCst, paired with the SeqCst state stores; a final state stays.
            let state = slot.state.load(Ordering::SeqCst);
            if state != PENDING {
                final_states += 1;
            }
            early.full |= state == FULL;
            if state != OK {
                continue;
            }
            early.seen[i] = true;
            // ORDERING: published by the state load above.
            let who = slot.worker.load(Ordering::Relaxed);
            let report = ChunkReport {
                state: ChunkState::Ok,
                bytes: self.chunk_bytes(i, early.calls),
                progress: 0,
                pid: self.pid_of(who),
                status: None,
                timed_out: false,
            };
            let handed = panic::catch_unwind(AssertUnwindSafe(|| early.stream.finished(i, report)));
            if handed.is_err() {
                // Unwinding from here would release the call lock while workers still write
                // into the call's slots, and the next call would reuse them under their feet.
                eprintln!("shmpar: a chunk's early hand-out panicked inside a call; aborting");
                std::process::abort();
            }
        }
        if final_states >= done as usize {
            early.last_done = done;
        }
    }

    /// Reaps dead workers, fails the chunks they held, and starts replacements.
    /// `regions`: the call's, which a replacement joining it must map.
    fn check_workers(self: &Arc<Self>, seq: u32, out: &mut Waited, call: Joining<'_>) {
        let mut dead = Vec::new();
        {
            let mut workers = self.workers.lock();
            for (i, w) in workers.iter_mut().enumerate().filter(|(_, w)| w.alive) {
                let status = match w.child.try_wait() {
                    Ok(None) => continue,
                    Ok(Some(status)) => status,
                    // ECHILD: someone else reaped it (a stray `waitpid(-1)`): it is gone.
                    Err(_) => ExitStatus::Exited(-1),
                };
                w.alive = false;
                w.queue.clear();
                dead.push(i);
                self.note_exit(i, status);
                self.hand_over_arena(i);
                // ORDERING: SeqCst, paired with the worker's SeqCst stores of `current`.
                let (s, state) = unpack(self.control.worker(i).current.load(Ordering::SeqCst));
                if s != seq || state == IDLE {
                    continue; // it died between calls or chunks: nothing was lost
                }
                let chunk = (state < CLAIMING).then_some(state as usize);
                if !out.keep_going {
                    match chunk {
                        // As after a failed chunk: the chunks before it still run, so that the
                        // call reports its lowest failing chunk.
                        Some(c) => self.control.claims().cancel_from(c + 1),
                        None => self.cancel(),
                    }
                }
                out.unattributed |= chunk.is_none();
                if let Some(c) = chunk {
                    let slot = self.control.chunk(c);
                    // ORDERING: SeqCst, like every state store; the worker is dead, so no race.
                    if slot.state.load(Ordering::SeqCst) == PENDING {
                        slot.worker.store(i as u32, Ordering::Relaxed);
                        slot.state.store(DIED, Ordering::SeqCst);
                        // Count it done, as its worker would have: a keep-going call ends when
                        // every chunk is final. (If the worker had already counted it, `done`
                        // runs one ahead, which is harmless: completion is confirmed by the
                        // chunk states.)
                        // ORDERING: SeqCst, like the workers' increments.
                        self.control
                            .header()
                            .done
                            .done
                            .fetch_add(1, Ordering::SeqCst);
                    }
                }
                out.deaths.push(Death {
                    pid: w.child.pid(),
                    status,
                    chunk,
                });
            }
        }
        for i in dead {
            if let Err(e) = self.spawn(self, i, call) {
                out.spawn_error.get_or_insert(e);
            }
        }
        if self.workers.lock().iter().all(|w| !w.alive) {
            // No worker left to run the rest: end the call rather than wait forever.
            self.cancel();
        }
    }

    /// Makes a replacement for worker `i` write after everything its predecessor left in the
    /// arena during this call (finished chunks, and the partial chunk it died in).
    fn hand_over_arena(&self, i: usize) {
        let n = self.control.claims().nchunks();
        let slot = self.control.worker(i);
        // ORDERING: Acquire, paired with the dead worker's Release stores.
        let mut end = slot.arena_used.load(Ordering::Acquire);
        for c in 0..n.min(self.control.layout().max_chunks) {
            let chunk = self.control.chunk(c);
            // ORDERING: Relaxed reads of a dead writer's values, published by its exit (the
            // Acquire above and waitpid order them).
            if chunk.worker.load(Ordering::Relaxed) == i as u32 {
                let o = chunk.offset.load(Ordering::Acquire);
                end = end.max(o + chunk.len.load(Ordering::Relaxed));
            }
        }
        // ORDERING: Release, read (Acquire) by the replacement when it joins the call.
        slot.arena_used.store(end, Ordering::Release);
    }

    /// Starts a worker in every empty slot (a failed start, or a recycled worker reaped by
    /// [`reap_exited`](Self::reap_exited)). An error only when no worker is left to run the
    /// call (a pool whose workers keep failing to start says why).
    fn start_missing(self: &Arc<Self>) -> Result<()> {
        let missing: Vec<usize> = (self.workers.lock().iter().enumerate())
            .filter(|(_, w)| !w.alive)
            .map(|(i, _)| i)
            .collect();
        let mut failed = None;
        for i in missing {
            if let Err(e) = self.spawn(self, i, Joining::NONE) {
                failed.get_or_insert(e);
            }
        }
        match failed {
            Some(e) if self.workers.lock().iter().all(|w| !w.alive) => Err(e),
            _ => Ok(()),
        }
    }

    /// Reaps workers that exited between calls (recycled), leaving their slots empty for
    /// [`start_missing`](Self::start_missing), the one place that starts replacements.
    fn reap_exited(&self) {
        for (i, w) in self
            .workers
            .lock()
            .iter_mut()
            .enumerate()
            .filter(|(_, w)| w.alive)
        {
            match w.child.try_wait() {
                Ok(None) => continue,
                Ok(Some(status)) => self.note_exit(i, status),
                Err(_) => {}
            }
            w.alive = false;
            w.queue.clear();
        }
    }

    /// At a time-out: kills every worker still in call `seq`, and every one that never joined
    /// it (a healthy idle worker joins within microseconds; one that did not in the whole
    /// time-out is stopped or stuck). Only the workers that finished their part are spared.
    fn kill_workers_in(&self, seq: u32) {
        let workers = self.workers.lock();
        for (i, w) in workers.iter().enumerate().filter(|(_, w)| w.alive) {
            let slot = self.control.worker(i);
            // A replacement still running its initializer has not had a chance to join: its
            // start is bounded by its own failures, not by this call's time-out.
            // ORDERING: Acquire, paired with the worker's Release store of `ready`.
            if slot.ready.load(Ordering::Acquire) != READY {
                continue;
            }
            // ORDERING: SeqCst, as in `no_live_worker_in`.
            let (s, state) = unpack(slot.current.load(Ordering::SeqCst));
            if s != seq || state != IDLE {
                let _ = w.child.kill();
            }
        }
    }

    /// The call's result: `Finished` if every chunk is OK, else the first failure in chunk
    /// order (a time-out first of all).
    fn outcome<'p>(
        &'p self,
        seq: u32,
        n: usize,
        waited: Waited,
        calls: CallLock<'p>,
    ) -> Result<Finished<'p>> {
        let claims = self.control.claims();
        let mut first: Option<Error> = None;
        let mut incomplete = false;
        let mut stopped = false;
        for i in 0..n {
            let slot = self.control.chunk(i);
            // ORDERING: SeqCst, paired with the SeqCst state stores.
            let state = slot.state.load(Ordering::SeqCst);
            // ORDERING: published by the state load above.
            let who = slot.worker.load(Ordering::Relaxed);
            let err = match state {
                OK => continue,
                STOPPED => {
                    stopped = true;
                    continue;
                }
                PANICKED => {
                    let msg = String::from_utf8_lossy(self.chunk_bytes(i, &calls)).into_owned();
                    Error::new(ErrorKind::WorkerPanicked, msg)
                        .with_chunk(i)
                        .with_pid(self.pid_of(who))
                }
                TOO_LARGE => Error::new(
                    ErrorKind::ResultTooLarge,
                    format!(
                        "the chunk's serialised result did not fit in the {} bytes of result \
                         space per worker (raise PoolBuilder::result_bytes)",
                        self.config.result_bytes_setting()
                    ),
                )
                .with_chunk(i)
                .with_pid(self.pid_of(who)),
                DIED => died_error(
                    waited
                        .deaths
                        .iter()
                        .find(|d| d.chunk == Some(i))
                        .or(waited.deaths.first()),
                    i,
                ),
                _ if claims.is_claimed(seq, i) => {
                    // Claimed by a worker that died before it said which chunk it held.
                    died_error(
                        waited
                            .deaths
                            .iter()
                            .find(|d| d.chunk.is_none())
                            .or(waited.deaths.first()),
                        i,
                    )
                }
                _ => {
                    incomplete = true;
                    continue;
                }
            };
            first = Some(err);
            break;
        }
        if let Some(err) = first {
            return self.fail_with(err, &waited, calls);
        }
        // A chunk that asked to stop leaves the chunks after the cancellation unrun: fine.
        if (incomplete && !stopped) || waited.timed_out {
            let timed_out = waited.timed_out;
            let err = waited.spawn_error.unwrap_or_else(|| {
                Error::new(ErrorKind::Io, "the call ended before all of its chunks ran")
            });
            // A time-out stays a time-out, even when no chunk had started.
            let flags = Waited {
                timed_out,
                ..Waited::default()
            };
            return self.fail_with(err, &flags, calls);
        }
        Ok(Finished {
            shared: self,
            calls,
            nchunks: n,
        })
    }

    /// Returns `err`, unless the call timed out: then a time-out error for the same chunk.
    fn fail_with<'p>(
        &'p self,
        err: Error,
        waited: &Waited,
        calls: CallLock<'p>,
    ) -> Result<Finished<'p>> {
        drop(calls);
        if waited.timed_out {
            let limit = self.config.call_timeout_setting().unwrap_or_default();
            let mut timeout = Error::new(
                ErrorKind::TimedOut,
                format!("the call ran longer than its {limit:?} limit; its workers were replaced"),
            );
            if let Some(c) = err.chunk() {
                timeout = timeout.with_chunk(c);
            }
            return Err(timeout);
        }
        Err(err)
    }

    /// The bytes chunk `i` left in its runner's arena: a result, a panic message, or, for a
    /// chunk that did not finish, what it published before each task.
    fn chunk_bytes<'a>(&'a self, i: usize, calls: &'a CallState) -> &'a [u8] {
        let slot = self.control.chunk(i);
        // ORDERING: published by the SeqCst load of the chunk's state that saw it final.
        let who = slot.worker.load(Ordering::Relaxed);
        let offset = slot.offset.load(Ordering::Relaxed) as usize;
        let len = slot.len.load(Ordering::Relaxed) as usize;
        if who == CALLER {
            return (calls.caller_arena)
                .get(offset..offset.saturating_add(len))
                .unwrap_or(&[]);
        }
        let Some(region) = self.arenas.get(who as usize) else {
            return &[];
        };
        if offset.checked_add(len).is_none_or(|end| end > region.len()) {
            return &[];
        }
        // SAFETY: the bytes lie within the arena, which is mapped for the pool's life. Within
        // a call each runner only appends to its arena (a chunk writes after `arena_used`, a
        // replacement after its predecessor's results, a failing initializer's message at the
        // tail past them), and these bytes belong to a chunk that is final (its state was
        // loaded SeqCst before this): nobody writes them until the next call, which cannot
        // start while the call lock is held (our caller holds it, through `calls`).
        unsafe { std::slice::from_raw_parts(region.as_ptr().add(offset), len) }
    }

    fn pid_of(&self, who: u32) -> i32 {
        if who == CALLER {
            return sys::pid();
        }
        self.workers
            .lock()
            .get(who as usize)
            .map_or(0, |w| w.child.pid())
    }
}

/// What became of one chunk of a task-style call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkState {
    /// Every task ran (each task's own result may still be a panic).
    Ok,
    /// Something outside the tasks panicked; `bytes` holds the message.
    Panicked,
    /// A task's result is larger than the whole arena: the first `progress` tasks' results
    /// are in `bytes`, task `progress` failed for size.
    TooLarge,
    /// The arena is full for this call: the first `progress` tasks' results are in `bytes`,
    /// the others run again.
    Full,
    /// The runner died: the first `progress` tasks finished, task `progress` was running.
    Died,
    /// Never started.
    NotRun,
}

/// One chunk's report.
#[derive(Debug)]
pub(crate) struct ChunkReport<'a> {
    pub(crate) state: ChunkState,
    pub(crate) bytes: &'a [u8],
    pub(crate) progress: usize,
    pub(crate) pid: i32,
    pub(crate) status: Option<ExitStatus>,
    pub(crate) timed_out: bool,
}

/// A finished task-style call: every chunk's report, the call lock held while they are read.
pub(crate) struct TaskChunks<'p> {
    shared: &'p PoolShared,
    calls: CallLock<'p>,
    n: usize,
    seq: u32,
    waited: Waited,
}

impl TaskChunks<'_> {
    pub(crate) fn nchunks(&self) -> usize {
        self.n
    }

    pub(crate) fn report(&self, i: usize) -> ChunkReport<'_> {
        let slot = self.shared.control.chunk(i);
        // ORDERING: SeqCst, paired with the SeqCst state stores.
        let raw = slot.state.load(Ordering::SeqCst);
        let who = slot.worker.load(Ordering::Relaxed);
        let death = self.waited.deaths.iter().find(|d| d.chunk == Some(i));
        let state = match raw {
            OK => ChunkState::Ok,
            PANICKED => ChunkState::Panicked,
            TOO_LARGE => ChunkState::TooLarge,
            FULL => ChunkState::Full,
            DIED => ChunkState::Died,
            _ if !self.waited.deaths.is_empty()
                && self.shared.control.claims().is_claimed(self.seq, i) =>
            {
                ChunkState::Died
            }
            _ => ChunkState::NotRun,
        };
        let (bytes, progress) = match state {
            ChunkState::NotRun => (&[][..], 0),
            ChunkState::Ok | ChunkState::Panicked => (self.shared.chunk_bytes(i, &self.calls), 0),
            ChunkState::TooLarge | ChunkState::Full | ChunkState::Died => {
                // ORDERING: Acquire on `progress`, paired with `ChunkInput::report`: at least
                // that many tasks' bytes are within `len`.
                let progress = slot.progress.load(Ordering::Acquire) as usize;
                (self.shared.chunk_bytes(i, &self.calls), progress)
            }
        };
        let death = death.or_else(|| {
            (state == ChunkState::Died)
                .then(|| self.waited.deaths.first())
                .flatten()
        });
        ChunkReport {
            state,
            bytes,
            progress,
            pid: death.map_or_else(|| self.shared.pid_of(who), |d| d.pid),
            status: death.map(|d| d.status),
            timed_out: self.waited.timed_out,
        }
    }
}

fn died_error(death: Option<&Death>, chunk: usize) -> Error {
    match death {
        Some(d) => {
            let hint = if d.status == ExitStatus::Signaled(sys::SIGKILL) {
                " (SIGKILL: killed by a user, a time limit, or the out-of-memory killer)"
            } else {
                ""
            };
            Error::new(
                ErrorKind::WorkerDied,
                format!("the worker {} while it ran this chunk{hint}", d.status),
            )
            .with_chunk(chunk)
            .with_pid(d.pid)
            .with_signal(d.status.signal())
        }
        None => Error::new(
            ErrorKind::WorkerDied,
            "a worker died while it ran this chunk",
        )
        .with_chunk(chunk),
    }
}

#[cfg(test)]
mod tests {
    use super::Grid;

    #[test]
    fn grid_ignores_workers_and_covers_every_row() {
        // (rows, row bytes, chunk bytes, max chunks) -> (chunks, rows per chunk)
        let cases = [
            ((0, 8, 1024, 16), (1, 0)), // empty: one empty chunk
            ((1, 8, 1024, 16), (1, 128)),
            ((1000, 8, 1024, 16), (8, 128)),
            ((10_000, 8, 1024, 16), (16, 625)), // capped: chunks grow instead
            ((5, 4096, 1024, 16), (5, 1)),      // a row bigger than a chunk: one row each
        ];
        for ((rows, row_bytes, chunk_bytes, max), (nchunks, rows_per_chunk)) in cases {
            let want = Grid {
                nchunks,
                rows_per_chunk,
            };
            assert_eq!(Grid::new(rows, row_bytes, chunk_bytes, max), want);
        }
        for rows in [1usize, 2, 7, 100, 12345] {
            for cb in [1usize, 64, 1000, 1 << 20] {
                let g = Grid::new(rows, 8, cb, 64);
                assert!(g.nchunks <= 64);
                assert!(g.nchunks * g.rows_per_chunk >= rows);
                assert!((g.nchunks - 1) * g.rows_per_chunk < rows);
            }
        }
    }
}
