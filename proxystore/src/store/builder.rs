//! [`StoreBuilder`]: a [`Store`] with non-default options.

use std::sync::Arc;

use super::{register_store, Store, StoreConfig};
use crate::connectors::Connector;
use crate::error::Result;

/// Builds a [`Store`] with non-default options.
///
/// ```
/// use proxystore::connectors::LocalConnector;
/// use proxystore::Store;
///
/// let store = Store::builder("builder-doc", LocalConnector::new())
///     .cache_size(0)        // no cache
///     .metrics(true)
///     .register(false)      // not visible to proxies by name in this process
///     .build()?;
/// # Ok::<(), proxystore::Error>(())
/// ```
#[must_use]
pub struct StoreBuilder {
    pub(super) name: String,
    pub(super) connector: Arc<dyn Connector>,
    pub(super) cache_size: usize,
    pub(super) metrics: bool,
    pub(super) register: bool,
}

impl StoreBuilder {
    /// Number of deserialized objects to keep (default
    /// [`DEFAULT_CACHE_SIZE`](super::DEFAULT_CACHE_SIZE); 0 disables the cache).
    pub fn cache_size(mut self, size: usize) -> Self {
        self.cache_size = size;
        self
    }

    /// Keep per-operation counts, bytes and times (default off).
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.metrics = enabled;
        self
    }

    /// Register the store in this process's registry (default on), so that
    /// proxies resolving here use this store rather than building another.
    pub fn register(mut self, register: bool) -> Self {
        self.register = register;
        self
    }

    /// Builds the store.
    pub fn build(self) -> Result<Store> {
        let config = StoreConfig {
            name: self.name,
            connector: self.connector.config(),
            cache_size: self.cache_size,
            metrics: self.metrics,
        };
        let store = Store::with_connector(config, self.connector);
        if self.register {
            register_store(&store)?;
        }
        Ok(store)
    }
}
