//! Running a failed task again ([`RetryPolicy`]), and giving up on one that
//! runs too long (a task's timeout).
//!
//! A task with a policy or a timeout keeps what it needs to be submitted
//! again (its job, with its arguments shared, not copied). An attempt that
//! fails in a way the policy retries does not finish the task: the task
//! goes back to pending, and its job is submitted again after the backoff.
//! Its proxied inputs stay stored until the task finishes, and tasks that
//! depend on it see only the last attempt. Each attempt's [`Completion`]
//! knows its attempt: one that completes after its attempt was given up
//! (timed out, say) is ignored.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::Completion;
use crate::error::Error;

// Asserted unwind safe: a task's cell is (it is shared with proxies), and
// a predicate that panicked leaves nothing half done that is seen again.
type Predicate = std::panic::AssertUnwindSafe<Arc<dyn Fn(&Error) -> bool + Send + Sync>>;

/// When a failed task runs again: how many attempts, after which errors,
/// with what pause between them.
///
/// By default (see [`attempts`](RetryPolicy::attempts)) a task is run again
/// when it returned an error or panicked ([`Error::TaskFailed`]), when its
/// worker process died ([`Error::WorkerDied`]) or when it ran past its
/// timeout ([`Error::TaskTimedOut`]); [`retry_if`](RetryPolicy::retry_if)
/// chooses otherwise.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
///
/// use proxystore::connectors::LocalConnector;
/// use proxystore::executor::ThreadPool;
/// use proxystore::task::RetryPolicy;
/// use proxystore::{proxied, Store, StoreExecutor};
///
/// static CALLS: AtomicU32 = AtomicU32::new(0);
///
/// /// Fails twice, then works.
/// #[proxied]
/// fn flaky(x: u32) -> Result<u32, String> {
///     match CALLS.fetch_add(1, Ordering::SeqCst) {
///         0 | 1 => Err("not yet".into()),
///         _ => Ok(x),
///     }
/// }
///
/// fn main() -> proxystore::Result<()> {
///     let store = Store::new("retry-doc", LocalConnector::new())?;
///     let executor = StoreExecutor::new(ThreadPool::new(1)?, store);
///     let policy = RetryPolicy::attempts(3).backoff(Duration::from_millis(1), 2.0, Duration::from_millis(10));
///     let future = executor.submit(flaky::task(7).retries(policy))?;
///     assert_eq!(*future.result()?, 7);
///     assert_eq!(CALLS.load(Ordering::SeqCst), 3);
///     Ok(())
/// }
/// ```
pub struct RetryPolicy {
    attempts: u32,
    initial: Duration,
    factor: f64,
    max: Duration,
    retry_if: Option<Predicate>,
}

impl RetryPolicy {
    /// At most `attempts` runs in all (1: no retry), after the task's own
    /// failures, its worker's death or its timeout, without pause.
    pub fn attempts(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts: attempts.max(1),
            initial: Duration::ZERO,
            factor: 1.0,
            max: Duration::ZERO,
            retry_if: None,
        }
    }

    /// Waits `initial` before the second attempt, `factor` times longer
    /// before each next one, never longer than `max`.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, factor: f64, max: Duration) -> RetryPolicy {
        self.initial = initial;
        self.factor = if factor.is_finite() && factor >= 1.0 {
            factor
        } else {
            1.0
        };
        self.max = max.max(initial);
        self
    }

    /// Runs the task again only after errors `retry` accepts (each
    /// attempt's error, with the task's id).
    #[must_use]
    pub fn retry_if(mut self, retry: impl Fn(&Error) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Some(std::panic::AssertUnwindSafe(Arc::new(retry)));
        self
    }

    /// The most attempts in all.
    pub fn max_attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether attempt `attempt` (1 for the first), which failed with
    /// `error`, is followed by another.
    pub(crate) fn retries(&self, attempt: u32, error: &Error) -> bool {
        if attempt >= self.attempts {
            return false;
        }
        match &self.retry_if {
            Some(retry) => (retry.0)(error),
            None => matches!(
                error,
                Error::TaskFailed { .. } | Error::WorkerDied { .. } | Error::TaskTimedOut { .. }
            ),
        }
    }

    /// The pause before attempt `next` (2 for the first retry).
    pub(crate) fn pause(&self, next: u32) -> Duration {
        let steps = next.saturating_sub(2).min(64) as i32;
        let pause = self.initial.as_secs_f64() * self.factor.powi(steps);
        Duration::from_secs_f64(pause.min(self.max.as_secs_f64()).max(0.0))
    }
}

impl Clone for RetryPolicy {
    fn clone(&self) -> Self {
        RetryPolicy {
            retry_if: self
                .retry_if
                .as_ref()
                .map(|r| std::panic::AssertUnwindSafe(r.0.clone())),
            ..*self
        }
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("attempts", &self.attempts)
            .field("initial", &self.initial)
            .field("factor", &self.factor)
            .field("max", &self.max)
            .field("retry_if", &self.retry_if.is_some())
            .finish()
    }
}

type Resubmit = std::panic::AssertUnwindSafe<Arc<dyn Fn(Completion) + Send + Sync>>;

/// What a task with a policy or a timeout keeps to run again.
pub(crate) struct Attempts {
    pub(crate) policy: Option<RetryPolicy>,
    pub(crate) timeout: Option<Duration>,
    /// Submits the task's job again, for the attempt of the completion
    /// (set when the job is first submitted, dropped when the task
    /// finishes: it holds the executor).
    resubmit: std::sync::Mutex<Option<Resubmit>>,
}

impl Attempts {
    pub(crate) fn new(policy: Option<RetryPolicy>, timeout: Option<Duration>) -> Attempts {
        Attempts {
            policy,
            timeout,
            resubmit: std::sync::Mutex::new(None),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Resubmit>> {
        self.resubmit.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_resubmit(&self, resubmit: impl Fn(Completion) + Send + Sync + 'static) {
        *self.slot() = Some(std::panic::AssertUnwindSafe(Arc::new(resubmit)));
    }

    /// Forgets the job: the task is done.
    pub(crate) fn clear(&self) {
        let resubmit = self.slot().take();
        drop(resubmit);
    }

    pub(crate) fn resubmit(&self, completion: Completion) {
        let resubmit = self.slot().as_ref().map(|r| r.0.clone());
        match resubmit {
            Some(resubmit) => resubmit(completion),
            // Finished meanwhile (the completion is dropped unused).
            None => drop(completion),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_their_bound() {
        let p = RetryPolicy::attempts(10).backoff(
            Duration::from_millis(10),
            2.0,
            Duration::from_millis(50),
        );
        let pauses: Vec<u128> = (2..7).map(|n| p.pause(n).as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 50, 50]);
        assert_eq!(RetryPolicy::attempts(3).pause(2), Duration::ZERO);
    }

    #[test]
    fn which_errors_and_how_many_attempts() {
        let failed = Error::TaskFailed {
            task: "t".into(),
            id: None,
            arguments: None,
            message: "no".into(),
        };
        let shut = Error::ShutDown {
            task: "t".into(),
            id: None,
        };
        let p = RetryPolicy::attempts(3);
        assert!(p.retries(1, &failed) && p.retries(2, &failed) && !p.retries(3, &failed));
        assert!(!p.retries(1, &shut));
        let only_shut = RetryPolicy::attempts(2).retry_if(|e| matches!(e, Error::ShutDown { .. }));
        assert!(only_shut.retries(1, &shut) && !only_shut.retries(1, &failed));
        assert_eq!(RetryPolicy::attempts(0).max_attempts(), 1);
    }
}
