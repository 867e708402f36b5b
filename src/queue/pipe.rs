//! `Pipe<T>`: two connected ends, each able to send and receive; or, one way, a
//! [`PipeReader`] and a [`PipeWriter`].

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Queue;
use crate::error::Result;

/// A duplex channel between two processes (Python's `multiprocessing.Pipe()`): two queues, one
/// each way. Give one [`Connection`] to the other process in its arguments.
///
/// ```
/// use shmpar::{Connection, Pipe, Process};
///
/// # fn main() -> shmpar::Result<()> {
/// let (parent, child) = Pipe::<String>::new()?;
/// let kid = Process::start(
///     |end: Connection<String>| {
///         let question = end.recv().unwrap();
///         end.send(&format!("{question}? 42")).unwrap();
///     },
///     child,
/// )?;
/// parent.send(&"the answer".to_string())?;
/// assert_eq!(parent.recv()?, "the answer? 42");
/// kid.join()?.into_result()?;
/// // The other end's process has ended: `recv` says so (end of file) instead of waiting.
/// assert_eq!(parent.recv().unwrap_err().kind(), shmpar::ErrorKind::Closed);
/// # Ok(())
/// # }
/// ```
///
/// Python's `send_bytes` and `recv_bytes` have no twin here: a `Pipe<serde_bytes::ByteBuf>`
/// moves bytes copied whole, where a `Pipe<Vec<u8>>` goes byte by byte (see
/// [`Queue`](crate::Queue)'s *Bytes*).
///
/// # End of file and broken pipes
/// An end sent to a started child as a handle records that child as its holder (from the
/// moment the child has taken its arguments, before its function runs).
/// - Once a writer's process has ended and every message it sent has been read, `recv` at the
///   other end fails with [`ErrorKind::Closed`](crate::ErrorKind::Closed) within about
///   100 ms, rather than wait forever.
/// - Once a reader's process has ended, a `send` that finds the pipe full fails with
///   [`ErrorKind::Closed`](crate::ErrorKind::Closed) (a broken pipe) within about 100 ms. A
///   send that finds room succeeds, as a write to an OS pipe's buffer does: what it sent is
///   lost with the reader.
///
/// An end that reached a child by [`Process::fork`](crate::Process::fork) is not recorded:
/// its holder is still the parent, and where a peer may stop reading without dying,
/// [`send_timeout`](Connection::send_timeout) is the way out.
#[derive(Debug)]
pub struct Pipe<T>(std::marker::PhantomData<fn(T) -> T>);

impl<T: Serialize + DeserializeOwned> Pipe<T> {
    /// Two connected ends, each buffering up to 64 messages of up to 4 KiB.
    ///
    /// ```
    /// let (a, b) = shmpar::Pipe::<u32>::new()?;
    /// a.send(&1)?;
    /// assert_eq!(b.recv()?, 1);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Result<(Connection<T>, Connection<T>)> {
        Pipe::with_capacity(64, 4096)
    }

    /// Two connected ends with room for `capacity` messages of up to `message_bytes` each way.
    ///
    /// ```
    /// let (a, b) = shmpar::Pipe::<Vec<u8>>::with_capacity(4, 1 << 16)?;
    /// a.send(&vec![0; 60_000])?;
    /// assert_eq!(b.recv()?.len(), 60_000);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn with_capacity(
        capacity: usize,
        message_bytes: usize,
    ) -> Result<(Connection<T>, Connection<T>)> {
        // Two one-way pipes, one each way.
        let (a_reads, b_writes) = Pipe::one_way_with_capacity(capacity, message_bytes)?;
        let (b_reads, a_writes) = Pipe::one_way_with_capacity(capacity, message_bytes)?;
        Ok((
            Connection {
                send: a_writes,
                recv: a_reads,
            },
            Connection {
                send: b_writes,
                recv: b_reads,
            },
        ))
    }
}

impl<T: Serialize + DeserializeOwned> Pipe<T> {
    /// A one-way pipe (Python's `Pipe(duplex=False)`, same order): the reading end and the
    /// writing end, over one queue of up to 64 messages of up to 4 KiB. Half the shared memory
    /// of [`Pipe::new`], and the types say which end may send. The reader gets end of file
    /// (`ErrorKind::Closed`) once the writer's process has ended and every message is read,
    /// as with a [`Connection`]: the writer is the process that received the
    /// [`PipeWriter`] in its arguments last ([`Process::start`](crate::Process::start)), or
    /// this one. A writer that reached a child through [`Process::fork`](crate::Process::fork)
    /// is not recorded, and dropping a `PipeWriter` does not close the pipe (the end may live
    /// on in another process): call [`PipeWriter::close`] when done writing.
    ///
    /// ```
    /// use shmpar::{Pipe, PipeWriter, Process};
    ///
    /// # fn main() -> shmpar::Result<()> {
    /// let (reader, writer) = Pipe::<u64>::one_way()?;
    /// let kid = Process::start(
    ///     |w: PipeWriter<u64>| (1..=3).for_each(|i| w.send(&(i * i)).unwrap()),
    ///     writer,
    /// )?;
    /// let got: Vec<u64> = (0..3).map(|_| reader.recv().unwrap()).collect();
    /// assert_eq!(got, [1, 4, 9]);
    /// kid.join()?.into_result()?;
    /// assert_eq!(reader.recv().unwrap_err().kind(), shmpar::ErrorKind::Closed);
    /// # Ok(())
    /// # }
    /// ```
    pub fn one_way() -> Result<(PipeReader<T>, PipeWriter<T>)> {
        Pipe::one_way_with_capacity(64, 4096)
    }

    /// [`one_way`](Pipe::one_way) with room for `capacity` messages of up to `message_bytes`.
    ///
    /// ```
    /// let (r, w) = shmpar::Pipe::<Vec<u8>>::one_way_with_capacity(2, 1 << 16)?;
    /// w.send(&vec![7; 50_000])?;
    /// assert_eq!(r.recv()?.len(), 50_000);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn one_way_with_capacity(
        capacity: usize,
        message_bytes: usize,
    ) -> Result<(PipeReader<T>, PipeWriter<T>)> {
        let queue = Arc::new(Queue::with_message_bytes(capacity, message_bytes)?);
        // Both ends are ours for now; an end sent to another process records that process.
        queue.set_writer();
        queue.set_reader();
        Ok((
            PipeReader {
                queue: Arc::clone(&queue),
            },
            PipeWriter { queue },
        ))
    }
}

/// The reading end of a one-way [`Pipe`] ([`Pipe::one_way`]).
pub struct PipeReader<T> {
    queue: Arc<Queue<T>>,
}

/// The writing end of a one-way [`Pipe`] ([`Pipe::one_way`]).
pub struct PipeWriter<T> {
    queue: Arc<Queue<T>>,
}

impl<T: Serialize + DeserializeOwned> PipeReader<T> {
    /// Receives the next message, waiting for it; `ErrorKind::Closed` once the writer has
    /// closed its end or its process has ended, and everything sent has been read.
    ///
    /// ```
    /// let (r, w) = shmpar::Pipe::<char>::one_way()?;
    /// w.send(&'x')?;
    /// assert_eq!(r.recv()?, 'x');
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn recv(&self) -> Result<T> {
        self.queue.get()
    }

    /// Receives, failing with [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut) if nothing
    /// comes in time.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (r, _w) = shmpar::Pipe::<u8>::one_way()?;
    /// assert!(r.recv_timeout(Duration::from_millis(5)).is_err());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T> {
        self.queue.get_timeout(timeout)
    }

    /// True if a message is waiting.
    ///
    /// ```
    /// let (r, w) = shmpar::Pipe::<u8>::one_way()?;
    /// assert!(!r.poll());
    /// w.send(&1)?;
    /// assert!(r.poll());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn poll(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Closes the pipe from the reading side: the writer's `send` fails with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) from now on.
    ///
    /// ```
    /// let (r, w) = shmpar::Pipe::<u8>::one_way()?;
    /// r.close();
    /// assert_eq!(w.send(&1).unwrap_err().kind(), shmpar::ErrorKind::Closed);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn close(&self) {
        self.queue.close();
    }
}

impl<T: Serialize + DeserializeOwned> PipeWriter<T> {
    /// Sends a message (waits while the pipe is full; fails with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) if the reading end is closed, or its
    /// process has ended while the pipe is full: see [`Pipe`]).
    ///
    /// ```
    /// let (r, w) = shmpar::Pipe::<[u8; 2]>::one_way()?;
    /// w.send(&[1, 2])?;
    /// assert_eq!(r.recv()?, [1, 2]);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn send(&self, message: &T) -> Result<()> {
        self.queue.put(message)
    }

    /// Sends, failing with [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut) if the pipe
    /// stays full: the way out of a send to a reader that stopped reading (or died).
    ///
    /// ```
    /// use std::time::Duration;
    /// let (_r, w) = shmpar::Pipe::<u8>::one_way_with_capacity(1, 8)?;
    /// w.send(&1)?;
    /// let err = w.send_timeout(&2, Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(err.kind(), shmpar::ErrorKind::TimedOut);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn send_timeout(&self, message: &T, timeout: Duration) -> Result<()> {
        self.queue.put_timeout(message, timeout)
    }

    /// Closes the writing end: the reader gets what was sent, then
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed).
    ///
    /// ```
    /// let (r, w) = shmpar::Pipe::<u8>::one_way()?;
    /// w.send(&5)?;
    /// w.close();
    /// assert_eq!(r.recv()?, 5);
    /// assert_eq!(r.recv().unwrap_err().kind(), shmpar::ErrorKind::Closed);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn close(&self) {
        self.queue.close();
    }
}

impl<T> std::fmt::Debug for PipeReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeReader").finish_non_exhaustive()
    }
}

impl<T> std::fmt::Debug for PipeWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeWriter").finish_non_exhaustive()
    }
}

/// Travels inside the arguments of a shmpar call as its queue's handle.
impl<T: Serialize + DeserializeOwned + 'static> Serialize for PipeReader<T> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned + 'static> serde::Deserialize<'de> for PipeReader<T> {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let queue = Queue::deserialize(deserializer)?;
        // A started child holds this end now: the writer gets a broken pipe if it dies while
        // the pipe is full (see `PipeWriter`).
        if crate::lifecycle::role() == crate::lifecycle::Role::Child {
            queue.set_reader();
        }
        Ok(PipeReader {
            queue: Arc::new(queue),
        })
    }
}

/// Travels inside the arguments of a shmpar call as its queue's handle; a started child that
/// receives it becomes the writer whose end the reader watches.
impl<T: Serialize + DeserializeOwned + 'static> Serialize for PipeWriter<T> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned + 'static> serde::Deserialize<'de> for PipeWriter<T> {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let queue = Queue::deserialize(deserializer)?;
        // A started child holds this end now: the reader gets end of file if it dies. (A
        // pool task only borrows an end for a task; its worker is not the holder.)
        if crate::lifecycle::role() == crate::lifecycle::Role::Child {
            queue.set_writer();
        }
        Ok(PipeWriter {
            queue: Arc::new(queue),
        })
    }
}

/// One end of a [`Pipe`].
pub struct Connection<T> {
    send: PipeWriter<T>,
    recv: PipeReader<T>,
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends a message to the other end (waits while its buffer is full; fails with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) if the other end is closed, or its
    /// process has ended while the buffer is full: see [`Pipe`]).
    ///
    /// ```
    /// let (a, b) = shmpar::Pipe::<[u8; 3]>::new()?;
    /// a.send(&[1u8, 2, 3])?;
    /// assert_eq!(b.recv()?, [1, 2, 3]);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn send(&self, message: &T) -> Result<()> {
        self.send.send(message)
    }

    /// Sends, failing with [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut) if the other
    /// end's buffer stays full: the way out of a send to an end that stopped reading (or died).
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, _b) = shmpar::Pipe::<u8>::with_capacity(1, 8)?;
    /// a.send(&1)?;
    /// let err = a.send_timeout(&2, Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(err.kind(), shmpar::ErrorKind::TimedOut);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn send_timeout(&self, message: &T, timeout: Duration) -> Result<()> {
        self.send.send_timeout(message, timeout)
    }

    /// Receives the next message from the other end, waiting for it.
    ///
    /// ```
    /// let (a, b) = shmpar::Pipe::<char>::new()?;
    /// b.send(&'x')?;
    /// assert_eq!(a.recv()?, 'x');
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn recv(&self) -> Result<T> {
        self.recv.recv()
    }

    /// Receives, failing with [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut) if nothing
    /// comes in time.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, _b) = shmpar::Pipe::<u8>::new()?;
    /// assert!(a.recv_timeout(Duration::from_millis(5)).is_err());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T> {
        self.recv.recv_timeout(timeout)
    }

    /// True if a message is waiting.
    ///
    /// ```
    /// let (a, b) = shmpar::Pipe::<u8>::new()?;
    /// assert!(!b.poll());
    /// a.send(&1u8)?;
    /// assert!(b.poll());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn poll(&self) -> bool {
        self.recv.poll()
    }

    /// Closes this end: the other end's `recv` fails with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) once it has read what was sent, and
    /// its `send` fails at once.
    ///
    /// ```
    /// let (a, b) = shmpar::Pipe::<u8>::new()?;
    /// a.close();
    /// assert_eq!(b.recv().unwrap_err().kind(), shmpar::ErrorKind::Closed);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn close(&self) {
        self.send.close();
        self.recv.close();
    }
}

/// Another handle to the same end (its messages are shared, not copied).
impl<T> Clone for Connection<T> {
    fn clone(&self) -> Self {
        Connection {
            send: self.send.clone(),
            recv: self.recv.clone(),
        }
    }
}

/// Another handle to the same end. Only one reader process is recorded (the last started
/// child that received it in its arguments): once it has ended, a send that finds the pipe
/// full fails with a broken pipe, even if another process still holds a clone and reads.
impl<T> Clone for PipeReader<T> {
    fn clone(&self) -> Self {
        PipeReader {
            queue: Arc::clone(&self.queue),
        }
    }
}

/// Another handle to the same end. Only one writer process is recorded (the last that
/// received it in its arguments): its end gives the reader end of file, even if another
/// process still holds a clone.
impl<T> Clone for PipeWriter<T> {
    fn clone(&self) -> Self {
        PipeWriter {
            queue: Arc::clone(&self.queue),
        }
    }
}

impl<T> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

/// A `Connection` travels inside the arguments of a shmpar call as the handles of its two
/// queues, and arrives as the same end of the pipe.
impl<T: Serialize + DeserializeOwned + 'static> Serialize for Connection<T> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        (&self.send, &self.recv).serialize(serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned + 'static> serde::Deserialize<'de> for Connection<T> {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        // The writer records a started child that receives it (see `PipeWriter`).
        let (send, recv) = <(PipeWriter<T>, PipeReader<T>)>::deserialize(deserializer)?;
        Ok(Connection { send, recv })
    }
}
