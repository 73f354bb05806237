//! The caller's handle on a submitted task.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::cell::{Phase, TaskCell};
use crate::error::{Error, Result};
use crate::task::TaskValue;
use crate::Storable;

/// The result of a submitted task, to come.
///
/// Wait for it with [`result`](TaskFuture::result) (or
/// [`result_timeout`](TaskFuture::result_timeout), or `.await`). A task not
/// yet started can be [`cancel`](TaskFuture::cancel)led. Dropping the future
/// does not stop the task; an owned result nobody took is evicted.
pub struct TaskFuture<R> {
    shared: Arc<TaskCell>,
    _result: PhantomData<fn() -> R>,
}

impl<R: Storable> TaskFuture<R> {
    pub(crate) fn new(shared: Arc<TaskCell>) -> Self {
        TaskFuture {
            shared,
            _result: PhantomData,
        }
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The task's id: unique in this process, and in its errors and log
    /// events.
    pub fn id(&self) -> crate::task::TaskId {
        self.shared.id
    }

    /// The task's place among the tasks of the `map` that submitted it, if
    /// it is one of them.
    pub fn index(&self) -> Option<usize> {
        self.shared.index()
    }

    pub(crate) fn cell(&self) -> &Arc<TaskCell> {
        &self.shared
    }

    /// A hold on this task's result for a task that takes it as an input.
    pub(crate) fn depend(&self) -> super::Dependency {
        self.shared.depend()
    }

    /// Asks the task to stop while it runs; returns whether the request
    /// reached where it runs. Stopping is the task's own doing: it checks
    /// [`TaskContext::interrupted`](crate::task::TaskContext::interrupted)
    /// and returns early (with an error, say), and its future then holds
    /// what it returned. A task not started yet is cancelled with
    /// [`cancel`](TaskFuture::cancel) instead.
    ///
    /// Reaches tasks on a [`ThreadPool`](crate::executor::ThreadPool) at
    /// once, on a [`ProcessPool`](crate::executor::ProcessPool) as soon as
    /// the worker reads the request (even while the task runs; a job
    /// queued in the worker stops as soon as it starts), and on a cluster
    /// executor at the worker's next heartbeat. An executor that cannot
    /// reach a running task returns `false`.
    pub fn interrupt(&self) -> bool {
        self.shared.interrupt()
    }

    /// What the task's run did in stores (puts, reads, evictions, cache
    /// lookups: counts, bytes and time), as measured where it ran: `Some`
    /// once it returned a value, if its executor gathers them (see
    /// [`StoreExecutor::gather_worker_metrics`](crate::StoreExecutor::gather_worker_metrics)).
    pub fn worker_metrics(&self) -> Option<crate::store::Metrics> {
        self.shared.metrics().cloned()
    }

    /// Whether the task has finished (with a value, an error, or cancelled).
    pub fn done(&self) -> bool {
        self.shared.lock().phase == Phase::Done
    }

    /// Whether the task was cancelled.
    pub fn cancelled(&self) -> bool {
        self.shared.lock().cancelled
    }

    /// Whether the task is running now. For a
    /// [`ProcessPool`](crate::executor::ProcessPool), as for Python's
    /// process pools, that includes a task handed to a worker that holds it
    /// behind the one it runs (it can still be cancelled).
    pub fn running(&self) -> bool {
        let phase = self.shared.lock().phase;
        phase == Phase::Running
            || (phase == Phase::Pending
                && self
                    .shared
                    .dispatched
                    .load(std::sync::atomic::Ordering::Acquire))
    }

    /// Cancels the task if it has not started; returns whether it is
    /// cancelled. Its proxied inputs are evicted.
    pub fn cancel(&self) -> bool {
        self.shared.cancel()
    }

    /// Calls `callback` when the task finishes (at once if it has), with
    /// `Ok(())` or the task's error.
    pub fn add_done_callback(&self, callback: impl FnOnce(Result<(), &Error>) + Send + 'static) {
        self.shared.add_callback(Box::new(callback));
    }

    /// Waits for the result.
    pub fn result(self) -> Result<TaskValue<R>> {
        let started = self.shared.spin_until_done();
        let output = {
            let state = self.shared.lock();
            let mut state = self.shared.wait_done(state);
            state.output.take()
        };
        if let Some(started) = started {
            crate::runtime::spin::RESULT_GAPS.record(started.elapsed());
        }
        self.decode(output)
    }

    /// Waits at most `timeout`; [`Error::Timeout`] if the task is still
    /// running (the future stays usable).
    pub fn result_timeout(&mut self, timeout: Duration) -> Result<TaskValue<R>> {
        let output = {
            let state = self.shared.lock();
            let mut state = self.shared.wait_done_timeout(state, timeout);
            if state.phase != Phase::Done {
                return Err(Error::Timeout {
                    task: self.shared.name.to_string(),
                    id: Some(self.shared.id),
                    after: timeout,
                });
            }
            state.output.take()
        };
        self.decode(output)
    }

    fn decode(&self, output: Option<Result<crate::task::TaskOutput>>) -> Result<TaskValue<R>> {
        match output {
            Some(Ok(output)) => TaskValue::decode(output, &self.shared),
            Some(Err(e)) => Err(e),
            None => Err(Error::Protocol(format!(
                "the result of task `{}` was already taken",
                self.shared.name
            ))),
        }
    }
}

impl<R: Storable> Future for TaskFuture<R> {
    type Output = Result<TaskValue<R>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        crate::runtime::deferred::mark_async_thread();
        let output = {
            let mut state = self.shared.lock();
            if state.phase != Phase::Done {
                state.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            state.output.take()
        };
        Poll::Ready(self.decode(output))
    }
}

impl<R> Drop for TaskFuture<R> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.abandoned = true;
        if state.dependents_hold() {
            // Kept for the tasks that take it as an input; the last of
            // them discards it.
            return;
        }
        if let (Some(Ok(bytes)), Some(discard)) = (state.output.take(), state.discard) {
            drop(state);
            discard(bytes);
        }
    }
}

impl<R> fmt::Debug for TaskFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        write!(
            f,
            "TaskFuture({} {}, {:?})",
            self.shared.name, self.shared.id, state.phase
        )
    }
}
