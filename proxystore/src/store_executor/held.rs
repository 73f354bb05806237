//! Tasks held until the tasks whose results they take as inputs are done.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Error, Result};
use crate::executor::{Completion, Executor};
use crate::task::handle::TaskCell;
use crate::task::{frame_reference, input_frame, Job, TaskOutput};

/// Tasks waiting for other tasks' results, by submission.
#[derive(Default)]
pub(super) struct HeldTasks {
    pub(super) next: AtomicU64,
    /// In submission order: cancelled first to last, an upstream goes
    /// before its dependents, which then fail at once with it.
    pub(super) tasks: Mutex<BTreeMap<u64, Arc<TaskCell>>>,
    pub(super) emptied: Condvar,
}

impl HeldTasks {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<TaskCell>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn insert(&self, id: u64, task: Arc<TaskCell>) {
        self.lock().insert(id, task);
    }

    /// The task was submitted, or ended (cancelled) before.
    pub(super) fn remove(&self, id: u64) {
        let mut tasks = self.lock();
        if tasks.remove(&id).is_some() && tasks.is_empty() {
            self.emptied.notify_all();
        }
    }

    pub(super) fn pending(&self) -> Vec<Arc<TaskCell>> {
        self.lock().values().cloned().collect()
    }

    pub(super) fn wait_until_empty(&self) {
        let tasks = self.lock();
        drop(
            self.emptied
                .wait_while(tasks, |t| !t.is_empty())
                .unwrap_or_else(|e| e.into_inner()),
        );
    }
}

/// A task submitted with other tasks' futures as arguments, held until
/// their results are in.
pub(super) struct HeldJob {
    pub(super) id: u64,
    pub(super) executor: Arc<dyn Executor>,
    pub(super) executor_name: &'static str,
    pub(super) shared: Arc<TaskCell>,
    pub(super) tasks: Arc<HeldTasks>,
    pub(super) state: Mutex<HeldState>,
}

pub(super) struct HeldState {
    pub(super) job: Option<Job>,
    pub(super) remaining: usize,
    /// Each upstream result as an argument frame.
    pub(super) frames: Vec<Vec<u8>>,
    /// The job's frames after each upstream's.
    pub(super) after: Vec<Vec<u8>>,
    /// The first upstream that failed, and why.
    pub(super) failure: Option<(String, crate::task::TaskId, String)>,
}

impl HeldJob {
    /// Takes upstream `index`'s output (called as it is set, under that
    /// task's lock); once every input is in, returns the submission, to
    /// run after the lock is released.
    pub(super) fn fill(
        self: Arc<Self>,
        index: usize,
        upstream: &str,
        upstream_id: crate::task::TaskId,
        output: &Result<TaskOutput>,
    ) -> Option<Box<dyn FnOnce() + Send>> {
        let frame = match output {
            Ok(output) => input_frame(output),
            // The cause, not the upstream's whole message: down a chain,
            // each step would wrap its predecessor's, and a chain of n
            // steps would hold n² bytes of messages.
            Err(Error::UpstreamFailed { message, .. }) => Err(message.clone()),
            Err(e) => Err(e.to_string()),
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match frame {
            Ok(frame) => state.frames[index] = frame,
            Err(message) => {
                if state.failure.is_none() {
                    state.failure = Some((upstream.to_string(), upstream_id, message));
                }
            }
        }
        state.remaining -= 1;
        if state.remaining > 0 {
            return None;
        }
        let job = state.job.take()?;
        let frames = std::mem::take(&mut state.frames);
        let after = std::mem::take(&mut state.after);
        let failure = state.failure.take();
        drop(state);
        Some(Box::new(move || self.dispatch(job, frames, after, failure)))
    }

    /// An upstream result stored where this executor's tasks cannot read
    /// it (a process's memory, for a pool of worker processes).
    fn unreachable(&self, frames: &[Vec<u8>]) -> Option<Error> {
        let needed = self.executor.task_reach();
        frames.iter().find_map(|frame| {
            let config = frame_reference(frame)?.store_config().clone();
            let connector = config.connector.kind.clone();
            let reach = crate::store::get_or_create_store(&config)
                .map(|store| store.connector().reach())
                .ok()?;
            (reach < needed).then(|| Error::Unreachable {
                store: config.name.clone(),
                connector,
                reach: reach.to_string(),
                executor: self.executor_name.to_string(),
                needed: needed.to_string(),
            })
        })
    }

    fn dispatch(
        &self,
        mut job: Job,
        frames: Vec<Vec<u8>>,
        after: Vec<Vec<u8>>,
        failure: Option<(String, crate::task::TaskId, String)>,
    ) {
        let completion = || Completion::new(self.shared.clone());
        if self.shared.is_done() {
            // Cancelled while it waited: its inputs are evicted already.
            completion().cancel();
        } else if let Some((upstream, upstream_id, message)) = failure {
            completion().fail(Error::UpstreamFailed {
                task: job.name.to_string(),
                id: None,
                upstream,
                upstream_id: Some(upstream_id),
                message,
            });
        } else if let Some(error) = self.unreachable(&frames) {
            completion().fail(error);
        } else {
            let extra: usize = frames.iter().chain(&after).map(Vec::len).sum();
            job.payload.reserve_exact(extra);
            for (frame, rest) in frames.iter().zip(&after) {
                job.payload.extend_from_slice(frame);
                job.payload.extend_from_slice(rest);
            }
            super::submit_job(&self.executor, &self.shared, job);
        }
        self.tasks.remove(self.id);
    }
}
