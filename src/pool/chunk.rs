//! Running one chunk: the code shared by workers and by a caller that helps.
//!
//! A call is described by a *trampoline*, a monomorphised `unsafe fn` that knows the element
//! types and the user's function type, plus the user's function pointer. Both travel as
//! offsets in the executable (`lifecycle::code`), which mean the same function in every process
//! running this program, however it was started. This is why the user's `map` must be a
//! function pointer (a closure that captures nothing): captured data would point into the
//! parent's memory, which a worker does not have.

use std::cell::RefCell;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use super::control::{
    CALLER, ChunkSlot, Control, FULL, JobDesc, KEEP_GOING, MAX_ARRAYS, MAX_DIMS, OK, PANICKED,
    STOPPED, STREAM, TOO_LARGE,
};

/// One array of a chunk, resolved to this process's address of the whole array.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ArrayPtr {
    /// The element at index 0.
    pub(crate) ptr: *mut u8,
    pub(crate) elem_size: usize,
    pub(crate) ndim: usize,
    pub(crate) shape: [usize; MAX_DIMS],
    /// In elements, per axis.
    pub(crate) strides: [isize; MAX_DIMS],
    /// The axis chunks are taken along.
    pub(crate) axis: usize,
}

impl ArrayPtr {
    pub(crate) const EMPTY: ArrayPtr = ArrayPtr {
        ptr: std::ptr::null_mut(),
        elem_size: 0,
        ndim: 0,
        shape: [0; MAX_DIMS],
        strides: [0; MAX_DIMS],
        axis: 0,
    };

    /// The indices `rows` along the split axis, as a pointer to their first element, a shape
    /// and the strides (a 0-d array is one "row").
    pub(crate) fn rows(&self, rows: &Range<usize>) -> (*mut u8, [usize; MAX_DIMS]) {
        let mut shape = self.shape;
        if self.ndim == 0 {
            return (self.ptr, shape);
        }
        shape[self.axis] = rows.end - rows.start;
        let step = self.strides[self.axis] * self.elem_size as isize;
        // `wrapping_offset`: no claim is made here. The pointer is dereferenced only through a
        // view of the chunk's indices, which lie within the array (or view) the parent
        // described; every description comes from ndarray's own (checked) views of a
        // `SharedArray`, as `Layout` and `describe` are crate-private.
        let ptr = self.ptr.wrapping_offset(rows.start as isize * step);
        (ptr, shape)
    }
}

/// What a trampoline gets.
pub(crate) struct ChunkInput<'a> {
    pub(crate) arrays: [ArrayPtr; MAX_ARRAYS],
    pub(crate) rows: Range<usize>,
    /// The chunk's index (for per-chunk random streams).
    pub(crate) index: usize,
    pub(crate) params: &'a [u8],
    pub(crate) user_fn: usize,
    /// The runner's whole result space (a result larger than this can never be returned).
    pub(crate) arena_len: usize,
    slot: &'a ChunkSlot,
    /// The runner's [`Runner::owner`]: publishes nothing from a forked copy.
    owner: Option<&'a crate::lifecycle::Origin>,
}

impl ChunkInput<'_> {
    /// Publishes that `tasks` tasks of this chunk are done and their results fill the first
    /// `bytes` of the chunk's output: if the worker dies now, the parent keeps them. Returns
    /// false, publishing nothing, in a copy forked by a task: the trampoline stops there.
    #[inline]
    pub(crate) fn report(&self, tasks: usize, bytes: usize) -> bool {
        if self.owner.is_some_and(|o| !o.is_here()) {
            return false;
        }
        // ORDERING: `len` first, then `progress` with Release: a parent that Acquire-loads
        // `progress` sees at least that many tasks' bytes.
        self.slot.len.store(bytes as u64, Ordering::Relaxed);
        self.slot.progress.store(tasks as u32, Ordering::Release);
        true
    }
}

impl std::fmt::Debug for ChunkInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkInput")
            .field("rows", &self.rows)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// Why a chunk produced no result, other than a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkFailure {
    /// The serialised result did not fit in the remaining arena.
    TooLarge,
    /// Not a failure: the result fills this many bytes, and the call should stop (an early
    /// exit: the chunks not yet started are not run).
    Stop(usize),
    /// The next result would fit in an empty result space but not in what is left of it in
    /// this call: the tasks not done run again later (task-style calls only).
    Full,
}

/// Runs the user's function on one chunk and serialises its result into `out`, returning the
/// number of bytes written.
///
/// # Safety
/// `input` must describe live arrays of the element types and dimensionality the trampoline was
/// instantiated for, `user_fn` must be a function pointer of the type it expects, and for
/// mutable calls no other process may access the chunk's rows concurrently.
pub(crate) type Trampoline =
    unsafe fn(input: &ChunkInput<'_>, out: &mut [u8]) -> Result<usize, ChunkFailure>;

/// Whether the panic hook is installed: 0 no, 1 being installed, 2 yes. Not a `Once`: a child
/// forked while another thread was inside `call_once` would find it "running" forever.
static HOOK: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

thread_local! {
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs, once per process and before the first fork, a panic hook that stays silent in
/// workers (it only notes where the panic happened): the default hook locks stderr, which
/// another thread of the parent may have held at fork time. In every other process the
/// previous hook runs as before.
pub(crate) fn install_panic_hook() {
    // ORDERING: AcqRel on the claim, Release when done; a thread that loses the race goes on
    // without waiting (the hook only changes how worker panics are printed).
    if HOOK
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if crate::lifecycle::in_child() {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                PANIC_LOCATION.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    }
    // ORDERING: see above.
    HOOK.store(2, Ordering::Release);
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let msg = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    };
    match PANIC_LOCATION.with(|p| p.borrow_mut().take()) {
        Some(at) => format!("{msg} (at {at})"),
        None => msg,
    }
}

/// A call as one runner sees it: the description, its arrays at this process's addresses, and
/// its parameter bytes.
#[derive(Debug)]
pub(crate) struct CallView<'a> {
    pub(crate) job: JobDesc,
    pub(crate) arrays: [ArrayPtr; MAX_ARRAYS],
    pub(crate) params: &'a [u8],
}

/// Who runs chunks (a worker index or `CALLER`) and where its results go.
pub(crate) struct Runner<'a> {
    pub(crate) who: u32,
    pub(crate) arena: &'a mut [u8],
    /// Bytes of the arena used by this call so far.
    pub(crate) used: usize,
    /// A worker's `arena_used` word, updated before each chunk is published (so that once the
    /// parent has seen every chunk final, no late store can undo its reset for the next call).
    pub(crate) used_word: Option<&'a std::sync::atomic::AtomicU64>,
    /// The arena ran out of room for this call: later task chunks are handed back unrun.
    pub(crate) full: bool,
    /// Whether this is still the process that runs the call (the calling thread that helps,
    /// or a worker): user code in a chunk may fork, and the copy must not publish into the
    /// call.
    pub(crate) owner: Option<&'a crate::lifecycle::Origin>,
}

impl std::fmt::Debug for Runner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("who", &self.who)
            .field("used", &self.used)
            .field("full", &self.full)
            .finish_non_exhaustive()
    }
}

impl Runner<'_> {
    /// True when a chunk run here forked and this is the copy (see `owner`).
    pub(crate) fn forked(&self) -> bool {
        self.owner.is_some_and(|o| !o.is_here())
    }
}

/// Runs chunk `index` and publishes its outcome in the chunk's slot. Returns true when the
/// chunk failed (the call is then cancelled).
///
/// # Safety
/// The caller claimed chunk `index` of the call `call` describes, whose arrays are resolved in
/// this process; `runner.arena` is this runner's own result space.
pub(crate) unsafe fn run_chunk(
    control: &Control,
    call: &CallView<'_>,
    index: usize,
    runner: &mut Runner<'_>,
) -> bool {
    let (job, arrays, params) = (&call.job, &call.arrays, call.params);
    let (who, arena, used) = (runner.who, &mut *runner.arena, &mut runner.used);
    let rpc = job.rows_per_chunk as usize;
    let total = job.total_rows as usize;
    // Saturating: a grid over (nearly) `usize::MAX` rows must not wrap its last chunk away.
    let start = index.saturating_mul(rpc).min(total);
    let end = start.saturating_add(rpc).min(total);
    let slot = control.chunk(index);
    // Where this chunk's bytes start, published before it runs: if the runner dies, the
    // parent can still read the tasks it finished.
    // ORDERING: Release on `offset` (stored last) pairs with the parent's Acquire after it
    // saw the runner die.
    slot.worker.store(who, Ordering::Relaxed);
    slot.len.store(0, Ordering::Relaxed);
    slot.progress.store(0, Ordering::Relaxed);
    slot.offset.store(*used as u64, Ordering::Release);
    let input = ChunkInput {
        arrays: *arrays,
        rows: start..end,
        index,
        params,
        user_fn: crate::lifecycle::code::address(job.user_fn),
        arena_len: arena.len(),
        slot,
        owner: runner.owner,
    };
    // SAFETY: the parent stored the offset of a `Trampoline` of this very executable.
    let trampoline: Trampoline =
        unsafe { std::mem::transmute(crate::lifecycle::code::address(job.trampoline)) };
    let out = &mut arena[*used..];
    let outcome = if runner.full {
        // Out of room for this call already: hand the chunk back without running a task
        // whose result could not be kept.
        Ok(Err(ChunkFailure::Full))
    } else {
        // SAFETY: the caller guarantees the input describes the call's live arrays and that
        // the chunk is ours alone.
        panic::catch_unwind(AssertUnwindSafe(|| unsafe { trampoline(&input, out) }))
    };
    if matches!(outcome, Ok(Err(ChunkFailure::Full))) {
        runner.full = true;
    }
    let (state, offset, len) = match outcome {
        Ok(Ok(len)) => {
            let offset = *used;
            *used += len;
            (OK, offset, len)
        }
        Ok(Err(ChunkFailure::Stop(len))) => {
            let offset = *used;
            *used += len;
            (STOPPED, offset, len)
        }
        Ok(Err(ChunkFailure::TooLarge | ChunkFailure::Full)) => {
            // Keep what the tasks that fit published (task-style calls report as they go).
            let offset = *used;
            // ORDERING: written by this thread in `ChunkInput::report`.
            let len = (slot.len.load(Ordering::Relaxed) as usize).min(arena.len() - offset);
            *used += len;
            let state = match outcome {
                Ok(Err(ChunkFailure::Full)) => FULL,
                _ => TOO_LARGE,
            };
            (state, offset, len)
        }
        Err(payload) => {
            let msg = panic_message(&*payload);
            // Drop the payload inside a guard: a payload whose Drop panics must not unwind
            // out of a worker.
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
            let bytes = msg.as_bytes();
            let room = arena.len() - *used;
            let n = bytes.len().min(room);
            let offset = *used;
            arena[offset..offset + n].copy_from_slice(&bytes[..n]);
            *used += n;
            (PANICKED, offset, n)
        }
    };
    if runner.owner.is_some_and(|o| !o.is_here()) {
        // The user's code forked inside the chunk and this is the copy: the process that owns
        // the call publishes this chunk; a second publication would race with it.
        return true;
    }
    if let Some(word) = runner.used_word {
        // ORDERING: Release, before the chunk's SeqCst publication; read (Acquire) by a
        // replacement worker after the parent hands the arena over.
        word.store(*used as u64, Ordering::Release);
    }
    let outcome = Outcome { state, offset, len };
    publish(control, index, who, outcome, job.flags);
    state != OK && state != STOPPED
}

/// A chunk's final state and where its bytes lie in its runner's arena.
struct Outcome {
    state: u32,
    offset: usize,
    len: usize,
}

/// Publishes chunk `index`'s outcome (run by `who`), cancels the call after a failure, and
/// wakes the caller when it waits for this.
fn publish(control: &Control, index: usize, who: u32, outcome: Outcome, flags: u64) {
    let Outcome { state, offset, len } = outcome;
    let slot = control.chunk(index);
    let (keep_going, stream) = (flags & KEEP_GOING != 0, flags & STREAM != 0);
    // ORDERING: these are published by the SeqCst store of `state` below.
    slot.worker.store(who, Ordering::Relaxed);
    slot.offset.store(offset as u64, Ordering::Relaxed);
    slot.len.store(len as u64, Ordering::Relaxed);
    let hdr = control.header();
    // `done` is counted before the state is published, so a parent that has seen every state
    // final has also seen every increment of this call (it resets `done` for the next call);
    // the count is read back after the state store, so the runner whose store comes last sees
    // every count and rings (see `wake::count_then_publish`).
    let done = crate::wake::count_then_publish(&hdr.done.done, || {
        // ORDERING: SeqCst, as `count_then_publish` and the parent's bell require.
        slot.state.store(state, Ordering::SeqCst);
    });
    let claims = control.claims();
    let all_done = done as usize >= claims.nchunks();
    let cancels = state != OK && !keep_going;
    if state == STOPPED {
        // An early exit: no chunk not yet started runs.
        claims.cancel();
    } else if cancels {
        // The chunks before this one still run, so the call reports its lowest failing chunk.
        claims.cancel_from(index + 1);
    }
    // In a cancelled call the caller waits for the chunks below the limit, which is not
    // `all_done`: each of them wakes it. (The load comes after this chunk's SeqCst state store:
    // a runner that finds the call not cancelled yet is followed by the canceller's ring.)
    let ring = all_done || cancels || stream || claims.is_cancelled();
    if ring && who != CALLER {
        wake_parent(control);
    }
}

/// Wakes the parent if it sleeps (see `wake::Bell`).
pub(crate) fn wake_parent(control: &Control) {
    control.header().done.parent.ring();
}

/// Claims the next chunk of call `seq` for runner `who` (a worker index or `CALLER`), from its
/// own stripe first (see [`Claims::claim`](super::claim::Claims::claim)); the caller owns the
/// last stripe.
#[inline]
pub(crate) fn claim_next(control: &Control, seq: u32, who: u32) -> Option<usize> {
    let stripe = if who == CALLER {
        control.layout().n_stripes - 1
    } else {
        who as usize
    };
    control.claims().claim(seq, stripe)
}
