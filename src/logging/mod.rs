//! Logging from many processes into one file: an implementation of the [`log`] facade.
//!
//! Every process (the parent, pool workers, [`Process`](crate::Process) children) writes whole
//! records, one line each:
//!
//! ```text
//! 2026-11-21T22:41:07.123456Z 4242 w1 INFO my_crate::step: chunk 7 done
//! ```
//!
//! (UTC time, pid, who: `main`, `child` or `w<worker index>`, level, target, message.)
//!
//! # Two ways to keep records whole, and why the funnel is the default
//! - [`Mode::Funnel`] (default): each process puts its formatted record into a shared-memory
//!   [`Queue`], and one writer thread in the process that called [`init`] appends
//!   them to the file. A put is committed by one store under a robust mutex, so a process killed
//!   at any moment leaves either the whole record or nothing, and blocks nobody.
//! - [`Mode::Append`]: each record is one `write(2)` on a file opened `O_APPEND`. Records never
//!   interleave, but Linux checks for a fatal signal between the pages of a write, so a process
//!   SIGKILLed inside a record that crosses a page boundary of the file leaves half a line.
//!
//! Measured with `cargo run --release -- log-demo` (see the README): both sustain several
//! hundred thousand records per second; the funnel is chosen because only it keeps every line
//! whole when writers are killed.
//!
//! # Set-up order
//! Call [`init`] whenever you like, before or after creating pools and processes: workers and
//! children started later get the logger with their start, and workers already running get it
//! with the next call on their pool. Keep the returned [`LogGuard`] alive; dropping it writes
//! what is still queued and stops the writer.
//!
//! ```
//! # fn main() -> shmpar::Result<()> {
//! let path = std::env::temp_dir().join(format!("shmpar-doc-{}.log", std::process::id()));
//! let pool = shmpar::Pool::new(2)?; // before the logger: fine
//! let guard = shmpar::logging::init(&path, log::LevelFilter::Info)?;
//! log::info!("starting");
//! pool.map(0..4u32, |i| log::info!("task {i} in a worker"))?;
//! drop(pool);
//! drop(guard); // flushes
//! let text = std::fs::read_to_string(&path).unwrap();
//! assert_eq!(text.lines().count(), 5);
//! assert!(text.contains(" main INFO ") && text.contains("task 3 in a worker"));
//! # std::fs::remove_file(&path).ok();
//! # Ok(())
//! # }
//! ```

mod time;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::queue::Queue;

/// How records reach the file (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Through a shared-memory queue to one writer thread: whole records even when writers are
    /// killed. The default.
    #[default]
    Funnel,
    /// One `write(2)` per record on an `O_APPEND` file, from every process.
    Append,
}

/// The longest record kept whole; longer messages are cut, and end with `[cut]`.
pub const MAX_RECORD: usize = 4000;

struct Logger {
    level: log::LevelFilter,
    mode: Mode,
    /// The file, for [`Mode::Append`] in the process that called [`init`] and the processes it
    /// forked directly (each opens it once itself).
    path: Option<PathBuf>,
    /// The file, for [`Mode::Append`] in a process that adopted the logger (see [`adopt`]).
    file: Option<File>,
    /// The funnel, for [`Mode::Funnel`].
    queue: Option<Arc<Queue<Vec<u8>>>>,
    /// Records that could not be queued because the writer was stalled for 5 s.
    dropped: AtomicU64,
}

static LOGGER: OnceLock<&'static Logger> = OnceLock::new();

/// Keeps the writer running; dropping it writes every queued record and stops the writer.
#[derive(Debug)]
pub struct LogGuard {
    writer: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// Installs the logger for this process and every process shmpar starts (pool workers and
/// [`Process`](crate::Process) children, whether they started before or after this call),
/// writing to `path` (appended to, created if missing) in [`Mode::Funnel`].
///
/// Fails with [`ErrorKind::InvalidInput`] if a logger is
/// already installed, and [`ErrorKind::Io`] if the file cannot be opened.
///
/// ```
/// # let path = std::env::temp_dir().join(format!("shmpar-init-{}.log", std::process::id()));
/// let guard = shmpar::logging::init(&path, log::LevelFilter::Warn)?;
/// log::warn!("careful");
/// drop(guard);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), shmpar::Error>(())
/// ```
pub fn init(path: impl AsRef<Path>, level: log::LevelFilter) -> Result<LogGuard> {
    init_with(path, level, Mode::Funnel)
}

/// Like [`init`], choosing the [`Mode`].
///
/// ```
/// # let path = std::env::temp_dir().join(format!("shmpar-mode-{}.log", std::process::id()));
/// let guard = shmpar::logging::init_with(&path, log::LevelFilter::Info, shmpar::logging::Mode::Append)?;
/// log::info!("one write(2) per record");
/// drop(guard);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), shmpar::Error>(())
/// ```
pub fn init_with(path: impl AsRef<Path>, level: log::LevelFilter, mode: Mode) -> Result<LogGuard> {
    let path = path.as_ref().to_path_buf();
    let file = open(&path)?;
    let queue = Arc::new(Queue::with_message_bytes(8192, MAX_RECORD + 64)?);
    let logger: &'static Logger = Box::leak(Box::new(Logger {
        level,
        mode,
        path: Some(path),
        file: None,
        queue: Some(Arc::clone(&queue)),
        dropped: AtomicU64::new(0),
    }));
    if LOGGER.set(logger).is_err() || log::set_logger(logger).is_err() {
        return Err(Error::invalid(
            "a logger is already installed in this process",
        ));
    }
    log::set_max_level(level);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = match mode {
        Mode::Append => None,
        Mode::Funnel => {
            let stop = Arc::clone(&stop);
            Some(
                std::thread::Builder::new()
                    .name("shmpar-log-writer".into())
                    .spawn(move || drain(&queue, file, &stop))
                    .map_err(|e| Error::io("could not start the log writer thread", e))?,
            )
        }
    };
    Ok(LogGuard { writer, stop })
}

/// Records dropped because the writer was stalled (the queue stayed full for 5 s).
///
/// ```
/// assert_eq!(shmpar::logging::dropped(), 0);
/// ```
pub fn dropped() -> u64 {
    // ORDERING: a counter read for reporting.
    LOGGER
        .get()
        .map_or(0, |l| l.dropped.load(Ordering::Relaxed))
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("could not open the log file {}", path.display()), e))
}

/// The writer thread: appends queued records, flushing whenever the queue runs dry.
fn drain(queue: &Queue<Vec<u8>>, file: File, stop: &AtomicBool) {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
    loop {
        match queue.get_timeout(Duration::from_millis(20)) {
            Ok(record) => {
                // A failed write cannot be logged; the record is lost with the disk.
                let _ = out.write_all(&record);
            }
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                let _ = out.flush();
                // ORDERING: set by the guard before it joins us; the queue is empty now.
                if stop.load(Ordering::Acquire) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = out.flush();
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        // ORDERING: Release, read by the writer once the queue is empty.
        self.stop.store(true, Ordering::Release);
        if let Some(w) = self.writer.take() {
            // A writer that panicked has nothing left to report.
            let _ = w.join();
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_record(record);
        match (self.mode, &self.queue, &self.file, &self.path) {
            (Mode::Funnel, Some(queue), _, _) => {
                let queued = queue.put_timeout(&line, Duration::from_secs(5));
                if queued.is_err() {
                    // ORDERING: a counter for reporting.
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            // `write`, not `write_all`: a second write could land after another process's.
            (_, _, Some(file), _) => drop((&*file).write(&line)),
            (_, _, _, Some(path)) => append(path, &line),
            _ => {}
        }
    }

    fn flush(&self) {}
}

/// How a process that shmpar starts logs like the one that called [`init`]: sent along with a
/// descriptor (the funnel's region, or the file opened for appending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogSetup {
    level: usize,
    append: bool,
    /// The funnel region's length.
    len: u64,
}

impl LogSetup {
    /// Three numbers, for a fixed-size message.
    pub(crate) fn to_words(self) -> [u64; 3] {
        [self.level as u64, u64::from(self.append), self.len]
    }

    pub(crate) fn from_words([level, append, len]: [u64; 3]) -> LogSetup {
        LogSetup {
            level: level as usize,
            append: append != 0,
            len,
        }
    }
}

/// True once [`init`] has installed the logger in this process.
pub(crate) fn active() -> bool {
    LOGGER.get().is_some()
}

/// What a process started from this one needs to log into the same file, if a logger is
/// installed: the setup and a new descriptor for it.
pub(crate) fn inheritance() -> Option<(LogSetup, OwnedFd)> {
    let logger = LOGGER.get()?;
    let fd = match (&logger.queue, &logger.path, logger.mode) {
        (Some(q), _, Mode::Funnel) => q.region().fd().try_clone_to_owned().ok()?,
        (_, Some(path), Mode::Append) => OwnedFd::from(open(path).ok()?),
        _ => return None,
    };
    let len = logger.queue.as_ref().map_or(0, |q| q.region().len() as u64);
    let level = logger.level as usize;
    Some((
        LogSetup {
            level,
            append: logger.mode == Mode::Append,
            len,
        },
        fd,
    ))
}

/// In a process started by shmpar: installs a logger that writes where the parent's does
/// (see [`inheritance`]). Nothing happens if this process already has one (a worker forked
/// directly after [`init`] inherited it).
pub(crate) fn adopt(setup: LogSetup, fd: OwnedFd) {
    if active() {
        return;
    }
    let level = log::LevelFilter::iter()
        .nth(setup.level)
        .unwrap_or(log::LevelFilter::Info);
    let (mode, queue, file) = if setup.append {
        (Mode::Append, None, Some(File::from(fd)))
    } else {
        let queue = crate::shm::Region::from_file(File::from(fd), setup.len as usize, None, false)
            .and_then(Queue::attach);
        match queue {
            Ok(q) => (Mode::Funnel, Some(Arc::new(q)), None),
            // A region that is not the funnel: this process logs nothing rather than guess.
            Err(_) => return,
        }
    };
    let logger: &'static Logger = Box::leak(Box::new(Logger {
        level,
        mode,
        path: None,
        file,
        queue,
        dropped: AtomicU64::new(0),
    }));
    if LOGGER.set(logger).is_ok() && log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// One `write(2)` of the whole record on this process's own `O_APPEND` descriptor (a pool
/// worker closes the descriptors it inherited, so each process opens the file once itself).
fn append(path: &Path, line: &[u8]) {
    thread_local! {
        static FILE: std::cell::RefCell<Option<(u32, File)>> = const { std::cell::RefCell::new(None) };
    }
    FILE.with(|f| {
        let mut f = f.borrow_mut();
        let pid = std::process::id();
        if f.as_ref().is_none_or(|(p, _)| *p != pid) {
            *f = open(path).ok().map(|file| (pid, file));
        }
        if let Some((_, file)) = f.as_mut() {
            // `write`, not `write_all`: a second write could land after another process's.
            let _ = file.write(line);
        }
    });
}

/// "time pid who LEVEL target: message\n", at most [`MAX_RECORD`] bytes.
fn format_record(record: &log::Record<'_>) -> Vec<u8> {
    let mut line = format!(
        "{} {} {} {} {}: {}",
        time::now_utc(),
        std::process::id(),
        crate::lifecycle::role().label(),
        record.level(),
        record.target(),
        record.args()
    );
    if line.len() > MAX_RECORD - 1 {
        let mut cut = MAX_RECORD - 7;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("[cut]");
    }
    // A record is one line: newlines inside the message would make two.
    let mut bytes = line.replace('\n', " ").into_bytes();
    bytes.push(b'\n');
    bytes
}
