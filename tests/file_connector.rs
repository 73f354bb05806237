//! What the file store promises beyond the conformance suite.

mod support;

use std::fs;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use proxystore::connectors::{Connector, FileConnector};
use proxystore::{Error, Key, Store};
use support::common::unique;

// 1. Never follow a link out of the directory.

#[test]
fn a_planted_key_named_symlink_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("secret.txt");
    fs::write(&outside, b"secret").unwrap();
    let path = dir.path().join("objects");
    let c = FileConnector::new(&path).unwrap();
    let key = Key::new();
    symlink(&outside, path.join(key.to_string())).unwrap();

    // Not read through...
    let err = c.get(&key).unwrap_err();
    assert!(matches!(err, Error::NotAnObject { .. }), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(c.open(&key).is_err());
    assert!(!c.exists(&key).unwrap());
    // ...and unlinked, not followed, on close.
    c.close().unwrap();
    assert_eq!(fs::read(&outside).unwrap(), b"secret");
    assert!(!path.exists());
}

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

// 5. Nothing hangs.

#[test]
fn a_fifo_at_a_keys_path_is_refused_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let c = FileConnector::new(dir.path().join("objects")).unwrap();
    let key = Key::new();
    let fifo: PathBuf = c.directory().join(key.to_string());
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());

    let (tx, rx) = mpsc::channel();
    let reader = c.clone();
    thread::spawn(move || {
        let got = reader.get(&key).map(|_| ());
        let opened = reader.open(&key).map(|r| {
            r.map(|mut r| {
                let mut sink = Vec::new();
                let _ = r.read_to_end(&mut sink);
            })
        });
        let exists = reader.exists(&key);
        let _ = tx.send((got, opened.map(|_| ()), exists));
    });
    let Ok((got, opened, exists)) = rx.recv_timeout(Duration::from_secs(5)) else {
        // Unblock the reader before failing.
        drop(fs::OpenOptions::new().write(true).open(&fifo));
        panic!("reading a key whose path is a fifo blocked");
    };
    let err = got.unwrap_err();
    assert!(matches!(err, Error::NotAnObject { .. }), "{err}");
    assert!(err.to_string().contains("fifo"), "{err}");
    assert!(opened.is_err());
    assert!(!exists.unwrap(), "a fifo is not an object");
    c.close().unwrap();
    assert!(!c.directory().exists());
}
