//! Waiting for many tasks at once: [`wait`] and [`as_completed`] (with
//! [`as_completed_stream`] for async code), as in Python's
//! `concurrent.futures` (and Ray's `ray.wait`).
//!
//! Nothing polls: each waited-for task tells a shared [`Waiter`] when it is
//! done, and the waiting thread sleeps on it (or the async task is woken).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::TaskFuture;
use crate::error::{Error, Result};
use crate::Storable;

/// Tasks done, by index, for whoever waits for them.
#[derive(Default)]
pub(crate) struct Waiter {
    state: Mutex<WaiterState>,
    ready: Condvar,
}

#[derive(Default)]
struct WaiterState {
    done: VecDeque<usize>,
    waker: Option<Waker>,
}

impl Waiter {
    fn lock(&self) -> MutexGuard<'_, WaiterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Task `index` is done.
    pub(crate) fn notify(&self, index: usize) {
        let waker = {
            let mut state = self.lock();
            state.done.push_back(index);
            state.waker.take()
        };
        self.ready.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Watches every future; those done already are queued at once.
    fn watch<'a, F: Waitable + 'a>(
        self: &Arc<Self>,
        futures: impl IntoIterator<Item = &'a F>,
    ) -> usize {
        let mut count = 0;
        for (index, future) in futures.into_iter().enumerate() {
            if future.cell_ref().0.watch(self, index) {
                self.lock().done.push_back(index);
            }
            count += 1;
        }
        count
    }

    /// The next task done, waiting until `deadline` (forever without one).
    fn next(&self, deadline: Option<Instant>) -> Option<usize> {
        let mut state = self.lock();
        loop {
            if let Some(index) = state.done.pop_front() {
                return Some(index);
            }
            state = match deadline {
                None => self.ready.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    self.ready
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// A handle on a task that [`wait_for`] can wait for: a [`TaskFuture`] or a
/// [`SharedTaskFuture`](super::SharedTaskFuture) of any result type, or a
/// reference to one. Futures of different result types wait together as
/// `&dyn Waitable`s:
///
/// ```
/// use proxystore::connectors::LocalConnector;
/// use proxystore::executor::{wait_for, ReturnWhen, ThreadPool, Waitable};
/// use proxystore::{proxied, Store, StoreExecutor};
///
/// #[proxied]
/// fn count(text: String) -> usize {
///     text.len()
/// }
///
/// #[proxied]
/// fn shout(text: String) -> String {
///     text.to_uppercase()
/// }
///
/// fn main() -> proxystore::Result<()> {
///     let store = Store::new("wait-mixed-doc", LocalConnector::new())?;
///     let executor = StoreExecutor::new(ThreadPool::new(2)?, store);
///     let n = executor.submit(count::task("abc".to_string()))?;
///     let s = executor.submit(shout::task("abc".to_string()))?;
///     let both: [&dyn Waitable; 2] = [&n, &s];
///     assert_eq!(wait_for(&both, ReturnWhen::AllCompleted, None).done, [0, 1]);
///     assert_eq!((*n.result()?, s.result()?.as_str()), (3, "ABC"));
///     Ok(())
/// }
/// ```
pub trait Waitable: sealed::Cell {}

mod sealed {
    /// The task behind a handle (opaque outside the crate).
    pub struct CellRef<'a>(pub(crate) &'a std::sync::Arc<crate::task::handle::TaskCell>);

    /// What makes a [`Waitable`](super::Waitable): the task behind it.
    pub trait Cell {
        fn cell_ref(&self) -> CellRef<'_>;
    }
}

impl<R: Storable> sealed::Cell for TaskFuture<R> {
    fn cell_ref(&self) -> sealed::CellRef<'_> {
        sealed::CellRef(TaskFuture::cell(self))
    }
}
impl<R: Storable> Waitable for TaskFuture<R> {}

impl<R: Storable> sealed::Cell for super::SharedTaskFuture<R> {
    fn cell_ref(&self) -> sealed::CellRef<'_> {
        sealed::CellRef(super::SharedTaskFuture::cell(self))
    }
}
impl<R: Storable> Waitable for super::SharedTaskFuture<R> {}

impl<T: Waitable + ?Sized> sealed::Cell for &T {
    fn cell_ref(&self) -> sealed::CellRef<'_> {
        (**self).cell_ref()
    }
}
impl<T: Waitable + ?Sized> Waitable for &T {}

/// When [`wait`] returns, as in `concurrent.futures`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as any task is done (finished, failed or cancelled).
    FirstCompleted,
    /// As soon as any task fails (with an error; a cancelled task does not
    /// count); if none does, when all are done.
    FirstException,
    /// When every task is done.
    AllCompleted,
}

/// What [`wait`] saw: the indices of the tasks done and of those not done,
/// each in the order they were given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Waited {
    /// Tasks done (finished, failed or cancelled).
    pub done: Vec<usize>,
    /// Tasks still pending or running.
    pub not_done: Vec<usize>,
}

/// Waits for `futures` as `return_when` says, at most `timeout` (forever
/// with `None`), without polling; returns which are done and which are not,
/// by index. The futures stay usable: take the results of the done ones
/// with [`TaskFuture::result`], which then returns at once.
///
/// ```
/// use std::time::Duration;
/// use proxystore::connectors::LocalConnector;
/// use proxystore::executor::{wait, ReturnWhen, ThreadPool};
/// use proxystore::{proxied, Store, StoreExecutor};
///
/// #[proxied]
/// fn nap(ms: u64) -> u64 {
///     std::thread::sleep(Duration::from_millis(ms));
///     ms
/// }
///
/// fn main() -> proxystore::Result<()> {
///     let store = Store::new("wait-doc", LocalConnector::new())?;
///     let executor = StoreExecutor::new(ThreadPool::new(2)?, store);
///     let futures = vec![executor.submit(nap::task(2000))?, executor.submit(nap::task(1))?];
///     let first = wait(&futures, ReturnWhen::FirstCompleted, Some(Duration::from_secs(10)));
///     assert_eq!(first.done, [1]);
///     let all = wait(&futures, ReturnWhen::AllCompleted, None);
///     assert_eq!(all.done, [0, 1]);
///     Ok(())
/// }
/// ```
pub fn wait<R: Storable>(
    futures: &[TaskFuture<R>],
    return_when: ReturnWhen,
    timeout: Option<Duration>,
) -> Waited {
    wait_for(futures, return_when, timeout)
}

/// [`wait`] for handles of any kind and result type: futures of different
/// types together as `&dyn Waitable`s (see [`Waitable`]), shared futures.
pub fn wait_for<F: Waitable>(
    futures: &[F],
    return_when: ReturnWhen,
    timeout: Option<Duration>,
) -> Waited {
    let deadline = timeout.map(|t| Instant::now() + t);
    let waiter = Arc::new(Waiter::default());
    let total = waiter.watch(futures);
    let mut done = vec![false; total];
    let mut done_count = 0;
    let mut failed = false;
    loop {
        let satisfied = match return_when {
            ReturnWhen::FirstCompleted => done_count > 0 || total == 0,
            ReturnWhen::FirstException => failed || done_count == total,
            ReturnWhen::AllCompleted => done_count == total,
        };
        if satisfied {
            break;
        }
        let Some(index) = waiter.next(deadline) else {
            break; // timed out
        };
        if !std::mem::replace(&mut done[index], true) {
            done_count += 1;
            failed |= futures[index].cell_ref().0.lock().failed;
        }
    }
    // Tasks done meanwhile count as done too, as in `concurrent.futures`.
    let (done, not_done) = (0..total).partition(|&i| done[i] || futures[i].cell_ref().0.is_done());
    Waited { done, not_done }
}

/// Yields `futures` as their tasks finish (fail, or are cancelled), as
/// Python's `as_completed` does, as an [`Iterator`]. Nothing polls; a
/// yielded future's [`result`](TaskFuture::result) returns at once. For
/// async code, [`as_completed_stream`] (or
/// [`into_stream`](AsCompleted::into_stream)) gives the same as a
/// [`Stream`](futures_core::Stream).
///
/// ```
/// use proxystore::connectors::LocalConnector;
/// use proxystore::executor::{as_completed, ThreadPool};
/// use proxystore::{proxied, Store, StoreExecutor};
///
/// #[proxied]
/// fn square(x: i64) -> i64 {
///     x * x
/// }
///
/// fn main() -> proxystore::Result<()> {
///     let store = Store::new("as-completed-doc", LocalConnector::new())?;
///     let executor = StoreExecutor::new(ThreadPool::new(2)?, store);
///     let futures = (0..4).map(|x| executor.submit(square::task(x))).collect::<Result<Vec<_>, _>>()?;
///     let mut total = 0;
///     for future in as_completed(futures) {
///         total += *future.result()?;
///     }
///     assert_eq!(total, 14);
///     Ok(())
/// }
/// ```
pub fn as_completed<R: Storable>(
    futures: impl IntoIterator<Item = TaskFuture<R>>,
) -> AsCompleted<R> {
    let futures: Vec<Option<TaskFuture<R>>> = futures.into_iter().map(Some).collect();
    let waiter = Arc::new(Waiter::default());
    waiter.watch(futures.iter().flatten());
    AsCompleted {
        remaining: futures.len(),
        futures,
        waiter,
    }
}

/// Yields `futures` as their tasks finish, as a
/// [`Stream`](futures_core::Stream) for async code: [`as_completed`]'s
/// futures, woken rather than waited for.
///
/// The stream is a type of its own, [`AsCompletedStream`], which is not an
/// [`Iterator`]: with a `StreamExt` trait in scope (`futures`,
/// `tokio-stream`), `stream.next().await` has only one `next` to call.
///
/// ```
/// use std::pin::Pin;
/// use std::task::{Context, Poll};
///
/// use futures_core::Stream;
/// use proxystore::connectors::LocalConnector;
/// use proxystore::executor::{as_completed_stream, ThreadPool};
/// use proxystore::{proxied, Store, StoreExecutor};
///
/// #[proxied]
/// fn square(x: i64) -> i64 {
///     x * x
/// }
///
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     struct Wake(std::thread::Thread);
/// #     impl std::task::Wake for Wake {
/// #         fn wake(self: std::sync::Arc<Self>) { self.0.unpark() }
/// #     }
/// #     let waker = std::sync::Arc::new(Wake(std::thread::current())).into();
/// #     let mut cx = Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop {
/// #         match f.as_mut().poll(&mut cx) {
/// #             Poll::Ready(v) => return v,
/// #             Poll::Pending => std::thread::park(),
/// #         }
/// #     }
/// # }
/// /// What `futures::StreamExt::next` does.
/// async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
///     std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
/// }
///
/// fn main() -> proxystore::Result<()> {
///     let store = Store::new("as-completed-stream-doc", LocalConnector::new())?;
///     let executor = StoreExecutor::new(ThreadPool::new(2)?, store);
///     let futures = (0..4).map(|x| executor.submit(square::task(x))).collect::<Result<Vec<_>, _>>()?;
///     let mut stream = as_completed_stream(futures);
///     let total = block_on(async {
///         let mut total = 0;
///         while let Some(future) = next(&mut stream).await {
///             total += *future.result()?;
///         }
///         Ok::<_, proxystore::Error>(total)
///     })?;
///     assert_eq!(total, 14);
///     Ok(())
/// }
/// ```
pub fn as_completed_stream<R: Storable>(
    futures: impl IntoIterator<Item = TaskFuture<R>>,
) -> AsCompletedStream<R> {
    as_completed(futures).into_stream()
}

/// Futures as their tasks finish, an [`Iterator`]: see [`as_completed`].
pub struct AsCompleted<R> {
    futures: Vec<Option<TaskFuture<R>>>,
    waiter: Arc<Waiter>,
    remaining: usize,
}

impl<R: Storable> AsCompleted<R> {
    /// How many futures are still to come.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// The futures still to come, as a [`Stream`](futures_core::Stream)
    /// (see [`as_completed_stream`]).
    pub fn into_stream(self) -> AsCompletedStream<R> {
        AsCompletedStream { inner: self }
    }

    /// The next future done, waiting at most `timeout`: `Ok(None)` once
    /// all have come, [`Error::Timeout`] (naming a task still running) if
    /// none finished in time. The rest still come later.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<TaskFuture<R>>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        match self.waiter.next(Some(Instant::now() + timeout)) {
            Some(index) => Ok(self.take(index)),
            None => Err(Error::Timeout {
                task: self
                    .futures
                    .iter()
                    .flatten()
                    .next()
                    .map_or_else(String::new, |f| f.name().to_string()),
                id: None,
                after: timeout,
            }),
        }
    }

    fn take(&mut self, index: usize) -> Option<TaskFuture<R>> {
        let future = self.futures.get_mut(index)?.take();
        if future.is_some() {
            self.remaining -= 1;
        }
        future
    }
}

impl<R: Storable> AsCompleted<R> {
    /// The next future done, with its index among the futures given.
    pub fn next_with_index(&mut self) -> Option<(usize, TaskFuture<R>)> {
        while self.remaining > 0 {
            let index = self.waiter.next(None)?;
            if let Some(future) = self.take(index) {
                return Some((index, future));
            }
        }
        None
    }
}

impl<R: Storable> Iterator for AsCompleted<R> {
    type Item = TaskFuture<R>;

    fn next(&mut self) -> Option<TaskFuture<R>> {
        self.next_with_index().map(|(_, future)| future)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

/// Futures as their tasks finish, a [`Stream`](futures_core::Stream) and
/// not an [`Iterator`]: see [`as_completed_stream`].
pub struct AsCompletedStream<R> {
    inner: AsCompleted<R>,
}

impl<R: Storable> AsCompletedStream<R> {
    /// How many futures are still to come.
    pub fn remaining(&self) -> usize {
        self.inner.remaining
    }
}

impl<R: Storable> From<AsCompleted<R>> for AsCompletedStream<R> {
    fn from(iter: AsCompleted<R>) -> Self {
        iter.into_stream()
    }
}

impl<R: Storable> futures_core::Stream for AsCompletedStream<R> {
    type Item = TaskFuture<R>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TaskFuture<R>>> {
        crate::runtime::deferred::mark_async_thread();
        let this = &mut self.get_mut().inner;
        loop {
            if this.remaining == 0 {
                return Poll::Ready(None);
            }
            let index = {
                let mut state = this.waiter.lock();
                match state.done.pop_front() {
                    Some(index) => index,
                    None => {
                        state.waker = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                }
            };
            if let Some(future) = this.take(index) {
                return Poll::Ready(Some(future));
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.inner.remaining, Some(self.inner.remaining))
    }
}

impl<R> std::fmt::Debug for AsCompletedStream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompletedStream")
            .field("remaining", &self.inner.remaining)
            .finish_non_exhaustive()
    }
}

impl<R> std::fmt::Debug for AsCompleted<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}
