//! Streams through the in-process broker: ownership, filters, batches,
//! aggregation, objects inside events, the end of a topic, async
//! iteration, and hostile messages.

mod support;

use std::sync::Arc;
use std::time::Duration;

use proxystore::connectors::FileConnector;
use proxystore::lifetime::{ContextLifetime, Lifetime};
use proxystore::stream::{Item, LocalBroker, Metadata, Publisher, StreamConsumer, StreamProducer};
use proxystore::{Error, Store};
use support::common::{block_on, unique};

fn file_store(dir: &std::path::Path) -> Store {
    Store::builder(
        unique("stream"),
        FileConnector::new(dir.join("objects")).unwrap(),
    )
    .cache_size(0)
    .build()
    .unwrap()
}

fn objects_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("objects"))
        .map(|d| {
            d.filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                !name.to_string_lossy().starts_with('.')
            })
            .count()
        })
        .unwrap_or(0)
}

fn step(item: &Item<Vec<f64>>) -> i64 {
    Item::metadata(item).get("step").unwrap().as_i64().unwrap()
}

#[test]
fn owned_objects_are_evicted_as_the_consumer_drops_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let broker = LocalBroker::new();
    let mut consumer = StreamConsumer::<Vec<f64>>::new(broker.subscriber("frames"));
    let mut producer = StreamProducer::<Vec<f64>>::builder(broker.publisher())
        .default_store(store.clone())
        .build();
    for i in 0..5 {
        producer
            .send_with(
                "frames",
                vec![i as f64; 1000],
                Metadata::new().with("step", i),
            )
            .unwrap();
    }
    assert_eq!(
        objects_in(dir.path()),
        5,
        "each object in the store, not in an event"
    );

    let first = consumer.next().unwrap().unwrap();
    assert!(Item::is_owned(&first));
    assert_eq!(step(&first), 0);
    assert_eq!(first[999], 0.0);
    let key = Item::key(&first).unwrap();
    assert!(store.exists(&key).unwrap());
    drop(first);
    assert!(
        !store.exists(&key).unwrap(),
        "dropping the item evicts its object"
    );
    assert_eq!(objects_in(dir.path()), 4);

    // Read and evicted at once.
    let (value, meta) = consumer.next_object_with_metadata().unwrap().unwrap();
    assert_eq!(
        (value[0], meta.get("step").unwrap().as_i64()),
        (1.0, Some(1))
    );
    assert_eq!(objects_in(dir.path()), 3);

    producer.close_topic("frames").unwrap();
    let rest: Vec<i64> = consumer.by_ref().map(|i| step(&i.unwrap())).collect();
    assert_eq!(rest, [2, 3, 4]);
    assert!(consumer.next().is_none(), "ended for good");
    assert_eq!(objects_in(dir.path()), 0, "nothing left once consumed");
    let err = producer.send("frames", vec![]).unwrap_err();
    assert!(matches!(err, Error::TopicClosed { .. }), "{err}");
}

#[test]
fn topics_without_a_store_carry_objects_inside_their_events() {
    let broker = LocalBroker::new();
    let mut consumer = StreamConsumer::<Vec<f64>>::new(broker.subscriber("inline"));
    let mut producer = StreamProducer::<Vec<f64>>::new(broker.publisher());
    producer.send("inline", vec![1.5; 100_000]).unwrap();
    producer.send("inline", Vec::new()).unwrap();
    producer.close_topic("inline").unwrap();
    let first = consumer.next().unwrap().unwrap();
    assert!(Item::key(&first).is_none() && !Item::is_owned(&first));
    assert_eq!(first.iter().sum::<f64>(), 150_000.0);
    assert_eq!(consumer.next_object().unwrap(), Some(vec![]));
    assert!(consumer.next_object().unwrap().is_none());
}

#[test]
fn per_topic_stores_and_a_default() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let broker = LocalBroker::new();
    let mut in_store = StreamConsumer::<String>::new(broker.subscriber("big"));
    let mut inline = StreamConsumer::<String>::new(broker.subscriber("small"));
    let mut producer = StreamProducer::<String>::builder(broker.publisher())
        .default_store(store.clone())
        .store("small", None)
        .build();
    producer.send("big", "stored".into()).unwrap();
    producer.send("small", "inside".into()).unwrap();
    let big = in_store.next().unwrap().unwrap();
    let small = inline.next().unwrap().unwrap();
    assert!(Item::key(&big).is_some() && Item::key(&small).is_none());
    assert_eq!((big.as_str(), small.as_str()), ("stored", "inside"));
}

#[test]
fn filters_on_both_sides_and_filtered_owned_objects_are_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let broker = LocalBroker::new();
    let consumer = StreamConsumer::<Vec<f64>>::builder(broker.subscriber("t"))
        .filter(|m| m.get("step").and_then(|v| v.as_i64()).unwrap() % 2 == 0)
        .build();
    let mut producer = StreamProducer::<Vec<f64>>::builder(broker.publisher())
        .default_store(store)
        .filter(|m| m.get("step").and_then(|v| v.as_i64()).unwrap() < 6)
        .build();
    for i in 0..10 {
        producer
            .send_with("t", vec![0.0; 10], Metadata::new().with("step", i))
            .unwrap();
    }
    assert_eq!(
        objects_in(dir.path()),
        6,
        "the producer's filter sends 0..6 only"
    );
    producer.close_topic("t").unwrap();
    let steps: Vec<i64> = consumer.map(|i| step(&i.unwrap())).collect();
    assert_eq!(steps, [0, 2, 4]);
    assert_eq!(
        objects_in(dir.path()),
        0,
        "the odd ones were evicted unread"
    );
}

#[test]
fn sampling_keeps_about_the_fraction_asked() {
    let broker = LocalBroker::new();
    let consumer = StreamConsumer::<u32>::builder(broker.subscriber("s"))
        .sample(0.25)
        .build();
    let mut producer = StreamProducer::<u32>::new(broker.publisher());
    for i in 0..4000 {
        producer.send("s", i).unwrap();
    }
    producer.close_topic("s").unwrap();
    let kept = consumer.count();
    assert!((700..1300).contains(&kept), "{kept} of 4000 kept at 0.25");
}

#[test]
fn batches_travel_together_and_aggregators_combine_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let broker = LocalBroker::new();
    let mut batched = StreamConsumer::<u64>::new(broker.subscriber("batched"));
    let mut producer = StreamProducer::<u64>::builder(broker.publisher())
        .default_store(store.clone())
        .batch_size(3)
        .build();
    for i in 0..4 {
        producer.send("batched", i).unwrap();
    }
    // Three went out together; the fourth waits for its batch.
    assert_eq!(objects_in(dir.path()), 3);
    let got: Vec<u64> = (0..3).map(|_| *batched.next().unwrap().unwrap()).collect();
    assert_eq!(got, [0, 1, 2]);
    producer.close_topic("batched").unwrap(); // flushes the fourth first
    assert_eq!(batched.next_object().unwrap(), Some(3));
    assert!(batched.next().is_none());

    let mut summed = StreamConsumer::<u64>::new(broker.subscriber("summed"));
    let mut producer = StreamProducer::<u64>::builder(broker.publisher())
        .default_store(store.clone())
        .batch_size(4)
        .aggregator(|values| values.iter().sum())
        .build();
    for i in 1..=8u64 {
        producer
            .send_with(
                "summed",
                i,
                Metadata::new()
                    .with(format!("k{i}"), i as i64)
                    .with("last", i as i64),
            )
            .unwrap();
    }
    producer.close().unwrap();
    let (first, meta) = summed.next_object_with_metadata().unwrap().unwrap();
    assert_eq!(first, 10);
    assert_eq!(meta.len(), 5, "the union of the batch's metadata: {meta:?}");
    assert_eq!(
        meta.get("last").unwrap().as_i64(),
        Some(4),
        "later values win"
    );
    assert_eq!(summed.next_object().unwrap(), Some(26));
    assert_eq!(objects_in(dir.path()), 0);
}

#[test]
fn dropping_a_producer_sends_what_waits() {
    let broker = LocalBroker::new();
    let mut consumer = StreamConsumer::<u8>::new(broker.subscriber("t"));
    let mut producer = StreamProducer::<u8>::builder(broker.publisher())
        .batch_size(10)
        .build();
    producer.send("t", 7).unwrap();
    drop(producer);
    assert_eq!(consumer.next_object().unwrap(), Some(7));
}

#[test]
fn shared_objects_are_read_by_many_and_evicted_by_their_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let broker = LocalBroker::new();
    let mut consumer = StreamConsumer::<String>::new(broker.subscriber("t"));
    let lifetime = Arc::new(ContextLifetime::new());
    let mut producer = StreamProducer::<String>::builder(broker.publisher())
        .default_store(store.clone())
        .build();
    producer
        .send_shared(
            "t",
            "for everyone".into(),
            Metadata::new(),
            Some(lifetime.clone() as Arc<dyn Lifetime>),
        )
        .unwrap();
    let item = consumer.next().unwrap().unwrap();
    assert!(!Item::is_owned(&item));
    let proxy = Item::proxy(&item).unwrap();
    let key = Item::key(&item).unwrap();
    assert_eq!(Item::into_inner(item).unwrap(), "for everyone");
    assert_eq!(*proxy, "for everyone", "still there for other readers");
    assert!(store.exists(&key).unwrap());
    lifetime.close();
    assert!(
        !store.exists(&key).unwrap(),
        "evicted when its lifetime ended"
    );
}

#[test]
fn every_subscriber_of_a_shared_topic_ends_at_its_end() {
    let broker = LocalBroker::new();
    let consumers: Vec<_> = (0..3)
        .map(|_| StreamConsumer::<u32>::new(broker.subscriber("shared")))
        .collect();
    let readers: Vec<_> = consumers
        .into_iter()
        .map(|c| std::thread::spawn(move || c.map(|i| *i.unwrap()).collect::<Vec<u32>>()))
        .collect();
    let mut producer = StreamProducer::<u32>::new(broker.publisher());
    for i in 0..300 {
        producer.send("shared", i).unwrap();
    }
    producer.close_topic("shared").unwrap();
    let mut all: Vec<u32> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..300).collect::<Vec<_>>(),
        "each event to exactly one"
    );
    assert_eq!(broker.topic_count(), 0, "the ended topic is forgotten");
}

#[test]
fn a_timeout_is_a_typed_error_and_iteration_goes_on() {
    let broker = LocalBroker::new();
    let mut consumer = StreamConsumer::<u8>::builder(broker.subscriber("slow"))
        .timeout(Duration::from_millis(50))
        .build();
    let err = consumer.next().unwrap().unwrap_err();
    assert!(matches!(err, Error::StreamTimeout { .. }), "{err}");
    let mut producer = StreamProducer::<u8>::new(broker.publisher());
    producer.send("slow", 1).unwrap();
    assert_eq!(consumer.next_object().unwrap(), Some(1));
}

#[test]
fn hostile_and_foreign_messages_are_typed_errors_and_lose_nothing() {
    let broker = LocalBroker::new();
    let publisher = broker.publisher();
    let mut consumer = StreamConsumer::<Vec<f64>>::new(broker.subscriber("t"));
    // A Python ProxyStore event, a truncated header, a huge claimed length.
    publisher.publish("t", &[b"\x80\x04\x95 pickled"]).unwrap();
    publisher
        .publish("t", &[b"PSE1", &u32::MAX.to_le_bytes(), b"\xa0"])
        .unwrap();
    // An object of another type inside an event.
    let mut other = StreamProducer::<String>::new(broker.publisher());
    other.send("t", "not floats".into()).unwrap();
    for _ in 0..3 {
        let err = consumer.next().unwrap().unwrap_err();
        assert!(matches!(err, Error::StreamEvent { .. }), "{err}");
    }
    let mut producer = StreamProducer::<Vec<f64>>::new(broker.publisher());
    producer.send("t", vec![2.0]).unwrap();
    assert_eq!(consumer.next_object().unwrap(), Some(vec![2.0]));
}

#[test]
fn a_wrong_type_from_a_store_is_a_decode_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let broker = LocalBroker::new();
    let mut consumer = StreamConsumer::<Vec<f64>>::new(broker.subscriber("t"));
    let mut producer = StreamProducer::<String>::builder(broker.publisher())
        .default_store(store)
        .build();
    producer.send("t", "text".into()).unwrap();
    let item = consumer.next().unwrap().unwrap();
    let err = Item::resolve(&item).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    drop(item);
    assert_eq!(objects_in(dir.path()), 0, "still evicted by its owner");
}

#[test]
fn the_async_stream_yields_the_same_items_and_stops_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let broker = LocalBroker::new();
    let consumer = StreamConsumer::<Vec<f64>>::new(broker.subscriber("a"));
    let mut producer = StreamProducer::<Vec<f64>>::builder(broker.publisher())
        .default_store(store)
        .build();
    for i in 0..20 {
        producer
            .send_with("a", vec![i as f64; 100], Metadata::new().with("step", i))
            .unwrap();
    }
    producer.close_topic("a").unwrap();
    let mut stream = consumer.into_stream().unwrap();
    let next = |s: &mut proxystore::stream::ItemStream<Vec<f64>>| {
        block_on(std::future::poll_fn(|cx| {
            futures_core::Stream::poll_next(std::pin::Pin::new(&mut *s), cx)
        }))
    };
    let mut steps = Vec::new();
    while let Some(item) = next(&mut stream) {
        let item = item.unwrap();
        assert_eq!(item[0], step(&item) as f64);
        steps.push(step(&item));
    }
    assert_eq!(steps, (0..20).collect::<Vec<_>>());
    assert!(next(&mut stream).is_none());
    assert_eq!(objects_in(dir.path()), 0);

    // Dropped while waiting on an empty topic: its thread stops.
    let idle = StreamConsumer::<u8>::new(broker.subscriber("idle"))
        .into_stream()
        .unwrap();
    drop(idle);
}

#[test]
fn a_consumer_on_another_thread_reads_a_large_stream_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let broker = LocalBroker::new();
    let consumer = StreamConsumer::<Vec<f64>>::new(broker.subscriber("big"));
    let reader = std::thread::spawn(move || {
        consumer
            .map(|item| {
                let item = item.unwrap();
                (step(&item), item.len())
            })
            .collect::<Vec<_>>()
    });
    let mut producer = StreamProducer::<Vec<f64>>::builder(broker.publisher())
        .default_store(store)
        .build();
    for i in 0..8 {
        producer
            .send_with("big", vec![0.25; 1 << 20], Metadata::new().with("step", i))
            .unwrap();
    }
    producer.close_topic("big").unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got, (0..8).map(|i| (i, 1 << 20)).collect::<Vec<_>>());
    assert_eq!(objects_in(dir.path()), 0);
}
