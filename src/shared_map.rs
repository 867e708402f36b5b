//! `SharedMap<K, V>`: a bounded map of serde keys and values in shared memory (the shared
//! dict of Python's `multiprocessing.Manager`, without a server process).
//!
//! # Layout and commit protocol
//! The region holds a header, then two *halves*, each a hash table (open addressing, linear
//! probing, one `u64` word per slot) followed by an arena of records
//! `[hash: u64][key_len: u32][value_len: u32][key][value]`, 8-aligned. One half is active.
//! Everything happens under the header's robust [`ShmMutex`]:
//! - an insert writes its record past the arena's `used` mark, moves the mark, and then
//!   commits with **one store**: the slot word (`EMPTY`, `TOMBSTONE`, or record offset + 1);
//! - a remove is one store of `TOMBSTONE`;
//! - compaction (when the arena or the table is worn out) and `clear` build the other half and
//!   commit with one store of the packed `(used, active)` word.
//!
//! A process killed at any point leaves either the old or the new state behind, never a torn
//! one; the counts (`len`, `dead`) are recounted by the next locker, which takes the dead
//! holder's lock over. A killed writer's uncommitted record only wastes arena space, which the
//! next compaction reclaims.

use std::marker::PhantomData;
use std::mem::size_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ShmSafe;
use crate::error::{Error, ErrorKind, Result};
use crate::shm::Region;
use crate::sync::{ShmMutex, ShmMutexGuard};

const EMPTY: u64 = 0;
const TOMBSTONE: u64 = u64::MAX;
/// A record's fixed head: hash, key length, value length.
const RECORD_HEAD: usize = 16;

/// What the lock protects besides the slots and the arenas.
#[repr(C)]
#[derive(Debug, Default)]
struct State {
    /// `(used << 1) | active`: the active half, and the bytes of its arena in use. One atomic
    /// word, so that switching halves is one store, ordered after what it publishes.
    active_used: AtomicU64,
    /// Live entries in the active half (recounted after a holder died).
    len: u64,
    /// Tombstones in the active half's table (recounted likewise).
    dead: u64,
}

// SAFETY: three integers (one atomic).
unsafe impl ShmSafe for State {}

impl State {
    fn word(&self) -> u64 {
        // ORDERING: Relaxed: read by the lock's holder, which wrote it or acquired the lock
        // after its writer released it.
        self.active_used.load(Ordering::Relaxed)
    }

    fn active(&self) -> usize {
        (self.word() & 1) as usize
    }

    fn used(&self) -> usize {
        (self.word() >> 1) as usize
    }

    /// A commit: stored after everything written before it (Release), so that a process
    /// killed at any point leaves either the old word or the new one with all it names.
    fn set(&self, active: usize, used: usize) {
        // ORDERING: Release: the records and slots it publishes are in memory first. (A
        // SIGKILL stops a process between two instructions, and its executed stores all
        // reach memory before the next locker takes the lock over; only the order in which
        // they were issued matters, and Release fixes the compiler's.)
        self.active_used
            .store(((used as u64) << 1) | active as u64, Ordering::Release);
    }
}

#[repr(C)]
struct Header {
    state: ShmMutex<State>,
    /// Times a dead holder's lock was taken over and the counts repaired.
    recovered: AtomicU64,
    max_entries: u64,
    /// Slots per table: a power of two, at least twice `max_entries`.
    slots: u64,
    /// Bytes of each half's arena (a multiple of 8).
    arena_bytes: u64,
}

const HEADER: usize = size_of::<Header>().next_multiple_of(64);

/// The sizes of a map's parts.
#[derive(Debug, Clone, Copy)]
struct Layout {
    max_entries: usize,
    /// Slots per table: a power of two.
    slots: usize,
    /// Bytes of each half's arena (a multiple of 8).
    arena_bytes: usize,
}

/// What the map's marker stands for: it takes and gives keys and values (invariant in both,
/// and `Send`/`Sync` whatever they are, since only their bytes are shared).
type Entries<K, V> = fn(K, V) -> (K, V);

/// A bounded map from serde keys to serde values, in shared memory, for several processes
/// (Python's `Manager().dict()`, without the manager's server process).
///
/// Every operation takes the map's robust lock for a moment and copies bytes in or out:
/// `get` returns a copy, never a reference. Keys are compared by their serialised bytes, so a
/// key type must serialise the same value the same way every time (integers, strings, tuples
/// and derived structs do; a `HashMap` key does not).
///
/// The map holds at most `max_entries` entries, whose serialised keys and values take at most
/// `max_bytes` (plus 16 bytes per entry, each rounded up to 8): an insert beyond either says
/// [`ErrorKind::Full`]. The memory is two halves (so that compaction can never leave a torn map
/// behind), each `max_bytes + 24 * max_entries` bytes of records and a table of 8 bytes per
/// slot, with 2 to 4 slots per entry: at most `2 * (max_bytes + 56 * max_entries)` bytes and a
/// page. A map that is nearly full compacts often (each time a copy of its live entries).
///
/// ```
/// use shmpar::{Process, SharedMap};
///
/// # fn main() -> shmpar::Result<()> {
/// let scores = SharedMap::<String, u64>::new(100, 64 << 10)?;
/// let children: Vec<Process<()>> = (0..3u64)
///     .map(|i| {
///         Process::start(
///             |(i, scores): (u64, SharedMap<String, u64>)| {
///                 scores.insert(&format!("child {i}"), &(i * 10)).unwrap();
///             },
///             (i, scores.clone()),
///         )
///     })
///     .collect::<shmpar::Result<_>>()?;
/// for c in children {
///     c.join()?.into_result()?;
/// }
/// assert_eq!(scores.len()?, 3);
/// assert_eq!(scores.get(&"child 2".to_string())?, Some(20));
/// # Ok(())
/// # }
/// ```
///
/// # When a process dies
/// A change is committed by one store under a robust [`ShmMutex`]: a process killed in the
/// middle of an insert or a remove leaves the map as if that call never started (or, past its
/// commit, as if it had finished), and the next user takes the lock over. No committed entry
/// is ever lost. [`recovered`](SharedMap::recovered) counts the take-overs.
///
/// A read-modify-write that must not lose updates (a shared counter) is
/// [`update`](SharedMap::update), which holds the lock across the read and the write; a `get`
/// followed by an `insert` can lose another process's update in between.
pub struct SharedMap<K, V> {
    /// Shared by the clones: the memory goes when the last one does.
    region: Arc<Region>,
    /// The header's sizes, as checked when the map was made or attached: never read again
    /// from the shared memory, where another process could change them.
    layout: Layout,
    marker: PhantomData<Entries<K, V>>,
}

/// Another handle to the same map (nothing is copied): how a map is given to several tasks or
/// children.
///
/// ```
/// let m = shmpar::SharedMap::<u32, u32>::new(8, 1024)?;
/// m.clone().insert(&1, &2)?;
/// assert_eq!(m.get(&1)?, Some(2));
/// # Ok::<(), shmpar::Error>(())
/// ```
impl<K, V> Clone for SharedMap<K, V> {
    fn clone(&self) -> Self {
        SharedMap {
            region: Arc::clone(&self.region),
            layout: self.layout,
            marker: PhantomData,
        }
    }
}

impl<K, V> std::fmt::Debug for SharedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMap")
            .field("max_entries", &self.layout.max_entries)
            .field("arena_bytes", &self.layout.arena_bytes)
            .finish_non_exhaustive()
    }
}

impl<K, V> SharedMap<K, V> {
    fn header(&self) -> &Header {
        // SAFETY: written in `new` (or checked in `attach`); lives as long as the region.
        unsafe { &*self.region.as_ptr().cast::<Header>() }
    }
}

/// A key's slot, and the slot's word (its record's offset + 1).
struct Found {
    slot: usize,
    word: u64,
}

/// Where a key is, or where it would go.
struct Probe {
    found: Option<Found>,
    /// The first empty or tombstone slot on the key's probe path.
    free: Option<usize>,
}

/// An entry to put in, serialised.
#[derive(Clone, Copy)]
struct Entry<'a> {
    hash: u64,
    key: &'a [u8],
    value: &'a [u8],
}

/// A crash injected by the unit tests at a numbered point between two stores (the process
/// ends there, holding the lock, as if killed).
#[cfg(test)]
static CRASH_AT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[inline]
fn crash_point(point: u32) {
    #[cfg(test)]
    // ORDERING: Relaxed: set by this process itself before the call under test.
    if CRASH_AT.load(Ordering::Relaxed) == point {
        crate::sys::exit_now(0);
    }
    let _ = point;
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> SharedMap<K, V> {
    /// A map of at most `max_entries` entries whose serialised keys and values take at most
    /// `max_bytes` in all (see the type's docs for the memory it takes).
    ///
    /// ```
    /// let m = shmpar::SharedMap::<String, Vec<f64>>::new(1000, 1 << 20)?;
    /// assert_eq!(m.capacity(), 1000);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn new(max_entries: usize, max_bytes: usize) -> Result<Self> {
        let too_big = || Error::invalid("the map would not fit in memory");
        if max_entries == 0 || max_bytes == 0 {
            return Err(Error::invalid(
                "a map needs room for at least one entry and one byte",
            ));
        }
        let slots = max_entries
            .checked_mul(2)
            .and_then(usize::checked_next_power_of_two)
            .ok_or_else(too_big)?
            .max(8);
        let arena = max_entries
            .checked_mul(RECORD_HEAD + 8)
            .and_then(|b| b.checked_add(max_bytes))
            .and_then(|b| b.checked_next_multiple_of(8))
            .ok_or_else(too_big)?;
        let half = slots
            .checked_mul(8)
            .and_then(|t| t.checked_add(arena))
            .ok_or_else(too_big)?;
        let len = half
            .checked_mul(2)
            .and_then(|b| b.checked_add(HEADER))
            .filter(|&b| b < isize::MAX as usize)
            .ok_or_else(too_big)?;
        let region = Region::new("shmpar-map", len)?;
        // SAFETY: a fresh, zeroed, page-aligned region of at least HEADER bytes; zero slots
        // are EMPTY.
        unsafe {
            region.as_ptr().cast::<Header>().write(Header {
                state: ShmMutex::new(State::default()),
                recovered: AtomicU64::new(0),
                max_entries: max_entries as u64,
                slots: slots as u64,
                arena_bytes: arena as u64,
            });
        }
        Ok(SharedMap {
            region: Arc::new(region),
            layout: Layout {
                max_entries,
                slots,
                arena_bytes: arena,
            },
            marker: PhantomData,
        })
    }

    /// The map that `region` holds (made by [`new`](Self::new) in another process). Fails if
    /// the region is too small for the map its header describes.
    fn attach(region: Region) -> Result<Self> {
        let bad = || Error::invalid("the region does not hold a map");
        if region.len() < HEADER {
            return Err(bad());
        }
        // SAFETY: at least HEADER bytes, page-aligned; the plain fields are only read here.
        let h = unsafe { &*region.as_ptr().cast::<Header>() };
        let fits = (h.slots as usize)
            .checked_mul(8)
            .and_then(|t| t.checked_add(h.arena_bytes as usize))
            .and_then(|half| half.checked_mul(2))
            .and_then(|b| b.checked_add(HEADER))
            .is_some_and(|end| end <= region.len());
        if !fits || !h.slots.is_power_of_two() || h.arena_bytes % 8 != 0 || h.max_entries == 0 {
            return Err(bad());
        }
        let layout = Layout {
            max_entries: h.max_entries as usize,
            slots: h.slots as usize,
            arena_bytes: h.arena_bytes as usize,
        };
        Ok(SharedMap {
            region: Arc::new(region),
            layout,
            marker: PhantomData,
        })
    }

    /// The most entries it holds.
    ///
    /// ```
    /// assert_eq!(shmpar::SharedMap::<u8, u8>::new(5, 100)?.capacity(), 5);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.layout.max_entries
    }

    /// How many times a process that died holding the map's lock was taken over (its change
    /// was either committed whole or not at all).
    ///
    /// ```
    /// assert_eq!(shmpar::SharedMap::<u8, u8>::new(5, 100)?.recovered(), 0);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn recovered(&self) -> u64 {
        // ORDERING: Relaxed: a statistic; nothing is published by it.
        self.header().recovered.load(Ordering::Relaxed)
    }

    /// Takes the lock; after a holder's death, recounts what the counts may have missed.
    fn lock(&self) -> Result<ShmMutexGuard<'_, State>> {
        self.header().state.lock_repairing(|g| {
            self.recount(g);
            // ORDERING: Relaxed, see `recovered`.
            self.header().recovered.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Counts the live entries and tombstones of the active table.
    fn recount(&self, state: &mut State) {
        let (mut len, mut dead) = (0, 0);
        for i in 0..self.layout.slots {
            match self.slot(state.active(), i).load(Ordering::Relaxed) {
                EMPTY => {}
                TOMBSTONE => dead += 1,
                _ => len += 1,
            }
        }
        state.len = len;
        state.dead = dead;
    }

    /// Half `half`'s first byte.
    fn half(&self, half: usize) -> *mut u8 {
        let size = self.layout.slots * 8 + self.layout.arena_bytes;
        // SAFETY: `new`/`attach` made sure both halves lie inside the region.
        unsafe { self.region.as_ptr().add(HEADER + half * size) }
    }

    /// Slot `i` of half `half`'s table. Touched only under the lock.
    fn slot(&self, half: usize, i: usize) -> &AtomicU64 {
        debug_assert!(i < self.layout.slots);
        // SAFETY: the table starts the half, 8-aligned (the region is page-aligned and HEADER
        // and the half size are multiples of 8), with `slots` words.
        unsafe { &*self.half(half).cast::<AtomicU64>().add(i) }
    }

    /// Half `half`'s arena, to read or write under the lock.
    fn arena(&self, half: usize) -> *mut u8 {
        // SAFETY: the arena follows the table inside the half.
        unsafe { self.half(half).add(self.layout.slots * 8) }
    }

    /// The record a slot word names: its hash, key and value bytes. An error if the word or
    /// the lengths point outside the arena (the memory was overwritten from outside).
    fn record(&self, half: usize, word: u64) -> Result<(u64, &[u8], &[u8])> {
        let corrupt = || Error::new(ErrorKind::Decode, "the shared map's memory is corrupt");
        let arena_len = self.layout.arena_bytes;
        let at = (word - 1) as usize;
        if at
            .checked_add(RECORD_HEAD)
            .is_none_or(|end| end > arena_len)
        {
            return Err(corrupt());
        }
        // SAFETY: the head lies inside the arena (checked above); under the lock nobody
        // writes a committed record.
        let (hash, klen, vlen) = unsafe {
            let p = self.arena(half).add(at);
            (
                p.cast::<u64>().read(),
                p.add(8).cast::<u32>().read() as usize,
                p.add(12).cast::<u32>().read() as usize,
            )
        };
        let end = (at + RECORD_HEAD)
            .checked_add(klen)
            .and_then(|e| e.checked_add(vlen))
            .filter(|&e| e <= arena_len)
            .ok_or_else(corrupt)?;
        // SAFETY: `at..end` lies inside the arena (checked above), written before its commit.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.arena(half).add(at + RECORD_HEAD), end - at - 16)
        };
        let (key, value) = bytes.split_at(klen);
        Ok((hash, key, value))
    }

    /// Looks `key` up in half `half`.
    fn probe(&self, half: usize, hash: u64, key: &[u8]) -> Result<Probe> {
        let slots = self.layout.slots;
        let mut i = hash as usize & (slots - 1);
        let mut free = None;
        for _ in 0..slots {
            // ORDERING: Relaxed: slots are read and written only under the lock, which orders
            // them.
            let word = self.slot(half, i).load(Ordering::Relaxed);
            match word {
                EMPTY => {
                    return Ok(Probe {
                        found: None,
                        free: free.or(Some(i)),
                    });
                }
                TOMBSTONE => {
                    free.get_or_insert(i);
                }
                _ => {
                    let (h, k, _) = self.record(half, word)?;
                    if h == hash && k == key {
                        return Ok(Probe {
                            found: Some(Found { slot: i, word }),
                            free,
                        });
                    }
                }
            }
            i = (i + 1) & (slots - 1);
        }
        Ok(Probe { found: None, free })
    }

    /// Builds the other half from the live entries of the active one, with `entry` put in (in
    /// place of its key's old value, if any), and switches to it with one store: the
    /// tombstones and the space of replaced or uncommitted records are gone. Nothing changes if
    /// the entries do not fit (`Full`). Returns the replaced value's bytes.
    fn compact(&self, state: &mut State, entry: Option<Entry<'_>>) -> Result<Option<Vec<u8>>> {
        let (from, to) = (state.active(), 1 - state.active());
        let slots = self.layout.slots;
        for i in 0..slots {
            // ORDERING: Relaxed, under the lock (see `probe`).
            self.slot(to, i).store(EMPTY, Ordering::Relaxed);
        }
        let mut used = 0;
        let mut len = 0;
        let mut replaced = None;
        let mut copied = 0;
        let mut place = |hash: u64, key: &[u8], value: &[u8], used: &mut usize| -> Result<()> {
            let at = *used;
            *used = self.write_record(to, at, hash, key, value)?;
            let mut j = hash as usize & (slots - 1);
            // ORDERING: Relaxed, under the lock; the half is published by the commit below.
            while self.slot(to, j).load(Ordering::Relaxed) != EMPTY {
                j = (j + 1) & (slots - 1);
            }
            // ORDERING: as above.
            self.slot(to, j).store(at as u64 + 1, Ordering::Relaxed);
            len += 1;
            Ok(())
        };
        for i in 0..slots {
            // ORDERING: Relaxed, under the lock.
            let word = self.slot(from, i).load(Ordering::Relaxed);
            if word == EMPTY || word == TOMBSTONE {
                continue;
            }
            let (hash, key, value) = self.record(from, word)?;
            if entry.is_some_and(|e| e.hash == hash && e.key == key) {
                replaced = Some(value.to_vec());
                continue;
            }
            place(hash, key, value, &mut used)?;
            copied += 1;
            if copied == 2 {
                crash_point(4);
            }
        }
        if let Some(e) = entry {
            place(e.hash, e.key, e.value, &mut used)?;
        }
        // The commit: the new half with its arena mark, in one store, after the half is built.
        state.set(to, used);
        crash_point(5);
        state.len = len;
        state.dead = 0;
        Ok(replaced)
    }

    /// Writes a record at `at` in half `half`'s arena; returns the end (8-aligned). `Full` if
    /// it does not fit.
    fn write_record(
        &self,
        half: usize,
        at: usize,
        hash: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<usize> {
        if at % 8 != 0 {
            return Err(Error::new(
                ErrorKind::Decode,
                "the shared map's memory is corrupt",
            ));
        }
        let end = record_size(key, value)
            .and_then(|size| at.checked_add(size))
            .filter(|&end| end <= self.layout.arena_bytes)
            .ok_or_else(|| {
                Error::new(ErrorKind::Full, "the shared map has no room for this entry")
            })?;
        // SAFETY: `at..end` lies inside the arena and is 8-aligned (checked above), past every
        // committed record of this half (or in a half being built), and we hold the lock.
        unsafe {
            let p = self.arena(half).add(at);
            p.cast::<u64>().write(hash);
            p.add(8).cast::<u32>().write(key.len() as u32);
            p.add(12).cast::<u32>().write(value.len() as u32);
            std::ptr::copy_nonoverlapping(key.as_ptr(), p.add(RECORD_HEAD), key.len());
            std::ptr::copy_nonoverlapping(
                value.as_ptr(),
                p.add(RECORD_HEAD + key.len()),
                value.len(),
            );
        }
        Ok(end)
    }

    /// Inserts under the lock; returns the previous value's bytes.
    fn put_locked(
        &self,
        state: &mut State,
        hash: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let size = record_size(key, value).ok_or_else(|| {
            Error::new(ErrorKind::Full, "the shared map has no room for this entry")
        })?;
        let probe = self.probe(state.active(), hash, key)?;
        if probe.found.is_none() && state.len >= self.layout.max_entries as u64 {
            return Err(Error::new(
                ErrorKind::Full,
                format!(
                    "the shared map holds its {} entries already",
                    self.layout.max_entries
                ),
            ));
        }
        let worn = (state.len + state.dead + 1) as usize * 4 > self.layout.slots * 3;
        let room = state
            .used()
            .checked_add(size)
            .is_some_and(|end| end <= self.layout.arena_bytes);
        let (Some(free), true, false) = (
            probe.found.as_ref().map(|f| f.slot).or(probe.free),
            room,
            worn,
        ) else {
            // Out of room (or the table is worn with tombstones): the entry goes into a
            // compacted half, in place of its old value, committed with the half.
            return self.compact(state, Some(Entry { hash, key, value }));
        };
        let half = state.active();
        let at = state.used();
        let end = self.write_record(half, at, hash, key, value)?;
        crash_point(1);
        // The arena mark moves past the record before the record is committed: a committed
        // record always lies below the mark, where no later insert writes.
        state.set(half, end);
        crash_point(2);
        let old = match &probe.found {
            Some(found) => Some(self.record(half, found.word)?.2.to_vec()),
            None => None,
        };
        // ORDERING: Relaxed, under the lock.
        let was = self.slot(half, free).load(Ordering::Relaxed);
        // The commit: the slot names the new record.
        // ORDERING: Release: after the record and the arena mark (see `State::set`).
        self.slot(half, free)
            .store(at as u64 + 1, Ordering::Release);
        crash_point(3);
        if old.is_none() {
            state.len += 1;
            if was == TOMBSTONE {
                state.dead = state.dead.saturating_sub(1);
            }
        }
        Ok(old)
    }

    /// Inserts or replaces `key`'s value; returns the value it replaced.
    ///
    /// ```
    /// let m = shmpar::SharedMap::<String, u32>::new(8, 1024)?;
    /// let a = "a".to_string();
    /// assert_eq!(m.insert(&a, &1)?, None);
    /// assert_eq!(m.insert(&a, &2)?, Some(1));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn insert(&self, key: &K, value: &V) -> Result<Option<V>> {
        let (key, hash) = encode_key(key)?;
        let value = encode(value, "the value")?;
        let old = {
            let mut state = self.lock()?;
            self.put_locked(&mut state, hash, &key, &value)?
        };
        old.map(|b| decode(&b)).transpose()
    }

    /// A copy of `key`'s value.
    ///
    /// ```
    /// let m = shmpar::SharedMap::<u64, String>::new(8, 1024)?;
    /// m.insert(&7, &"seven".to_string())?;
    /// assert_eq!(m.get(&7)?.as_deref(), Some("seven"));
    /// assert_eq!(m.get(&8)?, None);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let (key, hash) = encode_key(key)?;
        let bytes = {
            let state = self.lock()?;
            let half = state.active();
            match self.probe(half, hash, &key)?.found {
                Some(f) => Some(self.record(half, f.word)?.2.to_vec()),
                None => None,
            }
        };
        bytes.map(|b| decode(&b)).transpose()
    }

    /// Whether `key` has a value.
    ///
    /// ```
    /// let m = shmpar::SharedMap::<u8, ()>::new(8, 64)?;
    /// m.insert(&1, &())?;
    /// assert!(m.contains_key(&1)? && !m.contains_key(&2)?);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        let (key, hash) = encode_key(key)?;
        let state = self.lock()?;
        Ok(self.probe(state.active(), hash, &key)?.found.is_some())
    }

    /// Removes `key`; returns its value.
    ///
    /// ```
    /// let m = shmpar::SharedMap::<u8, u8>::new(8, 64)?;
    /// m.insert(&1, &10)?;
    /// assert_eq!(m.remove(&1)?, Some(10));
    /// assert_eq!(m.remove(&1)?, None);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        let (key, hash) = encode_key(key)?;
        let bytes = {
            let mut state = self.lock()?;
            let half = state.active();
            match self.probe(half, hash, &key)?.found {
                Some(f) => {
                    let old = self.record(half, f.word)?.2.to_vec();
                    // The commit.
                    // ORDERING: Release, like every commit (see `State::set`).
                    self.slot(half, f.slot).store(TOMBSTONE, Ordering::Release);
                    crash_point(6);
                    state.len = state.len.saturating_sub(1);
                    state.dead += 1;
                    Some(old)
                }
                None => None,
            }
        };
        bytes.map(|b| decode(&b)).transpose()
    }

    /// Replaces `key`'s value with `f(current value)`, holding the lock across the read and
    /// the write: no other process's update is lost in between (a shared counter). Returns
    /// the new value. `f` runs under the map's lock: keep it short, and do not use the map in
    /// it (the inner call fails with [`ErrorKind::InvalidInput`]).
    ///
    /// ```
    /// let hits = shmpar::SharedMap::<String, u64>::new(8, 1024)?;
    /// for _ in 0..3 {
    ///     hits.update(&"page".to_string(), |n| n.unwrap_or(0) + 1)?;
    /// }
    /// assert_eq!(hits.get(&"page".to_string())?, Some(3));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn update(&self, key: &K, f: impl FnOnce(Option<V>) -> V) -> Result<V> {
        let (key, hash) = encode_key(key)?;
        let mut state = self.lock()?;
        let half = state.active();
        let current = match self.probe(half, hash, &key)?.found {
            Some(found) => Some(decode(self.record(half, found.word)?.2)?),
            None => None,
        };
        // A panic in `f` unwinds before anything was written: the lock is released whole.
        let new = f(current);
        let bytes = encode(&new, "the value")?;
        self.put_locked(&mut state, hash, &key, &bytes)?;
        Ok(new)
    }

    /// The number of entries.
    ///
    /// ```
    /// let m = shmpar::SharedMap::<u8, u8>::new(8, 64)?;
    /// m.insert(&1, &1)?;
    /// assert_eq!(m.len()?, 1);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        Ok(self.lock()?.len as usize)
    }

    /// True when it holds no entry.
    ///
    /// ```
    /// assert!(shmpar::SharedMap::<u8, u8>::new(8, 64)?.is_empty()?);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of every entry, in no particular order (Python's `dict.items()`), taken at one
    /// moment under the lock.
    ///
    /// ```
    /// let m = shmpar::SharedMap::<u8, char>::new(8, 64)?;
    /// m.insert(&1, &'a')?;
    /// m.insert(&2, &'b')?;
    /// let mut all = m.entries()?;
    /// all.sort();
    /// assert_eq!(all, [(1, 'a'), (2, 'b')]);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn entries(&self) -> Result<Vec<(K, V)>> {
        let raw: Vec<(Vec<u8>, Vec<u8>)> = {
            let state = self.lock()?;
            let half = state.active();
            let mut raw = Vec::with_capacity(state.len as usize);
            for i in 0..self.layout.slots {
                // ORDERING: Relaxed, under the lock.
                let word = self.slot(half, i).load(Ordering::Relaxed);
                if word != EMPTY && word != TOMBSTONE {
                    let (_, k, v) = self.record(half, word)?;
                    raw.push((k.to_vec(), v.to_vec()));
                }
            }
            raw
        };
        raw.iter()
            .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
            .collect()
    }

    /// Removes every entry (one store: the other half, empty, becomes the map).
    ///
    /// ```
    /// let m = shmpar::SharedMap::<u8, u8>::new(8, 64)?;
    /// m.insert(&1, &1)?;
    /// m.clear()?;
    /// assert!(m.is_empty()?);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        let mut state = self.lock()?;
        let to = 1 - state.active();
        for i in 0..self.layout.slots {
            // ORDERING: Relaxed, under the lock.
            self.slot(to, i).store(EMPTY, Ordering::Relaxed);
        }
        crash_point(7);
        // The commit: the empty half, in one store, after its table is cleared.
        state.set(to, 0);
        state.len = 0;
        state.dead = 0;
        Ok(())
    }
}

/// A record's size in the arena, 8-aligned; `None` if a length does not fit its field.
fn record_size(key: &[u8], value: &[u8]) -> Option<usize> {
    if key.len() > u32::MAX as usize || value.len() > u32::MAX as usize {
        return None;
    }
    (RECORD_HEAD + key.len())
        .checked_add(value.len())?
        .checked_next_multiple_of(8)
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>> {
    postcard::to_stdvec(value)
        .map_err(|e| Error::invalid(format!("{what} could not be serialised: {e}")))
}

/// The key's bytes and their hash (FNV-1a, then mixed so that the low bits, which pick the
/// slot, depend on every byte).
fn encode_key<K: Serialize>(key: &K) -> Result<(Vec<u8>, u64)> {
    let bytes = encode(key, "the key")?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 32;
    Ok((bytes, h))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| {
        Error::new(
            ErrorKind::Decode,
            format!("a shared map entry could not be decoded: {e}"),
        )
    })
}

impl<K: 'static, V: 'static> Serialize for SharedMap<K, V> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        crate::shm::handle::serialize::<Self, S>(&self.region, serializer)
    }
}

impl<'de, K, V> serde::Deserialize<'de> for SharedMap<K, V>
where
    K: Serialize + DeserializeOwned + 'static,
    V: Serialize + DeserializeOwned + 'static,
{
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let region = crate::shm::handle::deserialize::<Self, D>(deserializer)?;
        SharedMap::attach(region).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::SharedMap;
    use crate::ErrorKind;

    #[test]
    fn many_inserts_replacements_and_removals_agree_with_a_hashmap() {
        let m = SharedMap::<u32, String>::new(64, 4096).unwrap();
        let mut model = std::collections::HashMap::new();
        // Enough churn to wear the table and the arena out many times over: compaction runs.
        for round in 0..2000u32 {
            let k = round.wrapping_mul(2_654_435_761) % 97;
            if round % 3 == 0 {
                assert_eq!(m.remove(&k).unwrap(), model.remove(&k), "round {round}");
            } else {
                let v = format!("v{round}");
                match m.insert(&k, &v) {
                    Ok(old) => assert_eq!(old, model.insert(k, v), "round {round}"),
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Full, "{e}");
                        assert!(
                            model.len() == 64 && !model.contains_key(&k),
                            "round {round}"
                        );
                    }
                }
            }
            assert_eq!(m.len().unwrap(), model.len());
        }
        let mut got = m.entries().unwrap();
        got.sort();
        let mut want: Vec<_> = model.into_iter().collect();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn an_entry_larger_than_the_arena_is_full_not_a_panic() {
        let m = SharedMap::<u8, Vec<u8>>::new(2, 100).unwrap();
        let e = m.insert(&1, &vec![0; 10_000]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Full);
        m.insert(&1, &vec![0; 50]).unwrap();
        assert_eq!(m.get(&1).unwrap().unwrap().len(), 50);
    }

    /// Runs `op` in a forked child that ends at crash point `point`, holding the lock (as if
    /// killed there); returns false if the child never reached it.
    fn crash_in_child(point: u32, op: impl FnOnce()) -> bool {
        // SAFETY: the child runs only `op` on the shared map (shared memory and its own lock)
        // and this crate's statics, then `_exit`s.
        let child = unsafe {
            crate::Process::fork(|| {
                // ORDERING: Relaxed: this process's own flag.
                super::CRASH_AT.store(point, std::sync::atomic::Ordering::Relaxed);
                op();
                crate::sys::exit_now(3); // not reached: the point was never hit
            })
        }
        .unwrap();
        child.join().unwrap() == crate::Exit::Ok
    }

    /// Checks the map against `model` (the state before or after the interrupted call), then
    /// that it still works: a further insert must not overwrite anything committed.
    fn check(m: &SharedMap<u32, String>, before: &[(u32, String)], after: &[(u32, String)]) {
        let mut got = m.entries().unwrap();
        got.sort();
        assert!(got == before || got == after, "{got:?}");
        assert_eq!(m.len().unwrap(), got.len());
        m.insert(&999, &"probe".to_string()).unwrap();
        for (k, v) in &got {
            assert_eq!(m.get(k).unwrap().as_ref(), Some(v), "key {k}");
        }
        assert_eq!(m.get(&999).unwrap().as_deref(), Some("probe"));
    }

    #[test]
    fn a_crash_at_any_point_of_a_change_leaves_the_old_state_or_the_new() {
        let entries =
            |n: u32| -> Vec<(u32, String)> { (0..n).map(|k| (k, format!("v{k}"))).collect() };
        // (point, what the child does, the state after it)
        type Op = fn(&SharedMap<u32, String>);
        type Case = (u32, Op, Vec<(u32, String)>);
        let cases: [Case; 7] = [
            (1, |m| drop(m.insert(&5, &"v5".into())), entries(6)),
            (2, |m| drop(m.insert(&5, &"v5".into())), entries(6)),
            (3, |m| drop(m.insert(&5, &"v5".into())), entries(6)),
            // A replacement too large for the arena's rest: a compaction, which puts it in.
            (4, |m| drop(m.insert(&0, &"x".repeat(400))), {
                let mut e = entries(5);
                e[0].1 = "x".repeat(400);
                e
            }),
            (5, |m| drop(m.insert(&0, &"x".repeat(400))), {
                let mut e = entries(5);
                e[0].1 = "x".repeat(400);
                e
            }),
            (6, |m| drop(m.remove(&2)), {
                let mut e = entries(5);
                e.remove(2);
                e
            }),
            (7, |m| drop(m.clear()), Vec::new()),
        ];
        for (point, op, after) in cases {
            // Little room: a 400-byte value fits only once the arena is compacted.
            let m = SharedMap::<u32, String>::new(8, 400).unwrap();
            for (k, v) in entries(5) {
                m.insert(&k, &v).unwrap();
            }
            let mut used_up = m.clone();
            for _ in 0..4 {
                // Replacements wear the arena: the next large one must compact.
                used_up.insert(&4, &"v4".into()).unwrap();
            }
            let before = entries(5);
            assert!(
                crash_in_child(point, || op(&m)),
                "point {point} was never reached"
            );
            check(&m, &before, &after);
            assert_eq!(m.recovered(), 1, "point {point}: the lock was taken over");
            used_up = m;
            drop(used_up);
        }
    }

    #[test]
    fn bad_sizes_are_invalid_input() {
        for (n, b) in [(0, 10), (10, 0), (usize::MAX, 10), (10, usize::MAX)] {
            let e = SharedMap::<u8, u8>::new(n, b).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{n} {b}");
        }
    }
}
