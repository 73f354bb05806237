//! [`StoreFuture`]: an object that one process sets and any holder of its
//! proxy reads, as ProxyStore's `Store.future()`.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Factory;
use super::Store;
use crate::error::Result;
use crate::key::Key;
use crate::Storable;

/// A value to come, in a store: one process [`set_result`]s it, any
/// process holding its [`proxy`] (or the future itself) reads it. Made by
/// [`Store::future`].
///
/// Reading before it is set waits for it (polling the store, from 1 ms up
/// to 100 ms between tries), at most the future's timeout (none by
/// default: see [`timeout`](StoreFuture::timeout)), and then fails with
/// [`Error::NotSetInTime`](crate::Error::NotSetInTime), never with a
/// missing object.
///
/// The future and its proxies cross processes like any proxy: pass the
/// future to a task that sets it, or its proxy to a task that reads it.
/// Its object is an ordinary object of the store: evict it with
/// [`Store::evict`] (or a lifetime) when nobody needs it any more.
///
/// [`set_result`]: StoreFuture::set_result
/// [`proxy`]: StoreFuture::proxy
///
/// ```
/// use std::time::Duration;
/// use proxystore::connectors::LocalConnector;
/// use proxystore::{Error, Store};
///
/// let store = Store::new("future-doc", LocalConnector::new())?;
/// let future = store.future::<String>()?.timeout(Duration::from_secs(10));
/// let proxy = future.proxy();
/// let setter = {
///     let future = future.clone();
///     std::thread::spawn(move || {
///         std::thread::sleep(Duration::from_millis(20));
///         future.set_result(&"ready".to_string())
///     })
/// };
/// assert_eq!(*proxy, "ready");          // waits until it is set
/// setter.join().unwrap()?;
///
/// let never = store.future::<u8>()?.timeout(Duration::from_millis(10));
/// assert!(matches!(never.result(), Err(Error::NotSetInTime { .. })));
/// # Ok::<(), proxystore::Error>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct StoreFuture<T> {
    factory: Factory,
    #[serde(skip)]
    _value: PhantomData<fn() -> T>,
}

impl<T: Storable> StoreFuture<T> {
    pub(super) fn new(factory: Factory) -> Self {
        StoreFuture {
            factory: factory.waiting(None),
            _value: PhantomData,
        }
    }

    /// The key its value is (or will be) stored under.
    pub fn key(&self) -> Key {
        self.factory.key()
    }

    /// How long readers wait for the value (`None`: as long as it takes).
    /// Proxies made after this carry the new timeout.
    #[must_use]
    pub fn timeout(self, timeout: impl Into<Option<Duration>>) -> Self {
        StoreFuture {
            factory: self.factory.waiting(timeout.into()),
            _value: PhantomData,
        }
    }

    /// Sets the value (setting it again replaces it, for readers that have
    /// not read it yet).
    pub fn set_result(&self, value: &T) -> Result<()> {
        self.factory.store()?.set(&self.factory.key(), value)
    }

    /// Whether the value is set.
    pub fn done(&self) -> Result<bool> {
        self.factory.store()?.exists(&self.factory.key())
    }

    /// Waits for the value (at most the future's timeout) and reads it.
    pub fn result(&self) -> Result<T> {
        let limit = self.factory.wait().map(|w| w.timeout());
        self.result_within(limit.flatten())
    }

    /// Waits at most `timeout` for the value and reads it.
    pub fn result_timeout(&self, timeout: Duration) -> Result<T> {
        self.result_within(Some(timeout))
    }

    fn result_within(&self, timeout: Option<Duration>) -> Result<T> {
        let store = self.factory.store()?;
        let key = self.factory.key();
        self.factory.read(|| store.load::<T>(&key), Some(timeout))
    }

    /// The reference its proxies carry.
    pub(crate) fn factory(&self) -> &Factory {
        &self.factory
    }
}

impl<T> Clone for StoreFuture<T> {
    fn clone(&self) -> Self {
        StoreFuture {
            factory: self.factory.clone(),
            _value: PhantomData,
        }
    }
}

impl<T> fmt::Debug for StoreFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreFuture({:?})", self.factory)
    }
}

impl Store {
    /// A [`StoreFuture`]: a value another process (or thread, or task) sets
    /// later, read through proxies that wait for it.
    pub fn future<T: Storable>(&self) -> Result<StoreFuture<T>> {
        let key = self.connector().new_key()?;
        Ok(StoreFuture::new(self.factory(key)))
    }
}
