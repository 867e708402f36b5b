//! The same reduce across machines: one MPI rank per node, each rank reducing its block with
//! its own [`Pool`] of forked workers, MPI combining the partials (feature `mpi`).
//!
//! ```no_run
//! use shmpar::mpi::{DistArray, abort_on_panic, par_reduce};
//! use shmpar::mpi::rsmpi::traits::*;
//!
//! # fn main() -> shmpar::Result<()> {
//! let pool = shmpar::Pool::new(2)?; // before MPI starts: fork first
//! let universe = shmpar::mpi::rsmpi::initialize().expect("MPI");
//! let world = universe.world();
//! abort_on_panic(&world);
//! let mut a = DistArray::<f64>::zeros(&world, &pool, [1 << 28])?;
//! a.block_mut().view_mut().fill(1.0);
//! let sum = par_reduce(&world, &pool, &a, |c| c.sum(), |x, y| x + y)?;
//! if world.rank() == 0 {
//!     println!("sum = {sum}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Determinism across ranks
//! The global array is split along axis 0 into blocks of whole chunks of the *global* chunk
//! grid (the one a single pool would use for the whole array). Each rank returns its chunks'
//! partial results uncombined; every rank gathers all of them and folds them in global chunk
//! order. The result is therefore bitwise identical to [`Pool::par_reduce`] on one machine,
//! for any number of ranks and workers, provided every rank's pool has the same `chunk_bytes`
//! and `max_chunks`. (For [`DistArray::from_npy`], whose blocks are whatever the files hold,
//! this holds when each block but the last is a whole number of chunks.)
//!
//! # Faults
//! Call [`abort_on_panic`] right after MPI starts: a panic on any rank then prints its message
//! and calls `MPI_Abort`, which ends every rank at once; their workers die with them
//! (`PR_SET_PDEATHSIG`). A failed local reduce (a worker that died, say) is an `Err` on that
//! rank; end the job with `world.abort(code)` so the other ranks do not wait for it.
//!
//! Start the pool before `mpi::initialize()`: forking after MPI is up can corrupt memory with
//! some transports (Open MPI warns about InfiniBand).

pub use ::mpi as rsmpi;

use ::mpi::datatype::PartitionMut;
use ::mpi::traits::{Communicator, CommunicatorCollectives};
use ndarray::{ArrayView, IxDyn};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};
use crate::{Element, Pool, SharedArray};

/// One rank's block of a distributed 1-D or n-D array split along axis 0.
#[derive(Debug)]
pub struct DistArray<A: Element> {
    block: SharedArray<A, IxDyn>,
    global_shape: Vec<usize>,
    row_offset: usize,
    rows_per_chunk: usize,
}

/// The rows `[start, end)` of rank `rank` of `size`, in whole chunks of `rows_per_chunk`.
fn block_rows(rows: usize, rows_per_chunk: usize, rank: usize, size: usize) -> (usize, usize) {
    let chunks = rows.div_ceil(rows_per_chunk.max(1));
    let first = chunks * rank / size;
    let last = chunks * (rank + 1) / size;
    (
        (first * rows_per_chunk).min(rows),
        (last * rows_per_chunk).min(rows),
    )
}

impl<A: Element> DistArray<A> {
    /// This rank's zero-filled block of a global array of `global_shape`, split evenly (in whole
    /// chunks of `pool`'s grid) across the ranks of `world`.
    ///
    /// ```no_run
    /// # use shmpar::mpi::DistArray;
    /// # let pool = shmpar::Pool::new(2).unwrap();
    /// # let universe = shmpar::mpi::rsmpi::initialize().unwrap();
    /// # let world = universe.world();
    /// let a = DistArray::<f32>::zeros(&world, &pool, [1_000_000, 8])?;
    /// println!("my rows start at {}", a.row_offset());
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn zeros(
        world: &impl Communicator,
        pool: &Pool,
        global_shape: impl AsRef<[usize]>,
    ) -> Result<Self> {
        let global_shape = global_shape.as_ref().to_vec();
        let Some((&rows, rest)) = global_shape.split_first() else {
            return Err(Error::invalid(
                "a distributed array needs at least one axis",
            ));
        };
        let row_bytes = rest.iter().product::<usize>() * std::mem::size_of::<A>();
        let rows_per_chunk = pool.grid(rows, row_bytes).rows_per_chunk.max(1);
        let (start, end) = block_rows(
            rows,
            rows_per_chunk,
            world.rank() as usize,
            world.size() as usize,
        );
        let mut shape = global_shape.clone();
        shape[0] = end - start;
        Ok(DistArray {
            block: SharedArray::zeros(IxDyn(&shape))?,
            global_shape,
            row_offset: start,
            rows_per_chunk,
        })
    }

    /// This rank's block from its own `.npy` file (e.g. `data.<rank>.npy`); the global shape is
    /// the blocks stacked in rank order (gathered from every rank).
    ///
    /// ```no_run
    /// # use shmpar::mpi::DistArray;
    /// # use shmpar::mpi::rsmpi::traits::*;
    /// # let pool = shmpar::Pool::new(2).unwrap();
    /// # let universe = shmpar::mpi::rsmpi::initialize().unwrap();
    /// # let world = universe.world();
    /// // SAFETY: each rank's file is its own, and nothing else maps or writes it.
    /// let a = unsafe { DistArray::<f64>::from_npy(&world, &pool, format!("data.{}.npy", world.rank())) }?;
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    ///
    /// # Safety
    /// As for [`SharedArray::open_npy`]: nothing else may write, map for writing, or truncate
    /// the file while the array lives.
    pub unsafe fn from_npy(
        world: &impl Communicator,
        pool: &Pool,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Self> {
        // SAFETY: the caller upholds `open_npy`'s contract (this function's own).
        let block = unsafe { SharedArray::<A, IxDyn>::open_npy(path) }?;
        let rows = block.shape().first().copied().unwrap_or(1) as u64;
        let mut all = vec![0u64; world.size() as usize];
        world.all_gather_into(&rows, &mut all[..]);
        let before: u64 = all[..world.rank() as usize].iter().sum();
        let total: u64 = all.iter().sum();
        let mut global_shape = block.shape().to_vec();
        if let Some(first) = global_shape.first_mut() {
            *first = total as usize;
        }
        let row_bytes = global_shape[1..].iter().product::<usize>() * std::mem::size_of::<A>();
        let rows_per_chunk = pool.grid(total as usize, row_bytes).rows_per_chunk.max(1);
        Ok(DistArray {
            block,
            global_shape,
            row_offset: before as usize,
            rows_per_chunk,
        })
    }

    /// This rank's block.
    ///
    /// ```no_run
    /// # let pool = shmpar::Pool::new(1).unwrap();
    /// # let universe = shmpar::mpi::rsmpi::initialize().unwrap();
    /// # let a = shmpar::mpi::DistArray::<u8>::zeros(&universe.world(), &pool, [10]).unwrap();
    /// println!("{} local elements", a.block().len());
    /// ```
    pub fn block(&self) -> &SharedArray<A, IxDyn> {
        &self.block
    }

    /// This rank's block, mutably.
    ///
    /// ```no_run
    /// # let pool = shmpar::Pool::new(1).unwrap();
    /// # let universe = shmpar::mpi::rsmpi::initialize().unwrap();
    /// # let mut a = shmpar::mpi::DistArray::<u8>::zeros(&universe.world(), &pool, [10]).unwrap();
    /// a.block_mut().view_mut().fill(1);
    /// ```
    pub fn block_mut(&mut self) -> &mut SharedArray<A, IxDyn> {
        &mut self.block
    }

    /// The shape of the whole distributed array.
    ///
    /// ```no_run
    /// # let pool = shmpar::Pool::new(1).unwrap();
    /// # let universe = shmpar::mpi::rsmpi::initialize().unwrap();
    /// # let a = shmpar::mpi::DistArray::<u8>::zeros(&universe.world(), &pool, [10, 2]).unwrap();
    /// assert_eq!(a.global_shape(), &[10, 2]);
    /// ```
    pub fn global_shape(&self) -> &[usize] {
        &self.global_shape
    }

    /// The global index (along axis 0) of this block's first row.
    ///
    /// ```no_run
    /// # let pool = shmpar::Pool::new(1).unwrap();
    /// # let universe = shmpar::mpi::rsmpi::initialize().unwrap();
    /// # let a = shmpar::mpi::DistArray::<u8>::zeros(&universe.world(), &pool, [10]).unwrap();
    /// println!("rows {}..{}", a.row_offset(), a.row_offset() + a.block().shape()[0]);
    /// ```
    pub fn row_offset(&self) -> usize {
        self.row_offset
    }
}

/// Gathers every rank's bytes, in rank order, on every rank.
fn all_gather_bytes(world: &impl Communicator, mine: &[u8]) -> Vec<Vec<u8>> {
    let size = world.size() as usize;
    let mut counts = vec![0i32; size];
    world.all_gather_into(&(mine.len() as i32), &mut counts[..]);
    let displs: Vec<i32> = counts
        .iter()
        .scan(0i32, |at, &c| {
            let d = *at;
            *at += c;
            Some(d)
        })
        .collect();
    let total: usize = counts.iter().map(|&c| c as usize).sum();
    let mut buf = vec![0u8; total];
    {
        let mut part = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
        world.all_gather_varcount_into(mine, &mut part);
    }
    counts
        .iter()
        .zip(&displs)
        .map(|(&c, &d)| buf[d as usize..(d + c) as usize].to_vec())
        .collect()
}

/// Reduces a distributed array: each rank's pool reduces its block chunk by chunk, then the
/// partials of every rank are folded with `combine` in global chunk order, on every rank.
/// Bitwise identical to [`Pool::par_reduce`] on one machine (see the module docs).
///
/// Every rank of `world` must call it (it is collective).
pub fn par_reduce<A, R, C>(
    world: &impl Communicator,
    pool: &Pool,
    array: &DistArray<A>,
    map: fn(ArrayView<'_, A, IxDyn>) -> R,
    mut combine: C,
) -> Result<R>
where
    A: Element,
    R: Serialize + DeserializeOwned,
    C: FnMut(R, R) -> R,
{
    let partials: Vec<R> = pool.par_map_chunks(&array.block, map, array.rows_per_chunk)?;
    let bytes = postcard::to_stdvec(&partials)
        .map_err(|e| Error::invalid(format!("the partial results could not be serialised: {e}")))?;
    let mut acc: Option<R> = None;
    for (rank, b) in all_gather_bytes(world, &bytes).into_iter().enumerate() {
        let theirs: Vec<R> = postcard::from_bytes(&b).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("rank {rank}'s partial results could not be decoded: {e}"),
            )
        })?;
        for r in theirs {
            acc = Some(match acc {
                None => r,
                Some(a) => combine(a, r),
            });
        }
    }
    acc.ok_or_else(|| Error::invalid("the distributed array is empty"))
}

/// Makes a panic on this rank end the whole job: the message is printed with the rank, then
/// `MPI_Abort` ends every rank (their workers die with them). Without it, the other ranks
/// would wait forever in the next collective call.
///
/// ```no_run
/// # let universe = shmpar::mpi::rsmpi::initialize().unwrap();
/// shmpar::mpi::abort_on_panic(&universe.world());
/// ```
pub fn abort_on_panic(world: &impl Communicator) {
    let rank = world.rank();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if crate::lifecycle::in_child() {
            // A pool worker: its panic is reported to the rank as an error; never abort here.
            return previous(info);
        }
        eprintln!("rank {rank}: {info}");
        // Give the launcher a moment to forward the message: MPI_Abort tears the job down at
        // once, and mpiexec may drop output it had not yet read.
        std::thread::sleep(std::time::Duration::from_millis(200));
        // SAFETY: MPI is initialised (a communicator exists), and MPI_Abort on the world
        // communicator may be called from any thread at any time; it does not return.
        unsafe {
            ::mpi::ffi::MPI_Abort(::mpi::ffi::RSMPI_COMM_WORLD, 101);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::block_rows;

    #[test]
    fn blocks_are_whole_chunks_covering_every_row() {
        for (rows, rpc) in [(1000usize, 64usize), (10, 3), (5, 10), (0, 4)] {
            for size in 1..=5 {
                let blocks: Vec<_> = (0..size).map(|r| block_rows(rows, rpc, r, size)).collect();
                assert_eq!(blocks[0].0, 0);
                assert_eq!(blocks[size - 1].1, rows);
                for w in blocks.windows(2) {
                    assert_eq!(w[0].1, w[1].0);
                    assert!(w[0].1 % rpc == 0 || w[0].1 == rows);
                }
            }
        }
    }
}
