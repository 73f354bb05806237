//! A subscriber of a Redis list.

use std::fmt;
use std::time::{Duration, Instant};

use redis::{ConnectionLike, Value};

use super::{end_key, finish, request, topic_key, Link, FINISH_QUEUE, SLICE};
use crate::error::Result;
use crate::stream::broker::{Message, Next, Subscriber};

/// Takes the events of one topic of a [`RedisQueue`](super::RedisQueue),
/// each shared with no other subscriber.
pub struct RedisQueueSubscriber {
    link: Link,
    topic: String,
    key: String,
    connection: Option<redis::Connection>,
    grace: Duration,
    /// It received an event of the topic.
    seen: bool,
    closed: bool,
}

impl RedisQueueSubscriber {
    pub(super) fn new(link: Link, topic: String, grace: Duration) -> Result<Self> {
        let connection = Some(link.connect(SLICE)?);
        Ok(RedisQueueSubscriber {
            key: topic_key(&topic),
            link,
            topic,
            connection,
            grace,
            seen: false,
            closed: false,
        })
    }
}

impl Subscriber for RedisQueueSubscriber {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn next_message(&mut self, timeout: Option<Duration>) -> Result<Next> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            // BLPOP's timeout is in seconds; 0 would wait for ever.
            let wait = left
                .map_or(SLICE, |l| l.min(SLICE))
                .max(Duration::from_millis(1));
            let seconds = format!("{:.3}", wait.as_secs_f64());
            let key = &self.key;
            let popped = request(&self.link, &mut self.connection, "BLPOP", SLICE, |c| {
                c.req_command(redis::cmd("BLPOP").arg(key).arg(&seconds))
            })?;
            if let Value::Array(mut pair) = popped {
                if let Some(Value::BulkString(payload)) = pair.pop() {
                    self.seen = true;
                    return Ok(Next::Message(Message::new(payload)));
                }
            }
            // Nothing came: has the topic ended, its last event taken by
            // another subscriber? Either its mark says so, or (the mark
            // expired while this subscriber was busy) no trace of a topic
            // it saw under way is left.
            let found = finish(
                &self.link,
                &mut self.connection,
                FINISH_QUEUE,
                &self.topic,
                self.grace,
            )?;
            if found == 1 || (found == 2 && self.seen) {
                return Ok(Next::Ended);
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
        // The subscriber that took the end event sets its mark to expire.
        finish(
            &self.link,
            &mut self.connection,
            FINISH_QUEUE,
            &self.topic,
            self.grace,
        )?;
        self.closed = true;
        self.connection = None;
        Ok(())
    }
}

impl Drop for RedisQueueSubscriber {
    fn drop(&mut self) {
        if !self.closed {
            if let Err(e) = self.close() {
                tracing::debug!(topic = %self.topic, error = %e, "stream: closing a queue subscriber failed");
            }
        }
    }
}

impl fmt::Debug for RedisQueueSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQueueSubscriber")
            .field("server", &self.link)
            .field("topic", &self.topic)
            .field("end", &end_key(&self.topic))
            .finish()
    }
}
