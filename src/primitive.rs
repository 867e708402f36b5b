//! The atomics and futex calls of the protocols that the loom models check: std's and the
//! kernel's, or loom's under `--cfg loom` (crossbeam's `primitive` indirection). Only the types
//! whose protocol has a model use these; everything else uses std's directly.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use crate::sys::{futex_wait, futex_wake};

/// The futex, modelled: one lock and one condition variable stand in for the kernel's hash
/// bucket. A waiter checks the word under the lock and sleeps until a wake that comes after
/// that check; a waker takes the same lock. So a wake-up lost by the real protocol (a waker
/// that does not see the waiter, a waiter that sleeps after the last wake) is a deadlock that
/// loom reports. Every wake wakes every waiter (spurious wake-ups are allowed by the futex
/// contract); timeouts are not modelled (a wait with one returns at once, as if it expired).
#[cfg(loom)]
mod futex_model {
    use super::{AtomicU32, Ordering};
    use loom::sync::{Condvar, Mutex};
    use std::time::Duration;

    loom::lazy_static! {
        static ref BUCKET: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());
    }

    pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let (lock, wakes) = &*BUCKET;
        let mut woken = lock.lock().unwrap();
        // ORDERING: SeqCst, as the kernel reads the word under the bucket's lock.
        if word.load(Ordering::SeqCst) != expected || timeout.is_some() {
            return;
        }
        let seen = *woken;
        while *woken == seen {
            woken = wakes.wait(woken).unwrap();
        }
    }

    pub(crate) fn futex_wake(_word: &AtomicU32, _n: i32) {
        let (lock, wakes) = &*BUCKET;
        *lock.lock().unwrap() += 1;
        wakes.notify_all();
    }
}

#[cfg(loom)]
pub(crate) use futex_model::{futex_wait, futex_wake};

/// Runs a loom model with at most three preemptions per execution (loom's advice for bounded
/// runs; every race the models look for needs one or two). The one runner of every model.
#[cfg(all(test, loom))]
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}
