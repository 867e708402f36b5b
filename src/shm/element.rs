//! Which element types may live in a shared array.

use num_complex::Complex;

mod sealed {
    pub trait Sealed {}
}

/// A plain value that may live in a [`SharedArray`](crate::SharedArray): `f32`, `f64`, every
/// integer type up to 64 bits, `bool`, and `num_complex::Complex<f32>` / `Complex<f64>`
/// (numpy's `c8` / `c16`).
///
/// Such a type has no pointers and no destructor, and all-zero bytes are a valid value, so it
/// means the same thing in every process that maps the memory. Every bit pattern is valid for
/// all of them but `bool`, whose bytes are checked (0 or 1) when an array of them is opened
/// from a file, a named segment or a handle. The trait is sealed: the set is fixed so that
/// each type has a numpy dtype.
///
/// ```
/// use shmpar::Element;
///
/// fn dtype_of<A: Element>() -> &'static str {
///     A::DTYPE
/// }
/// assert_eq!(dtype_of::<f64>(), "<f8");
/// assert_eq!(dtype_of::<u16>(), "<u2");
/// assert_eq!(dtype_of::<bool>(), "|b1");
/// assert_eq!(dtype_of::<num_complex::Complex<f64>>(), "<c16");
/// ```
pub trait Element:
    bytemuck::Zeroable
    + Copy
    + Send
    + Sync
    + PartialEq
    + std::fmt::Debug
    + Default
    + sealed::Sealed
    + 'static
{
    /// The numpy type string (`np.dtype(...).str`) of this type on a little-endian machine.
    const DTYPE: &'static str;

    /// Whether `bytes` (a whole number of elements) hold only valid values of this type: always
    /// for the number types, 0 or 1 in every byte for `bool`.
    ///
    /// ```
    /// use shmpar::Element;
    /// assert!(bool::valid_bytes(&[0, 1, 1]));
    /// assert!(!bool::valid_bytes(&[0, 2]));
    /// assert!(f32::valid_bytes(&[0xff; 8]));
    /// ```
    fn valid_bytes(bytes: &[u8]) -> bool {
        let _ = bytes;
        true
    }
}

macro_rules! element {
    ($($t:ty => $d:literal),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: &'static str = $d;
        }
    )*};
}

element! {
    f32 => "<f4", f64 => "<f8",
    i8 => "|i1", i16 => "<i2", i32 => "<i4", i64 => "<i8", isize => "<i8",
    u8 => "|u1", u16 => "<u2", u32 => "<u4", u64 => "<u8", usize => "<u8",
    Complex<f32> => "<c8", Complex<f64> => "<c16",
}

impl sealed::Sealed for bool {}
impl Element for bool {
    const DTYPE: &'static str = "|b1";

    fn valid_bytes(bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| b <= 1)
    }
}
