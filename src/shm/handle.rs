//! Handles: how a shared object (a [`SharedValue`](crate::SharedValue), a
//! [`Queue`](crate::Queue), a [`Connection`](crate::Connection)) travels to another process
//! inside serialised arguments.
//!
//! # Sending
//! A shared object serialises as a *handle*: its region's id, the region's length, and a
//! fingerprint of its Rust type. Serialising one is only possible while shmpar collects the
//! arguments of a call ([`collecting`]): the region's descriptor is recorded there, and the
//! transport (a pool call, [`Process::start`](crate::Process::start), a worker initializer)
//! sends the descriptors to the receiving process before it reads the arguments. Outside such
//! a call, serialising a shared object is an error (serde_json cannot carry shared memory).
//!
//! # Receiving
//! A process that received descriptors keeps them by region id ([`receive`]). Deserialising a
//! handle maps its region afresh ([`open`]) and checks the fingerprint: a handle of another
//! type, or of a region this process never received (its owner dropped it, say), is an error,
//! never a view of the wrong memory. The object built from a handle owns its own mapping: it
//! stays valid after its owner dropped the original, and dropping it here unmaps only this
//! process's copy.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::Region;
use crate::error::{Error, Result};

/// What a shared object serialises as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Handle {
    pub(crate) id: u64,
    pub(crate) len: u64,
    pub(crate) fingerprint: u64,
}

/// A region an argument refers to, recorded while serialising, with a descriptor of its own:
/// it stays valid whatever happens to the object afterwards (a `Serialize` impl may make an
/// object, serialise it and drop it).
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) id: u64,
    pub(crate) len: u64,
    /// The type of the object that lives there: the receiver checks every handle against the
    /// type the *sender* recorded, so hand-made bytes cannot claim another type.
    pub(crate) fingerprint: u64,
    fd: OwnedFd,
}

impl Outgoing {
    /// What the receiver needs to know of this region beside its descriptor.
    pub(crate) fn handle(&self) -> Handle {
        Handle {
            id: self.id,
            len: self.len,
            fingerprint: self.fingerprint,
        }
    }

    /// The region's descriptor (our own duplicate).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

thread_local! {
    static OUTGOING: RefCell<Option<Vec<Outgoing>>> = const { RefCell::new(None) };
}

/// Runs `f` (which serialises a call's arguments) and returns what it returned with the regions
/// of every shared object it serialised, each once.
/// If `f` panics, the list in place before it is put back all the same (a caught panic must not
/// leave a list that later sends outside a call would fill and nobody drain).
pub(crate) fn collecting<T>(f: impl FnOnce() -> T) -> (T, Vec<Outgoing>) {
    /// Puts the outer list back when dropped, also while unwinding.
    struct Restore(Option<Vec<Outgoing>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            OUTGOING.with(|o| *o.borrow_mut() = outer);
        }
    }
    let _restore = Restore(OUTGOING.with(|o| o.borrow_mut().replace(Vec::new())));
    let out = f();
    let got = OUTGOING.with(|o| o.borrow_mut().take()).unwrap_or_default();
    (out, got)
}

/// The fingerprint of type `T`: its `TypeId` (unique within a build, and the same in every
/// process running this executable), hashed with its size. Never 0 (0 marks an array's
/// region, which no handle names).
pub(crate) fn fingerprint<T: 'static>() -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same value in every process.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x5348_4d50_4152, 0x4841_4e44_4c45);
    std::any::TypeId::of::<T>().hash(&mut h);
    size_of::<T>().hash(&mut h);
    h.finish().max(1)
}

/// The handle of `region` for an object of type `T`, recording the region for the call being
/// serialised. Fails outside such a call, and in a process that received the object itself
/// (handles are passed on by the process that made the object).
pub(crate) fn send<T: 'static>(region: &Region) -> Result<Handle> {
    if region.id() == 0 {
        return Err(Error::invalid(
            "this shared object was received from another process: only the process that made \
             it can pass it on",
        ));
    }
    let handle = Handle {
        id: region.id(),
        len: region.map_len() as u64,
        fingerprint: fingerprint::<T>(),
    };
    OUTGOING.with(|o| match o.borrow_mut().as_mut() {
        Some(list) => {
            if !list.iter().any(|r| r.id == handle.id) {
                let fd = region.fd().try_clone_to_owned().map_err(|e| {
                    Error::io("could not duplicate a shared object's descriptor", e)
                })?;
                list.push(Outgoing {
                    id: handle.id,
                    len: handle.len,
                    fingerprint: handle.fingerprint,
                    fd,
                });
            }
            Ok(handle)
        }
        None => Err(Error::invalid(
            "a shared object can be serialised only as the arguments of a shmpar call (a pool \
             task, par_*_with parameters, Process::start, worker_init_with)",
        )),
    })
}

/// A region this process received: its descriptor, length and the sender's fingerprint of
/// the object in it (0 for an array's region, which no handle names).
struct Received {
    fd: OwnedFd,
    len: u64,
    fingerprint: u64,
}

/// Descriptors this process received, by region id.
static INCOMING: Mutex<Option<HashMap<u64, Received>>> = Mutex::new(None);

/// Keeps the descriptor of region `id` (`len` bytes, holding an object of `fingerprint`) for
/// handles that name it.
pub(crate) fn receive(handle: Handle, fd: OwnedFd) {
    INCOMING.lock().get_or_insert_with(HashMap::new).insert(
        handle.id,
        Received {
            fd,
            len: handle.len,
            fingerprint: handle.fingerprint,
        },
    );
}

/// Forgets region `id` (its owner dropped it): objects already built from it keep their own
/// mapping.
pub(crate) fn forget(id: u64) {
    if let Some(map) = INCOMING.lock().as_mut() {
        map.remove(&id);
    }
}

/// The region a handle for an object of type `T` names, mapped afresh in this process.
pub(crate) fn open<T: 'static>(handle: Handle) -> Result<Region> {
    if handle.fingerprint != fingerprint::<T>() {
        return Err(Error::invalid(format!(
            "a handle of another type was sent where a {} was expected",
            std::any::type_name::<T>()
        )));
    }
    let fd = {
        let incoming = INCOMING.lock();
        let Some(got) = incoming.as_ref().and_then(|m| m.get(&handle.id)) else {
            return Err(Error::invalid(format!(
                "the shared object (region {}) for this {} did not reach this process: was it \
                 dropped by its owner?",
                handle.id,
                std::any::type_name::<T>()
            )));
        };
        if got.len != handle.len || got.fingerprint != handle.fingerprint {
            return Err(Error::invalid(format!(
                "a handle does not match the object its sender sent for region {}",
                handle.id
            )));
        }
        got.fd
            .try_clone()
            .map_err(|e| Error::io("could not duplicate a shared object's descriptor", e))?
    };
    Region::from_file(File::from(fd), handle.len as usize, None, false)
}

/// Serialises a shared object's handle (for `Serialize` impls).
pub(crate) fn serialize<T: 'static, S: serde::Serializer>(
    region: &Region,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    send::<T>(region)
        .map_err(serde::ser::Error::custom)?
        .serialize(serializer)
}

/// Reads a shared object's handle and maps its region (for `Deserialize` impls).
pub(crate) fn deserialize<'de, T: 'static, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Region, D::Error> {
    let handle = Handle::deserialize(deserializer)?;
    open::<T>(handle).map_err(|e| {
        remember(&e);
        serde::de::Error::custom(e)
    })
}

/// Keeps the message of a handle's failure: some formats (postcard) keep no message of a
/// custom error, and [`explain`] adds it back.
pub(crate) fn remember(error: &Error) {
    LAST_ERROR.with(|l| *l.borrow_mut() = Some(error.to_string()));
}

thread_local! {
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Mappings of arrays lent to this worker for one call (see [`revoke_lent`]).
    static LENT: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
}

/// Records the mapping of an array lent by a handle for the call in progress.
pub(crate) fn lend(addr: usize, len: usize) {
    LENT.with(|l| l.borrow_mut().push((addr, len)));
}

/// The mapping at `addr` is being dropped: nothing to revoke there any more.
pub(crate) fn unlend(addr: usize) {
    LENT.with(|l| l.borrow_mut().retain(|&(a, _)| a != addr));
}

/// Ends the loans of a finished call: an array handle is a borrow for the length of its call
/// (the owner may write the array afterwards), so a worker that kept one (in a static, say)
/// faults if it reads it later, rather than race with the owner's writes.
pub(crate) fn revoke_lent() {
    let lent = LENT.with(|l| std::mem::take(&mut *l.borrow_mut()));
    for (addr, len) in lent {
        crate::sys::protect_none(addr as *mut u8, len);
    }
}

/// Forgets the reason a handle gave before: call before decoding, so that a failure swallowed
/// earlier (an `Option` fallback) is not blamed for a later one.
pub(crate) fn clear_reason() {
    LAST_ERROR.with(|l| l.borrow_mut().take());
}

/// What went wrong in decoding `what`: `error`, with the reason a handle gave if one failed.
pub(crate) fn explain(error: impl std::fmt::Display) -> String {
    match LAST_ERROR.with(|l| l.borrow_mut().take()) {
        Some(why) => format!("{error}: {why}"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_region_is_a_clear_error() {
        let region = Region::new("handle-test", 64).unwrap();
        let ((), out) = collecting(|| {
            send::<u64>(&region).unwrap();
        });
        let h = Handle {
            id: out[0].id,
            len: out[0].len,
            fingerprint: fingerprint::<u64>(),
        };
        receive(h, region.fd().try_clone_to_owned().unwrap());
        assert!(open::<u64>(h).is_ok());
        // The same bytes claiming another type are refused.
        let other = Handle {
            fingerprint: fingerprint::<u32>(),
            ..h
        };
        assert!(
            open::<u32>(other)
                .unwrap_err()
                .to_string()
                .contains("does not match")
        );
        forget(h.id);
        let err = open::<u64>(h).unwrap_err();
        assert!(err.to_string().contains("dropped by its owner"), "{err}");
    }

    #[test]
    fn outside_a_call_nothing_is_sent() {
        let region = Region::new("handle-test", 64).unwrap();
        assert!(send::<u64>(&region).is_err());
    }

    #[test]
    fn a_panic_while_collecting_leaves_nothing_collecting() {
        let region = Region::new("handle-test", 64).unwrap();
        let caught = std::panic::catch_unwind(|| collecting(|| panic!("a Serialize panicked")));
        assert!(caught.is_err());
        // Outside a call again: a send is refused, not collected into a list nobody drains.
        assert!(send::<u64>(&region).is_err());
    }
}
