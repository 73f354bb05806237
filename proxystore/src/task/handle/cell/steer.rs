//! A task's cell as others see it: what its workers report of its store
//! operations, requests to stop it, and the hold an owned result keeps on
//! it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Interrupter, Phase, TaskCell};

impl TaskCell {
    /// Keeps what the task's run did in the store, and adds it to its
    /// executor's totals (the first report only: a run's result is taken
    /// once).
    pub(crate) fn set_metrics(&self, metrics: crate::store::Metrics) {
        self.counters.add_metrics(&metrics);
        let _ = self.metrics.set(metrics);
    }

    /// What the task's run did in the store, if its worker reported it.
    pub(crate) fn metrics(&self) -> Option<&crate::store::Metrics> {
        self.metrics.get()
    }

    pub(crate) fn set_interrupter(&self, interrupter: Interrupter) {
        *self.interrupter.lock().unwrap_or_else(|e| e.into_inner()) = Some(interrupter);
    }

    /// Asks the task to stop if it runs and its executor can reach it.
    pub(crate) fn interrupt(&self) -> bool {
        // Running, or handed to a worker that may be running it.
        let phase = self.lock().phase;
        let dispatched = self.dispatched.load(Ordering::Acquire);
        if !(phase == Phase::Running || phase == Phase::Pending && dispatched) {
            return false;
        }
        let interrupted = if self.runs_here.load(Ordering::Acquire) {
            self.interrupt_asked.store(true, Ordering::Release);
            true
        } else {
            let interrupter = self
                .interrupter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            interrupter.is_some_and(|interrupt| interrupt())
        };
        if interrupted {
            tracing::debug!(target: "proxystore::task", task = %self.name, id = %self.id, "interrupt requested");
        }
        interrupted
    }
}

/// A task run on a thread of this process (see `Completion::run_here`):
/// it runs once, and reads requests to stop from its own cell.
impl crate::task::RunLease for TaskCell {
    fn is_current(&self) -> bool {
        true
    }

    fn confirm(&self) -> bool {
        true
    }

    fn interrupted(&self) -> bool {
        self.interrupt_asked.load(Ordering::Acquire)
    }
}

impl TaskCell {
    /// Runs `f`, the task's run on this thread, reachable by
    /// [`interrupt`](TaskCell::interrupt).
    pub(crate) fn run_here<T>(self: &Arc<Self>, f: impl FnOnce() -> T) -> T {
        self.runs_here.store(true, Ordering::Release);
        crate::task::wire::with_lease(self.clone(), f)
    }
}

impl crate::owned::SharedResult for TaskCell {
    fn hold(self: Arc<Self>) -> crate::proxy::Hold {
        Box::new(self.depend())
    }

    fn defer_eviction(&self, factory: crate::proxy::Factory) -> Option<crate::proxy::Factory> {
        TaskCell::defer_eviction(self, factory)
    }
}
