//! The sender thread: job entries written to the stream in batches.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use redis::{Connection, Value};

use super::super::auth::{Signed, MAC_FIELD};
use super::super::queue::{ms, GROUP, REVOKE};
use super::super::redis_io::{self, COMMAND_TIMEOUT};
use super::{Inner, Out};
use crate::error::Error;

/// Answers a waiting revoker when dropped, however the revocation went.
struct Answer<'a>(&'a Sender<()>);

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

/// The sender thread: adds jobs to the stream, many per round trip, and
/// takes back jobs being cancelled.
pub(in crate::executor::cluster) fn send(inner: &Inner, out: &Receiver<Out>) {
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
        if let Out::Job { id, job, task } = out {
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
            let (id_text, attempts, ttl, task) = (
                id.to_string(),
                inner.settings.max_attempts.to_string(),
                ms(inner.settings.reply_ttl).to_string(),
                task.get().to_string(),
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
                .arg(&evict)
                .arg("task")
                .arg(&task);
            // Workers with the queue's secret act only on entries it signed.
            if let Some(mac) = inner.keys.sign(&Signed {
                job: &scratch,
                caller: inner.caller.as_bytes(),
                id: id_text.as_bytes(),
                attempts: attempts.as_bytes(),
                ttl: ttl.as_bytes(),
                evict: &evict,
                task: task.as_bytes(),
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
