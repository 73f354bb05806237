//! The state a task's future and its executor share.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;

use crate::error::Error;
use crate::task::{TaskFailure, TaskOutput};

type Callback = Box<dyn FnOnce(Result<(), &Error>) + Send>;
type Cleanup = Box<dyn FnOnce(&Result<TaskOutput, Error>) + Send>;
type Revoker = Arc<dyn Fn() + Send + Sync>;
/// Work a finishing task leaves for after its lock is released: a
/// dependent's submission (or failure), a result let go.
pub(crate) type Deferred = Box<dyn FnOnce() + Send>;
/// Sees a task's output the moment it is set, before anyone can take it;
/// returns what to do once the task's lock is released.
pub(crate) type OutputHook = Box<dyn FnOnce(&Result<TaskOutput, Error>) -> Option<Deferred> + Send>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Pending,
    Running,
    Done,
}

pub(crate) struct State {
    pub(crate) phase: Phase,
    pub(crate) cancelled: bool,
    pub(crate) output: Option<Result<TaskOutput, Error>>,
    pub(crate) waker: Option<Waker>,
    callbacks: Vec<Callback>,
    cleanup: Option<Cleanup>,
    /// Called with an output nobody will take (the future was dropped).
    pub(crate) discard: Option<fn(TaskOutput)>,
    pub(crate) abandoned: bool,
    finishing: bool,
    /// Set by executors that hand jobs on before they start (see
    /// [`Completion::on_cancel`]).
    revoker: Option<Revoker>,
    /// Tasks that take this one's result as an input (see [`Dependency`]):
    /// while any holds it, an abandoned result is kept.
    dependents: usize,
    /// Run with the output as it is set (see [`Shared::on_output`]).
    hooks: Vec<OutputHook>,
    /// Objects of this task's result whose owners were dropped while
    /// dependents still held it: the last dependent evicts them.
    deferred: Vec<crate::proxy::Factory>,
    /// Told when the task is done (see [`Shared::watch`]).
    watchers: Vec<(std::sync::Weak<super::wait::Waiter>, usize)>,
    /// Done with an error (not cancelled).
    pub(crate) failed: bool,
}

impl State {
    /// Whether tasks that take this result as an input still hold it.
    pub(crate) fn dependents_hold(&self) -> bool {
        self.dependents > 0
    }
}

pub(crate) struct Shared {
    pub(crate) name: Box<str>,
    state: Mutex<State>,
    done: Condvar,
    /// Set once the task is done, for waiters polling without the lock.
    finished: std::sync::atomic::AtomicBool,
    /// Handed to a worker that may hold it behind the task it runs (see
    /// [`Completion::set_dispatched`]).
    pub(crate) dispatched: std::sync::atomic::AtomicBool,
    /// Tasks of the same executor not done yet, this one included.
    outstanding: Arc<AtomicUsize>,
}

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
struct Finishing;

impl Finishing {
    fn enter() -> Self {
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

/// Waiting callers poll only while the executor has at most this many
/// tasks outstanding: one waiting for a single result soon to come. With
/// more, results arrive back to back and polling would only take the cores
/// the pool needs.
const POLL_WHILE_OUTSTANDING: usize = 2;

impl Shared {
    pub(crate) fn new(
        name: &str,
        cleanup: Option<Cleanup>,
        discard: Option<fn(TaskOutput)>,
        outstanding: Arc<AtomicUsize>,
    ) -> Arc<Self> {
        outstanding.fetch_add(1, Ordering::Relaxed);
        crate::spin::TASKS_WAITED_FOR.fetch_add(1, Ordering::Relaxed);
        Arc::new(Shared {
            name: name.into(),
            state: Mutex::new(State {
                phase: Phase::Pending,
                cancelled: false,
                output: None,
                waker: None,
                callbacks: Vec::new(),
                cleanup,
                discard,
                abandoned: false,
                finishing: false,
                revoker: None,
                dependents: 0,
                hooks: Vec::new(),
                watchers: Vec::new(),
                deferred: Vec::new(),
                failed: false,
            }),
            done: Condvar::new(),
            finished: std::sync::atomic::AtomicBool::new(false),
            dispatched: std::sync::atomic::AtomicBool::new(false),
            outstanding,
        })
    }

    /// Whether the task is done (with a value, an error, or cancelled).
    pub(crate) fn is_done(&self) -> bool {
        self.finished.load(Ordering::Acquire) || self.lock().phase == Phase::Done
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Polls for completion for a short while (see [`crate::spin`]) so that a
    /// result arriving soon is taken without sleeping. Returns when the wait
    /// started, if it is one to record in
    /// [`RESULT_GAPS`](crate::spin::RESULT_GAPS) (a single wait, not one of
    /// a burst's): the caller records the whole wait there.
    pub(crate) fn spin_until_done(&self) -> Option<std::time::Instant> {
        // No clock read for a result already there, or one of many being
        // waited for: bursts take their results back to back.
        if self.finished.load(Ordering::Acquire) {
            crate::spin::RESULT_GAPS.record(std::time::Duration::ZERO);
            return None;
        }
        if self.outstanding.load(Ordering::Relaxed) > POLL_WHILE_OUTSTANDING {
            return None;
        }
        let started = std::time::Instant::now();
        let window = crate::spin::RESULT_GAPS.window(crate::spin::spin_window());
        while !self.finished.load(Ordering::Acquire) && started.elapsed() < window {
            std::thread::yield_now();
        }
        Some(started)
    }

    pub(crate) fn wait_done<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.done
            .wait_while(guard, |s| s.phase != Phase::Done)
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wait_done_timeout<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        timeout: std::time::Duration,
    ) -> MutexGuard<'a, State> {
        self.done
            .wait_timeout_while(guard, timeout, |s| s.phase != Phase::Done)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    /// Finishes the task once; later calls are ignored.
    ///
    /// Order matters: the cleanup (evicting the task's proxied inputs) runs
    /// before the task is seen as done, and callbacks run after.
    pub(crate) fn finish(&self, output: Result<TaskOutput, Error>, cancelled: bool) -> bool {
        let cleanup = {
            let mut state = self.lock();
            if state.phase == Phase::Done || state.finishing {
                return false;
            }
            state.finishing = true;
            state.cleanup.take()
        };
        if let Some(cleanup) = cleanup {
            cleanup(&output);
        }
        let status = output.as_ref().map(|_| ()).map_err(|e| e.to_string());
        let (callbacks, waker, deferred, watchers) = {
            let mut state = self.lock();
            state.phase = Phase::Done;
            state.cancelled = cancelled;
            state.failed = output.is_err() && !cancelled;
            // Dependents see the output before anyone can take it.
            let deferred: Vec<_> = std::mem::take(&mut state.hooks)
                .into_iter()
                .filter_map(|hook| hook(&output))
                .collect();
            if state.abandoned && state.dependents == 0 {
                if let (Ok(bytes), Some(discard)) = (output, state.discard) {
                    discard(bytes);
                }
            } else {
                state.output = Some(output);
            }
            (
                std::mem::take(&mut state.callbacks),
                state.waker.take(),
                deferred,
                std::mem::take(&mut state.watchers),
            )
        };
        let _finishing = Finishing::enter();
        run_deferred(deferred);
        for (waiter, index) in watchers {
            if let Some(waiter) = waiter.upgrade() {
                waiter.notify(index);
            }
        }
        // Done: no longer counted as outstanding (this runs once per task:
        // `finishing` was set above under the lock).
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        crate::spin::TASKS_WAITED_FOR.fetch_sub(1, Ordering::Relaxed);
        self.finished
            .store(true, std::sync::atomic::Ordering::Release);
        self.done.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
        self.run_callbacks(callbacks, status);
        true
    }

    fn run_callbacks(&self, callbacks: Vec<Callback>, status: Result<(), String>) {
        if callbacks.is_empty() {
            return;
        }
        let error = status.err().map(|message| Error::TaskFailed {
            task: self.name.to_string(),
            message,
        });
        for callback in callbacks {
            let status = match &error {
                None => Ok(()),
                Some(e) => Err(e),
            };
            // Callbacks run on the executor's threads (a process pool's
            // reader of a worker's answers, say): one that panics must not
            // take that thread, and every task behind it, down.
            let call = std::panic::AssertUnwindSafe(|| callback(status));
            if std::panic::catch_unwind(call).is_err() {
                tracing::error!(task = %self.name, "a done callback panicked");
            }
        }
    }

    pub(crate) fn add_callback(&self, callback: Callback) {
        let mut state = self.lock();
        if state.phase != Phase::Done {
            state.callbacks.push(callback);
            return;
        }
        let status = match &state.output {
            Some(Err(e)) => Err(e.to_string()),
            _ => Ok(()),
        };
        drop(state);
        self.run_callbacks(vec![callback], status);
    }

    /// Calls `hook` with the task's output as it is set (at once if it is
    /// set already; with an error if the output was taken already). What
    /// the hook returns runs after the task's lock is released.
    pub(crate) fn on_output(&self, hook: OutputHook) {
        let deferred = {
            let mut state = self.lock();
            if state.phase != Phase::Done {
                state.hooks.push(hook);
                return;
            }
            match &state.output {
                Some(output) => hook(output),
                None => hook(&Err(Error::Protocol(format!(
                    "the result of task `{}` was taken before a task that depends on it was \
                     submitted; pass the result itself (a `TaskValue`) instead of its future",
                    self.name
                )))),
            }
        };
        run_deferred(deferred);
    }

    /// Tells `waiter` (as entry `index`) when the task is done; returns
    /// `true` instead if it is done already. Waiters that are gone are
    /// forgotten here, so repeated waits on a long task do not pile up.
    pub(crate) fn watch(&self, waiter: &Arc<super::wait::Waiter>, index: usize) -> bool {
        let mut state = self.lock();
        if state.phase == Phase::Done {
            return true;
        }
        state.watchers.retain(|(w, _)| w.strong_count() > 0);
        state.watchers.push((Arc::downgrade(waiter), index));
        false
    }

    /// Evicting the result's object waits while dependents hold it: then
    /// the last of them evicts it, and `None` is returned; otherwise the
    /// factory is handed back, to evict now.
    pub(crate) fn defer_eviction(
        &self,
        factory: crate::proxy::Factory,
    ) -> Option<crate::proxy::Factory> {
        let mut state = self.lock();
        if state.dependents > 0 {
            state.deferred.push(factory);
            return None;
        }
        Some(factory)
    }

    /// Registers a task that takes this one's result as an input: the
    /// result is kept, even if its future is dropped, until the returned
    /// guard is.
    pub(crate) fn depend(self: &Arc<Self>) -> Dependency {
        self.lock().dependents += 1;
        Dependency {
            shared: self.clone(),
        }
    }

    /// Cancels the task if it has not started.
    pub(crate) fn cancel(&self) -> bool {
        let revoker = {
            let mut state = self.lock();
            match state.phase {
                Phase::Pending => match &state.revoker {
                    Some(revoker) => revoker.clone(),
                    None => {
                        state.phase = Phase::Running;
                        drop(state);
                        return self.finish_cancelled();
                    }
                },
                Phase::Running => return false,
                Phase::Done => return state.cancelled,
            }
        };
        // The executor decides: it cancels the completion itself if the
        // job will not run.
        revoker();
        let state = self.lock();
        state.phase == Phase::Done && state.cancelled
    }

    fn finish_cancelled(&self) -> bool {
        let error = Error::Cancelled {
            task: self.name.to_string(),
        };
        self.finish(Err(error), true)
    }
}

/// A task's hold on another task's result, which it takes as an input (see
/// [`Shared::depend`]). Dropped when the dependent task ends: a result whose
/// future was dropped (or moved into the dependent task) is then discarded
/// (an owned result evicted).
pub(crate) struct Dependency {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for Dependency {
    fn drop(&mut self) {
        let (discard, deferred) = {
            let mut state = self.shared.lock();
            state.dependents -= 1;
            if state.dependents > 0 {
                return;
            }
            let discard = if state.abandoned {
                state.output.take().zip(state.discard)
            } else {
                None
            };
            (discard, std::mem::take(&mut state.deferred))
        };
        if let Some((Ok(output), discard)) = discard {
            discard(output);
        }
        for factory in deferred {
            crate::owned::evict(&factory);
        }
    }
}

/// The executor's side of a submitted task: mark it started, then complete
/// it exactly once.
///
/// Dropping a `Completion` without completing it fails the task (an
/// executor that loses a task can never leave its caller waiting forever).
pub struct Completion {
    shared: Arc<Shared>,
    completed: bool,
    started: std::cell::Cell<bool>,
}

impl Completion {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Completion {
            shared,
            completed: false,
            started: std::cell::Cell::new(false),
        }
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Marks the task as running. Returns `false` if it was cancelled: the
    /// executor must then skip it. Calling it again (say, when a job moves to
    /// another worker) returns `true` again.
    pub fn start(&self) -> bool {
        if self.started.get() {
            return true;
        }
        let mut state = self.shared.lock();
        if state.phase == Phase::Pending {
            state.phase = Phase::Running;
            self.started.set(true);
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
    pub(crate) fn complete_output(mut self, result: Result<TaskOutput, TaskFailure>) {
        self.completed = true;
        let output = result.map_err(|f| Error::TaskFailed {
            task: self.shared.name.to_string(),
            message: f.message().to_string(),
        });
        self.shared.finish(output, false);
    }

    /// Fails the task with an executor-side error (a worker died, the
    /// executor shut down, ...).
    pub fn fail(mut self, error: Error) {
        self.completed = true;
        self.shared.finish(Err(error), false);
    }

    /// Marks the job as handed to (or taken back from) a worker that can
    /// still give it back: the task then counts as running for
    /// [`TaskFuture::running`](crate::executor::TaskFuture::running), as in
    /// Python's process pools, yet can be cancelled through
    /// [`on_cancel`](Completion::on_cancel).
    pub(crate) fn set_dispatched(&self, dispatched: bool) {
        self.shared.dispatched.store(dispatched, Ordering::Release);
    }

    /// Cancels the task (it will not run).
    pub fn cancel(mut self) {
        self.completed = true;
        self.shared.finish_cancelled();
    }

    /// For executors that hand a job on (to a worker's queue, say) before
    /// it starts, and can still take it back: while the task has not been
    /// [`start`](Completion::start)ed, [`TaskFuture::cancel`](crate::executor::TaskFuture::cancel)
    /// calls `revoke` instead of cancelling on its own. `revoke` must make
    /// sure the job will not run and then [`cancel`](Completion::cancel)
    /// this completion (which makes `TaskFuture::cancel` return `true`), or
    /// leave it be if the job has started or cannot be reached in time.
    pub fn on_cancel(&self, revoke: impl Fn() + Send + Sync + 'static) {
        self.shared.lock().revoker = Some(Arc::new(revoke));
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.completed {
            let error = Error::ShutDown {
                task: self.shared.name.to_string(),
            };
            self.shared.finish(Err(error), false);
        }
    }
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Completion({})", self.shared.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn finished_tasks_stop_counting_as_outstanding() {
        let outstanding = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..3)
            .map(|_| Shared::new("t", None, None, outstanding.clone()))
            .collect();
        assert_eq!(outstanding.load(Ordering::Relaxed), 3);
        let failed = || Err(Error::Cancelled { task: "t".into() });
        assert!(tasks[0].finish(failed(), false));
        assert_eq!(outstanding.load(Ordering::Relaxed), 2);
        // A second finish is ignored and counts nothing.
        assert!(!tasks[0].finish(failed(), false));
        assert_eq!(outstanding.load(Ordering::Relaxed), 2);
        assert!(tasks[1].finish_cancelled());
        assert!(tasks[2].finish(failed(), false));
        assert_eq!(outstanding.load(Ordering::Relaxed), 0);
    }
}
