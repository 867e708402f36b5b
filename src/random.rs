//! Random numbers the `rand` way, the same for any chunking and any number of workers.
//!
//! A Monte Carlo over a pool draws its numbers in chunks, and the chunks depend on the array
//! and the pool's settings, not on who runs them. [`rows_rng`] gives each chunk a
//! [`ChaCha8Rng`] (a `rand` [`RngCore`](rand_core::RngCore)) positioned at its first row in
//! one stream: if every row draws the same number of 32-bit words, row `i` gets the same
//! numbers whichever chunk holds it, so the estimate is bitwise the same for 1, 2 or 16
//! workers and any `chunk_bytes`.
//!
//! ```
//! use rand::Rng;
//!
//! # fn main() -> shmpar::Result<()> {
//! // Monte Carlo pi: each sample draws two f64, i.e. four 32-bit words.
//! fn inside(seed: &u64, rows: std::ops::Range<u64>, _chunk: u64) -> u64 {
//!     let mut rng = shmpar::random::rows_rng(*seed, rows.start, 4);
//!     rows.filter(|_| {
//!         let (x, y): (f64, f64) = (rng.random(), rng.random());
//!         x * x + y * y < 1.0
//!     })
//!     .count() as u64
//! }
//! let one = shmpar::Pool::new(1)?.par_reduce_range_with(100_000, &7u64, inside, |a, b| a + b)?;
//! let three = shmpar::Pool::builder().workers(3).chunk_bytes(4096).build()?
//!     .par_reduce_range_with(100_000, &7u64, inside, |a, b| a + b)?;
//! assert_eq!(one, three);
//! # Ok(())
//! # }
//! ```

pub use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

/// The generator for rows `first_row..` of the stream `seed`, when every row draws
/// `words_per_row` 32-bit words (an `f64` or a `u64` is two, an `f32` or a `u32` one).
///
/// ```
/// use rand_core::RngCore;
/// let mut whole = shmpar::random::rows_rng(9, 0, 2);
/// let firsts: Vec<u64> = (0..10).map(|_| whole.next_u64()).collect();
/// // Row 6 from a generator started at row 6 is the same number.
/// assert_eq!(shmpar::random::rows_rng(9, 6, 2).next_u64(), firsts[6]);
/// ```
pub fn rows_rng(seed: u64, first_row: u64, words_per_row: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_word_pos(u128::from(first_row) * u128::from(words_per_row));
    rng
}
