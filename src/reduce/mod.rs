//! `par_reduce` and friends: split along axis 0 into a fixed chunk grid, run the user's function
//! on each chunk in the workers, combine the partial results in chunk order.
//!
//! # Determinism
//! The grid depends only on the array's shape and the pool's `chunk_bytes`/`max_chunks`, and
//! partials are combined strictly in chunk order (`((r0 + r1) + r2) + ...`), so a float sum is
//! bitwise identical for 1, 2 or 16 workers, with or without the caller helping, and from run to
//! run. (rayon's `sum` is not: its split tree follows the work stealing.)
//!
//! # Why `map` is a function pointer
//! The workers were forked before the call, so they have never seen data the caller created
//! since; a closure's captures would point at memory the worker does not have. A non-capturing
//! closure (`|chunk| chunk.sum()`) or a `fn` item coerces to a function pointer, which is valid
//! in the workers because they run the same binary. Small parameters travel with
//! [`Pool::par_reduce_with`]; large data belongs in a [`SharedArray`].

mod zip;

pub use zip::{Found, Zip, ZipArrays, ZipPart};

use std::mem::size_of;
use std::ops::Range;

use ndarray::{ArrayView, ArrayViewMut, Dimension};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Pool;
use crate::error::{Error, ErrorKind, Result};
use crate::pool::chunk::{ArrayPtr, ChunkFailure, ChunkInput, Trampoline};
use crate::pool::control::{ArrayDesc, MAX_DIMS};
use crate::pool::{Args, CallSpec, Finished, Grid};
use crate::shm::{Element, Region, SharedArray, raw_view};

/// How `map` turns one chunk into a partial result.
type MapFn<A, D, R> = fn(ArrayView<'_, A, D>) -> R;
type MapWithFn<P, A, D, R> = fn(&P, ArrayView<'_, A, D>) -> R;
type ZipFn<A, D, B, E, R> = fn(ArrayView<'_, A, D>, ArrayView<'_, B, E>) -> R;
type ForEachFn<A, D> = fn(ArrayViewMut<'_, A, D>);
type ForEachWithFn<P, A, D> = fn(&P, ArrayViewMut<'_, A, D>);
type RangeFn<R> = fn(Range<u64>, u64) -> R;
type RangeWithFn<P, R> = fn(&P, Range<u64>, u64) -> R;

impl Pool {
    /// Reduces `array` in parallel: `map` runs on each chunk (a view of whole rows along axis 0)
    /// in the workers, and `combine` folds the partial results in chunk order in the caller.
    ///
    /// `R` is any serde type: a sum, a `(min, max)`, a `Vec` histogram. An empty array gives
    /// `map` one empty view.
    ///
    /// ```
    /// use ndarray::Ix2;
    /// use shmpar::{Pool, SharedArray};
    ///
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = Pool::new(2)?;
    /// let mut a = SharedArray::<f32, Ix2>::zeros((1000, 3))?;
    /// a.view_mut().indexed_iter_mut().for_each(|((i, j), x)| *x = (i * 3 + j) as f32);
    /// let (lo, hi) = pool.par_reduce(
    ///     &a,
    ///     |chunk| chunk.fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x))),
    ///     |(a, b), (c, d)| (a.min(c), b.max(d)),
    /// )?;
    /// assert_eq!((lo, hi), (0.0, 2999.0));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::WorkerPanicked`] or [`ErrorKind::WorkerDied`] for the first failing chunk;
    /// [`ErrorKind::InvalidInput`] for an array of more than 8 axes.
    pub fn par_reduce<A, D, R, C>(
        &self,
        array: &SharedArray<A, D>,
        map: MapFn<A, D, R>,
        combine: C,
    ) -> Result<R>
    where
        A: Element,
        D: Dimension,
        R: Serialize + DeserializeOwned,
        C: FnMut(R, R) -> R,
    {
        let desc = describe(array)?;
        let (rows, row_bytes) = rows_of(array);
        fold(
            &self.run_call(
                &[(array.region(), desc)],
                rows,
                row_bytes,
                reduce_chunk::<A, D, R> as Trampoline,
                map as usize,
                &Args::default(),
            )?,
            combine,
        )
    }

    /// Like [`par_reduce`](Pool::par_reduce), with small parameters passed to every `map` call
    /// (serialised once per call; at most 64 KiB).
    ///
    /// ```
    /// use ndarray::Ix1;
    /// use shmpar::{Pool, SharedArray};
    ///
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = Pool::new(2)?;
    /// let a = SharedArray::from_array(&ndarray::Array1::range(0.0, 100.0, 1.0))?;
    /// let above = pool.par_reduce_with(
    ///     &a,
    ///     &49.5f64,
    ///     |threshold, chunk| chunk.iter().filter(|&&x| x > *threshold).count(),
    ///     |a, b| a + b,
    /// )?;
    /// assert_eq!(above, 50);
    /// # Ok(())
    /// # }
    /// ```
    pub fn par_reduce_with<A, D, P, R, C>(
        &self,
        array: &SharedArray<A, D>,
        params: &P,
        map: MapWithFn<P, A, D, R>,
        combine: C,
    ) -> Result<R>
    where
        A: Element,
        D: Dimension,
        P: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        C: FnMut(R, R) -> R,
    {
        let desc = describe(array)?;
        let params = encode_params(params)?;
        let (rows, row_bytes) = rows_of(array);
        fold(
            &self.run_call(
                &[(array.region(), desc)],
                rows,
                row_bytes,
                reduce_with_chunk::<A, D, P, R> as Trampoline,
                map as usize,
                &params,
            )?,
            combine,
        )
    }

    /// Reduces two arrays with the same number of rows together: `map` gets the same rows of
    /// both (a dot product, a weighted sum, an error between a prediction and a target).
    ///
    /// ```
    /// use ndarray::Ix1;
    /// use shmpar::{Pool, SharedArray};
    ///
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = Pool::new(2)?;
    /// let x = SharedArray::from_array(&ndarray::Array1::from_elem(10_000, 2.0f64))?;
    /// let y = SharedArray::from_array(&ndarray::Array1::from_elem(10_000, 3.0f64))?;
    /// let dot = pool.par_reduce_zip(&x, &y, |a, b| a.dot(&b), |p, q| p + q)?;
    /// assert_eq!(dot, 60_000.0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the arrays' first axes differ in length.
    pub fn par_reduce_zip<A, D, B, E, R, C>(
        &self,
        a: &SharedArray<A, D>,
        b: &SharedArray<B, E>,
        map: ZipFn<A, D, B, E, R>,
        combine: C,
    ) -> Result<R>
    where
        A: Element,
        D: Dimension,
        B: Element,
        E: Dimension,
        R: Serialize + DeserializeOwned,
        C: FnMut(R, R) -> R,
    {
        let (rows, row_a) = rows_of(a);
        let (rows_b, row_b) = rows_of(b);
        if rows != rows_b {
            return Err(Error::invalid(format!(
                "par_reduce_zip needs arrays with the same number of rows: {:?} and {:?}",
                a.shape(),
                b.shape()
            )));
        }
        let arrays = [(a.region(), describe(a)?), (b.region(), describe(b)?)];
        fold(
            &self.run_call(
                &arrays,
                rows,
                row_a + row_b,
                zip_chunk::<A, D, B, E, R> as Trampoline,
                map as usize,
                &Args::default(),
            )?,
            combine,
        )
    }

    /// Runs `f` on every chunk of `array` in the workers, each writing its own rows in place.
    ///
    /// ```
    /// use ndarray::Ix1;
    /// use shmpar::{Pool, SharedArray};
    ///
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = Pool::new(2)?;
    /// let mut a = SharedArray::<f64, Ix1>::zeros(100_000)?;
    /// pool.par_for_each_mut(&mut a, |mut chunk| chunk.fill(2.0))?;
    /// assert_eq!(a.view().sum(), 200_000.0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// If a chunk fails, the rows of the other chunks may or may not have been written.
    pub fn par_for_each_mut<A, D>(
        &self,
        array: &mut SharedArray<A, D>,
        f: ForEachFn<A, D>,
    ) -> Result<()>
    where
        A: Element,
        D: Dimension,
    {
        let desc = describe(array)?;
        let (rows, row_bytes) = rows_of(array);
        self.run_call(
            &[(array.region(), desc)],
            rows,
            row_bytes,
            for_each_chunk::<A, D> as Trampoline,
            f as usize,
            &Args::default(),
        )
        .map(drop)
    }

    /// Like [`par_for_each_mut`](Pool::par_for_each_mut), with small parameters for `f`.
    ///
    /// ```
    /// use ndarray::Ix2;
    /// use shmpar::{Pool, SharedArray};
    ///
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = Pool::new(2)?;
    /// let mut a = SharedArray::<f32, Ix2>::zeros((500, 4))?;
    /// pool.par_for_each_mut_with(&mut a, &1.5f32, |v, mut chunk| chunk.fill(*v))?;
    /// assert_eq!(a.view().sum(), 3000.0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn par_for_each_mut_with<A, D, P>(
        &self,
        array: &mut SharedArray<A, D>,
        params: &P,
        f: ForEachWithFn<P, A, D>,
    ) -> Result<()>
    where
        A: Element,
        D: Dimension,
        P: Serialize + DeserializeOwned,
    {
        let desc = describe(array)?;
        let params = encode_params(params)?;
        let (rows, row_bytes) = rows_of(array);
        self.run_call(
            &[(array.region(), desc)],
            rows,
            row_bytes,
            for_each_with_chunk::<A, D, P> as Trampoline,
            f as usize,
            &params,
        )
        .map(drop)
    }

    /// Reduces over the index range `0..n` with no array: `map` gets one chunk of indices and
    /// the chunk's number (to seed a per-chunk random stream, for example). The grid has
    /// `min(n, max_chunks)` chunks at most, and does not depend on the number of workers.
    ///
    /// ```
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = shmpar::Pool::new(2)?;
    /// let sum = pool.par_reduce_range(1_000_000, |range, _chunk| range.sum::<u64>(), |a, b| a + b)?;
    /// assert_eq!(sum, 999_999 * 1_000_000 / 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn par_reduce_range<R, C>(&self, n: u64, map: RangeFn<R>, combine: C) -> Result<R>
    where
        R: Serialize + DeserializeOwned,
        C: FnMut(R, R) -> R,
    {
        let rows = usize::try_from(n).map_err(|_| Error::invalid("range too long"))?;
        // A row of a range is one index; chunk_bytes counts 8 bytes per index.
        fold(
            &self.run_call(
                &[],
                rows,
                8,
                range_chunk::<R> as Trampoline,
                map as usize,
                &Args::default(),
            )?,
            combine,
        )
    }

    /// Like [`par_reduce_range`](Pool::par_reduce_range), with small parameters for `map`
    /// (a seed, a model's coefficients).
    ///
    /// ```
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = shmpar::Pool::new(2)?;
    /// let n = pool.par_reduce_range_with(1000, &7u64, |m, r, _| r.filter(|i| i % m == 0).count(), |a, b| a + b)?;
    /// assert_eq!(n, 143);
    /// # Ok(())
    /// # }
    /// ```
    pub fn par_reduce_range_with<P, R, C>(
        &self,
        n: u64,
        params: &P,
        map: RangeWithFn<P, R>,
        combine: C,
    ) -> Result<R>
    where
        P: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        C: FnMut(R, R) -> R,
    {
        let rows = usize::try_from(n).map_err(|_| Error::invalid("range too long"))?;
        let params = encode_params(params)?;
        fold(
            &self.run_call(
                &[],
                rows,
                8,
                range_with_chunk::<P, R> as Trampoline,
                map as usize,
                &params,
            )?,
            combine,
        )
    }

    /// Runs one fail-fast call over `arrays`, split into the grid for `rows` rows of
    /// `row_bytes` bytes.
    fn run_call<'p>(
        &'p self,
        arrays: &[(&Region, ArrayDesc)],
        rows: usize,
        row_bytes: usize,
        trampoline: Trampoline,
        user_fn: usize,
        params: &Args,
    ) -> Result<Finished<'p>> {
        let spec = CallSpec {
            trampoline,
            user_fn,
            arrays,
            rows,
            grid: self.grid(rows, row_bytes),
            params: &params.bytes,
            handles: &params.handles,
            keep_going: false,
        };
        self.shared().call(&spec)
    }

    /// Every chunk's partial result, in chunk order, for a grid of `rows_per_chunk` rows (the
    /// global grid of a distributed array; see `crate::mpi`). An empty array has no chunks.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn par_map_chunks<A, D, R>(
        &self,
        array: &SharedArray<A, D>,
        map: MapFn<A, D, R>,
        rows_per_chunk: usize,
    ) -> Result<Vec<R>>
    where
        A: Element,
        D: Dimension,
        R: Serialize + DeserializeOwned,
    {
        let (rows, _) = rows_of(array);
        if rows == 0 {
            return Ok(Vec::new());
        }
        let rows_per_chunk = rows_per_chunk.max(1);
        let grid = Grid {
            nchunks: rows.div_ceil(rows_per_chunk),
            rows_per_chunk,
        };
        if grid.nchunks > self.config().max_chunks_setting() {
            return Err(Error::invalid(
                "the block has more chunks than the pool's max_chunks",
            ));
        }
        let desc = describe(array)?;
        let spec = CallSpec {
            trampoline: reduce_chunk::<A, D, R> as Trampoline,
            user_fn: map as usize,
            arrays: &[(array.region(), desc)],
            rows,
            grid,
            params: &[],
            handles: &[],
            keep_going: false,
        };
        let done = self.shared().call(&spec)?;
        (0..done.nchunks())
            .map(|i| {
                postcard::from_bytes(done.result(i)).map_err(|e| {
                    Error::new(
                        ErrorKind::Decode,
                        format!("a chunk's result could not be decoded: {e}"),
                    )
                    .with_chunk(i)
                })
            })
            .collect()
    }

    /// The chunk grid this pool uses for `rows` rows of `row_bytes` bytes.
    pub(crate) fn grid(&self, rows: usize, row_bytes: usize) -> Grid {
        let c = self.config();
        Grid::new(
            rows,
            row_bytes,
            c.chunk_bytes_setting(),
            c.max_chunks_setting(),
        )
    }
}

/// [`Pool::par_reduce`] on the process-wide default pool ([`Pool::global`]).
///
/// ```
/// use ndarray::Ix1;
///
/// # fn main() -> shmpar::Result<()> {
/// let a = shmpar::SharedArray::from_array(&ndarray::Array1::from_elem(1000, 1u32))?;
/// let total = shmpar::par_reduce(&a, |c| c.iter().map(|&x| u64::from(x)).sum::<u64>(), |a, b| a + b)?;
/// assert_eq!(total, 1000);
/// # Ok(())
/// # }
/// ```
pub fn par_reduce<A, D, R, C>(
    array: &SharedArray<A, D>,
    map: MapFn<A, D, R>,
    combine: C,
) -> Result<R>
where
    A: Element,
    D: Dimension,
    R: Serialize + DeserializeOwned,
    C: FnMut(R, R) -> R,
{
    Pool::global()?.par_reduce(array, map, combine)
}

/// Folds the chunks' results in chunk order.
fn fold<R: DeserializeOwned>(done: &Finished<'_>, mut combine: impl FnMut(R, R) -> R) -> Result<R> {
    let mut acc: Option<R> = None;
    for i in 0..done.nchunks() {
        let r: R = postcard::from_bytes(done.result(i)).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("a chunk's result could not be decoded: {e}"),
            )
            .with_chunk(i)
        })?;
        acc = Some(match acc {
            None => r,
            Some(a) => combine(a, r),
        });
        // `combine` is the user's: if it forked, the copy must not read on (the results lie in
        // shared memory that the other process's next call reuses).
        done.still_ours()?;
    }
    acc.ok_or_else(|| Error::new(ErrorKind::Decode, "a call produced no chunk"))
}

fn encode_params<P: Serialize>(params: &P) -> Result<Args> {
    Args::encode(params, "the parameters")
}

/// Rows along axis 0 and the bytes in one row (a 0-d array is one row).
fn rows_of<A: Element, D: Dimension>(a: &SharedArray<A, D>) -> (usize, usize) {
    let shape = a.shape();
    match shape.split_first() {
        None => (1, size_of::<A>()),
        Some((&rows, rest)) => (rows, rest.iter().product::<usize>() * size_of::<A>()),
    }
}

fn describe<A: Element, D: Dimension>(a: &SharedArray<A, D>) -> Result<ArrayDesc> {
    if a.ndim() > MAX_DIMS {
        return Err(Error::invalid(format!(
            "arrays of up to {MAX_DIMS} axes can be split, not {}",
            a.ndim()
        )));
    }
    let mut desc = ArrayDesc {
        region: a.region().id(),
        parent_addr: a.region().as_ptr() as u64,
        offset: a.offset() as u64,
        elem_size: size_of::<A>() as u64,
        ndim: a.ndim() as u64,
        shape: [0; MAX_DIMS],
        strides: [0; MAX_DIMS],
        axis: 0,
    };
    for (d, &s) in desc.shape.iter_mut().zip(a.shape()) {
        *d = s as u64;
    }
    // Row-major: each axis steps over the product of the ones after it.
    let mut step = 1i64;
    for i in (0..a.ndim()).rev() {
        desc.strides[i] = step;
        step = step.saturating_mul(a.shape()[i] as i64);
    }
    Ok(desc)
}

/// Serialises a chunk's result into the arena.
fn encode<R: Serialize>(r: &R, out: &mut [u8]) -> Result<usize, ChunkFailure> {
    match postcard::to_slice(r, out) {
        Ok(used) => Ok(used.len()),
        Err(postcard::Error::SerializeBufferFull) => Err(ChunkFailure::TooLarge),
        // A `Serialize` impl that fails: reported like a panic, with its message.
        Err(e) => panic!("the chunk's result could not be serialised: {e}"),
    }
}

fn decode_params<P: DeserializeOwned>(bytes: &[u8]) -> P {
    crate::shm::handle::clear_reason();
    match postcard::from_bytes(bytes) {
        Ok(p) => p,
        Err(e) => panic!(
            "the call's parameters could not be decoded in the worker: {}",
            crate::shm::handle::explain(e)
        ),
    }
}

/// # Safety
/// `a` describes a live array of `A` with `D`'s number of axes; `rows` is within it.
unsafe fn view<'a, A: Element, D: Dimension>(
    a: &ArrayPtr,
    rows: &Range<usize>,
) -> ArrayView<'a, A, D> {
    let (ptr, shape) = a.rows(rows);
    // SAFETY: the caller guarantees these are live `A`s laid out as described, not written
    // while the view lives.
    unsafe { raw_view::<A, D>(ptr, &shape[..a.ndim], &a.strides[..a.ndim]).deref_into_view() }
}

/// # Safety
/// As [`view`], and no one else accesses these rows while the view lives.
unsafe fn view_mut<'a, A: Element, D: Dimension>(
    a: &ArrayPtr,
    rows: &Range<usize>,
) -> ArrayViewMut<'a, A, D> {
    let (ptr, shape) = a.rows(rows);
    // SAFETY: the caller guarantees these are live `A`s laid out as described, ours alone.
    unsafe { raw_view::<A, D>(ptr, &shape[..a.ndim], &a.strides[..a.ndim]).deref_into_view_mut() }
}

/// # Safety
/// See [`Trampoline`]: `user_fn` is a `MapFn<A, D, R>`.
unsafe fn reduce_chunk<A: Element, D: Dimension, R: Serialize>(
    input: &ChunkInput<'_>,
    out: &mut [u8],
) -> Result<usize, ChunkFailure> {
    // SAFETY: the parent stored a `MapFn<A, D, R>` for this trampoline.
    let map: MapFn<A, D, R> = unsafe { std::mem::transmute(input.user_fn) };
    // SAFETY: the input describes the call's live array, of `A` and `D`.
    let v = unsafe { view::<A, D>(&input.arrays[0], &input.rows) };
    encode(&map(v), out)
}

/// # Safety
/// See [`Trampoline`]: `user_fn` is a `MapWithFn<P, A, D, R>`.
unsafe fn reduce_with_chunk<A: Element, D: Dimension, P: DeserializeOwned, R: Serialize>(
    input: &ChunkInput<'_>,
    out: &mut [u8],
) -> Result<usize, ChunkFailure> {
    // SAFETY: the parent stored a `MapWithFn<P, A, D, R>` for this trampoline.
    let map: MapWithFn<P, A, D, R> = unsafe { std::mem::transmute(input.user_fn) };
    let params: P = decode_params(input.params);
    // SAFETY: the input describes the call's live array, of `A` and `D`.
    let v = unsafe { view::<A, D>(&input.arrays[0], &input.rows) };
    encode(&map(&params, v), out)
}

/// # Safety
/// See [`Trampoline`]: `user_fn` is a `ZipFn<A, D, B, E, R>`.
unsafe fn zip_chunk<A: Element, D: Dimension, B: Element, E: Dimension, R: Serialize>(
    input: &ChunkInput<'_>,
    out: &mut [u8],
) -> Result<usize, ChunkFailure> {
    // SAFETY: the parent stored a `ZipFn<A, D, B, E, R>` for this trampoline.
    let map: ZipFn<A, D, B, E, R> = unsafe { std::mem::transmute(input.user_fn) };
    // SAFETY: the input describes the call's two live arrays with the same rows.
    let (a, b) = unsafe {
        (
            view::<A, D>(&input.arrays[0], &input.rows),
            view::<B, E>(&input.arrays[1], &input.rows),
        )
    };
    encode(&map(a, b), out)
}

/// # Safety
/// See [`Trampoline`]: `user_fn` is a `ForEachFn<A, D>`; the chunk's rows are ours.
unsafe fn for_each_chunk<A: Element, D: Dimension>(
    input: &ChunkInput<'_>,
    out: &mut [u8],
) -> Result<usize, ChunkFailure> {
    // SAFETY: the parent stored a `ForEachFn<A, D>` for this trampoline.
    let f: ForEachFn<A, D> = unsafe { std::mem::transmute(input.user_fn) };
    // SAFETY: the chunk's rows are claimed by this runner only, and the parent holds the array
    // by `&mut` for the whole call.
    f(unsafe { view_mut::<A, D>(&input.arrays[0], &input.rows) });
    encode(&(), out)
}

/// # Safety
/// See [`Trampoline`]: `user_fn` is a `ForEachWithFn<P, A, D>`; the chunk's rows are ours.
unsafe fn for_each_with_chunk<A: Element, D: Dimension, P: DeserializeOwned>(
    input: &ChunkInput<'_>,
    out: &mut [u8],
) -> Result<usize, ChunkFailure> {
    // SAFETY: the parent stored a `ForEachWithFn<P, A, D>` for this trampoline.
    let f: ForEachWithFn<P, A, D> = unsafe { std::mem::transmute(input.user_fn) };
    let params: P = decode_params(input.params);
    // SAFETY: as in `for_each_chunk`.
    f(&params, unsafe {
        view_mut::<A, D>(&input.arrays[0], &input.rows)
    });
    encode(&(), out)
}

/// # Safety
/// See [`Trampoline`]: `user_fn` is a `RangeFn<R>`.
unsafe fn range_chunk<R: Serialize>(
    input: &ChunkInput<'_>,
    out: &mut [u8],
) -> Result<usize, ChunkFailure> {
    // SAFETY: the parent stored a `RangeFn<R>` for this trampoline.
    let map: RangeFn<R> = unsafe { std::mem::transmute(input.user_fn) };
    let r = input.rows.start as u64..input.rows.end as u64;
    encode(&map(r, input.index as u64), out)
}

/// # Safety
/// See [`Trampoline`]: `user_fn` is a `RangeWithFn<P, R>`.
unsafe fn range_with_chunk<P: DeserializeOwned, R: Serialize>(
    input: &ChunkInput<'_>,
    out: &mut [u8],
) -> Result<usize, ChunkFailure> {
    // SAFETY: the parent stored a `RangeWithFn<P, R>` for this trampoline.
    let map: RangeWithFn<P, R> = unsafe { std::mem::transmute(input.user_fn) };
    let params: P = decode_params(input.params);
    let r = input.rows.start as u64..input.rows.end as u64;
    encode(&map(&params, r, input.index as u64), out)
}
