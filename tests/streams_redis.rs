//! Streams through a real redis-server: pub/sub, list queues and Redis
//! Streams, between real processes (the peer binary as consumer), with
//! consumers killed mid-stream, consumers inside pool and cluster tasks,
//! and checks that nothing of a stream is left in Redis or in its store.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxystore::connectors::FileConnector;
use proxystore::executor::ProcessPool;
use proxystore::lifetime::{ContextLifetime, Lifetime};
use proxystore::stream::{
    Item, Metadata, Publisher, RedisPubSub, RedisQueue, RedisStreams, StreamConsumer,
    StreamProducer,
};
use proxystore::{proxied, Error, Store, StoreExecutor};
use support::cluster::{objects, Cluster};
use support::common::unique;
use support::redis_server::{die_with_parent, RedisServer};

proxystore::test_worker!();

const GRACE: Duration = Duration::from_millis(300);

fn file_store(dir: &Path) -> Store {
    Store::builder(
        unique("stream"),
        FileConnector::new(dir.join("objects")).unwrap(),
    )
    .cache_size(0)
    .build()
    .unwrap()
}

fn frame(step: i64) -> (Vec<f64>, Metadata) {
    (vec![step as f64; 4096], Metadata::new().with("step", step))
}

/// A consumer process (`proxystore-peer stream-consume`), killed when
/// dropped.
struct Peer {
    child: Child,
    lines: BufReader<ChildStdout>,
}

impl Peer {
    fn start(kind: &str, server: &RedisServer, topic: &str, claim_ms: u64, hold_ms: u64) -> Peer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_proxystore-peer"));
        let mut child = die_with_parent(&mut command)
            .args([
                "stream-consume",
                kind,
                &server.url(),
                topic,
                &claim_ms.to_string(),
                &hold_ms.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut peer = Peer {
            lines: BufReader::new(child.stdout.take().unwrap()),
            child,
        };
        assert_eq!(peer.line(), "ready");
        peer
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.lines.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// The steps it consumed and its final count, once it ended.
    fn finish(mut self) -> Vec<i64> {
        let mut steps = Vec::new();
        loop {
            let line = self.line();
            if let Some(step) = line.strip_prefix("item ") {
                steps.push(step.parse().unwrap());
            } else if let Some(count) = line.strip_prefix("end ") {
                assert_eq!(count.parse::<usize>().unwrap(), steps.len());
                break;
            } else {
                panic!("the consumer stopped without an end: {line:?}");
            }
        }
        assert!(self.child.wait().unwrap().success());
        steps
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until no key of the stream layer is left on the server.
fn assert_no_stream_keys(server: &RedisServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = server.keys("proxystore:stream*");
        if keys.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left in Redis: {keys:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn produce(publisher: impl Publisher, store: &Store, topic: &str, steps: std::ops::Range<i64>) {
    let mut producer = StreamProducer::<Vec<f64>>::builder(publisher)
        .default_store(store.clone())
        .build();
    for step in steps {
        let (value, meta) = frame(step);
        producer.send_with(topic, value, meta).unwrap();
    }
    producer.close_topic(topic).unwrap();
    producer.close().unwrap();
}

#[test]
fn each_redis_broker_streams_to_another_process_and_leaves_nothing() {
    let Some(server) = RedisServer::start("streams_redis") else {
        return;
    };
    for kind in ["pubsub", "queue", "streams"] {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(dir.path());
        let topic = unique(kind);
        let consumer = Peer::start(kind, &server, &topic, 60_000, 0);
        let publisher = match kind {
            "pubsub" => RedisPubSub::new(server.url()).unwrap().publisher(),
            "queue" => RedisQueue::new(server.url()).unwrap().publisher(),
            _ => RedisStreams::new(server.url()).unwrap().publisher(),
        }
        .unwrap();
        produce(publisher, &store, &topic, 0..50);
        let steps = consumer.finish();
        assert_eq!(
            steps,
            (0..50).collect::<Vec<_>>(),
            "{kind}: every frame, in order"
        );
        assert_eq!(
            objects(&dir.path().join("objects")),
            Vec::<String>::new(),
            "{kind}"
        );
        assert_no_stream_keys(&server);
    }
}

#[test]
fn redis_streams_share_a_topic_among_consumer_processes() {
    let Some(server) = RedisServer::start("streams_redis") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let topic = unique("shared");
    let consumers: Vec<Peer> = (0..3)
        .map(|_| Peer::start("streams", &server, &topic, 60_000, 2))
        .collect();
    let broker = RedisStreams::new(server.url()).unwrap();
    produce(broker.publisher().unwrap(), &store, &topic, 0..120);
    let mut all: Vec<i64> = Vec::new();
    let mut per_consumer = Vec::new();
    for consumer in consumers {
        let steps = consumer.finish();
        per_consumer.push(steps.len());
        all.extend(steps);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..120).collect::<Vec<_>>(),
        "each frame to exactly one consumer"
    );
    assert!(
        per_consumer.iter().filter(|n| **n > 0).count() >= 2,
        "shared: {per_consumer:?}"
    );
    assert_eq!(objects(&dir.path().join("objects")), Vec::<String>::new());
    assert_no_stream_keys(&server);
}

#[test]
fn a_killed_consumer_s_events_are_delivered_again_and_nothing_is_left() {
    let Some(server) = RedisServer::start("streams_redis") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let topic = unique("killed");
    let broker = RedisStreams::new(server.url()).unwrap();
    let mut producer = StreamProducer::<Vec<f64>>::builder(broker.publisher().unwrap())
        .default_store(store.clone())
        .build();
    // The first consumer takes frame 0 and holds it for ever; killed.
    let mut doomed = Peer::start("streams", &server, &topic, 500, 3_600_000);
    let (value, meta) = frame(0);
    producer.send_with(&topic, value, meta).unwrap();
    assert_eq!(doomed.line(), "item 0");
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    drop(doomed);
    for step in 1..10 {
        let (value, meta) = frame(step);
        producer.send_with(&topic, value, meta).unwrap();
    }
    producer.close_topic(&topic).unwrap();
    // A later consumer gets the rest, and frame 0 once it has been idle
    // for the claim time.
    let survivor = Peer::start("streams", &server, &topic, 500, 0);
    let mut steps = survivor.finish();
    steps.sort_unstable();
    assert_eq!(steps, (0..10).collect::<Vec<_>>());
    assert_eq!(objects(&dir.path().join("objects")), Vec::<String>::new());
    assert_no_stream_keys(&server);
}

#[test]
fn an_event_whose_object_was_consumed_before_its_consumer_died_is_skipped() {
    let Some(server) = RedisServer::start("streams_redis") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let topic = unique("consumed");
    let broker = RedisStreams::new(server.url())
        .unwrap()
        .claim_idle(Duration::from_millis(300))
        .end_grace(GRACE);
    let second = StreamConsumer::<Vec<f64>>::new(broker.subscriber(&topic).unwrap());
    produce(broker.publisher().unwrap(), &store, &topic, 0..3);
    // A consumer (a bare one, through Redis itself) takes frame 0's event,
    // uses the object (evicts it) and dies before it acknowledges.
    let stream = format!("proxystore:stream:{topic}");
    let taken = server.raw(&[
        "XREADGROUP",
        "GROUP",
        "proxystore",
        "ghost",
        "COUNT",
        "1",
        "STREAMS",
        &stream,
        ">",
    ]);
    assert!(taken.starts_with("*1"), "{taken}");
    let zero = store
        .keys()
        .unwrap()
        .into_iter()
        .find(|k| store.get::<Vec<f64>>(k).unwrap().unwrap()[0] == 0.0)
        .unwrap();
    store.evict(&zero).unwrap();
    let steps: Vec<f64> = second.map(|i| i.unwrap()[0]).collect();
    assert_eq!(
        steps,
        [1.0, 2.0],
        "frame 0, consumed already, is not yielded again"
    );
    assert_eq!(store.len().unwrap(), 0);
    assert_no_stream_keys(&server);
}

#[test]
fn every_queue_subscriber_ends_at_the_end() {
    let Some(server) = RedisServer::start("streams_redis") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let topic = unique("queue");
    let consumers: Vec<Peer> = (0..2)
        .map(|_| Peer::start("queue", &server, &topic, 0, 1))
        .collect();
    let broker = RedisQueue::new(server.url()).unwrap();
    produce(broker.publisher().unwrap(), &store, &topic, 0..40);
    let mut all: Vec<i64> = consumers.into_iter().flat_map(Peer::finish).collect();
    all.sort_unstable();
    assert_eq!(all, (0..40).collect::<Vec<_>>());
    assert_eq!(objects(&dir.path().join("objects")), Vec::<String>::new());
    assert_no_stream_keys(&server);
}

#[test]
fn pubsub_broadcasts_shared_objects_to_every_subscriber() {
    let Some(server) = RedisServer::start("streams_redis") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let topic = unique("broadcast");
    let broker = RedisPubSub::new(server.url()).unwrap();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let consumer = StreamConsumer::<Vec<f64>>::new(broker.subscriber(&topic).unwrap());
            std::thread::spawn(move || {
                consumer
                    .map(|item| {
                        let item = item.unwrap();
                        assert!(!Item::is_owned(&item));
                        item[0] as i64
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let lifetime = Arc::new(ContextLifetime::new());
    let mut producer = StreamProducer::<Vec<f64>>::builder(broker.publisher().unwrap())
        .default_store(store.clone())
        .build();
    for step in 0..20 {
        let (value, meta) = frame(step);
        producer
            .send_shared(
                &topic,
                value,
                meta,
                Some(lifetime.clone() as Arc<dyn Lifetime>),
            )
            .unwrap();
    }
    producer.close_topic(&topic).unwrap();
    for reader in readers {
        assert_eq!(reader.join().unwrap(), (0..20).collect::<Vec<_>>());
    }
    assert_eq!(objects(&dir.path().join("objects")).len(), 20);
    lifetime.close();
    assert_eq!(objects(&dir.path().join("objects")), Vec::<String>::new());
    assert_no_stream_keys(&server);
}

#[test]
fn objects_inside_events_and_hostile_entries_on_redis_streams() {
    let Some(server) = RedisServer::start("streams_redis") else {
        return;
    };
    let topic = unique("inline");
    let broker = RedisStreams::new(server.url()).unwrap().end_grace(GRACE);
    let mut consumer = StreamConsumer::<Vec<f64>>::new(broker.subscriber(&topic).unwrap());
    let key = format!("proxystore:stream:{topic}");
    // Entries another program wrote: no payload field, and garbage.
    server.raw(&["XADD", &key, "*", "other", "field"]);
    server.raw(&["XADD", &key, "*", "m", "garbage"]);
    let mut producer = StreamProducer::<Vec<f64>>::new(broker.publisher().unwrap());
    producer.send(&topic, vec![3.0; 1 << 20]).unwrap();
    producer.close_topic(&topic).unwrap();
    let err = consumer.next().unwrap().unwrap_err();
    assert!(matches!(err, Error::StreamEvent { .. }), "{err}");
    let frame = consumer.next_object().unwrap().unwrap();
    assert_eq!(frame.len(), 1 << 20);
    assert!(consumer.next().is_none());
    drop(consumer);
    assert_no_stream_keys(&server);
}

#[test]
fn a_dead_server_is_an_error_not_a_hang() {
    let Some(mut server) = RedisServer::start("streams_redis") else {
        return;
    };
    let topic = unique("dead");
    for kind in ["queue", "streams"] {
        let mut consumer = match kind {
            "queue" => StreamConsumer::<u8>::new(
                RedisQueue::new(server.url())
                    .unwrap()
                    .subscriber(&topic)
                    .unwrap(),
            ),
            _ => StreamConsumer::<u8>::new(
                RedisStreams::new(server.url())
                    .unwrap()
                    .subscriber(&topic)
                    .unwrap(),
            ),
        };
        server.kill();
        let started = Instant::now();
        let err = consumer.next().unwrap().unwrap_err();
        assert!(matches!(err, Error::Redis { .. }), "{kind}: {err}");
        assert!(started.elapsed() < Duration::from_secs(30));
        server.restart();
    }
}

/// Consumes a topic of frames on a worker: how many, and their sum.
#[proxied]
fn consume_frames(broker: RedisStreams, topic: String) -> Result<(u64, f64), String> {
    let subscriber = broker.subscriber(topic).map_err(|e| e.to_string())?;
    let mut count = 0;
    let mut sum = 0.0;
    for item in StreamConsumer::<Vec<f64>>::new(subscriber) {
        let item = item.map_err(|e| e.to_string())?;
        sum += item.iter().sum::<f64>();
        count += 1;
    }
    Ok((count, sum))
}

fn consume_in_tasks(executor: &StoreExecutor, server: &RedisServer, dir: &Path) {
    let store = file_store(dir);
    let topic = unique("tasks");
    let broker = RedisStreams::new(server.url()).unwrap().end_grace(GRACE);
    let futures: Vec<_> = (0..2)
        .map(|_| {
            executor
                .submit(consume_frames::task(broker.clone(), topic.clone()))
                .unwrap()
        })
        .collect();
    produce(broker.publisher().unwrap(), &store, &topic, 0..30);
    let (mut count, mut sum) = (0, 0.0);
    for future in futures {
        let (n, s) = *future.result().unwrap();
        count += n;
        sum += s;
    }
    assert_eq!(count, 30);
    assert_eq!(sum, (0..30).map(|s| s as f64 * 4096.0).sum::<f64>());
    assert_eq!(objects(&dir.join("objects")), Vec::<String>::new());
    assert_no_stream_keys(server);
}

#[test]
fn consumers_inside_process_pool_tasks() {
    let Some(server) = RedisServer::start("streams_redis") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pool = ProcessPool::builder(2).test_harness().build().unwrap();
    let store = Store::new(
        unique("pool"),
        FileConnector::new(dir.path().join("exec")).unwrap(),
    )
    .unwrap();
    let executor = StoreExecutor::new(pool, store);
    consume_in_tasks(&executor, &server, dir.path());
}

#[test]
fn consumers_inside_cluster_tasks() {
    let Some(cluster) = Cluster::start("streams_redis", &unique("q")) else {
        return;
    };
    let _workers = [cluster.worker(), cluster.worker()];
    let dir = tempfile::tempdir().unwrap();
    let executor = cluster.executor("cluster-stream");
    consume_in_tasks(&executor, &cluster.server, dir.path());
}

/// A subscriber busy with an item for longer than the end's grace still
/// ends: it saw the topic under way, and no trace of it is left.
#[test]
fn a_subscriber_busy_past_the_end_grace_still_ends() {
    let Some(server) = RedisServer::start("streams_redis") else {
        return;
    };
    let grace = Duration::from_millis(200);
    for kind in ["queue", "streams"] {
        let topic = unique(kind);
        let (busy, other, publisher) = match kind {
            "queue" => {
                let broker = RedisQueue::new(server.url()).unwrap().end_grace(grace);
                (
                    StreamConsumer::<u32>::builder(broker.subscriber(&topic).unwrap()),
                    StreamConsumer::<u32>::new(broker.subscriber(&topic).unwrap()),
                    broker.publisher().unwrap(),
                )
            }
            _ => {
                let broker = RedisStreams::new(server.url()).unwrap().end_grace(grace);
                (
                    StreamConsumer::<u32>::builder(broker.subscriber(&topic).unwrap()),
                    StreamConsumer::<u32>::new(broker.subscriber(&topic).unwrap()),
                    broker.publisher().unwrap(),
                )
            }
        };
        // Without the fix it would wait for ever: a timeout turns that
        // into an error.
        let mut busy = busy.timeout(Duration::from_secs(5)).build();
        let mut producer = StreamProducer::<u32>::new(publisher);
        producer.send(&topic, 0).unwrap();
        producer.send(&topic, 1).unwrap();
        producer.close_topic(&topic).unwrap();
        assert_eq!(busy.next_object().unwrap(), Some(0), "{kind}");
        // The other takes the rest and ends; the end's mark expires.
        let rest: Vec<u32> = other.map(|i| *i.unwrap()).collect();
        assert_eq!(rest, [1], "{kind}");
        std::thread::sleep(grace * 4);
        assert!(
            busy.next().is_none(),
            "{kind}: the busy subscriber ends too"
        );
        drop(busy);
        assert_no_stream_keys(&server);
    }
}

fn streams_consumer(broker: &RedisStreams, topic: &str) -> StreamConsumer<u32> {
    StreamConsumer::<u32>::builder(broker.subscriber(topic).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
}

/// Keeping every item of a stream while reading it (`collect`) must not
/// wait for ever on the end: the consumer's own items do not hold it back.
/// Their objects go when they are dropped, and the stream with the last.
#[test]
fn a_consumer_can_keep_its_items_until_the_end_on_redis_streams() {
    let Some(server) = RedisServer::start("streams_redis") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let topic = unique("collect");
    let broker = RedisStreams::new(server.url()).unwrap().end_grace(GRACE);
    let consumer = streams_consumer(&broker, &topic);
    let mut producer = StreamProducer::<u32>::builder(broker.publisher().unwrap())
        .default_store(store.clone())
        .batch_size(2)
        .build();
    for i in 0..5 {
        producer.send(&topic, i).unwrap();
    }
    producer.close_topic(&topic).unwrap();
    let items: Vec<_> = consumer.collect::<Result<_, _>>().unwrap();
    assert_eq!(
        items.iter().map(|i| **i).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(store.len().unwrap(), 5);
    // The items outlive their consumer; the last one dropped finishes the
    // stream.
    drop(items);
    assert_eq!(store.len().unwrap(), 0);
    assert_no_stream_keys(&server);
}

/// A consumer that stops in the middle of a message neither loses its
/// other events nor leaves their objects behind.
#[test]
fn a_consumer_that_stops_mid_message_leaves_the_rest_to_others() {
    let Some(server) = RedisServer::start("streams_redis") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let topic = unique("midbatch");
    let broker = RedisStreams::new(server.url())
        .unwrap()
        .claim_idle(Duration::from_millis(300))
        .end_grace(GRACE);
    let mut first = streams_consumer(&broker, &topic);
    let mut producer = StreamProducer::<u32>::builder(broker.publisher().unwrap())
        .default_store(store.clone())
        .batch_size(4)
        .build();
    for i in 0..4 {
        producer.send(&topic, i).unwrap();
    }
    producer.close_topic(&topic).unwrap();
    assert_eq!(first.next_object().unwrap(), Some(0));
    drop(first);
    let second = streams_consumer(&broker, &topic);
    let rest: Vec<u32> = second.map(|i| *i.unwrap()).collect();
    assert_eq!(rest, [1, 2, 3], "the unread events are delivered again");
    assert_eq!(store.len().unwrap(), 0);
    assert_no_stream_keys(&server);

    // Without a durable broker the unread events are lost with the
    // consumer: their objects are evicted, not left behind.
    let topic = unique("midbatch-queue");
    let queue = RedisQueue::new(server.url()).unwrap().end_grace(GRACE);
    let mut first = StreamConsumer::<u32>::new(queue.subscriber(&topic).unwrap());
    let mut producer = StreamProducer::<u32>::builder(queue.publisher().unwrap())
        .default_store(store.clone())
        .batch_size(4)
        .build();
    for i in 0..4 {
        producer.send(&topic, i).unwrap();
    }
    assert_eq!(first.next_object().unwrap(), Some(0));
    drop(first);
    assert_eq!(store.len().unwrap(), 0, "the unread objects were evicted");
    producer.close_topic(&topic).unwrap();
    let last = StreamConsumer::<u32>::new(queue.subscriber(&topic).unwrap());
    assert_eq!(last.count(), 0);
    assert_no_stream_keys(&server);
}

/// A subscriber that gives up while it holds the end back leaves the end
/// (and the last objects it may carry) to another.
#[test]
fn a_subscriber_dropped_while_holding_the_end_loses_nothing() {
    let Some(server) = RedisServer::start("streams_redis") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let topic = unique("heldend");
    let broker = RedisStreams::new(server.url())
        .unwrap()
        .claim_idle(Duration::from_millis(1500))
        .end_grace(GRACE);
    let mut a = streams_consumer(&broker, &topic);
    let mut b = StreamConsumer::<u32>::builder(broker.subscriber(&topic).unwrap())
        .timeout(Duration::from_millis(800))
        .build();
    let mut producer = StreamProducer::<u32>::builder(broker.publisher().unwrap())
        .default_store(store.clone())
        .batch_size(2)
        .build();
    for i in 1..=3 {
        producer.send(&topic, i).unwrap();
    }
    producer.close_topic(&topic).unwrap();
    // A takes the first message (1 and 2) and keeps item 1; B reads the end
    // (with 3), holds it back for A, and gives up.
    let one = a.next().unwrap().unwrap();
    assert_eq!(*one, 1);
    let err = b.next().unwrap().unwrap_err();
    assert!(matches!(err, Error::StreamTimeout { .. }), "{err}");
    drop(b);
    drop(one);
    let rest: Vec<u32> = a.map(|i| *i.unwrap()).collect();
    assert_eq!(
        rest,
        [2, 3],
        "the last object came through the end B gave back"
    );
    assert_eq!(store.len().unwrap(), 0);
    assert_no_stream_keys(&server);
}

/// A topic name can be used again for a new stream once the last one ended.
#[test]
fn a_topic_can_be_used_again() {
    let Some(server) = RedisServer::start("streams_redis") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    for kind in ["queue", "streams"] {
        let topic = unique(kind);
        for run in 0..2 {
            let (publisher, consumer) = match kind {
                "queue" => {
                    let broker = RedisQueue::new(server.url()).unwrap();
                    (
                        broker.publisher().unwrap(),
                        StreamConsumer::<u32>::new(broker.subscriber(&topic).unwrap()),
                    )
                }
                _ => {
                    let broker = RedisStreams::new(server.url()).unwrap();
                    (
                        broker.publisher().unwrap(),
                        streams_consumer(&broker, &topic),
                    )
                }
            };
            let mut producer = StreamProducer::<u32>::builder(publisher)
                .default_store(store.clone())
                .build();
            let reader =
                std::thread::spawn(move || consumer.map(|i| *i.unwrap()).collect::<Vec<u32>>());
            // Slower than the subscriber's waits: it finds the topic empty
            // between events, where a leftover end mark would end it.
            for i in 0..4 {
                producer.send(&topic, i).unwrap();
                std::thread::sleep(Duration::from_millis(350));
            }
            producer.close_topic(&topic).unwrap();
            assert_eq!(reader.join().unwrap(), [0, 1, 2, 3], "{kind} run {run}");
            assert_eq!(store.len().unwrap(), 0, "{kind} run {run}");
        }
    }
}

/// Subscribing to a topic that never begins leaves nothing once the
/// subscribers are gone.
#[test]
fn subscribers_of_a_topic_that_never_began_leave_nothing() {
    let Some(server) = RedisServer::start("streams_redis") else {
        return;
    };
    let topic = unique("never");
    let broker = RedisStreams::new(server.url()).unwrap();
    let a = broker.subscriber(&topic).unwrap();
    let b = broker.subscriber(&topic).unwrap();
    assert_eq!(
        server.keys("proxystore:stream*").len(),
        1,
        "the stream and its group"
    );
    drop(a);
    assert_eq!(
        server.keys("proxystore:stream*").len(),
        1,
        "b still reads it"
    );
    drop(b);
    assert_no_stream_keys(&server);
}
