//! Jobs of dead workers and callers: reaping stale entries, giving up on
//! jobs out of attempts, sweeping what dead callers left, forgetting dead
//! consumers.

use redis::{Connection, Value};

use super::super::queue::{
    ms, Keys, Reply, Settings, GIVE_UP, GROUP, INPUTS_LABEL, NOTIFY, REPLY_LABEL,
};
use super::super::redis_io::{self, Entry};
use super::entry::{orphaned, JobEntry};

/// Entries (id, times delivered) of consumers whose heartbeat expired and
/// whose lease ran out, other than `me`.
pub(crate) fn reap_candidates(
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
pub(crate) fn give_up(
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
    let name = crate::task::ReceivedJob::parse(job.job)
        .map(|j| j.name().to_string())
        .unwrap_or_else(|_| "?".into());
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
pub(super) fn sweep_dead_callers(con: &mut Connection, keys: &Keys) {
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
                    crate::task::evict_result(&output);
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
                    super::super::queue::evict_recorded(record);
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

/// The fields of each consumer in an `XINFO CONSUMERS` reply.
fn consumers(info: &Value) -> Vec<Vec<(String, &Value)>> {
    redis_io::array(info)
        .iter()
        .map(|consumer| match consumer {
            Value::Map(kv) => kv
                .iter()
                .filter_map(|(k, v)| Some((redis_io::text(k)?.to_string(), v)))
                .collect(),
            other => redis_io::array(other)
                .chunks(2)
                .filter_map(|kv| Some((redis_io::text(kv.first()?)?.to_string(), kv.get(1)?)))
                .collect(),
        })
        .collect()
}

/// How many workers of the queue are alive: consumers of its group (a
/// worker is one from its first read) whose heartbeat key exists. Callers,
/// which become consumers only to give jobs up, are told apart by their
/// names (hexadecimal digits alone; a worker's has its host and process
/// id, joined by `-`).
pub(crate) fn live_workers(con: &mut Connection, keys: &Keys) -> redis::RedisResult<usize> {
    let info: Value = match redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(keys.jobs())
        .arg(GROUP)
        .query(con)
    {
        Ok(info) => info,
        // No stream or no group yet: nobody has served it.
        Err(e) if e.code() == Some("NOGROUP") || e.to_string().contains("no such key") => {
            return Ok(0)
        }
        Err(e) => return Err(e),
    };
    let workers: Vec<String> = consumers(&info)
        .iter()
        .filter_map(|fields| {
            let (_, name) = fields.iter().find(|(k, _)| k == "name")?;
            redis_io::text(name).map(str::to_string)
        })
        .filter(|name| name.contains('-'))
        .collect();
    if workers.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for w in &workers {
        pipe.cmd("EXISTS").arg(keys.alive(w));
    }
    let alive: Vec<i64> = pipe.query(con)?;
    Ok(alive.into_iter().filter(|a| *a == 1).count())
}

/// The live workers of the queue per host, and the jobs they hold (run
/// now): `(host, workers, running)`, by host name.
pub(crate) fn workers_by_host(
    con: &mut Connection,
    keys: &Keys,
) -> redis::RedisResult<Vec<(String, usize, usize)>> {
    let info: Value = match redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(keys.jobs())
        .arg(GROUP)
        .query(con)
    {
        Ok(info) => info,
        Err(e) if e.code() == Some("NOGROUP") || e.to_string().contains("no such key") => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    // A worker's name is `host-pid-suffix`; a caller's has no `-`.
    let workers: Vec<(String, String, usize)> = consumers(&info)
        .iter()
        .filter_map(|fields| {
            let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
            let name = redis_io::text(field("name")?)?.to_string();
            let mut parts = name.rsplitn(3, '-');
            let (_, _, host) = (parts.next()?, parts.next()?, parts.next()?);
            let pending = match field("pending") {
                Some(Value::Int(n)) => usize::try_from(*n).unwrap_or(0),
                _ => 0,
            };
            Some((host.to_string(), name, pending))
        })
        .collect();
    if workers.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (_, name, _) in &workers {
        pipe.cmd("EXISTS").arg(keys.alive(name));
    }
    let alive: Vec<i64> = pipe.query(con)?;
    let mut hosts = std::collections::BTreeMap::<String, (usize, usize)>::new();
    for ((host, _, pending), alive) in workers.into_iter().zip(alive) {
        if alive == 1 {
            let entry = hosts.entry(host).or_default();
            entry.0 += 1;
            entry.1 += pending;
        }
    }
    Ok(hosts.into_iter().map(|(h, (w, r))| (h, w, r)).collect())
}

/// Removes consumers that hold no jobs and whose heartbeat expired, so the
/// group does not collect the names of every worker that ever ran.
pub(super) fn forget_dead_consumers(con: &mut Connection, keys: &Keys, settings: &Settings) {
    let Ok(info) = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(keys.jobs())
        .arg(GROUP)
        .query::<Value>(con)
    else {
        return;
    };
    for fields in consumers(&info) {
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

/// A worker taking over the jobs of dead ones.
impl super::Serving<'_> {
    /// Takes over one job of a consumer whose heartbeat expired and whose
    /// lease ran out, and returns it with its attempt number, after giving
    /// up those that used their last attempt. One: this worker runs one job
    /// at a time, and the other jobs of a dead host go to whichever workers
    /// are free (each reaper claims only what it can run now).
    pub(super) fn reap(&mut self) -> Option<(Entry, u64)> {
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
                    let job = JobEntry::parse(&entry);
                    let name = job
                        .as_ref()
                        .and_then(|j| crate::task::ReceivedJob::parse(j.job).ok())
                        .map(|j| j.name().to_string())
                        .unwrap_or_else(|| "?".into());
                    let task_id = job.as_ref().and_then(|j| j.task).map(|t| format!("#{t}"));
                    let caller = job.as_ref().map(|j| j.caller.to_string());
                    tracing::info!(
                        entry = %entry.id,
                        task = %name,
                        id = task_id.as_deref().unwrap_or("?"),
                        caller = caller.as_deref().unwrap_or("?"),
                        attempt = delivered + 1,
                        "cluster worker: re-running a job of a dead worker: task {name} {} of \
                         caller {}",
                        task_id.as_deref().unwrap_or("(id unknown)"),
                        caller.as_deref().unwrap_or("?"),
                    );
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

    /// Tells the caller of a job taken over from a dead (or stopped)
    /// worker that it runs again.
    pub(super) fn notify_rerun(&mut self, entry: &Entry, attempt: u64) {
        let keys = &self.w.keys;
        let Some(job) = JobEntry::parse(entry).filter(|_| keys.authentic(entry)) else {
            return;
        };
        let notice = keys.seal(
            REPLY_LABEL,
            job.caller,
            Reply::Rerun { attempt }.encode(job.id),
        );
        let ttl = job.reply_ttl.unwrap_or(ms(self.w.settings.reply_ttl));
        let _: redis::RedisResult<i64> = NOTIFY
            .call(&[&keys.reply(job.caller), &keys.alive(job.caller)])
            .arg(notice)
            .arg(ttl)
            .invoke(&mut self.con);
    }
}
