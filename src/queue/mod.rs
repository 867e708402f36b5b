//! `Queue<T>` and `Pipe<T>`: message passing between processes through shared memory.

mod pipe;

pub use pipe::{Connection, Pipe, PipeReader, PipeWriter};

use std::marker::PhantomData;
use std::mem::size_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};
use crate::shm::Region;
use crate::sync::{ShmMutex, ShmMutexGuard};
use crate::sys;
use crate::wake::Signal;

/// Where the next message is read and written; only changed under the lock, and each change
/// is the single store that commits a put or a get.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    head: u64,
    tail: u64,
    /// Messages marked done by [`Queue::task_done`]; never more than `tail`. The queue's
    /// unfinished work is `tail - done`, so a put stays one store.
    done: u64,
}

// SAFETY: three integers.
unsafe impl crate::ShmSafe for Cursor {}

/// The queue's shared header; the slots follow it.
#[repr(C)]
struct Header {
    cursor: ShmMutex<Cursor>,
    /// Bumped after every put (getters wait on it).
    not_empty: Signal,
    /// Bumped after every get (putters wait on it).
    not_full: Signal,
    closed: AtomicU32,
    capacity: u32,
    slot_bytes: u32,
    /// The largest message accepted, as asked for at creation.
    max_message: u32,
    messages: AtomicU64,
    /// For one direction of a [`Pipe`](crate::Pipe): the process that holds the sending end
    /// (0 for a plain queue). A reader waiting on an empty queue whose writer has died gets
    /// end of file instead of waiting forever.
    writer: AtomicU32,
    /// For one direction of a [`Pipe`](crate::Pipe): the process that holds the receiving end
    /// (0 for a plain queue). A writer waiting on a full queue whose reader has died gets a
    /// broken pipe instead of waiting forever.
    reader: AtomicU32,
    /// Bumped after every `task_done` (`join` waits on it).
    done: Signal,
}

const HEADER: usize = size_of::<Header>().next_multiple_of(64);

/// A bounded multi-producer multi-consumer FIFO queue between processes (Python's
/// `multiprocessing.Queue`), in shared memory.
///
/// Messages are any serde type, serialised into fixed-size slots. Create the queue before
/// forking the processes that use it ([`Process`](crate::Process) children see it live).
///
/// ```
/// use shmpar::{Process, Queue};
///
/// # fn main() -> shmpar::Result<()> {
/// let q = Queue::<(u32, String)>::new(16)?;
/// // SAFETY: the child runs only this closure, which touches shared memory, atomics and its own copy of what it captured (nothing the parent drops while the child uses it), then `_exit`s.
/// let producer = unsafe { Process::fork(|| {
///     for i in 0..3 {
///         q.put(&(i, format!("item {i}"))).unwrap();
///     }
/// }) }?;
/// for i in 0..3 {
///     assert_eq!(q.get()?, (i, format!("item {i}")));
/// }
/// producer.join()?.into_result()?;
/// # Ok(())
/// # }
/// ```
///
/// Every queue is also Python's `JoinableQueue`: a consumer calls
/// [`task_done`](Queue::task_done) when it has finished with a message, and
/// [`join`](Queue::join) waits until every message ever put has been marked done.
///
/// # Bytes
/// A `Vec<u8>` goes through serde as a sequence of `u8`, one byte at a time (1.3-1.7 GB/s
/// for 1 MiB messages between two processes on the 2-core machine of the README's `ipc`
/// table). For bulk bytes send a [`serde_bytes::ByteBuf`](https://docs.rs/serde_bytes), or
/// mark a field `#[serde(with = "serde_bytes")]`: serde copies it whole (3.7-17 GB/s there;
/// Python's `Pipe` 4.4-5.5 GB/s in the same runs). For arrays, a
/// [`SharedArray`](crate::SharedArray) is read where it lies, with no copy at all.
///
/// ```
/// use serde_bytes::ByteBuf;
///
/// let q = shmpar::Queue::<ByteBuf>::with_message_bytes(2, 1 << 20)?;
/// q.put(&ByteBuf::from(vec![7u8; 1 << 19]))?;
/// assert_eq!(q.get()?.len(), 1 << 19);
/// # Ok::<(), shmpar::Error>(())
/// ```
///
/// # When a process dies
/// A put or get is committed by one store under a robust [`ShmMutex`]: a process killed in the
/// middle leaves the queue as if the operation never started, and the next user takes the lock
/// over. No message is ever lost half-way or delivered twice. (A message a consumer had already
/// taken is gone with it, and so is its `task_done`: use
/// [`join_timeout`](Queue::join_timeout) where a consumer may die.)
pub struct Queue<T> {
    /// Shared by the clones: the memory goes when the last one does.
    region: Arc<Region>,
    marker: PhantomData<fn(T) -> T>,
}

/// Another handle to the same queue (nothing is copied): how a queue is given to several
/// tasks or children, each of which takes its own `Queue` as an argument.
///
/// ```
/// let q = shmpar::Queue::<u8>::new(4)?;
/// q.clone().put(&7)?;
/// assert_eq!(q.get()?, 7);
/// # Ok::<(), shmpar::Error>(())
/// ```
impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            region: Arc::clone(&self.region),
            marker: PhantomData,
        }
    }
}

// SAFETY: all shared state is behind atomics and the robust mutex; messages are copied out.
unsafe impl<T> Send for Queue<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Queue<T> {}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue of at most `capacity` messages of up to 4 KiB each (serialised).
    ///
    /// ```
    /// let q = shmpar::Queue::<u64>::new(1024)?;
    /// assert_eq!(q.capacity(), 1024);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn new(capacity: usize) -> Result<Self> {
        Self::with_message_bytes(capacity, 4096)
    }

    /// A queue of at most `capacity` messages of up to `message_bytes` each (serialised).
    ///
    /// ```
    /// let q = shmpar::Queue::<Vec<f64>>::with_message_bytes(8, 1 << 20)?;
    /// q.put(&vec![1.0; 100_000])?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn with_message_bytes(capacity: usize, message_bytes: usize) -> Result<Self> {
        if capacity == 0
            || capacity > u32::MAX as usize
            || message_bytes == 0
            || message_bytes > u32::MAX as usize - 8
        {
            return Err(Error::invalid(
                "a queue needs a capacity and a message size of at least 1 (and below 4 G)",
            ));
        }
        let slot = (message_bytes + 8).next_multiple_of(8);
        let len = capacity
            .checked_mul(slot)
            .and_then(|b| b.checked_add(HEADER))
            .ok_or_else(|| Error::invalid("the queue would not fit in memory"))?;
        let region = Region::new("shmpar-queue", len)?;
        // SAFETY: a fresh, zeroed, page-aligned region of at least HEADER bytes.
        unsafe {
            region.as_ptr().cast::<Header>().write(Header {
                cursor: ShmMutex::new(Cursor::default()),
                not_empty: Signal::new(),
                not_full: Signal::new(),
                closed: AtomicU32::new(0),
                capacity: capacity as u32,
                slot_bytes: slot as u32,
                max_message: message_bytes as u32,
                messages: AtomicU64::new(0),
                writer: AtomicU32::new(0),
                reader: AtomicU32::new(0),
                done: Signal::new(),
            });
        }
        Ok(Queue {
            region: Arc::new(region),
            marker: PhantomData,
        })
    }

    /// The queue that `region` holds (made by [`with_message_bytes`](Self::with_message_bytes)
    /// in another process, whose descriptor reached this one). Fails if the region is too
    /// small for the queue its header describes.
    pub(crate) fn attach(region: Region) -> Result<Self> {
        let bad = || Error::invalid("the region does not hold a queue");
        if region.len() < HEADER {
            return Err(bad());
        }
        // SAFETY: at least HEADER bytes, page-aligned; the plain fields are only read here.
        let h = unsafe { &*region.as_ptr().cast::<Header>() };
        let slot = h.slot_bytes as usize;
        let fits = (h.capacity as usize)
            .checked_mul(slot)
            .and_then(|b| b.checked_add(HEADER))
            .is_some_and(|end| end <= region.len());
        if h.capacity == 0 || !fits || h.max_message as usize + 8 > slot {
            return Err(bad());
        }
        Ok(Queue {
            region: Arc::new(region),
            marker: PhantomData,
        })
    }

    /// The region the queue lives in.
    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    /// Records this process as the one that writes to this queue (one direction of a pipe).
    pub(crate) fn set_writer(&self) {
        record_holder(&self.header().writer);
    }

    /// Records this process as the one that reads from this queue (one direction of a pipe).
    pub(crate) fn set_reader(&self) {
        record_holder(&self.header().reader);
    }

    fn header(&self) -> &Header {
        // SAFETY: written in `new`; lives as long as the region.
        unsafe { &*self.region.as_ptr().cast::<Header>() }
    }

    /// Slot `i`'s bytes (length word, then the message).
    fn slot(&self, i: u64) -> *mut u8 {
        let h = self.header();
        let index = (i % u64::from(h.capacity)) as usize;
        // SAFETY: index < capacity, so the slot lies inside the region.
        unsafe {
            self.region
                .as_ptr()
                .add(HEADER + index * h.slot_bytes as usize)
        }
    }

    /// The most messages it holds.
    ///
    /// ```
    /// assert_eq!(shmpar::Queue::<u8>::new(3)?.capacity(), 3);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.header().capacity as usize
    }

    /// The largest serialised message a slot takes.
    ///
    /// ```
    /// assert_eq!(shmpar::Queue::<u8>::with_message_bytes(3, 100)?.message_bytes(), 100);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn message_bytes(&self) -> usize {
        self.header().max_message as usize
    }

    /// Messages waiting now (a snapshot).
    ///
    /// ```
    /// let q = shmpar::Queue::new(4)?;
    /// q.put(&1u8)?;
    /// assert_eq!(q.len(), 1);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.lock().map_or(0, |g| (g.tail - g.head) as usize)
    }

    /// True when no message waits (a snapshot).
    ///
    /// ```
    /// assert!(shmpar::Queue::<u8>::new(4)?.is_empty());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the queue: waiting and later `get`s fail with [`ErrorKind::Closed`] once the
    /// messages already queued are taken; `put`s fail at once.
    ///
    /// ```
    /// let q = shmpar::Queue::new(4)?;
    /// q.put(&1u8)?;
    /// q.close();
    /// assert_eq!(q.get()?, 1);
    /// assert_eq!(q.get().unwrap_err().kind(), shmpar::ErrorKind::Closed);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn close(&self) {
        let h = self.header();
        // ORDERING: SeqCst, then bump both sequences (SeqCst) so that every waiter, which
        // re-checks `closed` under the lock after waking, sees it.
        h.closed.store(1, Ordering::SeqCst);
        h.not_empty.wake_all();
        h.not_full.wake_all();
    }

    /// True once [`close`](Self::close) was called.
    ///
    /// ```
    /// let q = shmpar::Queue::<u8>::new(1)?;
    /// q.close();
    /// assert!(q.is_closed());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        // ORDERING: SeqCst, see `close`.
        self.header().closed.load(Ordering::SeqCst) != 0
    }

    /// Takes the lock; a dead holder left nothing half-done (every change is one store), so
    /// its lock is simply marked consistent.
    fn lock(&self) -> Result<ShmMutexGuard<'_, Cursor>> {
        self.header().cursor.lock_repairing(|_| {})
    }

    /// Puts a message, waiting while the queue is full.
    ///
    /// ```
    /// let q = shmpar::Queue::new(2)?;
    /// q.put(&"hello".to_string())?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn put(&self, message: &T) -> Result<()> {
        self.put_until(message, Some(None))
    }

    /// Puts a message, failing with [`ErrorKind::TimedOut`] if the queue stays full.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = shmpar::Queue::new(1)?;
    /// q.put(&1u8)?;
    /// let err = q.put_timeout(&2u8, Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(err.kind(), shmpar::ErrorKind::TimedOut);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn put_timeout(&self, message: &T, timeout: Duration) -> Result<()> {
        self.put_until(message, Some(Some(Instant::now() + timeout)))
    }

    /// Puts a message if there is room, else fails with [`ErrorKind::WouldBlock`].
    ///
    /// ```
    /// let q = shmpar::Queue::new(1)?;
    /// q.try_put(&1u8)?;
    /// assert_eq!(q.try_put(&2u8).unwrap_err().kind(), shmpar::ErrorKind::WouldBlock);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn try_put(&self, message: &T) -> Result<()> {
        self.put_until(message, None)
    }

    /// `wait`: None = do not wait; Some(None) = wait forever; Some(Some(t)) = until t.
    fn put_until(&self, message: &T, wait: Option<Option<Instant>>) -> Result<()> {
        let max = self.message_bytes();
        let mut buf = postcard::to_stdvec(message)
            .map_err(|e| Error::invalid(format!("the message could not be serialised: {e}")))?;
        if buf.len() > max {
            return Err(Error::invalid(format!(
                "a {}-byte message does not fit the queue's {max}-byte slots (Queue::with_message_bytes)",
                buf.len()
            )));
        }
        let h = self.header();
        // As in `get_until`: the reader's life is looked up only on a look after a wait.
        let mut waited = false;
        loop {
            let mut g = self.lock()?;
            if self.is_closed() {
                return Err(Error::new(ErrorKind::Closed, "the queue is closed"));
            }
            if g.tail - g.head < u64::from(h.capacity) {
                let slot = self.slot(g.tail);
                // SAFETY: the slot is ours under the lock; the length word and the message fit
                // in `slot_bytes` (checked above); the region is 8-byte aligned per slot.
                unsafe {
                    slot.cast::<u64>().write(buf.len() as u64);
                    std::ptr::copy_nonoverlapping(buf.as_ptr(), slot.add(8), buf.len());
                }
                g.tail += 1; // the commit
                drop(g);
                // ORDERING: relaxed statistics.
                h.messages.fetch_add(1, Ordering::Relaxed);
                h.not_empty.bump_and_wake(1);
                buf.clear();
                return Ok(());
            }
            if waited && holder_gone(&h.reader) {
                return Err(Error::new(
                    ErrorKind::Closed,
                    "the process at the other end of the pipe has ended (a broken pipe)",
                ));
            }
            // Read under the lock, so a get after it bumps it.
            let seen = h.not_full.seen();
            drop(g);
            // A pipe's writer also looks at its reader's life when it wakes (see `RECHECK`).
            let pipe = has_holder(&h.reader);
            let waiting = h.not_full.wait_for_change(
                seen,
                wait,
                Some(RECHECK),
                "the queue is full",
                "the queue stayed full",
            );
            // A call that ends without a wait still reports a dead reader (see `get_until`).
            if let Err(e) = waiting {
                if waited || !pipe {
                    return Err(e);
                }
            }
            waited = true;
        }
    }

    /// Takes the oldest message, waiting while the queue is empty. Fails with
    /// [`ErrorKind::Closed`] once the queue is closed and empty.
    ///
    /// ```
    /// let q = shmpar::Queue::new(2)?;
    /// q.put(&7u16)?;
    /// assert_eq!(q.get()?, 7);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_until(Some(None))
    }

    /// Takes the oldest message, failing with [`ErrorKind::TimedOut`] if none comes in time.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = shmpar::Queue::<u8>::new(2)?;
    /// assert_eq!(q.get_timeout(Duration::from_millis(5)).unwrap_err().kind(), shmpar::ErrorKind::TimedOut);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_until(Some(Some(Instant::now() + timeout)))
    }

    /// Takes the oldest message if there is one, else fails with [`ErrorKind::WouldBlock`].
    ///
    /// ```
    /// let q = shmpar::Queue::<u8>::new(2)?;
    /// assert_eq!(q.try_get().unwrap_err().kind(), shmpar::ErrorKind::WouldBlock);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn try_get(&self) -> Result<T> {
        self.get_until(None)
    }

    /// Marks one message taken from the queue as finished (Python's
    /// `JoinableQueue.task_done`). Fails with [`ErrorKind::InvalidInput`] when called more
    /// times than messages were put.
    ///
    /// ```
    /// let q = shmpar::Queue::new(4)?;
    /// q.put(&1u8)?;
    /// let _job = q.get()?;
    /// q.task_done()?;
    /// assert_eq!(q.task_done().unwrap_err().kind(), shmpar::ErrorKind::InvalidInput);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        let h = self.header();
        let mut g = self.lock()?;
        if g.done >= g.tail {
            return Err(Error::invalid(
                "task_done was called more times than messages were put",
            ));
        }
        g.done += 1; // the commit
        drop(g);
        h.done.bump_and_wake(i32::MAX);
        Ok(())
    }

    /// Waits until every message put so far has been marked done with
    /// [`task_done`](Self::task_done) (Python's `JoinableQueue.join`).
    ///
    /// It waits as long as that takes: if a consumer can die between `get` and `task_done`,
    /// use [`join_timeout`](Self::join_timeout).
    ///
    /// ```
    /// use shmpar::{Process, Queue};
    ///
    /// # fn main() -> shmpar::Result<()> {
    /// let q = Queue::<u32>::new(16)?;
    /// // SAFETY: the child runs only this closure, which touches the queue's shared memory and its own copy of what it captured, then `_exit`s.
    /// let worker = unsafe { Process::fork(|| {
    ///     while let Ok(_job) = q.get() {
    ///         q.task_done().unwrap();
    ///     }
    /// }) }?;
    /// for i in 0..10 {
    ///     q.put(&i)?;
    /// }
    /// q.join()?; // every job was taken and finished
    /// q.close();
    /// worker.join()?.into_result()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn join(&self) -> Result<()> {
        self.join_until(None)
    }

    /// [`join`](Self::join), failing with [`ErrorKind::TimedOut`] if some message is still
    /// unfinished after `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = shmpar::Queue::new(4)?;
    /// q.put(&1u8)?;
    /// let err = q.join_timeout(Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(err.kind(), shmpar::ErrorKind::TimedOut);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_until(Some(Instant::now() + timeout))
    }

    fn join_until(&self, deadline: Option<Instant>) -> Result<()> {
        let h = self.header();
        loop {
            let g = self.lock()?;
            if g.done == g.tail {
                return Ok(());
            }
            // Read under the lock, so a `task_done` after it bumps it.
            let seen = h.done.seen();
            drop(g);
            h.done.wait_for_change(
                seen,
                Some(deadline),
                None,
                "messages are unfinished",
                "some message is still unfinished",
            )?;
        }
    }

    fn get_until(&self, wait: Option<Option<Instant>>) -> Result<T> {
        let h = self.header();
        // A pipe's writer is looked up (a /proc read, tens of µs) only on a look after a wait
        // (or after a wait that ended the call): the quick answer to a busy writer never pays
        // for it, and a dead writer is still found within one poll interval.
        let mut waited = false;
        loop {
            let mut g = self.lock()?;
            if g.head != g.tail {
                let slot = self.slot(g.head);
                // Copied out under the lock, decoded after it: user decode code never runs
                // while the queue is locked. The buffer is this thread's, kept between gets:
                // a fresh one per get made a large message cost an allocation whose pages
                // faulted in every time (1 MiB messages moved at 1.3 GB/s).
                let mut buf = GET_BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
                buf.clear();
                // SAFETY: the slot holds a committed message (head < tail) and is ours under
                // the lock; its length word was written by the put and is within the slot.
                unsafe {
                    let len = (slot.cast::<u64>().read() as usize).min(self.message_bytes());
                    buf.extend_from_slice(std::slice::from_raw_parts(slot.add(8), len));
                }
                g.head += 1; // the commit
                drop(g);
                h.not_full.bump_and_wake(1);
                let message = postcard::from_bytes::<T>(&buf);
                if buf.capacity() <= KEPT_BUFFER {
                    GET_BUFFER.with(|b| *b.borrow_mut() = buf);
                }
                return message.map_err(|e| {
                    Error::new(
                        ErrorKind::Decode,
                        format!(
                            "a queued message could not be decoded: {}",
                            crate::shm::handle::explain(e)
                        ),
                    )
                });
            }
            if self.is_closed() {
                return Err(Error::new(
                    ErrorKind::Closed,
                    "the queue is closed and empty",
                ));
            }
            if waited && holder_gone(&h.writer) {
                return Err(Error::new(
                    ErrorKind::Closed,
                    "the process at the other end of the pipe has ended",
                ));
            }
            // Read under the lock, so a put after it bumps it.
            let seen = h.not_empty.seen();
            drop(g);
            // A pipe's reader also looks at its writer's life when it wakes (see `RECHECK`).
            let pipe = has_holder(&h.writer);
            let waiting = h.not_empty.wait_for_change(
                seen,
                wait,
                Some(RECHECK),
                "the queue is empty",
                "no message came in time",
            );
            // A call that ends without a wait (try_get, a short timeout) still reports a dead
            // writer: one more look, with the writer check, before the WouldBlock or TimedOut.
            if let Err(e) = waiting {
                if waited || !pipe {
                    return Err(e);
                }
            }
            waited = true;
        }
    }
}

/// The largest get buffer a thread keeps for its next get (a larger one is freed at once).
const KEPT_BUFFER: usize = 64 << 20;

thread_local! {
    /// The buffer a get copies its message into, kept for the next get on this thread.
    static GET_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How often a waiting put or get wakes to look again, woken or not. Two things need it:
/// - a put or get wakes one sleeper on the other side (`bump_and_wake(1)`), and a process
///   woken that way can die before it runs; the wake-up dies with it, and another sleeper
///   would otherwise find the message (or the room) only at its deadline, or never;
/// - a pipe's waiting end checks that the process at the other end lives.
const RECHECK: Duration = Duration::from_millis(100);

/// Records this process as the holder of one end of a pipe's direction.
fn record_holder(holder: &AtomicU32) {
    // ORDERING: Relaxed: a hint read by the other end while it waits; nothing is published by
    // it.
    holder.store(sys::pid() as u32, Ordering::Relaxed);
}

/// True when an end has a recorded holder (a pipe; a plain queue has none).
fn has_holder(holder: &AtomicU32) -> bool {
    // ORDERING: see `record_holder`.
    holder.load(Ordering::Relaxed) != 0
}

/// True when an end's recorded holder is another process that has ended (a /proc read, tens
/// of µs: only looked up after a wait).
fn holder_gone(holder: &AtomicU32) -> bool {
    // ORDERING: see `record_holder`.
    let pid = holder.load(Ordering::Relaxed) as i32;
    pid != 0 && pid != sys::pid() && !sys::process_alive(pid)
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// A `Queue` travels inside the arguments of a shmpar call as a handle and arrives as the same
/// queue (see [`SharedValue`](crate::SharedValue)'s `Serialize` for where that works).
impl<T: 'static> Serialize for Queue<T> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        crate::shm::handle::serialize::<Self, S>(&self.region, serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned + 'static> serde::Deserialize<'de> for Queue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let region = crate::shm::handle::deserialize::<Self, D>(deserializer)?;
        Queue::attach(region).map_err(serde::de::Error::custom)
    }
}

#[cfg(all(test, loom))]
mod model {
    //! A queue of capacity 1 as the queue runs it: its cursor under the real `ShmMutex`, its
    //! two real `Signal`s (`wake`), and the put and get steps of `Queue::put_until` and
    //! `get_until` (lock, look, commit or read the signal under the lock, unlock, wait or
    //! bump). The futex is modelled (see `primitive`): a lost wake-up is a deadlock loom
    //! reports.

    use super::*;
    use loom::sync::Arc;

    #[derive(Default, Clone, Copy)]
    struct Cursor {
        head: u64,
        tail: u64,
        slot: u64,
    }

    // SAFETY: plain integers.
    unsafe impl crate::ShmSafe for Cursor {}

    struct Lane {
        cursor: ShmMutex<Cursor>,
        not_empty: Signal,
        not_full: Signal,
    }

    fn put(q: &Lane, message: u64) {
        loop {
            let mut g = q.cursor.lock().unwrap();
            if g.tail - g.head < 1 {
                g.slot = message;
                g.tail += 1; // the commit
                drop(g);
                q.not_empty.bump_and_wake(1);
                return;
            }
            let seen = q.not_full.seen();
            drop(g);
            q.not_full
                .wait_for_change(seen, Some(None), None, "full", "full")
                .unwrap();
        }
    }

    fn get(q: &Lane) -> u64 {
        loop {
            let mut g = q.cursor.lock().unwrap();
            if g.head != g.tail {
                let message = g.slot;
                g.head += 1; // the commit
                drop(g);
                q.not_full.bump_and_wake(1);
                return message;
            }
            let seen = q.not_empty.seen();
            drop(g);
            q.not_empty
                .wait_for_change(seen, Some(None), None, "empty", "empty")
                .unwrap();
        }
    }

    #[test]
    fn a_full_queue_and_an_empty_one_wake_their_waiters_and_keep_the_order() {
        crate::primitive::model(|| {
            let q = Arc::new(Lane {
                cursor: ShmMutex::new(Cursor::default()),
                not_empty: Signal::new(),
                not_full: Signal::new(),
            });
            let producer = {
                let q = Arc::clone(&q);
                loom::thread::spawn(move || {
                    put(&q, 1);
                    put(&q, 2);
                })
            };
            assert_eq!(get(&q), 1);
            assert_eq!(get(&q), 2);
            producer.join().unwrap();
        });
    }
}
