//! `SharedValue<T>`: one value in shared memory, and the marker trait for what may go there.

use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicIsize, AtomicU8, AtomicU16,
    AtomicU32, AtomicU64, AtomicUsize,
};

use crate::error::{Error, Result};
use crate::shm::Region;

/// A type that may live in memory shared between processes.
///
/// # Safety
/// Implementors promise that a value:
/// - holds no pointer or reference (another process maps the memory at another address) and no
///   handle that is only valid in one process (a file descriptor, a thread id);
/// - needs no `Drop`: shared memory outlives any one process, so destructors never run;
/// - is `Sync`: processes (and threads) access it through `&T` at the same time;
/// - if it needs set-up at its final address (a pthread mutex does), does it in
///   [`init_in_place`](ShmSafe::init_in_place).
///
/// Implemented for atomics, plain numbers, arrays of `ShmSafe` values, [`CachePadded`](crate::CachePadded),
/// and shmpar's locks. A `#[repr(C)]` struct of such fields may implement it too:
///
/// ```
/// use std::sync::atomic::AtomicU64;
/// use shmpar::{ShmSafe, SharedValue};
///
/// #[repr(C)]
/// struct Stats {
///     calls: AtomicU64,
///     bytes: AtomicU64,
/// }
/// // SAFETY: two atomics: no pointers, no Drop, Sync.
/// unsafe impl ShmSafe for Stats {}
///
/// let stats = SharedValue::new(Stats { calls: AtomicU64::new(0), bytes: AtomicU64::new(0) })?;
/// # Ok::<(), shmpar::Error>(())
/// ```
pub unsafe trait ShmSafe: Sync {
    /// Finishes setting up a value at its final address in shared memory, before any process
    /// uses it. The default does nothing.
    ///
    /// # Safety
    /// `this` points to a valid, initialised value that no one else uses yet and that will not
    /// move again.
    unsafe fn init_in_place(this: *mut Self) -> Result<()> {
        let _ = this;
        Ok(())
    }
}

macro_rules! shm_safe {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: a plain number or an atomic: no pointers, no Drop, Sync.
        unsafe impl ShmSafe for $t {}
    )*};
}

shm_safe!(
    AtomicBool,
    AtomicI8,
    AtomicI16,
    AtomicI32,
    AtomicI64,
    AtomicIsize,
    AtomicU8,
    AtomicU16,
    AtomicU32,
    AtomicU64,
    AtomicUsize,
    u8,
    u16,
    u32,
    u64,
    usize,
    i8,
    i16,
    i32,
    i64,
    isize,
    f32,
    f64,
    bool,
    (),
);

// SAFETY: an array of ShmSafe values is ShmSafe; each element is set up in place.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {
    unsafe fn init_in_place(this: *mut Self) -> Result<()> {
        for i in 0..N {
            // SAFETY: `this` points to N valid elements at their final address.
            unsafe { T::init_in_place(this.cast::<T>().add(i))? };
        }
        Ok(())
    }
}

/// One value of a [`ShmSafe`] type in shared memory: the counterpart of Python's
/// `multiprocessing.Value`. It dereferences to `&T`. It travels to pool tasks and children
/// inside their arguments (see its `Serialize` impl), and [`clone`](Clone::clone) gives another
/// handle to the same value.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use shmpar::{Process, SharedValue};
///
/// # fn main() -> shmpar::Result<()> {
/// let counter = SharedValue::new(AtomicU64::new(0))?;
/// let child = Process::start(
///     |c: SharedValue<AtomicU64>| c.fetch_add(5, Ordering::Relaxed),
///     counter.clone(),
/// )?;
/// assert_eq!(child.join_value()?, 0);
/// assert_eq!(counter.load(Ordering::Relaxed), 5);
/// # Ok(())
/// # }
/// ```
pub struct SharedValue<T: ShmSafe> {
    /// Shared by the clones: the memory goes when the last one does.
    region: Arc<Region>,
    marker: PhantomData<T>,
}

/// Another handle to the same value (nothing is copied): how a value is given to several
/// tasks, each of which takes its own `SharedValue` as an argument.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// let a = shmpar::SharedValue::new(AtomicU64::new(1))?;
/// let b = a.clone();
/// b.fetch_add(1, Ordering::Relaxed);
/// assert_eq!(a.load(Ordering::Relaxed), 2);
/// # Ok::<(), shmpar::Error>(())
/// ```
impl<T: ShmSafe> Clone for SharedValue<T> {
    fn clone(&self) -> Self {
        SharedValue {
            region: Arc::clone(&self.region),
            marker: PhantomData,
        }
    }
}

// SAFETY: the value is `Sync` (ShmSafe requires it) and only reachable through `&T`.
unsafe impl<T: ShmSafe> Send for SharedValue<T> {}
// SAFETY: as above.
unsafe impl<T: ShmSafe> Sync for SharedValue<T> {}

impl<T: ShmSafe> SharedValue<T> {
    /// Places `value` in a new shared mapping and sets it up there.
    ///
    /// ```
    /// let flag = shmpar::SharedValue::new(std::sync::atomic::AtomicBool::new(false))?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn new(value: T) -> Result<Self> {
        if align_of::<T>() > crate::sys::page_size() {
            return Err(Error::invalid("the value's alignment exceeds a page"));
        }
        let region = Region::new("shmpar-value", size_of::<T>())?;
        let ptr = region.as_ptr().cast::<T>();
        // SAFETY: the region is page-aligned (enough for T, checked above), at least
        // size_of::<T>() bytes, and unused; the value then stays at this address.
        unsafe {
            ptr.write(value);
            T::init_in_place(ptr)?;
        }
        Ok(SharedValue {
            region: Arc::new(region),
            marker: PhantomData,
        })
    }
}

impl<T: ShmSafe> SharedValue<T> {
    /// A raw pointer to the value, for C-style APIs that take the address of shared memory
    /// (it has the provenance of the whole mapping). Writing through it is only sound where the
    /// value's own synchronisation allows it.
    ///
    /// ```
    /// let v = shmpar::SharedValue::new(std::sync::atomic::AtomicU64::new(3))?;
    /// assert_eq!(v.as_ptr() as *const _, &*v as *const _);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn as_ptr(&self) -> *mut T {
        self.region.as_ptr().cast::<T>()
    }
}

impl<T: ShmSafe> Deref for SharedValue<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: `new` wrote and set up a T there; the mapping lives as long as `self`.
        unsafe { &*self.region.as_ptr().cast::<T>() }
    }
}

impl<T: ShmSafe> std::fmt::Debug for SharedValue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedValue")
            .field("type", &std::any::type_name::<T>())
            .field("region", &self.region)
            .finish()
    }
}

/// A `SharedValue` travels to another process inside the arguments of a shmpar call (a pool
/// task, `par_*_with` parameters, [`Process::start`](crate::Process::start),
/// [`PoolBuilder::worker_init_with`](crate::PoolBuilder::worker_init_with)) as a handle, and
/// arrives as the same value in shared memory:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use shmpar::{Pool, SharedValue};
///
/// # fn main() -> shmpar::Result<()> {
/// let pool = Pool::new(2)?;
/// let hits = SharedValue::new(AtomicU64::new(0))?;
/// let tasks = (0..100u64).map(|i| (i, hits.clone()));
/// let out = pool.map(tasks, |(i, hits): (u64, SharedValue<AtomicU64>)| {
///     hits.fetch_add(i, Ordering::Relaxed);
/// })?;
/// assert!(out.iter().all(Result::is_ok));
/// assert_eq!(hits.load(Ordering::Relaxed), 4950);
/// # Ok(())
/// # }
/// ```
///
/// Serialising one anywhere else (with serde_json, say) is an error: a file cannot carry
/// shared memory.
impl<T: ShmSafe + 'static> serde::Serialize for SharedValue<T> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        crate::shm::handle::serialize::<Self, S>(&self.region, serializer)
    }
}

impl<'de, T: ShmSafe + 'static> serde::Deserialize<'de> for SharedValue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let region = crate::shm::handle::deserialize::<Self, D>(deserializer)?;
        if region.len() < size_of::<T>() {
            return Err(serde::de::Error::custom(
                "a shared value's region is too small",
            ));
        }
        // The region holds the sender's `T`, set up in place there (the handle's type was
        // checked against what the sender recorded), at a page-aligned address.
        Ok(SharedValue {
            region: Arc::new(region),
            marker: PhantomData,
        })
    }
}
