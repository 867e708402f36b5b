//! [`ArrayHandle`]: a read-only [`SharedArray`] that travels to pool tasks inside their
//! arguments.

use ndarray::{ArrayView, Dimension};
use serde::{Deserialize, Serialize};

use super::{Element, SharedArray, handle};

/// A read-only handle to a [`SharedArray`], for a second (third, ...) array in pool tasks or
/// `par_*_with` parameters: it serialises as a handle and arrives as a view of the same
/// memory, with no copy. Made by [`SharedArray::handle`].
///
/// It borrows the array, so the array cannot be written, moved or dropped while any task that
/// holds the handle may read it: that is why it travels only in calls that end before they
/// return (pool calls), not to [`Process::start`](crate::Process::start) or
/// [`worker_init_with`](crate::PoolBuilder::worker_init_with), whose arguments must be
/// `'static` (a child or an initializer that receives one anyway, from a hand-made
/// `Serialize`, gets an error). It is a loan for one call: a worker that keeps a received
/// handle past its call finds its memory revoked (reading it faults, and the worker is
/// reported dead) rather than race with the owner's next writes. To write arrays in
/// parallel, use [`Pool::zip`](crate::Pool::zip).
///
/// ```compile_fail
/// // A child outlives the call that starts it: a borrowed array cannot go with it.
/// let a = shmpar::SharedArray::from_array(&ndarray::arr1(&[1.0f64]))?;
/// let child = shmpar::Process::start(|h: shmpar::ArrayHandle<'_, f64, ndarray::Ix1>| h.view()[0], a.handle())?;
/// # Ok::<(), shmpar::Error>(())
/// ```
///
/// ```
/// use ndarray::Ix1;
/// use shmpar::{ArrayHandle, Pool, SharedArray};
///
/// # fn main() -> shmpar::Result<()> {
/// let pool = Pool::new(2)?;
/// let table = SharedArray::from_array(&ndarray::Array1::range(0.0, 1000.0, 1.0))?;
/// // Each task looks up its own entries in the shared table.
/// let tasks = (0..10usize).map(|i| (i * 100, table.handle()));
/// let out = pool.map(tasks, |(i, table): (usize, ArrayHandle<'_, f64, Ix1>)| table.view()[i])?;
/// assert!(out.iter().all(Result::is_ok));
/// assert_eq!(*out[3].as_ref().unwrap(), 300.0);
/// # Ok(())
/// # }
/// ```
pub struct ArrayHandle<'a, A: Element, D: Dimension> {
    inner: Inner<'a, A, D>,
}

enum Inner<'a, A: Element, D: Dimension> {
    /// In the process that owns the array.
    Borrowed(&'a SharedArray<A, D>),
    /// In a process that received it: its own mapping of the same memory.
    Received(SharedArray<A, D>),
}

impl<A: Element, D: Dimension> SharedArray<A, D> {
    /// A read-only handle to this array, to pass to pool tasks (see [`ArrayHandle`]).
    ///
    /// ```
    /// let a = shmpar::SharedArray::from_array(&ndarray::arr1(&[1u8, 2, 3]))?;
    /// assert_eq!(a.handle().view().sum(), 6);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn handle(&self) -> ArrayHandle<'_, A, D> {
        ArrayHandle {
            inner: Inner::Borrowed(self),
        }
    }
}

impl<A: Element, D: Dimension> ArrayHandle<'_, A, D> {
    /// The array's elements.
    ///
    /// ```
    /// let a = shmpar::SharedArray::from_array(&ndarray::arr2(&[[1.0, 2.0], [3.0, 4.0]]))?;
    /// assert_eq!(a.handle().view()[[1, 0]], 3.0);
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn view(&self) -> ArrayView<'_, A, D> {
        match &self.inner {
            Inner::Borrowed(a) => a.view(),
            Inner::Received(a) => a.view(),
        }
    }

    fn array(&self) -> &SharedArray<A, D> {
        match &self.inner {
            Inner::Borrowed(a) => a,
            Inner::Received(a) => a,
        }
    }
}

impl<A: Element, D: Dimension> std::fmt::Debug for ArrayHandle<'_, A, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayHandle")
            .field("dtype", &A::DTYPE)
            .field("shape", &self.array().shape())
            .finish()
    }
}

/// What an array handle carries beside the region's handle.
#[derive(Serialize, Deserialize)]
struct Layout {
    offset: u64,
    shape: Vec<u64>,
}

impl<A: Element, D: Dimension + 'static> Serialize for ArrayHandle<'_, A, D> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let a = self.array();
        let h = handle::send::<SharedArray<A, D>>(a.region()).map_err(serde::ser::Error::custom)?;
        let layout = Layout {
            offset: a.offset() as u64,
            shape: a.shape().iter().map(|&n| n as u64).collect(),
        };
        (h, layout).serialize(s)
    }
}

impl<'de, A: Element, D: Dimension + 'static> Deserialize<'de> for ArrayHandle<'_, A, D> {
    fn deserialize<De: serde::Deserializer<'de>>(d: De) -> std::result::Result<Self, De::Error> {
        let (h, layout) = <(handle::Handle, Layout)>::deserialize(d)?;
        // A loan lasts one pool call, which only a pool worker knows the end of.
        if !matches!(crate::lifecycle::role(), crate::lifecycle::Role::Worker(_)) {
            let e = crate::error::Error::invalid(
                "an array handle is lent to pool tasks for one call, not to other processes",
            );
            handle::remember(&e);
            return Err(serde::de::Error::custom(e));
        }
        let region = handle::open::<SharedArray<A, D>>(h).map_err(|e| {
            handle::remember(&e);
            serde::de::Error::custom(e)
        })?;
        if D::NDIM.is_some_and(|n| n != layout.shape.len()) || layout.shape.len() > 32 {
            return Err(serde::de::Error::custom(
                "an array handle has the wrong number of axes",
            ));
        }
        let mut dim = D::zeros(layout.shape.len());
        for (d, &n) in dim.slice_mut().iter_mut().zip(&layout.shape) {
            *d = n as usize;
        }
        // Checks that the shape fits the region at the offset, aligned.
        let a = SharedArray::from_region(region, layout.offset as usize, dim)
            .map_err(serde::de::Error::custom)?;
        handle::lend(a.region().as_ptr() as usize, a.region().map_len());
        Ok(ArrayHandle {
            inner: Inner::Received(a),
        })
    }
}

impl<A: Element, D: Dimension> Drop for ArrayHandle<'_, A, D> {
    fn drop(&mut self) {
        if let Inner::Received(a) = &self.inner {
            handle::unlend(a.region().as_ptr() as usize);
        }
    }
}
