//! Function pointers that mean the same thing in every process running this executable.
//!
//! A worker started by the fork server is a fresh exec of the program, so its code sits at
//! another address (ASLR). A function travels as its offset inside the loaded object that holds
//! shmpar's own code (the executable, for a program linked the usual way), and is rebuilt on
//! that object's base in the receiving process. A function outside that object (in a library
//! loaded with `dlopen`, say) cannot be found there: it is an error, not a jump into the void.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::StartMethod;
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

static BASE: AtomicUsize = AtomicUsize::new(0);
static END: AtomicUsize = AtomicUsize::new(0);

/// Where the object holding this crate's code starts and ends in this process; `None` if the
/// loader cannot tell (a static executable without `dladdr`, say).
fn bounds() -> Option<(usize, usize)> {
    // ORDERING: Relaxed: both values are the same whoever computes them, so a racing first
    // use only computes them twice.
    let (base, end) = (BASE.load(Ordering::Relaxed), END.load(Ordering::Relaxed));
    if base != 0 && end != 0 {
        return Some((base, end));
    }
    let anchor = bounds as fn() -> Option<(usize, usize)> as usize;
    let (base, end) = sys::object_bounds(anchor)?;
    // ORDERING: see above.
    BASE.store(base, Ordering::Relaxed);
    END.store(end, Ordering::Relaxed);
    Some((base, end))
}

/// The portable form of the function at `addr`, for a process that may be a fresh exec of
/// this program.
///
/// Fails with [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a function that
/// lives outside the executable's image, and with
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) where the image cannot be found.
#[inline]
pub(crate) fn offset(addr: usize) -> Result<u64> {
    let Some((base, end)) = bounds() else {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "the loader cannot tell where this program's code lies (a static executable?), so \
             functions cannot be sent to a fresh exec of it; use StartMethod::Fork",
        ));
    };
    if addr < base || addr >= end {
        return Err(Error::invalid(format!(
            "the function at {addr:#x} is not in the program's executable (a library loaded \
             at run time?): a worker started by the fork server cannot find it; use \
             StartMethod::Fork for such functions"
        )));
    }
    Ok((addr - base) as u64)
}

/// The form of the function at `addr` for processes started with `method`: a checked
/// [`offset`] for the fork server; for a direct fork, which has this very image at the same
/// address, any function at all (the same arithmetic gives its address back).
#[inline]
pub(crate) fn offset_for(method: StartMethod, addr: usize) -> Result<u64> {
    match method {
        StartMethod::ForkServer => offset(addr),
        _ => Ok(addr.wrapping_sub(bounds().map_or(0, |b| b.0)) as u64),
    }
}

/// The function at `offset` (from [`offset`] or [`offset_for`]) in this process.
#[inline]
pub(crate) fn address(offset: u64) -> usize {
    bounds().map_or(0, |b| b.0).wrapping_add(offset as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(x: u32) -> u32 {
        x + 1
    }

    #[test]
    fn round_trips_a_function_of_this_binary() {
        let f = sample as fn(u32) -> u32;
        let off = offset(f as usize).unwrap();
        // SAFETY: `address` gives back the same address in this process, which is `sample`.
        let g: fn(u32) -> u32 = unsafe { std::mem::transmute(address(off)) };
        assert_eq!(g(41), 42);
    }

    #[test]
    fn refuses_an_address_outside_the_image() {
        let on_heap = Box::new(0u64);
        let addr = &*on_heap as *const u64 as usize;
        let err = offset(addr).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        // A direct fork has the same image at the same place: anything goes there.
        let off = offset_for(StartMethod::Fork, addr).unwrap();
        assert_eq!(address(off), addr);
    }
}
