//! Lazy, typed proxies of stored objects.
//!
//! A [`Proxy<T>`] stands for a `T` in a store. It is small (the store's
//! configuration and a key), can be cloned and sent to any process, and
//! resolves to the value the first time it is dereferenced, once.
//!
//! ```
//! use proxystore::connectors::FileConnector;
//! use proxystore::{Proxy, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::new("proxy-module-doc", FileConnector::new(dir.path().join("o"))?)?;
//! let key = store.put(&vec![1u64, 2, 3])?;
//!
//! let proxy: Proxy<Vec<u64>> = store.proxy_from_key(key);
//! assert!(!Proxy::is_resolved(&proxy));
//! assert_eq!(proxy.iter().sum::<u64>(), 6);    // resolves here
//! assert!(Proxy::is_resolved(&proxy));
//!
//! // What travels is the reference, never the value.
//! let mut wire = Vec::new();
//! ciborium::into_writer(&proxy, &mut wire).unwrap();
//! let arrived: Proxy<Vec<u64>> = ciborium::from_reader(&wire[..]).unwrap();
//! assert_eq!(Proxy::key(&arrived), key);
//! assert_eq!(*arrived, [1, 2, 3]);
//! # store.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use once_cell::sync::OnceCell;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Result;
use crate::key::Key;
use crate::store::{Store, StoreConfig};
use crate::Storable;

mod marker;

pub use crate::store::Factory;
pub(crate) use crate::store::{with_wait_cap, Wait};
pub(crate) use marker::is_proxy;

/// Something a proxy keeps alive with it, type-erased so that this layer
/// names nothing above it (and unwind-safe, as proxies were before it): for
/// a proxy of a task's result, the hold that
/// keeps the object stored (see `OwnedProxy`'s `SharedResult`).
pub(crate) type Hold = Box<dyn Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>;

/// Clears a proxy's `queued` flag however its background read ends, so a
/// later [`Proxy::resolve_async`] can try again.
struct Done<'a>(&'a AtomicBool);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

use crate::store::factory::{FIRST_POLL, LAST_POLL};

/// A future's background poll's hold on its proxy: weak, so that a poll
/// of a future nobody holds any more ends; when it is dropped without a
/// next poll taking it over (the value read, the wait over, the pool
/// refusing the work, a panic), the proxy's `queued` flag is cleared, so a
/// later [`Proxy::resolve_async`] can start again.
struct Poll<T>(Option<std::sync::Weak<Inner<T>>>);

impl<T> Drop for Poll<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take().and_then(|weak| weak.upgrade()) {
            inner.queued.store(false, Ordering::Release);
        }
    }
}

/// One look, on the resolver pool, for the object of a future's proxy:
/// read if it is set, else look again after a pause. The pause is a timer,
/// not a thread that sleeps: a future that is never set must not hold one
/// of the pool's few threads (eight such futures stopped every other
/// background read in the process). Once every proxy of it is dropped, the
/// looking stops.
fn poll_future<T: Storable>(
    mut poll: Poll<T>,
    deadline: Option<std::time::Instant>,
    mut backoff: crate::runtime::Backoff,
) -> Box<dyn FnOnce() + Send> {
    Box::new(move || {
        let Some(inner) = poll.0.as_ref().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        if inner.value.get().is_some() {
            return;
        }
        let factory = &inner.factory;
        let read = factory
            .store()
            .and_then(|store| store.get::<T>(&factory.key()));
        match read {
            // Blocks only while a dereference of this proxy is reading:
            // the object is set, so that read ends within its next poll.
            Ok(Some(value)) => drop(inner.value.set(value)),
            Ok(None) if deadline.is_none_or(|d| std::time::Instant::now() < d) => {
                // The next poll takes the hold over (the flag stays set).
                let next = Poll(poll.0.take());
                drop(inner);
                let pause = backoff.pause();
                let next = poll_future(next, deadline, backoff);
                // Refused, the work is dropped and its hold clears the flag.
                let _ = crate::runtime::background::run_after(pause, next);
            }
            // Not set in time, or unreadable: the next dereference waits
            // or reads itself, and reports what it finds.
            _ => {}
        }
    })
}

struct Inner<T> {
    factory: Factory,
    value: OnceCell<Arc<T>>,
    /// A background resolution is queued or running.
    queued: AtomicBool,
    /// For a proxy of a task's owned result: keeps the object stored while
    /// this proxy (or a clone) lives, even if its owner is dropped first.
    _hold: Option<Hold>,
}

/// A lazy reference to a `T` in a store.
///
/// Dereferencing resolves it (once; later dereferences are free) and panics
/// if the object cannot be read; [`Proxy::resolve`] returns the error
/// instead. Proxy operations are associated functions (`Proxy::key(&p)`),
/// so they never hide methods of `T`.
///
/// Clones share the resolved value. A proxy does not own its object:
/// dropping it removes nothing (see [`OwnedProxy`](crate::OwnedProxy)).
pub struct Proxy<T> {
    inner: Arc<Inner<T>>,
}

impl<T: Storable> Proxy<T> {
    pub(crate) fn lazy(factory: Factory) -> Self {
        Proxy::holding(factory, None)
    }

    /// A proxy that keeps its object stored while it lives (see `_hold`).
    pub(crate) fn holding(factory: Factory, hold: Option<Hold>) -> Self {
        Proxy {
            inner: Arc::new(Inner {
                factory,
                value: OnceCell::new(),
                queued: AtomicBool::new(false),
                _hold: hold,
            }),
        }
    }

    pub(crate) fn resolved(factory: Factory, value: T) -> Self {
        let proxy = Proxy::lazy(factory);
        let _ = proxy.inner.value.set(Arc::new(value));
        proxy
    }

    /// A proxy of the object `key` in the store described by `config`.
    pub fn from_parts(config: StoreConfig, key: Key) -> Self {
        Proxy::lazy(Factory::new(key, Arc::new(config)))
    }

    /// Whether the value has been read already.
    pub fn is_resolved(this: &Self) -> bool {
        this.inner.value.get().is_some()
    }

    /// Resolves now if needed and returns the value, or the error that a
    /// dereference would panic with.
    pub fn resolve(this: &Self) -> Result<&T> {
        this.inner
            .value
            .get_or_try_init(|| this.inner.factory.resolve::<T>())
            .map(|v| &**v)
    }

    /// Starts resolving in the background and returns at once.
    ///
    /// The read runs on a small process-wide pool of threads (the machine's
    /// parallelism, between 2 and 8, started at first use), so resolving
    /// many proxies this way queues their reads rather than starting a
    /// thread for each. A dereference that needs the value while its
    /// background read runs waits for that read instead of starting its
    /// own; if the read has not started yet, the dereference reads, and the
    /// queued read then has nothing left to do. An error is not lost: the
    /// next dereference (or [`Proxy::resolve`]) tries again and reports it.
    ///
    /// The proxy of a [`StoreFuture`](crate::StoreFuture) whose value is not
    /// set yet holds no thread while it waits: its object is looked for
    /// again after growing pauses (1 ms up to 100 ms, until the future's
    /// timeout), so futures that are never set cannot hold up the
    /// background reads of other proxies.
    ///
    /// ```
    /// use proxystore::connectors::LocalConnector;
    /// use proxystore::{Proxy, Store};
    ///
    /// let store = Store::new("resolve-async-doc", LocalConnector::new())?;
    /// let proxies: Vec<Proxy<u64>> = (0..100u64)
    ///     .map(|i| Ok(store.proxy_from_key(store.put(&i)?)))
    ///     .collect::<proxystore::Result<_>>()?;
    /// for proxy in &proxies {
    ///     Proxy::resolve_async(proxy)?;     // all start reading, on a few threads
    /// }
    /// assert_eq!(proxies.iter().map(|p| **p).sum::<u64>(), 4950);
    /// # Ok::<(), proxystore::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::ThreadSpawn`](crate::Error::ThreadSpawn) if no thread of the pool could be started; the
    /// proxy still resolves when it is first used.
    pub fn resolve_async(this: &Self) -> Result<()> {
        if Proxy::is_resolved(this) || this.inner.queued.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let proxy = this.clone();
        let queued = match this.inner.factory.wait_limit() {
            None => crate::runtime::background::run(Box::new(move || {
                let _done = Done(&proxy.inner.queued);
                // get_or_try_init: concurrent dereferences wait for this read.
                let _ = Proxy::resolve(&proxy);
            })),
            Some(limit) => {
                let deadline = limit.map(|l| std::time::Instant::now() + l);
                let poll = Poll(Some(Arc::downgrade(&proxy.inner)));
                drop(proxy);
                crate::runtime::background::run(poll_future(
                    poll,
                    deadline,
                    crate::runtime::Backoff::new(FIRST_POLL, LAST_POLL),
                ))
            }
        };
        if queued.is_err() {
            this.inner.queued.store(false, Ordering::Release);
        }
        queued
    }

    /// The value if already resolved, without reading anything.
    pub fn get(this: &Self) -> Option<&T> {
        this.inner.value.get().map(|v| &**v)
    }

    /// The value, shared with the store's cache and other clones.
    pub fn into_arc(this: Self) -> Result<Arc<T>> {
        Proxy::resolve(&this)?;
        Ok(this.inner.value.get().expect("resolved").clone())
    }

    /// The value itself: moved out when no one else holds it, cloned
    /// otherwise.
    pub fn extract(this: Self) -> Result<T>
    where
        T: Clone,
    {
        Ok(Arc::unwrap_or_clone(Proxy::into_arc(this)?))
    }

    /// The key of the object.
    pub fn key(this: &Self) -> Key {
        this.inner.factory.key()
    }

    /// The configuration of the object's store.
    pub fn store_config(this: &Self) -> &StoreConfig {
        this.inner.factory.store_config()
    }

    /// The factory: what this proxy serializes to.
    pub fn factory(this: &Self) -> &Factory {
        &this.inner.factory
    }
}

impl<T: Storable> Deref for Proxy<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match Proxy::resolve(self) {
            Ok(value) => value,
            Err(e) => panic!("{e}"),
        }
    }
}

impl<T> Clone for Proxy<T> {
    fn clone(&self) -> Self {
        Proxy {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for Proxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.inner.value.get().is_some() {
            "resolved"
        } else {
            "unresolved"
        };
        write!(f, "Proxy({:?}, {state})", self.inner.factory)
    }
}

impl<T: Storable + fmt::Display> fmt::Display for Proxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: Storable + PartialEq> PartialEq for Proxy<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Factory {
    /// Serializes the factory as a reference to a stored object: what
    /// [`Proxy`] (and the borrows of an owner) serialize to. The bytes are
    /// those of the factory; the marker lets the executor recognize a proxy
    /// and pass it as it is instead of storing it again.
    pub(crate) fn serialize_as_proxy<S: Serializer>(
        &self,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct(marker::MARKER, self)
    }

    /// Reads what [`Factory::serialize_as_proxy`] wrote.
    pub(crate) fn deserialize_as_proxy<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Factory;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a proxy (a store configuration and a key)")
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Factory, D::Error> {
                Factory::deserialize(deserializer)
            }
        }
        deserializer.deserialize_newtype_struct(marker::MARKER, Visitor)
    }
}

impl<T> Serialize for Proxy<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.inner.factory.serialize_as_proxy(serializer)
    }
}

impl<'de, T: Storable> Deserialize<'de> for Proxy<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Factory::deserialize_as_proxy(deserializer).map(Proxy::lazy)
    }
}

/// Making proxies: here, beside [`Proxy`], so that the store layer below
/// names nothing of it.
impl Store {
    /// Stores `value` and returns a proxy of it.
    ///
    /// The proxy is already resolved here (it holds `value`); what travels
    /// when it is serialized is only the store's configuration and the key.
    pub fn proxy<T: Storable>(&self, value: T) -> Result<Proxy<T>> {
        let key = self.put(&value)?;
        Ok(Proxy::resolved(self.factory(key), value))
    }

    /// Stores several values and returns their proxies, in order.
    pub fn proxy_batch<T: Storable>(&self, values: Vec<T>) -> Result<Vec<Proxy<T>>> {
        let keys = self.put_batch(&values)?;
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| Proxy::resolved(self.factory(key), value))
            .collect())
    }

    /// A lazy proxy of the object already stored under `key`.
    ///
    /// Nothing is read until it is first dereferenced; a missing object is
    /// reported then.
    pub fn proxy_from_key<T: Storable>(&self, key: Key) -> Proxy<T> {
        Proxy::lazy(self.factory(key))
    }
}

impl<T: Storable> crate::store::StoreFuture<T> {
    /// A proxy of the value: resolving it waits for the value to be set
    /// (at most the future's timeout), in any process.
    pub fn proxy(&self) -> Proxy<T> {
        Proxy::lazy(self.factory().clone())
    }
}
