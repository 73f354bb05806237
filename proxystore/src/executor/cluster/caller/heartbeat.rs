//! The caller's heartbeat thread, and leaving the queue.

use std::time::Instant;

use redis::{Connection, Value};

use super::super::queue::{ms, GROUP, KEEP, LEAVE};
use super::super::redis_io::{self, is_connection_error, COMMAND_TIMEOUT};
use super::super::serve::{give_up, live_workers, reap_candidates};
use super::Inner;

/// The heartbeat thread: renews the caller's heartbeat and gives up jobs of
/// dead workers that used their last attempt (workers do the same; the
/// caller does it too so that its futures fail even when no worker is
/// left).
pub(in crate::executor::cluster) fn heartbeat(inner: &Inner) {
    let mut con: Option<Connection> = None;
    let mut last_reap = Instant::now();
    let mut watch = NoWorker::default();
    loop {
        if !inner.pause(inner.settings.heartbeat) {
            return;
        }
        if con.is_none() {
            con = inner.server.connect(Some(COMMAND_TIMEOUT)).ok();
        }
        let Some(c) = con.as_mut() else { continue };
        let beat: redis::RedisResult<()> = redis::pipe()
            .cmd("SET")
            .arg(inner.alive_key())
            .arg(1)
            .arg("PX")
            .arg(ms(inner.caller_ttl()))
            .ignore()
            .cmd("PEXPIRE")
            .arg(inner.keys.callers())
            .arg(super::super::ms_callers(&inner.settings))
            .ignore()
            .query(c);
        if let Err(e) = beat {
            if is_connection_error(&e) {
                con = None;
            }
            continue;
        }
        let _ = keep_stream(inner, c);
        inner.forget_answered(c);
        watch.check(inner, c);
        if last_reap.elapsed() >= inner.settings.reap_every && inner.outstanding() > 0 {
            last_reap = Instant::now();
            reap_exhausted(inner, c);
        }
    }
}

/// Renews the expiry of the queue's stream (see [`KEEP`]).
pub(in crate::executor::cluster) fn keep_stream(
    inner: &Inner,
    con: &mut Connection,
) -> redis::RedisResult<i64> {
    KEEP.call(&[&inner.keys.jobs()])
        .arg(ms(inner.settings.idle_stream_ttl()))
        .arg(ms(inner.settings.busy_stream_ttl()))
        .invoke(con)
}

/// Watches for a queue with tasks waiting and no live worker.
#[derive(Default)]
struct NoWorker {
    /// Since when tasks have waited with no live worker.
    since: Option<Instant>,
    warned: Option<Instant>,
}

impl NoWorker {
    fn check(&mut self, inner: &Inner, con: &mut Connection) {
        let waiting = inner.outstanding();
        if waiting == 0 {
            self.since = None;
            return;
        }
        match live_workers(con, &inner.keys) {
            Ok(0) => {}
            Ok(_) => {
                self.since = None;
                return;
            }
            Err(_) => return,
        }
        let every = inner.settings.no_worker_warning;
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() < every || self.warned.is_some_and(|w| w.elapsed() < every) {
            return;
        }
        self.warned = Some(Instant::now());
        let queue = inner.keys.queue();
        let server = &inner.server.name;
        tracing::warn!(
            target: "proxystore::executor",
            queue,
            server = %server,
            waiting,
            "cluster queue {queue:?} on {server}: {waiting} task(s) waiting and no live worker \
             for {:.0?}; start workers of this queue: run this program on a worker host with \
             PROXYSTORE_CLUSTER=redis://{server} PROXYSTORE_QUEUE={queue} (and the server's \
             credentials, if any)",
            since.elapsed(),
        );
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

/// Removes what this caller keeps in Redis: its heartbeat (workers then
/// drop its jobs and evict their objects) and its reply list.
pub(in crate::executor::cluster) fn leave_queue(inner: &Inner) {
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
        // The last to leave removes the queue's stream, if empty.
        let _: redis::RedisResult<i64> = LEAVE
            .call(&[
                &inner.keys.jobs(),
                &inner.keys.callers(),
                &inner.alive_key(),
            ])
            .arg(GROUP)
            .arg(&inner.caller)
            .arg(inner.keys.alive_prefix())
            .invoke(&mut c);
    }
}
