//! Brokers on a Redis server: pub/sub, a list per topic, and Redis Streams
//! with consumer groups.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use redis::{ConnectionLike, Value};
use serde::{Deserialize, Serialize};

use super::broker::Publisher;
use crate::connectors::redis::resp::pack;
use crate::connectors::redis::{scrub, RedisUrl};
use crate::error::{Error, Result};

mod pubsub;
mod queue;
mod streams;

pub use pubsub::RedisPubSubSubscriber;
pub use queue::RedisQueueSubscriber;
pub use streams::RedisStreamsSubscriber;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a subscriber waits on the server at a time before it looks
/// for the topic's end (and, on Redis Streams, for events to take over).
const SLICE: Duration = Duration::from_millis(200);
const DEFAULT_END_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(60);

/// The Redis key (list, stream) or channel of a topic.
fn topic_key(topic: &str) -> String {
    format!("proxystore:stream:{topic}")
}

/// The key marking a topic's end, for subscribers that did not receive
/// the end event themselves.
fn end_key(topic: &str) -> String {
    format!("proxystore:stream-end:{topic}")
}

/// The key marking a list topic under way: set by its first event, removed
/// by its end. A subscriber that saw events of the topic and finds neither
/// this nor the end's mark knows the topic ended (its mark expired while
/// the subscriber was busy).
fn live_key(topic: &str) -> String {
    format!("proxystore:stream-live:{topic}")
}

/// A checked URL and what errors may show of it.
#[derive(Clone)]
struct Link {
    client: redis::Client,
    server: String,
    secrets: Vec<String>,
}

impl Link {
    fn parse(url: &str) -> Result<Link> {
        let RedisUrl {
            client,
            server,
            secrets,
            ..
        } = RedisUrl::parse(url, "redis stream broker")?;
        Ok(Link {
            client,
            server,
            secrets,
        })
    }

    /// A connection whose replies may take `wait` longer than usual (a
    /// blocking read).
    fn connect(&self, wait: Duration) -> Result<redis::Connection> {
        let connect = || -> redis::RedisResult<redis::Connection> {
            let connection = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
            connection.set_read_timeout(Some(IO_TIMEOUT + wait))?;
            connection.set_write_timeout(Some(IO_TIMEOUT))?;
            Ok(connection)
        };
        connect().map_err(|e| self.error("connect", &e))
    }

    fn error(&self, operation: &str, e: &redis::RedisError) -> Error {
        Error::Redis {
            server: self.server.clone(),
            operation: operation.to_string(),
            message: scrub(&self.secrets, e.to_string()),
        }
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.server)
    }
}

/// Runs `request` on `connection` (connecting first if there is none); a
/// connection whose request failed is dropped, and the next request
/// connects again. Nothing is retried: a publish that may have landed is
/// never sent twice.
fn request(
    link: &Link,
    connection: &mut Option<redis::Connection>,
    operation: &str,
    wait: Duration,
    run: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<Value>,
) -> Result<Value> {
    let mut c = match connection.take() {
        Some(c) => c,
        None => link.connect(wait)?,
    };
    let value = run(&mut c)
        .and_then(|v| v.extract_error())
        .map_err(|e| link.error(operation, &e))?;
    *connection = Some(c);
    Ok(value)
}

macro_rules! broker_config {
    ($(#[$doc:meta])* $name:ident, $kind:ident) => {
        $(#[$doc])*
        #[derive(Clone, Serialize, Deserialize)]
        pub struct $name {
            url: String,
            #[serde(default = "default_grace_ms")]
            end_grace_ms: u64,
            #[serde(default = "default_group")]
            group: String,
            #[serde(default = "default_claim_ms")]
            claim_idle_ms: u64,
        }

        impl $name {
            /// The broker on the server at `url` (the URLs of
            /// [`RedisConnector`](crate::connectors::RedisConnector)); the
            /// URL is checked here, the server reached when a publisher or
            /// subscriber is made.
            pub fn new(url: impl Into<String>) -> Result<$name> {
                let url = url.into();
                Link::parse(&url)?;
                Ok($name {
                    url,
                    end_grace_ms: default_grace_ms(),
                    group: default_group(),
                    claim_idle_ms: default_claim_ms(),
                })
            }

            /// A publisher to any topic.
            pub fn publisher(&self) -> Result<RedisPublisher> {
                RedisPublisher::new(&self.url, Kind::$kind)
            }

            /// How long the mark of a topic's end stays in Redis once its
            /// last event was consumed (default 30 s), for subscribers
            /// still waiting to learn of the end.
            #[must_use]
            pub fn end_grace(mut self, grace: Duration) -> Self {
                self.end_grace_ms = millis(grace);
                self
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("url", &crate::connectors::redact_url(&self.url))
                    .finish_non_exhaustive()
            }
        }
    };
}

fn default_grace_ms() -> u64 {
    millis(DEFAULT_END_GRACE)
}
fn default_claim_ms() -> u64 {
    millis(DEFAULT_CLAIM_IDLE)
}
fn default_group() -> String {
    "proxystore".into()
}
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

broker_config! {
    /// Redis publish/subscribe: every event goes to every subscriber
    /// listening at the time (a broadcast); nothing is kept for a
    /// subscriber that comes later or was disconnected, and nothing stays
    /// in Redis.
    ///
    /// Send objects that several consumers read with
    /// [`send_shared`](super::StreamProducer::send_shared): an object one
    /// consumer owns is evicted when that consumer is done with it.
    ///
    /// The configuration is serializable (the URL included, with its
    /// password): a task can take it as an argument and subscribe on its
    /// worker.
    RedisPubSub, PubSub
}

broker_config! {
    /// A Redis list per topic: each event goes to one subscriber (like
    /// Python ProxyStore's `RedisQueuePublisher`), and events wait in
    /// Redis for a subscriber to come. Every subscriber of the topic ends
    /// at its end.
    ///
    /// An event taken by a subscriber that then dies is lost with it (its
    /// object stays in the store until the store is closed); for events
    /// delivered again to another subscriber, use [`RedisStreams`].
    ///
    /// The configuration is serializable: a task can take it as an
    /// argument and subscribe on its worker.
    RedisQueue, Queue
}

broker_config! {
    /// Redis Streams with a consumer group per topic: durable, shared, and
    /// delivered again when a consumer dies.
    ///
    /// - Each event goes to one subscriber of the group; several
    ///   subscribers (in several processes, on several hosts) share a
    ///   topic.
    /// - An event is acknowledged when the consumer has dropped every item
    ///   of it (its object evicted first), and then deleted from the
    ///   stream: acknowledged events do not pile up.
    /// - An event a subscriber received but did not acknowledge within
    ///   [`claim_idle`](RedisStreams::claim_idle) (it died, or hung) is
    ///   delivered again to another subscriber; an object it had consumed
    ///   already is skipped then. Events are delivered at least once: keep
    ///   `claim_idle` above the longest a consumer works on an item
    ///   without asking for the next.
    /// - Every subscriber ends at the topic's end, once every event is
    ///   acknowledged; the last removes the stream and its group from Redis.
    ///
    /// ```no_run
    /// use proxystore::stream::{RedisStreams, StreamConsumer};
    ///
    /// let broker = RedisStreams::new("redis://127.0.0.1:6379")?
    ///     .claim_idle(std::time::Duration::from_secs(10));
    /// for frame in StreamConsumer::<Vec<f64>>::new(broker.subscriber("frames")?) {
    ///     let frame = frame?;
    ///     println!("{}", frame.iter().sum::<f64>());
    /// } // each frame evicted, its event acknowledged, as the loop moves on
    /// # Ok::<(), proxystore::Error>(())
    /// ```
    RedisStreams, Streams
}

impl RedisPubSub {
    /// A subscriber of `topic`, listening from now on.
    pub fn subscriber(&self, topic: impl Into<String>) -> Result<RedisPubSubSubscriber> {
        RedisPubSubSubscriber::new(Link::parse(&self.url)?, topic.into())
    }
}

impl RedisQueue {
    /// A subscriber of `topic`.
    pub fn subscriber(&self, topic: impl Into<String>) -> Result<RedisQueueSubscriber> {
        RedisQueueSubscriber::new(
            Link::parse(&self.url)?,
            topic.into(),
            Duration::from_millis(self.end_grace_ms),
        )
    }
}

impl RedisStreams {
    /// The consumer group subscribers join (default `proxystore`).
    /// Subscribers of one group share the topic's events; each group gets
    /// every event, but acknowledged events are deleted, so use one group
    /// per topic.
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// How long an event may stay unacknowledged with a subscriber before
    /// another takes it over (default 60 s).
    #[must_use]
    pub fn claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle_ms = millis(idle);
        self
    }

    /// A subscriber of `topic`, joining its group.
    pub fn subscriber(&self, topic: impl Into<String>) -> Result<RedisStreamsSubscriber> {
        RedisStreamsSubscriber::new(
            Link::parse(&self.url)?,
            topic.into(),
            self.group.clone(),
            Duration::from_millis(self.claim_idle_ms),
            Duration::from_millis(self.end_grace_ms),
        )
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    PubSub,
    Queue,
    Streams,
}

/// Publishes to a Redis broker ([`RedisPubSub`], [`RedisQueue`] or
/// [`RedisStreams`]) over one connection, made again after a failure.
pub struct RedisPublisher {
    link: Link,
    kind: Kind,
    connection: Mutex<Option<redis::Connection>>,
    /// List topics marked under way (see `live_key`).
    live: Mutex<std::collections::HashSet<String>>,
}

/// Pushes the end event and marks the topic ended, at once.
const QUEUE_END: &str = "redis.call('RPUSH', KEYS[1], ARGV[1]) \
                         redis.call('SET', KEYS[2], '1') redis.call('DEL', KEYS[3]) return 1";
const STREAMS_END: &str = "local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1]) \
                           redis.call('SET', KEYS[2], id) return 1";

impl RedisPublisher {
    fn new(url: &str, kind: Kind) -> Result<RedisPublisher> {
        let link = Link::parse(url)?;
        // Connect now: a wrong address or password fails here.
        let connection = link.connect(Duration::ZERO)?;
        Ok(RedisPublisher {
            link,
            kind,
            connection: Mutex::new(Some(connection)),
            live: Mutex::default(),
        })
    }

    fn send(&self, operation: &str, request: &[u8]) -> Result<()> {
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        request_packed(&self.link, &mut connection, operation, request).map(drop)
    }
}

fn request_packed(
    link: &Link,
    connection: &mut Option<redis::Connection>,
    operation: &str,
    bytes: &[u8],
) -> Result<Value> {
    request(link, connection, operation, Duration::ZERO, |c| {
        c.req_packed_command(bytes)
    })
}

impl Publisher for RedisPublisher {
    fn publish(&self, topic: &str, parts: &[&[u8]]) -> Result<()> {
        let key = topic_key(topic);
        let (operation, request) = match self.kind {
            Kind::PubSub => ("PUBLISH", pack(&[&[b"PUBLISH"], &[key.as_bytes()], parts])),
            Kind::Queue => ("RPUSH", pack(&[&[b"RPUSH"], &[key.as_bytes()], parts])),
            Kind::Streams => (
                "XADD",
                pack(&[&[b"XADD"], &[key.as_bytes()], &[b"*"], &[b"m"], parts]),
            ),
        };
        if matches!(self.kind, Kind::Queue | Kind::Streams) {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            if !live.contains(topic) {
                // The first event of a run: the mark of an earlier run's
                // end goes (a topic name can be used again), and a list is
                // marked under way, in the same round trip.
                let end = end_key(topic);
                let mut first = pack(&[&[b"DEL"], &[end.as_bytes()]]);
                let mut count = 2;
                if matches!(self.kind, Kind::Queue) {
                    let mark = live_key(topic);
                    first.extend(pack(&[&[b"SET"], &[mark.as_bytes()], &[b"1"]]));
                    count += 1;
                }
                first.extend(request);
                let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
                request_pipelined(&self.link, &mut connection, operation, &first, count)?;
                live.insert(topic.to_string());
                return Ok(());
            }
        }
        self.send(operation, &request)
    }

    fn publish_end(&self, topic: &str, parts: &[&[u8]]) -> Result<()> {
        let script = match self.kind {
            Kind::PubSub => return self.publish(topic, parts),
            Kind::Queue => QUEUE_END,
            Kind::Streams => STREAMS_END,
        };
        let (key, end, live) = (topic_key(topic), end_key(topic), live_key(topic));
        let request = pack(&[
            &[b"EVAL"],
            &[script.as_bytes()],
            &[b"3"],
            &[key.as_bytes()],
            &[end.as_bytes()],
            &[live.as_bytes()],
            parts,
        ]);
        self.send("publish the end (EVAL)", &request)
    }

    fn close(&self) -> Result<()> {
        *self.connection.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }
}

impl fmt::Debug for RedisPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPublisher")
            .field("server", &self.link)
            .field("kind", &self.kind)
            .finish()
    }
}

/// Marks a topic's end to expire once its events are all consumed:
/// 1 when it has ended and nothing of it is left; 2 when there is no trace
/// of it at all (not begun, or ended with its mark expired); 0 otherwise.
const FINISH_QUEUE: &str = "if redis.call('LLEN', KEYS[1]) ~= 0 then return 0 end \
                            if redis.call('EXISTS', KEYS[2]) == 1 then \
                            redis.call('PEXPIRE', KEYS[2], ARGV[1]) return 1 end \
                            if redis.call('EXISTS', KEYS[3]) == 0 then return 2 end return 0";
/// The same for a stream, which is removed (with its group) as well.
const FINISH_STREAMS: &str = "if redis.call('EXISTS', KEYS[2]) == 1 then \
                              if redis.call('EXISTS', KEYS[1]) == 0 or \
                              redis.call('XLEN', KEYS[1]) == 0 then \
                              redis.call('DEL', KEYS[1]) \
                              redis.call('PEXPIRE', KEYS[2], ARGV[1]) return 1 end end return 0";

fn finish(
    link: &Link,
    connection: &mut Option<redis::Connection>,
    script: &str,
    topic: &str,
    grace: Duration,
) -> Result<i64> {
    let (key, end, live) = (topic_key(topic), end_key(topic), live_key(topic));
    let grace = millis(grace).to_string();
    let value = request(
        link,
        connection,
        "check the end (EVAL)",
        Duration::ZERO,
        |c| {
            c.req_command(
                redis::cmd("EVAL")
                    .arg(script)
                    .arg(3)
                    .arg(&key)
                    .arg(&end)
                    .arg(&live)
                    .arg(&grace),
            )
        },
    )?;
    Ok(match value {
        Value::Int(n) => n,
        _ => 0,
    })
}

/// Sends `count` commands packed in `bytes` in one round trip; the first
/// error among their replies is returned.
fn request_pipelined(
    link: &Link,
    connection: &mut Option<redis::Connection>,
    operation: &str,
    bytes: &[u8],
    count: usize,
) -> Result<()> {
    request(link, connection, operation, Duration::ZERO, |c| {
        let replies = c.req_packed_commands(bytes, 0, count)?;
        for reply in replies {
            reply.extract_error()?;
        }
        Ok(Value::Nil)
    })
    .map(drop)
}
