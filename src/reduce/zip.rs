//! [`Pool::zip`]: several arrays split on the same rows, read and written in one call, in
//! ndarray's spirit (its `Zip` and `azip!`).

use std::mem::size_of;
use std::ops::Range;

use ndarray::{ArrayView, ArrayViewMut, Dimension};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{describe, encode, fold, rows_of, view, view_mut};
use crate::Pool;
use crate::error::{Error, ErrorKind, Result};
use crate::pool::chunk::{ArrayPtr, ChunkFailure, ChunkInput, Trampoline};
use crate::pool::control::{ArrayDesc, MAX_ARRAYS, MAX_DIMS};
use crate::pool::{Args, Finished};
use crate::shm::{Element, Layout, Region, SharedArray, SharedView, SharedViewMut};

mod sealed {
    pub trait Sealed {}
}

/// One array of a [`Pool::zip`]: `&SharedArray` and [`SharedView`] are read (each chunk sees
/// an `ArrayView` of its indices along the split axis), `&mut SharedArray` and
/// [`SharedViewMut`] are written (an `ArrayViewMut` of its indices, which no other chunk
/// sees). Sealed: only these.
pub trait ZipPart: sealed::Sealed {
    /// What a chunk gets of this array.
    type View<'a>;
    // The two methods below name crate-private types: the trait is sealed (no other crate can
    // implement it) and they are hidden, so they are not part of the public interface.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn describe(&self) -> Result<(&Region, ArrayDesc, usize, usize)>;
    /// # Safety
    /// `a` describes a live array of this part's element type and dimensionality; `rows` is
    /// within it; for a written part, no one else accesses these rows while the view lives.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    unsafe fn view<'a>(a: &ArrayPtr, rows: &Range<usize>) -> Self::View<'a>;
}

impl<A: Element, D: Dimension> sealed::Sealed for &SharedArray<A, D> {}
impl<A: Element, D: Dimension> sealed::Sealed for &mut SharedArray<A, D> {}

impl<A: Element, D: Dimension> ZipPart for &SharedArray<A, D> {
    type View<'a> = ArrayView<'a, A, D>;

    #[allow(private_interfaces)]
    fn describe(&self) -> Result<(&Region, ArrayDesc, usize, usize)> {
        let (rows, row_bytes) = rows_of(self);
        Ok((self.region(), describe(self)?, rows, row_bytes))
    }

    #[allow(private_interfaces)]
    unsafe fn view<'a>(a: &ArrayPtr, rows: &Range<usize>) -> ArrayView<'a, A, D> {
        // SAFETY: the caller's contract, which is `view`'s.
        unsafe { view::<A, D>(a, rows) }
    }
}

impl<A: Element, D: Dimension> ZipPart for &mut SharedArray<A, D> {
    type View<'a> = ArrayViewMut<'a, A, D>;

    #[allow(private_interfaces)]
    fn describe(&self) -> Result<(&Region, ArrayDesc, usize, usize)> {
        let (rows, row_bytes) = rows_of(self);
        Ok((self.region(), describe(self)?, rows, row_bytes))
    }

    #[allow(private_interfaces)]
    unsafe fn view<'a>(a: &ArrayPtr, rows: &Range<usize>) -> ArrayViewMut<'a, A, D> {
        // SAFETY: the caller's contract, which is `view_mut`'s.
        unsafe { view_mut::<A, D>(a, rows) }
    }
}

impl<A: Element, D: Dimension> sealed::Sealed for SharedView<'_, A, D> {}
impl<A: Element, D: Dimension> sealed::Sealed for SharedViewMut<'_, A, D> {}

impl<A: Element, D: Dimension> ZipPart for SharedView<'_, A, D> {
    type View<'a> = ArrayView<'a, A, D>;

    #[allow(private_interfaces)]
    fn describe(&self) -> Result<(&Region, ArrayDesc, usize, usize)> {
        describe_view::<A, D>(self.region, &self.layout)
    }

    #[allow(private_interfaces)]
    unsafe fn view<'a>(a: &ArrayPtr, rows: &Range<usize>) -> ArrayView<'a, A, D> {
        // SAFETY: the caller's contract, which is `view`'s.
        unsafe { view::<A, D>(a, rows) }
    }
}

impl<A: Element, D: Dimension> ZipPart for SharedViewMut<'_, A, D> {
    type View<'a> = ArrayViewMut<'a, A, D>;

    #[allow(private_interfaces)]
    fn describe(&self) -> Result<(&Region, ArrayDesc, usize, usize)> {
        describe_view::<A, D>(self.region, &self.layout)
    }

    #[allow(private_interfaces)]
    unsafe fn view<'a>(a: &ArrayPtr, rows: &Range<usize>) -> ArrayViewMut<'a, A, D> {
        // SAFETY: the caller's contract, which is `view_mut`'s (a mutable view's elements are
        // distinct, so disjoint index ranges of one axis are disjoint memory).
        unsafe { view_mut::<A, D>(a, rows) }
    }
}

/// A view's description, its number of chunkable indices (the split axis's length) and the
/// bytes of one index's slab.
fn describe_view<'r, A: Element, D: Dimension>(
    region: &'r Region,
    layout: &Layout<D>,
) -> Result<(&'r Region, ArrayDesc, usize, usize)> {
    let shape = layout.dim.slice();
    if shape.len() > MAX_DIMS {
        return Err(Error::invalid(format!(
            "views of up to {MAX_DIMS} axes can be split, not {}",
            shape.len()
        )));
    }
    if !shape.is_empty() && layout.axis >= shape.len() {
        return Err(Error::invalid(format!(
            "axis {} does not exist in a view of {} axes",
            layout.axis,
            shape.len()
        )));
    }
    let mut desc = ArrayDesc {
        region: region.id(),
        parent_addr: region.as_ptr() as u64,
        offset: layout.offset as u64,
        elem_size: size_of::<A>() as u64,
        ndim: shape.len() as u64,
        shape: [0; MAX_DIMS],
        strides: [0; MAX_DIMS],
        axis: layout.axis as u64,
    };
    for (d, &n) in desc.shape.iter_mut().zip(shape) {
        *d = n as u64;
    }
    for (d, &st) in desc.strides.iter_mut().zip(&layout.strides) {
        *d = st as i64;
    }
    let (rows, slab) = match shape.get(layout.axis) {
        None => (1, size_of::<A>()),
        Some(&n) => {
            let others: usize = (shape.iter().enumerate())
                .filter(|&(i, _)| i != layout.axis)
                .map(|(_, &n)| n)
                .product();
            (n, others * size_of::<A>())
        }
    };
    Ok((region, desc, rows, slab))
}

/// The arrays of a [`Pool::zip`]: a tuple of one to six [`ZipPart`]s (`&SharedArray` to read,
/// `&mut SharedArray` to write), all with the same number of rows (length of axis 0).
pub trait ZipArrays: sealed::Sealed {
    /// What a chunk gets: the tuple of the parts' views of its rows.
    type Views<'a>;
    // Sealed and hidden, like `ZipPart`'s.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn describe(&self) -> Result<Vec<(&Region, ArrayDesc, usize, usize)>>;
    /// # Safety
    /// As [`ZipPart::view`], for each part in order.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    unsafe fn views<'a>(arrays: &[ArrayPtr], rows: &Range<usize>) -> Self::Views<'a>;
}

macro_rules! zip_tuple {
    ($($p:ident $i:tt),+) => {
        impl<$($p: ZipPart),+> sealed::Sealed for ($($p,)+) {}

        impl<$($p: ZipPart),+> ZipArrays for ($($p,)+) {
            type Views<'a> = ($($p::View<'a>,)+);

            #[allow(private_interfaces)]
            fn describe(&self) -> Result<Vec<(&Region, ArrayDesc, usize, usize)>> {
                Ok(vec![$(self.$i.describe()?),+])
            }

            #[allow(private_interfaces)]
            unsafe fn views<'a>(arrays: &[ArrayPtr], rows: &Range<usize>) -> Self::Views<'a> {
                // SAFETY: the caller's contract, part by part.
                unsafe { ($($p::view(&arrays[$i], rows),)+) }
            }
        }
    };
}

zip_tuple!(P0 0);
zip_tuple!(P0 0, P1 1);
zip_tuple!(P0 0, P1 1, P2 2);
zip_tuple!(P0 0, P1 1, P2 2, P3 3);
zip_tuple!(P0 0, P1 1, P2 2, P3 3, P4 4);
zip_tuple!(P0 0, P1 1, P2 2, P3 3, P4 4, P5 5);

const _: () = assert!(MAX_ARRAYS >= 6);

/// Arrays split on the same rows, ready for a call: see [`Pool::zip`].
#[must_use = "a Zip does nothing until for_each or reduce runs it"]
pub struct Zip<'p, Z> {
    pool: &'p Pool,
    arrays: Z,
}

impl<Z> std::fmt::Debug for Zip<'_, Z> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zip").finish_non_exhaustive()
    }
}

impl Pool {
    /// Splits several arrays on the same rows (axis 0) for one call: read the `&SharedArray`s,
    /// write the `&mut SharedArray`s, each chunk with the same rows of every array, in the
    /// workers. Up to six arrays, in a tuple; they must have the same number of rows.
    ///
    /// `b = 2a + c`, with ndarray's `azip!` inside each chunk:
    ///
    /// ```
    /// use ndarray::{Ix2, azip};
    /// use shmpar::{Pool, SharedArray};
    ///
    /// # fn main() -> shmpar::Result<()> {
    /// let pool = Pool::new(2)?;
    /// let a = SharedArray::from_array(&ndarray::Array2::from_elem((1000, 100), 1.5f64))?;
    /// let c = SharedArray::from_array(&ndarray::Array2::from_elem((1000, 100), 1.0f64))?;
    /// let mut b = SharedArray::<f64, Ix2>::zeros((1000, 100))?;
    /// pool.zip((&mut b, &a, &c)).for_each(|(mut b, a, c)| {
    ///     azip!((b in &mut b, &a in &a, &c in &c) *b = 2.0 * a + c);
    /// })?;
    /// assert!(b.view().iter().all(|&x| x == 4.0));
    /// // A reduction over several arrays: chunk results are combined in chunk order.
    /// let dot = pool.zip((&a, &c)).reduce(|(a, c)| (&a * &c).sum(), |x, y| x + y)?;
    /// assert_eq!(dot, 150_000.0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The functions are function pointers (closures that capture nothing): pass data in
    /// shared arrays, or as handles through [`par_reduce_with`](Pool::par_reduce_with) and
    /// friends. Rust's borrows hold across the processes: a `&SharedArray` cannot be written,
    /// and each row of a `&mut SharedArray` is written by one chunk only.
    pub fn zip<Z: ZipArrays>(&self, arrays: Z) -> Zip<'_, Z> {
        Zip { pool: self, arrays }
    }
}

/// A chunk's function, given its views.
type ZipFn<Z, R> = for<'a> fn(<Z as ZipArrays>::Views<'a>) -> R;
/// A chunk's function, given its rows (of axis 0) and its views.
type ZipIndexedFn<Z, R> = for<'a> fn(Range<usize>, <Z as ZipArrays>::Views<'a>) -> R;

impl<'p, Z: ZipArrays> Zip<'p, Z> {
    /// Runs `f` on every chunk's views; returns once every chunk is done.
    ///
    /// ```
    /// # use ndarray::Ix1;
    /// # let pool = shmpar::Pool::new(2)?;
    /// let mut a = shmpar::SharedArray::<u32, Ix1>::zeros(10_000)?;
    /// pool.zip((&mut a,)).for_each(|(mut a,)| a.fill(7))?;
    /// assert!(a.view().iter().all(|&x| x == 7));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn for_each(self, f: ZipFn<Z, ()>) -> Result<()> {
        self.reduce(f, |(), ()| ())
    }

    /// Like [`for_each`](Self::for_each), with the chunk's rows (like ndarray's
    /// `Zip::indexed`): a position-dependent fill `a[i] = f(i)`.
    ///
    /// ```
    /// # use ndarray::Ix1;
    /// # let pool = shmpar::Pool::new(2)?;
    /// let mut a = shmpar::SharedArray::<u64, Ix1>::zeros(100_000)?;
    /// pool.zip((&mut a,)).for_each_indexed(|rows, (mut a,)| {
    ///     for (x, i) in a.iter_mut().zip(rows) {
    ///         *x = (i as u64) * (i as u64);
    ///     }
    /// })?;
    /// assert_eq!(a.view()[99_999], 99_999 * 99_999);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn for_each_indexed(self, f: ZipIndexedFn<Z, ()>) -> Result<()> {
        self.reduce_indexed(f, |(), ()| ())
    }

    /// Maps every chunk's views to a partial result and folds the partials in chunk order
    /// (bitwise the same for any number of workers).
    ///
    /// ```
    /// # let pool = shmpar::Pool::new(2)?;
    /// let x = shmpar::SharedArray::from_array(&ndarray::Array1::from_elem(1000, 2.0f64))?;
    /// let y = shmpar::SharedArray::from_array(&ndarray::Array1::from_elem(1000, 3.0f64))?;
    /// let w = shmpar::SharedArray::from_array(&ndarray::Array1::from_elem(1000, 0.5f64))?;
    /// let weighted = pool.zip((&x, &y, &w)).reduce(|(x, y, w)| (&x * &y * &w).sum(), |a, b| a + b)?;
    /// assert_eq!(weighted, 3000.0);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn reduce<R, C>(self, map: ZipFn<Z, R>, combine: C) -> Result<R>
    where
        R: Serialize + DeserializeOwned,
        C: FnMut(R, R) -> R,
    {
        self.run(zip_chunk::<Z, R> as Trampoline, map as usize, combine)
    }

    /// Like [`reduce`](Self::reduce), with the chunk's rows.
    ///
    /// ```
    /// # let pool = shmpar::Pool::new(2)?;
    /// let a = shmpar::SharedArray::from_array(&ndarray::Array1::from_elem(1000, 1u8))?;
    /// // The index of the last row, found from the chunks' ranges.
    /// let last = pool.zip((&a,)).reduce_indexed(|rows, _| rows.end, usize::max)?;
    /// assert_eq!(last, 1000);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn reduce_indexed<R, C>(self, map: ZipIndexedFn<Z, R>, combine: C) -> Result<R>
    where
        R: Serialize + DeserializeOwned,
        C: FnMut(R, R) -> R,
    {
        self.run(
            zip_indexed_chunk::<Z, R> as Trampoline,
            map as usize,
            combine,
        )
    }

    fn run<R, C>(self, trampoline: Trampoline, user_fn: usize, combine: C) -> Result<R>
    where
        R: DeserializeOwned,
        C: FnMut(R, R) -> R,
    {
        fold(&self.publish(trampoline, user_fn)?.1, combine)
    }

    /// Runs one call over the arrays: their rows, and the finished call.
    fn publish(self, trampoline: Trampoline, user_fn: usize) -> Result<(usize, Finished<'p>)> {
        let parts = self.arrays.describe()?;
        let rows = parts.first().map_or(0, |p| p.2);
        if let Some(p) = parts.iter().find(|p| p.2 != rows) {
            return Err(Error::invalid(format!(
                "zip needs arrays with the same number of rows: {rows} and {}",
                p.2
            )));
        }
        let row_bytes = parts.iter().map(|p| p.3).sum::<usize>();
        let arrays: Vec<(&Region, ArrayDesc)> = parts.iter().map(|p| (p.0, p.1)).collect();
        let done = self.pool.run_call(
            &arrays,
            rows,
            row_bytes,
            trampoline,
            user_fn,
            &Args::default(),
        )?;
        Ok((rows, done))
    }
}

/// # Safety
/// See [`Trampoline`]: `user_fn` is a `ZipFn<Z, R>` and the arrays are `Z`'s.
unsafe fn zip_chunk<Z: ZipArrays, R: Serialize>(
    input: &ChunkInput<'_>,
    out: &mut [u8],
) -> Result<usize, ChunkFailure> {
    // SAFETY: the parent stored a `ZipFn<Z, R>` for this trampoline.
    let map: ZipFn<Z, R> = unsafe { std::mem::transmute(input.user_fn) };
    // SAFETY: the input describes `Z`'s live arrays, in order, with the chunk's rows; the
    // chunk is ours, so its rows of the written arrays are ours alone.
    let views = unsafe { Z::views(&input.arrays, &input.rows) };
    encode(&map(views), out)
}

/// # Safety
/// See [`Trampoline`]: `user_fn` is a `ZipIndexedFn<Z, R>` and the arrays are `Z`'s.
unsafe fn zip_indexed_chunk<Z: ZipArrays, R: Serialize>(
    input: &ChunkInput<'_>,
    out: &mut [u8],
) -> Result<usize, ChunkFailure> {
    // SAFETY: the parent stored a `ZipIndexedFn<Z, R>` for this trampoline.
    let map: ZipIndexedFn<Z, R> = unsafe { std::mem::transmute(input.user_fn) };
    // SAFETY: as in `zip_chunk`.
    let views = unsafe { Z::views(&input.arrays, &input.rows) };
    encode(&map(input.rows.clone(), views), out)
}

/// What [`Zip::find_any`] found: the chunk that found it, its rows, the value, and how many
/// chunks ran before the call stopped.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Found<R> {
    /// The chunk that found it.
    pub chunk: usize,
    /// That chunk's rows.
    pub rows: Range<usize>,
    /// What it found.
    pub value: R,
    /// Chunks that ran (to the end or to a find); the others never started.
    pub chunks_run: usize,
    /// Chunks in the call's grid.
    pub chunks: usize,
}

/// A chunk's search, given its rows and its views.
type ZipFindFn<Z, R> = for<'a> fn(Range<usize>, <Z as ZipArrays>::Views<'a>) -> Option<R>;

impl<Z: ZipArrays> Zip<'_, Z> {
    /// Searches the chunks in parallel and stops the call as soon as one finds something: the
    /// chunks not yet started never run (rayon's `find_any`). Which of several matches comes
    /// back depends on timing; `Found` says which chunk it was.
    ///
    /// ```
    /// # let pool = shmpar::Pool::builder().workers(2).chunk_bytes(8 * 1024).build()?;
    /// let a = shmpar::SharedArray::from_array(&ndarray::Array1::from_shape_fn(1_000_000, |i| i as u64))?;
    /// let found = pool.zip((&a,)).find_any(|rows, (a,)| {
    ///     a.iter().zip(rows).find(|(x, _)| **x == 123_456).map(|(_, i)| i)
    /// })?;
    /// let found = found.expect("it is there");
    /// assert_eq!(found.value, 123_456);
    /// assert!(found.rows.contains(&123_456));
    /// assert!(found.chunks_run < found.chunks, "the search stopped early");
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn find_any<R>(self, f: ZipFindFn<Z, R>) -> Result<Option<Found<R>>>
    where
        R: Serialize + DeserializeOwned,
    {
        let (rows, done) = self.publish(zip_find_chunk::<Z, R> as Trampoline, f as usize)?;
        let mut found = None;
        let mut chunks_run = 0;
        for i in 0..done.nchunks() {
            match done.ran(i) {
                Some(true) if found.is_none() => found = Some(i),
                Some(_) => {}
                None => continue,
            }
            chunks_run += 1;
        }
        let Some(chunk) = found else {
            return Ok(None);
        };
        let value: R = postcard::from_bytes(done.result(chunk)).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("a chunk's find could not be decoded: {e}"),
            )
        })?;
        let rpc = done.rows_per_chunk();
        Ok(Some(Found {
            chunk,
            rows: (chunk * rpc).min(rows)..((chunk + 1) * rpc).min(rows),
            value,
            chunks_run,
            chunks: done.nchunks(),
        }))
    }

    /// True if `f` holds for some chunk; stops as soon as one says so (rayon's `any`).
    ///
    /// ```
    /// # let pool = shmpar::Pool::new(2)?;
    /// let a = shmpar::SharedArray::from_array(&ndarray::Array1::from_elem(100_000, 1.0f64))?;
    /// assert!(!pool.zip((&a,)).any(|(a,)| a.iter().any(|x| x.is_nan()))?);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn any(self, f: ZipFn<Z, bool>) -> Result<bool> {
        Ok(self
            .publish(zip_any_chunk::<Z> as Trampoline, f as usize)?
            .1
            .ran_any_stop())
    }
}

/// # Safety
/// See [`Trampoline`]: `user_fn` is a `ZipFindFn<Z, R>` and the arrays are `Z`'s.
unsafe fn zip_find_chunk<Z: ZipArrays, R: Serialize>(
    input: &ChunkInput<'_>,
    out: &mut [u8],
) -> Result<usize, ChunkFailure> {
    // SAFETY: the parent stored a `ZipFindFn<Z, R>` for this trampoline.
    let find: ZipFindFn<Z, R> = unsafe { std::mem::transmute(input.user_fn) };
    // SAFETY: as in `zip_chunk`.
    let views = unsafe { Z::views(&input.arrays, &input.rows) };
    match find(input.rows.clone(), views) {
        Some(r) => Err(ChunkFailure::Stop(encode(&r, out)?)),
        None => Ok(0),
    }
}

/// # Safety
/// See [`Trampoline`]: `user_fn` is a `ZipFn<Z, bool>` and the arrays are `Z`'s.
unsafe fn zip_any_chunk<Z: ZipArrays>(
    input: &ChunkInput<'_>,
    _out: &mut [u8],
) -> Result<usize, ChunkFailure> {
    // SAFETY: the parent stored a `ZipFn<Z, bool>` for this trampoline.
    let test: ZipFn<Z, bool> = unsafe { std::mem::transmute(input.user_fn) };
    // SAFETY: as in `zip_chunk`.
    let views = unsafe { Z::views(&input.arrays, &input.rows) };
    if test(views) {
        Err(ChunkFailure::Stop(0))
    } else {
        Ok(0)
    }
}
