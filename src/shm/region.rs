//! A region: one memfd mapped MAP_SHARED, registered so that pools can track who maps it.
//!
//! # What is shared after fork
//! A forked process inherits every region mapped at fork time, at the same address. Regions
//! created later reach a pool's workers as a file descriptor over the worker's socket, and the
//! worker maps them at an address of its own. When a region is dropped, every worker that maps
//! it is told to unmap it, so the memory goes back to the system as soon as the last process
//! lets go, and nothing is ever left in /dev/shm (a memfd has no name there).
//!
//! # The registry
//! One process-wide lock orders three events: mapping a region (it gets the next id), forking a
//! worker (it records the next id as its `fork_seq`: it inherited exactly the live regions with
//! a smaller id), and dropping a region (every watcher, i.e. every pool, hears of it while the
//! lock is held, so no fork can slip between the unmap and the news). Lock order: registry,
//! then a pool's state.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Weak};

use memmap2::{MmapOptions, MmapRaw};
use parking_lot::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::sys;

/// What a watcher hears about a dropped region.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RegionInfo {
    pub(crate) id: u64,
    pub(crate) addr: usize,
    pub(crate) len: usize,
}

/// Something that must hear when a region is dropped (a pool, whose workers may map it).
pub(crate) trait RegionWatcher: Send + Sync {
    /// Called with the registry locked: must not create or drop regions.
    fn region_dropped(&self, info: RegionInfo);
}

pub(crate) struct Registry {
    next_id: u64,
    watchers: Vec<Weak<dyn RegionWatcher>>,
}

impl Registry {
    /// The id the next region will get; every live region has a smaller one.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Registers a watcher; it is forgotten once its last `Arc` is gone.
    pub(crate) fn watch(&mut self, watcher: Weak<dyn RegionWatcher>) {
        self.watchers.retain(|w| w.strong_count() > 0);
        self.watchers.push(watcher);
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next_id: 1,
    watchers: Vec::new(),
});

/// Locks the process-wide registry (see the module docs for what it orders).
pub(crate) fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock()
}

/// One shared mapping of a memfd.
pub(crate) struct Region {
    id: u64,
    file: File,
    map: std::mem::ManuallyDrop<MmapRaw>,
    /// The bytes the user asked for; the mapping is at least one page.
    len: usize,
    /// The process that created it: only that one tells the registry when it goes.
    owner: i32,
    /// A named segment's name.
    name: Option<String>,
    /// True for the handle that created the named segment: the creating process removes the
    /// name when it drops it.
    owns_name: bool,
    /// The process that created the named segment (a forked child may create one too).
    name_pid: i32,
}

// SAFETY: a Region is a file plus a mapping; the mapping's memory is shared between processes
// anyway, and every access to it goes through types that uphold Rust's aliasing rules
// (`SharedArray` hands out `&`/`&mut` views according to its own borrows).
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` only exposes the address and the descriptor.
unsafe impl Sync for Region {}

impl Region {
    /// Creates a zero-filled shared region of `len` bytes (`len` may be 0).
    pub(crate) fn new(name: &str, len: usize) -> Result<Region> {
        let map_len = len.max(1).next_multiple_of(sys::page_size());
        let fd: OwnedFd = sys::memfd(name, map_len as u64)
            .map_err(|e| Error::io(format!("could not create a {len}-byte shared region"), e))?;
        Region::map(File::from(fd), map_len, len, None, false)
    }

    /// Maps all `len` bytes of `file` shared and writable (a `.npy` file, a named segment).
    /// `name`: a named segment's name; `owns_name`: this process created it and removes the
    /// name when the region is dropped here.
    pub(crate) fn from_file(
        file: File,
        len: usize,
        name: Option<String>,
        owns_name: bool,
    ) -> Result<Region> {
        if len == 0 {
            return Err(Error::invalid("cannot map an empty file"));
        }
        Region::map(file, len, len, name, owns_name)
    }

    /// Maps `map_len` bytes of `file` and gives the region its id. In the parent the mapping
    /// is made under the registry lock, so that a concurrent fork either inherits it and
    /// counts it (id < fork_seq) or neither. In a forked child the registry's lock may be held
    /// forever (copied locked at the fork): it is not touched, and the region stays out of the
    /// registry (id 0, no owner).
    fn map(
        file: File,
        map_len: usize,
        len: usize,
        name: Option<String>,
        owns_name: bool,
    ) -> Result<Region> {
        let in_child = crate::lifecycle::in_child();
        let mut reg = (!in_child).then(registry);
        let map = MmapOptions::new()
            .len(map_len)
            .map_raw(&file)
            .map_err(|e| Error::io(format!("could not map a {len}-byte shared region"), e))?;
        sys::advise_huge_pages(map.as_mut_ptr(), map_len);
        let id = match reg.as_mut() {
            Some(reg) => {
                reg.next_id += 1;
                reg.next_id - 1
            }
            None => 0,
        };
        drop(reg);
        Ok(Region {
            id,
            file,
            map: std::mem::ManuallyDrop::new(map),
            len,
            owner: if in_child { 0 } else { sys::pid() },
            name,
            owns_name,
            name_pid: sys::pid(),
        })
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Start of the mapping in this process.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// The bytes asked for at creation.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The length of the mapping (whole pages, at least one).
    pub(crate) fn map_len(&self) -> usize {
        self.map.len()
    }

    /// A named segment's name.
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("id", &self.id)
            .field("addr", &self.as_ptr())
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Some(name) = self
            .name
            .as_ref()
            .filter(|_| self.owns_name && sys::pid() == self.name_pid)
        {
            // The creator removes the name (a process forked from it, dropping its copy, does
            // not); a segment already removed (by cleanup_stale, or another program) is not an
            // error worth reporting from a destructor.
            let _ = sys::shm_unlink(name);
        }
        let info = RegionInfo {
            id: self.id,
            addr: self.as_ptr() as usize,
            len: self.map_len(),
        };
        if self.owner == 0 || crate::lifecycle::in_child() || sys::pid() != self.owner {
            // A forked child dropping an inherited handle: unmap our copy only. The registry's
            // lock may have been held by another thread at fork time, so it is not touched.
            // SAFETY: we own the mapping and drop it once; the fd closes with `file`.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.map) };
            return;
        }
        let reg = registry();
        // SAFETY: `self` is being dropped, so no view into the mapping is alive (views borrow
        // the array that owns this region).
        unsafe { std::mem::ManuallyDrop::drop(&mut self.map) };
        let watchers: Vec<Arc<dyn RegionWatcher>> =
            reg.watchers.iter().filter_map(Weak::upgrade).collect();
        for w in &watchers {
            w.region_dropped(info);
        }
        drop(reg);
        // The Arcs are released after the lock: a pool's last Arc may go here, and its drop
        // takes the registry lock.
        drop(watchers);
    }
}
