//! A subscriber of a Redis pub/sub channel.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::{topic_key, Link, SLICE};
use crate::error::{Error, Result};
use crate::stream::broker::{Message, Next, Subscriber};

/// Receives every event published to one topic of a
/// [`RedisPubSub`](super::RedisPubSub) while it listens.
///
/// A thread of its own reads the channel (a subscribed connection can do
/// nothing else); events wait in this process until they are asked for.
pub struct RedisPubSubSubscriber {
    link: Link,
    topic: String,
    messages: Receiver<Result<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl RedisPubSubSubscriber {
    pub(super) fn new(link: Link, topic: String) -> Result<Self> {
        let mut connection = link.connect(Duration::ZERO)?;
        let channel = topic_key(&topic);
        let (sender, messages) = crossbeam_channel::unbounded();
        let (subscribed, ready) = crossbeam_channel::bounded(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let reader_link = link.clone();
        std::thread::Builder::new()
            .name("proxystore-pubsub".into())
            .spawn(move || {
                // The subscription lives as long as this `PubSub` (dropping
                // it unsubscribes), so all of it happens on this thread.
                let mut pubsub = connection.as_pubsub();
                let result = pubsub
                    .subscribe(&channel)
                    .and_then(|()| pubsub.set_read_timeout(Some(SLICE)))
                    .map_err(|e| reader_link.error("SUBSCRIBE", &e));
                let ok = result.is_ok();
                let _ = subscribed.send(result);
                if !ok {
                    return;
                }
                while !stopped.load(Ordering::Relaxed) {
                    match pubsub.get_message() {
                        Ok(message) => {
                            let payload = message.get_payload_bytes().to_vec();
                            if sender.send(Ok(payload)).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.is_timeout() => {}
                        Err(e) => {
                            let _ = sender.send(Err(reader_link.error("read a message", &e)));
                            break;
                        }
                    }
                }
            })
            .map_err(|source| Error::ThreadSpawn {
                purpose: "read a Redis pub/sub channel",
                source,
            })?;
        // Subscribed before this returns: nothing published from now on is
        // missed.
        ready.recv().map_err(|_| Error::Redis {
            server: link.server.clone(),
            operation: "SUBSCRIBE".into(),
            message: "the subscribing thread stopped".into(),
        })??;
        Ok(RedisPubSubSubscriber {
            link,
            topic,
            messages,
            stop,
        })
    }
}

impl Subscriber for RedisPubSubSubscriber {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn next_message(&mut self, timeout: Option<Duration>) -> Result<Next> {
        let received = match timeout {
            None => self
                .messages
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
            Some(timeout) => self.messages.recv_timeout(timeout),
        };
        match received {
            Ok(Ok(payload)) => Ok(Next::Message(Message::new(payload))),
            Ok(Err(e)) => Err(e),
            Err(RecvTimeoutError::Timeout) => Ok(Next::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Redis {
                server: self.link.server.clone(),
                operation: "read a message".into(),
                message: "the subscription's connection was lost; subscribe again".into(),
            }),
        }
    }

    fn close(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for RedisPubSubSubscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl fmt::Debug for RedisPubSubSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPubSubSubscriber")
            .field("server", &self.link)
            .field("topic", &self.topic)
            .finish()
    }
}
