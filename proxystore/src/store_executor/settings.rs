//! The settings of a [`StoreExecutor`], chosen when it is made.

use super::*;

impl StoreExecutor {
    /// The runtime should-proxy policy for arguments and results whose
    /// types are not listed in `#[proxied(types = ..)]`.
    #[must_use]
    pub fn should_proxy(mut self, policy: ShouldProxy) -> Self {
        self.policy = policy;
        self.encode_context();
        self
    }

    /// Whether proxied results come back owned (default `true`).
    #[must_use]
    pub fn ownership(mut self, ownership: bool) -> Self {
        self.ownership = ownership;
        self.encode_context();
        self
    }

    /// How long the proxied inputs of a task outlive a caller killed while
    /// the task runs, in a store that can expire objects by itself (Redis;
    /// default 60 s): they get this expiry when they are stored, renewed
    /// every third of it while this executor lives, and are evicted when
    /// the task ends, as always. Other stores keep inputs until they are
    /// evicted or the store is closed.
    #[must_use]
    pub fn input_expiry(mut self, expiry: std::time::Duration) -> Self {
        self.keeper = Keeper::new(self.store.clone(), expiry);
        self
    }

    /// Runs every task that names no policy of its own
    /// ([`Task::retries`]) again after failures, as `policy` says (default:
    /// no retry; a [`ClusterExecutor`](crate::executor) re-runs the jobs of
    /// dead workers anyway).
    #[must_use]
    pub fn retries(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Gives up every task that names no timeout of its own
    /// ([`Task::timeout`]) once it runs longer than `after` (default: no
    /// timeout).
    #[must_use]
    pub fn task_timeout(mut self, after: std::time::Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// Whether shutting the executor down (with
    /// [`shutdown`](StoreExecutor::shutdown) or by dropping it) closes the
    /// store (default `true`).
    #[must_use]
    pub fn close_store(mut self, close: bool) -> Self {
        self.close_store = close;
        self
    }

    /// Whether workers measure what each task does in stores and send it
    /// back with its result (default off: it costs a few clock reads per
    /// store operation and 16 to 100 bytes per result). Each task's figures
    /// are then on its future ([`TaskFuture::worker_metrics`]) and their
    /// sum on the executor ([`worker_metrics`](StoreExecutor::worker_metrics)).
    ///
    /// ```
    /// use proxystore::connectors::LocalConnector;
    /// use proxystore::executor::ThreadPool;
    /// use proxystore::store::Operation;
    /// use proxystore::{proxied, Store, StoreExecutor};
    ///
    /// #[proxied(types = [Vec<u8>])]
    /// fn grow(mut bytes: Vec<u8>) -> Vec<u8> {
    ///     bytes.extend_from_slice(&[0; 1000]);
    ///     bytes
    /// }
    ///
    /// fn main() -> proxystore::Result<()> {
    ///     let store = Store::new("worker-metrics-doc", LocalConnector::new())?;
    ///     let executor = StoreExecutor::new(ThreadPool::new(2)?, store).gather_worker_metrics(true);
    ///     let mut future = executor.submit(grow::task(vec![1u8; 24]))?;
    ///     let result = future.result_timeout(std::time::Duration::from_secs(60))?;
    ///     assert_eq!(result.len(), 1024);
    ///     let task = future.worker_metrics().expect("the task returned");
    ///     assert_eq!(task.get(Operation::Get).count, 1);   // its argument, read
    ///     assert_eq!(task.get(Operation::Put).count, 1);   // its result, stored
    ///     assert!(task.get(Operation::Put).bytes >= 1024);
    ///     assert_eq!(executor.worker_metrics(), task);     // the sum over tasks
    ///     Ok(())
    /// }
    /// ```
    #[must_use]
    pub fn gather_worker_metrics(mut self, gather: bool) -> Self {
        self.gather_metrics = gather;
        self.encode_context();
        self
    }
}
