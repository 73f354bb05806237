//! Streams of objects: a producer sends typed objects to topics, consumers
//! iterate over them, and only small events pass through the broker.
//!
//! This is the model of Python ProxyStore's `proxystore.stream`: objects go
//! into a [`Store`](crate::Store) (a shared directory, shared memory,
//! Redis, ...), and an event of a few hundred bytes (the topic, the key,
//! the store's configuration, the object's [`Metadata`]) goes through a
//! message broker. Consumers yield [`Item`]s that read their object on
//! first use, in any process or host that can reach the store. A topic
//! carries one type, checked by the compiler on both sides.
//!
//! ```
//! use proxystore::connectors::FileConnector;
//! use proxystore::stream::{Item, LocalBroker, Metadata, StreamConsumer, StreamProducer};
//! use proxystore::Store;
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::new("stream-doc", FileConnector::new(dir.path())?)?;
//! let broker = LocalBroker::new();
//!
//! let consumer = StreamConsumer::<Vec<f64>>::new(broker.subscriber("frames"));
//! let reader = std::thread::spawn(move || -> proxystore::Result<(f64, Vec<_>)> {
//!     let (mut total, mut keys) = (0.0, Vec::new());
//!     for frame in consumer {
//!         let frame = frame?;                     // a lazy item of the stream
//!         total += frame.iter().sum::<f64>();     // read from the store here
//!         keys.extend(Item::key(&frame));
//!     }                                           // each frame evicted once used
//!     Ok((total, keys))
//! });
//!
//! let mut producer = StreamProducer::<Vec<f64>>::builder(broker.publisher())
//!     .default_store(store.clone())
//!     .build();
//! for step in 0..4 {
//!     producer.send_with("frames", vec![1.0; 250_000], Metadata::new().with("step", step))?;
//! }
//! producer.close_topic("frames")?;                // the consumer's loop ends after the last
//!
//! let (total, keys) = reader.join().unwrap()?;
//! assert_eq!(total, 1_000_000.0);
//! assert_eq!(keys.len(), 4);
//! for key in &keys {
//!     assert!(!store.exists(key)?);               // nothing left in the store
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Brokers
//!
//! Events go through a [`Publisher`] and a [`Subscriber`], a small pair of
//! traits to implement for a broker of your own. Here:
//!
//! | broker | delivery | kept while no one listens | a consumer dies |
//! |---|---|---|---|
//! | [`LocalBroker`] | each event to one subscriber, in one process | yes | n/a |
//! | `RedisPubSub` | every event to every subscriber listening | no | its events are lost to it |
//! | `RedisQueue` (a list) | each event to one subscriber | yes | the event it took is lost |
//! | `RedisStreams` (consumer groups) | each event to one subscriber of the group | yes | its events go to another |
//!
//! The Redis brokers need the crate feature `redis`. Their configurations
//! are serializable, so a task can take one as an argument and consume a
//! stream on its worker, in a [`ProcessPool`](crate::executor::ProcessPool)
//! or on another host.
//!
//! # Ownership
//!
//! An object sent with [`StreamProducer::send`] belongs to the consumer
//! that receives it: it is evicted when that consumer drops its [`Item`]
//! (or filters it out), which is Python ProxyStore's `evict=True` made an
//! ownership rule: a second reader cannot exist, so it cannot find the
//! object gone. An object sent with [`StreamProducer::send_shared`] is for
//! any number of readers; a [`Lifetime`](crate::lifetime::Lifetime) given
//! with it decides when it is evicted.
//!
//! # Objects inside events
//!
//! A topic without a store carries its objects inside its events (through
//! the broker), in the store's own encoding. That suits small objects;
//! large ones move several times faster through a store (see the README's
//! measurements).
//!
//! # Limits
//!
//! - The Redis brokers need Redis 6.2 or later (`XAUTOCLAIM`, `XGROUP
//!   CREATECONSUMER`, fractional `BLPOP` timeouts).
//! - Redis Streams deliver each event at least once: an event whose
//!   subscriber held it past `claim_idle` without its thread renewing it (a
//!   stalled process) may reach two subscribers. An object consumed before
//!   its event was acknowledged is skipped when the event comes again.
//! - A subscriber that first subscribes after a topic ended and its end's
//!   mark expired (`end_grace`) waits for a next run of the topic: give the
//!   consumer a [`timeout`](StreamConsumerBuilder::timeout).
//! - Dropping an item evicts its object (and, on Redis Streams,
//!   acknowledges its event) on the dropping thread.
//! - An event names the store its objects are in, as a proxy does, and the
//!   consumer reads (and evicts owned objects) there: consume only from
//!   brokers that only trusted producers can publish to.
//!
//! # Differences from Python ProxyStore
//!
//! - Filters keep what they accept, like [`Iterator::filter`] (Python's
//!   return `True` to drop).
//! - Dropping a producer sends what waits in its batches, like a
//!   `BufWriter`; [`StreamProducer::close`] does so and reports errors.
//! - With a broker that shares a topic among subscribers, every subscriber
//!   ends at the topic's end, not only the one that received it.
//! - The event format is this library's own: Python programs cannot read
//!   these streams (their events are pickles), nor these programs theirs.

mod asynchronous;
mod broker;
mod consumer;
mod event;
mod filter;
mod item;
mod local;
mod metadata;
mod producer;
#[cfg(feature = "redis")]
mod redis;

pub use asynchronous::ItemStream;
pub use broker::{Ack, Message, Next, Publisher, Subscriber};
pub use consumer::{StreamConsumer, StreamConsumerBuilder};
pub use item::Item;
pub use local::{LocalBroker, LocalPublisher, LocalSubscriber};
pub use metadata::{Metadata, Value};
pub use producer::{StreamProducer, StreamProducerBuilder};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{
    RedisPubSub, RedisPubSubSubscriber, RedisPublisher, RedisQueue, RedisQueueSubscriber,
    RedisStreams, RedisStreamsSubscriber,
};
