//! The caller's heartbeat thread, and leaving the queue.

use std::time::Instant;

use redis::{Connection, Value};

use super::super::queue::{ms, GROUP};
use super::super::redis_io::{self, is_connection_error, COMMAND_TIMEOUT};
use super::super::serve::{give_up, reap_candidates};
use super::Inner;

/// The heartbeat thread: renews the caller's heartbeat and gives up jobs of
/// dead workers that used their last attempt (workers do the same; the
/// caller does it too so that its futures fail even when no worker is
/// left).
pub(in crate::executor::cluster) fn heartbeat(inner: &Inner) {
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
    }
}
