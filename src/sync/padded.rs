//! `CachePadded<T>`: a value alone on its cache lines.

use std::ops::{Deref, DerefMut};

use super::value::ShmSafe;
use crate::error::Result;

/// Pads and aligns a value to 128 bytes (two cache lines: the adjacent-line prefetcher pairs
/// them), so that a hot counter shares its line with nothing another process writes.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use shmpar::{CachePadded, SharedValue};
///
/// // One counter per process, each on its own line: no false sharing.
/// let counters = SharedValue::new([
///     CachePadded::new(AtomicU64::new(0)),
///     CachePadded::new(AtomicU64::new(0)),
/// ])?;
/// counters[1].fetch_add(1, Ordering::Relaxed);
/// assert_eq!(std::mem::size_of_val(&*counters), 256);
/// # Ok::<(), shmpar::Error>(())
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(128))]
pub struct CachePadded<T> {
    value: T,
}

impl<T> CachePadded<T> {
    /// Wraps a value.
    ///
    /// ```
    /// let p = shmpar::CachePadded::new(7u64);
    /// assert_eq!(*p, 7);
    /// ```
    pub const fn new(value: T) -> Self {
        CachePadded { value }
    }
}

impl<T> Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for CachePadded<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

// SAFETY: padding adds no pointer and no Drop; the inner value is set up in place.
unsafe impl<T: ShmSafe> ShmSafe for CachePadded<T> {
    unsafe fn init_in_place(this: *mut Self) -> Result<()> {
        // SAFETY: `value` is the first field of a repr(C) struct at its final address.
        unsafe { T::init_in_place(this.cast::<T>()) }
    }
}
