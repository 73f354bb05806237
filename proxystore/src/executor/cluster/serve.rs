//! A worker: one consumer of the queue's group, running one job at a time.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Connection, Value};

use super::queue::{
    is_transient, ms, Keys, Reply, Settings, FINISH, GIVE_UP, GROUP, INPUTS_LABEL, MAX_TTL_MS,
    RENEW, REPLY_LABEL,
};
use super::redis_io::{self, is_connection_error, Entry, Server, COMMAND_TIMEOUT};
use crate::error::{Error, Result};
use crate::key::Key;

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
    stop: Arc<AtomicBool>,
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
        Ok(ClusterWorker {
            server: Server::open(url)?,
            keys: Keys::new(queue)?,
            settings: Settings::default(),
            consumer: format!(
                "{}-{}-{}",
                redis_io::hostname(),
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            stop: Arc::default(),
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

    /// A flag that stops [`run`](ClusterWorker::run) once the job it runs
    /// (if any) is finished.
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
        let heartbeat = {
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
        };
        tracing::info!(consumer = %self.consumer, server = %self.server.name, "cluster worker serving");
        while !self.stop.load(Ordering::Acquire) {
            worker.step();
        }
        *state.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        state.wake.notify_all();
        let _ = heartbeat.join();
        // Nothing of ours is pending: leave the group and say goodbye.
        let _: redis::RedisResult<Value> = redis::pipe()
            .cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(self.keys.jobs())
            .arg(GROUP)
            .arg(&self.consumer)
            .cmd("DEL")
            .arg(self.keys.alive(&self.consumer))
            .query(&mut worker.con);
        Ok(())
    }

    fn read_timeout(&self) -> Duration {
        self.settings.reap_every + COMMAND_TIMEOUT
    }
}

/// What the heartbeat thread shares with the main one.
struct Heart {
    /// The job being run, whose lease the heartbeat renews.
    current: Mutex<Option<Arc<Run>>>,
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Heart {
    fn set_current(&self, run: Option<Arc<Run>>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = run;
    }
}

/// A job being run, as the heartbeat thread and the task see it.
struct Run {
    entry: String,
    /// When the lease was last renewed (or the job delivered), by this
    /// host's clock.
    renewed: Mutex<Instant>,
    /// [`HELD`], [`PRESUMED_LOST`] or [`LOST`].
    lease: AtomicU8,
}

/// The lease is this worker's, as far as it knows.
const HELD: u8 = 0;
/// Nothing renewed it for as long as a reaper waits: another worker may
/// have taken the job over. Renewals go on, and one that finds the job
/// still pending to this worker holds it again (the server was only out
/// of reach, and nobody took the job).
const PRESUMED_LOST: u8 = 1;
/// Known to be another worker's (or unconfirmable when it mattered): never
/// renewed again.
const LOST: u8 = 2;

impl Run {
    fn new(entry: &str) -> Arc<Run> {
        Arc::new(Run {
            entry: entry.to_string(),
            renewed: Mutex::new(Instant::now()),
            lease: AtomicU8::new(HELD),
        })
    }

    fn renewed(&self) -> Instant {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease(&self) -> u8 {
        self.lease.load(Ordering::Acquire)
    }

    fn lose(&self, why: &str) {
        if self.lease.swap(LOST, Ordering::AcqRel) != LOST {
            tracing::warn!(entry = %self.entry, "cluster worker: lost the lease of the job it runs ({why})");
        }
    }

    /// The server says the job is still pending to this worker.
    fn hold(&self, renewed: Instant) {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = renewed;
        if self
            .lease
            .compare_exchange(PRESUMED_LOST, HELD, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::info!(entry = %self.entry, "cluster worker: the lease of the job it runs is its own again");
        }
    }

    /// Presumes the lease lost once nothing renewed it for as long as a
    /// reaper waits before taking a job over.
    fn presume(&self, settings: &Settings) {
        if self.renewed().elapsed() >= lease_lost_after(settings)
            && self
                .lease
                .compare_exchange(HELD, PRESUMED_LOST, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tracing::warn!(
                entry = %self.entry,
                "cluster worker: no renewal of the lease of the job it runs reached the server for \
                 longer than the lease; another worker may run it now"
            );
        }
    }
}

/// How long after its last renewal a job may have been taken over: a
/// reaper needs both the lease and the worker's heartbeat to have run out.
fn lease_lost_after(settings: &Settings) -> Duration {
    settings.lease.max(settings.heartbeat_ttl)
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

fn beat(
    con: &mut Connection,
    keys: &Keys,
    member: &str,
    settings: &Settings,
) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(keys.alive(member))
        .arg(1)
        .arg("PX")
        .arg(ms(settings.heartbeat_ttl))
        .query(con)
}

/// Creates the queue's stream and group if they do not exist.
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

fn heartbeat(server: &Server, keys: &Keys, settings: &Settings, consumer: &str, heart: &Heart) {
    let mut con: Option<Connection> = None;
    loop {
        {
            let stopped = heart.stopped.lock().unwrap_or_else(|e| e.into_inner());
            let (stopped, _) = heart
                .wake
                .wait_timeout_while(stopped, settings.heartbeat, |s| !*s)
                .unwrap_or_else(|e| e.into_inner());
            if *stopped {
                return;
            }
        }
        let run = heart
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|run| run.lease() != LOST);
        if let Some(run) = &run {
            run.presume(settings);
        }
        if con.is_none() {
            con = server.connect(Some(COMMAND_TIMEOUT)).ok();
        }
        let Some(c) = con.as_mut() else { continue };
        // Taken before the commands go: the lease runs from no later than
        // the server's renewal.
        let sent = Instant::now();
        let renewed = beat(c, keys, consumer, settings).and_then(|()| match &run {
            Some(run) if run.lease() != LOST => RENEW
                .call(&[&keys.jobs()])
                .arg(GROUP)
                .arg(&run.entry)
                .arg(consumer)
                .invoke::<i64>(c)
                .map(Some),
            _ => Ok(None),
        });
        match (renewed, &run) {
            (Ok(Some(1)), Some(run)) => run.hold(sent),
            (Ok(Some(_)), Some(run)) => run.lose("another worker holds it now"),
            (Ok(_), _) => {}
            (Err(e), _) => {
                tracing::warn!(error = %e, "cluster worker: heartbeat failed");
                if is_connection_error(&e) {
                    con = None;
                }
            }
        }
    }
}

/// The lease of the job a worker runs, as its task sees it (through
/// [`TaskContext::is_current`](crate::task::TaskContext::is_current) and
/// before its result is stored).
struct Lease {
    run: Arc<Run>,
    server: Server,
    jobs: String,
    consumer: String,
    lost_after: Duration,
}

impl Lease {
    /// Whether the server says the job is pending to this consumer; `None`
    /// if it cannot be asked.
    fn ask(&self) -> Option<bool> {
        let mut con = self.server.connect(Some(self.lost_after)).ok()?;
        let pending: Value = redis::cmd("XPENDING")
            .arg(&self.jobs)
            .arg(GROUP)
            .arg(&self.run.entry)
            .arg(&self.run.entry)
            .arg(1)
            .query(&mut con)
            .ok()?;
        let owner = redis_io::array(&pending)
            .first()
            .and_then(|row| redis_io::array(row).get(1).and_then(redis_io::text));
        Some(owner == Some(self.consumer.as_str()))
    }
}

impl crate::task::RunLease for Lease {
    fn is_current(&self) -> bool {
        self.run.lease() == HELD
    }

    /// Asks the server; while it cannot be reached, asks again until the
    /// lease may have run out. Unconfirmed is not ours: a run that writes
    /// its result without knowing could bring back an object that the
    /// other run's caller already evicted.
    fn confirm(&self) -> bool {
        loop {
            if self.run.lease() == LOST {
                return false;
            }
            match self.ask() {
                Some(true) => {
                    self.run.hold(Instant::now());
                    return true;
                }
                Some(false) => {
                    self.run.lose("another worker holds it now");
                    return false;
                }
                None if self.run.renewed().elapsed() >= self.lost_after => {
                    self.run.lose(
                        "the server could not be reached to confirm it before storing a result",
                    );
                    return false;
                }
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        }
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
        let mut pause = Duration::from_millis(20);
        loop {
            match op(&mut self.con, w) {
                Ok(v) => return Ok(v),
                Err(e) if transient_too && !is_connection_error(&e) && is_transient(&e) => {
                    tracing::warn!(error = %e, "cluster worker: {what} failed; retrying");
                    if w.stop.load(Ordering::Acquire) {
                        return Err(None);
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) if is_connection_error(&e) || e.code() == Some("NOGROUP") => {
                    tracing::warn!(error = %e, "cluster worker: {what} failed; reconnecting");
                    if w.stop.load(Ordering::Acquire) {
                        return Err(None);
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
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

    /// Takes over one job of a consumer whose heartbeat expired and whose
    /// lease ran out, and returns it with its attempt number, after giving
    /// up those that used their last attempt. One: this worker runs one job
    /// at a time, and the other jobs of a dead host go to whichever workers
    /// are free (each reaper claims only what it can run now).
    fn reap(&mut self) -> Option<(Entry, u64)> {
        let me = self.w.consumer.clone();
        let stale = reap_candidates(&mut self.con, &self.w.keys, &self.w.settings, &me);
        let mut run = None;
        for (id, delivered) in stale.unwrap_or_default() {
            if run.is_some() {
                break;
            }
            let claimed = self.with_retry("claiming a job", |con, w| {
                redis::cmd("XCLAIM")
                    .arg(w.keys.jobs())
                    .arg(GROUP)
                    .arg(&me)
                    .arg(ms(w.settings.lease))
                    .arg(&id)
                    .query::<Value>(con)
            });
            for entry in claimed.as_ref().map(redis_io::entries).unwrap_or_default() {
                let max = entry
                    .text("attempts")
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(1u64);
                if delivered >= max {
                    let reason =
                        format!("its worker died or was lost on each of {delivered} attempts");
                    give_up(
                        &mut self.con,
                        &self.w.keys,
                        &self.w.settings,
                        &entry,
                        delivered,
                        &reason,
                    );
                } else {
                    tracing::info!(entry = %entry.id, attempt = delivered + 1, "cluster worker: re-running a job of a dead worker");
                    run = Some((entry, delivered + 1));
                }
            }
        }
        self.reaps += 1;
        if self.reaps % 10 == 1 {
            forget_dead_consumers(&mut self.con, &self.w.keys, &self.w.settings);
            sweep_dead_callers(&mut self.con, &self.w.keys);
        }
        run
    }

    /// Runs one job and sends its reply.
    fn handle(&mut self, entry: Entry, attempt: u64) {
        let keys = self.w.keys.clone();
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
        self.heart.set_current(Some(run.clone()));
        let reply = match crate::task::job_name(job.job).and_then(crate::task::find_task) {
            Err(Error::UnknownTask { registered, .. }) => Reply::UnknownTask { registered },
            _ => {
                let lease = Arc::new(Lease {
                    run,
                    server: self.w.server.clone(),
                    jobs: keys.jobs(),
                    consumer: self.w.consumer.clone(),
                    lost_after: lease_lost_after(&self.w.settings),
                });
                match crate::task::with_lease(lease, || crate::task::run_job_bytes(job.job)) {
                    Ok(bytes) => Reply::Done(bytes),
                    Err(failure) => Reply::Failed(failure.message().to_string()),
                }
            }
        };
        tracing::debug!(entry = %entry.id, attempt, "cluster worker: job done");
        let ttl = job.reply_ttl.unwrap_or(ms(self.w.settings.reply_ttl));
        let (delivered, refused) = self.finish(&entry.id, job.caller, job.id, &reply, ttl, true);
        self.heart.set_current(None);
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
                        crate::task::evict_output(bytes);
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

    /// Sends a job's reply and removes its entry (the [`FINISH`] script):
    /// what the script answered (`None`: stopped first), and whether the
    /// reply had to be replaced by a failure because the server refused it
    /// for good. Then the job fails with that refusal, at this worker's
    /// reply expiry, and the worker goes on; if even that is refused, the
    /// entry is dropped (answered as if the caller were gone).
    fn finish(
        &mut self,
        entry: &str,
        caller: &str,
        id: u64,
        reply: &Reply,
        ttl: u64,
        sealed: bool,
    ) -> (Option<i64>, bool) {
        let keys = self.w.keys.clone();
        let (reply_key, caller_alive) = (keys.reply(caller), keys.alive(caller));
        let send = |this: &mut Self, blob: &[u8], ttl: u64| {
            this.must("sending a reply", |con, w| {
                FINISH
                    .call(&[&keys.jobs(), &reply_key, &caller_alive])
                    .arg(GROUP)
                    .arg(entry)
                    .arg(blob)
                    .arg(ttl)
                    .arg(&w.consumer)
                    .invoke::<i64>(con)
            })
        };
        let seal = |reply: &Reply| match sealed {
            true => keys.seal(REPLY_LABEL, caller, reply.encode(id)),
            false => reply.encode(id),
        };
        let refusal = match send(self, &seal(reply), ttl) {
            Ok(answer) => return (Some(answer), false),
            Err(None) => return (None, false),
            Err(Some(e)) => self.w.server.err("sending a task's reply", e),
        };
        tracing::error!(entry, error = %refusal, "cluster worker: the reply was refused; failing the job");
        let failure = Reply::Failed(format!(
            "the worker could not send this task's reply ({refusal}); check the queue's server \
             and the caller's settings"
        ));
        match send(self, &seal(&failure), ms(self.w.settings.reply_ttl)) {
            Ok(answer) => (Some(answer), true),
            Err(None) => (None, true),
            Err(Some(_)) => {
                self.drop_entry(entry);
                (Some(0), true)
            }
        }
    }

    /// Acknowledges and deletes an entry that will not run.
    fn drop_entry(&mut self, id: &str) {
        let _ = self.must("dropping a job", |con, w| {
            redis::pipe()
                .cmd("XACK")
                .arg(w.keys.jobs())
                .arg(GROUP)
                .arg(id)
                .ignore()
                .cmd("XDEL")
                .arg(w.keys.jobs())
                .arg(id)
                .ignore()
                .query::<()>(con)
        });
    }
}

/// The fields of a job entry.
pub(super) struct JobEntry<'a> {
    pub(super) job: &'a [u8],
    pub(super) caller: &'a str,
    pub(super) id: u64,
    pub(super) created: Vec<Key>,
    /// How long the caller wants its replies kept (ms).
    pub(super) reply_ttl: Option<u64>,
}

impl<'a> JobEntry<'a> {
    pub(super) fn parse(entry: &'a Entry) -> Option<JobEntry<'a>> {
        let caller = entry.text("caller")?;
        if caller.is_empty() || !caller.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let created = entry
            .field("evict")
            .unwrap_or_default()
            .chunks(16)
            .filter_map(|b| uuid::Uuid::from_slice(b).ok())
            .filter_map(|u| Key::parse(&u.hyphenated().to_string()).ok())
            .collect();
        Some(JobEntry {
            job: entry.field("job")?,
            caller,
            id: entry.text("id")?.parse().ok()?,
            created,
            // Bounded: Redis refuses an expiry past its clock's end, and a
            // reply that cannot be sent would hold the worker.
            reply_ttl: entry
                .text("ttl")
                .and_then(|t| t.parse().ok())
                .filter(|&t: &u64| t > 0)
                .map(|t| t.min(MAX_TTL_MS)),
        })
    }
}

/// Evicts what a job of a caller that is gone put in the store: its result
/// (if it went through the store) and its inputs.
pub(super) fn orphaned(job: &[u8], output: Option<&[u8]>, created: Vec<Key>) {
    if let Some(output) = output {
        crate::task::evict_output(output);
    }
    match crate::task::job_store_and_result(job) {
        Ok((store, result_key)) => {
            for key in created.iter().chain([&result_key]) {
                if let Err(e) = store.evict(key) {
                    tracing::debug!(%key, error = %e, "cluster: could not evict an orphaned object");
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "cluster: the store of an orphaned job is unknown"),
    }
}

/// Evicts a finished job's proxied inputs.
fn evict_inputs(job: &[u8], created: &[Key]) {
    if created.is_empty() {
        return;
    }
    if let Ok((store, _)) = crate::task::job_store_and_result(job) {
        for key in created {
            if let Err(e) = store.evict(key) {
                tracing::debug!(%key, error = %e, "cluster worker: could not evict an input");
            }
        }
    }
}

/// Entries (id, times delivered) of consumers whose heartbeat expired and
/// whose lease ran out, other than `me`.
pub(super) fn reap_candidates(
    con: &mut Connection,
    keys: &Keys,
    settings: &Settings,
    me: &str,
) -> redis::RedisResult<Vec<(String, u64)>> {
    // Who holds entries: the summary form lists every consumer with
    // pending entries, so dead ones are never hidden behind live ones.
    let summary: Value = redis::cmd("XPENDING")
        .arg(keys.jobs())
        .arg(GROUP)
        .query(con)?;
    let holders = redis_io::array(&summary)
        .get(3)
        .map(redis_io::array)
        .unwrap_or_default();
    let consumers: Vec<String> = holders
        .iter()
        .filter_map(|row| redis_io::array(row).first().and_then(redis_io::text))
        .filter(|c| *c != me)
        .map(str::to_string)
        .collect();
    if consumers.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for c in &consumers {
        pipe.cmd("EXISTS").arg(keys.alive(c));
    }
    let alive: Vec<i64> = pipe.query(con)?;
    let mut out = Vec::new();
    for (consumer, _) in consumers.iter().zip(alive).filter(|(_, a)| *a == 0) {
        let pending: Value = redis::cmd("XPENDING")
            .arg(keys.jobs())
            .arg(GROUP)
            .arg("IDLE")
            .arg(ms(settings.lease))
            .arg("-")
            .arg("+")
            .arg(64)
            .arg(consumer)
            .query(con)?;
        out.extend(redis_io::array(&pending).iter().filter_map(|row| {
            let row = redis_io::array(row);
            Some((
                redis_io::text(row.first()?)?.to_string(),
                u64::try_from(redis_io::int(row.get(3)?)?).ok()?,
            ))
        }));
    }
    Ok(out)
}

/// Moves a job to the dead-letter stream and fails it.
pub(super) fn give_up(
    con: &mut Connection,
    keys: &Keys,
    settings: &Settings,
    entry: &Entry,
    attempts: u64,
    reason: &str,
) {
    // An entry without a valid MAC names objects nobody vouched for.
    let Some(job) = JobEntry::parse(entry).filter(|_| keys.authentic(entry)) else {
        let _ = redis::pipe()
            .cmd("XACK")
            .arg(keys.jobs())
            .arg(GROUP)
            .arg(&entry.id)
            .ignore()
            .cmd("XDEL")
            .arg(keys.jobs())
            .arg(&entry.id)
            .ignore()
            .query::<()>(con);
        return;
    };
    let name = crate::task::job_name(job.job).unwrap_or("?").to_string();
    tracing::warn!(entry = %entry.id, task = %name, attempts, "cluster: job given up");
    let blob = Reply::GaveUp {
        attempts,
        reason: reason.to_string(),
    }
    .encode(job.id);
    let blob = keys.seal(REPLY_LABEL, job.caller, blob);
    let delivered: redis::RedisResult<i64> = GIVE_UP
        .call(&[
            &keys.jobs(),
            &keys.dead(),
            &keys.reply(job.caller),
            &keys.alive(job.caller),
        ])
        .arg(GROUP)
        .arg(&entry.id)
        .arg(&blob)
        .arg(job.reply_ttl.unwrap_or(ms(settings.reply_ttl)))
        .arg(ms(settings.dead_letter_ttl))
        .arg(&name)
        .arg(job.caller)
        .arg(attempts)
        .arg(reason)
        .invoke(con);
    if !matches!(delivered, Ok(1)) {
        orphaned(job.job, None, job.created);
    }
}

/// Evicts the stored results waiting in the reply lists of callers that
/// died (their heartbeat expired), then removes the lists. One worker wins
/// each caller (`SREM` answers 1 to one of them).
fn sweep_dead_callers(con: &mut Connection, keys: &Keys) {
    let Ok(callers) = redis::cmd("SMEMBERS")
        .arg(keys.callers())
        .query::<Vec<String>>(con)
    else {
        return;
    };
    if callers.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    for c in &callers {
        pipe.cmd("EXISTS").arg(keys.alive(c));
    }
    let Ok(alive) = pipe.query::<Vec<i64>>(con) else {
        return;
    };
    for (caller, _) in callers.iter().zip(alive).filter(|(_, a)| *a == 0) {
        let won: redis::RedisResult<i64> = redis::cmd("SREM")
            .arg(keys.callers())
            .arg(caller)
            .query(con);
        if won != Ok(1) {
            continue;
        }
        let list = keys.reply(caller);
        loop {
            let Ok(batch) = redis::cmd("LPOP").arg(&list).arg(256).query::<Value>(con) else {
                break;
            };
            let blobs = redis_io::array(&batch);
            if blobs.is_empty() {
                break;
            }
            // Only what a worker wrote: with a secret, a forged reply
            // naming another store's object is not acted on.
            for blob in blobs.iter().filter_map(redis_io::bytes) {
                let reply = keys.open(REPLY_LABEL, caller, blob);
                if let Some((_, Reply::Done(output))) =
                    reply.and_then(|b| Reply::decode(b.to_vec()))
                {
                    crate::task::evict_output(&output);
                }
            }
        }
        // Inputs of jobs it had not yet queued, or whose entries went
        // before anyone evicted them: recorded before they were queued.
        if let Ok(records) = redis::cmd("HVALS")
            .arg(keys.inputs(caller))
            .query::<Vec<Vec<u8>>>(con)
        {
            for record in &records {
                if let Some(record) = keys.open(INPUTS_LABEL, caller, record) {
                    super::queue::evict_recorded(record);
                }
            }
        }
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(&list)
            .arg(keys.inputs(caller))
            .query(con);
        tracing::info!(
            caller,
            "cluster worker: swept the replies of a caller that died"
        );
    }
}

/// Removes consumers that hold no jobs and whose heartbeat expired, so the
/// group does not collect the names of every worker that ever ran.
fn forget_dead_consumers(con: &mut Connection, keys: &Keys, settings: &Settings) {
    let Ok(info) = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(keys.jobs())
        .arg(GROUP)
        .query::<Value>(con)
    else {
        return;
    };
    for consumer in redis_io::array(&info) {
        let fields: Vec<(String, &Value)> = match consumer {
            Value::Map(kv) => kv
                .iter()
                .filter_map(|(k, v)| Some((redis_io::text(k)?.to_string(), v)))
                .collect(),
            other => redis_io::array(other)
                .chunks(2)
                .filter_map(|kv| Some((redis_io::text(kv.first()?)?.to_string(), kv.get(1)?)))
                .collect(),
        };
        let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let (Some(name), Some(pending), Some(idle)) = (
            get("name").and_then(redis_io::text),
            get("pending").and_then(redis_io::int),
            get("idle").and_then(redis_io::int),
        ) else {
            continue;
        };
        if pending != 0 || (idle as u64) < ms(settings.lease) {
            continue;
        }
        let alive: redis::RedisResult<i64> = redis::cmd("EXISTS").arg(keys.alive(name)).query(con);
        if alive == Ok(0) {
            let _: redis::RedisResult<Value> = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(keys.jobs())
                .arg(GROUP)
                .arg(name)
                .query(con);
        }
    }
}
