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
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

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

/// A region an argument refers to, recorded while serialising: valid while the caller keeps
/// the object borrowed (for the duration of the call that sends it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub(crate) id: u64,
    pub(crate) len: u64,
    /// The type of the object that lives there: the receiver checks every handle against the
    /// type the *sender* recorded, so hand-made bytes cannot claim another type.
    pub(crate) fingerprint: u64,
    fd: RawFd,
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

    /// The region's descriptor.
    ///
    /// # Safety
    /// Only while the object it was recorded from is alive (the caller still borrows it).
    pub(crate) unsafe fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the caller guarantees the region, which owns the descriptor, is alive.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

thread_local! {
    static OUTGOING: RefCell<Option<Vec<Outgoing>>> = const { RefCell::new(None) };
}

/// Runs `f` (which serialises a call's arguments) and returns what it returned with the regions
/// of every shared object it serialised, each once.
pub(crate) fn collecting<T>(f: impl FnOnce() -> T) -> (T, Vec<Outgoing>) {
    let outer = OUTGOING.with(|o| o.borrow_mut().replace(Vec::new()));
    let out = f();
    let got = OUTGOING.with(|o| std::mem::replace(&mut *o.borrow_mut(), outer));
    (out, got.unwrap_or_default())
}

/// The fingerprint of type `T`: the same in every process running this executable.
pub(crate) fn fingerprint<T>() -> u64 {
    // FNV-1a over the type's name, size and alignment.
    let name = std::any::type_name::<T>();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let sizes = [size_of::<T>() as u64, align_of::<T>() as u64];
    for b in name
        .bytes()
        .chain(sizes.iter().flat_map(|s| s.to_le_bytes()))
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The handle of `region` for an object of type `T`, recording the region for the call being
/// serialised. Fails outside such a call, and in a process that received the object itself
/// (handles are passed on by the process that made the object).
pub(crate) fn send<T>(region: &Region) -> Result<Handle> {
    if region.id() == 0 {
        return Err(Error::invalid(
            "this shared object was received from another process: only the process that made \
             it can pass it on",
        ));
    }
    let out = Outgoing {
        id: region.id(),
        len: region.map_len() as u64,
        fingerprint: fingerprint::<T>(),
        fd: region.fd().as_raw_fd(),
    };
    OUTGOING.with(|o| match o.borrow_mut().as_mut() {
        Some(list) => {
            if !list.iter().any(|r| r.id == out.id) {
                list.push(out);
            }
            Ok(Handle {
                id: out.id,
                len: out.len,
                fingerprint: out.fingerprint,
            })
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
pub(crate) fn open<T>(handle: Handle) -> Result<Region> {
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
pub(crate) fn serialize<T, S: serde::Serializer>(
    region: &Region,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    send::<T>(region)
        .map_err(serde::ser::Error::custom)?
        .serialize(serializer)
}

/// Reads a shared object's handle and maps its region (for `Deserialize` impls).
pub(crate) fn deserialize<'de, T, D: serde::Deserializer<'de>>(
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
}
