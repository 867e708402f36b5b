//! [`SharedView`] and [`SharedViewMut`]: a slice, a transpose, or a choice of the axis to
//! split, of a [`SharedArray`], for [`Pool::zip`](crate::Pool::zip), with no copy.

use std::marker::PhantomData;
use std::mem::size_of;

use ndarray::{ArrayView, Axis, Dimension, RawArrayViewMut, ShapeBuilder, SliceArg};

use super::{Element, Region, SharedArray};

/// A read-only view of part of a [`SharedArray`] (a slice, a transpose, every array whose
/// layout ndarray can express with strides, a Fortran-order view among them), split along a
/// chosen axis when it goes into [`Pool::zip`](crate::Pool::zip). No element is copied.
///
/// ```
/// use ndarray::{Axis, Ix2, s};
/// use shmpar::{Pool, SharedArray};
///
/// # fn main() -> shmpar::Result<()> {
/// let pool = Pool::new(2)?;
/// let a = SharedArray::from_array(&ndarray::Array2::from_shape_fn((200, 300), |(i, j)| (i + j) as f64))?;
/// // Column sums, with chunks of columns (split along axis 1).
/// let cols = pool
///     .zip((a.along(Axis(1)),))
///     .reduce(|(v,)| v.sum_axis(Axis(0)).to_vec(), |mut x, y| { x.extend(y); x })?;
/// assert_eq!(cols, a.view().sum_axis(Axis(0)).to_vec());
/// // A strided slice, and the transpose (a Fortran-order view), with no copy.
/// let evens = pool.zip((a.slice(s![..;2, 10..20]),)).reduce(|(v,)| v.sum(), |x, y| x + y)?;
/// assert_eq!(evens, a.view().slice(s![..;2, 10..20]).sum());
/// let t = pool.zip((a.t(),)).reduce(|(v,)| v.sum(), |x, y| x + y)?;
/// assert_eq!(t, a.view().sum());
/// # Ok(())
/// # }
/// ```
pub struct SharedView<'a, A: Element, D: Dimension> {
    pub(crate) layout: Layout<D>,
    pub(crate) region: &'a Region,
    marker: PhantomData<&'a A>,
}

/// A writable view of part of a [`SharedArray`] (see [`SharedView`]): in a
/// [`Pool::zip`](crate::Pool::zip), each chunk writes its own indices along the split axis.
///
/// ```
/// use ndarray::{Axis, Ix2, s};
/// use shmpar::{Pool, SharedArray};
///
/// # fn main() -> shmpar::Result<()> {
/// let pool = Pool::new(2)?;
/// let mut a = SharedArray::<u32, Ix2>::zeros((100, 100))?;
/// // Every other row, split by columns, each chunk filling its columns with their index.
/// pool.zip((a.slice_mut(s![..;2, ..]).along(Axis(1)),))
///     .for_each_indexed(|cols, (mut v,)| {
///         for (mut col, j) in v.axis_iter_mut(Axis(1)).zip(cols) {
///             col.fill(j as u32);
///         }
///     })?;
/// assert_eq!(a.view()[[4, 17]], 17);
/// assert_eq!(a.view()[[5, 17]], 0);
/// # Ok(())
/// # }
/// ```
pub struct SharedViewMut<'a, A: Element, D: Dimension> {
    pub(crate) layout: Layout<D>,
    pub(crate) region: &'a Region,
    marker: PhantomData<&'a mut A>,
}

/// Where a view's elements are: the byte offset of the element at index 0 in the region, the
/// shape, the strides in elements (ndarray's form), and the axis to split.
#[derive(Debug, Clone)]
pub(crate) struct Layout<D> {
    pub(crate) offset: usize,
    pub(crate) dim: D,
    pub(crate) strides: Vec<isize>,
    pub(crate) axis: usize,
}

impl<D: Dimension> Layout<D> {
    fn of<A>(region: &Region, v: &ArrayView<'_, A, D>, axis: usize) -> Layout<D> {
        Layout {
            offset: v.as_ptr() as usize - region.as_ptr() as usize,
            dim: v.raw_dim(),
            strides: v.strides().to_vec(),
            axis,
        }
    }

    fn reversed(mut self) -> Self {
        self.dim.slice_mut().reverse();
        self.strides.reverse();
        let n = self.strides.len();
        // An axis the view does not have stays as it is, for `zip` to refuse.
        if self.axis < n {
            self.axis = n - 1 - self.axis;
        }
        self
    }
}

/// A raw view of `shape` elements of `A` at `ptr` (the element at index 0) with `strides` in
/// elements, negative ones included: ndarray builds views from non-negative strides only, so
/// a reversed axis starts from its lowest address and is flipped back. The one place where
/// shmpar turns a layout into an ndarray view.
///
/// # Safety
/// The layout must describe elements of `A` within one live mapping (as a view ndarray made
/// did); `shape.len()` must be `D`'s number of axes.
pub(crate) unsafe fn raw_view<A, D: Dimension>(
    ptr: *mut u8,
    shape: &[usize],
    strides: &[isize],
) -> RawArrayViewMut<A, D> {
    let mut dim = D::zeros(shape.len());
    dim.slice_mut().copy_from_slice(shape);
    let mut steps = D::zeros(shape.len());
    let mut low = ptr;
    let mut flip = Vec::new();
    // An empty view has no element to reach: no pointer arithmetic, no flips.
    let empty = shape.contains(&0);
    for (i, (d, &s)) in steps.slice_mut().iter_mut().zip(strides).enumerate() {
        if s < 0 && !empty {
            // The last index along this axis is the lowest address.
            low = low.wrapping_offset((shape[i] as isize - 1) * s * size_of::<A>() as isize);
            flip.push(i);
        }
        *d = s.unsigned_abs();
    }
    // SAFETY: the caller's layout, from its lowest element with its strides made
    // non-negative: the same elements.
    let mut v = unsafe { RawArrayViewMut::from_shape_ptr(dim.strides(steps), low.cast::<A>()) };
    for i in flip {
        v.invert_axis(Axis(i));
    }
    v
}

impl<A: Element, D: Dimension> SharedArray<A, D> {
    /// The whole array, split along `axis` in [`Pool::zip`](crate::Pool::zip) (chunks take
    /// indices of that axis instead of rows). An axis the array does not have is an error when
    /// the call runs.
    ///
    /// ```
    /// # use ndarray::Axis;
    /// let a = shmpar::SharedArray::from_array(&ndarray::Array2::<f32>::ones((3, 1000)))?;
    /// let pool = shmpar::Pool::new(2)?;
    /// assert_eq!(pool.zip((a.along(Axis(1)),)).reduce(|(v,)| v.sum(), |x, y| x + y)?, 3000.0);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn along(&self, axis: Axis) -> SharedView<'_, A, D> {
        SharedView::new(
            self.region(),
            Layout::of(self.region(), &self.view(), axis.index()),
        )
    }

    /// The whole array, writable, split along `axis` (see [`along`](Self::along)).
    ///
    /// ```
    /// # use ndarray::{Axis, Ix2};
    /// let mut a = shmpar::SharedArray::<u8, Ix2>::zeros((2, 1000))?;
    /// shmpar::Pool::new(2)?.zip((a.along_mut(Axis(1)),)).for_each(|(mut v,)| v.fill(1))?;
    /// assert_eq!(a.view().iter().map(|&x| u32::from(x)).sum::<u32>(), 2000);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn along_mut(&mut self, axis: Axis) -> SharedViewMut<'_, A, D> {
        let layout = Layout::of(self.region(), &self.view(), axis.index());
        SharedViewMut::new(self.region(), layout)
    }

    /// A slice (ndarray's `s![..]`), split along axis 0 unless [`along`](SharedView::along)
    /// says otherwise. Panics like ndarray's `slice` if the slice is out of bounds.
    ///
    /// ```
    /// # use ndarray::s;
    /// let a = shmpar::SharedArray::from_array(&ndarray::Array1::from_shape_fn(100, |i| i as u64))?;
    /// let pool = shmpar::Pool::new(2)?;
    /// assert_eq!(pool.zip((a.slice(s![10..20]),)).reduce(|(v,)| v.sum(), |x, y| x + y)?, 145);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn slice<I: SliceArg<D>>(&self, info: I) -> SharedView<'_, A, I::OutDim> {
        let v = self.view().slice_move(info);
        SharedView::new(self.region(), Layout::of(self.region(), &v, 0))
    }

    /// A writable slice (see [`slice`](Self::slice)).
    ///
    /// ```
    /// # use ndarray::{s, Ix1};
    /// let mut a = shmpar::SharedArray::<i32, Ix1>::zeros(10)?;
    /// shmpar::Pool::new(2)?.zip((a.slice_mut(s![..;3]),)).for_each(|(mut v,)| v.fill(-1))?;
    /// assert_eq!(a.view().to_vec(), [-1, 0, 0, -1, 0, 0, -1, 0, 0, -1]);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn slice_mut<I: SliceArg<D>>(&mut self, info: I) -> SharedViewMut<'_, A, I::OutDim> {
        let v = self.view().slice_move(info);
        let layout = Layout::of(self.region(), &v, 0);
        SharedViewMut::new(self.region(), layout)
    }

    /// The transpose (axes reversed: a Fortran-order view of this C-order array), split along
    /// its axis 0.
    ///
    /// ```
    /// let a = shmpar::SharedArray::from_array(&ndarray::arr2(&[[1, 2, 3], [4, 5, 6]]))?;
    /// let pool = shmpar::Pool::new(2)?;
    /// let firsts = pool.zip((a.t(),)).reduce(|(v,)| v.column(0).to_vec(), |mut x, y| { x.extend(y); x })?;
    /// assert_eq!(firsts, [1, 2, 3]);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn t(&self) -> SharedView<'_, A, D> {
        let v = self.view().reversed_axes();
        SharedView::new(self.region(), Layout::of(self.region(), &v, 0))
    }
}

impl<'a, A: Element, D: Dimension> SharedView<'a, A, D> {
    fn new(region: &'a Region, layout: Layout<D>) -> Self {
        SharedView {
            layout,
            region,
            marker: PhantomData,
        }
    }

    /// The same view, split along `axis` instead.
    ///
    /// ```
    /// # use ndarray::{Axis, s};
    /// let a = shmpar::SharedArray::from_array(&ndarray::Array2::<f64>::ones((4, 400)))?;
    /// let pool = shmpar::Pool::new(2)?;
    /// let s = pool.zip((a.slice(s![1.., ..]).along(Axis(1)),)).reduce(|(v,)| v.sum(), |x, y| x + y)?;
    /// assert_eq!(s, 1200.0);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn along(mut self, axis: Axis) -> Self {
        self.layout.axis = axis.index();
        self
    }

    /// The transpose of this view (its axes reversed); the axis it is split along is
    /// reversed with them (it stays the same axis of the data).
    ///
    /// ```
    /// # use ndarray::s;
    /// let a = shmpar::SharedArray::from_array(&ndarray::arr2(&[[1, 2], [3, 4]]))?;
    /// assert_eq!(a.slice(s![.., ..]).t().view()[[0, 1]], 3);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn t(mut self) -> Self {
        self.layout = self.layout.reversed();
        self
    }

    /// The elements, as an ndarray view in this process.
    ///
    /// ```
    /// # use ndarray::s;
    /// let a = shmpar::SharedArray::from_array(&ndarray::arr1(&[1, 2, 3, 4]))?;
    /// assert_eq!(a.slice(s![1..3]).view().to_vec(), [2, 3]);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn view(&self) -> ArrayView<'_, A, D> {
        let ptr = self.region.as_ptr().wrapping_add(self.layout.offset);
        // SAFETY: the layout was taken from a valid view of the array (ndarray checked the
        // slice), which this view borrows, so the elements are live and not written.
        unsafe {
            raw_view::<A, D>(ptr, self.layout.dim.slice(), &self.layout.strides).deref_into_view()
        }
    }
}

impl<'a, A: Element, D: Dimension> SharedViewMut<'a, A, D> {
    fn new(region: &'a Region, layout: Layout<D>) -> Self {
        SharedViewMut {
            layout,
            region,
            marker: PhantomData,
        }
    }

    /// The same view, split along `axis` instead.
    ///
    /// ```
    /// # use ndarray::{Axis, Ix2, s};
    /// let mut a = shmpar::SharedArray::<u8, Ix2>::zeros((3, 300))?;
    /// let pool = shmpar::Pool::new(2)?;
    /// pool.zip((a.slice_mut(s![1.., ..]).along(Axis(1)),)).for_each(|(mut v,)| v.fill(2))?;
    /// assert_eq!(a.view().iter().map(|&x| u32::from(x)).sum::<u32>(), 1200);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn along(mut self, axis: Axis) -> Self {
        self.layout.axis = axis.index();
        self
    }
}

impl<A: Element, D: Dimension> std::fmt::Debug for SharedView<'_, A, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedView")
            .field("layout", &self.layout)
            .finish()
    }
}

impl<A: Element, D: Dimension> std::fmt::Debug for SharedViewMut<'_, A, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedViewMut")
            .field("layout", &self.layout)
            .finish()
    }
}
