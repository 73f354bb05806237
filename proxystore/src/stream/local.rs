//! A broker inside one process: a queue per topic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::broker::{Message, Next, Publisher, Subscriber};
use crate::error::{Error, Result};

/// A topic's queue. The sender is dropped when the topic ends, so that
/// every subscriber, once the queue is drained, sees it disconnected.
#[derive(Debug)]
struct Queue {
    sender: Option<Sender<Vec<u8>>>,
    receiver: Receiver<Vec<u8>>,
    subscribers: usize,
}

impl Queue {
    fn new() -> Queue {
        let (sender, receiver) = crossbeam_channel::unbounded();
        Queue {
            sender: Some(sender),
            receiver,
            subscribers: 0,
        }
    }
}

/// A broker between the threads of one process: each topic is a queue,
/// and each message goes to one of the topic's subscribers (like Python
/// ProxyStore's queue shim). When the topic ends, every subscriber ends
/// with it, once the messages before the end are taken.
///
/// The objects themselves still go through the producer's store (or
/// inside the messages, without one); only events pass through here.
///
/// ```
/// use proxystore::stream::{LocalBroker, StreamConsumer, StreamProducer};
///
/// let broker = LocalBroker::new();
/// let mut consumer = StreamConsumer::<String>::new(broker.subscriber("greetings"));
/// let mut producer = StreamProducer::<String>::new(broker.publisher());
/// producer.send("greetings", "hello".to_string())?;
/// producer.close_topic("greetings")?;
///
/// let got: Vec<String> = consumer.objects().collect::<Result<_, _>>()?;
/// assert_eq!(got, ["hello"]);
/// # Ok::<(), proxystore::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct LocalBroker {
    topics: Arc<Mutex<HashMap<String, Queue>>>,
}

impl LocalBroker {
    /// A broker with no topic yet.
    pub fn new() -> LocalBroker {
        LocalBroker::default()
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn receiver(&self, topic: &str) -> Receiver<Vec<u8>> {
        let mut topics = self.topics();
        let queue = topics.entry(topic.to_string()).or_insert_with(Queue::new);
        queue.subscribers += 1;
        queue.receiver.clone()
    }

    fn send(&self, topic: &str, parts: &[&[u8]], end: bool) -> Result<()> {
        let mut topics = self.topics();
        let queue = topics.entry(topic.to_string()).or_insert_with(Queue::new);
        let sender = if end {
            queue.sender.take()
        } else {
            queue.sender.clone()
        };
        let sender = sender.ok_or_else(|| Error::TopicClosed {
            topic: topic.to_string(),
        })?;
        sender.send(parts.concat()).map_err(|_| Error::Broker {
            broker: "in-process".into(),
            operation: format!("publish to `{topic}`"),
            message: "the topic's queue is gone".into(),
        })
    }

    /// A publisher to any topic of this broker.
    pub fn publisher(&self) -> LocalPublisher {
        LocalPublisher {
            broker: self.clone(),
        }
    }

    /// A subscriber of `topic`.
    pub fn subscriber(&self, topic: impl Into<String>) -> LocalSubscriber {
        let topic = topic.into();
        let receiver = self.receiver(&topic);
        LocalSubscriber {
            topic,
            receiver,
            broker: self.clone(),
        }
    }

    /// Forgets `topic` once it has ended, its last message has been taken
    /// and no other subscriber remains.
    fn release(&self, topic: &str) {
        let mut topics = self.topics();
        if let Some(queue) = topics.get_mut(topic) {
            queue.subscribers -= 1;
            if queue.sender.is_none() && queue.receiver.is_empty() && queue.subscribers == 0 {
                topics.remove(topic);
            }
        }
    }

    /// How many topics the broker knows (ended topics are forgotten once
    /// drained and their subscribers closed).
    pub fn topic_count(&self) -> usize {
        self.topics().len()
    }
}

/// Publishes to a [`LocalBroker`].
#[derive(Clone, Debug)]
pub struct LocalPublisher {
    broker: LocalBroker,
}

impl Publisher for LocalPublisher {
    fn publish(&self, topic: &str, parts: &[&[u8]]) -> Result<()> {
        self.broker.send(topic, parts, false)
    }

    fn publish_end(&self, topic: &str, parts: &[&[u8]]) -> Result<()> {
        self.broker.send(topic, parts, true)
    }
}

/// Receives one topic of a [`LocalBroker`].
#[derive(Debug)]
pub struct LocalSubscriber {
    topic: String,
    receiver: Receiver<Vec<u8>>,
    broker: LocalBroker,
}

impl Drop for LocalSubscriber {
    fn drop(&mut self) {
        self.broker.release(&self.topic);
    }
}

impl Subscriber for LocalSubscriber {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn next_message(&mut self, timeout: Option<Duration>) -> Result<Next> {
        let received = match timeout {
            None => self
                .receiver
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
            Some(timeout) => self.receiver.recv_timeout(timeout),
        };
        match received {
            Ok(payload) => Ok(Next::Message(Message::new(payload))),
            Err(RecvTimeoutError::Timeout) => Ok(Next::Timeout),
            // The topic ended and its queue is drained.
            Err(RecvTimeoutError::Disconnected) => Ok(Next::Ended),
        }
    }
}
