//! `Pipe<T>`: two connected ends, each able to send and receive.

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
/// # End of file
/// An end sent to another process as a handle records that process as its writer: once it has
/// ended and every message it sent has been read, `recv` at the other end fails with
/// [`ErrorKind::Closed`](crate::ErrorKind::Closed) within about 100 ms, rather than wait
/// forever. (An end that reached a child by [`Process::fork`](crate::Process::fork) is not
/// recorded: the writer is still the parent.)
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
        let ab = Arc::new(Queue::with_message_bytes(capacity, message_bytes)?);
        let ba = Arc::new(Queue::with_message_bytes(capacity, message_bytes)?);
        // Both ends are ours for now; an end sent to another process records that process.
        ab.set_writer();
        ba.set_writer();
        Ok((
            Connection {
                send: Arc::clone(&ab),
                recv: Arc::clone(&ba),
            },
            Connection { send: ba, recv: ab },
        ))
    }
}

/// One end of a [`Pipe`].
pub struct Connection<T> {
    send: Arc<Queue<T>>,
    recv: Arc<Queue<T>>,
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends a message to the other end (waits while its buffer is full).
    ///
    /// ```
    /// let (a, b) = shmpar::Pipe::<[u8; 3]>::new()?;
    /// a.send(&[1u8, 2, 3])?;
    /// assert_eq!(b.recv()?, [1, 2, 3]);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn send(&self, message: &T) -> Result<()> {
        self.send.put(message)
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
        self.recv.get()
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
        self.recv.get_timeout(timeout)
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
        !self.recv.is_empty()
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
            send: Arc::clone(&self.send),
            recv: Arc::clone(&self.recv),
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
        (&*self.send, &*self.recv).serialize(serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned + 'static> serde::Deserialize<'de> for Connection<T> {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let (send, recv) = <(Queue<T>, Queue<T>)>::deserialize(deserializer)?;
        // A started child holds this end now: the other end's reader gets end of file if it
        // dies. (A pool task only borrows an end for a task; its worker is not the holder.)
        if crate::lifecycle::role() == crate::lifecycle::Role::Child {
            send.set_writer();
        }
        Ok(Connection {
            send: Arc::new(send),
            recv: Arc::new(recv),
        })
    }
}
