//! Ownership of stored objects: one owner that evicts, borrows the compiler
//! checks, and transfers between processes that cannot evict twice.
//!
//! An [`OwnedProxy<T>`] is the single owner of a stored object and evicts
//! it when dropped. [`RefProxy`] and [`RefMutProxy`] borrow it; the borrow
//! checker makes sure the owner outlives them and that a mutable borrow is
//! exclusive:
//!
//! ```
//! use proxystore::connectors::LocalConnector;
//! use proxystore::{OwnedProxy, Store};
//!
//! let store = Store::new("owned-module-doc", LocalConnector::new())?;
//! let mut owner = store.owned_proxy(vec![1, 2, 3])?;
//! let key = OwnedProxy::key(&owner);
//!
//! OwnedProxy::borrow_mut(&mut owner).push(4);      // mutate locally
//! OwnedProxy::write_back(&owner)?;                 // and store the new value
//! assert_eq!(*store.get::<Vec<i32>>(&key)?.unwrap(), [1, 2, 3, 4]);
//!
//! drop(owner);                                     // the owner evicts
//! assert!(!store.exists(&key)?);
//! # Ok::<(), proxystore::Error>(())
//! ```
//!
//! The borrow rules are checked at compile time; the owner cannot go away
//! while borrowed:
//!
//! ```compile_fail
//! # use proxystore::{connectors::LocalConnector, OwnedProxy, Store};
//! # let store = Store::new("owned-cf-1", LocalConnector::new()).unwrap();
//! let owner = store.owned_proxy(1u32).unwrap();
//! let borrowed = OwnedProxy::borrow(&owner);
//! drop(owner);                  // error: `owner` is borrowed
//! assert_eq!(*borrowed, 1);
//! ```
//!
//! A mutable borrow is exclusive:
//!
//! ```compile_fail
//! # use proxystore::{connectors::LocalConnector, OwnedProxy, Store};
//! # let store = Store::new("owned-cf-2", LocalConnector::new()).unwrap();
//! let mut owner = store.owned_proxy(1u32).unwrap();
//! let shared = OwnedProxy::borrow(&owner);
//! let exclusive = OwnedProxy::borrow_mut(&mut owner);   // error: already borrowed
//! assert_eq!(*shared, *exclusive);
//! ```
//!
//! ```compile_fail
//! # use proxystore::{connectors::LocalConnector, OwnedProxy, Store};
//! # let store = Store::new("owned-cf-3", LocalConnector::new()).unwrap();
//! let mut owner = store.owned_proxy(1u32).unwrap();
//! let a = OwnedProxy::borrow_mut(&mut owner);
//! let b = OwnedProxy::borrow_mut(&mut owner);           // error: two mutable borrows
//! drop((a, b));
//! ```
//!
//! There is one owner: an `OwnedProxy` cannot be cloned (copy the object
//! with [`OwnedProxy::clone_stored`])
//!
//! ```compile_fail
//! # use proxystore::{connectors::LocalConnector, OwnedProxy, Store};
//! # let store = Store::new("owned-cf-4", LocalConnector::new()).unwrap();
//! fn clone_of<T: Clone>(value: &T) -> T { value.clone() }
//! let owner = store.owned_proxy(1u32).unwrap();
//! let second = clone_of(&owner);                        // error: OwnedProxy is not Clone
//! ```
//!
//! # Sending ownership to another process
//!
//! An `OwnedProxy` cannot be serialized: if it could, the sender's copy
//! would evict the object when it went out of scope, while the receiver
//! still needed it. Ownership leaves a process by *consuming* the owner
//! into a [`Transfer`], which serializes once and then no longer evicts; the
//! receiver deserializes an `OwnedProxy` and becomes the one owner.
//!
//! ```compile_fail
//! # use proxystore::{connectors::LocalConnector, OwnedProxy, Store};
//! # let store = Store::new("owned-cf-5", LocalConnector::new()).unwrap();
//! let owner = store.owned_proxy(1u32).unwrap();
//! let mut wire = Vec::new();
//! ciborium::into_writer(&owner, &mut wire).unwrap();    // error: not Serialize
//! ```
//!
//! ```
//! # use proxystore::{connectors::LocalConnector, OwnedProxy, Store};
//! # let store = Store::new("owned-transfer-doc", LocalConnector::new())?;
//! let owner = store.owned_proxy("payload".to_string())?;
//! let key = OwnedProxy::key(&owner);
//! let transfer = OwnedProxy::into_transfer(owner);
//! let mut wire = Vec::new();
//! ciborium::into_writer(&transfer, &mut wire).unwrap();
//! drop(transfer);                                       // sent: does not evict
//! assert!(store.exists(&key)?);
//!
//! let received: OwnedProxy<String> = ciborium::from_reader(&wire[..]).unwrap();
//! assert_eq!(*received, "payload");
//! drop(received);                                       // the new owner evicts
//! assert!(!store.exists(&key)?);
//! # Ok::<(), proxystore::Error>(())
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use once_cell::sync::OnceCell;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::key::Key;
use crate::proxy::{Factory, Proxy};
use crate::store::{get_store, Store};
use crate::Storable;

/// The single owner of a stored object; evicts it when dropped.
///
/// A task's result dropped on an async runtime's thread (one that has
/// polled this crate's futures) evicts on a background thread instead,
/// freeing its value there too: the runtime never waits for the store. The eviction is still
/// done before anything can see the object: [`Store::exists`],
/// [`Store::keys`], closing the store, shutting an executor down and the
/// process's exit wait for it.
///
/// Dereferencing resolves it on first use (panicking if the object cannot
/// be read; [`OwnedProxy::resolve`] returns the error instead). The value
/// read is the owner's own, so it can be mutated through
/// [`DerefMut`] and stored again with [`OwnedProxy::write_back`].
pub struct OwnedProxy<T: Storable> {
    // `None` once ownership has been given up (leak, transfer, into_inner).
    factory: Option<Factory>,
    value: OnceCell<T>,
    /// For a task's result: the task, whose dependents (tasks that take
    /// the result as an input) may still need the object when this owner
    /// is dropped; the last of them evicts it then.
    shared_with: Option<Arc<dyn SharedResult>>,
}

impl<T: Storable> OwnedProxy<T> {
    pub(crate) fn resolved(factory: Factory, value: T) -> Self {
        OwnedProxy {
            factory: Some(factory),
            value: OnceCell::with_value(value),
            shared_with: None,
        }
    }

    pub(crate) fn lazy(factory: Factory) -> Self {
        OwnedProxy {
            factory: Some(factory),
            value: OnceCell::new(),
            shared_with: None,
        }
    }

    /// The owner of task `shared`'s result: see `shared_with`.
    pub(crate) fn of_task(factory: Factory, shared: Arc<dyn SharedResult>) -> Self {
        OwnedProxy {
            factory: Some(factory),
            value: OnceCell::new(),
            shared_with: Some(shared),
        }
    }

    /// A plain proxy of the object that keeps it stored while the proxy
    /// (or a clone of it) lives, when this owner is a task's result;
    /// otherwise a plain proxy.
    pub(crate) fn holding_proxy(this: &Self) -> Proxy<T> {
        let hold = this
            .shared_with
            .as_ref()
            .map(|shared| shared.clone().hold());
        Proxy::holding(this.factory_ref().clone(), hold)
    }

    /// Gives up the owner without evicting: its factory, and the task whose
    /// dependents must be let finish first (see `shared_with`).
    pub(crate) fn into_parts(mut this: Self) -> (Factory, Option<Arc<dyn SharedResult>>) {
        let factory = this.factory.take().expect("owned");
        (factory, this.shared_with.take())
    }

    fn factory_ref(&self) -> &Factory {
        self.factory
            .as_ref()
            .expect("an OwnedProxy always has its factory until consumed")
    }

    /// Takes ownership of the object a plain proxy refers to: it will be
    /// evicted when the returned owner is dropped. No other owner must
    /// exist.
    pub fn from_proxy(proxy: Proxy<T>) -> Self {
        let factory = Proxy::factory(&proxy).clone();
        match Proxy::get(&proxy).is_some().then(|| Proxy::into_arc(proxy)) {
            Some(Ok(arc)) => match Arc::try_unwrap(arc) {
                Ok(value) => OwnedProxy::resolved(factory, value),
                Err(_) => OwnedProxy::lazy(factory),
            },
            _ => OwnedProxy::lazy(factory),
        }
    }

    /// The key of the object.
    pub fn key(this: &Self) -> Key {
        this.factory_ref().key()
    }

    /// The factory (store configuration and key).
    pub fn factory(this: &Self) -> &Factory {
        this.factory_ref()
    }

    /// Whether the value has been read already.
    pub fn is_resolved(this: &Self) -> bool {
        this.value.get().is_some()
    }

    /// Resolves now if needed and returns the value, or the error that a
    /// dereference would panic with.
    pub fn resolve(this: &Self) -> Result<&T> {
        this.value
            .get_or_try_init(|| this.factory_ref().load::<T>())
    }

    /// Like [`resolve`](OwnedProxy::resolve), for mutation.
    pub fn resolve_mut(this: &mut Self) -> Result<&mut T> {
        OwnedProxy::resolve(this)?;
        Ok(this.value.get_mut().expect("resolved"))
    }

    /// An immutable borrow, which can also be passed to tasks.
    pub fn borrow(this: &Self) -> RefProxy<'_, T> {
        RefProxy { owner: this }
    }

    /// A mutable borrow.
    pub fn borrow_mut(this: &mut Self) -> RefMutProxy<'_, T> {
        RefMutProxy { owner: this }
    }

    /// Stores the current value under the same key, so that proxies that
    /// resolve from now on (in any process) see it.
    pub fn write_back(this: &Self) -> Result<()> {
        let value = OwnedProxy::resolve(this)?;
        this.factory_ref()
            .store()?
            .set(&OwnedProxy::key(this), value)
    }

    /// A new stored copy of the object, with its own owner.
    pub fn clone_stored(this: &Self) -> Result<Self> {
        let value = OwnedProxy::resolve(this)?;
        let store = this.factory_ref().store()?;
        let key = store.put(value)?;
        Ok(OwnedProxy::lazy(store.factory(key)))
    }

    /// Gives up ownership without evicting: the object stays in the store
    /// and the returned plain proxy does not own it.
    pub fn leak(mut this: Self) -> Proxy<T> {
        let factory = this.factory.take().expect("owned");
        match this.value.take() {
            Some(value) => Proxy::resolved(factory, value),
            None => Proxy::lazy(factory),
        }
    }

    /// The value, moved out; the object is evicted from the store.
    pub fn into_inner(mut this: Self) -> Result<T> {
        OwnedProxy::resolve(&this)?;
        let value = this.value.take().expect("resolved");
        drop(this);
        Ok(value)
    }

    /// Consumes the owner into a [`Transfer`] that can be serialized once,
    /// to hand ownership to another process.
    pub fn into_transfer(mut this: Self) -> Transfer<T> {
        Transfer {
            factory: this.factory.take(),
            sent: AtomicBool::new(false),
            _type: PhantomData,
        }
    }
}

/// Evicts through the registered store, or a short-lived one built from the
/// configuration; never registers a store (the original may have been closed
/// on purpose). The configuration may come from anywhere (a received
/// proxy): connectors rebuilt from one must refuse to act outside their own
/// store, as a `FileConnector` does by checking its directory's marker.
pub(crate) fn evict(factory: &Factory) {
    let config = factory.store_config();
    let result = match get_store(&config.name) {
        Some(store) => store.evict(&factory.key()),
        None => {
            Store::from_config(config.clone()).and_then(|s| s.connector().evict(&factory.key()))
        }
    };
    match result {
        Ok(()) => tracing::debug!(store = %config.name, key = %factory.key(), "owner evicted"),
        Err(e) => {
            tracing::debug!(store = %config.name, key = %factory.key(), error = %e, "owner could not evict")
        }
    }
}

impl<T: Storable> Drop for OwnedProxy<T> {
    fn drop(&mut self) {
        if let Some(factory) = self.factory.take() {
            let shared = self.shared_with.take();
            // A task's result (the owners async code gets from awaiting
            // tasks) dropped on an async runtime's thread.
            if shared.is_some() && crate::runtime::deferred::on_async_thread() {
                // Not on an async runtime's thread: the eviction, and the
                // freeing of a large value, go to the background pool.
                let value = self.value.take();
                crate::runtime::deferred::defer(Box::new(move || {
                    drop(value);
                    evict_when_free(factory, shared);
                }));
            } else {
                evict_when_free(factory, shared);
            }
        }
    }
}

/// What the owner of a task's result shares its object with: the task,
/// whose dependents (tasks that take the result as an input) may still read
/// the object when its owner is dropped.
///
/// Defined here and implemented by the task layer above (as tokio's task
/// layer defines `Schedule` for its schedulers), so that ownership knows
/// nothing of tasks.
pub(crate) trait SharedResult:
    Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe
{
    /// A guard that keeps the object stored while it lives: what a proxy
    /// made from the owner holds.
    fn hold(self: Arc<Self>) -> crate::proxy::Hold;

    /// Evicting waits while dependents hold the result: then the last of
    /// them evicts `factory`, and `None` is returned; otherwise `factory`
    /// is handed back, to evict now.
    fn defer_eviction(&self, factory: Factory) -> Option<Factory>;
}

/// Evicts now, or once the dependents of task `shared` (tasks that take
/// its result as an input) have ended.
pub(crate) fn evict_when_free(factory: Factory, shared: Option<Arc<dyn SharedResult>>) {
    let now = match shared {
        Some(shared) => shared.defer_eviction(factory),
        None => Some(factory),
    };
    if let Some(factory) = now {
        evict(&factory);
    }
}

impl<T: Storable> Deref for OwnedProxy<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match OwnedProxy::resolve(self) {
            Ok(value) => value,
            Err(e) => panic!("{e}"),
        }
    }
}

impl<T: Storable> DerefMut for OwnedProxy<T> {
    fn deref_mut(&mut self) -> &mut T {
        match OwnedProxy::resolve_mut(self) {
            Ok(value) => value,
            Err(e) => panic!("{e}"),
        }
    }
}

impl<T: Storable> fmt::Debug for OwnedProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.value.get().is_some() {
            "resolved"
        } else {
            "unresolved"
        };
        write!(f, "OwnedProxy({:?}, {state})", self.factory_ref())
    }
}

impl<T: Storable + fmt::Display> fmt::Display for OwnedProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

#[derive(Serialize, Deserialize)]
struct TransferWire<F> {
    owner: F,
}

/// Ownership of a stored object on its way to another process.
///
/// Made by [`OwnedProxy::into_transfer`]. It serializes exactly once (a
/// second serialization fails with [`Error::AlreadyTransferred`], so there
/// are never two owners); once serialized, dropping it does not evict. A
/// transfer dropped without being sent still owns the object and evicts it.
/// The receiving side deserializes an [`OwnedProxy`].
pub struct Transfer<T> {
    factory: Option<Factory>,
    sent: AtomicBool,
    _type: PhantomData<fn() -> T>,
}

impl<T> Transfer<T> {
    /// Whether it has been serialized.
    pub fn is_sent(&self) -> bool {
        self.sent.load(Ordering::Acquire)
    }

    /// The key of the object.
    pub fn key(&self) -> Key {
        self.factory
            .as_ref()
            .expect("transfer has its factory")
            .key()
    }
}

impl<T> Serialize for Transfer<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let factory = self.factory.as_ref().expect("transfer has its factory");
        if self.sent.swap(true, Ordering::AcqRel) {
            let err = Error::AlreadyTransferred {
                key: factory.key(),
                store: factory.store_config().name.clone(),
            };
            return Err(serde::ser::Error::custom(err));
        }
        TransferWire { owner: factory }.serialize(serializer)
    }
}

impl<T> Drop for Transfer<T> {
    fn drop(&mut self) {
        if let (Some(factory), false) = (&self.factory, self.is_sent()) {
            evict(factory);
        }
    }
}

impl<T> fmt::Debug for Transfer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Transfer({:?}, sent: {})", self.factory, self.is_sent())
    }
}

impl<'de, T: Storable> Deserialize<'de> for OwnedProxy<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = TransferWire::<Factory>::deserialize(deserializer)?;
        Ok(OwnedProxy::lazy(wire.owner))
    }
}

/// An immutable borrow of an [`OwnedProxy`].
///
/// Serializes like a [`Proxy`], so a borrowed object can be passed to a task
/// in another process; the owner keeps it alive meanwhile.
pub struct RefProxy<'a, T: Storable> {
    owner: &'a OwnedProxy<T>,
}

impl<T: Storable> RefProxy<'_, T> {
    /// The factory of the borrowed object.
    pub fn factory(this: &Self) -> &Factory {
        this.owner.factory_ref()
    }

    /// A plain, non-owning proxy of the borrowed object.
    pub fn to_proxy(this: &Self) -> Proxy<T> {
        Proxy::lazy(RefProxy::factory(this).clone())
    }
}

impl<T: Storable> Clone for RefProxy<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Storable> Copy for RefProxy<'_, T> {}

impl<T: Storable> Deref for RefProxy<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.owner
    }
}

impl<T: Storable> Serialize for RefProxy<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.owner.factory_ref().serialize_as_proxy(serializer)
    }
}

impl<T: Storable> fmt::Debug for RefProxy<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefProxy({:?})", self.owner.factory_ref())
    }
}

/// A mutable borrow of an [`OwnedProxy`].
pub struct RefMutProxy<'a, T: Storable> {
    owner: &'a mut OwnedProxy<T>,
}

impl<T: Storable> RefMutProxy<'_, T> {
    /// Stores the current value under the object's key.
    pub fn write_back(this: &Self) -> Result<()> {
        OwnedProxy::write_back(this.owner)
    }
}

impl<T: Storable> Deref for RefMutProxy<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.owner
    }
}

impl<T: Storable> DerefMut for RefMutProxy<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.owner
    }
}

impl<T: Storable> Serialize for RefMutProxy<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.owner.factory_ref().serialize_as_proxy(serializer)
    }
}

impl<T: Storable> fmt::Debug for RefMutProxy<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefMutProxy({:?})", self.owner.factory_ref())
    }
}

/// Making owned proxies: here, beside [`OwnedProxy`], so that the store
/// layer below names nothing of it.
impl Store {
    /// Stores `value` and returns its single owner, which evicts it when
    /// dropped.
    pub fn owned_proxy<T: Storable>(&self, value: T) -> Result<OwnedProxy<T>> {
        let key = self.put(&value)?;
        Ok(OwnedProxy::resolved(self.factory(key), value))
    }
}
