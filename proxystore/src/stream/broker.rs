//! What a stream needs of a message broker: a [`Publisher`] and a
//! [`Subscriber`] of byte messages per topic.

use std::fmt;
use std::time::Duration;

use crate::error::Result;

/// Publishes messages to topics: the producer side of a broker.
///
/// Messages of one topic must reach subscribers in the order they were
/// published. Implement it (with [`Subscriber`]) to stream through a
/// broker of your own.
pub trait Publisher: Send + Sync + fmt::Debug + 'static {
    /// Publishes one message (the concatenation of `parts`) to `topic`.
    fn publish(&self, topic: &str, parts: &[&[u8]]) -> Result<()>;

    /// Publishes a topic's last message, after which no other comes. The
    /// default publishes it like any other; a broker that shares one
    /// topic's messages among several subscribers overrides it, so that
    /// every subscriber learns the topic has ended, not only the one that
    /// receives the message.
    fn publish_end(&self, topic: &str, parts: &[&[u8]]) -> Result<()> {
        self.publish(topic, parts)
    }

    /// Releases the publisher's resources (connections). The default does
    /// nothing.
    fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Receives the messages of one topic: the consumer side of a broker.
pub trait Subscriber: Send + fmt::Debug + 'static {
    /// The topic this subscriber receives.
    fn topic(&self) -> &str;

    /// The next message, waiting at most `timeout` (`None`: until one
    /// comes).
    fn next_message(&mut self, timeout: Option<Duration>) -> Result<Next>;

    /// Releases the subscriber's resources. The default does nothing.
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What [`Subscriber::next_message`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum Next {
    /// A message.
    Message(Message),
    /// Nothing arrived in time.
    Timeout,
    /// The topic has ended, and this subscriber will receive nothing more
    /// of it (the end was received by another subscriber of the topic).
    Ended,
}

/// A message received.
pub struct Message {
    /// The message, as published.
    pub payload: Vec<u8>,
    /// Acknowledges the message when dropped (durable brokers): the
    /// consumer drops it once every object of the message has been used.
    pub ack: Option<Ack>,
    /// The message was delivered before, to a subscriber that did not
    /// acknowledge it (it died): its objects may have been used already.
    pub redelivered: bool,
}

impl Message {
    /// A message of `payload`, delivered for the first time, with nothing
    /// to acknowledge.
    pub fn new(payload: Vec<u8>) -> Message {
        Message {
            payload,
            ack: None,
            redelivered: false,
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("len", &self.payload.len())
            .field("ack", &self.ack.is_some())
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

/// Acknowledges a message when dropped: runs the action it was made with,
/// once, unless it was [`disarm`](Ack::disarm)ed or the thread is
/// panicking (the message is then delivered again, on a durable broker).
pub struct Ack(std::sync::Mutex<Option<Box<dyn FnOnce() + Send + Sync>>>);

impl Ack {
    /// An acknowledgement that runs `action` when dropped.
    pub fn new(action: impl FnOnce() + Send + Sync + 'static) -> Ack {
        Ack(std::sync::Mutex::new(Some(Box::new(action))))
    }

    /// Leaves the message unacknowledged: it was not used (all of it).
    pub fn disarm(&self) {
        let action = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(action);
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        let action = self.0.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(action) = action {
            if !std::thread::panicking() {
                action();
            }
        }
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ack")
    }
}
