//! Evictions moved off an async runtime's thread.
//!
//! Dropping a task's owned result evicts it (a file unlinked, a Redis
//! `DEL`) and frees its value: milliseconds for a large one, which an async
//! runtime's thread must not spend. A thread that has polled one of this
//! crate's futures (a [`TaskFuture`](crate::executor::TaskFuture), an async
//! store operation, a stream of results or items) is taken for a runtime's
//! thread: task results dropped there are evicted, and their values freed,
//! on the background pool instead ([`defer`]).
//!
//! An eviction handed on is still done before anyone can tell: operations
//! that can see it ([`Store::exists`](crate::Store::exists),
//! [`Store::keys`](crate::Store::keys) and what is built on it, closing a
//! store, shutting an executor down) first wait for the evictions this
//! process has queued ([`flush`]), and so does the process's normal exit.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, Once};
use std::time::{Duration, Instant};

thread_local! {
    /// This thread has polled one of the crate's futures.
    static ASYNC: Cell<bool> = const { Cell::new(false) };
    /// This thread runs a deferred eviction, or is a thread of the pool
    /// that runs them: it must never wait for them (they may be queued
    /// behind its own work).
    static EVICTING: Cell<bool> = const { Cell::new(false) };
}

/// Marks a thread of the background pools (see `EVICTING`).
pub(crate) fn mark_pool_thread() {
    EVICTING.with(|e| e.set(true));
}

/// Evictions queued and not finished.
static PENDING: AtomicUsize = AtomicUsize::new(0);
static LOCK: Mutex<()> = Mutex::new(());
static DONE: Condvar = Condvar::new();

/// How long [`flush`] waits at most: a store that does not answer must not
/// hang the caller (the eviction itself reports its failure).
pub(crate) const FLUSH_BOUND: Duration = Duration::from_secs(30);

/// Marks this thread as an async runtime's: called by the crate's futures
/// when polled.
pub(crate) fn mark_async_thread() {
    ASYNC.with(|a| a.set(true));
}

/// Whether work dropped here should be handed on (see the module's docs).
pub(crate) fn on_async_thread() -> bool {
    ASYNC.with(Cell::get) && !EVICTING.with(Cell::get)
}

/// Runs `work` (an eviction, with the value it frees) on the background
/// pool; inline if the pool cannot be started.
pub(crate) fn defer(work: Box<dyn FnOnce() + Send>) {
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function taking nothing.
        unsafe { libc::atexit(flush_at_exit) };
    });
    PENDING.fetch_add(1, Ordering::AcqRel);
    let job = move || {
        let outer = EVICTING.with(|e| e.replace(true));
        // A panic inside (a value's `Drop`) must not leave the count up.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        EVICTING.with(|e| e.set(outer));
        finished();
    };
    // Kept here too, to run inline if the pool cannot start a thread (it
    // then drops its copy of the handle, and the job is still ours).
    let slot = std::sync::Arc::new(Mutex::new(Some(job)));
    let taken = slot.clone();
    let queued = super::background::run_unblocked(Box::new(move || {
        if let Some(job) = taken.lock().unwrap_or_else(|e| e.into_inner()).take() {
            job();
        }
    }));
    if queued.is_err() {
        if let Some(job) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
            job();
        }
    }
}

fn finished() {
    if PENDING.fetch_sub(1, Ordering::AcqRel) == 1 {
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        DONE.notify_all();
    }
}

/// Waits until the evictions queued so far are done (at most `bound`).
/// Returns at once when there are none, or when called from an eviction.
pub(crate) fn flush(bound: Duration) {
    if PENDING.load(Ordering::Acquire) == 0 || EVICTING.with(Cell::get) {
        return;
    }
    let deadline = Instant::now() + bound;
    let mut guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    while PENDING.load(Ordering::Acquire) > 0 {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            tracing::warn!(
                pending = PENDING.load(Ordering::Acquire),
                "evictions of dropped owned objects are still running after {bound:?}"
            );
            return;
        };
        guard = DONE
            .wait_timeout(guard, left.min(Duration::from_millis(50)))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

extern "C" fn flush_at_exit() {
    flush(FLUSH_BOUND);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn flush_waits_for_deferred_work() {
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..4 {
            let done = done.clone();
            defer(Box::new(move || {
                std::thread::sleep(Duration::from_millis(30));
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        flush(FLUSH_BOUND);
        assert_eq!(done.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn pool_threads_never_wait_for_evictions_queued_behind_them() {
        let (started, go) = (
            Arc::new(std::sync::Barrier::new(2)),
            Arc::new(Mutex::new(())),
        );
        let hold = go.lock().unwrap();
        // An eviction that cannot finish yet...
        let (s, g) = (started.clone(), go.clone());
        defer(Box::new(move || {
            s.wait();
            drop(g.lock().unwrap());
        }));
        started.wait();
        // ...and work on the same pool that flushes: it returns at once.
        let (sender, returned) = std::sync::mpsc::channel();
        super::super::background::run_unblocked(Box::new(move || {
            flush(FLUSH_BOUND);
            sender.send(()).unwrap();
        }))
        .unwrap();
        returned
            .recv_timeout(Duration::from_secs(10))
            .expect("flush returned");
        drop(hold);
        flush(FLUSH_BOUND);
    }

    #[test]
    fn a_panicking_eviction_does_not_hold_flush() {
        defer(Box::new(|| panic!("a value's drop panicked")));
        flush(FLUSH_BOUND);
        assert!(!EVICTING.with(Cell::get));
    }
}
