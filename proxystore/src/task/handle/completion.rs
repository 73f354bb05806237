//! The executor's side of a task ([`Completion`]) and a task's hold on
//! another's result ([`Dependency`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::cell::{Phase, TaskCell};
use crate::error::Error;
use crate::task::{TaskFailure, TaskOutput};

/// A task's hold on another task's result, which it takes as an input (see
/// [`TaskCell::depend`]). Dropped when the dependent task ends: a result whose
/// future was dropped (or moved into the dependent task) is then discarded
/// (an owned result evicted).
pub(crate) struct Dependency {
    pub(crate) shared: Arc<TaskCell>,
}

impl Drop for Dependency {
    fn drop(&mut self) {
        self.shared.release_dependent();
    }
}

/// The executor's side of a submitted task: mark it started, then complete
/// it exactly once.
///
/// Dropping a `Completion` without completing it fails the task (an
/// executor that loses a task can never leave its caller waiting forever).
pub struct Completion {
    shared: Arc<TaskCell>,
    /// The attempt this completion is for (see [`super::retry`]).
    attempt: u32,
    completed: bool,
    started: std::cell::Cell<bool>,
}

impl Completion {
    pub(crate) fn new(shared: Arc<TaskCell>) -> Self {
        Completion {
            attempt: shared.attempt(),
            shared,
            completed: false,
            started: std::cell::Cell::new(false),
        }
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The task's id (see [`TaskId`](crate::task::TaskId)), for an
    /// executor's own log events about it.
    pub fn id(&self) -> crate::task::TaskId {
        self.shared.id
    }

    /// Marks the task as running. Returns `false` if it was cancelled: the
    /// executor must then skip it. Calling it again (say, when a job moves to
    /// another worker) returns `true` again.
    pub fn start(&self) -> bool {
        if self.started.get() {
            return true;
        }
        let mut state = self.shared.lock();
        if state.phase == Phase::Pending && state.attempt == self.attempt {
            state.phase = Phase::Running;
            let counted = std::mem::replace(&mut state.counted_running, true);
            drop(state);
            self.started.set(true);
            if !counted {
                self.shared.count_started();
            }
            true
        } else {
            false
        }
    }

    /// Completes the task with the result of [`Job::run`](crate::Job::run)
    /// (or of [`run_job_bytes`](crate::task::run_job_bytes) elsewhere).
    pub fn complete(self, result: Result<Vec<u8>, TaskFailure>) {
        self.complete_output(result.map(TaskOutput::from_bytes));
    }

    /// Completes the task with a result that may keep a large value whole.
    pub(crate) fn complete_output(mut self, mut result: Result<TaskOutput, TaskFailure>) {
        self.completed = true;
        if let Some(metrics) = result.as_mut().ok().and_then(TaskOutput::take_metrics) {
            self.shared.set_metrics(metrics);
        }
        let output = result.map_err(|f| Error::TaskFailed {
            task: self.shared.name.to_string(),
            id: Some(self.shared.id),
            arguments: self.shared.arguments(),
            message: f.message().to_string(),
        });
        self.shared.end_attempt(self.attempt, output);
    }

    /// Fails the task with an executor-side error (a worker died, the
    /// executor shut down, ...).
    pub fn fail(mut self, error: Error) {
        self.completed = true;
        self.shared.end_attempt(self.attempt, Err(error));
    }

    /// Marks the job as handed to (or taken back from) a worker that can
    /// still give it back: the task then counts as running for
    /// [`TaskFuture::running`](crate::executor::TaskFuture::running), as in
    /// Python's process pools, yet can be cancelled through
    /// [`on_cancel`](Completion::on_cancel).
    pub(crate) fn set_dispatched(&self, dispatched: bool) {
        if self.shared.attempt() != self.attempt {
            return;
        }
        self.shared.dispatched.store(dispatched, Ordering::Release);
        self.shared.count_dispatched(dispatched);
    }

    /// For executors that can reach a task while it runs: `interrupt` asks
    /// it to stop (the task sees it through
    /// [`TaskContext::interrupted`](crate::task::TaskContext::interrupted))
    /// and returns whether the request reached where it runs. Called by
    /// [`TaskFuture::interrupt`](crate::executor::TaskFuture::interrupt).
    pub fn on_interrupt(&self, interrupt: impl Fn() -> bool + Send + Sync + 'static) {
        self.shared.set_interrupter(Arc::new(interrupt));
    }

    /// Runs `f` (the task's run, on this thread) so that
    /// [`TaskFuture::interrupt`](crate::executor::TaskFuture::interrupt)
    /// reaches it: for executors that run jobs in this process.
    pub(crate) fn run_here<T>(&self, f: impl FnOnce() -> T) -> T {
        self.shared.run_here(f)
    }

    /// Cancels the task (it will not run).
    pub fn cancel(mut self) {
        self.completed = true;
        if self.shared.attempt() == self.attempt {
            self.shared.finish_cancelled();
        }
    }

    /// For executors that hand a job on (to a worker's queue, say) before
    /// it starts, and can still take it back: while the task has not been
    /// [`start`](Completion::start)ed, [`TaskFuture::cancel`](crate::executor::TaskFuture::cancel)
    /// calls `revoke` instead of cancelling on its own. `revoke` must make
    /// sure the job will not run and then [`cancel`](Completion::cancel)
    /// this completion (which makes `TaskFuture::cancel` return `true`), or
    /// leave it be if the job has started or cannot be reached in time.
    pub fn on_cancel(&self, revoke: impl Fn() + Send + Sync + 'static) {
        self.shared.set_revoker(Arc::new(revoke));
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.completed {
            let error = Error::ShutDown {
                task: self.shared.name.to_string(),
                id: Some(self.shared.id),
            };
            self.shared.end_attempt(self.attempt, Err(error));
        }
    }
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Completion({} {})", self.shared.name, self.shared.id)
    }
}
