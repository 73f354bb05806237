//! A worker: one consumer of the queue's group, running one job at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Connection, Value};

use super::queue::{ms, Keys, Reply, Settings, FINISH, GIVE_UP, GROUP};
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
    /// The entry being run, whose lease the heartbeat renews.
    current: Mutex<Option<String>>,
    stopped: Mutex<bool>,
    wake: Condvar,
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
        if con.is_none() {
            con = server.connect(Some(COMMAND_TIMEOUT)).ok();
        }
        let Some(c) = con.as_mut() else { continue };
        let current = heart
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(keys.alive(consumer))
            .arg(1)
            .arg("PX")
            .arg(ms(settings.heartbeat_ttl))
            .ignore();
        if let Some(id) = current {
            // Renews the job's lease: its idle time starts again, and the
            // delivery count stays (JUSTID).
            pipe.cmd("XCLAIM")
                .arg(keys.jobs())
                .arg(GROUP)
                .arg(consumer)
                .arg(0)
                .arg(id)
                .arg("JUSTID")
                .ignore();
        }
        if let Err(e) = pipe.query::<()>(c) {
            tracing::warn!(error = %e, "cluster worker: heartbeat failed");
            if is_connection_error(&e) {
                con = None;
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
        self.retry(what, false, op)
    }

    /// Like [`with_retry`](Self::with_retry), but retries every error (a
    /// server out of memory, a replica turned read-only) until it succeeds
    /// or the worker is stopped: for the steps that must happen once a job
    /// has run, or the job would stay pending to this live worker for ever.
    fn must<T>(
        &mut self,
        what: &str,
        op: impl FnMut(&mut Connection, &ClusterWorker) -> redis::RedisResult<T>,
    ) -> Option<T> {
        self.retry(what, true, op)
    }

    fn retry<T>(
        &mut self,
        what: &str,
        every_error: bool,
        mut op: impl FnMut(&mut Connection, &ClusterWorker) -> redis::RedisResult<T>,
    ) -> Option<T> {
        let w = self.w;
        let mut pause = Duration::from_millis(20);
        loop {
            match op(&mut self.con, w) {
                Ok(v) => return Some(v),
                Err(e)
                    if every_error && !is_connection_error(&e) && e.code() != Some("NOGROUP") =>
                {
                    tracing::warn!(error = %e, "cluster worker: {what} failed; retrying");
                    if w.stop.load(Ordering::Acquire) {
                        return None;
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) if is_connection_error(&e) || e.code() == Some("NOGROUP") => {
                    tracing::warn!(error = %e, "cluster worker: {what} failed; reconnecting");
                    if w.stop.load(Ordering::Acquire) {
                        return None;
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
                    return None;
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
            for (entry, attempt) in self.reap() {
                self.handle(entry, attempt);
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

    /// Takes over the jobs of consumers whose heartbeat expired and whose
    /// lease ran out; returns them with their attempt numbers, after giving
    /// up those that used their last attempt.
    fn reap(&mut self) -> Vec<(Entry, u64)> {
        let me = self.w.consumer.clone();
        let stale = reap_candidates(&mut self.con, &self.w.keys, &self.w.settings, &me);
        let mut run = Vec::new();
        for (id, delivered) in stale.unwrap_or_default() {
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
                    run.push((entry, delivered + 1));
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
        *self.heart.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(entry.id.clone());
        let reply = match crate::task::job_name(job.job).and_then(crate::task::find_task) {
            Err(Error::UnknownTask { registered, .. }) => Reply::UnknownTask { registered },
            _ => {
                let guard = owner_check(&self.w.server, &keys, &self.w.consumer, &entry.id);
                match crate::task::with_result_guard(guard, || crate::task::run_job_bytes(job.job))
                {
                    Ok(bytes) => Reply::Done(bytes),
                    Err(failure) => Reply::Failed(failure.message().to_string()),
                }
            }
        };
        tracing::debug!(entry = %entry.id, attempt, "cluster worker: job done");
        let blob = reply.encode(job.id);
        let reply_key = keys.reply(job.caller);
        let ttl = job.reply_ttl.unwrap_or(ms(self.w.settings.reply_ttl));
        let delivered = self.must("sending a reply", |con, w| {
            FINISH
                .call(&[&keys.jobs(), &reply_key, &caller_alive])
                .arg(GROUP)
                .arg(&entry.id)
                .arg(&blob)
                .arg(ttl)
                .arg(&w.consumer)
                .invoke::<i64>(con)
        });
        *self.heart.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
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
        let blob = Reply::Failed(
            "a worker refused the job: it is not signed with the queue's secret; give the \
             callers and workers of a queue the same secret (ClusterBuilder::secret, \
             ClusterWorker::secret, PROXYSTORE_CLUSTER_SECRET_FILE)"
                .into(),
        )
        .encode(job.id);
        let keys = &self.w.keys;
        let (jobs, reply_key, alive) =
            (keys.jobs(), keys.reply(job.caller), keys.alive(job.caller));
        let ttl = ms(self.w.settings.reply_ttl);
        self.must("refusing a job", |con, w| {
            FINISH
                .call(&[&jobs, &reply_key, &alive])
                .arg(GROUP)
                .arg(&entry.id)
                .arg(&blob)
                .arg(ttl)
                .arg(&w.consumer)
                .invoke::<i64>(con)
        });
    }

    /// Acknowledges and deletes an entry that will not run.
    fn drop_entry(&mut self, id: &str) {
        self.must("dropping a job", |con, w| {
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
            reply_ttl: entry
                .text("ttl")
                .and_then(|t| t.parse().ok())
                .filter(|&t: &u64| t > 0),
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

/// Whether `entry` is still pending to `consumer`: asked before a result
/// is stored, so that a run taken for dead (and re-run elsewhere) does not
/// write its result over the other run's, or recreate it after the caller
/// evicted it. An unreachable server counts as "still ours" (the result is
/// stored, as before the check existed).
fn owner_check(
    server: &Server,
    keys: &Keys,
    consumer: &str,
    entry: &str,
) -> Box<dyn FnMut() -> bool> {
    let (server, jobs, consumer, entry) = (
        server.clone(),
        keys.jobs(),
        consumer.to_string(),
        entry.to_string(),
    );
    Box::new(move || {
        let Ok(mut con) = server.connect(Some(COMMAND_TIMEOUT)) else {
            return true;
        };
        let pending: redis::RedisResult<Value> = redis::cmd("XPENDING")
            .arg(&jobs)
            .arg(GROUP)
            .arg(&entry)
            .arg(&entry)
            .arg(1)
            .query(&mut con);
        match pending {
            Ok(v) => {
                redis_io::array(&v)
                    .first()
                    .and_then(|row| redis_io::array(row).get(1).and_then(redis_io::text))
                    == Some(consumer.as_str())
            }
            Err(_) => true,
        }
    })
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
            for blob in blobs.iter().filter_map(redis_io::bytes) {
                if let Some((_, Reply::Done(output))) = Reply::decode(blob.to_vec()) {
                    crate::task::evict_output(&output);
                }
            }
        }
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&list).query(con);
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
