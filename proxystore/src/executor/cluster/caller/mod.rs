//! The caller's side: submitting jobs, reading replies, heartbeat and
//! reaper.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::Sender;
use redis::Connection;

use super::queue::{ms, Keys, Reply, Settings};
use super::redis_io::{Server, COMMAND_TIMEOUT};
use crate::error::Error;
use crate::executor::Completion;
use crate::task::{Job, TaskFailure};

mod heartbeat;
mod receive;
mod send;

pub(super) use heartbeat::{heartbeat, keep_stream, leave_queue};
pub(super) use receive::{receive, wake_reader};
pub(super) use send::send;

/// A job submitted and not answered yet.
pub(super) struct Pending {
    completion: Completion,
    /// Its stream entry, once added.
    entry: Option<String>,
    /// Whether its inputs are recorded in the caller's inputs hash.
    recorded: bool,
}

/// Work for the sender thread.
pub(super) enum Out {
    Job {
        id: u64,
        job: Job,
        /// The task's id in this process, for the workers' log lines.
        task: crate::task::TaskId,
    },
    /// Take a job back if no worker has it; the sender answers on the
    /// channel, if any, once done.
    Revoke(u64, Option<Sender<()>>),
}

/// State the caller's threads share.
pub(super) struct Inner {
    pub(super) server: Server,
    pub(super) keys: Keys,
    pub(super) settings: Settings,
    /// This caller's id: its reply list, heartbeat and consumer name.
    pub(super) caller: String,
    pending: Mutex<HashMap<u64, Pending>>,
    /// Per host of the workers that answered: this caller's jobs done and
    /// failed there.
    pub(super) hosts: Mutex<std::collections::BTreeMap<String, (usize, usize)>>,
    /// The connection that records jobs' inputs as they are submitted.
    recorder: Mutex<Option<Connection>>,
    /// Jobs answered whose input records the keeper removes.
    answered: Mutex<Vec<u64>>,
    /// Notified when `pending` becomes empty, and on stop.
    idle: Condvar,
    next_id: AtomicU64,
    pub(super) stopping: AtomicBool,
    stop_lock: Mutex<bool>,
    stop_wake: Condvar,
}

impl Inner {
    pub(super) fn new(server: Server, keys: Keys, settings: Settings) -> Inner {
        Inner {
            server,
            keys,
            settings,
            caller: uuid::Uuid::new_v4().simple().to_string(),
            pending: Mutex::default(),
            hosts: Mutex::default(),
            recorder: Mutex::default(),
            answered: Mutex::default(),
            idle: Condvar::new(),
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            stop_lock: Mutex::new(false),
            stop_wake: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn outstanding(&self) -> usize {
        self.lock().len()
    }

    pub(super) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a job under `id`.
    pub(super) fn register(&self, id: u64, completion: Completion, recorded: bool) {
        completion.set_dispatched(true);
        self.lock().insert(
            id,
            Pending {
                completion,
                entry: None,
                recorded,
            },
        );
    }

    /// Records the inputs `job` put in the store, in the queue's server,
    /// before the job is queued: if this process dies before the job's
    /// entry is added (or before a worker evicts them), the worker that
    /// sweeps up after it evicts them. A round trip, paid only by jobs
    /// whose submission already paid one to put its inputs. Whether it
    /// was recorded.
    pub(super) fn record_inputs(&self, id: u64, job: &Job) -> bool {
        if job.created.is_empty() {
            return false;
        }
        let record = self.keys.seal(
            super::queue::INPUTS_LABEL,
            &self.caller,
            super::queue::input_record(job),
        );
        let mut recorder = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..2 {
            if recorder.is_none() {
                *recorder = self.server.connect(Some(COMMAND_TIMEOUT)).ok();
            }
            let Some(con) = recorder.as_mut() else {
                break;
            };
            let recorded: redis::RedisResult<()> = redis::pipe()
                .cmd("HSET")
                .arg(self.keys.inputs(&self.caller))
                .arg(id)
                .arg(&record)
                .ignore()
                .cmd("PEXPIRE")
                .arg(self.keys.inputs(&self.caller))
                .arg(ms(self.settings.reply_ttl))
                .ignore()
                .query(con);
            match recorded {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster caller: could not record a job's inputs");
                    *recorder = None;
                }
            }
        }
        false
    }

    /// A reply read from this caller's list: decoded if a worker wrote it
    /// (with the queue's secret, its tag must be right).
    ///
    /// An untagged failure is taken too: a worker with another secret
    /// refuses the job that way (it cannot tag for this caller). A forged
    /// one can only fail a job; a result is taken only with its tag, so a
    /// forged one can never make this caller own (and evict) an object.
    fn open_reply(&self, blob: &[u8]) -> Option<(u64, Reply, Option<String>)> {
        match self
            .keys
            .open(super::queue::REPLY_LABEL, &self.caller, blob)
        {
            Some(bytes) => Reply::decode_on(bytes.to_vec()),
            None => match Reply::decode_on(blob.to_vec())? {
                // Untagged: the host it names is not to be trusted.
                (id, reply @ Reply::Failed(_), _) => Some((id, reply, None)),
                _ => None,
            },
        }
    }

    /// Sets the mark that asks the worker running job `id` to stop (it
    /// lasts as long as a reply may wait, and goes with the job's answer).
    pub(super) fn interrupt(&self, id: u64) -> bool {
        let Some(entry) = self.lock().get(&id).and_then(|p| p.entry.clone()) else {
            return false;
        };
        let set = self
            .server
            .connect(Some(super::redis_io::COMMAND_TIMEOUT))
            .and_then(|mut con| {
                redis::cmd("SET")
                    .arg(self.keys.interrupt(&entry))
                    .arg(1)
                    .arg("PX")
                    .arg(super::queue::ms(self.settings.reply_ttl))
                    .query::<()>(&mut con)
                    .map_err(|e| self.server.err("asking a task to stop", e))
            });
        match set {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cluster caller: could not ask a task to stop");
                false
            }
        }
    }

    fn take(&self, id: u64) -> Option<Pending> {
        let mut pending = self.lock();
        let taken = pending.remove(&id);
        if pending.is_empty() {
            self.idle.notify_all();
        }
        drop(pending);
        if taken.as_ref().is_some_and(|p| p.recorded) {
            self.answered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(id);
        }
        taken
    }

    /// Removes the input records of answered jobs (their inputs are
    /// evicted by then, or owned by the caller's cleanup).
    fn forget_answered(&self, con: &mut Connection) {
        let ids = std::mem::take(&mut *self.answered.lock().unwrap_or_else(|e| e.into_inner()));
        if ids.is_empty() {
            return;
        }
        let forgotten: redis::RedisResult<()> = redis::cmd("HDEL")
            .arg(self.keys.inputs(&self.caller))
            .arg(&ids)
            .query(con);
        if forgotten.is_err() {
            self.answered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(ids);
        }
    }

    /// Fails a job that never made it into the queue.
    pub(super) fn fail(&self, id: u64, error: Error) {
        if let Some(p) = self.take(id) {
            p.completion.fail(error);
        }
    }

    fn deliver(&self, id: u64, reply: Reply, host: Option<String>) {
        if let (Some(host), Reply::Done(_) | Reply::Failed(_)) = (host, &reply) {
            // One look at the table: a reply for a job no longer waited for
            // counts nowhere.
            let waited = self.lock().get(&id).map(|p| {
                tracing::debug!(
                    target: "proxystore::task",
                    task = %p.completion.name(),
                    id = %p.completion.id(),
                    host = %host,
                    "answered by a worker on {host}"
                );
            });
            if waited.is_some() {
                let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
                let counts = hosts.entry(host).or_default();
                match reply {
                    Reply::Done(_) => counts.0 += 1,
                    _ => counts.1 += 1,
                }
            }
        }
        if let Reply::Rerun { attempt } = reply {
            let pending = self.lock();
            if let Some(p) = pending.get(&id) {
                tracing::info!(
                    target: "proxystore::task",
                    task = %p.completion.name(),
                    id = %p.completion.id(),
                    attempt,
                    "re-run: its worker died or stopped, another worker runs it again"
                );
            }
            return;
        }
        let Some(p) = self.take(id) else {
            // A second reply for a job run twice (at-least-once), or one
            // for a job given up meanwhile: the first answer stands. Its
            // result, if stored, is under the same key as the first's.
            tracing::debug!(id, "cluster: reply for a job no longer waited for");
            return;
        };
        let completion = p.completion;
        completion.start();
        match reply {
            Reply::Done(bytes) => completion.complete(Ok(bytes)),
            Reply::Failed(message) => completion.complete(Err(TaskFailure::new(message))),
            Reply::UnknownTask { registered } => {
                let name = completion.name().to_string();
                completion.fail(Error::UnknownTask { name, registered });
            }
            Reply::GaveUp { attempts, reason } => {
                let task = completion.name().to_string();
                completion.fail(Error::AttemptsExhausted {
                    task,
                    id: None,
                    attempts,
                    last: reason,
                });
            }
            Reply::Stop | Reply::Rerun { .. } => {}
        }
    }

    /// Waits until no job is pending or `timeout` passes; whether none is.
    pub(super) fn wait_idle(&self, timeout: Duration) -> bool {
        let pending = self.lock();
        let (pending, _) = self
            .idle
            .wait_timeout_while(pending, timeout, |p| !p.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        pending.is_empty()
    }

    /// Fails every job still pending with `error()`.
    pub(super) fn fail_all(&self, error: impl Fn(&str) -> Error) {
        let all: Vec<Pending> = self.lock().drain().map(|(_, p)| p).collect();
        self.idle.notify_all();
        for p in all {
            let e = error(p.completion.name());
            p.completion.fail(e);
        }
    }

    pub(super) fn pending_ids(&self) -> Vec<u64> {
        self.lock().keys().copied().collect()
    }

    /// Sleeps for `d` unless stopped meanwhile; whether to go on.
    fn pause(&self, d: Duration) -> bool {
        let stopped = self.stop_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (stopped, _) = self
            .stop_wake
            .wait_timeout_while(stopped, d, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        !*stopped
    }

    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        *self.stop_lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stop_wake.notify_all();
    }

    fn reply_key(&self) -> String {
        self.keys.reply(&self.caller)
    }

    pub(super) fn alive_key(&self) -> String {
        self.keys.alive(&self.caller)
    }

    pub(super) fn caller_ttl(&self) -> Duration {
        self.settings.caller_ttl
    }
}

pub(super) type Outbox = Sender<Out>;
