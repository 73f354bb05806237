//! The producer side of a stream.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use super::event::{Head, Outgoing};
use super::filter::Filter;
use super::{Metadata, Publisher};
use crate::codec;
use crate::error::{Error, Result};
use crate::lifetime::Lifetime;
use crate::store::Store;
use crate::Storable;

type Aggregator<T> = Box<dyn FnMut(Vec<T>) -> T + Send>;

/// One object waiting in a topic's batch.
struct Buffered<T> {
    value: T,
    metadata: Metadata,
    /// `None`: the consumer owns the object. `Some`: it stays stored for
    /// every reader, attached to this lifetime (if any).
    shared: Option<Option<Arc<dyn Lifetime>>>,
}

struct TopicState<T> {
    buffer: Vec<Buffered<T>>,
    closed: bool,
}

impl<T> Default for TopicState<T> {
    fn default() -> Self {
        TopicState {
            buffer: Vec::new(),
            closed: false,
        }
    }
}

/// Sends typed objects to the topics of a stream.
///
/// Each object goes into its topic's [`Store`] (or, for a topic without
/// one, inside the event itself), and a small event (the key, the store's
/// configuration, the object's [`Metadata`]) goes through the broker's
/// [`Publisher`]. A [`StreamConsumer`](super::StreamConsumer) of the
/// topic yields the objects in order, lazily read from the store.
///
/// ```
/// use proxystore::connectors::FileConnector;
/// use proxystore::stream::{Item, LocalBroker, Metadata, StreamConsumer, StreamProducer};
/// use proxystore::Store;
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::new("producer-doc", FileConnector::new(dir.path())?)?;
/// let broker = LocalBroker::new();
/// let mut consumer = StreamConsumer::<Vec<f64>>::new(broker.subscriber("frames"));
///
/// let mut producer = StreamProducer::<Vec<f64>>::builder(broker.publisher())
///     .default_store(store.clone())
///     .build();
/// for step in 0..3 {
///     producer.send_with("frames", vec![step as f64; 1000], Metadata::new().with("step", step))?;
/// }
/// producer.close_topic("frames")?; // the consumer's iteration ends here
///
/// for item in &mut consumer {
///     let item = item?;                       // an object the consumer owns
///     let step = Item::metadata(&item).get("step").and_then(|v| v.as_f64());
///     assert_eq!(Some(item[0]), step);        // read from the store on first use
///     let key = Item::key(&item).unwrap();
///     drop(item);                             // dropped: evicted from the store
///     assert!(!store.exists(&key)?);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Ownership of the objects
///
/// An object sent with [`send`](StreamProducer::send) or
/// [`send_with`](StreamProducer::send_with) belongs to the consumer that
/// receives it: it is evicted when the consumer drops what it yielded
/// (Python ProxyStore's `evict=True`). One sent with
/// [`send_shared`](StreamProducer::send_shared) is for any number of
/// readers (a broadcast): consumers get plain [`Proxy`](crate::Proxy)s and
/// the object is evicted when the [`Lifetime`] given with it ends.
///
/// # Batches
///
/// With a [`batch_size`](StreamProducerBuilder::batch_size) above 1, objects
/// wait in their topic's batch until it is full, then go into the store
/// together ([`Store::put_batch`]) and travel in one message; with an
/// [`aggregator`](StreamProducerBuilder::aggregator) a full batch is first
/// combined into one object. [`flush`](StreamProducer::flush) sends what
/// waits; so do [`close_topic`](StreamProducer::close_topic),
/// [`close`](StreamProducer::close) and dropping the producer (which, like
/// a `BufWriter`, cannot report an error: call `close`).
pub struct StreamProducer<T: Storable> {
    publisher: Arc<dyn Publisher>,
    stores: HashMap<String, Option<Store>>,
    default_store: Option<Store>,
    filter: Filter,
    batch_size: usize,
    aggregator: Option<Aggregator<T>>,
    topics: HashMap<String, TopicState<T>>,
    closed: bool,
    _type: PhantomData<fn(T)>,
}

/// Options of a [`StreamProducer`]; see [`StreamProducer::builder`].
#[must_use]
pub struct StreamProducerBuilder<T: Storable> {
    producer: StreamProducer<T>,
}

impl<T: Storable> StreamProducerBuilder<T> {
    /// The store of every topic not given one with
    /// [`store`](StreamProducerBuilder::store). Without a default store,
    /// such topics carry their objects inside the events.
    pub fn default_store(mut self, store: Store) -> Self {
        self.producer.default_store = Some(store);
        self
    }

    /// The store of `topic`; `None` sends its objects inside the events.
    pub fn store(mut self, topic: impl Into<String>, store: Option<Store>) -> Self {
        self.producer.stores.insert(topic.into(), store);
        self
    }

    /// Objects per message (default 1). A topic's objects wait until its
    /// batch is full or flushed.
    pub fn batch_size(mut self, size: usize) -> Self {
        self.producer.batch_size = size.max(1);
        self
    }

    /// Combines each full batch into one object before it is sent; its
    /// metadata is the union of the batch's (later values win).
    pub fn aggregator(mut self, aggregate: impl FnMut(Vec<T>) -> T + Send + 'static) -> Self {
        self.producer.aggregator = Some(Box::new(aggregate));
        self
    }

    /// Sends only the objects whose metadata `keep` accepts (like
    /// [`Iterator::filter`]; note that Python ProxyStore's filters return
    /// `True` to *drop*). Applied before batching and aggregation.
    pub fn filter(mut self, keep: impl FnMut(&Metadata) -> bool + Send + 'static) -> Self {
        self.producer.filter.add(keep);
        self
    }

    /// Sends each object with probability `fraction` (in `[0, 1]`), after
    /// the [`filter`](StreamProducerBuilder::filter).
    pub fn sample(mut self, fraction: f64) -> Self {
        self.producer.filter.sample(fraction);
        self
    }

    /// The producer.
    pub fn build(self) -> StreamProducer<T> {
        self.producer
    }
}

impl<T: Storable> StreamProducer<T> {
    /// A producer publishing through `publisher`, with every topic's
    /// objects inside its events (no store).
    pub fn new(publisher: impl Publisher) -> StreamProducer<T> {
        StreamProducer::builder(publisher).build()
    }

    /// Options for a producer publishing through `publisher`.
    pub fn builder(publisher: impl Publisher) -> StreamProducerBuilder<T> {
        StreamProducerBuilder {
            producer: StreamProducer {
                publisher: Arc::new(publisher),
                stores: HashMap::new(),
                default_store: None,
                filter: Filter::default(),
                batch_size: 1,
                aggregator: None,
                topics: HashMap::new(),
                closed: false,
                _type: PhantomData,
            },
        }
    }

    /// Sends `value` to `topic`; the consumer that receives it owns it.
    pub fn send(&mut self, topic: &str, value: T) -> Result<()> {
        self.send_with(topic, value, Metadata::new())
    }

    /// Sends `value` with `metadata`; the consumer that receives it owns it.
    pub fn send_with(&mut self, topic: &str, value: T, metadata: Metadata) -> Result<()> {
        self.buffer(topic, value, metadata, None)
    }

    /// Sends `value` for any number of readers (a broadcast through
    /// `RedisPubSub`, say): consumers get plain
    /// proxies, and the object stays in the store until `lifetime` ends
    /// (with `None`, until the store is closed).
    pub fn send_shared(
        &mut self,
        topic: &str,
        value: T,
        metadata: Metadata,
        lifetime: Option<Arc<dyn Lifetime>>,
    ) -> Result<()> {
        self.buffer(topic, value, metadata, Some(lifetime))
    }

    fn buffer(
        &mut self,
        topic: &str,
        value: T,
        metadata: Metadata,
        shared: Option<Option<Arc<dyn Lifetime>>>,
    ) -> Result<()> {
        let state = self.topics.entry(topic.to_string()).or_default();
        if state.closed || self.closed {
            return Err(Error::TopicClosed {
                topic: topic.to_string(),
            });
        }
        if !self.filter.keep(&metadata) {
            return Ok(());
        }
        state.buffer.push(Buffered {
            value,
            metadata,
            shared,
        });
        if state.buffer.len() >= self.batch_size {
            self.flush_topic(topic)?;
        }
        Ok(())
    }

    /// Sends every topic's waiting objects.
    pub fn flush(&mut self) -> Result<()> {
        let topics: Vec<String> = self
            .topics
            .iter()
            .filter(|(_, state)| !state.buffer.is_empty())
            .map(|(topic, _)| topic.clone())
            .collect();
        topics.iter().try_for_each(|topic| self.flush_topic(topic))
    }

    /// Sends `topic`'s waiting objects.
    pub fn flush_topic(&mut self, topic: &str) -> Result<()> {
        self.send_batch(topic, false)
    }

    /// Sends `topic`'s waiting objects and then its end: consumers of the
    /// topic end their iteration there, after every object sent before.
    /// Sending to it afterwards is [`Error::TopicClosed`].
    pub fn close_topic(&mut self, topic: &str) -> Result<()> {
        let state = self.topics.entry(topic.to_string()).or_default();
        if state.closed {
            return Ok(());
        }
        self.send_batch(topic, true)?;
        self.topics.entry(topic.to_string()).or_default().closed = true;
        Ok(())
    }

    /// Closes several topics (see [`close_topic`](StreamProducer::close_topic)).
    pub fn close_topics(&mut self, topics: &[&str]) -> Result<()> {
        topics.iter().try_for_each(|topic| self.close_topic(topic))
    }

    /// Sends what waits, then closes the publisher. The stores are left
    /// open (consumers still read from them); topics are not ended: use
    /// [`close_topic`](StreamProducer::close_topic) for that.
    pub fn close(mut self) -> Result<()> {
        self.closed = true;
        self.flush()?;
        self.publisher.close()
    }

    fn store_of(&self, topic: &str) -> Option<&Store> {
        match self.stores.get(topic) {
            Some(store) => store.as_ref(),
            None => self.default_store.as_ref(),
        }
    }

    fn send_batch(&mut self, topic: &str, end: bool) -> Result<()> {
        let mut objects = match self.topics.get_mut(topic) {
            Some(state) => std::mem::take(&mut state.buffer),
            None => Vec::new(),
        };
        if objects.is_empty() && !end {
            return Ok(());
        }
        if let (Some(aggregate), false) = (self.aggregator.as_mut(), objects.is_empty()) {
            let mut metadata = Metadata::new();
            let mut shared = None;
            let mut values = Vec::with_capacity(objects.len());
            for object in objects {
                metadata.merge(object.metadata);
                // Shared if any was (a reader must not evict what others
                // may still read), with a lifetime if any had one.
                shared = match (shared, object.shared) {
                    (Some(Some(lifetime)), _) | (_, Some(Some(lifetime))) => Some(Some(lifetime)),
                    (first, next) => first.or(next),
                };
                values.push(object.value);
            }
            objects = vec![Buffered {
                value: aggregate(values),
                metadata,
                shared,
            }];
        }
        let store = self.store_of(topic).cloned();
        let mut events = Vec::with_capacity(objects.len() + usize::from(end));
        let mut values = Vec::with_capacity(objects.len());
        let mut described = Vec::with_capacity(objects.len());
        for object in objects {
            values.push(object.value);
            described.push((object.metadata, object.shared));
        }
        let mut encoded = Vec::new();
        match &store {
            Some(store) => {
                let keys = match values.len() {
                    0 => Vec::new(),
                    1 => vec![store.put(&values[0])?],
                    _ => store.put_batch(&values)?,
                };
                for (i, (key, (metadata, shared))) in keys.iter().zip(described).enumerate() {
                    if let Some(Some(lifetime)) = &shared {
                        let proxy = store.proxy_from_key::<T>(*key);
                        if let Err(e) = lifetime.add_proxy(&proxy) {
                            // Not sent: the batch's owned objects and those
                            // from here on are nobody's.
                            for (j, key) in keys.iter().enumerate() {
                                if j >= i || events.iter().any(|e| matches!(e, Head::Key { key: k, owned: true, .. } if k == key)) {
                                    let _ = store.evict(key);
                                }
                            }
                            return Err(e);
                        }
                    }
                    events.push(Head::Key {
                        key: *key,
                        owned: shared.is_none(),
                        metadata,
                    });
                }
            }
            None => {
                for value in &values {
                    encoded.push(codec::encode(value)?);
                }
                for ((metadata, _), body) in described.into_iter().zip(&encoded) {
                    events.push(Head::Object {
                        len: body.len() as u64,
                        metadata,
                    });
                }
            }
        }
        if end {
            events.push(Head::End);
        }
        let keys: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Head::Key {
                    key, owned: true, ..
                } => Some(*key),
                _ => None,
            })
            .collect();
        let message = Outgoing {
            topic,
            store: store.as_ref().map(Store::config),
            events,
            bodies: encoded.iter().map(codec::Encoded::parts).collect(),
        };
        let published = message.head().and_then(|head| {
            let parts = message.parts(&head);
            if end {
                self.publisher.publish_end(topic, &parts)
            } else {
                self.publisher.publish(topic, &parts)
            }
        });
        if let Err(e) = published {
            // Nobody will receive these objects: take them back.
            if let Some(store) = &store {
                for key in &keys {
                    let _ = store.evict(key);
                }
            }
            return Err(e);
        }
        Ok(())
    }
}

impl<T: Storable> Drop for StreamProducer<T> {
    fn drop(&mut self) {
        if !self.closed {
            if let Err(e) = self.flush() {
                tracing::warn!(error = %e, "stream producer dropped: its last objects were not sent");
            }
        }
    }
}

impl<T: Storable> fmt::Debug for StreamProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamProducer")
            .field("type", &std::any::type_name::<T>())
            .field("publisher", &self.publisher)
            .field(
                "default_store",
                &self.default_store.as_ref().map(Store::name),
            )
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}
