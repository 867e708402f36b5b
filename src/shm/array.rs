//! `SharedArray`: an n-dimensional array in shared memory.

use std::marker::PhantomData;
use std::mem::size_of;

use ndarray::{ArrayBase, ArrayView, ArrayViewMut, Data, Dimension, IntoDimension};

use super::element::Element;
use super::region::Region;
use crate::error::{Error, Result};

/// An n-dimensional array of plain numbers in memory that forked processes share.
///
/// The data lives in a memfd mapped `MAP_SHARED`: a [`Pool`](crate::Pool)'s workers read and
/// write the very same bytes, with no copy, whether the array was made before or after the pool.
/// It hands out ordinary `ndarray` views, so every ndarray method works on it. The layout is
/// always row-major (C order) and contiguous.
///
/// ```
/// use ndarray::{Ix2, array};
/// use shmpar::SharedArray;
///
/// # fn main() -> shmpar::Result<()> {
/// let mut a = SharedArray::<f64, Ix2>::zeros((2, 3))?;
/// a.view_mut().fill(1.5);
/// assert_eq!(a.view().sum(), 9.0);
///
/// let b = SharedArray::from_array(&array![[1, 2], [3, 4]])?;
/// assert_eq!(b.shape(), &[2, 2]);
/// # Ok(())
/// # }
/// ```
///
/// # What is shared after fork
/// A process forked while the array exists sees it at the same address, live: writes on either
/// side are visible on the other (the mapping is `MAP_SHARED`, unlike `memmap2::MmapMut::map_anon`).
/// The memory is released when the array is dropped and every worker has unmapped it; it never
/// appears in `/dev/shm`, so a crash leaks nothing.
pub struct SharedArray<A: Element, D: Dimension> {
    region: Region,
    /// Bytes from the region's start to the first element (0 for a memfd array).
    offset: usize,
    dim: D,
    marker: PhantomData<A>,
}

impl<A: Element, D: Dimension> SharedArray<A, D> {
    /// A zero-filled array of the given shape. The pages are allocated on first touch.
    ///
    /// Fails with [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) if the size in
    /// bytes overflows, and with [`ErrorKind::Io`](crate::ErrorKind::Io) if the system refuses
    /// the memory.
    ///
    /// ```
    /// use ndarray::Ix1;
    /// use shmpar::SharedArray;
    ///
    /// let a = SharedArray::<u32, Ix1>::zeros(1 << 20)?;
    /// assert_eq!(a.len(), 1 << 20);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn zeros<Sh: IntoDimension<Dim = D>>(shape: Sh) -> Result<Self> {
        let dim = shape.into_dimension();
        let bytes = byte_len::<A>(dim.slice())?;
        let region = Region::new("shmpar-array", bytes)?;
        Ok(SharedArray {
            region,
            offset: 0,
            dim,
            marker: PhantomData,
        })
    }

    /// A shared copy of any ndarray (any layout: the copy is row-major).
    ///
    /// ```
    /// use ndarray::Array2;
    /// use shmpar::SharedArray;
    ///
    /// let local = Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32);
    /// let shared = SharedArray::from_array(&local.t())?; // a transposed view works too
    /// assert_eq!(shared.view(), local.t());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn from_array<S: Data<Elem = A>>(array: &ArrayBase<S, D>) -> Result<Self> {
        let mut shared = Self::zeros(array.raw_dim())?;
        shared.view_mut().assign(array);
        Ok(shared)
    }

    /// A read-only ndarray view of the whole array.
    ///
    /// ```
    /// # use shmpar::SharedArray;
    /// let a = SharedArray::from_array(&ndarray::arr1(&[1.0, 2.0]))?;
    /// assert_eq!(a.view().sum(), 3.0);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn view(&self) -> ArrayView<'_, A, D> {
        // SAFETY: the region holds `dim.size()` valid elements of `A` (zero bits are a valid
        // `A`, an `Element` is `Zeroable`; bytes from elsewhere were checked by `from_region`
        // or written as `A`s), row-major and suitably aligned (page-aligned start), and
        // the view borrows `self`, so the mapping outlives it and no `&mut` view coexists.
        unsafe { ArrayView::from_shape_ptr(self.dim.clone(), self.data_ptr() as *const A) }
    }

    /// A mutable ndarray view of the whole array.
    ///
    /// ```
    /// # use shmpar::SharedArray;
    /// # use ndarray::Ix1;
    /// let mut a = SharedArray::<i64, Ix1>::zeros(4)?;
    /// a.view_mut()[2] = 7;
    /// assert_eq!(a.view().to_vec(), vec![0, 0, 7, 0]);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn view_mut(&mut self) -> ArrayViewMut<'_, A, D> {
        // SAFETY: as in `view`; `&mut self` guarantees this is the only view in this process.
        unsafe { ArrayViewMut::from_shape_ptr(self.dim.clone(), self.data_ptr().cast::<A>()) }
    }

    /// The elements in memory order.
    ///
    /// ```
    /// # use shmpar::SharedArray;
    /// let a = SharedArray::from_array(&ndarray::arr2(&[[1u8, 2], [3, 4]]))?;
    /// assert_eq!(a.as_slice(), &[1, 2, 3, 4]);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn as_slice(&self) -> &[A] {
        // SAFETY: `len()` initialised elements start at the aligned mapping, borrowed from self.
        unsafe { std::slice::from_raw_parts(self.data_ptr() as *const A, self.len()) }
    }

    /// The elements in memory order, mutably.
    ///
    /// ```
    /// # use shmpar::SharedArray;
    /// # use ndarray::Ix1;
    /// let mut a = SharedArray::<f32, Ix1>::zeros(3)?;
    /// a.as_slice_mut().copy_from_slice(&[1.0, 2.0, 3.0]);
    /// assert_eq!(a.view().sum(), 6.0);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn as_slice_mut(&mut self) -> &mut [A] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique in this process.
        unsafe { std::slice::from_raw_parts_mut(self.data_ptr().cast::<A>(), self.len()) }
    }

    /// The length of each axis.
    ///
    /// ```
    /// # use shmpar::SharedArray;
    /// # use ndarray::Ix2;
    /// let a = SharedArray::<f64, Ix2>::zeros((5, 2))?;
    /// assert_eq!(a.shape(), &[5, 2]);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn shape(&self) -> &[usize] {
        self.dim.slice()
    }

    /// The shape as an ndarray dimension.
    ///
    /// ```
    /// # use shmpar::SharedArray;
    /// # use ndarray::{Ix2, Dim};
    /// let a = SharedArray::<f64, Ix2>::zeros((5, 2))?;
    /// assert_eq!(a.dim(), Dim([5, 2]));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn dim(&self) -> D {
        self.dim.clone()
    }

    /// The number of axes.
    ///
    /// ```
    /// # use shmpar::SharedArray;
    /// # use ndarray::Ix3;
    /// assert_eq!(SharedArray::<u8, Ix3>::zeros((1, 2, 3))?.ndim(), 3);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn ndim(&self) -> usize {
        self.dim.ndim()
    }

    /// The number of elements.
    ///
    /// ```
    /// # use shmpar::SharedArray;
    /// # use ndarray::Ix2;
    /// assert_eq!(SharedArray::<u8, Ix2>::zeros((3, 4))?.len(), 12);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.dim.size()
    }

    /// True when the array has no elements.
    ///
    /// ```
    /// # use shmpar::SharedArray;
    /// # use ndarray::Ix1;
    /// assert!(SharedArray::<u8, Ix1>::zeros(0)?.is_empty());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The size of the data in bytes.
    ///
    /// ```
    /// # use shmpar::SharedArray;
    /// # use ndarray::Ix1;
    /// assert_eq!(SharedArray::<f64, Ix1>::zeros(10)?.size_bytes(), 80);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn size_bytes(&self) -> usize {
        self.len() * size_of::<A>()
    }

    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    /// An array over `region`'s bytes from `offset`, of shape `dim`.
    ///
    /// The caller has checked that `offset + size` lies within the region and that `offset` is
    /// aligned for `A`; the region's bytes are initialised (a file, or zero-filled memory).
    pub(crate) fn from_region(region: Region, offset: usize, dim: D) -> Result<Self> {
        let bytes = byte_len::<A>(dim.slice())?;
        let end = offset
            .checked_add(bytes)
            .ok_or_else(|| Error::invalid("the array's size overflows"))?;
        if end > region.map_len()
            || (region.as_ptr() as usize + offset) % std::mem::align_of::<A>() != 0
        {
            return Err(Error::invalid(format!(
                "{bytes} bytes at offset {offset} do not fit the {}-byte mapping (or are misaligned)",
                region.map_len()
            )));
        }
        // SAFETY: `offset..end` lies within the mapping (checked above), whose bytes are
        // initialised; nothing writes them while we look.
        let data = unsafe { std::slice::from_raw_parts(region.as_ptr().add(offset), bytes) };
        if !A::valid_bytes(data) {
            return Err(Error::invalid(format!(
                "the data are not all valid {} values (a bool must be 0 or 1)",
                A::DTYPE
            )));
        }
        Ok(SharedArray {
            region,
            offset,
            dim,
            marker: PhantomData,
        })
    }

    /// Where the elements start in this process.
    fn data_ptr(&self) -> *mut u8 {
        // SAFETY: `offset` lies within the mapping (checked at construction).
        unsafe { self.region.as_ptr().add(self.offset) }
    }
}

/// The size in bytes of an array of `shape`, or `InvalidInput` if it does not fit. ndarray's
/// rule: the product of the *non-zero* axis lengths, times the element size, must not exceed
/// `isize::MAX` (so `(0, usize::MAX)` is refused: a leading 0 must not hide the overflow).
pub(crate) fn byte_len<A>(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .filter(|&&n| n != 0)
        .try_fold(size_of::<A>().max(1), |acc, &n| acc.checked_mul(n))
        .filter(|&b| b <= isize::MAX as usize)
        .map(|b| {
            if size_of::<A>() == 0 || shape.contains(&0) {
                0
            } else {
                b
            }
        })
        .ok_or_else(|| {
            Error::invalid(format!(
                "an array of shape {shape:?} with {}-byte elements does not fit in memory",
                size_of::<A>()
            ))
        })
}

impl<A: Element, D: Dimension> std::fmt::Debug for SharedArray<A, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedArray")
            .field("dtype", &A::DTYPE)
            .field("shape", &self.shape())
            .field("region", &self.region)
            .finish()
    }
}
