//! Shared memory: regions (memfd mappings) and the arrays that live in them.

mod array;
mod element;
pub(crate) mod region;

pub use array::SharedArray;
pub use element::Element;
pub(crate) use region::{Region, RegionInfo, RegionWatcher, registry};
