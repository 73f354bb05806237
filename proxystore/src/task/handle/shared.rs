//! A task's future shared by many handles.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::TaskFuture;
use crate::error::{Error, Result};
use crate::task::{TaskId, TaskValue};
use crate::Storable;

struct Inner<R: Storable> {
    future: Mutex<Option<TaskFuture<R>>>,
    outcome: OnceLock<Result<TaskValue<R>>>,
}

/// A [`TaskFuture`] that many handles share: clones all see the same
/// outcome, read by reference, as often as asked
/// ([`TaskFuture::shared`]). The result (an owned proxy, say) lives until
/// the last clone is dropped.
///
/// ```
/// use proxystore::connectors::LocalConnector;
/// use proxystore::executor::ThreadPool;
/// use proxystore::{proxied, Store, StoreExecutor};
///
/// #[proxied]
/// fn checked(x: i64) -> Result<i64, String> {
///     if x < 0 { Err(format!("{x} is negative")) } else { Ok(x) }
/// }
///
/// fn main() -> proxystore::Result<()> {
///     let store = Store::new("shared-future-doc", LocalConnector::new())?;
///     let executor = StoreExecutor::new(ThreadPool::new(2)?, store);
///     let good = executor.submit(checked::task(4))?.shared();
///     let bad = executor.submit(checked::task(-1))?.shared();
///
///     let watcher = good.clone();
///     let seen = std::thread::spawn(move || **watcher.result().unwrap()).join().unwrap();
///     assert_eq!((seen, **good.result().unwrap()), (4, 4)); // both handles, one result
///     assert!(bad.exception().unwrap().to_string().contains("-1 is negative"));
///     assert!(good.exception().is_none());
///     Ok(())
/// }
/// ```
pub struct SharedTaskFuture<R: Storable> {
    inner: Arc<Inner<R>>,
    cell: Arc<super::TaskCell>,
}

impl<R: Storable> TaskFuture<R> {
    /// This future as one that can be cloned, each clone seeing the same
    /// outcome by reference.
    pub fn shared(self) -> SharedTaskFuture<R> {
        SharedTaskFuture {
            cell: self.cell().clone(),
            inner: Arc::new(Inner {
                future: Mutex::new(Some(self)),
                outcome: OnceLock::new(),
            }),
        }
    }
}

impl<R: Storable> SharedTaskFuture<R> {
    pub(crate) fn cell(&self) -> &Arc<super::TaskCell> {
        &self.cell
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.cell.name
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.cell.id
    }

    /// Whether the task has finished (with a value, an error, or cancelled).
    pub fn done(&self) -> bool {
        self.cell.is_done()
    }

    /// Cancels the task if it has not started (see [`TaskFuture::cancel`]).
    pub fn cancel(&self) -> bool {
        self.cell.cancel()
    }

    /// Waits for the task and gives its outcome, by reference.
    pub fn result(&self) -> std::result::Result<&TaskValue<R>, &Error> {
        self.inner
            .outcome
            .get_or_init(|| {
                let future = self
                    .inner
                    .future
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                match future {
                    Some(future) => future.result(),
                    // Only `get_or_init` takes it, once.
                    None => Err(Error::Protocol("a shared future lost its task".into())),
                }
            })
            .as_ref()
    }

    /// The outcome if the task is done within `timeout`, `None` if not.
    pub fn result_timeout(
        &self,
        timeout: Duration,
    ) -> Option<std::result::Result<&TaskValue<R>, &Error>> {
        {
            let state = self.cell.lock();
            let state = self.cell.wait_done_timeout(state, timeout);
            if state.phase != super::cell::Phase::Done {
                return None;
            }
        }
        Some(self.result())
    }

    /// The outcome if the task is done, without waiting.
    pub fn try_result(&self) -> Option<std::result::Result<&TaskValue<R>, &Error>> {
        self.done().then(|| self.result())
    }

    /// Waits for the task and gives its error, if it failed (or was
    /// cancelled), as Python's `Future.exception()` does.
    pub fn exception(&self) -> Option<&Error> {
        self.result().err()
    }
}

impl<R: Storable> Clone for SharedTaskFuture<R> {
    fn clone(&self) -> Self {
        SharedTaskFuture {
            inner: self.inner.clone(),
            cell: self.cell.clone(),
        }
    }
}

impl<R: Storable> fmt::Debug for SharedTaskFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SharedTaskFuture({} {}, done: {})",
            self.cell.name,
            self.cell.id,
            self.done()
        )
    }
}
