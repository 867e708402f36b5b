//! Shared memory: regions (memfd mappings) and the arrays that live in them.

mod array;
mod array_handle;
mod element;
mod files;
pub(crate) mod handle;
pub(crate) mod region;
mod view;

pub use array::SharedArray;
pub use array_handle::ArrayHandle;
pub use element::Element;
pub use files::{NAMED_OFFSET, cleanup_stale};
pub(crate) use region::{Region, RegionInfo, RegionWatcher, registry};
pub(crate) use view::{Layout, raw_view};
pub use view::{SharedView, SharedViewMut};
