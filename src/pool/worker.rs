//! The worker process: what runs after fork, until `_exit`.
//!
//! A worker touches only the control block (atomics), its result arena, the arrays of the calls
//! it runs, its socket, and its own heap; it takes no lock that another thread of the parent
//! could have held at fork time, and leaves only through `_exit`.

use std::collections::HashMap;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::chunk::{self, ArrayPtr};
use serde::{Deserialize, Serialize};

use super::control::{
    CLAIMING, Control, IDLE, INIT_FAILED, JobDesc, Layout, MAX_ARRAYS, READY, WorkerSlot, pack,
};
use super::mail::Mail;
use crate::sys;

/// Everything a worker needs: prepared by the parent before a direct fork, or rebuilt by a
/// worker started by the fork server from its [`Boot`] and descriptors.
#[derive(Debug, Clone)]
pub(crate) struct WorkerStart {
    pub(crate) control: Control,
    pub(crate) index: u32,
    pub(crate) arena: *mut u8,
    pub(crate) arena_len: usize,
    pub(crate) sock: RawFd,
    /// The process that forked this worker (the user's process, or the fork server).
    pub(crate) parent: i32,
    /// The first region id this worker did not inherit (filled in at a direct fork; 0 for a
    /// worker started by the fork server, which inherits nothing).
    pub(crate) fork_seq: u64,
    pub(crate) spin: Duration,
    /// The CPU to pin this worker to, if any.
    pub(crate) pin: Option<usize>,
    /// Runs once in the worker before its first chunk, if set.
    pub(crate) init: Option<InitCode>,
    /// After this many chunks the worker exits (between chunks) and is replaced.
    pub(crate) max_tasks: Option<u64>,
    /// Regions already mapped at start: (id, address, length).
    pub(crate) mapped: Vec<(u64, usize, usize)>,
}

// SAFETY: the pointers are addresses of shared mappings that stay mapped while the pool lives;
// the struct only carries them to the worker.
unsafe impl Send for WorkerStart {}

/// A worker initializer, in the portable form that crosses to a fresh exec: a trampoline that
/// knows the argument type, the user's function, and the serialised arguments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InitCode {
    /// `code::offset` of an [`InitTrampoline`].
    pub(crate) trampoline: u64,
    /// `code::offset` of the user's function.
    pub(crate) user_fn: u64,
    pub(crate) args: Vec<u8>,
    /// The shared objects the arguments name, (id, length, fingerprint); their descriptors
    /// travel beside (see `served_main` and the direct fork in `PoolShared::spawn`).
    pub(crate) handles: Vec<crate::shm::handle::Handle>,
}

/// Runs the user's initializer `user_fn` (an address in this process) on `args` for worker
/// `index`.
///
/// # Safety
/// `user_fn` must be the function type this trampoline was instantiated for.
pub(crate) type InitTrampoline = unsafe fn(user_fn: usize, args: &[u8], index: usize);

/// What a worker started by the fork server receives as its payload; its descriptors are the
/// control block, its result arena and its socket, in that order.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Boot {
    pub(crate) index: u32,
    pub(crate) max_workers: u64,
    pub(crate) n_stripes: u64,
    pub(crate) max_chunks: u64,
    pub(crate) arena_len: u64,
    pub(crate) spin_ns: u64,
    pub(crate) pin: Option<u64>,
    pub(crate) init: Option<InitCode>,
    pub(crate) max_tasks: Option<u64>,
    /// The regions of the call in progress, for a replacement that joins it: (id, length),
    /// their descriptors following the first three.
    pub(crate) regions: Vec<(u64, u64)>,
    /// The shared objects of the call in progress: their descriptors follow the
    /// initializer's, before the regions'.
    pub(crate) handles: Vec<crate::shm::handle::Handle>,
    /// The parent's logger, if it has one: its descriptor follows the first three.
    pub(crate) log: Option<crate::logging::LogSetup>,
}

/// How long a sleeping worker waits before it checks that its parent is alive.
const PARENT_CHECK: Duration = Duration::from_millis(100);

/// The entry of a worker started by the fork server: map the control block and the arena from
/// the descriptors, then run [`worker_main`].
pub(crate) fn served_main(payload: Vec<u8>, fds: Vec<OwnedFd>) {
    crate::lifecycle::set_role(crate::lifecycle::Role::Worker(0));
    chunk::install_panic_hook();
    let Ok(boot) = postcard::from_bytes::<Boot>(&payload) else {
        sys::exit_now(1)
    };
    crate::lifecycle::set_role(crate::lifecycle::Role::Worker(boot.index as usize));
    let mut fds = fds.into_iter();
    let (Some(control_fd), Some(arena_fd), Some(sock)) = (fds.next(), fds.next(), fds.next())
    else {
        sys::exit_now(1)
    };
    if let (Some(setup), Some(fd)) = (boot.log, boot.log.and_then(|_| fds.next())) {
        crate::logging::adopt(setup, fd);
    }
    let handles = (boot.init.iter().flat_map(|i| &i.handles)).chain(&boot.handles);
    for (&handle, fd) in handles.zip(&mut fds) {
        crate::shm::handle::receive(handle, fd);
    }
    let mut mapped = Vec::with_capacity(boot.regions.len());
    for (&(id, len), fd) in boot.regions.iter().zip(fds) {
        // A region that cannot be mapped is reported when a chunk needs it.
        if let Ok(addr) = sys::map_shared(fd.as_fd(), len as usize) {
            mapped.push((id, addr as usize, len as usize));
        }
    }
    let Some(layout) = Layout::new(
        boot.max_workers as usize,
        boot.n_stripes as usize,
        boot.max_chunks as usize,
    ) else {
        sys::exit_now(1)
    };
    let (Ok(control), Ok(arena)) = (
        sys::map_shared(control_fd.as_fd(), layout.total),
        sys::map_shared(arena_fd.as_fd(), boot.arena_len as usize),
    ) else {
        sys::exit_now(1)
    };
    // The mappings stay; the descriptors are not needed any more (and nothing may be left to
    // drop if a panic unwinds out of the worker's loop).
    drop((control_fd, arena_fd));
    worker_main(WorkerStart {
        // SAFETY: the parent's control block of `layout.total` bytes, mapped (page-aligned)
        // for the rest of this process's life.
        control: unsafe { Control::new(control, layout) },
        index: boot.index,
        arena,
        arena_len: boot.arena_len as usize,
        sock: sock.into_raw_fd(),
        parent: sys::parent_pid(),
        fork_seq: 0,
        spin: Duration::from_nanos(boot.spin_ns),
        pin: boot.pin.and_then(|cpu| usize::try_from(cpu).ok()),
        init: boot.init,
        max_tasks: boot.max_tasks,
        mapped,
    })
}

/// The worker's main loop. Never returns.
pub(crate) fn worker_main(start: WorkerStart) -> ! {
    if !sys::die_with_parent(start.parent) {
        sys::exit_now(0);
    }
    crate::lifecycle::set_role(crate::lifecycle::Role::Worker(start.index as usize));
    if let Some(cpu) = start.pin {
        // A CPU that cannot be set (the mask changed since the pool was built): unpinned, as
        // `PoolBuilder::pin_workers` says.
        let _ = sys::pin_to_cpu(cpu);
    }
    // A worker forked directly closed the parent's other descriptors before this; one started
    // by the fork server holds only what it was sent.
    let sock = start.sock;
    let control = start.control;
    let slot = control.worker(start.index as usize);
    // SAFETY: the parent created the arena for this worker index only and keeps it mapped
    // while the pool lives; it reads a result only after the worker published it.
    let arena = unsafe { std::slice::from_raw_parts_mut(start.arena, start.arena_len) };
    if let Some(init) = &start.init {
        run_init(init, start.index, slot, arena);
    }
    // ORDERING: Release, paired with the parent's Acquire load while it waits for the start.
    slot.ready.store(READY, Ordering::Release);
    let hdr = control.header();
    let mut mapped: HashMap<u64, (usize, usize)> = (start.mapped.iter())
        .map(|&(id, addr, len)| (id, (addr, len)))
        .collect();
    // Mail sent before this worker existed was for its predecessor; its socket is new.
    let mut mail_seen = 0;
    let mut last_call = 0u32;
    // This worker, as a copy forked by a task can tell it from itself.
    let origin = crate::lifecycle::Origin::here();
    // The call in which this worker's result space ran out (0: none; calls start at 1).
    let mut full_in = 0u32;
    let mut tasks_run = 0u64;
    loop {
        // Read before looking for work, then waited on (`wait_for_change`).
        let epoch = hdr.wake.epoch.seen();
        // ORDERING: Relaxed: shutdown is final, and the epoch bump that follows it wakes us.
        if hdr.wake.shutdown.load(Ordering::Relaxed) != 0 {
            sys::exit_now(0);
        }
        // ORDERING: Acquire, paired with the parent's Release store that publishes a call.
        // The call is loaded *before* the mail: the parent sends a call's regions and bumps
        // `mail_seq` before it publishes the call, so having seen the call we see its mail.
        let call = hdr.job.seq.load(Ordering::Acquire) as u32;
        // ORDERING: Acquire, paired with the parent's Release store after it sent the mail.
        let mail = slot.mail_seq.load(Ordering::Acquire);
        if mail != mail_seen {
            read_mail(sock, &mut mapped);
            mail_seen = mail;
        }
        // A new call, or chunks added to the one this worker left (see `more_to_claim`).
        if call != last_call || more_to_claim(&control, call) {
            last_call = call;
            let regions = Regions {
                mapped: &mapped,
                inherited_below: start.fork_seq,
            };
            let budget = Budget {
                run: &mut tasks_run,
                max: start.max_tasks,
            };
            // Back in the call it ran out of space in, it hands chunks back unrun, as before.
            let was_full = full_in == call;
            // SAFETY: the arena is ours; `regions` knows this worker's mappings.
            let full = unsafe {
                let me = Me {
                    index: start.index,
                    origin: &origin,
                };
                work_on_call(&control, call, me, arena, &regions, budget, was_full)
            };
            if full {
                full_in = call;
            }
            // This worker is done with the call: arrays lent to it for the call go back.
            crate::shm::handle::revoke_lent();
        }
        wait_for_change(&control, epoch, start.spin, start.parent);
    }
}

/// Whether call `seq` has chunks left to claim: the waiting caller may add chunks to a
/// streaming call after this worker found none left and went idle. The caller grows
/// `nchunks` (SeqCst) before it bumps the epoch, and this runs after the worker loaded the
/// epoch (SeqCst): either this sees the growth, or the epoch has moved and the wait returns
/// at once to look again.
fn more_to_claim(control: &Control, seq: u32) -> bool {
    control.claims().has_more(seq)
}

/// Runs the initializer; a panic in it is published (message in the arena, `INIT_FAILED`) and
/// ends the worker, so the parent reports it instead of starting the next one blindly.
fn run_init(init: &InitCode, index: u32, slot: &WorkerSlot, arena: &mut [u8]) {
    let trampoline = crate::lifecycle::code::address(init.trampoline);
    let user_fn = crate::lifecycle::code::address(init.user_fn);
    // SAFETY: the parent encoded an `InitTrampoline` instantiated for the user's function
    // type, from this same executable.
    let trampoline: InitTrampoline = unsafe { std::mem::transmute(trampoline) };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: see above: `user_fn` has the type the trampoline expects.
        unsafe { trampoline(user_fn, &init.args, index as usize) }
    }));
    if let Err(payload) = outcome {
        let msg = chunk::panic_message(&*payload);
        // At the arena's tail, past the results a predecessor left for this call (the parent
        // may still read them): as much of the message as fits there.
        // ORDERING: Acquire, paired with the parent's Release store before it forked us.
        let used = (slot.arena_used.load(Ordering::Acquire) as usize).min(arena.len());
        let n = msg.len().min(arena.len() - used);
        let at = arena.len() - n;
        arena[at..].copy_from_slice(&msg.as_bytes()[..n]);
        // ORDERING: the message and its length before the Release store of the state.
        slot.init_message.store(n as u32, Ordering::Relaxed);
        slot.ready.store(INIT_FAILED, Ordering::Release);
        sys::exit_now(101);
    }
}

/// How many chunks a worker may still run before it is recycled.
struct Budget<'a> {
    run: &'a mut u64,
    max: Option<u64>,
}

/// Which worker runs a call: its index, and the process it is (so that a copy forked by a
/// task can tell it is not).
struct Me<'a> {
    index: u32,
    origin: &'a crate::lifecycle::Origin,
}

/// Claims and runs chunks of call `seq` until none is left; `full`: the result space already
/// ran out in this call. Returns whether it has run out.
///
/// # Safety
/// `arena` is this worker's own result arena.
unsafe fn work_on_call(
    control: &Control,
    seq: u32,
    me: Me<'_>,
    arena: &mut [u8],
    regions: &Regions<'_>,
    budget: Budget<'_>,
    full: bool,
) -> bool {
    let (index, origin) = (me.index, me.origin);
    let slot = control.worker(index as usize);
    // ORDERING: SeqCst: the parent that cancels a call stores the claim limit then loads
    // `current` (SeqCst); we store `current` then load the limit in `claim_next`. One sees the
    // other.
    slot.current.store(pack(seq, CLAIMING), Ordering::SeqCst);
    // A replacement continues after the results its predecessor left in this call.
    // ORDERING: Acquire, paired with the parent's Release store (reset per call, or set before
    // forking a replacement).
    let used = (slot.arena_used.load(Ordering::Acquire) as usize).min(arena.len());
    let mut runner = chunk::Runner {
        who: index,
        arena,
        used,
        used_word: Some(&slot.arena_used),
        full,
        owner: Some(origin),
    };
    let mut call: Option<chunk::CallView<'_>> = None;
    while let Some(i) = chunk::claim_next(control, seq, index) {
        // ORDERING: SeqCst so that a parent that sees us dead reads the chunk we held.
        slot.current.store(pack(seq, i as u32), Ordering::SeqCst);
        let call = call.get_or_insert_with(|| {
            // SAFETY: we hold a chunk of call `seq`, so the parent is not rewriting the
            // description or the parameters (it starts the next call only after this chunk is
            // final), and it wrote `params_len` bytes of parameters before publishing.
            unsafe {
                let job = control.read_job();
                let params =
                    std::slice::from_raw_parts(control.params_ptr(), job.params_len as usize);
                chunk::CallView {
                    arrays: resolve(&job, regions),
                    job,
                    params,
                }
            }
        });
        // SAFETY: we claimed chunk `i`; the arrays are resolved in this process; the arena is
        // ours.
        unsafe { chunk::run_chunk(control, call, i, &mut runner) };
        if runner.forked() {
            // A task forked and this is the copy: it published nothing; it leaves now,
            // claiming nothing more.
            sys::exit_now(0);
        }
        *budget.run += 1;
        if budget.max.is_some_and(|max| *budget.run >= max) {
            // Recycled: leave between chunks, idle, so the parent replaces us without failing
            // anything.
            // ORDERING: SeqCst, as above.
            slot.current.store(pack(seq, IDLE), Ordering::SeqCst);
            sys::exit_now(0);
        }
        // ORDERING: SeqCst, as above.
        slot.current.store(pack(seq, CLAIMING), Ordering::SeqCst);
    }
    // ORDERING: SeqCst, read by the parent's check that every live worker is idle.
    slot.current.store(pack(seq, IDLE), Ordering::SeqCst);
    // ORDERING: SeqCst, with the canceller's store of the claim limit (see above).
    if control.claims().is_cancelled() {
        chunk::wake_parent(control);
    }
    runner.full
}

/// Where a process finds the regions of a call.
#[derive(Debug)]
pub(crate) struct Regions<'a> {
    /// Regions sent as descriptors, mapped at this process's own addresses.
    pub(crate) mapped: &'a HashMap<u64, (usize, usize)>,
    /// Regions with a smaller id were inherited at fork, at the parent's address
    /// (`u64::MAX` in the parent itself).
    pub(crate) inherited_below: u64,
}

/// The call's arrays at this process's addresses. A region this process neither inherited nor
/// received is a bug or a failed mapping: it panics (reported as a failed chunk) rather than
/// read whatever happens to sit at the parent's address.
pub(crate) fn resolve(desc: &JobDesc, regions: &Regions<'_>) -> [ArrayPtr; MAX_ARRAYS] {
    let mut out = [ArrayPtr::EMPTY; MAX_ARRAYS];
    for (dst, src) in out
        .iter_mut()
        .zip(&desc.arrays)
        .take(desc.n_arrays as usize)
    {
        let base = match regions.mapped.get(&src.region) {
            Some(&(addr, _)) => addr,
            None if src.region < regions.inherited_below => src.parent_addr as usize,
            None => panic!(
                "shared region {} is not mapped in this worker (could not map it?)",
                src.region
            ),
        };
        // SAFETY (of the later use): the offset lies within the region (checked when the
        // array was made), so `base + offset` points into the same mapping.
        dst.ptr = base.wrapping_add(src.offset as usize) as *mut u8;
        dst.elem_size = src.elem_size as usize;
        dst.ndim = src.ndim as usize;
        dst.axis = src.axis as usize;
        for (d, s) in dst.shape.iter_mut().zip(&src.shape) {
            *d = *s as usize;
        }
        for (d, s) in dst.strides.iter_mut().zip(&src.strides) {
            *d = *s as isize;
        }
    }
    out
}

/// Applies every message waiting on the socket.
fn read_mail(sock: RawFd, mapped: &mut HashMap<u64, (usize, usize)>) {
    let mut buf = [0u8; Mail::SIZE];
    loop {
        match sys::recv_message(sock, &mut buf) {
            Ok(Some((n, fd))) if n == Mail::SIZE => match Mail::decode(&buf) {
                Some(Mail::Map {
                    id,
                    len,
                    fingerprint,
                }) => {
                    let Some(fd) = fd else { continue };
                    if fingerprint != 0 {
                        // A shared object: kept for the handles that name it.
                        let handle = crate::shm::handle::Handle {
                            id,
                            len,
                            fingerprint,
                        };
                        crate::shm::handle::receive(handle, fd);
                    } else if let Ok(ptr) = sys::map_shared(fd.as_fd(), len as usize) {
                        mapped.insert(id, (ptr as usize, len as usize));
                    }
                    // If the mapping failed, a later call on this region faults in this
                    // worker, which the parent reports as WorkerDied: never silent.
                }
                Some(Mail::ForgetMapped { id }) => {
                    crate::shm::handle::forget(id);
                    if let Some((addr, len)) = mapped.remove(&id) {
                        // SAFETY: the parent dropped the region, so no call uses it.
                        unsafe { sys::unmap(addr as *mut u8, len) };
                    }
                }
                Some(Mail::Log { setup }) => {
                    if let Some(fd) = fd {
                        crate::logging::adopt(crate::logging::LogSetup::from_words(setup), fd);
                    }
                }
                Some(Mail::ForgetInherited { addr, len }) => {
                    // SAFETY: inherited at fork at this address, and the parent dropped it: no
                    // call's arguments name it, and nothing else can be mapped over a live
                    // mapping. A copy that a static of a directly forked worker kept still
                    // points here; `StartMethod::Fork`'s docs forbid reaching shared objects
                    // through statics (a rule the crate cannot enforce: a known gap).
                    unsafe { sys::unmap(addr as *mut u8, len as usize) };
                }
                None => {}
            },
            Ok(Some((0, _))) => sys::exit_now(0), // the parent closed its end: it is gone
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(_) => sys::exit_now(0),
        }
    }
}

/// Waits until `epoch` changes (`wake::Signal`): spins for `spin`, then sleeps, checking every
/// `PARENT_CHECK` that the parent still lives.
fn wait_for_change(control: &Control, epoch: u32, spin: Duration, parent: i32) {
    let wake = &control.header().wake.epoch;
    if wake.spin_until_changed(epoch, spin, None) {
        return;
    }
    loop {
        wake.sleep(epoch, Some(PARENT_CHECK));
        if wake.changed(epoch) {
            return;
        }
        if sys::parent_pid() != parent {
            sys::exit_now(0);
        }
    }
}
