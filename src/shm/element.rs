//! Which element types may live in a shared array.

mod sealed {
    pub trait Sealed {}
}

/// A plain-old-data number that may live in a [`SharedArray`](crate::SharedArray): `f32`,
/// `f64` and every integer type up to 64 bits.
///
/// Such a type has no pointers, no destructor, and every bit pattern is a valid value, so it
/// means the same thing in every process that maps the memory. The trait is sealed: the set is
/// fixed so that each type has a numpy dtype.
///
/// ```
/// use shmpar::Element;
///
/// fn dtype_of<A: Element>() -> &'static str {
///     A::DTYPE
/// }
/// assert_eq!(dtype_of::<f64>(), "<f8");
/// assert_eq!(dtype_of::<u16>(), "<u2");
/// ```
pub trait Element:
    bytemuck::Pod + Send + Sync + PartialEq + std::fmt::Debug + Default + sealed::Sealed + 'static
{
    /// The numpy type string (`np.dtype(...).str`) of this type on a little-endian machine.
    const DTYPE: &'static str;
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
}
