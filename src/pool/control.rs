//! The control block: one shared region per pool through which the parent posts calls and the
//! workers claim chunks and report results. Only atomics and plain numbers live here.
//!
//! # Layout
//! ```text
//! Header (wake line | claim line | done line | job line) | params | WorkerSlot x W | Stripe x S
//!   | ChunkSlot x C
//! ```
//! Each hot word sits on its own 128-byte line (two 64-byte lines: the adjacent-line
//! prefetcher pairs them) so that claims, completions and wake-ups do not false-share.
//!
//! # A call's protocol
//! The parent, holding the pool's call lock, writes the job description, the parameters, resets
//! `done`, the claim limit and the first `nchunks` chunk states, then opens every stripe
//! (`(seq, 0)`), then `job_seq = seq` (Release), then bumps `epoch` and wakes sleepers. A
//! worker that sees a new `job_seq` marks itself `CLAIMING` and claims chunks by
//! compare-and-swap on its own stripe first, then on the others' (see `claim`): a CAS only
//! succeeds while the stripe's sequence half equals the worker's job, so a worker that is late
//! by a whole call can never take a chunk of the next one.
//!
//! Before it writes anything of a new call, the parent closes the previous call's stripes,
//! `(old seq, u32::MAX)` followed by a Release fence: a claimer still in that call (which may
//! already read the new `nchunks`) then fails its CAS instead of taking a chunk of the new call
//! under the old sequence.
//!
//! Idle workers wait on the `epoch` signal and the waiting parent on the `parent` bell (see
//! `wake`, where the loom models check both). Publishing a call rings nothing: the parent
//! bumps `epoch`. A runner counts its chunk in `done`, publishes the chunk's state (SeqCst),
//! reads `done` back, and rings the bell when every chunk is done (or its chunk failed the
//! call, or the call streams); the parent announces itself on the bell, then re-checks the
//! chunk states (and, streaming, `done` and the submitted work) before it sleeps.
//!
//! A streaming task-style call may grow while it runs: the waiting parent writes the new
//! chunks' input, resets their slots, stores the larger `nchunks` (SeqCst; claimers
//! Acquire-load it), then bumps `epoch`. A worker that found no chunk left and went idle
//! checks, after loading `epoch`, whether its call has chunks left to claim; so it either
//! sees the growth or wakes on the epoch bump.
//!
//! Worker slot `current`, packed as `(seq << 32) | state`:
//!
//! | state            | meaning                                           |
//! |------------------|---------------------------------------------------|
//! | `IDLE`           | not working on call `seq`                         |
//! | `CLAIMING`       | inside the claim loop of call `seq`, no chunk yet |
//! | chunk index `i`  | running chunk `i` of call `seq`                   |
//!
//! Chunk slot `state`: `PENDING` -> (`OK` | `STOPPED` | `PANICKED` | `TOO_LARGE` | `FULL`) by the worker that ran it
//! (which also stores where its bytes start before it begins, and for task-style calls how many
//! tasks it finished after each one),
//! or -> `DIED` by the parent when that worker died. A worker increments `done` *before* it
//! publishes the final state, so once the parent has seen every state final, every increment of
//! the call has happened and `done` may be reset for the next call.

use std::cell::UnsafeCell;
use std::mem::size_of;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::wake::{Bell, Signal};

/// Arrays one call can read or write (a `zip` of six).
pub(crate) const MAX_ARRAYS: usize = 6;
/// Axes an array may have.
pub(crate) const MAX_DIMS: usize = 8;
/// Bytes of parameters one call can pass to its workers.
pub(crate) const PARAMS_CAP: usize = 64 * 1024;

/// Chunk states.
pub(crate) const PENDING: u32 = 0;
pub(crate) const OK: u32 = 1;
pub(crate) const PANICKED: u32 = 2;
pub(crate) const TOO_LARGE: u32 = 3;
pub(crate) const DIED: u32 = 4;
/// The chunk has its result and asks the call to stop: chunks not yet started never run.
pub(crate) const STOPPED: u32 = 5;
/// A task-style chunk stopped because its runner's result space is full for this call: the
/// tasks it finished keep their results, the rest run again in a later call.
pub(crate) const FULL: u32 = 6;

/// Worker-slot states (low half of `current`); anything smaller is a chunk index.
pub(crate) const IDLE: u32 = u32::MAX;
pub(crate) const CLAIMING: u32 = u32::MAX - 1;
/// The largest number of chunks a call may have.
pub(crate) const MAX_CHUNKS: u32 = u32::MAX - 2;

/// Worker start states (`WorkerSlot::ready`).
pub(crate) const STARTING: u32 = 0;
pub(crate) const READY: u32 = 1;
pub(crate) const INIT_FAILED: u32 = 2;

/// Who ran a chunk: a worker index, or the calling thread.
pub(crate) const CALLER: u32 = u32::MAX;

/// Job flag: a failed chunk does not cancel the call (task-style calls: `map` and friends).
pub(crate) const KEEP_GOING: u64 = 1;

/// Job flag: the caller takes each chunk's result as soon as it is final, so every finished
/// chunk wakes it (not only the last).
pub(crate) const STREAM: u64 = 2;

pub(crate) use super::claim::{ClaimLine, Claims, Stripe, pack, unpack};

/// One array of a call, as the parent sees it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ArrayDesc {
    /// The region's id, to find a worker's own mapping of it.
    pub(crate) region: u64,
    /// Where the parent maps it; workers that inherited it map it at the same address.
    pub(crate) parent_addr: u64,
    /// Bytes from the start of the region to the first element (a `.npy` header, a named
    /// segment's header).
    pub(crate) offset: u64,
    pub(crate) elem_size: u64,
    pub(crate) ndim: u64,
    pub(crate) shape: [u64; MAX_DIMS],
    /// Steps between neighbours along each axis, in elements (negative for a reversed axis);
    /// `offset` is where the element at index 0 lies.
    pub(crate) strides: [i64; MAX_DIMS],
    /// The axis the call splits into chunks.
    pub(crate) axis: u64,
}

/// What a call asks the workers to do. Written by the parent before it publishes `job_seq`,
/// read by a worker only after it claimed a chunk of that call.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JobDesc {
    /// `Trampoline` as a `lifecycle::code` offset: the same function in every process that runs
    /// this executable, wherever it is loaded.
    pub(crate) trampoline: u64,
    /// `KEEP_GOING` and `STREAM`, or 0.
    pub(crate) flags: u64,
    /// The user's function, as a `lifecycle::code` offset, passed to the trampoline.
    pub(crate) user_fn: u64,
    pub(crate) rows_per_chunk: u64,
    pub(crate) total_rows: u64,
    pub(crate) n_arrays: u64,
    pub(crate) params_len: u64,
    pub(crate) arrays: [ArrayDesc; MAX_ARRAYS],
}

#[repr(C, align(128))]
pub(crate) struct WakeLine {
    /// Bumped for every call and every batch of mail; idle workers wait on it.
    pub(crate) epoch: Signal,
    /// Set once when the pool is dropped.
    pub(crate) shutdown: AtomicU32,
}

#[repr(C, align(128))]
pub(crate) struct DoneLine {
    /// Chunks finished in this call (the models' atomic under loom: `wake::count_then_publish`
    /// counts on it).
    pub(crate) done: crate::primitive::AtomicU32,
    /// The waiting parent sleeps on it; runners ring it.
    pub(crate) parent: Bell,
}

#[repr(C, align(128))]
pub(crate) struct JobLine {
    pub(crate) seq: AtomicU64,
    pub(crate) desc: UnsafeCell<JobDesc>,
}

#[repr(C)]
pub(crate) struct Header {
    pub(crate) wake: WakeLine,
    pub(crate) claim: ClaimLine,
    pub(crate) done: DoneLine,
    pub(crate) job: JobLine,
}

#[repr(C, align(128))]
pub(crate) struct WorkerSlot {
    /// `(seq << 32) | state`, see the module docs.
    pub(crate) current: AtomicU64,
    /// Bumped by the parent after it sent the worker mail (mappings to add or drop).
    pub(crate) mail_seq: AtomicU64,
    /// Bytes of this slot's result arena used by the current call: reset by the parent for
    /// each call, so that a replacement worker continues after its predecessor's results.
    pub(crate) arena_used: AtomicU64,
    /// `STARTING` until the worker has run its initializer: then `READY`, or `INIT_FAILED`
    /// (the panic message fills the last `init_message` bytes of its arena, past what the
    /// call's results use, which a replacement must keep).
    pub(crate) ready: AtomicU32,
    pub(crate) init_message: AtomicU32,
}

#[repr(C, align(128))]
pub(crate) struct ChunkSlot {
    pub(crate) state: AtomicU32,
    /// Worker index that ran it, or `CALLER`.
    pub(crate) worker: AtomicU32,
    /// The result's bytes in that worker's result arena.
    pub(crate) offset: AtomicU64,
    pub(crate) len: AtomicU64,
    /// Tasks of the chunk finished so far (task-style calls publish it after each task).
    pub(crate) progress: AtomicU32,
}

impl ChunkSlot {
    /// Makes the slot a pending chunk that nobody ran yet, before its call opens or grows.
    pub(crate) fn reset(&self) {
        // ORDERING: Relaxed: published by the Release stores that open the call (the stripes) or
        // grows it (`nchunks`), which claimers Acquire-load before they touch the slot.
        self.state.store(PENDING, Ordering::Relaxed);
        self.worker.store(CALLER, Ordering::Relaxed);
        self.offset.store(0, Ordering::Relaxed);
        self.len.store(0, Ordering::Relaxed);
        self.progress.store(0, Ordering::Relaxed);
    }
}

#[cfg(not(loom))] // loom's atomics are larger: the layout holds for the std build that runs.
const _: () = {
    assert!(size_of::<ArrayDesc>() == 48 + 16 * MAX_DIMS);
    assert!(size_of::<JobDesc>() == 56 + MAX_ARRAYS * size_of::<ArrayDesc>());
    assert!(size_of::<WakeLine>() == 128 && std::mem::align_of::<WakeLine>() == 128);
    assert!(size_of::<ClaimLine>() == 128 && std::mem::align_of::<ClaimLine>() == 128);
    assert!(size_of::<DoneLine>() == 128 && std::mem::align_of::<DoneLine>() == 128);
    assert!(size_of::<JobLine>() == 1152 && std::mem::align_of::<JobLine>() == 128);
    assert!(size_of::<Header>() == 1536);
    assert!(size_of::<WorkerSlot>() == 128 && std::mem::align_of::<WorkerSlot>() == 128);
    assert!(size_of::<ChunkSlot>() == 128 && std::mem::align_of::<ChunkSlot>() == 128);
    assert!(size_of::<Stripe>() == 128 && std::mem::align_of::<Stripe>() == 128);
};

/// Offsets of the parts of a control block for `workers` workers, `stripes` runners that own
/// chunks (the workers, and the caller if it helps) and `chunks` chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) params: usize,
    pub(crate) workers: usize,
    pub(crate) stripes: usize,
    pub(crate) chunks: usize,
    pub(crate) total: usize,
    pub(crate) max_workers: usize,
    pub(crate) n_stripes: usize,
    pub(crate) max_chunks: usize,
}

impl Layout {
    /// `None` if it would not fit in memory, or without a stripe.
    pub(crate) fn new(max_workers: usize, n_stripes: usize, max_chunks: usize) -> Option<Layout> {
        if n_stripes == 0 {
            return None;
        }
        let params = size_of::<Header>();
        let workers = params + PARAMS_CAP;
        let stripes = workers.checked_add(max_workers.checked_mul(size_of::<WorkerSlot>())?)?;
        let chunks = stripes.checked_add(n_stripes.checked_mul(size_of::<Stripe>())?)?;
        let total = chunks.checked_add(max_chunks.checked_mul(size_of::<ChunkSlot>())?)?;
        Some(Layout {
            params,
            workers,
            stripes,
            chunks,
            total,
            max_workers,
            n_stripes,
            max_chunks,
        })
    }
}

/// A pointer to a control block plus its layout: `Copy`, and valid in every process that maps
/// the block at that address (the parent, and workers, which inherit it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Control {
    base: *mut u8,
    layout: Layout,
}

// SAFETY: the block holds only atomics and plain data that is written before it is published
// through an atomic; a `Control` is a pointer into memory that outlives every user of it (the
// pool keeps the region until its workers are gone).
unsafe impl Send for Control {}
// SAFETY: as above.
unsafe impl Sync for Control {}

impl Control {
    /// # Safety
    /// `base` must point to a zero-initialised (or previously used) block of at least
    /// `layout.total` bytes, 128-byte aligned, that stays mapped while this `Control` is used.
    pub(crate) unsafe fn new(base: *mut u8, layout: Layout) -> Control {
        debug_assert_eq!(base as usize % 128, 0);
        Control { base, layout }
    }

    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: `new`'s contract: the block is mapped, aligned, and an all-zero `Header` is
        // valid (atomics and integers).
        unsafe { &*self.base.cast::<Header>() }
    }

    #[inline]
    pub(crate) fn worker(&self, i: usize) -> &WorkerSlot {
        assert!(i < self.layout.max_workers);
        // SAFETY: in bounds by the assert, aligned by the layout (offsets are multiples of 128).
        unsafe {
            &*self
                .base
                .add(self.layout.workers)
                .cast::<WorkerSlot>()
                .add(i)
        }
    }

    #[inline]
    pub(crate) fn chunk(&self, i: usize) -> &ChunkSlot {
        assert!(i < self.layout.max_chunks);
        // SAFETY: in bounds by the assert, aligned by the layout.
        unsafe { &*self.base.add(self.layout.chunks).cast::<ChunkSlot>().add(i) }
    }

    /// The claim state: the shared line and every runner's stripe.
    #[inline]
    pub(crate) fn claims(&self) -> Claims<'_> {
        // SAFETY: `n_stripes` stripes lie at `stripes`, within the block, aligned by the layout;
        // an all-zero `Stripe` is valid (an atomic).
        let stripes = unsafe {
            std::slice::from_raw_parts(
                self.base.add(self.layout.stripes).cast::<Stripe>(),
                self.layout.n_stripes,
            )
        };
        Claims::new(&self.header().claim, stripes)
    }

    /// The parameter bytes area.
    pub(crate) fn params_ptr(&self) -> *mut u8 {
        // SAFETY: `params` is within the block.
        unsafe { self.base.add(self.layout.params) }
    }

    /// A copy of the job description.
    ///
    /// # Safety
    /// Only after claiming a chunk of the current call (or, in the parent, while holding the
    /// call lock): then no one writes the description concurrently.
    pub(crate) unsafe fn read_job(&self) -> JobDesc {
        // SAFETY: the caller guarantees no concurrent writer.
        unsafe { *self.header().job.desc.get() }
    }

    /// # Safety
    /// Only the parent, holding the call lock, before publishing the call.
    pub(crate) unsafe fn write_job(&self, job: JobDesc) {
        // SAFETY: the caller guarantees no reader looks at it until the call is published.
        unsafe { *self.header().job.desc.get() = job };
    }
}
