//! The reader thread: replies read from this caller's list and delivered.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::{Connection, Value};

use super::super::queue::{ms, Reply, REPLY_BATCH};
use super::super::redis_io::{self, is_connection_error, COMMAND_TIMEOUT};
use super::Inner;
use crate::error::Error;
use crate::runtime::Backoff;

/// How long the reply reader blocks per `BLPOP`.
const REPLY_BLOCK: Duration = Duration::from_secs(5);

/// The reader thread: blocks on the reply list (no timeout: an idle caller
/// costs nothing), then takes what else is there in one round trip.
pub(in crate::executor::cluster) fn receive(inner: &Inner) {
    let reply_key = inner.reply_key();
    let mut con: Option<Connection> = None;
    let first_pause = || Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
    let mut backoff = first_pause();
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
                    backoff = first_pause();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cluster caller: cannot reach the queue; retrying");
                    if !inner.pause(backoff.pause()) && inner.outstanding() == 0 {
                        return;
                    }
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
            Some((_, Reply::Stop, _)) => {}
            Some((id, reply, host)) => inner.deliver(id, reply, host),
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
                inner.pause(backoff.pause());
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
        if let Some((id, reply, host)) = redis_io::bytes(blob).and_then(|b| inner.open_reply(b)) {
            inner.deliver(id, reply, host);
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

/// Sends the stop marker to this caller's own reply list, waking its
/// reader.
pub(in crate::executor::cluster) fn wake_reader(inner: &Inner) {
    if let Ok(mut c) = inner.server.connect(Some(COMMAND_TIMEOUT)) {
        let _: redis::RedisResult<()> = redis::pipe()
            .cmd("RPUSH")
            .arg(inner.reply_key())
            .arg(inner.keys.seal(
                super::super::queue::REPLY_LABEL,
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
