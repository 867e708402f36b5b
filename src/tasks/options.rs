//! `MapOptions`: per-call settings for `map`, `imap` and `imap_unordered`.

/// Options for [`Pool::map_with`](crate::Pool::map_with) and
/// [`Pool::imap_with`](crate::Pool::imap_with). Every option has a default.
///
/// ```
/// use shmpar::MapOptions;
///
/// let opts = MapOptions::new().chunksize(16).retries(2).read_ahead(4096);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
pub struct MapOptions {
    chunksize: Option<usize>,
    retries: u32,
    read_ahead: Option<usize>,
}

impl MapOptions {
    /// The defaults: automatic chunk size, no retries, automatic read-ahead.
    ///
    /// ```
    /// let opts = shmpar::MapOptions::new();
    /// # let _ = opts;
    /// ```
    pub fn new() -> Self {
        MapOptions::default()
    }

    /// Tasks per chunk: a worker takes this many at a time. Larger chunks cost less per task;
    /// smaller ones balance uneven tasks better. Default for `map`: the input length divided by
    /// four times the number of workers (Python's rule); for `imap`: 1. Zero means the default.
    ///
    /// ```
    /// let opts = shmpar::MapOptions::new().chunksize(100);
    /// # let _ = opts;
    /// ```
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = (n > 0).then_some(n);
        self
    }

    /// How many times a task whose worker died (abort, segfault, SIGKILL) while running it is
    /// run again. Only for idempotent tasks: a task may have had effects before its worker
    /// died. Tasks the dead worker had not started always run elsewhere. Default: 0.
    ///
    /// ```
    /// let opts = shmpar::MapOptions::new().retries(3);
    /// # let _ = opts;
    /// ```
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// For `imap`: how many inputs may be read (and their tasks submitted) beyond the results
    /// taken so far: a sliding window. Default: 64 chunks per worker. Zero means the default.
    ///
    /// ```
    /// let opts = shmpar::MapOptions::new().read_ahead(1000);
    /// # let _ = opts;
    /// ```
    pub fn read_ahead(mut self, n: usize) -> Self {
        self.read_ahead = (n > 0).then_some(n);
        self
    }

    pub(crate) fn chunksize_setting(&self) -> Option<usize> {
        self.chunksize
    }

    pub(crate) fn retries_setting(&self) -> u32 {
        self.retries
    }

    /// The chunk size for `len` tasks on `workers` workers.
    pub(crate) fn chunksize_for(&self, len: usize, workers: usize) -> usize {
        self.chunksize
            .unwrap_or_else(|| len.div_ceil(4 * workers.max(1)))
            .max(1)
    }

    /// The batch length for `imap`.
    pub(crate) fn read_ahead_for(&self, chunksize: usize, workers: usize) -> usize {
        self.read_ahead
            .unwrap_or(64 * workers.max(1) * chunksize)
            .max(1)
    }
}
