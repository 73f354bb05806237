//! A task's state cell: what its future, its executor and the tasks that
//! depend on it share (see the [module docs](super) for its states).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;

use super::completion::Dependency;
use super::deferred::{run_deferred, Deferred, Finishing};
use super::progress::{Counters, Ending, TaskId};
use super::retry::Attempts;
use crate::error::Error;
use crate::task::TaskOutput;

type Callback = Box<dyn FnOnce(Result<(), &Error>) + Send>;
type Cleanup = Box<dyn FnOnce(&Result<TaskOutput, Error>) + Send>;
pub(super) type Revoker = Arc<dyn Fn() + Send + Sync>;
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
    /// Run with the output as it is set (see [`TaskCell::on_output`]).
    hooks: Vec<OutputHook>,
    /// Objects of this task's result whose owners were dropped while
    /// dependents still held it: the last dependent evicts them.
    deferred: Vec<crate::proxy::Factory>,
    /// Told when the task is done (see [`TaskCell::watch`]).
    watchers: Vec<(std::sync::Weak<super::wait::Waiter>, usize)>,
    /// Done with an error (not cancelled).
    pub(crate) failed: bool,
    /// Counted as running in the executor's progress.
    pub(crate) counted_running: bool,
    /// The attempt under way (1 for the first; see [`super::retry`]).
    pub(crate) attempt: u32,
}

impl State {
    /// Whether tasks that take this result as an input still hold it.
    pub(crate) fn dependents_hold(&self) -> bool {
        self.dependents > 0
    }
}

pub(crate) struct TaskCell {
    pub(crate) name: Box<str>,
    pub(crate) id: TaskId,
    /// The task's place in a `map`, if it is one of one (`usize::MAX`: not).
    index: AtomicUsize,
    state: Mutex<State>,
    done: Condvar,
    /// Set once the task is done, for waiters polling without the lock.
    finished: std::sync::atomic::AtomicBool,
    /// Handed to a worker that may hold it behind the task it runs (see
    /// [`Completion::set_dispatched`]).
    pub(crate) dispatched: std::sync::atomic::AtomicBool,
    /// The counts of the task's executor.
    counters: Arc<Counters>,
    /// What runs the task again, if it has a retry policy or a timeout.
    attempts: std::sync::OnceLock<Attempts>,
    /// What its arguments were (see `task::summary`).
    arguments: std::sync::OnceLock<Vec<crate::task::ArgSummary>>,
    /// What its run did in the store, as its worker reported it.
    metrics: std::sync::OnceLock<crate::store::Metrics>,
    /// Asks the running task to stop (see `Completion::on_interrupt`).
    interrupter: Mutex<Option<Interrupter>>,
    /// Runs on a thread of this process (`Completion::run_here`), which
    /// reads `interrupt_asked` itself.
    runs_here: std::sync::atomic::AtomicBool,
    interrupt_asked: std::sync::atomic::AtomicBool,
}

/// Asks a running task to stop; true if the request reached where it runs.
pub(crate) type Interrupter = Arc<dyn Fn() -> bool + Send + Sync>;

/// Waiting callers poll only while the executor has at most this many
/// tasks outstanding: one waiting for a single result soon to come. With
/// more, results arrive back to back and polling would only take the cores
/// the pool needs.
const POLL_WHILE_OUTSTANDING: usize = 2;

impl TaskCell {
    pub(crate) fn new(
        name: &str,
        cleanup: Option<Cleanup>,
        discard: Option<fn(TaskOutput)>,
        counters: Arc<Counters>,
    ) -> Arc<Self> {
        counters.submitted();
        crate::runtime::spin::TASKS_WAITED_FOR.fetch_add(1, Ordering::Relaxed);
        let id = TaskId::next();
        tracing::debug!(target: "proxystore::task", task = name, id = %id, "submitted");
        Arc::new(TaskCell {
            name: name.into(),
            id,
            index: AtomicUsize::new(usize::MAX),
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
                counted_running: false,
                attempt: 1,
            }),
            done: Condvar::new(),
            finished: std::sync::atomic::AtomicBool::new(false),
            dispatched: std::sync::atomic::AtomicBool::new(false),
            counters,
            attempts: std::sync::OnceLock::new(),
            arguments: std::sync::OnceLock::new(),
            metrics: std::sync::OnceLock::new(),
            interrupter: Mutex::new(None),
            runs_here: std::sync::atomic::AtomicBool::new(false),
            interrupt_asked: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) fn set_arguments(&self, arguments: Vec<crate::task::ArgSummary>) {
        if !arguments.is_empty() {
            let _ = self.arguments.set(arguments);
        }
    }

    /// A short description of the task's arguments, if it had any.
    pub(crate) fn arguments(&self) -> Option<String> {
        self.arguments
            .get()
            .map(|a| crate::task::render_arguments(a))
    }

    /// Gives the task a retry policy or a timeout, before it is submitted.
    pub(crate) fn set_attempts(&self, attempts: Attempts) {
        let _ = self.attempts.set(attempts);
    }

    /// The task's retry policy and timeout, if it has either.
    pub(crate) fn attempts(&self) -> Option<&Attempts> {
        self.attempts.get()
    }

    /// The attempt under way (1 for the first).
    pub(crate) fn attempt(&self) -> u32 {
        self.lock().attempt
    }

    /// Ends attempt `attempt` with `output`: the task finishes, or, if its
    /// policy retries this error, goes back to pending and is submitted
    /// again after the policy's pause. An attempt that is not the one
    /// under way (it was given up) changes nothing.
    pub(crate) fn end_attempt(self: &Arc<Self>, attempt: u32, output: Result<TaskOutput, Error>) {
        let retry = {
            let mut state = self.lock();
            if state.attempt != attempt || state.phase == Phase::Done || state.finishing {
                return;
            }
            let policy = self.attempts.get().and_then(|a| a.policy.as_ref());
            match (&output, policy) {
                (Err(e), Some(policy)) if !state.cancelled && policy.retries(attempt, e) => {
                    state.attempt += 1;
                    state.phase = Phase::Pending;
                    state.revoker = None;
                    let was_running = std::mem::take(&mut state.counted_running);
                    Some((was_running, policy.pause(state.attempt), state.attempt))
                }
                _ => None,
            }
        };
        let Some((was_running, pause, next)) = retry else {
            self.finish(output, false);
            return;
        };
        self.dispatched.store(false, Ordering::Release);
        if was_running {
            self.counters.unstarted();
        }
        let error = output.err().map(|e| e.with_task_id(self.id));
        tracing::info!(
            target: "proxystore::task",
            task = %self.name,
            id = %self.id,
            attempt = next,
            after = ?pause,
            error = %error.as_ref().map(ToString::to_string).unwrap_or_default(),
            "retrying"
        );
        let cell = self.clone();
        let resubmit = move || {
            // Cancelled (or shut down) while it paused: nothing to run.
            if cell.is_done() {
                return;
            }
            if let Some(attempts) = cell.attempts.get() {
                attempts.resubmit(super::Completion::new(cell.clone()));
            }
        };
        if pause.is_zero() {
            resubmit();
        } else if let Err(e) = crate::runtime::background::run_after(pause, Box::new(resubmit)) {
            self.finish(Err(e), false);
        }
    }

    /// Gives up attempt `attempt` if it is still under way: the task's
    /// timeout passed.
    fn time_out(self: &Arc<Self>, attempt: u32, after: std::time::Duration) {
        let error = Error::TaskTimedOut {
            task: self.name.to_string(),
            id: Some(self.id),
            after,
        };
        self.end_attempt(attempt, Err(error));
    }

    /// The task's place in a `map`, if it is one of one.
    pub(crate) fn index(&self) -> Option<usize> {
        Some(self.index.load(Ordering::Relaxed)).filter(|&i| i != usize::MAX)
    }

    pub(crate) fn set_index(&self, index: usize) {
        self.index.store(index, Ordering::Relaxed);
    }

    /// A task handed to a worker that may hold it behind another counts as
    /// running while it is there (as [`TaskFuture::running`] says).
    ///
    /// [`TaskFuture::running`]: crate::executor::TaskFuture::running
    pub(crate) fn count_dispatched(self: &Arc<Self>, dispatched: bool) {
        let mut state = self.lock();
        if state.phase != Phase::Pending || state.finishing || state.counted_running == dispatched {
            return;
        }
        state.counted_running = dispatched;
        drop(state);
        if dispatched {
            self.count_started();
        } else {
            self.counters.unstarted();
        }
    }

    /// Counts the task as running (once per attempt: see
    /// `Completion::start`), and starts its timeout, if it has one.
    pub(crate) fn count_started(self: &Arc<Self>) {
        self.counters.started();
        if let Some(after) = self.attempts.get().and_then(|a| a.timeout) {
            let cell = Arc::downgrade(self);
            let attempt = self.attempt();
            let timer = crate::runtime::background::run_after(
                after,
                Box::new(move || {
                    if let Some(cell) = cell.upgrade() {
                        cell.time_out(attempt, after);
                    }
                }),
            );
            if let Err(e) = timer {
                tracing::warn!(target: "proxystore::task", task = %self.name, id = %self.id, error = %e, "the task's timeout could not be set");
            }
        }
        tracing::debug!(target: "proxystore::task", task = %self.name, id = %self.id, index = self.index(), "started");
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
    /// [`RESULT_GAPS`](crate::runtime::spin::RESULT_GAPS) (a single wait, not one of
    /// a burst's): the caller records the whole wait there.
    pub(crate) fn spin_until_done(&self) -> Option<std::time::Instant> {
        // No clock read for a result already there, or one of many being
        // waited for: bursts take their results back to back.
        if self.finished.load(Ordering::Acquire) {
            crate::runtime::spin::RESULT_GAPS.record(std::time::Duration::ZERO);
            return None;
        }
        if self.counters.outstanding.load(Ordering::Relaxed) > POLL_WHILE_OUTSTANDING {
            return None;
        }
        let started = std::time::Instant::now();
        let window = crate::runtime::spin::RESULT_GAPS.window(crate::runtime::spin::spin_window());
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
        let (cleanup, was_running) = {
            let mut state = self.lock();
            if state.phase == Phase::Done || state.finishing {
                return false;
            }
            state.finishing = true;
            (state.cleanup.take(), state.counted_running)
        };
        if let Some(attempts) = self.attempts.get() {
            attempts.clear();
        }
        // Every error of a task names it by its id too.
        let output = output.map_err(|e| e.with_task_id(self.id));
        let ending = match &output {
            Ok(_) => Ending::Done,
            Err(_) if cancelled => Ending::Cancelled,
            Err(_) => Ending::Failed,
        };
        match &output {
            Ok(_) => {
                tracing::debug!(target: "proxystore::task", task = %self.name, id = %self.id, index = self.index(), "finished")
            }
            Err(e) if cancelled => {
                tracing::debug!(target: "proxystore::task", task = %self.name, id = %self.id, index = self.index(), reason = %e, "cancelled")
            }
            Err(e) => {
                tracing::info!(target: "proxystore::task", task = %self.name, id = %self.id, index = self.index(), error = %e, "failed")
            }
        }
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
        self.counters.ended(was_running, ending);
        crate::runtime::spin::TASKS_WAITED_FOR.fetch_sub(1, Ordering::Relaxed);
        self.finished
            .store(true, std::sync::atomic::Ordering::Release);
        self.done.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
        // Deferred too: when this task finishes inside a drain (failed by
        // its upstream), its dependents' failures queued above come first,
        // so a callback may wait for a dependent (by recursion, they did).
        if !callbacks.is_empty() {
            let name = self.name.clone();
            run_deferred([Box::new(move || run_callbacks(&name, callbacks, status)) as Deferred]);
        }
        true
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
        run_callbacks(&self.name, vec![callback], status);
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

    /// A dependent let go of this task's result (its [`Dependency`] was
    /// dropped): the last one discards an abandoned result and evicts what
    /// owners dropped while it held them.
    pub(super) fn release_dependent(&self) {
        let (discard, deferred) = {
            let mut state = self.lock();
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

    /// See [`Completion::on_cancel`](super::Completion::on_cancel).
    pub(super) fn set_revoker(&self, revoker: Revoker) {
        self.lock().revoker = Some(revoker);
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

    pub(super) fn finish_cancelled(&self) -> bool {
        let error = Error::Cancelled {
            task: self.name.to_string(),
            id: None,
        };
        self.finish(Err(error), true)
    }
}

/// Runs a task's done callbacks, each with the task's status.
fn run_callbacks(task: &str, callbacks: Vec<Callback>, status: Result<(), String>) {
    let error = status.err().map(|message| Error::TaskFailed {
        task: task.to_string(),
        id: None,
        arguments: None,
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
            tracing::error!(task, "a done callback panicked");
        }
    }
}

mod steer;
#[cfg(test)]
mod tests;
