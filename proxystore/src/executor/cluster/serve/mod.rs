//! A worker: one consumer of the queue's group, running one job at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Connection, Value};

use super::queue::{is_transient, ms, Keys, Reply, Settings, FINISH, GROUP, LEAVE, REPLY_LABEL};
use super::redis_io::{self, is_connection_error, Entry, Server, COMMAND_TIMEOUT};
use crate::error::{Error, Result};
use crate::runtime::Backoff;

mod drain;
mod entry;
mod lease;
mod reclaim;
mod reply;
mod signals;

pub(super) use signals::Signals;

use entry::evict_inputs;
pub(super) use entry::{orphaned, JobEntry};
use lease::{beat, heartbeat, lease_lost_after, Heart, Lease, Run};

pub(super) use reclaim::{give_up, live_workers, reap_candidates, workers_by_host};

/// A worker of a queue: runs the jobs that callers submit through a
/// [`ClusterExecutor`](super::ClusterExecutor) on the same queue, finding
/// each task by name among this executable's `#[proxied]` functions.
///
/// Most programs do not build one: they run their own executable with
/// [`CLUSTER_ENV`](super::CLUSTER_ENV) set, and
/// [`worker::init`](crate::worker::init) serves the queue (see the
/// [module docs](super)). `ClusterWorker` is for programs that decide
/// themselves when to serve.
///
/// ```no_run
/// use proxystore::executor::cluster::ClusterWorker;
///
/// let worker = ClusterWorker::new("redis://redis-host:6379", "jobs")?;
/// let stop = worker.stop_handle();        // set it to stop after the current job
/// worker.run()?;                          // serves until stopped
/// # Ok::<(), proxystore::Error>(())
/// ```
pub struct ClusterWorker {
    server: Server,
    keys: Keys,
    settings: Settings,
    consumer: String,
    /// The host it runs on, named in its answers.
    host: String,
    stop: Arc<AtomicBool>,
    /// Worker mode: say when serving, and stop on SIGTERM or SIGINT within
    /// this bound.
    signals: Option<(Signals, Duration)>,
}

impl std::fmt::Debug for ClusterWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterWorker")
            .field("server", &self.server.name)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl ClusterWorker {
    /// A worker of `queue` on the Redis server at `url`, with the default
    /// [`Settings`].
    pub fn new(url: &str, queue: &str) -> Result<ClusterWorker> {
        let host = redis_io::hostname();
        Ok(ClusterWorker {
            server: Server::open(url)?,
            keys: Keys::new(queue)?,
            settings: Settings::default(),
            consumer: format!(
                "{host}-{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            host,
            stop: Arc::default(),
            signals: None,
        })
    }

    /// Uses these timings (they should match the callers').
    pub fn settings(mut self, settings: Settings) -> Result<Self> {
        settings.check()?;
        self.settings = settings;
        Ok(self)
    }

    /// Acts only on jobs signed with `secret`, the one the queue's callers
    /// give [`ClusterBuilder::secret`](super::ClusterBuilder::secret);
    /// others are dropped with a warning, and fail at their caller. Fails
    /// with [`Error::InvalidConfig`] for an empty secret. See
    /// [Trust](super#trust).
    pub fn secret(self, secret: impl AsRef<[u8]>) -> Result<Self> {
        self.with_secret(Some(super::auth::JobKey::new(secret.as_ref())?))
    }

    pub(super) fn with_secret(mut self, secret: Option<super::auth::JobKey>) -> Result<Self> {
        self.keys.set_secret(secret);
        Ok(self)
    }

    /// This worker's consumer name in the group: host, process id and a
    /// random suffix.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Worker mode: print a ready line, and on SIGTERM or SIGINT finish
    /// the job within `bound` (or hand it back), leave and exit.
    pub(super) fn with_signals(mut self, signals: Signals, bound: Duration) -> Self {
        self.signals = Some((signals, bound));
        self
    }

    /// A flag that stops [`run`](ClusterWorker::run) once the job it runs
    /// (if any) is finished; a job read meanwhile is handed back to the
    /// queue.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Serves jobs until stopped. Survives restarts of the server (it
    /// reconnects, with growing pauses up to 1 s); returns an error only
    /// if it cannot start (the first connection fails).
    pub fn run(self) -> Result<()> {
        let con = self.server.connect(Some(self.read_timeout()))?;
        let state = Arc::new(Heart {
            current: Mutex::new(None),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        let mut worker = Serving {
            con,
            w: &self,
            heart: state.clone(),
            last_reap: Instant::now() - self.settings.reap_every,
            reaps: 0,
            recover: false,
        };
        // Alive before reading: a reaper must never see this consumer's
        // jobs without its heartbeat.
        worker.with_retry("heartbeat", |con, w| {
            beat(con, &w.keys, &w.consumer, &w.settings)
        });
        ensure_group(&mut worker.con, &self.keys, &self.server)?;
        let beating = Arc::new(Mutex::new(None));
        *beating.lock().unwrap_or_else(|e| e.into_inner()) = Some({
            let (server, keys, settings, consumer) = (
                self.server.clone(),
                self.keys.clone(),
                self.settings.clone(),
                self.consumer.clone(),
            );
            let state = state.clone();
            std::thread::Builder::new()
                .name("proxystore-cluster-heartbeat".into())
                .spawn(move || heartbeat(&server, &keys, &settings, &consumer, &state))
                .map_err(|source| Error::ThreadSpawn {
                    purpose: "renew the worker's heartbeat",
                    source,
                })?
        });
        if let Some((signals, bound)) = self.signals {
            let drain = drain::Drain {
                signals,
                bound,
                stop: self.stop.clone(),
                heart: state.clone(),
                heartbeat: beating.clone(),
                server: self.server.clone(),
                keys: self.keys.clone(),
                settings: self.settings.clone(),
                consumer: self.consumer.clone(),
            };
            std::thread::Builder::new()
                .name("proxystore-cluster-drain".into())
                .spawn(move || drain.run())
                .map_err(|source| Error::ThreadSpawn {
                    purpose: "stop the worker on a signal",
                    source,
                })?;
            eprintln!("{}", self.ready_line());
        }
        tracing::info!(consumer = %self.consumer, server = %self.server.name, "cluster worker serving");
        while !self.stop.load(Ordering::Acquire) {
            worker.step();
        }
        drain::stop_heartbeat(&state, &beating);
        // Leave the group (unless a job is still pending to this worker),
        // say goodbye, and remove the queue if nobody else is left.
        let _ = leave(&mut worker.con, &self.keys, &self.consumer);
        if self.signals.is_some() {
            eprintln!(
                "proxystore cluster worker {}: stopped; left queue {:?}",
                std::process::id(),
                self.keys.queue()
            );
        }
        Ok(())
    }

    /// What a worker started by [`worker::init`](crate::worker::init)
    /// prints when it starts serving.
    fn ready_line(&self) -> String {
        let mut tasks: Vec<&str> = crate::task::registered_tasks().collect();
        tasks.sort_unstable();
        tasks.dedup();
        let tasks = match tasks.len() {
            0 => "no tasks registered".to_string(),
            n if n <= 8 => format!("tasks: {}", tasks.join(", ")),
            n => format!("{n} tasks: {}, ...", tasks[..5].join(", ")),
        };
        format!(
            "proxystore cluster worker ready: queue {:?} on {}, host {}, pid {}, {tasks}",
            self.keys.queue(),
            self.server.name,
            redis_io::hostname(),
            std::process::id(),
        )
    }

    fn read_timeout(&self) -> Duration {
        self.settings.reap_every + COMMAND_TIMEOUT
    }
}

struct Serving<'a> {
    con: Connection,
    w: &'a ClusterWorker,
    heart: Arc<Heart>,
    last_reap: Instant,
    reaps: u64,
    /// Whether to look for entries pending to this consumer (after a
    /// reconnect).
    recover: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Creates the queue's stream and group if they do not exist.
/// The `LEAVE` script: `consumer` leaves the group (unless a job is still
/// pending to it), says goodbye, and removes the queue if nobody else is
/// left.
pub(super) fn leave(con: &mut Connection, keys: &Keys, consumer: &str) -> redis::RedisResult<i64> {
    LEAVE
        .call(&[&keys.jobs(), &keys.callers(), &keys.alive(consumer)])
        .arg(GROUP)
        .arg(consumer)
        .arg(keys.alive_prefix())
        .invoke(con)
}

pub(super) fn ensure_group(con: &mut Connection, keys: &Keys, server: &Server) -> Result<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(keys.jobs())
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query(con);
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(server.err("creating the queue's consumer group", e)),
    }
}

impl Serving<'_> {
    /// Runs `op`, reconnecting (with growing pauses) until it succeeds or
    /// the worker is stopped. Errors that are not about the connection are
    /// returned.
    fn with_retry<T>(
        &mut self,
        what: &str,
        op: impl FnMut(&mut Connection, &ClusterWorker) -> redis::RedisResult<T>,
    ) -> Option<T> {
        self.retry(what, false, op).ok()
    }

    /// Like [`with_retry`](Self::with_retry), but also retries the
    /// refusals that go away by themselves (a server out of memory, a
    /// replica turned read-only) until it succeeds or the worker is
    /// stopped: for the steps that must happen once a job has run, or the
    /// job would stay pending to this live worker for ever. A refusal that
    /// retrying cannot fix is returned (`Err(Some)`); `Err(None)`: stopped.
    fn must<T>(
        &mut self,
        what: &str,
        op: impl FnMut(&mut Connection, &ClusterWorker) -> redis::RedisResult<T>,
    ) -> std::result::Result<T, Option<redis::RedisError>> {
        self.retry(what, true, op)
    }

    fn retry<T>(
        &mut self,
        what: &str,
        transient_too: bool,
        mut op: impl FnMut(&mut Connection, &ClusterWorker) -> redis::RedisResult<T>,
    ) -> std::result::Result<T, Option<redis::RedisError>> {
        let w = self.w;
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        loop {
            match op(&mut self.con, w) {
                Ok(v) => return Ok(v),
                Err(e) if transient_too && !is_connection_error(&e) && is_transient(&e) => {
                    tracing::warn!(error = %e, "cluster worker: {what} failed; retrying");
                    if w.stop.load(Ordering::Acquire) {
                        return Err(None);
                    }
                    std::thread::sleep(backoff.pause());
                }
                // NOGROUP, UNBLOCKED: the stream was removed (everyone
                // else left the queue, or it expired) and is made again.
                Err(e)
                    if is_connection_error(&e)
                        || matches!(e.code(), Some("NOGROUP" | "UNBLOCKED")) =>
                {
                    tracing::warn!(error = %e, "cluster worker: {what} failed; reconnecting");
                    if w.stop.load(Ordering::Acquire) {
                        return Err(None);
                    }
                    std::thread::sleep(backoff.pause());
                    if let Ok(con) = w.server.connect(Some(w.read_timeout())) {
                        self.con = con;
                        let _ = ensure_group(&mut self.con, &w.keys, &w.server);
                        let _ = beat(&mut self.con, &w.keys, &w.consumer, &w.settings);
                        // A delivery may have been lost with the old
                        // connection: it is pending to us now.
                        self.recover = true;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cluster worker: {what} failed");
                    return Err(Some(e));
                }
            }
        }
    }

    fn step(&mut self) {
        if self.recover {
            self.recover = false;
            // Entries pending to this consumer that it is not running: a
            // delivery (or a claim) whose answer the connection lost, or a
            // job whose finish was interrupted. Run them again.
            let own = self.with_retry("reading its own pending jobs", |con, w| {
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&w.consumer)
                    .arg("COUNT")
                    .arg(64)
                    .arg("STREAMS")
                    .arg(w.keys.jobs())
                    .arg("0")
                    .query::<Value>(con)
            });
            let own = own.as_ref().map(redis_io::read_entries).unwrap_or_default();
            if own.len() == 64 {
                self.recover = true;
            }
            for entry in own {
                tracing::info!(entry = %entry.id, "cluster worker: running a job left pending to it");
                self.handle(entry, 0);
            }
        }
        if self.last_reap.elapsed() >= self.w.settings.reap_every {
            self.last_reap = Instant::now();
            if let Some((entry, attempt)) = self.reap() {
                self.notify_rerun(&entry, attempt);
                self.handle(entry, attempt);
                // More may wait: look again before reading new jobs.
                self.last_reap = Instant::now() - self.w.settings.reap_every;
                return;
            }
        }
        let block = ms(self.w.settings.reap_every);
        let read = self.with_retry("reading jobs", |con, w| {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&w.consumer)
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(block)
                .arg("STREAMS")
                .arg(w.keys.jobs())
                .arg(">")
                .query::<Value>(con)
        });
        for entry in read
            .as_ref()
            .map(redis_io::read_entries)
            .unwrap_or_default()
        {
            self.handle(entry, 1);
        }
    }

    /// Runs one job and sends its reply.
    fn handle(&mut self, entry: Entry, attempt: u64) {
        let keys = self.w.keys.clone();
        if self.w.stop.load(Ordering::Acquire) {
            // Read just as the worker was stopped: another worker runs it.
            let consumer = self.w.consumer.clone();
            drain::hand_back(&mut self.con, &keys, &self.w.settings, &consumer, &entry.id);
            return;
        }
        if !keys.authentic(&entry) {
            self.refuse(&entry);
            return;
        }
        let parsed = JobEntry::parse(&entry);
        let Some(job) = parsed else {
            tracing::error!(entry = %entry.id, "cluster worker: malformed job entry dropped");
            self.drop_entry(&entry.id);
            return;
        };
        let caller_alive = keys.alive(job.caller);
        // A job that waited longer than a heartbeat may belong to a caller
        // that is gone: then nobody wants it.
        let waited = now_ms().saturating_sub(entry.added_ms());
        if waited > ms(self.w.settings.heartbeat_ttl) {
            let alive: Option<i64> = self.with_retry("checking the caller", |con, _| {
                redis::cmd("EXISTS").arg(&caller_alive).query(con)
            });
            if alive == Some(0) {
                tracing::info!(entry = %entry.id, "cluster worker: dropping a job whose caller is gone");
                orphaned(job.job, None, job.created);
                self.drop_entry(&entry.id);
                return;
            }
        }
        let run = Run::new(&entry.id);
        let this_run = run.clone();
        self.heart.set_current(Some(run.clone()));
        let received = crate::task::ReceivedJob::parse(job.job);
        let reply = match received.and_then(|j| crate::task::find_task(j.name()).map(|_| j)) {
            Err(Error::UnknownTask { registered, .. }) => Reply::UnknownTask { registered },
            Err(e) => Reply::Failed(e.to_string()),
            Ok(received) => {
                let lease = Arc::new(Lease {
                    run,
                    server: self.w.server.clone(),
                    jobs: keys.jobs(),
                    consumer: self.w.consumer.clone(),
                    lost_after: lease_lost_after(&self.w.settings),
                });
                match received.run_with_lease(lease) {
                    Ok(bytes) => Reply::Done(bytes),
                    Err(failure) => Reply::Failed(failure.message().to_string()),
                }
            }
        };
        tracing::debug!(entry = %entry.id, attempt, "cluster worker: job done");
        let ttl = job.reply_ttl.unwrap_or(ms(self.w.settings.reply_ttl));
        let (delivered, refused) = self.finish(&entry.id, job.caller, job.id, &reply, ttl, true);
        self.heart.set_current(None);
        if this_run.interrupted() {
            // The caller's request to stop has been seen: it goes with the job.
            let _ = self.must("removing a request to stop", |con, w| {
                redis::cmd("DEL")
                    .arg(w.keys.interrupt(&entry.id))
                    .query::<()>(con)
            });
        }
        match delivered {
            // Another worker took the job over while this one was taken
            // for dead: its run answers and owns the result key.
            Some(2) => {
                tracing::info!(entry = %entry.id, "cluster worker: a job it ran had been taken over");
            }
            Some(1) => {
                // The task has ended: its proxied inputs go now (the caller
                // evicts them too when the reply arrives, but it may die
                // before that).
                evict_inputs(job.job, &job.created);
                if refused {
                    // The caller was told the job failed: nobody will own
                    // the result it stored.
                    if let Reply::Done(bytes) = &reply {
                        crate::task::evict_result(bytes);
                    }
                }
            }
            Some(_) => {
                let output = match &reply {
                    Reply::Done(bytes) => Some(&bytes[..]),
                    _ => None,
                };
                orphaned(job.job, output, job.created);
            }
            // Stopped before the reply went out: the entry stays pending to
            // this consumer, and a reaper gives it to another worker once
            // this one's heartbeat is gone.
            None => {}
        }
    }

    /// Drops an entry without a valid MAC, touching nothing it names but
    /// the reply list of the caller it names: that caller's job fails
    /// instead of waiting for ever (its secret differs from this worker's).
    fn refuse(&mut self, entry: &Entry) {
        tracing::warn!(
            entry = %entry.id,
            "cluster worker: job entry dropped: it is not signed with this worker's secret"
        );
        let Some(job) = JobEntry::parse(entry) else {
            self.drop_entry(&entry.id);
            return;
        };
        let failure = Reply::Failed(
            "a worker refused the job: it is not signed with the queue's secret; give the \
             callers and workers of a queue the same secret (ClusterBuilder::secret, \
             ClusterWorker::secret, PROXYSTORE_CLUSTER_SECRET_FILE)"
                .into(),
        );
        let ttl = ms(self.w.settings.reply_ttl);
        // Answered through the same path as a job's reply (a refusal for
        // good drops the entry); nothing the entry names is evicted.
        // Not sealed: the caller's secret differs (or it has none), so it
        // could not check a tag; it takes untagged failures only.
        let _ = self.finish(&entry.id, job.caller, job.id, &failure, ttl, false);
    }
}
