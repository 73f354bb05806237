//! Store configurations in task frames, encoded and decoded once per
//! process.
//!
//! Every proxied argument and result of a task carries its store's
//! configuration. A process sees the same few configurations again and
//! again, so each is encoded once (by the allocation it lives in) and
//! decoded once (by its bytes), and every later reference shares the
//! result.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, Weak};

use lru::LruCache;

use crate::store::StoreConfig;

/// Configurations remembered each way.
const ENTRIES: NonZeroUsize = NonZeroUsize::new(64).expect("not zero");

/// Encodings longer than this (no configuration made here is) are decoded
/// every time rather than kept.
const LARGEST: usize = 16 << 10;

type Encoded = LruCache<usize, (Weak<StoreConfig>, Arc<[u8]>)>;

static ENCODED: Mutex<Option<Encoded>> = Mutex::new(None);
type Decoded = LruCache<Box<[u8]>, Arc<StoreConfig>>;

static DECODED: Mutex<Option<Decoded>> = Mutex::new(None);

/// `config` as CBOR.
pub(super) fn encoded(config: &Arc<StoreConfig>) -> Arc<[u8]> {
    // Keyed by the allocation's address: the `Weak` held beside the bytes
    // keeps that allocation from being freed, so no other configuration
    // can ever have the same address while the entry exists.
    let address = Arc::as_ptr(config) as usize;
    let mut cache = ENCODED.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(|| LruCache::new(ENTRIES));
    if let Some((_, bytes)) = cache.get(&address) {
        return bytes.clone();
    }
    let mut bytes = Vec::with_capacity(256);
    ciborium::into_writer(&**config, &mut bytes).expect("configurations serialize");
    let bytes: Arc<[u8]> = bytes.into();
    cache.put(address, (Arc::downgrade(config), bytes.clone()));
    bytes
}

/// The configuration encoded in `bytes`.
pub(super) fn decoded(bytes: &[u8]) -> Result<Arc<StoreConfig>, String> {
    let mut cache = DECODED.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(|| LruCache::new(ENTRIES));
    if let Some(config) = cache.get(bytes) {
        return Ok(config.clone());
    }
    let config: StoreConfig = crate::codec::cbor_from_reader(bytes)
        .map_err(|e| format!("invalid store configuration: {e}"))?;
    let config = Arc::new(config);
    if bytes.len() <= LARGEST {
        cache.put(bytes.into(), config.clone());
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::LocalConnector;
    use crate::Store;

    #[test]
    fn a_configuration_round_trips_and_is_shared() {
        let store = Store::builder("config-cache-test", LocalConnector::new())
            .register(false)
            .build()
            .unwrap();
        let config = Arc::new(store.config().clone());
        let bytes = encoded(&config);
        assert!(Arc::ptr_eq(&bytes, &encoded(&config)), "encoded once");
        let first = decoded(&bytes).unwrap();
        assert_eq!(*first, *config);
        assert!(
            Arc::ptr_eq(&first, &decoded(&bytes).unwrap()),
            "decoded once"
        );
        // Another configuration at a new address is encoded afresh.
        let mut other = (*config).clone();
        other.name = "another".into();
        let other = Arc::new(other);
        assert_eq!(*decoded(&encoded(&other)).unwrap(), *other);
        assert!(decoded(b"\xff not cbor").is_err());
    }
}
