//! The consumer side of a stream.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::broker::{Ack, Next, Subscriber};
use super::event::{Head, Incoming};
use super::filter::Filter;
use super::item::{Item, Payload};
use super::Metadata;
use crate::codec;
use crate::error::{Error, Result};
use crate::owned::OwnedProxy;
use crate::proxy::Proxy;
use crate::store::{Factory, StoreConfig};
use crate::Storable;

/// A message being read, event by event. Dropped with events left unread
/// (the consumer stopped), it is not acknowledged, so a durable broker
/// delivers it again; without one, the owned objects of its unread events
/// are evicted (nobody will receive them).
struct Batch {
    incoming: Incoming,
    next: usize,
    topic: Arc<str>,
    /// Shared by the items of the message: acknowledged once all are
    /// dropped.
    ack: Option<Arc<Ack>>,
    redelivered: bool,
}

/// Yields the objects of one topic of a stream, in order, until its end.
///
/// A consumer is an [`Iterator`] of [`Item`]s: each dereferences to the
/// object (read from its store on first use) and carries its
/// [`Metadata`]. Iteration ends (`None`) at the end of the topic (the
/// producer's [`close_topic`](super::StreamProducer::close_topic)); an
/// error (a broker that failed, a malformed event, a timeout) is yielded
/// as `Some(Err(..))`, and iteration may go on after it.
///
/// ```
/// use proxystore::stream::{Item, LocalBroker, Metadata, StreamConsumer, StreamProducer};
///
/// let broker = LocalBroker::new();
/// let mut producer = StreamProducer::<u64>::new(broker.publisher());
/// for i in 0..10u64 {
///     producer.send_with("numbers", i * i, Metadata::new().with("i", i as i64))?;
/// }
/// producer.close_topic("numbers")?;
///
/// // Only the events whose metadata passes the filter are yielded.
/// let consumer = StreamConsumer::<u64>::builder(broker.subscriber("numbers"))
///     .filter(|meta| meta.get("i").and_then(|v| v.as_i64()).is_some_and(|i| i % 3 == 0))
///     .build();
/// let squares: Vec<u64> = consumer.map(|item| Ok::<_, proxystore::Error>(*item?)).collect::<Result<_, _>>()?;
/// assert_eq!(squares, [0, 9, 36, 81]);
/// # Ok::<(), proxystore::Error>(())
/// ```
///
/// An object the consumer owns (see [`StreamProducer`](super::StreamProducer))
/// is evicted when its item is dropped, or when it is filtered out here.
/// [`next_object`](StreamConsumer::next_object) reads the object and
/// evicts it at once. [`into_stream`](StreamConsumer::into_stream) gives
/// the same items as an async `Stream`.
pub struct StreamConsumer<T: Storable> {
    subscriber: Box<dyn Subscriber>,
    filter: Filter,
    pub(super) timeout: Option<Duration>,
    batch: Option<Batch>,
    /// The configuration of the last batch's store, shared by its proxies.
    config: Option<Arc<StoreConfig>>,
    ended: bool,
    _type: PhantomData<fn() -> T>,
}

/// Options of a [`StreamConsumer`]; see [`StreamConsumer::builder`].
#[must_use]
pub struct StreamConsumerBuilder<T: Storable> {
    consumer: StreamConsumer<T>,
}

impl<T: Storable> StreamConsumerBuilder<T> {
    /// Yields only the objects whose metadata `keep` accepts (like
    /// [`Iterator::filter`]). Objects this consumer owns that are left out
    /// are evicted.
    pub fn filter(mut self, keep: impl FnMut(&Metadata) -> bool + Send + 'static) -> Self {
        self.consumer.filter.add(keep);
        self
    }

    /// Yields each object with probability `fraction` (in `[0, 1]`), after
    /// the [`filter`](StreamConsumerBuilder::filter).
    pub fn sample(mut self, fraction: f64) -> Self {
        self.consumer.filter.sample(fraction);
        self
    }

    /// Fails with [`Error::StreamTimeout`] when no event arrives for
    /// `timeout` (default: wait until one does).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.consumer.timeout = Some(timeout);
        self
    }

    /// The consumer.
    pub fn build(self) -> StreamConsumer<T> {
        self.consumer
    }
}

impl<T: Storable> StreamConsumer<T> {
    /// A consumer of `subscriber`'s topic.
    pub fn new(subscriber: impl Subscriber) -> StreamConsumer<T> {
        StreamConsumer::builder(subscriber).build()
    }

    /// Options for a consumer of `subscriber`'s topic.
    pub fn builder(subscriber: impl Subscriber) -> StreamConsumerBuilder<T> {
        StreamConsumerBuilder {
            consumer: StreamConsumer {
                subscriber: Box::new(subscriber),
                filter: Filter::default(),
                timeout: None,
                batch: None,
                config: None,
                ended: false,
                _type: PhantomData,
            },
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        self.subscriber.topic()
    }

    /// The next item, `Ok(None)` at the end of the topic: what
    /// [`Iterator::next`] yields, error first.
    pub fn next_item(&mut self) -> Result<Option<Item<T>>> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        loop {
            let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match self.poll_item(wait)? {
                Some(item) => return Ok(item),
                None if deadline.is_some_and(|d| Instant::now() >= d) => {
                    return Err(Error::StreamTimeout {
                        topic: self.topic().to_string(),
                        after: self.timeout.unwrap_or_default(),
                    })
                }
                None => {}
            }
        }
    }

    /// The next object itself, `Ok(None)` at the end of the topic. One
    /// this consumer owns is evicted from its store now.
    pub fn next_object(&mut self) -> Result<Option<T>> {
        Ok(self.next_object_with_metadata()?.map(|(value, _)| value))
    }

    /// The next object and its metadata (see
    /// [`next_object`](StreamConsumer::next_object)).
    pub fn next_object_with_metadata(&mut self) -> Result<Option<(T, Metadata)>> {
        match self.next_item()? {
            None => Ok(None),
            Some(item) => {
                let metadata = Item::metadata(&item).clone();
                Ok(Some((Item::into_inner(item)?, metadata)))
            }
        }
    }

    /// The objects themselves (see [`next_object`](StreamConsumer::next_object)).
    pub fn objects(&mut self) -> impl Iterator<Item = Result<T>> + '_ {
        std::iter::from_fn(move || self.next_object().transpose())
    }

    /// The objects and their metadata.
    pub fn objects_with_metadata(&mut self) -> impl Iterator<Item = Result<(T, Metadata)>> + '_ {
        std::iter::from_fn(move || self.next_object_with_metadata().transpose())
    }

    /// Closes the subscriber. Items already yielded stay usable.
    pub fn close(mut self) -> Result<()> {
        self.batch = None;
        self.subscriber.close()
    }

    /// One step: `Ok(None)` when nothing arrived within `wait`,
    /// `Ok(Some(None))` at the end.
    pub(crate) fn poll_item(&mut self, wait: Option<Duration>) -> Result<Option<Option<Item<T>>>> {
        loop {
            if self.ended {
                return Ok(Some(None));
            }
            if let Some(item) = self.next_in_batch()? {
                return Ok(Some(item));
            }
            match self.subscriber.next_message(wait)? {
                Next::Timeout => return Ok(None),
                Next::Ended => {
                    self.ended = true;
                }
                Next::Message(message) => {
                    let topic = self.subscriber.topic();
                    let incoming = Incoming::decode(topic, message.payload)?;
                    self.batch = Some(Batch {
                        topic: Arc::from(topic),
                        incoming,
                        next: 0,
                        ack: message.ack.map(Arc::new),
                        redelivered: message.redelivered,
                    });
                }
            }
        }
    }

    /// The next item of the current message that passes the filter:
    /// `Some(None)` at an end event, `None` when the message is used up.
    #[allow(clippy::option_option)]
    fn next_in_batch(&mut self) -> Result<Option<Option<Item<T>>>> {
        while let Some(batch) = &mut self.batch {
            let Some((head, body)) = batch.incoming.events.get_mut(batch.next) else {
                self.batch = None;
                break;
            };
            batch.next += 1;
            let head = std::mem::replace(head, Head::End);
            let body = body.take();
            let (payload, metadata) = match head {
                Head::End => {
                    self.ended = true;
                    self.batch = None;
                    return Ok(Some(None));
                }
                Head::Object { metadata, .. } => {
                    let range = body.expect("decoded with its body");
                    let value =
                        codec::decode_slice::<T>(&batch.incoming.message[range]).map_err(|e| {
                            Error::StreamEvent {
                                topic: batch.topic.to_string(),
                                reason: format!(
                            "an object inside it could not be decoded as `{}` (stored as `{}`): {}",
                            std::any::type_name::<T>(),
                            e.found,
                            e.reason
                        ),
                            }
                        })?;
                    (Payload::Inline(value), metadata)
                }
                Head::Key {
                    key,
                    owned,
                    metadata,
                } => {
                    let config = batch.incoming.store.clone().expect("checked when decoded");
                    let config = match &self.config {
                        Some(cached) if **cached == *config => cached.clone(),
                        _ => {
                            self.config = Some(config.clone());
                            config
                        }
                    };
                    let factory = Factory::new(key, config);
                    if batch.redelivered && owned && !factory.store()?.exists(&key)? {
                        // Delivered before to a consumer that used the
                        // object (and evicted it) but died before its
                        // acknowledgement: nothing left to yield.
                        tracing::debug!(topic = %batch.topic, %key, "stream: skipping an object consumed before");
                        continue;
                    }
                    let payload = if owned {
                        Payload::Owned(OwnedProxy::lazy(factory))
                    } else {
                        Payload::Shared(Proxy::lazy(factory))
                    };
                    (payload, metadata)
                }
            };
            let keep = self.filter.keep(&metadata);
            let batch = self.batch.as_mut().expect("still reading it");
            let item = Item::new(payload, metadata, batch.topic.clone(), batch.ack.clone());
            if batch.next == batch.incoming.events.len() {
                self.batch = None;
            }
            if keep {
                return Ok(Some(Some(item)));
            }
            // Dropped here: an owned object is evicted.
        }
        Ok(None)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let unread = &self.incoming.events[self.next.min(self.incoming.events.len())..];
        if unread.is_empty() {
            return;
        }
        match &self.ack {
            Some(ack) => ack.disarm(),
            None => {
                let Some(config) = &self.incoming.store else {
                    return;
                };
                for (head, _) in unread {
                    if let Head::Key {
                        key, owned: true, ..
                    } = head
                    {
                        crate::owned::evict(&Factory::new(*key, config.clone()));
                    }
                }
            }
        }
    }
}

impl<T: Storable> Iterator for StreamConsumer<T> {
    type Item = Result<Item<T>>;

    fn next(&mut self) -> Option<Result<Item<T>>> {
        self.next_item().transpose()
    }
}

impl<T: Storable> fmt::Debug for StreamConsumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamConsumer")
            .field("type", &std::any::type_name::<T>())
            .field("subscriber", &self.subscriber)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}
