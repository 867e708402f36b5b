//! Monte Carlo pi, the course's example: throw random points at the unit square and count how
//! many land inside the quarter circle; `4 * inside / samples` estimates pi.
//!
//! # Reproducible for any number of workers
//! The random stream is *counter-based*: sample `i`'s point is a hash of `(seed, i)`, so no two
//! chunks or workers ever share a stream (the numpy/numpy#9650 trap of forked processes
//! inheriting one RNG state), and the count of points inside is an integer sum, identical for
//! any chunking and any number of workers, bitwise.
//!
//! ```
//! # fn main() -> shmpar::Result<()> {
//! let pool = shmpar::Pool::new(2)?;
//! let est = shmpar_cli::montecarlo::estimate_pi(&pool, 10_000_000, 42)?;
//! assert!((est.pi - std::f64::consts::PI).abs() < 5.0 * est.std_error);
//! # Ok(())
//! # }
//! ```

use std::ops::Range;

use serde::{Deserialize, Serialize};

use shmpar::{Pool, Result};

/// A pi estimate and its statistics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PiEstimate {
    /// Points thrown.
    pub samples: u64,
    /// Points inside the quarter circle.
    pub inside: u64,
    /// `4 * inside / samples`.
    pub pi: f64,
    /// The binomial standard error of the estimate: `4 * sqrt(p (1 - p) / samples)`.
    pub std_error: f64,
}

impl PiEstimate {
    /// The estimate from a count.
    ///
    /// ```
    /// let e = shmpar_cli::montecarlo::PiEstimate::from_counts(100, 79);
    /// assert_eq!(e.pi, 3.16);
    /// ```
    pub fn from_counts(samples: u64, inside: u64) -> PiEstimate {
        let n = samples.max(1) as f64;
        let p = inside as f64 / n;
        PiEstimate {
            samples,
            inside,
            pi: 4.0 * p,
            std_error: 4.0 * (p * (1.0 - p) / n).sqrt(),
        }
    }
}

/// Estimates pi with `samples` points on the pool's workers.
///
/// ```
/// # fn main() -> shmpar::Result<()> {
/// let pool = shmpar::Pool::new(1)?;
/// let a = shmpar_cli::montecarlo::estimate_pi(&pool, 1_000_000, 7)?;
/// let b = shmpar_cli::montecarlo::estimate_pi(&shmpar::Pool::new(3)?, 1_000_000, 7)?;
/// assert_eq!(a, b); // bitwise, whatever the number of workers
/// # Ok(())
/// # }
/// ```
pub fn estimate_pi(pool: &Pool, samples: u64, seed: u64) -> Result<PiEstimate> {
    let inside = pool.par_reduce_range_with(
        samples,
        &seed,
        |seed, range, _chunk| count_inside(*seed, range),
        |a, b| a + b,
    )?;
    Ok(PiEstimate::from_counts(samples, inside))
}

#[cfg(feature = "mpi")]
/// Monte Carlo pi across ranks: each rank counts a contiguous share of the samples with its
/// pool (the counter-based stream of this module), and the counts are summed. The
/// estimate is identical for any number of ranks and workers.
///
/// ```no_run
/// # let pool = shmpar::Pool::new(2).unwrap();
/// # let universe = shmpar::mpi::rsmpi::initialize().unwrap();
/// let est = shmpar_cli::montecarlo::estimate_pi_mpi(&universe.world(), &pool, 1_000_000_000, 42)?;
/// # Ok::<(), shmpar::Error>(())
/// ```
pub fn estimate_pi_mpi(
    world: &impl shmpar::mpi::rsmpi::traits::Communicator,
    pool: &Pool,
    samples: u64,
    seed: u64,
) -> Result<PiEstimate> {
    use shmpar::mpi::rsmpi::traits::CommunicatorCollectives;
    let (size, rank) = (world.size() as u64, world.rank() as u64);
    let start = samples * rank / size;
    let end = samples * (rank + 1) / size;
    let inside = pool.par_reduce_range_with(
        end - start,
        &(seed, start),
        |&(seed, start), r, _| count_inside(seed, start + r.start..start + r.end),
        |a, b| a + b,
    )?;
    let mut all = vec![0u64; size as usize];
    world.all_gather_into(&inside, &mut all[..]);
    Ok(PiEstimate::from_counts(samples, all.iter().sum()))
}

/// The kernel: how many of the samples `range` (of the stream `seed`) land inside the quarter
/// circle. Any split of a range into parts gives the same total.
///
/// ```
/// use shmpar_cli::montecarlo::count_inside;
/// let whole = count_inside(1, 0..100_000);
/// assert_eq!(whole, count_inside(1, 0..31_337) + count_inside(1, 31_337..100_000));
/// ```
pub fn count_inside(seed: u64, range: Range<u64>) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the CPU supports these AVX-512 subsets (checked just above).
            return unsafe { count_inside_avx512(seed, range) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { count_inside_avx2(seed, range) };
        }
    }
    count_inside_portable(seed, range)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn count_inside_avx512(seed: u64, range: Range<u64>) -> u64 {
    count_blocks(seed, range)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn count_inside_avx2(seed: u64, range: Range<u64>) -> u64 {
    count_blocks(seed, range)
}

fn count_inside_portable(seed: u64, range: Range<u64>) -> u64 {
    count_blocks(seed, range)
}

/// Samples are numbered in blocks of 2^31: a block's keys are hashed once, and inside a block
/// each sample's coordinates are one 32-bit hash each (which vectorises, 8 lanes with AVX2).
const BLOCK: u64 = 1 << 31;

#[inline(always)]
fn count_blocks(seed: u64, range: Range<u64>) -> u64 {
    let mut total = 0;
    let mut i = range.start;
    while i < range.end {
        let block = i / BLOCK;
        let end = range.end.min((block + 1) * BLOCK);
        let (kx, ky) = (block_key(seed, block, 0), block_key(seed, block, 1));
        total += count_in_block(kx, ky, (i % BLOCK) as u32, (end - block * BLOCK) as u32);
        i = end;
    }
    total
}

/// A strong 32-bit mixer (Chris Wellons' "lowbias32"): every input bit affects every output bit.
#[inline(always)]
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

fn block_key(seed: u64, block: u64, axis: u32) -> u32 {
    let k = mix32(
        (seed >> 32) as u32
            ^ mix32(block as u32 ^ mix32((block >> 32) as u32 ^ axis.wrapping_add(0x9e37_79b9))),
    );
    mix32(seed as u32 ^ k)
}

/// Radius 2^31 in 31-bit integer coordinates: a point is inside when x^2 + y^2 < 2^62, an exact
/// integer comparison.
const R2: u64 = 1 << 62;

#[inline(always)]
fn count_in_block(kx: u32, ky: u32, lo: u32, hi: u32) -> u64 {
    let mut inside = 0u64;
    for n in lo..hi {
        // `n * odd` is a bijection: distinct samples give distinct inputs to the mixer.
        let m = n.wrapping_mul(0x9e37_79b9);
        let x = u64::from(mix32(m ^ kx) >> 1);
        let y = u64::from(mix32(m ^ ky) >> 1);
        inside += u64::from(x * x + y * y < R2);
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_split_gives_the_same_count() {
        let whole = count_inside(9, 0..1_000_003);
        let parts: u64 = (0..1_000_003u64)
            .step_by(77_777)
            .map(|s| count_inside(9, s..(s + 77_777).min(1_000_003)))
            .sum();
        assert_eq!(whole, parts);
        assert_eq!(count_inside(9, 5..5), 0);
        // Across a block boundary.
        let edge = BLOCK - 1000..BLOCK + 1000;
        assert_eq!(
            count_inside(3, edge.clone()),
            count_inside(3, edge.start..BLOCK) + count_inside(3, BLOCK..edge.end)
        );
    }

    #[test]
    fn vector_and_portable_kernels_agree() {
        assert_eq!(
            count_inside(11, 0..500_000),
            count_inside_portable(11, 0..500_000)
        );
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            let avx2 = unsafe { count_inside_avx2(11, 0..500_000) };
            assert_eq!(avx2, count_inside_portable(11, 0..500_000));
        }
    }

    #[test]
    fn the_standard_error_formula() {
        let e = PiEstimate::from_counts(10_000, 7_500);
        assert!((e.pi - 3.0).abs() < 1e-12);
        let p: f64 = 0.75;
        assert!((e.std_error - 4.0 * (p * (1.0 - p) / 10_000.0).sqrt()).abs() < 1e-15);
    }
}
