//! Who a task is ([`TaskId`]) and how an executor's tasks are doing
//! ([`Progress`]).

use std::fmt;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A task's identity: unique among the tasks submitted by this process,
/// in submission order. It is on the task's
/// [`TaskFuture`](crate::executor::TaskFuture), in its errors and in every
/// `tracing` event about it; shown as `#17`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(NonZeroU64);

static NEXT: AtomicU64 = AtomicU64::new(1);

impl TaskId {
    pub(crate) fn next() -> TaskId {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TaskId(NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN))
    }

    /// The number (1 for the first task of the process).
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0)
    }
}

/// How an executor's tasks are doing, counted since it was made; see
/// [`StoreExecutor::progress`](crate::StoreExecutor::progress).
///
/// ```
/// use proxystore::connectors::LocalConnector;
/// use proxystore::executor::ThreadPool;
/// use proxystore::{proxied, Store, StoreExecutor};
///
/// #[proxied]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn main() -> proxystore::Result<()> {
///     let store = Store::new("progress-doc", LocalConnector::new())?;
///     let executor = StoreExecutor::new(ThreadPool::new(2)?, store);
///     let results = executor.map((0..10u64).map(square::task))?;
///     assert_eq!(results.into_iter().map(|r| *r.unwrap()).sum::<u64>(), 285);
///     let progress = executor.progress();
///     assert_eq!((progress.submitted, progress.done, progress.failed), (10, 10, 0));
///     assert_eq!(progress.pending + progress.running, 0);
///     Ok(())
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Tasks submitted.
    pub submitted: usize,
    /// Submitted and not started (waiting for a worker, or for their
    /// inputs).
    pub pending: usize,
    /// Running now.
    pub running: usize,
    /// Finished with a value.
    pub done: usize,
    /// Finished with an error.
    pub failed: usize,
    /// Cancelled before they ran.
    pub cancelled: usize,
}

impl Progress {
    /// Tasks finished, one way or another.
    pub fn finished(&self) -> usize {
        self.done + self.failed + self.cancelled
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} pending, {} running, {} done, {} failed, {} cancelled (of {})",
            self.pending, self.running, self.done, self.failed, self.cancelled, self.submitted
        )
    }
}

/// An executor's counts, shared by its tasks' cells.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Tasks not done yet.
    pub(crate) outstanding: AtomicUsize,
    submitted: AtomicUsize,
    running: AtomicUsize,
    done: AtomicUsize,
    failed: AtomicUsize,
    cancelled: AtomicUsize,
    /// The store metrics workers sent back, summed.
    metrics: std::sync::Mutex<crate::store::Metrics>,
}

/// How a task ended, for the counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    Done,
    Failed,
    Cancelled,
}

impl Counters {
    pub(crate) fn submitted(&self) {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        self.submitted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn started(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unstarted(&self) {
        self.running.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn ended(&self, was_running: bool, ending: Ending) {
        if was_running {
            self.running.fetch_sub(1, Ordering::Relaxed);
        }
        let count = match ending {
            Ending::Done => &self.done,
            Ending::Failed => &self.failed,
            Ending::Cancelled => &self.cancelled,
        };
        count.fetch_add(1, Ordering::Relaxed);
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn add_metrics(&self, metrics: &crate::store::Metrics) {
        self.metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .merge(metrics);
    }

    pub(crate) fn metrics(&self) -> crate::store::Metrics {
        self.metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn progress(&self) -> Progress {
        // Read finished counts first: a task moving on between the reads
        // is then counted once at most, never as less than nothing.
        let done = self.done.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let cancelled = self.cancelled.load(Ordering::Relaxed);
        let running = self.running.load(Ordering::Relaxed);
        let submitted = self.submitted.load(Ordering::Relaxed);
        let submitted = submitted.max(done + failed + cancelled + running);
        Progress {
            submitted,
            pending: submitted - done - failed - cancelled - running,
            running,
            done,
            failed,
            cancelled,
        }
    }
}
