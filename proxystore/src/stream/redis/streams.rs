//! A subscriber in a consumer group of a Redis stream.
//!
//! Each call reads the group's next event (`XREADGROUP ... >`). An event is
//! acknowledged as soon as every item of it is dropped (`XACK`, then
//! `XDEL`: acknowledged events are deleted), over a connection of the
//! acknowledgements' own; one that failed goes again with the next read.
//! When nothing comes for a while it takes over events idle longer than
//! `claim_idle` with another subscriber (`XAUTOCLAIM`), and looks for the
//! topic's end: the end key is set and the stream has no event left (every
//! event acknowledged), at which point the stream is deleted and the end
//! key set to expire. The end event itself (field `e`, not `m`) is held
//! back by the subscriber that reads it until the only events left are its
//! own, so that no event of a dead subscriber is left behind it. A thread
//! per subscriber claims its held events again every third of
//! `claim_idle`, while anything (the subscriber, one of its items) holds
//! them, so that a live consumer busy with an item keeps it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{ConnectionLike, Value};

use super::{end_key, finish, millis, request, topic_key, Link, FINISH_STREAMS, SLICE};
use crate::error::Result;
use crate::key::Key;
use crate::stream::broker::{Ack, Message, Next, Subscriber};

/// Events received and not yet acknowledged, and those to acknowledge.
#[derive(Default)]
struct Ledger {
    /// Held by items: when each was last claimed by this subscriber.
    held: HashMap<String, Instant>,
    /// Dropped by their items: to acknowledge and delete.
    done: Vec<String>,
}

/// Shared with the acknowledgements of the items given out.
struct Acks {
    ledger: Mutex<Ledger>,
    /// The connection acknowledgements go through, at once: a subscriber
    /// that holds the topic's end waits for them.
    connection: Mutex<Option<redis::Connection>>,
    /// The subscriber is gone.
    closed: AtomicBool,
    link: Link,
    key: String,
    end: String,
    group: String,
    grace: Duration,
}

impl Acks {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An item of event `id` was dropped: the event is acknowledged (and
    /// deleted) now; if that fails, with the subscriber's next read.
    fn done(&self, id: String) {
        self.ledger().held.remove(&id);
        let sent = {
            let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
            self.send(&mut connection, std::slice::from_ref(&id))
        };
        if let Err(e) = sent {
            tracing::debug!(key = %self.key, error = %e, "stream: an acknowledgement failed; sent again later");
            if !self.closed.load(Ordering::Acquire) {
                self.ledger().done.push(id);
            }
        }
    }

    /// Acknowledges and deletes `ids`; if that was the last event of an
    /// ended topic, removes the stream and sets its end's mark to expire.
    fn send(&self, connection: &mut Option<redis::Connection>, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let grace = millis(self.grace).to_string();
        let mut command = redis::cmd("EVAL");
        command
            .arg(ACK)
            .arg(2)
            .arg(&self.key)
            .arg(&self.end)
            .arg(&self.group)
            .arg(&grace)
            .arg(ids);
        request(&self.link, connection, "acknowledge (XACK)", SLICE, |c| {
            c.req_command(&command)
        })
        .map(drop)
    }
}

impl Acks {
    /// Claims again the events held longer than a third of `claim_idle`,
    /// so that no other subscriber takes them over while this one's items
    /// hold them.
    fn keep_held(&self, consumer: &str, claim_idle: Duration) -> Result<()> {
        let now = Instant::now();
        let stale: Vec<String> = {
            let mut ledger = self.ledger();
            ledger
                .held
                .iter_mut()
                .filter(|(_, at)| now.duration_since(**at) >= claim_idle / 3)
                .map(|(id, at)| {
                    *at = now;
                    id.clone()
                })
                .collect()
        };
        if stale.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        request(&self.link, &mut connection, "XCLAIM", SLICE, |c| {
            c.req_command(
                redis::cmd("XCLAIM")
                    .arg(&self.key)
                    .arg(&self.group)
                    .arg(consumer)
                    .arg(0)
                    .arg(&stale)
                    .arg("JUSTID"),
            )
        })
        .map(drop)
    }
}

/// Keeps a subscriber's held events its own, every third of `claim_idle`,
/// for as long as anything (the subscriber, an item) holds its `Acks`.
fn keep_held_every(acks: std::sync::Weak<Acks>, consumer: String, claim_idle: Duration) {
    loop {
        std::thread::sleep(claim_idle / 3);
        let Some(acks) = acks.upgrade() else {
            return;
        };
        if let Err(e) = acks.keep_held(&consumer, claim_idle) {
            tracing::debug!(key = %acks.key, error = %e, "stream: could not keep held events");
        }
    }
}

/// Removes a stream with no event and no consumer in any group.
const UNUSED: &str =
    "if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('XLEN', KEYS[1]) ~= 0 then \
                      return 0 end \
                      for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do \
                      for i = 1, #g, 2 do \
                      if g[i] == 'consumers' and g[i + 1] ~= 0 then return 0 end end end \
                      redis.call('DEL', KEYS[1]) return 1";

/// Acknowledges and deletes events (`ARGV[3..]`); the last of an ended
/// topic removes the stream and sets its end's mark to expire.
const ACK: &str = "redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3)) \
                   redis.call('XDEL', KEYS[1], unpack(ARGV, 3)) \
                   if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('XLEN', KEYS[1]) == 0 then \
                   redis.call('DEL', KEYS[1]) redis.call('PEXPIRE', KEYS[2], ARGV[2]) end return 1";

/// Receives the events of one topic of a [`RedisStreams`](super::RedisStreams)
/// broker, sharing them with the other subscribers of its group.
pub struct RedisStreamsSubscriber {
    acks: Arc<Acks>,
    topic: String,
    end_key: String,
    /// The topic's end event, held back until every other event is
    /// acknowledged.
    end: Option<Message>,
    consumer: String,
    connection: Option<redis::Connection>,
    claim_idle: Duration,
    grace: Duration,
    /// The topic ended and all of it was consumed.
    finished: bool,
    closed: bool,
}

impl RedisStreamsSubscriber {
    pub(super) fn new(
        link: Link,
        topic: String,
        group: String,
        claim_idle: Duration,
        grace: Duration,
    ) -> Result<Self> {
        let connection = Some(link.connect(SLICE)?);
        let mut subscriber = RedisStreamsSubscriber {
            acks: Arc::new(Acks {
                ledger: Mutex::default(),
                connection: Mutex::new(None),
                closed: AtomicBool::new(false),
                link,
                key: topic_key(&topic),
                end: end_key(&topic),
                group,
                grace,
            }),
            end_key: end_key(&topic),
            end: None,
            topic,
            consumer: format!("{}-{}", std::process::id(), Key::new()),
            connection,
            claim_idle,
            grace,
            finished: false,
            closed: false,
        };
        subscriber.join_group()?;
        let (acks, consumer) = (
            Arc::downgrade(&subscriber.acks),
            subscriber.consumer.clone(),
        );
        std::thread::Builder::new()
            .name("proxystore-stream-held".into())
            .spawn(move || keep_held_every(acks, consumer, claim_idle))
            .map_err(|source| crate::Error::ThreadSpawn {
                purpose: "keep a stream subscriber's events",
                source,
            })?;
        Ok(subscriber)
    }

    /// Creates the group (and the stream) unless it exists, reading from
    /// the stream's first event, and joins it.
    fn join_group(&mut self) -> Result<()> {
        let acks = &self.acks;
        let created = request(
            &acks.link,
            &mut self.connection,
            "XGROUP CREATE",
            SLICE,
            |c| {
                c.req_command(
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(&acks.key)
                        .arg(&acks.group)
                        .arg("0")
                        .arg("MKSTREAM"),
                )
            },
        );
        match created {
            Err(e) if e.to_string().contains("BUSYGROUP") => {}
            other => other.map(drop)?,
        }
        // Registered now, not at its first read: the group counts it (a
        // stream nobody reads is removed; see `UNUSED`).
        let consumer = &self.consumer;
        request(
            &acks.link,
            &mut self.connection,
            "XGROUP CREATECONSUMER",
            SLICE,
            |c| {
                c.req_command(
                    redis::cmd("XGROUP")
                        .arg("CREATECONSUMER")
                        .arg(&acks.key)
                        .arg(&acks.group)
                        .arg(consumer),
                )
            },
        )
        .map(drop)
    }

    /// A message of `entry` (`[id, [field, value, ...]]`), now held, and
    /// whether it is the topic's end. An entry of another shape (written
    /// by another program) is acknowledged and deleted.
    fn message(&self, entry: Value, redelivered: bool) -> Option<(Message, bool)> {
        let Value::Array(mut parts) = entry else {
            return None;
        };
        let fields = parts.pop()?;
        let id = match parts.pop()? {
            Value::BulkString(id) => String::from_utf8(id).ok()?,
            Value::SimpleString(id) => id,
            _ => return None,
        };
        let found = match fields {
            Value::Array(fields) if fields.len() == 2 => {
                let mut fields = fields.into_iter();
                match (fields.next(), fields.next()) {
                    (Some(Value::BulkString(name)), Some(Value::BulkString(value)))
                        if name == b"m" || name == b"e" =>
                    {
                        Some((value, name == b"e"))
                    }
                    _ => None,
                }
            }
            // Nil: deleted while pending.
            _ => None,
        };
        let Some((payload, end)) = found else {
            tracing::debug!(topic = %self.topic, %id, "stream: dropping an entry that is no event");
            self.acks.ledger().done.push(id);
            return None;
        };
        self.acks.ledger().held.insert(id.clone(), Instant::now());
        let acks = self.acks.clone();
        let message = Message {
            payload,
            ack: Some(Ack::new(move || acks.done(id))),
            redelivered,
        };
        Some((message, end))
    }

    /// The number of events in the stream: every event not yet
    /// acknowledged.
    fn len(&mut self) -> Result<i64> {
        let key = &self.acks.key;
        match request(&self.acks.link, &mut self.connection, "XLEN", SLICE, |c| {
            c.req_command(redis::cmd("XLEN").arg(key))
        })? {
            Value::Int(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// One `XREADGROUP` of at most `wait`, after the pending acknowledgements.
    fn read(&mut self, wait: Duration) -> Result<Option<Value>> {
        let done = std::mem::take(&mut self.acks.ledger().done);
        let acks = self.acks.clone();
        let consumer = &self.consumer;
        let mut pipe = redis::pipe();
        if !done.is_empty() {
            pipe.cmd("XACK")
                .arg(&acks.key)
                .arg(&acks.group)
                .arg(&done)
                .ignore()
                .cmd("XDEL")
                .arg(&acks.key)
                .arg(&done)
                .ignore();
        }
        pipe.cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&acks.group)
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(millis(wait))
            .arg("STREAMS")
            .arg(&acks.key)
            .arg(">");
        let read = request(&acks.link, &mut self.connection, "XREADGROUP", wait, |c| {
            pipe.query::<Vec<Value>>(c)
                .map(|mut v| v.pop().unwrap_or(Value::Nil))
        });
        match read {
            Ok(value) => Ok(first_entry(value)),
            Err(e) if gone(&e) => {
                // The stream existed since this subscriber joined its group
                // (it made it if need be): only the end of the topic, once
                // all of it was acknowledged, deletes it. The end's mark may
                // have expired since, while this subscriber was busy.
                self.ended()?;
                self.finished = true;
                Ok(None)
            }
            Err(e) => {
                self.acks.ledger().done.extend(done);
                Err(e)
            }
        }
    }

    /// Takes over one event idle longer than `claim_idle` with another
    /// subscriber (which died, or hangs).
    fn claim(&mut self) -> Result<Option<Value>> {
        let acks = &self.acks;
        let consumer = &self.consumer;
        let idle = millis(self.claim_idle);
        let claimed = request(&acks.link, &mut self.connection, "XAUTOCLAIM", SLICE, |c| {
            c.req_command(
                redis::cmd("XAUTOCLAIM")
                    .arg(&acks.key)
                    .arg(&acks.group)
                    .arg(consumer)
                    .arg(idle)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(1),
            )
        });
        match claimed {
            Ok(Value::Array(mut reply)) if reply.len() >= 2 => {
                let Value::Array(mut entries) = reply.swap_remove(1) else {
                    return Ok(None);
                };
                Ok(entries.pop())
            }
            Ok(_) => Ok(None),
            Err(e) if gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the topic has ended and all of it is consumed (the stream is
    /// then deleted and its end key set to expire).
    fn ended(&mut self) -> Result<bool> {
        let found = finish(
            &self.acks.link,
            &mut self.connection,
            FINISH_STREAMS,
            &self.topic,
            self.grace,
        )?;
        Ok(found == 1)
    }
}

/// Whether `e` says the stream or its group does not exist (any more).
fn gone(e: &crate::Error) -> bool {
    let text = e.to_string();
    text.contains("NOGROUP") || text.contains("UNBLOCKED")
}

/// The first entry of an `XREADGROUP` reply (`[[key, [entry, ...]]]`).
fn first_entry(reply: Value) -> Option<Value> {
    let Value::Array(streams) = reply else {
        return None;
    };
    let Value::Array(mut stream) = streams.into_iter().next()? else {
        return None;
    };
    let Value::Array(entries) = stream.pop()? else {
        return None;
    };
    entries.into_iter().next()
}

impl Subscriber for RedisStreamsSubscriber {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn next_message(&mut self, timeout: Option<Duration>) -> Result<Next> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            // Short enough that held events are claimed again in time.
            let slice = SLICE.min(self.claim_idle / 4);
            let wait = left
                .map_or(slice, |l| l.min(slice))
                .max(Duration::from_millis(1));
            let mut found = None;
            if let Some(entry) = self.read(wait)? {
                found = Some(self.message(entry, false));
            } else if !self.finished {
                if let Some(entry) = self.claim()? {
                    tracing::debug!(topic = %self.topic, "stream: took over an event of another subscriber");
                    found = Some(self.message(entry, true));
                }
            }
            match found {
                Some(Some((message, false))) => return Ok(Next::Message(message)),
                // The end waits until every other event is acknowledged
                // (those of a dead subscriber taken over first).
                Some(Some((end, true))) => self.end = Some(end),
                Some(None) => {}
                None if self.finished => return Ok(Next::Ended),
                None => {
                    if let Some(end) = self.end.take() {
                        // Every event but those this subscriber's own items
                        // hold (the end among them) is acknowledged.
                        let own = self.acks.ledger().held.len() as i64;
                        if self.len()? <= own {
                            return Ok(Next::Message(end));
                        }
                        self.end = Some(end);
                    } else if self.ended()? {
                        return Ok(Next::Ended);
                    }
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Next::Timeout);
            }
        }
    }

    fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        // An end held back and never given out stays pending, for another
        // subscriber to take over (it may carry the last objects).
        if let Some(end) = self.end.take() {
            if let Some(ack) = &end.ack {
                ack.disarm();
            }
        }
        let acks = self.acks.clone();
        acks.closed.store(true, Ordering::Release);
        let (done, holding) = {
            let mut ledger = acks.ledger();
            (std::mem::take(&mut ledger.done), !ledger.held.is_empty())
        };
        acks.send(&mut self.connection, &done)?;
        if !holding {
            // Nothing of this subscriber is pending: leave the group.
            let consumer = &self.consumer;
            let left = request(
                &acks.link,
                &mut self.connection,
                "XGROUP DELCONSUMER",
                SLICE,
                |c| {
                    c.req_command(
                        redis::cmd("XGROUP")
                            .arg("DELCONSUMER")
                            .arg(&acks.key)
                            .arg(&acks.group)
                            .arg(consumer),
                    )
                },
            );
            if let Err(e) = left {
                if !e.to_string().contains("NOGROUP") {
                    return Err(e);
                }
            }
            // An empty stream nobody reads (made by joining a topic that
            // never began) goes too; a producer's first event makes it again.
            let key = &acks.key;
            request(
                &acks.link,
                &mut self.connection,
                "close (EVAL)",
                SLICE,
                |c| c.req_command(redis::cmd("EVAL").arg(UNUSED).arg(1).arg(key)),
            )?;
        }
        // The last subscriber of an ended topic removes it.
        self.ended()?;
        self.closed = true;
        self.connection = None;
        Ok(())
    }
}

impl Drop for RedisStreamsSubscriber {
    fn drop(&mut self) {
        if !self.closed {
            if let Err(e) = self.close() {
                tracing::debug!(topic = %self.topic, error = %e, "stream: closing a subscriber failed");
            }
        }
    }
}

impl fmt::Debug for RedisStreamsSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamsSubscriber")
            .field("server", &self.acks.link)
            .field("topic", &self.topic)
            .field("group", &self.acks.group)
            .field("consumer", &self.consumer)
            .field("end", &self.end_key)
            .finish()
    }
}
