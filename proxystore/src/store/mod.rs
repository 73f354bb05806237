//! Stores: typed objects over a [`Connector`], with a cache, metrics and a
//! process-wide registry.
//!
//! ```
//! use proxystore::connectors::FileConnector;
//! use proxystore::Store;
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::new("store-module-doc", FileConnector::new(dir.path().join("objects"))?)?;
//!
//! let key = store.put(&vec![1.0f64, 2.0, 3.0])?;
//! let value = store.get::<Vec<f64>>(&key)?.expect("just stored");
//! assert_eq!(*value, [1.0, 2.0, 3.0]);
//!
//! let proxy = store.proxy("a large string".to_string())?;
//! assert_eq!(proxy.len(), 14);          // String methods through Deref
//!
//! store.close()?;                       // FileConnector: removes what it created
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builder;
mod config_cache;
pub(crate) mod factory;
mod future;
mod metrics;
mod prefetch;
mod registry;

use std::any::Any;
use std::fmt;
use std::io::{BufReader, Read};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::connectors::{Connector, ConnectorConfig};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::Storable;

pub use builder::StoreBuilder;
pub use factory::Factory;
pub(crate) use factory::{with_wait_cap, Wait};
pub use future::StoreFuture;
pub(crate) use metrics::record_task;
pub use metrics::{Metrics, Operation, OperationStats};
pub use registry::{
    get_or_create_store, get_store, register_store, unregister_store, REBUILT_IDLE, REBUILT_STORES,
};

/// Default number of deserialized objects a store keeps.
pub const DEFAULT_CACHE_SIZE: usize = 16;

/// Everything needed to rebuild a store in another process.
///
/// Every proxy carries its store's configuration, so the process that
/// resolves it can find or build the same store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// The store's name, unique in a process.
    pub name: String,
    /// The connector's kind and options.
    pub connector: ConnectorConfig,
    /// How many deserialized objects to cache at most (0 disables the
    /// cache). Memory is taken as objects are cached, not up front, so a
    /// large value only lifts the bound.
    pub cache_size: usize,
    /// Whether to keep per-operation metrics.
    pub metrics: bool,
}

type Cache = Mutex<LruCache<Key, Arc<dyn Any + Send + Sync>>>;

struct Inner {
    config: Arc<StoreConfig>,
    connector: Arc<dyn Connector>,
    cache: Option<Cache>,
    metrics: Option<metrics::Recorder>,
    closed: AtomicBool,
}

/// Typed objects over a [`Connector`].
///
/// A `Store` is a cheap handle: clones share the connector, the cache and
/// the metrics, and it can be used from many threads at once. Dropping the
/// handles does not remove anything; [`close`](Store::close) does.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// A store named `name` over `connector`, with default options, and
    /// registered in this process (see [`StoreBuilder::register`]).
    pub fn new(name: impl Into<String>, connector: impl Connector) -> Result<Store> {
        Store::builder(name, connector).build()
    }

    /// A builder for a store with other options.
    pub fn builder(name: impl Into<String>, connector: impl Connector) -> StoreBuilder {
        StoreBuilder {
            name: name.into(),
            connector: Arc::new(connector),
            cache_size: DEFAULT_CACHE_SIZE,
            metrics: false,
            register: true,
        }
    }

    /// Rebuilds a store from its configuration (not registered).
    pub fn from_config(config: StoreConfig) -> Result<Store> {
        let connector = config.connector.build()?;
        Ok(Store::with_connector(config, connector))
    }

    fn with_connector(config: StoreConfig, connector: Arc<dyn Connector>) -> Store {
        // The size comes from outside (a proxy's configuration): it bounds
        // the cache, it never sizes an allocation. The cache grows with use.
        let cache = NonZeroUsize::new(config.cache_size).map(|n| {
            let mut cache = LruCache::unbounded();
            cache.resize(n);
            Mutex::new(cache)
        });
        let metrics = config.metrics.then(metrics::Recorder::default);
        Store {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                connector,
                cache,
                metrics,
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The connector.
    pub fn connector(&self) -> &dyn Connector {
        &*self.inner.connector
    }

    /// The metrics so far, if enabled.
    pub fn metrics(&self) -> Option<Metrics> {
        self.inner.metrics.as_ref().map(metrics::Recorder::snapshot)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::StoreClosed {
                store: self.name().to_string(),
            });
        }
        Ok(())
    }

    fn record(&self, op: Operation, bytes: usize, started: Option<Instant>) {
        let Some(t) = started else { return };
        if let Some(m) = &self.inner.metrics {
            m.record(op, bytes, t);
        }
        metrics::record_for_task(op, bytes, t);
    }

    fn start(&self) -> Option<Instant> {
        (self.inner.metrics.is_some() || metrics::recording_task()).then(Instant::now)
    }

    /// Stores `value` under a new key.
    pub fn put<T: Storable>(&self, value: &T) -> Result<Key> {
        let key = self.inner.connector.new_key()?;
        self.set(&key, value)?;
        Ok(key)
    }

    /// Stores `value` under `key`, replacing what was there (a key made
    /// earlier with [`Connector::new_key`], or an object being updated).
    pub fn set<T: Storable>(&self, key: &Key, value: &T) -> Result<()> {
        self.check_open()?;
        let started = self.start();
        let encoded = codec::encode(value)?;
        self.write(key, &encoded, started)
    }

    /// Stores already encoded bytes under `key`.
    pub(crate) fn set_encoded(&self, key: &Key, encoded: &codec::Encoded<'_>) -> Result<()> {
        self.check_open()?;
        self.write(key, encoded, self.start())
    }

    /// Stores already encoded bytes under `key`, to be removed by the
    /// connector itself after `after` where it can, in the same request
    /// ([`Connector::set_expiring`]); returns whether the expiry was set.
    pub(crate) fn set_encoded_expiring(
        &self,
        key: &Key,
        encoded: &codec::Encoded<'_>,
        after: std::time::Duration,
    ) -> Result<bool> {
        self.check_open()?;
        let started = self.start();
        let expiring = self
            .inner
            .connector
            .set_expiring(key, &encoded.parts(), after)?;
        self.written(key, encoded, started);
        Ok(expiring)
    }

    fn write(
        &self,
        key: &Key,
        encoded: &codec::Encoded<'_>,
        started: Option<Instant>,
    ) -> Result<()> {
        self.inner.connector.set(key, &encoded.parts())?;
        self.written(key, encoded, started);
        Ok(())
    }

    /// What follows the writing of an object under `key`.
    fn written(&self, key: &Key, encoded: &codec::Encoded<'_>, started: Option<Instant>) {
        self.forget(key);
        // Stored again: a lifetime's earlier eviction no longer explains
        // its absence.
        crate::lifetime::evictions::forget(key);
        tracing::debug!(store = %self.name(), %key, size = encoded.len(), "put");
        self.record(Operation::Put, encoded.len(), started);
    }

    /// Stores several values, returning their keys in order.
    pub fn put_batch<T: Storable>(&self, values: &[T]) -> Result<Vec<Key>> {
        self.check_open()?;
        let started = self.start();
        let encoded = values
            .iter()
            .map(codec::encode)
            .collect::<Result<Vec<_>>>()?;
        let parts: Vec<[&[u8]; 2]> = encoded.iter().map(|e| e.parts()).collect();
        let objects: Vec<&[&[u8]]> = parts.iter().map(|p| &p[..]).collect();
        let keys = self.inner.connector.put_batch(&objects)?;
        let bytes = encoded.iter().map(|e| e.len()).sum();
        tracing::debug!(store = %self.name(), count = keys.len(), size = bytes, "put_batch");
        self.record(Operation::PutBatch, bytes, started);
        Ok(keys)
    }

    /// The object under `key`, or `None` if there is none.
    ///
    /// Decoded objects are cached (shared, hence the [`Arc`]); asking for a
    /// type other than the one stored is an [`Error::Decode`].
    pub fn get<T: Storable>(&self, key: &Key) -> Result<Option<Arc<T>>> {
        self.check_open()?;
        if let Some(hit) = self.cached::<T>(key) {
            return Ok(Some(hit));
        }
        let value = match self.load::<T>(key)? {
            Some(value) => Arc::new(value),
            None => return Ok(None),
        };
        if let Some(cache) = &self.inner.cache {
            let erased: Arc<dyn Any + Send + Sync> = value.clone();
            cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .put(*key, erased);
        }
        Ok(Some(value))
    }

    fn cached<T: Storable>(&self, key: &Key) -> Option<Arc<T>> {
        let cache = self.inner.cache.as_ref()?;
        let hit = cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned();
        let hit = hit.and_then(|any| any.downcast::<T>().ok());
        if let Some(m) = &self.inner.metrics {
            m.cache(hit.is_some());
        }
        metrics::cache_for_task(hit.is_some());
        hit
    }

    /// Reads and decodes the object under `key` into a value of its own,
    /// bypassing the cache.
    pub fn load<T: Storable>(&self, key: &Key) -> Result<Option<T>> {
        self.load_with(key, codec::DecodeOptions::new())
    }

    /// Like [`load`](Store::load), with decoding options: with
    /// [`check_type(false)`](codec::DecodeOptions::check_type) it reads an
    /// object stored as another type on purpose, if the bytes allow.
    ///
    /// ```
    /// use proxystore::codec::DecodeOptions;
    /// use proxystore::connectors::LocalConnector;
    /// use proxystore::Store;
    ///
    /// let store = Store::new("load-with-doc", LocalConnector::new())?;
    /// let key = store.put(&vec![1u16, 2, 3])?;
    /// assert!(store.load::<Vec<u32>>(&key).is_err());   // stored as Vec<u16>
    /// let wider = store.load_with::<Vec<u32>>(&key, DecodeOptions::new().check_type(false))?;
    /// assert_eq!(wider, Some(vec![1, 2, 3]));
    /// # Ok::<(), proxystore::Error>(())
    /// ```
    pub fn load_with<T: Storable>(
        &self,
        key: &Key,
        options: codec::DecodeOptions,
    ) -> Result<Option<T>> {
        self.check_open()?;
        let started = self.start();
        if let Some(bytes) = prefetch::take(key) {
            // Read ahead when its task ended.
            let options = options.input_len(bytes.len() as u64);
            let value = codec::decode_with::<T>(&mut &bytes[..], options)
                .map_err(|f| f.into_error::<T>(*key, self.name()))?;
            tracing::debug!(store = %self.name(), %key, size = bytes.len(), "get (read ahead)");
            self.record(Operation::Get, bytes.len(), started);
            return Ok(Some(value));
        }
        let Some((reader, len)) = self.inner.connector.open_sized(key)? else {
            tracing::debug!(store = %self.name(), %key, "get: missing");
            return Ok(None);
        };
        let options = match len {
            Some(len) => options.input_len(len),
            None => options,
        };
        let mut counted = Counted {
            inner: BufReader::with_capacity(64 * 1024, reader),
            bytes: 0,
        };
        let value = match codec::decode_with::<T>(&mut counted, options) {
            Ok(value) => value,
            // A read that failed because the object was evicted meanwhile
            // (a connector that reuses an evicted object's memory stops
            // the read): the object is missing, not corrupt.
            Err(_) if matches!(self.inner.connector.exists(key), Ok(false)) => {
                tracing::debug!(store = %self.name(), %key, "get: evicted while read");
                return Ok(None);
            }
            Err(f) => return Err(f.into_error::<T>(*key, self.name())),
        };
        tracing::debug!(store = %self.name(), %key, size = counted.bytes, "get");
        self.record(Operation::Get, counted.bytes, started);
        Ok(Some(value))
    }

    /// Reads several objects, in order.
    pub fn get_batch<T: Storable>(&self, keys: &[Key]) -> Result<Vec<Option<Arc<T>>>> {
        let started = self.start();
        let out = keys
            .iter()
            .map(|k| self.get(k))
            .collect::<Result<Vec<_>>>()?;
        self.record(Operation::GetBatch, 0, started);
        Ok(out)
    }

    /// Whether an object is stored under `key`.
    pub fn exists(&self, key: &Key) -> Result<bool> {
        self.check_open()?;
        // An owner dropped on an async runtime's thread evicts in the
        // background: not yet done is not an answer.
        crate::runtime::deferred::flush(crate::runtime::deferred::FLUSH_BOUND);
        let started = self.start();
        let exists = self.inner.connector.exists(key)?;
        self.record(Operation::Exists, 0, started);
        Ok(exists)
    }

    /// Removes the object under `key` (and from the cache). Evicting a
    /// missing key is not an error.
    pub fn evict(&self, key: &Key) -> Result<()> {
        self.check_open()?;
        let started = self.start();
        self.forget(key);
        self.inner.connector.evict(key)?;
        tracing::debug!(store = %self.name(), %key, "evict");
        self.record(Operation::Evict, 0, started);
        Ok(())
    }

    /// Evicts a finished task's inputs `keys` and, in the same round trip
    /// where the connector can, reads its result under `result` ahead if
    /// it is small: the caller reads it next. Failures are logged, as
    /// evicting an input is best effort.
    pub(crate) fn evict_inputs(&self, keys: &[Key], result: Option<Key>) {
        if self.check_open().is_err() || (keys.is_empty() && result.is_none()) {
            return;
        }
        let started = self.start();
        for key in keys {
            self.forget(key);
        }
        let peek = result.as_ref().map(|k| (k, prefetch::PREFETCH_LIMIT));
        match self.inner.connector.evict_and_peek(keys, peek) {
            Ok(found) => {
                for key in keys {
                    tracing::debug!(store = %self.name(), %key, "evict");
                    self.record(Operation::Evict, 0, started);
                }
                if let (Some(key), Some(bytes)) = (result, found) {
                    prefetch::keep(key, bytes);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not evict a task's inputs at once");
                for key in keys {
                    if let Err(e) = self.evict(key) {
                        tracing::debug!(%key, error = %e, "could not evict a task input");
                    }
                }
            }
        }
    }

    /// The keys of the objects the store's connector holds, in no
    /// particular order (see [`Connector::keys`]).
    ///
    /// With [`len`](Store::len) and [`is_empty`](Store::is_empty), this is
    /// how a test checks that nothing was left behind: every owned proxy
    /// dropped, every executor task's inputs evicted, every lifetime ended.
    /// It lists what the connector holds, so a store sharing its connector
    /// (one directory, one Redis namespace) with others sees their objects
    /// too. [`Error::StoreClosed`] once the store is closed;
    /// [`Error::Unsupported`] for a connector of your own that cannot list.
    ///
    /// ```
    /// use proxystore::connectors::LocalConnector;
    /// use proxystore::Store;
    ///
    /// let store = Store::new("keys-doc", LocalConnector::new())?;
    /// let key = store.put(&"kept".to_string())?;
    /// {
    ///     let owned = store.owned_proxy(vec![1u8; 1024])?;
    ///     assert_eq!(owned.len(), 1024);
    ///     assert_eq!(store.len()?, 2);
    /// } // the owned proxy is dropped: its object is evicted
    /// assert_eq!(store.keys()?, [key]);
    /// store.evict(&key)?;
    /// assert!(store.is_empty()?, "nothing left");
    /// # Ok::<(), proxystore::Error>(())
    /// ```
    pub fn keys(&self) -> Result<Vec<Key>> {
        self.check_open()?;
        crate::runtime::deferred::flush(crate::runtime::deferred::FLUSH_BOUND);
        self.inner.connector.keys()
    }

    /// How many objects the store's connector holds (see
    /// [`keys`](Store::keys)).
    pub fn len(&self) -> Result<usize> {
        Ok(self.keys()?.len())
    }

    /// Whether the store's connector holds no object: `assert!(store.is_empty()?)`
    /// at the end of a test checks that nothing was left behind (see
    /// [`keys`](Store::keys)).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.keys()?.is_empty())
    }

    fn forget(&self, key: &Key) {
        prefetch::forget(key);
        if let Some(cache) = &self.inner.cache {
            cache.lock().unwrap_or_else(|e| e.into_inner()).pop(key);
        }
    }

    pub(crate) fn factory(&self, key: Key) -> Factory {
        Factory::new(key, self.inner.config.clone())
    }

    /// Whether [`close`](Store::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Closes the store: closes the connector (a
    /// [`FileConnector`](crate::connectors::FileConnector) removes what it
    /// created), then unregisters the store and empties the cache. Closing
    /// a closed store is not an error.
    ///
    /// Operations are refused while the connector closes. If it fails (e.g.
    /// [`Error::CloseIncomplete`]: other processes were still writing), the
    /// store is open again, still registered, and `close` can be called
    /// again to finish the job.
    pub fn close(&self) -> Result<()> {
        // Evictions handed to the background go through the open store.
        crate::runtime::deferred::flush(crate::runtime::deferred::FLUSH_BOUND);
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        tracing::debug!(store = %self.name(), "close");
        if let Err(e) = self.inner.connector.close() {
            tracing::debug!(store = %self.name(), error = %e, "close failed; it can be retried");
            self.inner.closed.store(false, Ordering::Release);
            return Err(e);
        }
        registry::unregister_exact(self);
        if let Some(cache) = &self.inner.cache {
            cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        Ok(())
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("name", &self.name())
            .field("connector", &self.inner.connector)
            .field("cache_size", &self.inner.config.cache_size)
            .field("closed", &self.is_closed())
            .finish()
    }
}

struct Counted<R> {
    inner: R,
    bytes: usize,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n;
        Ok(n)
    }
}
