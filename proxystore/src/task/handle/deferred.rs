//! Work that finishing tasks leave for later, and the threads that finish
//! tasks.

/// Work a finishing task leaves for after its lock is released: a
/// dependent's submission (or failure), a result let go.
pub(crate) type Deferred = Box<dyn FnOnce() + Send>;

thread_local! {
    /// Set on threads that run tasks or finish them (and so run done
    /// callbacks): waiting there for other tasks of the same executor could
    /// wait for this very thread.
    static EXECUTOR_THREAD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as one of an executor's for its whole life.
pub(crate) fn mark_executor_thread() {
    EXECUTOR_THREAD.with(|c| c.set(c.get() + 1));
}

/// Whether this thread runs or finishes tasks (see [`mark_executor_thread`]),
/// or is running a task's done callbacks now.
pub(crate) fn on_executor_thread() -> bool {
    EXECUTOR_THREAD.with(|c| c.get() > 0)
}

/// Marks this thread as running completions until dropped.
pub(super) struct Finishing;

impl Finishing {
    pub(super) fn enter() -> Self {
        mark_executor_thread();
        Finishing
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        EXECUTOR_THREAD.with(|c| c.set(c.get() - 1));
    }
}

thread_local! {
    /// Deferred work queued on this thread while an outer
    /// [`run_deferred`] further up its stack drains it; `None` when no
    /// drain runs here.
    static DEFERRED: std::cell::RefCell<Option<std::collections::VecDeque<Deferred>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `actions` now, or, when this thread is already running deferred
/// work further up its stack, queues them for that outer loop.
///
/// Why: a failure or a cancellation passes down a chain of dependent tasks
/// one task per action (the upstream finishes, its dependent fails with
/// `UpstreamFailed` and finishes, and so on). Run by recursion, a chain of
/// a few thousand steps overflowed the stack; queued, any depth takes a
/// constant amount of it. Order is kept: a task's own actions run in turn,
/// and each one's consequences after them, breadth first.
pub(crate) fn run_deferred(actions: impl IntoIterator<Item = Deferred>) {
    let mut actions = actions.into_iter().peekable();
    if actions.peek().is_none() {
        return;
    }
    let nested = DEFERRED.with(|queue| {
        let mut queue = queue.borrow_mut();
        match queue.as_mut() {
            Some(queue) => {
                queue.extend(actions.by_ref());
                true
            }
            None => {
                *queue = Some(actions.by_ref().collect());
                false
            }
        }
    });
    if nested {
        return;
    }
    /// Ends this thread's drain however the loop is left.
    struct Drain;
    impl Drop for Drain {
        fn drop(&mut self) {
            DEFERRED.with(|queue| queue.borrow_mut().take());
        }
    }
    let _drain = Drain;
    while let Some(action) =
        DEFERRED.with(|queue| queue.borrow_mut().as_mut().and_then(|q| q.pop_front()))
    {
        // An action may call into a user's executor (to submit a
        // dependent): one that panics must not lose the rest of the
        // queue, whose tasks would then never end.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(action)).is_err() {
            tracing::error!("work deferred by a finished task panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    /// Each action queues the next from inside itself, as a failing task
    /// fails its dependent: a million of them take no more stack than one.
    #[test]
    fn deferred_work_queued_from_deferred_work_runs_without_recursion() {
        use std::sync::atomic::AtomicU64;
        fn next(left: u64, ran: Arc<AtomicU64>) -> Deferred {
            Box::new(move || {
                ran.fetch_add(1, Ordering::Relaxed);
                if left > 0 {
                    run_deferred([next(left - 1, ran)]);
                }
            })
        }
        let ran = Arc::new(AtomicU64::new(0));
        run_deferred([next(999_999, ran.clone())]);
        assert_eq!(ran.load(Ordering::Relaxed), 1_000_000);
        // A panicking action loses nothing queued behind it.
        let after = Arc::new(AtomicU64::new(0));
        let seen = after.clone();
        run_deferred([
            Box::new(|| panic!("an executor's submit panicked")) as Deferred,
            Box::new(move || {
                seen.fetch_add(1, Ordering::Relaxed);
            }),
        ]);
        assert_eq!(after.load(Ordering::Relaxed), 1);
        // The drain ended: work queued now runs at once.
        let now = Arc::new(AtomicU64::new(0));
        let seen = now.clone();
        run_deferred([Box::new(move || {
            seen.fetch_add(1, Ordering::Relaxed);
        }) as Deferred]);
        assert_eq!(now.load(Ordering::Relaxed), 1);
    }
}
