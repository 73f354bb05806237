//! What the file store promises beyond the conformance suite.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use proxystore::connectors::Connector;
use proxystore::{Error, Key, Store};
use support::common::unique;

// 2. A failed close can be retried.

/// A connector whose first close fails, as a file store's does while
/// other processes keep writing.
#[derive(Debug, Default)]
struct FailsToCloseOnce {
    inner: proxystore::connectors::LocalConnector,
    closes: AtomicUsize,
}

impl Connector for FailsToCloseOnce {
    fn config(&self) -> proxystore::connectors::ConnectorConfig {
        self.inner.config()
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
        if self.closes.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(Error::CloseIncomplete {
                connector: "test".into(),
                reason: "first try".into(),
            });
        }
        self.inner.close()
    }
}

#[test]
fn a_failed_store_close_leaves_the_store_open_and_can_be_retried() {
    let name = unique("close-retry");
    let store = Store::new(&name, FailsToCloseOnce::default()).unwrap();
    let key = store.put(&1u32).unwrap();

    let err = store.close().unwrap_err();
    assert!(matches!(err, Error::CloseIncomplete { .. }), "{err}");
    assert!(!store.is_closed());
    assert!(
        proxystore::store::get_store(&name).is_some(),
        "still registered"
    );
    assert_eq!(*store.get::<u32>(&key).unwrap().unwrap(), 1);

    store.close().unwrap();
    assert!(store.is_closed());
    assert!(proxystore::store::get_store(&name).is_none());
    store.close().unwrap();
    let connector = format!("{:?}", store);
    assert!(
        connector.contains("closes: 2"),
        "closed twice, then no more: {connector}"
    );
}
