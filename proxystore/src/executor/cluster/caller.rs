//! The caller's side: submitting jobs, reading replies, heartbeat and
//! reaper.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use redis::{Connection, Value};

use super::auth::{Signed, MAC_FIELD};
use super::queue::{ms, Keys, Reply, Settings, GROUP, REPLY_BATCH, REVOKE};
use super::redis_io::{self, is_connection_error, Server, COMMAND_TIMEOUT};
use super::serve::{give_up, reap_candidates};
use crate::error::Error;
use crate::executor::Completion;
use crate::task::{Job, TaskFailure};

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
    fn open_reply(&self, blob: &[u8]) -> Option<(u64, Reply)> {
        match self
            .keys
            .open(super::queue::REPLY_LABEL, &self.caller, blob)
        {
            Some(bytes) => Reply::decode(bytes.to_vec()),
            None => match Reply::decode(blob.to_vec())? {
                (id, reply @ Reply::Failed(_)) => Some((id, reply)),
                _ => None,
            },
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

    fn deliver(&self, id: u64, reply: Reply) {
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
                    attempts,
                    last: reason,
                });
            }
            Reply::Stop => {}
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

/// The sender thread: adds jobs to the stream, many per round trip, and
/// takes back jobs being cancelled.
pub(super) fn send(inner: &Inner, out: &Receiver<Out>) {
    let mut con: Option<Connection> = None;
    let mut batch = Vec::new();
    while let Ok(first) = out.recv() {
        batch.push(first);
        batch.extend(out.try_iter().take(511));
        let mut tries = 0;
        loop {
            if con.is_none() {
                con = inner.server.connect(Some(COMMAND_TIMEOUT)).ok();
            }
            let result = match con.as_mut() {
                Some(c) => send_batch(inner, c, &batch),
                None => Err(None),
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    con = None;
                    tries += 1;
                    if tries < 3 && !inner.stopping.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(100 * tries));
                        continue;
                    }
                    let message =
                        e.map_or_else(|| "could not connect".to_string(), |e| e.to_string());
                    for out in &batch {
                        if let Out::Job { id, .. } = out {
                            inner.fail(
                                *id,
                                Error::Redis {
                                    server: inner.server.name.clone(),
                                    operation: "submitting a job".into(),
                                    message: message.clone(),
                                },
                            );
                        }
                    }
                    break;
                }
            }
        }
        batch.clear();
    }
}

fn send_batch(
    inner: &Inner,
    con: &mut Connection,
    batch: &[Out],
) -> Result<(), Option<redis::RedisError>> {
    let jobs = inner.keys.jobs();
    let mut pipe = redis::pipe();
    // The caller's heartbeat goes first: a worker that finishes one of
    // these jobs must find its caller alive, even just after the server
    // restarted without its data.
    pipe.cmd("SET")
        .arg(inner.alive_key())
        .arg(1)
        .arg("PX")
        .arg(ms(inner.caller_ttl()))
        .ignore();
    let mut ids = Vec::new();
    let mut scratch = Vec::new();
    for out in batch {
        if let Out::Job { id, job } = out {
            // Not yet sent, or already answered (cancelled meanwhile)?
            if !inner.lock().contains_key(id) {
                continue;
            }
            scratch.clear();
            job.write_to(&mut scratch);
            let evict: Vec<u8> = job
                .created
                .iter()
                .flat_map(|k| *k.as_uuid().as_bytes())
                .collect();
            let (id_text, attempts, ttl) = (
                id.to_string(),
                inner.settings.max_attempts.to_string(),
                ms(inner.settings.reply_ttl).to_string(),
            );
            pipe.cmd("XADD")
                .arg(&jobs)
                .arg("*")
                .arg("job")
                .arg(&scratch[..])
                .arg("caller")
                .arg(&inner.caller)
                .arg("id")
                .arg(&id_text)
                .arg("attempts")
                .arg(&attempts)
                .arg("ttl")
                .arg(&ttl)
                .arg("evict")
                .arg(&evict);
            // Workers with the queue's secret act only on entries it signed.
            if let Some(mac) = inner.keys.sign(&Signed {
                job: &scratch,
                caller: inner.caller.as_bytes(),
                id: id_text.as_bytes(),
                attempts: attempts.as_bytes(),
                ttl: ttl.as_bytes(),
                evict: &evict,
            }) {
                pipe.arg(MAC_FIELD).arg(mac);
            }
            ids.push(*id);
        }
    }
    if !ids.is_empty() {
        let entries: Vec<Value> = pipe.query(con).map_err(Some)?;
        let mut pending = inner.lock();
        for (id, entry) in ids.iter().zip(entries) {
            if let (Some(p), Some(e)) = (pending.get_mut(id), redis_io::text(&entry)) {
                p.entry = Some(e.to_string());
            }
        }
    }
    for out in batch {
        if let Out::Revoke(id, done) = out {
            let _answer = done.as_ref().map(Answer);
            let entry = inner.lock().get(id).and_then(|p| p.entry.clone());
            let Some(entry) = entry else { continue };
            // A revocation that fails leaves the job to run; it must not
            // fail the batch, whose jobs are already in the stream.
            let deleted: redis::RedisResult<i64> =
                REVOKE.call(&[&jobs]).arg(GROUP).arg(&entry).invoke(con);
            if let Err(e) = &deleted {
                tracing::warn!(error = %e, "cluster caller: could not take a job back");
            }
            if deleted == Ok(1) {
                if let Some(p) = inner.take(*id) {
                    p.completion.cancel();
                }
            }
        }
    }
    Ok(())
}

/// How long the reply reader blocks per `BLPOP`.
const REPLY_BLOCK: Duration = Duration::from_secs(5);

/// Answers a waiting revoker when dropped, however the revocation went.
struct Answer<'a>(&'a Sender<()>);

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

/// The reader thread: blocks on the reply list (no timeout: an idle caller
/// costs nothing), then takes what else is there in one round trip.
pub(super) fn receive(inner: &Inner) {
    let reply_key = inner.reply_key();
    let mut con: Option<Connection> = None;
    let mut pause = Duration::from_millis(20);
    let mut lost_connection = false;
    while !inner.stopping.load(Ordering::Acquire) || inner.outstanding() > 0 {
        if con.is_none() {
            // Blocks are bounded, and so is the wait for their answer: a
            // server whose host vanished without closing the connection
            // is noticed.
            match inner
                .server
                .connect(Some(REPLY_BLOCK + Duration::from_secs(10)))
            {
                Ok(mut c) => {
                    if lost_connection {
                        // The server may have restarted without its data.
                        if let Err(e) = fail_lost(inner, &mut c) {
                            tracing::warn!(error = %e, "cluster caller: checking for lost jobs failed");
                            continue;
                        }
                        lost_connection = false;
                    }
                    con = Some(c);
                    pause = Duration::from_millis(20);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cluster caller: cannot reach the queue; retrying");
                    if !inner.pause(pause) && inner.outstanding() == 0 {
                        return;
                    }
                    pause = (pause * 2).min(Duration::from_secs(1));
                    continue;
                }
            }
        }
        let Some(c) = con.as_mut() else { continue };
        let first: redis::RedisResult<Value> = redis::cmd("BLPOP")
            .arg(&reply_key)
            .arg(REPLY_BLOCK.as_secs())
            .query(c);
        let deliver = |blob: Vec<u8>| match inner.open_reply(&blob) {
            Some((_, Reply::Stop)) => {}
            Some((id, reply)) => inner.deliver(id, reply),
            None => tracing::warn!("cluster caller: malformed or unauthenticated reply ignored"),
        };
        let result = first.and_then(|v| {
            let Some(b) = redis_io::array(&v).get(1).and_then(redis_io::bytes) else {
                return Ok(()); // the block timed out
            };
            // The first reply is delivered at once; more are taken in one
            // round trip only while other jobs wait (a caller waiting for
            // one task at a time never pays for it).
            deliver(b.to_vec());
            if inner.outstanding() == 0 {
                return Ok(());
            }
            let more: Value = redis::cmd("LPOP")
                .arg(&reply_key)
                .arg(REPLY_BATCH)
                .query(c)?;
            for b in redis_io::array(&more) {
                if let Some(b) = redis_io::bytes(b) {
                    deliver(b.to_vec());
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            if is_connection_error(&e) {
                tracing::warn!(error = %e, "cluster caller: lost the queue; reconnecting");
                con = None;
                lost_connection = true;
            } else {
                tracing::error!(error = %e, "cluster caller: reading replies failed");
                inner.pause(pause);
            }
        }
    }
}

/// Fails the jobs that are neither in the stream nor answered: the server
/// lost them (it restarted without persistence, or the queue was deleted).
/// Workers remove an entry and queue its reply in one atomic step, so an
/// entry that is gone has its reply in the list, or it is lost.
fn fail_lost(inner: &Inner, con: &mut Connection) -> redis::RedisResult<()> {
    let entries: Vec<(u64, String)> = inner
        .lock()
        .iter()
        .filter_map(|(id, p)| Some((*id, p.entry.clone()?)))
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (_, entry) in &entries {
        pipe.cmd("XRANGE")
            .arg(inner.keys.jobs())
            .arg(entry)
            .arg(entry);
    }
    let found: Vec<Value> = pipe.query(con)?;
    let replies: Value = redis::cmd("LPOP")
        .arg(inner.reply_key())
        .arg(usize::MAX >> 1)
        .query(con)?;
    for blob in redis_io::array(&replies) {
        if let Some((id, reply)) = redis_io::bytes(blob).and_then(|b| inner.open_reply(b)) {
            inner.deliver(id, reply);
        }
    }
    for ((id, _), found) in entries.iter().zip(found) {
        if redis_io::array(&found).is_empty() {
            inner.fail(
                *id,
                Error::Redis {
                    server: inner.server.name.clone(),
                    operation: "waiting for a job".into(),
                    message: "the job is no longer in the queue and was not answered: the \
                              server restarted without its data, or the queue was deleted"
                        .into(),
                },
            );
        }
    }
    Ok(())
}

/// The keeper thread: renews the caller's heartbeat and gives up jobs of
/// dead workers that used their last attempt (workers do the same; the
/// caller does it too so that its futures fail even when no worker is
/// left).
pub(super) fn keep(inner: &Inner) {
    let mut con: Option<Connection> = None;
    let mut last_reap = Instant::now();
    loop {
        if !inner.pause(inner.settings.heartbeat) {
            return;
        }
        if con.is_none() {
            con = inner.server.connect(Some(COMMAND_TIMEOUT)).ok();
        }
        let Some(c) = con.as_mut() else { continue };
        let beat: redis::RedisResult<()> = redis::cmd("SET")
            .arg(inner.alive_key())
            .arg(1)
            .arg("PX")
            .arg(ms(inner.caller_ttl()))
            .query(c);
        if let Err(e) = beat {
            if is_connection_error(&e) {
                con = None;
            }
            continue;
        }
        inner.forget_answered(c);
        if last_reap.elapsed() >= inner.settings.reap_every && inner.outstanding() > 0 {
            last_reap = Instant::now();
            reap_exhausted(inner, c);
        }
    }
}

fn reap_exhausted(inner: &Inner, con: &mut Connection) {
    let Ok(stale) = reap_candidates(con, &inner.keys, &inner.settings, &inner.caller) else {
        return;
    };
    for (id, delivered) in stale {
        if delivered < u64::from(inner.settings.max_attempts) {
            continue; // a worker will run it again
        }
        let claimed: redis::RedisResult<Value> = redis::cmd("XCLAIM")
            .arg(inner.keys.jobs())
            .arg(GROUP)
            .arg(&inner.caller)
            .arg(ms(inner.settings.lease))
            .arg(&id)
            .query(con);
        for entry in claimed.as_ref().map(redis_io::entries).unwrap_or_default() {
            let reason = format!("its worker died or was lost on each of {delivered} attempts");
            give_up(
                con,
                &inner.keys,
                &inner.settings,
                &entry,
                delivered,
                &reason,
            );
        }
    }
}

/// Sends the stop marker to this caller's own reply list, waking its
/// reader.
pub(super) fn wake_reader(inner: &Inner) {
    if let Ok(mut c) = inner.server.connect(Some(COMMAND_TIMEOUT)) {
        let _: redis::RedisResult<()> = redis::pipe()
            .cmd("RPUSH")
            .arg(inner.reply_key())
            .arg(inner.keys.seal(
                super::queue::REPLY_LABEL,
                &inner.caller,
                Reply::Stop.encode(0),
            ))
            .ignore()
            .cmd("PEXPIRE")
            .arg(inner.reply_key())
            .arg(ms(inner.settings.reply_ttl))
            .ignore()
            .query(&mut c);
    }
}

/// Removes what this caller keeps in Redis: its heartbeat (workers then
/// drop its jobs and evict their objects) and its reply list.
pub(super) fn leave(inner: &Inner) {
    if let Ok(mut c) = inner.server.connect(Some(COMMAND_TIMEOUT)) {
        let _: redis::RedisResult<()> = redis::pipe()
            .cmd("DEL")
            .arg(inner.alive_key())
            .ignore()
            .cmd("DEL")
            .arg(inner.reply_key())
            .ignore()
            .cmd("DEL")
            .arg(inner.keys.inputs(&inner.caller))
            .ignore()
            .cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(inner.keys.jobs())
            .arg(GROUP)
            .arg(&inner.caller)
            .ignore()
            .cmd("SREM")
            .arg(inner.keys.callers())
            .arg(&inner.caller)
            .ignore()
            .query(&mut c);
    }
}

pub(super) type Outbox = Sender<Out>;
