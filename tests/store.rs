//! Store behaviour: typed objects, cache, metrics, configuration, registry.

mod support;

use support::common::unique;

use proxystore::connectors::{Connector, FileConnector, LocalConnector};
use proxystore::store::{self, Operation};
use proxystore::{Error, Key, Store, StoreConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: f64,
    label: String,
    tags: Vec<u16>,
}

#[test]
fn typed_put_get_exists_evict_and_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(unique("typed"), FileConnector::new(dir.path()).unwrap()).unwrap();
    let point = Point {
        x: 1.5,
        label: "p".into(),
        tags: vec![1, 2],
    };
    let key = store.put(&point).unwrap();
    assert!(store.exists(&key).unwrap());
    assert_eq!(*store.get::<Point>(&key).unwrap().unwrap(), point);
    assert_eq!(store.load::<Point>(&key).unwrap().unwrap(), point);
    store.evict(&key).unwrap();
    assert!(!store.exists(&key).unwrap());
    assert!(
        store.get::<Point>(&key).unwrap().is_none(),
        "evict also drops the cached copy"
    );

    let keys = store
        .put_batch(&[vec![1u8], vec![2, 2], vec![3, 3, 3]])
        .unwrap();
    let got = store.get_batch::<Vec<u8>>(&keys).unwrap();
    let got: Vec<Vec<u8>> = got.into_iter().map(|v| (*v.unwrap()).clone()).collect();
    assert_eq!(got, vec![vec![1], vec![2, 2], vec![3, 3, 3]]);
    store.close().unwrap();
}

#[test]
fn wrong_type_and_corrupt_bytes_are_typed_errors_naming_key_and_store() {
    let connector = LocalConnector::new();
    let name = unique("decode");
    let store = Store::builder(&name, connector.clone())
        .cache_size(0)
        .build()
        .unwrap();
    let key = store.put(&"text".to_string()).unwrap();
    let err = store.get::<Vec<f64>>(&key).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(
        text.contains(&key.to_string()) && text.contains(&name),
        "{text}"
    );
    assert!(
        text.contains("alloc::string::String") && text.contains("Vec<f64>"),
        "{text}"
    );

    let bad = Key::new();
    connector.set(&bad, &[b"not an object"]).unwrap();
    let err = store.get::<String>(&bad).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("corrupt"), "{err}");

    // Truncated: the header announces more than there is.
    let good = store.put(&vec![7u64; 100]).unwrap();
    let mut bytes = connector.get(&good).unwrap().unwrap();
    bytes.truncate(bytes.len() - 3);
    connector.set(&good, &[&bytes]).unwrap();
    let err = store.get::<Vec<u64>>(&good).unwrap_err();
    assert!(err.to_string().contains("800 bytes"), "{err}");
}

#[test]
fn the_cache_serves_repeated_gets_and_can_be_disabled() {
    let store = Store::builder(unique("cache"), LocalConnector::new())
        .cache_size(2)
        .metrics(true)
        .build()
        .unwrap();
    let a = store.put(&1u32).unwrap();
    let b = store.put(&2u32).unwrap();
    let c = store.put(&3u32).unwrap();
    let first = store.get::<u32>(&a).unwrap().unwrap();
    let again = store.get::<u32>(&a).unwrap().unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first, &again),
        "second get is the cached object"
    );
    store.get::<u32>(&b).unwrap();
    store.get::<u32>(&c).unwrap(); // evicts `a` from the LRU (size 2)
    let third = store.get::<u32>(&a).unwrap().unwrap();
    assert!(!std::sync::Arc::ptr_eq(&first, &third));
    let m = store.metrics().unwrap();
    assert_eq!(m.cache_hits, 1);
    assert_eq!(m.cache_misses, 4);
    assert_eq!(m.get(Operation::Get).count, 4);
    assert_eq!(m.get(Operation::Put).count, 3);
    assert!(m.get(Operation::Put).bytes > 0);

    let uncached = Store::builder(unique("nocache"), LocalConnector::new())
        .cache_size(0)
        .metrics(true)
        .build()
        .unwrap();
    let k = uncached.put(&1u32).unwrap();
    let x = uncached.get::<u32>(&k).unwrap().unwrap();
    let y = uncached.get::<u32>(&k).unwrap().unwrap();
    assert!(!std::sync::Arc::ptr_eq(&x, &y));
    assert_eq!(uncached.metrics().unwrap().get(Operation::Get).count, 2);
    // Updating an object invalidates its cached copy.
    store.set(&a, &10u32).unwrap();
    assert_eq!(*store.get::<u32>(&a).unwrap().unwrap(), 10);
}

#[test]
fn the_cache_is_shared_safely_between_threads() {
    let store = Store::builder(unique("threads"), LocalConnector::new())
        .cache_size(4)
        .build()
        .unwrap();
    let keys: Vec<Key> = (0..16u64)
        .map(|i| store.put(&vec![i; 100]).unwrap())
        .collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (store, keys) = (&store, &keys);
            s.spawn(move || {
                for round in 0..200 {
                    let i = (t * 7 + round) % keys.len();
                    assert_eq!(
                        store.get::<Vec<u64>>(&keys[i]).unwrap().unwrap()[0],
                        i as u64
                    );
                }
            });
        }
    });
}

#[test]
fn metrics_are_off_by_default() {
    let store = Store::builder(unique("nometrics"), LocalConnector::new())
        .build()
        .unwrap();
    assert!(store.metrics().is_none());
}

#[test]
fn config_round_trips_and_rebuilds_the_store_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder(
        unique("config"),
        FileConnector::new(dir.path().join("o")).unwrap(),
    )
    .cache_size(7)
    .metrics(true)
    .register(false)
    .build()
    .unwrap();
    let key = store.put(&"persisted".to_string()).unwrap();
    let mut wire = Vec::new();
    ciborium::into_writer(store.config(), &mut wire).unwrap();
    let config: StoreConfig = ciborium::from_reader(&wire[..]).unwrap();
    assert_eq!(&config, store.config());
    assert_eq!(config.cache_size, 7);
    let rebuilt = Store::from_config(config).unwrap();
    assert_eq!(*rebuilt.get::<String>(&key).unwrap().unwrap(), "persisted");
    assert!(rebuilt.metrics().is_some());
}

#[test]
fn the_registry_finds_builds_and_refuses_duplicates() {
    let name = unique("registry");
    let store = Store::new(&name, LocalConnector::new()).unwrap();
    assert!(store::get_store(&name).is_some());
    let err = Store::new(&name, LocalConnector::new()).unwrap_err();
    assert!(matches!(err, Error::StoreExists { .. }), "{err}");
    // A config of a registered store resolves to that very store.
    let found = store::get_or_create_store(store.config()).unwrap();
    let key = found.put(&1u8).unwrap();
    assert!(store.exists(&key).unwrap());
    // Close unregisters; the name is free again.
    store.close().unwrap();
    assert!(store::get_store(&name).is_none());
    assert!(matches!(store.put(&1u8), Err(Error::StoreClosed { .. })));
    let again = Store::new(&name, LocalConnector::new()).unwrap();
    assert!(store::unregister_store(&name).is_some());
    assert!(store::get_store(&name).is_none());
    store::register_store(&again).unwrap();
    again.close().unwrap();
    again.close().unwrap();
}

#[test]
fn a_closed_store_is_not_rebuilt_from_its_config_in_the_same_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objects");
    let name = unique("closed");
    let store = Store::new(&name, FileConnector::new(&path).unwrap()).unwrap();
    let config = store.config().clone();
    store.close().unwrap();
    drop(store);
    // What a proxy or result that outlived the store resolves through.
    let err = store::get_or_create_store(&config).unwrap_err();
    assert!(
        matches!(&err, Error::StoreClosed { store } if *store == name),
        "{err}"
    );
    assert!(store::get_store(&name).is_none(), "not registered again");
    // Another store of that name (another directory) is not the closed one.
    let other = FileConnector::new(dir.path().join("other")).unwrap();
    let mut other_config = config.clone();
    other_config.connector = other.config();
    let rebuilt = store::get_or_create_store(&other_config).unwrap();
    rebuilt.close().unwrap();
    // Creating the store again makes the name usable again.
    let again = Store::new(&name, FileConnector::new(&path).unwrap()).unwrap();
    assert!(store::get_or_create_store(&config).is_ok());
    again.close().unwrap();
}

#[test]
fn closing_a_file_store_removes_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objects");
    let store = Store::new(unique("close"), FileConnector::new(&path).unwrap()).unwrap();
    store.put(&vec![1.0f64; 10]).unwrap();
    assert!(path.exists());
    store.close().unwrap();
    assert!(!path.exists());
}

#[test]
fn large_numeric_buffers_round_trip_through_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder(unique("large"), FileConnector::new(dir.path()).unwrap())
        .cache_size(0)
        .build()
        .unwrap();
    let floats: Vec<f64> = (0..1_000_000).map(|i| i as f64 * 0.5).collect();
    let key = store.put(&floats).unwrap();
    let size = std::fs::metadata(dir.path().join(key.to_string()))
        .unwrap()
        .len();
    assert!(
        size < 8_000_100,
        "raw encoding, not element by element: {size}"
    );
    assert_eq!(store.load::<Vec<f64>>(&key).unwrap().unwrap(), floats);
    let ints: Vec<i32> = (0..100_000).map(|i| i - 50_000).collect();
    let key = store.put(&ints).unwrap();
    assert_eq!(store.load::<Vec<i32>>(&key).unwrap().unwrap(), ints);
    store.close().unwrap();
}

#[test]
fn a_huge_cache_size_from_outside_only_bounds_the_cache() {
    // A configuration arriving with a proxy can say anything: 2^40 cached
    // objects must not be an allocation made up front.
    let connector = LocalConnector::new();
    let store = Store::builder(unique("huge-cache"), connector)
        .cache_size(1 << 40)
        .register(false)
        .build()
        .unwrap();
    let key = store.put(&"cached".to_string()).unwrap();
    assert_eq!(*store.get::<String>(&key).unwrap().unwrap(), "cached");

    let mut config = store.config().clone();
    config.name = unique("huge-cache-rebuilt");
    let rebuilt = Store::from_config(config.clone()).unwrap();
    assert_eq!(*rebuilt.get::<String>(&key).unwrap().unwrap(), "cached");
    let proxy: proxystore::Proxy<String> = proxystore::Proxy::from_parts(config, key);
    assert_eq!(*proxy, "cached");
}

#[test]
fn a_value_stored_as_one_type_is_not_read_as_another_unless_asked() {
    let store = Store::builder(unique("type-check"), LocalConnector::new())
        .register(false)
        .build()
        .unwrap();
    let key = store.put(&Some(7u8)).unwrap();
    let err = store.get::<u64>(&key).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("`core::option::Option<u8>`") && text.contains("`u64`"),
        "{text}"
    );
    let relaxed = proxystore::codec::DecodeOptions::new().check_type(false);
    assert_eq!(store.load_with::<u64>(&key, relaxed).unwrap(), Some(7));
    assert_eq!(*store.get::<Option<u8>>(&key).unwrap().unwrap(), Some(7));
}

/// A process that rebuilt a store from one configuration (a worker) and
/// then receives a configuration of another store with the same name (the
/// next caller's) uses that other store, not the first one; a store the
/// process made itself keeps answering for its name.
#[test]
fn a_rebuilt_store_gives_way_to_another_connector_of_the_same_name() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let name = unique("same-name");
    let first = Store::new(&name, FileConnector::new(a.path().join("o")).unwrap()).unwrap();
    let key = first.put(&"from a".to_string()).unwrap();
    let config_a = first.config().clone();
    store::unregister_store(&name).unwrap();
    let second = Store::new(&name, FileConnector::new(b.path().join("o")).unwrap()).unwrap();
    let config_b = second.config().clone();
    second.put(&"from b".to_string()).unwrap();
    store::unregister_store(&name).unwrap();

    // As in a worker: rebuilt from a's configuration, then b's arrives.
    let rebuilt_a = store::get_or_create_store(&config_a).unwrap();
    assert_eq!(
        rebuilt_a
            .get::<String>(&key)
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("from a")
    );
    let rebuilt_b = store::get_or_create_store(&config_b).unwrap();
    assert_eq!(rebuilt_b.config().connector, config_b.connector);
    assert!(
        rebuilt_b.get::<String>(&key).unwrap().is_none(),
        "b's objects, not a's"
    );
    assert_eq!(
        store::get_or_create_store(&config_a)
            .unwrap()
            .config()
            .connector,
        config_a.connector
    );

    // A store made here answers for its name.
    store::unregister_store(&name).unwrap();
    let mine = Store::new(&name, LocalConnector::new()).unwrap();
    let got = store::get_or_create_store(&config_a).unwrap();
    assert_eq!(got.config().connector, mine.config().connector);
    mine.close().unwrap();
    first.close().unwrap();
    second.close().unwrap();
}

/// A connector of a user's own, written before `Connector::keys` existed.
#[derive(Debug, Default)]
struct Unlisted {
    inner: LocalConnector,
}

impl Connector for Unlisted {
    fn config(&self) -> proxystore::connectors::ConnectorConfig {
        proxystore::connectors::ConnectorConfig::new("tests.unlisted", &()).unwrap()
    }
    fn set(&self, key: &Key, parts: &[&[u8]]) -> proxystore::Result<()> {
        self.inner.set(key, parts)
    }
    fn get(&self, key: &Key) -> proxystore::Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn exists(&self, key: &Key) -> proxystore::Result<bool> {
        self.inner.exists(key)
    }
    fn evict(&self, key: &Key) -> proxystore::Result<()> {
        self.inner.evict(key)
    }
    fn close(&self) -> proxystore::Result<()> {
        self.inner.close()
    }
}

#[test]
fn a_store_lists_and_counts_its_objects_until_nothing_is_left() {
    let store = Store::new(unique("listed"), LocalConnector::new()).unwrap();
    assert!(store.is_empty().unwrap());
    let kept = store.put(&1u32).unwrap();
    let owned = store.owned_proxy(vec![0u8; 64]).unwrap();
    let proxy = store.proxy("plain".to_string()).unwrap();
    assert_eq!(store.len().unwrap(), 3);
    assert!(store.keys().unwrap().contains(&kept));
    drop(owned);
    assert_eq!(
        store.len().unwrap(),
        2,
        "the owned proxy took its object along"
    );
    store.evict(&kept).unwrap();
    store.evict(&proxystore::Proxy::key(&proxy)).unwrap();
    assert!(store.is_empty().unwrap(), "{:?}", store.keys().unwrap());
    store.close().unwrap();
    let err = store.len().unwrap_err();
    assert!(matches!(err, Error::StoreClosed { .. }), "{err}");
}

#[test]
fn a_connector_that_cannot_list_says_so_with_a_typed_error() {
    let store = Store::builder(unique("unlisted"), Unlisted::default())
        .register(false)
        .build()
        .unwrap();
    store.put(&1u32).unwrap();
    let err = store.is_empty().unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("tests.unlisted") && text.contains("list the keys"),
        "{text}"
    );
}
