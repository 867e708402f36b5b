//! The atomics of the protocols that the loom models check: std's, or loom's under
//! `--cfg loom` (crossbeam's `primitive` indirection). Only the types whose protocol has a
//! model use these; everything else uses std's directly.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
