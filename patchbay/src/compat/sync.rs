//! Small helpers every compat handle uses: a poison-tolerant lock and a blocking wait on
//! the core.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a future of the core to completion from synchronous code. Only for core operations
/// that wait on namespace workers through channels (never on timers of the caller's
/// runtime), so blocking the calling thread cannot stall them.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}
