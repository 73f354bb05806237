//! A task's state cell: what its future, its executor and the tasks that
//! depend on it share (see the [module docs](super) for its states).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;

use super::completion::Dependency;
use super::deferred::{run_deferred, Deferred, Finishing};
use super::progress::{Counters, Ending, TaskId};
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
}

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
            }),
            done: Condvar::new(),
            finished: std::sync::atomic::AtomicBool::new(false),
            dispatched: std::sync::atomic::AtomicBool::new(false),
            counters,
        })
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
    pub(crate) fn count_dispatched(&self, dispatched: bool) {
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

    /// Counts the task as running (once: see `Completion::start`).
    pub(crate) fn count_started(&self) {
        self.counters.started();
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

impl crate::owned::SharedResult for TaskCell {
    fn hold(self: Arc<Self>) -> crate::proxy::Hold {
        Box::new(self.depend())
    }

    fn defer_eviction(&self, factory: crate::proxy::Factory) -> Option<crate::proxy::Factory> {
        TaskCell::defer_eviction(self, factory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicU64;

    fn cell(discard: Option<fn(TaskOutput)>) -> Arc<TaskCell> {
        TaskCell::new("t", None, discard, Arc::default())
    }

    fn output() -> Result<TaskOutput, Error> {
        Ok(TaskOutput::from_bytes(vec![1, 2, 3]))
    }

    /// A task whose future was dropped keeps its output while a dependent
    /// holds it; the last dependent to let go discards it.
    #[test]
    fn an_abandoned_output_waits_for_its_last_dependent() {
        static DISCARDED: AtomicU64 = AtomicU64::new(0);
        fn discard(_: TaskOutput) {
            DISCARDED.fetch_add(1, Ordering::SeqCst);
        }
        let task = cell(Some(discard));
        let (first, second) = (task.depend(), task.depend());
        task.lock().abandoned = true; // its future was dropped
        assert!(task.finish(output(), false));
        assert_eq!(DISCARDED.load(Ordering::SeqCst), 0, "dependents hold it");
        assert!(task.lock().output.is_some());
        drop(first);
        assert_eq!(DISCARDED.load(Ordering::SeqCst), 0, "one still holds it");
        drop(second);
        assert_eq!(DISCARDED.load(Ordering::SeqCst), 1);
        assert!(task.lock().output.is_none());
    }

    /// An owned result's eviction waits for the dependents that hold it,
    /// and the last one evicts it; without dependents, it is evicted at once.
    #[test]
    fn an_owned_results_eviction_waits_for_its_last_dependent() {
        use crate::connectors::LocalConnector;
        let store =
            crate::store::Store::new("handle-deferred-eviction", LocalConnector::new()).unwrap();
        let key = store.put(&7u8).unwrap();
        let task = cell(None);
        let (first, second) = (task.depend(), task.depend());
        assert!(
            task.defer_eviction(store.factory(key)).is_none(),
            "deferred"
        );
        drop(first);
        assert!(store.exists(&key).unwrap(), "one dependent still holds it");
        drop(second);
        assert!(
            !store.exists(&key).unwrap(),
            "the last dependent evicted it"
        );
        let free = cell(None);
        assert!(
            free.defer_eviction(store.factory(key)).is_some(),
            "evict now"
        );
        store.close().unwrap();
    }

    /// Hooks see the output as it is set, before anyone can take it, and
    /// what they return runs after the lock is released (it can lock the
    /// task again); a hook added once the task is done runs at once.
    #[test]
    fn hooks_see_the_output_as_it_is_set() {
        static SEEN: AtomicU64 = AtomicU64::new(0);
        let task = cell(None);
        let again = task.clone();
        task.on_output(Box::new(move |out| {
            assert!(out.is_ok());
            SEEN.fetch_add(1, Ordering::SeqCst);
            Some(Box::new(move || {
                // The lock is free here.
                assert_eq!(again.lock().phase, Phase::Done);
                SEEN.fetch_add(10, Ordering::SeqCst);
            }))
        }));
        assert!(task.finish(output(), false));
        assert_eq!(SEEN.load(Ordering::SeqCst), 11);
        task.on_output(Box::new(|out| {
            assert!(out.is_ok(), "the output was not taken yet");
            SEEN.fetch_add(100, Ordering::SeqCst);
            None
        }));
        assert_eq!(SEEN.load(Ordering::SeqCst), 111);
    }

    /// Cancelling a task that has not started ends it at once, and the
    /// executor's `start` then says no; a started task cannot be cancelled.
    #[test]
    fn cancel_before_start_and_not_after() {
        let task = cell(None);
        assert!(task.cancel());
        assert!(task.is_done());
        assert!(task.lock().cancelled);
        assert!(!super::super::Completion::new(task.clone()).start());

        let running = cell(None);
        let completion = super::super::Completion::new(running.clone());
        assert!(completion.start());
        assert!(!running.cancel(), "started: too late");
        completion.complete(Ok(vec![]));
        assert!(running.is_done() && !running.lock().cancelled);
    }

    #[test]
    fn finished_tasks_stop_counting_as_outstanding_and_are_counted_once() {
        let counters: Arc<Counters> = Arc::default();
        let tasks: Vec<_> = (0..4)
            .map(|_| TaskCell::new("t", None, None, counters.clone()))
            .collect();
        let outstanding = || counters.outstanding.load(Ordering::Relaxed);
        assert_eq!(outstanding(), 4);
        assert_eq!(counters.progress().pending, 4);
        let failed = || {
            Err(Error::ShutDown {
                task: "t".into(),
                id: None,
            })
        };
        let running = super::super::Completion::new(tasks[3].clone());
        assert!(running.start());
        assert_eq!(
            (counters.progress().pending, counters.progress().running),
            (3, 1)
        );
        assert!(tasks[0].finish(failed(), false));
        assert_eq!(outstanding(), 3);
        // A second finish is ignored and counts nothing.
        assert!(!tasks[0].finish(failed(), false));
        assert_eq!(outstanding(), 3);
        assert!(tasks[1].finish_cancelled());
        assert!(tasks[2].finish(failed(), false));
        running.complete(Ok(vec![]));
        assert_eq!(outstanding(), 0);
        let progress = counters.progress();
        assert_eq!(
            (progress.submitted, progress.pending, progress.running),
            (4, 0, 0)
        );
        assert_eq!(
            (progress.done, progress.failed, progress.cancelled),
            (1, 2, 1)
        );
    }

    #[test]
    fn errors_of_a_task_carry_its_id() {
        let task = TaskCell::new("t", None, None, Arc::default());
        task.finish(
            Err(Error::ShutDown {
                task: "t".into(),
                id: None,
            }),
            false,
        );
        let state = task.lock();
        let Some(Err(e)) = &state.output else {
            panic!("failed")
        };
        assert!(e.to_string().contains(&task.id.to_string()), "{e}");
        assert_eq!(e.task_id(), Some(task.id));
    }
}
