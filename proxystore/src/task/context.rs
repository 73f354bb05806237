//! What a running task can reach of the submission it came from: see
//! [`current`].

use std::cell::RefCell;
use std::sync::Arc;

use super::ExecContext;
use crate::error::Result;
use crate::key::Key;
use crate::policy::ShouldProxy;
use crate::store::{get_or_create_store, Store};

thread_local! {
    static CURRENT: RefCell<Option<TaskContext>> = const { RefCell::new(None) };
}

/// The context of the task running on this thread, wherever it runs (a
/// thread of the caller, a pool's worker process, a worker on another
/// host); `None` outside a task.
///
/// Through it a task reaches the store of the executor that submitted it
/// (to put objects, or read proxies by key) and can build an executor
/// configured the same way, to submit follow-up tasks.
///
/// ```
/// use proxystore::connectors::LocalConnector;
/// use proxystore::executor::ThreadPool;
/// use proxystore::{proxied, task, Proxy, Store, StoreExecutor};
///
/// /// Stores a greeting in the submitting executor's store and returns a
/// /// proxy of it.
/// #[proxied]
/// fn greet(name: String) -> Proxy<String> {
///     let context = task::current().expect("inside a task");
///     let store = context.store().expect("the executor's store");
///     store.proxy(format!("hello, {name}")).expect("stored")
/// }
///
/// fn main() -> proxystore::Result<()> {
///     let store = Store::new("task-context-doc", LocalConnector::new())?;
///     let executor = StoreExecutor::new(ThreadPool::new(1)?, store.clone());
///     let greeting = executor.submit(greet::task("ada".to_string()))?.result()?;
///     assert_eq!(**greeting, "hello, ada");
///     assert!(store.exists(&Proxy::key(&greeting))?);
///     assert!(task::current().is_none());
///     Ok(())
/// }
/// ```
pub fn current() -> Option<TaskContext> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `f` with `context` as the current task's.
pub(super) fn with_current<T>(context: TaskContext, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<TaskContext>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = CURRENT.with(|c| c.borrow_mut().replace(context));
    let _restore = Restore(previous);
    f()
}

/// A running task's view of its submission: see [`current`].
#[derive(Clone)]
pub struct TaskContext {
    pub(super) name: Arc<str>,
    pub(super) context: Arc<ExecContext>,
    pub(super) result_key: Key,
    /// The run's hold on its job, where the executor may give it away.
    pub(super) lease: Option<Arc<dyn super::wire::RunLease>>,
}

impl TaskContext {
    /// The task's registered name.
    pub fn task(&self) -> &str {
        &self.name
    }

    /// The key reserved for the task's result, should it go through the
    /// store.
    pub fn result_key(&self) -> Key {
        self.result_key
    }

    /// Whether this run is still the one that answers for the task, as far
    /// as its worker knows.
    ///
    /// Always true on a thread pool and a process pool, where a task runs
    /// once. On a cluster (`executor::cluster`, feature `cluster`) delivery is
    /// at-least-once: a worker cut off from the queue's server (or stopped)
    /// long enough to be taken for dead keeps running its task while
    /// another worker runs it again. This turns false once the worker knows
    /// (its lease renewal found the job given away) or presumes (it could
    /// not renew the lease for longer than the lease lasts) that the job is
    /// no longer its own; a run known to have lost its job neither stores
    /// its result nor replies. A presumption ends when the server is
    /// reached again and the job is still this worker's (nobody took it
    /// over): then this is true again. Check it before a side effect that must not happen twice,
    /// and stop early when it is false. It is a hint, not a lock: a run
    /// may lose its job just after a check said true, so side effects must
    /// still be idempotent.
    ///
    /// ```
    /// use proxystore::connectors::LocalConnector;
    /// use proxystore::executor::ThreadPool;
    /// use proxystore::{proxied, task, Store, StoreExecutor};
    ///
    /// #[proxied]
    /// fn publish(report: String) -> bool {
    ///     let context = task::current().expect("inside a task");
    ///     if !context.is_current() {
    ///         return false; // another run answers for this task
    ///     }
    ///     // ... write `report` where readers find it ...
    ///     true
    /// }
    ///
    /// fn main() -> proxystore::Result<()> {
    ///     let store = Store::new("task-is-current-doc", LocalConnector::new())?;
    ///     let executor = StoreExecutor::new(ThreadPool::new(1)?, store);
    ///     assert!(*executor.submit(publish::task("done".to_string()))?.result()?);
    ///     Ok(())
    /// }
    /// ```
    pub fn is_current(&self) -> bool {
        self.lease.as_ref().is_none_or(|lease| lease.is_current())
    }

    /// Whether the task's caller asked it to stop
    /// ([`TaskFuture::interrupt`](crate::executor::TaskFuture::interrupt)):
    /// a long task checks it now and then and returns early. The built-in
    /// executors (thread pool, process pool, cluster) set it; it is false
    /// outside a task and on executors that cannot reach a running task.
    pub fn interrupted(&self) -> bool {
        self.lease.as_ref().is_some_and(|lease| lease.interrupted())
    }

    /// The store of the executor that submitted the task: the same store
    /// in this process, or one built from its configuration in a worker.
    pub fn store(&self) -> Result<Store> {
        get_or_create_store(&self.context.store)
    }

    /// The submitting executor's runtime should-proxy policy.
    pub fn policy(&self) -> &ShouldProxy {
        &self.context.policy
    }

    /// Whether the submitting executor hands results back owned.
    pub fn ownership(&self) -> bool {
        self.context.ownership
    }
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("task", &self.name)
            .field("store", &self.context.store.name)
            .field("result_key", &self.result_key)
            .finish()
    }
}
