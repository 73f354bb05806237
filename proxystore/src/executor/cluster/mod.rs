//! Tasks on many hosts: an executor whose job queue is a Redis stream.
//!
//! The job engine is Redis itself: a stream per queue and a consumer group
//! of workers, Redis's own at-least-once work queue. A caller adds jobs
//! with `XADD`; workers block in `XREADGROUP` (nobody polls), run the job,
//! and in one atomic step push the reply to the caller's own list, `XACK`
//! and `XDEL` the entry; the caller blocks in `BLPOP` on that list. Every
//! host runs the same executable in worker mode, and tasks are found in the
//! `#[proxied]` registry by name, exactly as in a
//! [`ProcessPool`](crate::executor::ProcessPool)'s workers.
//!
//! ```no_run
//! use proxystore::connectors::RedisConnector;
//! use proxystore::executor::cluster::ClusterExecutor;
//! use proxystore::{proxied, Store, StoreExecutor};
//!
//! #[proxied(types = [String])]
//! fn concat(base: String, num: i64) -> String {
//!     format!("{base}-{num}")
//! }
//!
//! fn main() -> proxystore::Result<()> {
//!     proxystore::worker::init(); // with PROXYSTORE_CLUSTER set: serves the queue, never returns
//!
//!     let url = "redis://redis-host:6379";
//!     let store = Store::new("cluster-example", RedisConnector::new(url)?)?;
//!     let executor = StoreExecutor::new(ClusterExecutor::new(url, "jobs")?, store);
//!     let result = executor.submit(concat::task("foobar".to_string(), 42))?.result()?;
//!     assert_eq!(*result, "foobar-42");
//!     Ok(())
//! }
//! ```
//!
//! # Workers
//!
//! On each worker host, run the same executable with the queue's address:
//!
//! ```sh
//! PROXYSTORE_CLUSTER=redis://redis-host:6379 PROXYSTORE_QUEUE=jobs ./my-program
//! ```
//!
//! [`worker::init`](crate::worker::init) (first thing in `main`) then
//! serves the queue and never returns. Each such process is one consumer
//! of the group, named after its host and process id, and runs one job at
//! a time. With `PROXYSTORE_WORKERS=N` ([`WORKERS_ENV`]) the process
//! instead supervises `N` worker processes and replaces any that exits (a
//! task that crashed it); they die with it:
//!
//! ```sh
//! PROXYSTORE_CLUSTER=redis://redis-host:6379 PROXYSTORE_QUEUE=jobs PROXYSTORE_WORKERS=8 ./my-program
//! ```
//!
//! [`ClusterWorker`] serves from code.
//!
//! A worker started this way prints one line to stderr once it serves
//! (`proxystore cluster worker ready: queue "jobs" on host:6379/0, host
//! h1, pid 4242, tasks: ...`), with or without a `tracing` subscriber.
//! Given `--help` (or `-h`) in worker mode it prints the environment
//! variables it reads and exits 0; other arguments are the program's own
//! and left alone. On SIGTERM or SIGINT it takes no new job, lets the one
//! it runs finish (at most [`DRAIN_ENV`], default 20 s; past that, or on
//! a second signal, it hands the job back to the queue, where another
//! worker takes it at once), acknowledges it, removes its heartbeat and
//! exits 0. A supervisor ([`WORKERS_ENV`]) passes the signal on to its
//! workers and exits 0 once they have.
//!
//! [`ClusterExecutor::live_workers`] counts the workers serving a queue,
//! and a caller whose tasks wait with no live worker for
//! [`Settings::no_worker_warning`] warns (target `proxystore::executor`).
//! When a job is re-run because its worker died or stopped, the caller
//! logs it (`tracing`, target `proxystore::task`, with the task's name,
//! [`TaskId`](crate::task::TaskId) and attempt), and the worker's log line
//! names the task and the caller's task id (an id of the caller's
//! process, carried by the job entry).
//!
//! # Failures, and at-least-once delivery
//!
//! - Each worker renews a heartbeat key (expiring after
//!   [`Settings::heartbeat_ttl`]) and, while a job runs, the job's lease
//!   (its idle time in the pending-entries list), however long it runs.
//! - Reapers (every worker, and the caller) look for jobs whose lease ran
//!   out ([`Settings::lease`]) and whose consumer's heartbeat expired, and
//!   take them over with `XCLAIM`, one job at a time per reaper, so that
//!   the jobs of a dead host go to whichever workers are free: a worker
//!   runs them again. A host that dies mid-task therefore has its jobs re-run elsewhere within about
//!   `heartbeat_ttl + reap_every` (4 s with the defaults).
//! - Redis counts deliveries. A job delivered [`Settings::max_attempts`]
//!   times without finishing is given up: it is copied to the dead-letter
//!   stream `proxystore:queue:<queue>:dead` (with its task name, caller,
//!   attempts and reason) and its future fails with
//!   [`Error::AttemptsExhausted`].
//!
//! **A task may run more than once**: a worker that was cut off from Redis
//! (or stopped) long enough to be taken for dead may still finish the job
//! someone else ran again. The first reply completes the future. A run
//! whose job was taken over checks before it stores its result (under the
//! key the caller reserved) and does not reply, so it neither overwrites
//! the other run's result nor brings back one the caller evicted; only its
//! side effects remain. A run that cannot reach the server to check stores
//! nothing either. A task can ask whether its run is still the current one
//! with [`TaskContext::is_current`](crate::task::TaskContext::is_current):
//! it turns false once the worker's lease renewal finds the job given
//! away, or once no renewal reached the server for longer than the lease. Make tasks idempotent: derive what they write elsewhere
//! from their inputs (a key, a file name), write it whole (to a temporary
//! name, then rename), and do not count on side effects happening once.
//!
//! A task that fails (an error, a panic) is not retried: its future fails
//! with the task's message, as with every executor.
//!
//! # Nothing left behind
//!
//! Finished entries are acknowledged and deleted at once, so the stream
//! holds only jobs waiting or running. Replies live in the caller's list,
//! which expires ([`Settings::reply_ttl`]) if the caller stops reading. A
//! caller that dies stops renewing its own heartbeat: workers then drop its
//! waiting jobs and evict the objects of its jobs (inputs and results)
//! instead of replying. A caller that shuts down removes its heartbeat and
//! reply list. Workers remove the group's record of consumers that died.
//! Every live caller and worker renews the expiry of the queue's stream
//! (twice [`Settings::heartbeat_ttl`] while it is empty, twice the longer
//! of [`Settings::caller_ttl`] and `heartbeat_ttl` while it holds jobs),
//! and the last one to leave removes it: once all are gone, stopped or
//! killed, the queue leaves no key behind.
//!
//! # Trust
//!
//! Workers act on what the job stream says: they run the named task with
//! the given store configuration, store its result under the key the job
//! names and evict the keys it lists as inputs. Anyone who can write the
//! stream can therefore make workers evict or overwrite objects of any
//! store they can reach, and run any registered task (anyone who can write
//! to Redis at all can also do so directly). Two measures close this:
//!
//! - **Authenticated jobs.** Give the callers and workers of a queue the
//!   same secret: [`ClusterBuilder::secret`] on callers, and
//!   [`ClusterWorker::secret`] or, for workers started by
//!   [`worker::init`](crate::worker::init), a file named by
//!   [`SECRET_FILE_ENV`] (`PROXYSTORE_CLUSTER_SECRET_FILE`, its trailing
//!   line break ignored) or the secret itself in [`SECRET_ENV`]
//!   (`PROXYSTORE_CLUSTER_SECRET`; both are removed from the environment
//!   before any task runs). Callers then sign every job entry with an
//!   HMAC-SHA256 over all its fields (the job with its store
//!   configuration and result key, the caller, the job id, the attempts,
//!   the reply lifetime and the inputs to evict) and the queue's name.
//!   Workers check it, in constant time, before they act on an entry: an
//!   entry without a valid MAC is dropped with a warning, nothing it names
//!   is run, stored or evicted, and the caller it names receives a failure
//!   ([`Error::TaskFailed`], saying the secrets differ), so a caller whose
//!   secret is wrong (or missing) fails at once instead of waiting. The
//!   secret never appears in `Debug` output, errors or logs. What else
//!   workers or callers act on is tagged the same way: the replies workers
//!   write (a caller takes a result only with its tag, so a forged one can
//!   never make it own, and later evict, an object; an untagged failure is
//!   taken, which is how a worker with another secret refuses a job) and
//!   the records of a caller's in-flight inputs (a worker sweeping a dead
//!   caller evicts only what a tagged record names). The MAC
//!   proves who wrote an entry, not that it is new: someone who can read
//!   the stream can add a copy of a signed entry, which runs the same job
//!   again against its own store.
//! - **Redis ACLs.** Give each party only the keys it needs
//!   (`ACL SETUSER`): workers and callers of queue `q` the queue's keys
//!   (`~proxystore:queue:q:*`) and the namespaces of the stores they use
//!   (`~proxystore:<namespace>:*`), with the command categories the queue
//!   uses (`+@stream +@list +@string +@set +@keyspace +@scripting
//!   +@connection`); no one else write access to `proxystore:queue:q:*`.
//!   Redis checks the keys of every command, scripts' included, so a
//!   user of other namespaces cannot reach a store's objects even
//!   directly. Put the user in the URL (`redis://user:password@host/`):
//!
//!   ```text
//!   ACL SETUSER team-a on >password ~proxystore:queue:team-a:* ~proxystore:team-a-store:* +@stream +@list +@string +@set +@keyspace +@scripting +@connection
//!   ```
//!
//! Reply lists are not signed: whoever can write
//! `proxystore:queue:q:reply:*` can complete a caller's jobs with results
//! of their own; the ACLs above keep others out of it.
//!
//! # Stores
//!
//! Tasks run on other hosts, so their proxies must resolve there: a
//! [`StoreExecutor`](crate::StoreExecutor) over this executor refuses,
//! with [`Error::Unreachable`], a store whose
//! connector is only of this process (a
//! [`LocalConnector`](crate::connectors::LocalConnector)) or of this host
//! (a [`FileConnector`](crate::connectors::FileConnector) not marked
//! `shared()`) — unless the queue's server is itself on this host
//! (loopback), in which case all workers are too.
//!
//! A `RedisConnector` moves every byte of every object into and out of one
//! server. A `PeerConnector` (feature `peer`) behind a
//! [`MultiConnector`](crate::connectors::MultiConnector) keeps large objects
//! in the process that made them (the caller for arguments, the worker for
//! results) and sends them straight to the host that reads them; Redis then
//! holds only small objects and where the large ones are. Such an object is
//! lost with its worker process: reading it fails with
//! [`Error::ObjectLost`], naming the host.

mod auth;
mod caller;
mod monitor;
mod queue;
mod redis_io;
mod scripts;
mod serve;
mod worker_mode;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::connectors::Reach;
use crate::error::{Error, Result};
use crate::executor::{Completion, Executor};
use crate::task::Job;

pub use auth::{SECRET_ENV, SECRET_FILE_ENV};
pub use monitor::{ClusterMonitor, HostProgress};
pub use queue::Settings;

pub use serve::ClusterWorker;
pub(crate) use worker_mode::serve_from_env;

use caller::{Inner, Out, Outbox};

/// The environment variable that puts an executable in cluster worker
/// mode: the queue server's URL (`redis://host:port/db`, credentials
/// allowed). See [`worker::init`](crate::worker::init).
pub const CLUSTER_ENV: &str = "PROXYSTORE_CLUSTER";

/// The environment variable naming the queue a worker serves (default
/// `default`).
pub const QUEUE_ENV: &str = "PROXYSTORE_QUEUE";

/// The environment variable that makes a worker host's process a
/// supervisor of that many worker processes, each serving the queue and
/// replaced when it exits (a task that crashed it, say). Without it, the
/// process serves the queue itself.
pub const WORKERS_ENV: &str = "PROXYSTORE_WORKERS";

/// The environment variable bounding, in milliseconds, how long a worker
/// started by [`worker::init`](crate::worker::init) that receives SIGTERM
/// or SIGINT lets the job it runs finish (default 20 000): past it (or on a
/// second signal) the worker hands the job back to the queue, where
/// another worker takes it at once, and exits 0.
pub const DRAIN_ENV: &str = "PROXYSTORE_DRAIN_MS";

/// How long [`shutdown`](Executor::shutdown) waits by default for jobs
/// that were submitted and not answered.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs tasks on workers that serve a Redis stream, on any number of hosts.
/// See the [module docs](self).
pub struct ClusterExecutor {
    inner: Arc<Inner>,
    /// Taken at shutdown: the sender thread ends when the last sender
    /// goes (revokers borrow it only while they run).
    outbox: Arc<Mutex<Option<Outbox>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for ClusterExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterExecutor")
            .field("server", &self.inner.server.name)
            .field("queue", &self.inner.keys.jobs())
            .field("caller", &self.inner.caller)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ClusterExecutor`].
pub struct ClusterBuilder {
    url: String,
    queue: String,
    settings: Settings,
    shutdown_timeout: Duration,
    secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("url", &crate::connectors::redact_url(&self.url))
            .field("queue", &self.queue)
            .field("settings", &self.settings)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl ClusterBuilder {
    /// Timings and limits (see [`Settings`]).
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// How many deliveries a job gets before it is given up (default 3).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.settings.max_attempts = attempts;
        self
    }

    /// How long shutting down with `wait` waits for unanswered jobs
    /// (default [`DEFAULT_SHUTDOWN_TIMEOUT`]); those still unanswered then
    /// fail with [`Error::ShutDown`], and workers
    /// drop them and evict their objects.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Signs every job with `secret`, shared by the callers and workers
    /// of the queue: workers given the same secret
    /// ([`ClusterWorker::secret`], [`SECRET_FILE_ENV`]) act only on jobs
    /// signed with it. See [Trust](self#trust).
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secret = Some(secret.as_ref().to_vec());
        self
    }

    /// Connects, creates the queue if needed and starts the caller's
    /// threads.
    pub fn build(self) -> Result<ClusterExecutor> {
        self.settings.check()?;
        let mut keys = queue::Keys::new(&self.queue)?;
        keys.set_secret(self.secret.as_deref().map(auth::JobKey::new).transpose()?);
        let server = redis_io::Server::open(&self.url)?;
        let inner = Arc::new(Inner::new(server, keys, self.settings));
        let mut con = inner.server.connect(Some(redis_io::COMMAND_TIMEOUT))?;
        // Alive before the first job: workers drop jobs of callers that
        // are not. And before the stream is made: a party that leaves the
        // queue removes it only when nobody is alive.
        redis::pipe()
            .cmd("SET")
            .arg(inner.alive_key())
            .arg(1)
            .arg("PX")
            .arg(queue::ms(inner.caller_ttl()))
            .ignore()
            // Known, so that a worker can sweep what it leaves if it dies.
            .cmd("SADD")
            .arg(inner.keys.callers())
            .arg(&inner.caller)
            .ignore()
            .cmd("PEXPIRE")
            .arg(inner.keys.callers())
            .arg(ms_callers(&inner.settings))
            .ignore()
            .query::<()>(&mut con)
            .map_err(|e| inner.server.err("starting the caller's heartbeat", e))?;
        serve::ensure_group(&mut con, &inner.keys, &inner.server)?;
        caller::keep_stream(&inner, &mut con)
            .map_err(|e| inner.server.err("renewing the queue's stream", e))?;
        let (tx, rx) = crossbeam_channel::unbounded::<Out>();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|source| Error::ThreadSpawn {
                    purpose: "serve a cluster executor",
                    source,
                })
        };
        let mut threads = Vec::new();
        let i = inner.clone();
        threads.push(spawn(
            "proxystore-cluster-send",
            Box::new(move || caller::send(&i, &rx)),
        )?);
        let i = inner.clone();
        threads.push(spawn(
            "proxystore-cluster-replies",
            Box::new(move || caller::receive(&i)),
        )?);
        let i = inner.clone();
        threads.push(spawn(
            "proxystore-cluster-keeper",
            Box::new(move || caller::heartbeat(&i)),
        )?);
        Ok(ClusterExecutor {
            inner,
            outbox: Arc::new(Mutex::new(Some(tx))),
            threads: Mutex::new(threads),
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

impl ClusterExecutor {
    /// An executor on `queue` of the Redis server at `url`, with the
    /// default settings.
    pub fn new(url: &str, queue: &str) -> Result<ClusterExecutor> {
        ClusterExecutor::builder(url, queue).build()
    }

    /// A builder for an executor on `queue` of the server at `url`.
    pub fn builder(url: &str, queue: &str) -> ClusterBuilder {
        ClusterBuilder {
            url: url.to_string(),
            queue: queue.to_string(),
            settings: Settings::default(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            secret: None,
        }
    }

    /// Jobs submitted and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.inner.outstanding()
    }

    /// How many workers serve the queue now: those that have read from it
    /// and whose heartbeat has not expired (one round trip to the server).
    /// While tasks wait and this is 0 for
    /// [`Settings::no_worker_warning`], the executor warns (a `tracing`
    /// warning, target `proxystore::executor`, naming the queue and how to
    /// start workers).
    pub fn live_workers(&self) -> Result<usize> {
        let mut con = self.inner.server.connect(Some(redis_io::COMMAND_TIMEOUT))?;
        serve::live_workers(&mut con, &self.inner.keys)
            .map_err(|e| self.inner.server.err("counting live workers", e))
    }

    /// How the queue's hosts are doing (see [`ClusterMonitor::hosts`]).
    pub fn hosts(&self) -> Result<Vec<HostProgress>> {
        self.monitor().hosts()
    }

    /// A handle that reads how this executor's queue and hosts are doing,
    /// kept after the executor is moved into a
    /// [`StoreExecutor`](crate::StoreExecutor) (for a progress display,
    /// say).
    pub fn monitor(&self) -> ClusterMonitor {
        ClusterMonitor {
            inner: self.inner.clone(),
        }
    }

    fn outbox(&self) -> Option<Outbox> {
        self.outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn finish_shutdown(inner: &Inner, threads: Vec<JoinHandle<()>>, timeout: Duration) {
        if !inner.wait_idle(timeout) {
            // Workers drop what they still hold once the heartbeat is gone.
            caller::leave_queue(inner);
            inner.fail_all(|task| Error::ShutDown {
                task: task.into(),
                id: None,
            });
        }
        inner.stop();
        caller::wake_reader(inner);
        for t in threads {
            let _ = t.join();
        }
        caller::leave_queue(inner);
    }
}

impl Executor for ClusterExecutor {
    fn submit(&self, job: Job, completion: Completion) {
        let Some(outbox) = self.outbox() else {
            let task = completion.name().to_string();
            completion.fail(Error::ShutDown { task, id: None });
            return;
        };
        let id = self.inner.next_id();
        let revoke = {
            let outbox = Arc::downgrade(&self.outbox);
            move || {
                // Cancelling waits for the answer (bounded: a server that
                // does not answer leaves the job to run).
                let Some(outbox) = outbox.upgrade() else {
                    return;
                };
                let sender = outbox.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let Some(sender) = sender else { return };
                let (done, wait) = crossbeam_channel::bounded(1);
                if sender.send(Out::Revoke(id, Some(done))).is_ok() {
                    drop(sender);
                    let _ = wait.recv_timeout(Duration::from_secs(2));
                }
            }
        };
        completion.on_cancel(revoke);
        let interrupt = {
            let inner = Arc::downgrade(&self.inner);
            move || inner.upgrade().is_some_and(|inner| inner.interrupt(id))
        };
        completion.on_interrupt(interrupt);
        let recorded = self.inner.record_inputs(id, &job);
        let task = completion.id();
        self.inner.register(id, completion, recorded);
        if outbox.send(Out::Job { id, job, task }).is_err() {
            self.inner.fail(
                id,
                Error::ShutDown {
                    task: "?".into(),
                    id: None,
                },
            );
        }
    }

    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        let Some(outbox) = self.outbox.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        if cancel_pending {
            for id in self.inner.pending_ids() {
                let _ = outbox.send(Out::Revoke(id, None));
            }
        }
        drop(outbox);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let inner = self.inner.clone();
        let timeout = self.shutdown_timeout;
        if wait {
            ClusterExecutor::finish_shutdown(&inner, threads, timeout);
        } else {
            // Results keep coming in the background until done or timed
            // out.
            let _ = std::thread::Builder::new()
                .name("proxystore-cluster-shutdown".into())
                .spawn(move || ClusterExecutor::finish_shutdown(&inner, threads, timeout));
        }
    }

    fn task_reach(&self) -> Reach {
        if self.inner.server.local {
            Reach::Host
        } else {
            Reach::Network
        }
    }
}

impl Drop for ClusterExecutor {
    fn drop(&mut self) {
        if !self.inner.stopping.load(Ordering::Acquire) {
            self.shutdown(true, false);
        }
    }
}

/// How long the set of callers lives once no caller renews it: as long as
/// the reply lists and input records it lets workers sweep.
pub(super) fn ms_callers(settings: &Settings) -> u64 {
    queue::ms(settings.reply_ttl.max(settings.caller_ttl))
}
