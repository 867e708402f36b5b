//! Size and alignment of every `#[repr(C)]` type that lives in shared memory: every process
//! maps the same bytes, so the layout is part of the contract. (The pool's own control block
//! asserts its layout at compile time in src/pool/control.rs.)

use std::mem::{align_of, size_of};
use std::sync::atomic::AtomicU64;

use shmpar::{Barrier, CachePadded, Condvar, Event, Semaphore, ShmMutex};

#[test]
fn shared_types_have_a_fixed_layout() {
    // Each waits on a `Signal`: a sequence word and a count of sleepers.
    assert_eq!((size_of::<Event>(), align_of::<Event>()), (12, 4));
    assert_eq!((size_of::<Semaphore>(), align_of::<Semaphore>()), (12, 4));
    assert_eq!((size_of::<Condvar>(), align_of::<Condvar>()), (8, 4));
    assert_eq!((size_of::<Barrier>(), align_of::<Barrier>()), (24, 8));
    assert_eq!(
        (
            size_of::<CachePadded<AtomicU64>>(),
            align_of::<CachePadded<AtomicU64>>()
        ),
        (128, 128)
    );
    assert_eq!(size_of::<[CachePadded<u8>; 3]>(), 384);
    // The futex word, the state word, the holder's start time, the robust flag, then the
    // data, aligned.
    assert_eq!(size_of::<ShmMutex<u64>>(), 24);
    assert_eq!(size_of::<ShmMutex<u8>>(), 16);
    assert_eq!(align_of::<ShmMutex<u64>>(), 8);
    assert_eq!(size_of::<ShmMutex<CachePadded<u64>>>(), 256);
}
